"""The `identity:` configuration section as validated pydantic models.

Owns what an operator can say about callers: trusted JWT issuers and their key sources,
API keys on/off, mTLS behind a proxy, anonymous access, Bastion's own resource URL. Loading
the YAML file and `${ENV}` expansion belong to `bastion.config`; per-upstream credentials too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from bastion.errors import ConfigError

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
DEFAULT_ALGORITHMS = ("RS256", "ES256", "PS256", "EdDSA")
MIN_SHARED_SECRET_BYTES = 32  # RFC 7518 §3.2: an HMAC key at least as long as the hash output.
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def check_url(url: str, what: str) -> str:
    """Require https (plain http only on loopback, for development and tests) and no fragment."""
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise ValueError(f"{what} must be an absolute https URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise ValueError(f"{what} must use https (http is accepted only on loopback)")
    if parts.fragment:
        raise ValueError(f"{what} must not contain a fragment")
    return url


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IssuerSettings(_Model):
    """One trusted token issuer (an OAuth authorization server or a Kubernetes API server)."""

    issuer: str
    jwks_url: str | None = None  # None: discovered from <issuer>/.well-known/openid-configuration
    audiences: tuple[str, ...] = ()  # empty: the token must be for Bastion's resource_url (RFC 8707)
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    shared_secret: SecretStr | None = None  # only for HS* issuers, which then use no JWKS at all
    clock_skew_s: float = Field(default=30.0, ge=0, le=300)
    subject_claim: str = "sub"
    groups_claim: str = "groups"
    kubernetes_service_accounts: bool = False  # derive system:serviceaccounts[:<ns>] groups
    authorization_server: bool = True  # listed in the RFC 9728 metadata for clients to use
    jwks_refresh_min_interval_s: float = Field(default=30.0, ge=1)
    jwks_max_age_s: float = Field(default=3600.0, ge=1)
    fetch_timeout_s: float = Field(default=5.0, gt=0, le=60)
    ca_bundle_path: Path | None = None  # extra CA for a private issuer (e.g. the cluster CA)

    @field_validator("issuer")
    @classmethod
    def _issuer_is_url(cls, value: str) -> str:
        return check_url(value, "issuer")

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url_is_url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, "jwks_url")

    @field_validator("algorithms")
    @classmethod
    def _algorithms_known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("algorithms must not be empty")
        for name in value:
            if name.lower() == "none":
                raise ValueError("the 'none' algorithm is never accepted")
            if name not in ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS:
                raise ValueError(f"unknown JWS algorithm {name!r}")
        return value

    @model_validator(mode="after")
    def _symmetric_rules(self) -> Self:
        hmac_algs = set(self.algorithms) & HMAC_ALGORITHMS
        if self.shared_secret is None:
            if hmac_algs:
                raise ValueError(f"{sorted(hmac_algs)} need a shared_secret for this issuer")
        else:
            # Never mix: an HS* issuer has no asymmetric keys, so no public key can act as an HMAC secret.
            if hmac_algs != set(self.algorithms):
                raise ValueError("an issuer with a shared_secret accepts only HS* algorithms")
            if self.jwks_url is not None:
                raise ValueError("an issuer with a shared_secret must not have a jwks_url")
            if len(self.shared_secret.get_secret_value().encode()) < MIN_SHARED_SECRET_BYTES:
                raise ValueError(f"shared_secret must be at least {MIN_SHARED_SECRET_BYTES} bytes")
        if self.jwks_max_age_s < self.jwks_refresh_min_interval_s:
            raise ValueError("jwks_max_age_s must be >= jwks_refresh_min_interval_s")
        return self


class JwtSettings(_Model):
    """Bearer JWTs: the issuers Bastion trusts."""

    issuers: tuple[IssuerSettings, ...] = ()

    @field_validator("issuers")
    @classmethod
    def _unique(cls, value: tuple[IssuerSettings, ...]) -> tuple[IssuerSettings, ...]:
        names = [item.issuer for item in value]
        if len(names) != len(set(names)):
            raise ValueError("each issuer may be configured only once")
        return value


class ApiKeySettings(_Model):
    """Bastion-issued API keys (`bst_...`)."""

    enabled: bool = False
    last_used_write_interval_s: float = Field(default=60.0, ge=0)  # debounce for last_used_at writes


class MtlsSettings(_Model):
    """Client certificates, checked by uvicorn itself or by a TLS-terminating proxy."""

    enabled: bool = False
    subject_header: str | None = None  # e.g. x-forwarded-client-cert-subject, set by the proxy
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @field_validator("subject_header")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return None if value is None else value.lower()

    @model_validator(mode="after")
    def _header_needs_proxies(self) -> Self:
        if self.subject_header is not None and not self.trusted_proxies:
            raise ValueError("mtls.subject_header needs trusted_proxies: anyone else could set the header")
        return self


class IdentitySettings(_Model):
    """The whole `identity:` section."""

    resource_url: str  # Bastion's public URL: default token audience and RFC 9728 resource
    allow_anonymous: bool = False
    scopes_supported: tuple[str, ...] = ()
    jwt: JwtSettings = JwtSettings()
    api_keys: ApiKeySettings = ApiKeySettings()
    mtls: MtlsSettings = MtlsSettings()

    @field_validator("resource_url")
    @classmethod
    def _canonical_resource(cls, value: str) -> str:
        check_url(value, "resource_url")
        parts = urlsplit(value)
        if parts.query:
            raise ValueError("resource_url must not contain a query (RFC 8707 §2)")
        # RFC 8707 / MCP: lower-case scheme and host, no trailing slash.
        return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def load_identity_settings(raw: Mapping[str, Any]) -> IdentitySettings:
    """Validate the `identity:` mapping.

    Raises:
        ConfigError: the section does not validate (message names the fields, for the operator).
    """
    try:
        return IdentitySettings.model_validate(raw)
    except ValidationError as exc:
        # Inputs are left out of the message: they may hold a shared secret.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'identity'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(f"identity settings are invalid: {problems}") from exc
