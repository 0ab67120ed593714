"""Checkpoint and signed-note formats: vectors, round trips, hostile inputs, retention lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bastion.audit.checkpoint import (
    Checkpoint,
    MalformedNoteError,
    parse_checkpoint,
    parse_checkpoint_time,
    parse_retention,
    parse_signed_note,
    render_checkpoint,
    render_retention_extension,
    render_time_extension,
    sign_checkpoint,
    sign_note,
    verify_note,
)
from bastion.audit.compact import Frontier
from bastion.audit.hashing import EMPTY_ROOT, hash_leaf
from bastion.audit.keys import (
    KeyOutsideWindowError,
    KeyRing,
    SigningKey,
    UnknownKeyError,
    parse_key_ring,
)
from bastion.errors import BadSignatureError, RootMismatchError, VerificationError

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "checkpoint"
KEY = SigningKey("gw.example/log", bytes(range(32)))
RING = KeyRing([KEY.public()])


def _open(note: bytes, key_ring: str) -> Checkpoint:
    signed = parse_signed_note(note)
    checkpoint = parse_checkpoint(signed.text)
    verify_note(signed, parse_key_ring(key_ring), parse_checkpoint_time(checkpoint))
    parse_retention(checkpoint)
    return checkpoint


@pytest.mark.parametrize("path", sorted(VECTORS.glob("*.json")), ids=lambda p: p.stem)
def test_checkpoint_vector_gives_recorded_outcome_when_opened(path: Path) -> None:
    vector: dict[str, Any] = json.loads(path.read_text())
    note = bytes.fromhex(vector["note_hex"])
    if vector["want_error"] is None:
        checkpoint = _open(note, vector["key_ring"])
        if "want" in vector:
            want = vector["want"]
            assert checkpoint == Checkpoint(
                want["origin"], want["tree_size"], bytes.fromhex(want["root_hash"]), tuple(want["extensions"])
            )
        return
    with pytest.raises(VerificationError) as caught:
        _open(note, vector["key_ring"])
    assert type(caught.value).__name__ == vector["want_error"]


def test_render_then_parse_returns_same_checkpoint_when_extensions_present() -> None:
    checkpoint = Checkpoint("gw", 0, EMPTY_ROOT, ("bastion-time 2026-01-01T00:00:00.000Z", "x y"))
    text = render_checkpoint(checkpoint)
    assert text == "gw\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\nbastion-time 2026-01-01T00:00:00.000Z\nx y\n"
    assert parse_checkpoint(text) == checkpoint


@pytest.mark.parametrize(
    "checkpoint",
    [
        Checkpoint("", 1, EMPTY_ROOT),
        Checkpoint("a\nb", 1, EMPTY_ROOT),
        Checkpoint("gw", -1, EMPTY_ROOT),
        Checkpoint("gw", 1, b"short"),
        Checkpoint("gw", 1, EMPTY_ROOT, ("",)),
        Checkpoint("gw\t", 1, EMPTY_ROOT),
    ],
    ids=["empty-origin", "newline-in-origin", "negative-size", "short-root", "empty-extension", "tab"],
)
def test_render_raises_malformed_note_when_fields_cannot_round_trip(checkpoint: Checkpoint) -> None:
    with pytest.raises(MalformedNoteError):
        render_checkpoint(checkpoint)


def test_signature_covers_text_when_note_is_signed_and_verified() -> None:
    note = sign_note("hello\nworld\n", KEY)
    signed = parse_signed_note(note)
    assert signed.text == "hello\nworld\n"
    assert signed.signatures[0].key_id == KEY.public().key_id
    verify_note(signed, RING)


def test_sign_note_raises_malformed_when_text_has_blank_line() -> None:
    with pytest.raises(MalformedNoteError):
        sign_note("a\n\nb\n", KEY)


def test_verify_raises_unknown_key_when_ring_is_empty() -> None:
    with pytest.raises(UnknownKeyError):
        verify_note(parse_signed_note(sign_note("a\n", KEY)), KeyRing())


def test_verify_raises_bad_signature_when_known_key_fails_even_if_another_verifies() -> None:
    other = SigningKey("gw.example/log", bytes(32))
    good = sign_note("a\n", KEY)
    forged_line = sign_note("b\n", other).split("\n\n")[1]
    note = parse_signed_note(good + forged_line)
    with pytest.raises(BadSignatureError) as caught:
        verify_note(note, KeyRing([KEY.public(), other.public()]))
    assert type(caught.value) is BadSignatureError


def _windowed_ring(from_: str, until: str) -> KeyRing:
    from bastion.audit.keys import render_vkey

    return parse_key_ring(f"{render_vkey(KEY.public())} from={from_} until={until}\n")


def test_old_checkpoint_still_verifies_when_key_was_rotated_after_it() -> None:
    ring = _windowed_ring("2026-01-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00")
    signed = parse_signed_note(sign_checkpoint(Checkpoint("gw.example/log", 1, EMPTY_ROOT), KEY))
    verify_note(signed, ring, datetime(2026, 1, 15, tzinfo=UTC))
    with pytest.raises(KeyOutsideWindowError):
        verify_note(signed, ring, datetime(2026, 2, 1, tzinfo=UTC))
    with pytest.raises(KeyOutsideWindowError):
        verify_note(signed, ring, None)


def test_time_extension_round_trips_when_rendered_in_utc() -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)
    line = render_time_extension(moment)
    assert line == "bastion-time 2026-03-04T05:06:07.891Z"
    assert parse_checkpoint_time(Checkpoint("gw", 1, EMPTY_ROOT, (line,))) == moment


@pytest.mark.parametrize(
    "lines",
    [("bastion-time yesterday",), ("bastion-time 2026-01-01T00:00:00",), ("bastion-time 2026-01-01T00:00:00Z",) * 2],
    ids=["not-a-time", "no-offset", "repeated"],
)
def test_parse_time_raises_malformed_when_line_is_bad(lines: tuple[str, ...]) -> None:
    with pytest.raises(MalformedNoteError):
        parse_checkpoint_time(Checkpoint("gw", 1, EMPTY_ROOT, lines))


def test_retention_frontier_round_trips_when_root_matches() -> None:
    frontier = Frontier()
    for i in range(11):
        frontier.append(hash_leaf(bytes([i])))
    checkpoint = Checkpoint("gw", 11, frontier.root(), (render_retention_extension(frontier),))
    assert parse_retention(parse_checkpoint(render_checkpoint(checkpoint))) == frontier
    assert parse_retention(Checkpoint("gw", 11, frontier.root())) is None


def test_retention_raises_root_mismatch_when_frontier_does_not_build_signed_root() -> None:
    frontier = Frontier(1, (hash_leaf(b"x"),))
    with pytest.raises(RootMismatchError):
        parse_retention(Checkpoint("gw", 1, hash_leaf(b"y"), (render_retention_extension(frontier),)))


@pytest.mark.parametrize(
    "line",
    ["bastion-retention 2 AAAA", "bastion-retention x", "bastion-retention 1", "bastion-retention 1 !!!!"],
    ids=["wrong-seq", "seq-not-number", "missing-hash", "bad-base64"],
)
def test_retention_raises_malformed_when_line_is_bad(line: str) -> None:
    with pytest.raises(MalformedNoteError):
        parse_retention(Checkpoint("gw", 1, hash_leaf(b"x"), (line,)))
