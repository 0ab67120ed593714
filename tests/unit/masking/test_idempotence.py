"""Property: masking a masked output changes nothing (for every strategy that keeps the value)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.masking.conftest import make_masker

from bastion.masking import Masker
from bastion.masking.errors import MaskingError

SAMPLES = [
    "jane.doe@example.com", "+44 20 7946 0958", "(415) 555-2671", "4111 1111 1111 1111", "378282246310005",
    "DE89 3704 0044 0532 0130 00", "536-22-1234", "203.0.113.42", "2001:db8::8a2e:370:7334", "AB123456C",
    "2345 6789 0124", "529.982.247-25", "11010519491231002X", "AKIAIOSFODNN7EXAMPLE",
    "postgres://u:pw1234@db/x", "password=hunter2", 'api_key="q8Xr2LmZ7pWk4TnB9vYc"',
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "glpat-xY7zA9bC1dE3fG5hI7jK", "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
]
FILLER = st.text(alphabet=st.sampled_from(list("abcXYZ019 .-:@_+()[]*=/\n")), max_size=12)
TEXT = st.lists(st.one_of(st.sampled_from(SAMPLES), FILLER), max_size=8).map("".join)
JSON = st.recursive(
    st.one_of(TEXT, st.integers(), st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["email", "note", "password", "token", "x", "card_number"]), inner, max_size=4),
    ),
    max_leaves=12,
)
MASKERS = {
    strategy: make_masker(profiles={"p": {"extends": ["all"], "strategies": {
        name: strategy for name in ("email", "phone", "card", "iban", "us_ssn", "ipv4", "ipv6", "uk_nino", "in_aadhaar",
                                    "br_cpf", "cn_resident_id", "password_assignment", "secret_assignment", "jwt")}}},
        use=["p"])
    for strategy in ("redact", "partial", "hash")
}


def check(masker: Masker, value: Any) -> None:
    once = masker.mask_json(value)
    twice = masker.mask_json(once.value)
    assert twice.value == once.value
    assert twice.findings == ()


@settings(max_examples=150, deadline=None, database=None)
@given(JSON, st.sampled_from(sorted(MASKERS)))
def test_masking_is_idempotent_for_any_json(value: Any, strategy: str) -> None:
    check(MASKERS[strategy], value)


@settings(max_examples=150, deadline=None, database=None)
@given(TEXT, st.sampled_from(sorted(MASKERS)))
def test_masking_is_idempotent_for_any_text(text: str, strategy: str) -> None:
    masker = MASKERS[strategy]
    once = masker.mask_text(text, parse_json=False)
    assert masker.mask_text(once.value, parse_json=False).value == once.value


def test_masking_converges_when_values_glued_together_surface_one_per_rescan() -> None:
    # Found by the property above: each masked phone gives the next its boundary (…0958+44… has none).
    text = "jane.doe@example.com" + "+44 20 7946 0958" * 12
    once = MASKERS["hash"].mask_text(text, parse_json=False)
    assert "7946" not in once.value and once.value.count("[PHONE:") == 12
    assert MASKERS["hash"].mask_text(once.value, parse_json=False).value == once.value


def test_a_long_string_gets_fewer_rescans_and_fails_closed_beyond_them() -> None:
    # Every rescan reads the whole string on the event loop: 2 MB gets 4 rounds, not 64.
    glued = "jane.doe@example.com" + "+44 20 7946 0958" * 12
    with pytest.raises(MaskingError):
        MASKERS["hash"].mask_text("x" * 2_000_000 + " " + glued, parse_json=False)
