"""The `identity:` settings: unsafe or contradictory configurations fail at load time."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.errors import ConfigError
from bastion.identity import load_identity_settings

ISSUER = "https://login.example.com"


def with_issuer(**issuer: Any) -> dict[str, Any]:
    return {"resource_url": "https://bastion.example.com", "jwt": {"issuers": [{"issuer": ISSUER, **issuer}]}}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (with_issuer(algorithms=["none"]), "algorithms"),
        (with_issuer(algorithms=["RS256", "None"]), "algorithms"),
        (with_issuer(algorithms=[]), "algorithms"),
        (with_issuer(algorithms=["XS999"]), "algorithms"),
        (with_issuer(algorithms=["HS256"]), "shared_secret"),
        (with_issuer(algorithms=["HS256", "RS256"], shared_secret="k" * 32), "only HS*"),
        (with_issuer(algorithms=["HS256"], shared_secret="k" * 32, jwks_url=ISSUER + "/jwks"), "jwks_url"),
        (with_issuer(algorithms=["HS256"], shared_secret="short"), "at least 32 bytes"),
        (with_issuer(issuer="http://login.example.com"), "https"),
        (with_issuer(jwks_url="http://login.example.com/jwks"), "https"),
        (with_issuer(jwks_max_age_s=10, jwks_refresh_min_interval_s=30), "jwks_max_age_s"),
        (with_issuer(unknown_option=True), "unknown_option"),
        ({"resource_url": "https://b.example.com/mcp?x=1"}, "query"),
        ({"resource_url": "https://b.example.com#frag"}, "fragment"),
        (
            {"resource_url": "https://b.example.com", "mtls": {"enabled": True, "subject_header": "x-cert"}},
            "trusted_proxies",
        ),
        (
            {"resource_url": "https://b.example.com", "jwt": {"issuers": [{"issuer": ISSUER}, {"issuer": ISSUER}]}},
            "only once",
        ),
        ({"allow_anonymous": True}, "resource_url"),
    ],
)
def test_load_raises_config_error_when_settings_are_unsafe(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_identity_settings(raw)
    assert field in str(caught.value)


def test_config_error_never_echoes_the_shared_secret() -> None:
    secret = "do-not-log-me-" * 2
    with pytest.raises(ConfigError) as caught:
        load_identity_settings(with_issuer(algorithms=["HS256", "RS256"], shared_secret=secret))
    assert secret not in str(caught.value)


def test_defaults_are_the_safe_ones() -> None:
    settings = load_identity_settings(with_issuer())
    issuer = settings.jwt.issuers[0]
    assert settings.allow_anonymous is False and settings.api_keys.enabled is False and settings.mtls.enabled is False
    assert issuer.algorithms == ("RS256", "ES256", "PS256", "EdDSA")
    assert issuer.clock_skew_s == 30 and issuer.subject_claim == "sub" and issuer.groups_claim == "groups"
    assert issuer.kubernetes_service_accounts is False


def test_loopback_http_is_accepted_for_development() -> None:
    settings = load_identity_settings(
        {"resource_url": "http://127.0.0.1:8080/", "jwt": {"issuers": [{"issuer": "http://localhost:9000"}]}}
    )
    assert settings.resource_url == "http://127.0.0.1:8080"
