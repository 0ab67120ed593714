"""Authenticator: credential precedence, refusals with their RFC 6750/9728 challenge, mTLS, anonymous."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bastion.errors import AuthenticationError, ConfigError
from bastion.identity import Authenticator, AuthMethod, IdentitySettings, JwksCache, Principal, Reason, create_api_key

from .memory_store import MemoryApiKeyStore
from .support import AUDIENCE, KeyServer, claims, ec_key, mint

pytestmark = pytest.mark.anyio
PATH = "/servers/github/mcp"
METADATA_URL = "https://bastion.example.com/.well-known/oauth-protected-resource/servers/github/mcp"


def settings_for(server: KeyServer | None, **overrides: Any) -> IdentitySettings:
    raw: dict[str, Any] = {"resource_url": AUDIENCE, "api_keys": {"enabled": True}}
    if server is not None:
        raw["jwt"] = {"issuers": [{"issuer": server.issuer}]}
    raw.update(overrides)
    return IdentitySettings.model_validate(raw)


@asynccontextmanager
async def authenticator_for(
    settings: IdentitySettings, store: MemoryApiKeyStore | None
) -> AsyncIterator[Authenticator]:
    authenticator = Authenticator.from_settings(settings, store)
    try:
        yield authenticator
    finally:
        await authenticator.aclose()


async def refusal(authenticator: Authenticator, headers: dict[str, str], **kwargs: Any) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as caught:
        await authenticator.authenticate(headers, path=PATH, **kwargs)
    return caught.value


async def test_bearer_jwt_identifies_the_caller(key_server: KeyServer) -> None:
    key = ec_key()
    key_server.set_keys(key.jwk)
    async with authenticator_for(settings_for(key_server), MemoryApiKeyStore()) as authenticator:
        token = mint(key, claims(key_server.issuer))
        principal = await authenticator.authenticate({"authorization": f"Bearer {token}"}, path=PATH)
        lower_scheme = await authenticator.authenticate({"authorization": f"bearer  {token} "}, path=PATH)
    assert principal.method is AuthMethod.JWT and principal.subject == "alice"
    assert lower_scheme == principal


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
async def test_api_key_identifies_the_caller_in_either_header(header: str) -> None:
    store = MemoryApiKeyStore()
    plaintext, record = await create_api_key(store, "ci-bot", ["deployers"], None)
    value = f"Bearer {plaintext}" if header == "authorization" else plaintext
    async with authenticator_for(settings_for(None), store) as authenticator:
        principal = await authenticator.authenticate({header: value}, path=PATH)
    assert principal.method is AuthMethod.API_KEY and principal.client_id == record.key_id


async def test_records_api_key_last_use_without_awaiting_it() -> None:
    store = MemoryApiKeyStore()
    plaintext, record = await create_api_key(store, "ci-bot", [], None)
    async with authenticator_for(settings_for(None), store) as authenticator:
        await authenticator.authenticate({"x-api-key": plaintext})
    assert [key_id for key_id, _ in store.touches] == [record.key_id]  # flushed by aclose()


async def test_refuses_api_key_when_api_keys_are_disabled() -> None:
    store = MemoryApiKeyStore()
    plaintext, _ = await create_api_key(store, "ci-bot", [], None)
    settings = settings_for(None, api_keys={"enabled": False})
    async with authenticator_for(settings, store) as authenticator:
        error = await refusal(authenticator, {"x-api-key": plaintext})
    assert error.data["reason"] is Reason.API_KEYS_DISABLED and error.data["status_code"] == 401


async def test_refusal_without_credentials_carries_metadata_challenge_without_error() -> None:
    async with authenticator_for(settings_for(None), MemoryApiKeyStore()) as authenticator:
        error = await refusal(authenticator, {})
    assert error.data["reason"] is Reason.MISSING_CREDENTIALS
    assert error.data["status_code"] == 401
    assert error.data["www_authenticate"] == f'Bearer resource_metadata="{METADATA_URL}"'


async def test_refusal_of_bad_token_carries_invalid_token_challenge(key_server: KeyServer) -> None:
    key = ec_key()
    key_server.set_keys(key.jwk)
    settings = settings_for(key_server, scopes_supported=["mcp:tools", "mcp:resources"])
    async with authenticator_for(settings, MemoryApiKeyStore()) as authenticator:
        token = mint(key, claims(key_server.issuer, aud="https://elsewhere.example.com"))
        error = await refusal(authenticator, {"authorization": f"Bearer {token}"})
    assert error.data["reason"] is Reason.WRONG_AUDIENCE
    assert error.data["www_authenticate"] == (
        'Bearer error="invalid_token", error_description="The token was not issued for this resource", '
        f'scope="mcp:tools mcp:resources", resource_metadata="{METADATA_URL}"'
    )
    assert error.public_message == "Unauthorized"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"authorization": "Basic YWxpY2U6c2VjcmV0"}, Reason.UNSUPPORTED_SCHEME),
        ({"authorization": "Bearer "}, Reason.UNSUPPORTED_SCHEME),
        ({"authorization": "Bearer x.y.z", "x-api-key": "bst_x"}, Reason.AMBIGUOUS_CREDENTIALS),
    ],
    ids=["basic", "empty-bearer", "two-credentials"],
)
async def test_refuses_malformed_requests_with_invalid_request(headers: dict[str, str], reason: Reason) -> None:
    async with authenticator_for(settings_for(None), MemoryApiKeyStore()) as authenticator:
        error = await refusal(authenticator, headers)
    assert error.data["reason"] is reason
    assert error.data["error"] == "invalid_request" and error.data["status_code"] == 400
    assert error.data["www_authenticate"].startswith('Bearer error="invalid_request", ')


async def test_admits_anonymous_caller_only_when_allowed() -> None:
    async with authenticator_for(settings_for(None, allow_anonymous=True), MemoryApiKeyStore()) as authenticator:
        assert await authenticator.authenticate({}) == Principal.anonymous()
        error = await refusal(authenticator, {"x-api-key": "bst_nope"})
    assert error.data["reason"] is Reason.API_KEY_MALFORMED  # a bad credential is never downgraded to anonymous


async def test_client_certificate_from_uvicorn_identifies_the_caller_when_mtls_enabled() -> None:
    enabled = settings_for(None, mtls={"enabled": True})
    async with authenticator_for(enabled, MemoryApiKeyStore()) as authenticator:
        principal = await authenticator.authenticate({}, "CN=agent-7,O=Example")
    assert principal.method is AuthMethod.MTLS and principal.subject == "CN=agent-7,O=Example"
    async with authenticator_for(settings_for(None), MemoryApiKeyStore()) as authenticator:
        error = await refusal(authenticator, {}, client_cert_subject="CN=agent-7,O=Example")
    assert error.data["reason"] is Reason.MISSING_CREDENTIALS


async def test_certificate_header_is_trusted_only_from_trusted_proxies() -> None:
    settings = settings_for(
        None, mtls={"enabled": True, "subject_header": "X-Client-Cert-Subject", "trusted_proxies": ["10.0.0.0/8"]}
    )
    headers = {"x-client-cert-subject": "CN=agent-7"}
    async with authenticator_for(settings, MemoryApiKeyStore()) as authenticator:
        principal = await authenticator.authenticate(headers, peer_host="10.1.2.3")
        spoofed = await refusal(authenticator, headers, peer_host="192.0.2.10")
        no_peer = await refusal(authenticator, headers)
    assert principal.subject == "CN=agent-7" and principal.method is AuthMethod.MTLS
    assert spoofed.data["reason"] is Reason.MTLS_UNTRUSTED_PROXY
    assert no_peer.data["reason"] is Reason.MTLS_UNTRUSTED_PROXY


async def test_construction_fails_when_api_keys_enabled_without_store() -> None:
    with pytest.raises(ConfigError):
        Authenticator(settings_for(None), {}, None)


async def test_construction_fails_when_a_jwks_issuer_has_no_cache(key_server: KeyServer) -> None:
    with pytest.raises(ConfigError):
        Authenticator(settings_for(key_server), {}, MemoryApiKeyStore())


async def test_aclose_closes_the_caches_it_owns(key_server: KeyServer) -> None:
    settings = settings_for(key_server)
    cache = JwksCache(settings.jwt.issuers[0])
    authenticator = Authenticator(settings, {key_server.issuer: cache}, MemoryApiKeyStore())
    await authenticator.aclose()
    key = ec_key()
    key_server.set_keys(key.jwk)
    error = await refusal(authenticator, {"authorization": f"Bearer {mint(key, claims(key_server.issuer))}"})
    assert error.data["reason"] is Reason.KEYS_UNAVAILABLE  # the closed client cannot fetch
