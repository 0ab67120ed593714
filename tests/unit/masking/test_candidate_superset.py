"""Candidate patterns are supersets of their detectors' Python regexes, and clean API JSON raises none.

The equivalence tests in ``test_scanner_backends`` compare confirmed hits, which a lost candidate
could hide whenever the validator would have rejected it anyway. Here every single position where a
detector's Python regex matches must lie inside a span its own candidate pattern reports (regions),
or its gate must fire (gates), on the corpus, on boundary shapes and on generated text.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.masking import candidates
from bastion.masking.builtin_pii import PII_DETECTORS
from bastion.masking.builtin_secrets import SECRET_DETECTORS
from bastion.masking.model import Detector
from bastion.masking.scanner import Scanner

pytestmark = pytest.mark.skipif(not candidates.AVAILABLE, reason="hyperscan not importable")

CORPUS = Path(__file__).parents[3] / "bench" / "masking" / "corpus" / "corpus.jsonl"
DETECTORS: tuple[Detector, ...] = tuple(d for d in (*PII_DETECTORS, *SECRET_DETECTORS) if d.finder is None)
REGIONS = {i: candidates.Candidates({0: d.pattern}, {}) for i, d in enumerate(DETECTORS)}
GATES = {
    i: candidates.Candidates({}, {0: (d.pattern, 3 if d.keywords else None, not (d.keywords or d.context))})
    for i, d in enumerate(DETECTORS)
}
RX = {i: re.compile(d.pattern) for i, d in enumerate(DETECTORS)}

# Boundary shapes around the digit-led detectors, and what clean API JSON is made of.
SHAPES = [
    "411111111111", "4111111111111", "4111111111111111111", "41111111111111111111", "4111 1111 1111 1111",
    "4111-1111-1111-1111", "3782 822463 10005", "6011111111111117", "123-45-6789", "123 45 6789", "2345 6789 0123",
    "2345-6789-0123", "123.456.789-09", "11010519491231002X", "192.168.10.20", "10.0.0.1.5", "2024-05-12T10:37:00Z",
    "10:37:00", "T10:37:00Z", "507.42", "1,299.00", "SKU-039317", "1.3.1", "v1.2.3", "0x1f", "2001:db8::8a2e:370:7334",
    "fe80::1", "::1", "::", "::ffff:192.0.2.1", "2001:db8::", "a::b:c", "1::2:3", "fe80::1%eth0", "abcd:ef01:2345:6789:abcd:ef01:2345:6789",
    "+55 11 91460-8235", "+31 6 12048035", "0023 6261 24", "+33 6 12 64 97 58", "+49 1512 4770493", "+34 612 29 87 93",
    "+91 81262 61387", "(201) 775-8905", "+44 7407 337476", "0059 5373 5771 5978 30", "+1 201-874-9958",
    "+81 90-1719-6622", "+61 412 218 056", "007-77-8401", "0073 1617", "+44 (0) 20 7946 0958", "415.555.2671", "415-555-2671",
    "GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "AB123456C", "AB 12 34 56 C", "E123456",
    "password=hunter22", "PASSWORD: x", "api_key='Zx81kQ0pLm2nB7vC4tR9'", "\u212aey", "\u017fecret", "\u0130",
    "PA\u017f\u017fWORD=hunter22", "to\u212aen=abcdefghij0123456789ZZ", "\u0130 pwd: x9!x",
]
SEPARATORS = ["", " ", "\x00", "\u00a0", "\u2014", "\n", "-", ".", ",", "/", ":", "+", "a", "Z", "_", "é", "٣", "(", ")", '"', "T", "0"]


def _positions(rx: re.Pattern[str], text: str) -> list[int]:
    return [p for p in range(len(text) + 1) if rx.match(text, p)]


def _check(text: str) -> None:
    for i, rx in RX.items():
        starts = _positions(rx, text)
        if not starts:
            continue
        if (False, 0) in REGIONS[i].compiled:
            found = REGIONS[i].scan(text)
            assert found is not None
            spans = [(s, e) for _, s, e in found[0]]
            for p in starts:
                assert any(s <= p < e for s, e in spans), (DETECTORS[i].name, text, p, spans)
        if (True, 0) in GATES[i].compiled:
            found = GATES[i].scan(text)
            assert found is not None and 0 in found[1], (DETECTORS[i].name, text)


def test_every_detector_has_candidate_patterns() -> None:
    for i, det in enumerate(DETECTORS):
        assert (True, 0) in GATES[i].compiled, det.name
        # keyword detectors are only ever gates: their whole pattern may be too large to compile
        assert det.keywords or (False, 0) in REGIONS[i].compiled, det.name


def test_leading_lookbehind_becomes_a_consumed_character() -> None:
    expr = candidates.translate(r"(?<![\w.])\d")
    assert expr.startswith("(?:^|[") and "\\x2e" not in expr.split("]")[0] and "\\x80-\\xff" in expr
    assert candidates.translate(r"(?<![\w.])\d", lookbehind=False) == r"[\x30-\x39\x80-\xff]"
    # only a leading, one-character lookbehind: later or longer ones are dropped, as before
    assert candidates.translate(r"a(?<!\wa)b") == r"\x61\x62"
    assert candidates.translate(r"(?<!ab)c") == r"\x63"


def test_case_folding_keeps_only_the_folded_bytes() -> None:
    assert set(candidates._folds()) == {"\u0130", "\u0131", "\u017f", "\u212a"}
    assert candidates.translate(r"(?i)k") == r"[\x4b\x6b\xff]"
    assert candidates.translate(r"(?i)p") == r"[\x50\x70]"
    assert candidates.translate(r"(?i)\w").endswith(r"\x80-\xff]")


@pytest.mark.parametrize("shape", SHAPES)
def test_boundary_shapes(shape: str) -> None:
    for before in SEPARATORS:
        _check(before + shape)
        _check(shape + before)
        _check(before + shape + before)


def test_corpus_positions() -> None:
    texts = [line for line in CORPUS.read_text().splitlines()]
    for line in texts:
        payload = json.loads(line)["payload"]
        _check(payload if isinstance(payload, str) else orjson.dumps(payload).decode())


def test_clean_api_json_raises_no_candidates() -> None:
    rnd = random.Random(7)
    records = [
        {
            "id": i, "uuid": f"{rnd.getrandbits(128):032x}", "created_at": f"2024-05-{rnd.randint(1, 28):02d}T10:"
            f"{rnd.randint(0, 59):02d}:00Z", "price": round(rnd.uniform(1, 999), 2), "sku": f"SKU-{rnd.randint(0, 999999):06d}",
            "version": f"1.{rnd.randint(0, 9)}.{rnd.randint(0, 20)}", "quantity": rnd.randint(1, 50),
        }
        for i in range(50)
    ]
    scanner = Scanner((*PII_DETECTORS, *SECRET_DETECTORS), accelerate=True)
    for text in (orjson.dumps(records).decode(), "\x00".join(str(v) for r in records for v in r.values())):
        assert scanner._cands is not None
        found = scanner._cands.scan(text)
        assert found == ([], set()), found


PIECES = st.sampled_from([*SHAPES, *SEPARATORS, "4111", "1111", "555", "2671", "::", "0:0", "1"])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(PIECES, max_size=12))
def test_generated_positions(parts: list[str]) -> None:
    _check("".join(parts))
    _check(" ".join(parts))
