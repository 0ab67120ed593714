"""Hypothesis: hostile bytes make the note and checkpoint parsers raise MalformedNoteError only."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.audit.checkpoint import (
    Checkpoint,
    MalformedNoteError,
    parse_checkpoint,
    parse_checkpoint_time,
    parse_retention,
    parse_signed_note,
    sign_checkpoint,
)
from bastion.audit.hashing import EMPTY_ROOT
from bastion.audit.keys import SigningKey
from bastion.errors import RootMismatchError

GOOD = sign_checkpoint(
    Checkpoint("gw.example/log", 0, EMPTY_ROOT, ("bastion-time 2026-01-01T00:00:00Z",)),
    SigningKey("gw.example/log", bytes(32)),
).encode()


def _parse_all(raw: bytes) -> None:
    try:
        signed = parse_signed_note(raw)
        checkpoint = parse_checkpoint(signed.text)
        parse_checkpoint_time(checkpoint)
        parse_retention(checkpoint)
    except (MalformedNoteError, RootMismatchError):
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parsers_raise_only_domain_errors_when_given_arbitrary_bytes(raw: bytes) -> None:
    _parse_all(raw)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(GOOD) - 1), st.binary(min_size=0, max_size=6), st.integers(0, 6))
def test_parsers_raise_only_domain_errors_when_a_valid_note_is_spliced(at: int, insert: bytes, cut: int) -> None:
    _parse_all(GOOD[:at] + insert + GOOD[at + cut :])


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("gw\n\u2014 +=/09AZaz-.:bastion-retention"), max_size=200))
def test_parsers_raise_only_domain_errors_when_text_resembles_a_note(text: str) -> None:
    _parse_all(text.encode())
