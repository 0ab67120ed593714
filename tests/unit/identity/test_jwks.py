"""Parsing a JWKS: which keys are usable and which algorithms each may verify."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from bastion.errors import AuthenticationError
from bastion.identity.jwks import parse_jwks
from bastion.identity.refusal import Reason
from bastion.identity.settings import ASYMMETRIC_ALGORITHMS

from .support import ec_key, ed_key, rsa_key

ALL = frozenset(ASYMMETRIC_ALGORITHMS)


def test_each_key_type_gets_only_its_own_algorithms() -> None:
    keys = parse_jwks({"keys": [rsa_key().jwk, ec_key().jwk, ed_key().jwk]}, ALL)
    assert [key.algorithms for key in keys] == [
        frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
        frozenset({"ES256"}),
        frozenset({"EdDSA"}),
    ]


def test_alg_member_and_allow_list_narrow_a_key() -> None:
    pinned = {**rsa_key().jwk, "alg": "PS256"}
    (key,) = parse_jwks({"keys": [pinned]}, ALL)
    assert key.algorithms == frozenset({"PS256"})
    assert parse_jwks({"keys": [pinned]}, frozenset({"RS256"})) == ()


def _p384_jwk() -> dict[str, Any]:
    return {**ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True), "kid": "p384"}


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "kid": "hmac"},
        {**rsa_key().jwk, "use": "enc"},
        {**RSAAlgorithm.to_jwk(rsa_key().private, as_dict=True), "kid": "private"},
        {
            **RSAAlgorithm.to_jwk(
                rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(), as_dict=True
            ),
            "kid": "short",
        },
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "kid": "missing-y", "x": "AAAA"},
        {**ec_key().jwk, "kid": 7},
        "not-an-object",
    ],
    ids=[
        "symmetric",
        "encryption-key",
        "private-key",
        "rsa-1024",
        "bad-modulus",
        "bad-ec",
        "kid-not-string",
        "not-object",
    ],
)
def test_unusable_keys_are_skipped(jwk: Any) -> None:
    assert parse_jwks({"keys": [jwk, ed_key("good").jwk]}, ALL)[0].kid == "good"


def test_p384_key_is_limited_to_es384() -> None:
    (key,) = parse_jwks({"keys": [_p384_jwk()]}, ALL)
    assert key.algorithms == frozenset({"ES384"})


@pytest.mark.parametrize("document", [None, [], {"keys": "x"}, {"no": "keys"}])
def test_refuses_document_that_is_not_a_jwks(document: Any) -> None:
    with pytest.raises(AuthenticationError) as caught:
        parse_jwks(document, ALL)
    assert caught.value.data["reason"] is Reason.KEYS_UNAVAILABLE
