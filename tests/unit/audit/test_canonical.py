"""RFC 8785 encoding and the canonical-body check."""

from __future__ import annotations

import pytest

from bastion.audit.canonical import CanonicalEncodingError, canonical_bytes, parse_canonical


def test_keys_sorted_and_whitespace_removed_when_encoding() -> None:
    assert canonical_bytes({"b": [1, 2.5, None], "a": "é\n"}) == '{"a":"é\\n","b":[1,2.5,null]}'.encode()


def test_numbers_use_ecmascript_form_when_encoding() -> None:
    # RFC 8785 §3.2.2.3: 1.0 serialises as 1, 1e21 as 1e+21.
    assert canonical_bytes([1.0, 1e21, -0.0]) == b"[1,1e+21,0]"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**53, {1: "x"}, b"bytes", "\ud800", {"s": {1, 2}}])
def test_canonical_bytes_raises_domain_error_when_value_has_no_jcs_form(value: object) -> None:
    with pytest.raises(CanonicalEncodingError):
        canonical_bytes(value)


def test_parse_canonical_returns_value_when_bytes_are_canonical() -> None:
    assert parse_canonical(b'{"origin":"gw","seq":3}') == {"origin": "gw", "seq": 3}


@pytest.mark.parametrize(
    "body",
    [
        b'{"seq":3,"origin":"gw"}',
        b'{"a": 1}',
        b'{"a":1.0}',
        b'{"a":1,"a":1}',
        b'{"a":"\\u0041"}',
        b"\xff",
        b"{",
        b"NaN",
        b"[" * 100000,
        b"1" * 5000,
    ],
    ids=[
        "key-order",
        "whitespace",
        "float-form",
        "duplicate-key",
        "needless-escape",
        "not-utf8",
        "truncated",
        "nan",
        "deep",
        "huge-int",
    ],
)
def test_parse_canonical_raises_domain_error_when_bytes_are_not_canonical(body: bytes) -> None:
    with pytest.raises(CanonicalEncodingError):
        parse_canonical(body)
