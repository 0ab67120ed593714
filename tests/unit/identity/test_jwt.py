"""JWT verification against a JWKS served on loopback: accepted tokens and each refusal reason."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bastion.errors import AuthenticationError
from bastion.identity.jwks import JwksCache
from bastion.identity.jwt import JwtVerifier
from bastion.identity.principal import AuthMethod
from bastion.identity.refusal import Reason
from bastion.identity.settings import IdentitySettings

from .support import (
    AUDIENCE,
    DISCOVERY_PATH,
    JWKS_PATH,
    KeyServer,
    SigningKey,
    b64json,
    b64url,
    claims,
    ec_key,
    ed_key,
    mint,
    rsa_key,
)

pytestmark = pytest.mark.anyio
REFRESH_INTERVAL_S = 30.0


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@asynccontextmanager
async def verifier_for(server: KeyServer, **issuer: Any) -> AsyncIterator[tuple[JwtVerifier, FakeClock]]:
    settings = IdentitySettings.model_validate(
        {
            "resource_url": AUDIENCE,
            "jwt": {
                "issuers": [{"issuer": server.issuer, "jwks_refresh_min_interval_s": REFRESH_INTERVAL_S, **issuer}]
            },
        }
    )
    clock = FakeClock()
    cache = JwksCache(settings.jwt.issuers[0], clock=clock)
    try:
        yield JwtVerifier(settings, {cache.settings.issuer: cache}), clock
    finally:
        await cache.aclose()


async def refused(verifier: JwtVerifier, token: str, *, path: str = "") -> Reason:
    with pytest.raises(AuthenticationError) as caught:
        await verifier.verify_jwt(token, path=path)
    assert caught.value.data["error"] == "invalid_token"
    reason = caught.value.data["reason"]
    assert isinstance(reason, Reason)
    return reason


@pytest.mark.parametrize("make_key", [rsa_key, ec_key, ed_key], ids=["RS256", "ES256", "EdDSA"])
async def test_accepts_token_when_signed_by_a_published_key(key_server: KeyServer, make_key: Any) -> None:
    key: SigningKey = make_key()
    key_server.set_keys(key.jwk)
    payload = claims(key_server.issuer, client_id="agent-cli")
    async with verifier_for(key_server) as (verifier, _):
        principal = await verifier.verify_jwt(mint(key, payload))
    assert principal.subject == "alice"
    assert principal.issuer == key_server.issuer
    assert principal.groups == frozenset({"eng", "oncall"})
    assert principal.method is AuthMethod.JWT
    assert principal.client_id == "agent-cli"
    assert principal.expires_at == payload["exp"]
    assert key_server.hits[DISCOVERY_PATH] == 1 and key_server.hits[JWKS_PATH] == 1


async def test_skips_discovery_when_jwks_url_is_configured(key_server: KeyServer) -> None:
    key = ec_key()
    key_server.set_keys(key.jwk)
    async with verifier_for(key_server, jwks_url=key_server.issuer + JWKS_PATH) as (verifier, _):
        await verifier.verify_jwt(mint(key, claims(key_server.issuer)))
        await verifier.verify_jwt(mint(key, claims(key_server.issuer, sub="bob")))
    assert key_server.hits[DISCOVERY_PATH] == 0 and key_server.hits[JWKS_PATH] == 1


@dataclass(frozen=True)
class FROM_NOW:  # noqa: N801 - reads as a value in the parameter table
    """A claim time given as seconds from the moment the test runs."""

    offset_s: int

    def resolve(self) -> int:
        return int(time.time()) + self.offset_s


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": FROM_NOW(-120)}, Reason.EXPIRED),
        ({"nbf": FROM_NOW(120)}, Reason.NOT_YET_VALID),
        ({"iat": FROM_NOW(120)}, Reason.ISSUED_IN_FUTURE),
        ({"exp": None}, Reason.MISSING_CLAIM),
        ({"exp": "tomorrow"}, Reason.INVALID_CLAIM),
        ({"aud": "https://other.example.com"}, Reason.WRONG_AUDIENCE),
        ({"aud": None}, Reason.MISSING_CLAIM),
        ({"sub": None}, Reason.MISSING_CLAIM),
        ({"groups": {"admin": True}}, Reason.INVALID_CLAIM),
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "issued-in-future",
        "no-exp",
        "exp-not-number",
        "wrong-aud",
        "no-aud",
        "no-sub",
        "groups-not-list",
    ],
)
async def test_refuses_token_when_claims_are_wrong(
    key_server: KeyServer, overrides: dict[str, Any], reason: Reason
) -> None:
    key = ec_key()
    key_server.set_keys(key.jwk)
    # Times are resolved now, not at collection: a long suite must not age them into validity.
    resolved = {k: v.resolve() if isinstance(v, FROM_NOW) else v for k, v in overrides.items()}
    async with verifier_for(key_server) as (verifier, _):
        assert await refused(verifier, mint(key, claims(key_server.issuer, **resolved))) is reason


async def test_accepts_token_when_times_are_within_clock_skew(key_server: KeyServer) -> None:
    key = ec_key()
    key_server.set_keys(key.jwk)
    now = int(time.time())
    token = mint(key, claims(key_server.issuer, exp=now - 10, nbf=now + 10, iat=now + 10))
    async with verifier_for(key_server) as (verifier, _):
        assert (await verifier.verify_jwt(token)).subject == "alice"


async def test_audience_is_bastion_or_the_endpoint_when_no_audiences_configured(key_server: KeyServer) -> None:
    key = ec_key()
    key_server.set_keys(key.jwk)
    endpoint_token = mint(key, claims(key_server.issuer, aud=[AUDIENCE + "/servers/github/mcp"]))
    async with verifier_for(key_server) as (verifier, _):
        await verifier.verify_jwt(endpoint_token, path="/servers/github/mcp")
        await verifier.verify_jwt(mint(key, claims(key_server.issuer)), path="/servers/github/mcp")
        assert await refused(verifier, endpoint_token, path="/servers/jira/mcp") is Reason.WRONG_AUDIENCE


async def test_configured_audiences_replace_the_resource_url(key_server: KeyServer) -> None:
    key = ec_key()
    key_server.set_keys(key.jwk)
    async with verifier_for(key_server, audiences=["bastion"]) as (verifier, _):
        await verifier.verify_jwt(mint(key, claims(key_server.issuer, aud=["other", "bastion"])))
        assert await refused(verifier, mint(key, claims(key_server.issuer))) is Reason.WRONG_AUDIENCE


async def test_refuses_token_when_issuer_is_not_configured(key_server: KeyServer) -> None:
    key = ec_key()
    key_server.set_keys(key.jwk)
    async with verifier_for(key_server) as (verifier, _):
        assert await refused(verifier, mint(key, claims("https://evil.example.com"))) is Reason.UNKNOWN_ISSUER
    assert key_server.hits[JWKS_PATH] == 0


@pytest.mark.parametrize("signature", ["", "c2ln"], ids=["empty-signature", "with-signature"])
async def test_refuses_token_when_alg_is_none(key_server: KeyServer, signature: str) -> None:
    key = ec_key()
    key_server.set_keys(key.jwk)
    token = f"{b64json({'alg': 'none', 'kid': key.kid})}.{b64json(claims(key_server.issuer))}.{signature}"
    async with verifier_for(key_server) as (verifier, _):
        assert await refused(verifier, token) is Reason.ALGORITHM_REFUSED


async def test_refuses_hs256_token_when_signed_with_the_rsa_public_key(key_server: KeyServer) -> None:
    key = rsa_key()
    key_server.set_keys(key.jwk)
    pem = key.private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64json({'alg': 'HS256', 'kid': key.kid, 'typ': 'JWT'})}.{b64json(claims(key_server.issuer))}"
    forged = signing_input + "." + b64url(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())
    async with verifier_for(key_server) as (verifier, _):
        assert await refused(verifier, forged) is Reason.ALGORITHM_REFUSED


async def test_refuses_token_when_alg_does_not_match_the_key_type(key_server: KeyServer) -> None:
    rsa, ec = rsa_key(), ec_key()
    key_server.set_keys(rsa.jwk, ec.jwk)
    # An ES256 token whose kid names the RSA key: the RSA key never verifies ES256.
    token = mint(SigningKey(rsa.kid, "ES256", ec.private), claims(key_server.issuer))
    async with verifier_for(key_server) as (verifier, _):
        assert await refused(verifier, token) is Reason.ALGORITHM_REFUSED


async def test_refuses_token_when_alg_is_not_in_the_issuer_allow_list(key_server: KeyServer) -> None:
    key = rsa_key()
    key_server.set_keys(key.jwk)
    async with verifier_for(key_server, algorithms=["ES256"]) as (verifier, _):
        assert await refused(verifier, mint(key, claims(key_server.issuer))) is Reason.ALGORITHM_REFUSED


async def test_refuses_token_when_payload_is_tampered(key_server: KeyServer) -> None:
    key = ed_key()
    key_server.set_keys(key.jwk)
    header, _, signature = mint(key, claims(key_server.issuer)).split(".")
    tampered = f"{header}.{b64json(claims(key_server.issuer, sub='mallory', groups=['admin']))}.{signature}"
    async with verifier_for(key_server) as (verifier, _):
        assert await refused(verifier, tampered) is Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "e30.e30.c2ln",
        b64json({"alg": "ES256"}) + ".e30.!!!",
        "bm90LWpzb24.e30.c2ln",
        "W10.e30.c2ln",
        "a" * 20000,
    ],
    ids=[
        "empty",
        "one-part",
        "two-parts",
        "four-parts",
        "no-alg",
        "bad-signature-chars",
        "header-not-json",
        "header-not-object",
        "oversized",
    ],
)
async def test_refuses_token_when_malformed(key_server: KeyServer, token: str) -> None:
    async with verifier_for(key_server) as (verifier, _):
        assert await refused(verifier, token) is Reason.MALFORMED_TOKEN


async def test_unknown_kid_refreshes_once_per_interval(key_server: KeyServer) -> None:
    known, stranger = ec_key("known"), ec_key("stranger")
    key_server.set_keys(known.jwk)
    async with verifier_for(key_server) as (verifier, clock):
        await verifier.verify_jwt(mint(known, claims(key_server.issuer)))
        assert key_server.hits[JWKS_PATH] == 1
        clock.now_s += REFRESH_INTERVAL_S
        assert await refused(verifier, mint(stranger, claims(key_server.issuer))) is Reason.UNKNOWN_KEY
        assert key_server.hits[JWKS_PATH] == 2
        clock.now_s += REFRESH_INTERVAL_S - 1
        other = ec_key("another-stranger")
        assert await refused(verifier, mint(other, claims(key_server.issuer))) is Reason.UNKNOWN_KEY
        assert key_server.hits[JWKS_PATH] == 2


async def test_concurrent_unknown_kids_share_one_fetch(key_server: KeyServer) -> None:
    known = ec_key("known")
    key_server.set_keys(known.jwk)
    async with verifier_for(key_server) as (verifier, clock):
        await verifier.verify_jwt(mint(known, claims(key_server.issuer)))
        clock.now_s += REFRESH_INTERVAL_S
        reasons: list[Reason] = []

        async def attempt(index: int) -> None:
            reasons.append(await refused(verifier, mint(ec_key(f"stranger-{index}"), claims(key_server.issuer))))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                for index in range(20):
                    group.start_soon(attempt, index)
    assert reasons == [Reason.UNKNOWN_KEY] * 20
    assert key_server.hits[JWKS_PATH] == 2


async def test_accepts_rotated_key_after_refresh(key_server: KeyServer) -> None:
    old, new = ec_key("2024"), ed_key("2025")
    key_server.set_keys(old.jwk)
    async with verifier_for(key_server) as (verifier, clock):
        await verifier.verify_jwt(mint(old, claims(key_server.issuer)))
        key_server.set_keys(old.jwk, new.jwk)
        clock.now_s += REFRESH_INTERVAL_S
        assert (await verifier.verify_jwt(mint(new, claims(key_server.issuer)))).subject == "alice"
        await verifier.verify_jwt(mint(old, claims(key_server.issuer)))
    assert key_server.hits[JWKS_PATH] == 2


async def test_removed_key_is_refused_once_keys_reach_max_age(key_server: KeyServer) -> None:
    old, new = ec_key("old"), ec_key("new")
    key_server.set_keys(old.jwk)
    async with verifier_for(key_server, jwks_max_age_s=300) as (verifier, clock):
        await verifier.verify_jwt(mint(old, claims(key_server.issuer)))
        key_server.set_keys(new.jwk)
        clock.now_s += 299
        await verifier.verify_jwt(mint(old, claims(key_server.issuer)))
        clock.now_s += 1
        assert await refused(verifier, mint(old, claims(key_server.issuer))) is Reason.UNKNOWN_KEY
    assert key_server.hits[JWKS_PATH] == 2


async def test_keeps_previous_keys_when_a_refresh_fails(key_server: KeyServer) -> None:
    key = ec_key()
    key_server.set_keys(key.jwk)
    async with verifier_for(key_server, jwks_max_age_s=300) as (verifier, clock):
        await verifier.verify_jwt(mint(key, claims(key_server.issuer)))
        key_server.status = 500
        clock.now_s += 300
        await verifier.verify_jwt(mint(key, claims(key_server.issuer)))
    assert key_server.hits[JWKS_PATH] == 2


async def test_refuses_token_when_jwks_cannot_be_fetched(key_server: KeyServer) -> None:
    key = ec_key()
    key_server.set_keys(key.jwk)
    key_server.status = 503
    async with verifier_for(key_server) as (verifier, _):
        assert await refused(verifier, mint(key, claims(key_server.issuer))) is Reason.KEYS_UNAVAILABLE
        assert await refused(verifier, mint(key, claims(key_server.issuer))) is Reason.KEYS_UNAVAILABLE
    assert key_server.hits[DISCOVERY_PATH] == 1


async def test_refuses_token_when_discovery_names_another_issuer(key_server: KeyServer) -> None:
    key = ec_key()
    key_server.set_keys(key.jwk)
    localhost_issuer = key_server.issuer.replace("127.0.0.1", "localhost")
    async with verifier_for(key_server, issuer=localhost_issuer) as (verifier, _):
        token = mint(key, claims(localhost_issuer))
        assert await refused(verifier, token) is Reason.KEYS_UNAVAILABLE
    assert key_server.hits[JWKS_PATH] == 0


async def test_maps_kubernetes_service_account_token(key_server: KeyServer) -> None:
    key = rsa_key()
    key_server.set_keys(key.jwk)
    payload = claims(
        key_server.issuer,
        sub="system:serviceaccount:agents:planner",
        aud=["bastion"],
        groups=None,
        **{"kubernetes.io": {"namespace": "agents", "serviceaccount": {"name": "planner", "uid": "u-1"}}},
    )
    async with verifier_for(key_server, audiences=["bastion"], kubernetes_service_accounts=True) as (verifier, _):
        principal = await verifier.verify_jwt(mint(key, payload))
        spoofed = {**payload, "sub": "system:serviceaccount:kube-system:admin"}
        assert await refused(verifier, mint(key, spoofed)) is Reason.INVALID_CLAIM
    assert principal.subject == "system:serviceaccount:agents:planner"
    assert principal.groups == frozenset({"system:serviceaccounts", "system:serviceaccounts:agents"})


async def test_ignores_kubernetes_claim_when_issuer_is_not_marked_kubernetes(key_server: KeyServer) -> None:
    key = ec_key()
    key_server.set_keys(key.jwk)
    payload = claims(key_server.issuer, groups=None, **{"kubernetes.io": {"namespace": "kube-system"}})
    async with verifier_for(key_server) as (verifier, _):
        assert (await verifier.verify_jwt(mint(key, payload))).groups == frozenset()


async def test_hs256_issuer_accepts_only_its_shared_secret(key_server: KeyServer) -> None:
    secret = "s" * 32
    settings = IdentitySettings.model_validate(
        {
            "resource_url": AUDIENCE,
            "jwt": {"issuers": [{"issuer": key_server.issuer, "algorithms": ["HS256"], "shared_secret": secret}]},
        }
    )
    verifier = JwtVerifier(settings, {})
    import jwt as pyjwt

    good = pyjwt.encode(claims(key_server.issuer), secret, algorithm="HS256")
    wrong_secret = pyjwt.encode(claims(key_server.issuer), "t" * 32, algorithm="HS256")
    assert (await verifier.verify_jwt(good)).subject == "alice"
    assert await refused(verifier, wrong_secret) is Reason.BAD_SIGNATURE
    assert await refused(verifier, mint(rsa_key(), claims(key_server.issuer))) is Reason.ALGORITHM_REFUSED
    assert key_server.hits[JWKS_PATH] == 0
