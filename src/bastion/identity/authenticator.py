"""One entry point that turns an HTTP request's credentials into a `Principal` or a 401.

Owns the choice between credentials (bearer JWT, `bst_` API key in `Authorization` or
`X-API-Key`, client certificate, anonymous), their precedence, and the RFC 6750 / RFC 9728
`WWW-Authenticate` challenge put on every refusal. Checking each credential is delegated to
`jwt.py` and `apikey.py`; sending the 401 belongs to the transport.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from bastion.errors import AuthenticationError, ConfigError
from bastion.identity.apikey import KEY_PREFIX, ApiKeyStore, LastUsedRecorder, verify_api_key
from bastion.identity.jwks import JwksCache
from bastion.identity.jwt import JwtVerifier
from bastion.identity.principal import MTLS_ISSUER, AuthMethod, Principal
from bastion.identity.refusal import BearerError, Reason, refuse
from bastion.identity.resource import resource_metadata_url
from bastion.identity.settings import IdentitySettings


def render_challenge(settings: IdentitySettings, path: str, exc: AuthenticationError) -> str:
    """The `WWW-Authenticate` value for a refusal at `path` (RFC 6750 §3, RFC 9728 §5.1).

    A request without credentials gets no error code (RFC 6750 §3.1); `scope` lists
    `scopes_supported` when configured (MCP authorization 2025-11-25, scope selection).
    """
    params: list[tuple[str, str]] = []
    error = exc.data.get("error", BearerError.INVALID_TOKEN)
    if error:
        params += [("error", str(error)), ("error_description", str(exc.data.get("error_description", "")))]
    if settings.scopes_supported:
        params.append(("scope", " ".join(settings.scopes_supported)))
    params.append(("resource_metadata", resource_metadata_url(settings.resource_url, path)))
    return "Bearer " + ", ".join(f'{name}="{value}"' for name, value in params)


class Authenticator:
    """Identifies callers as configured in `identity:`; owns the JWKS caches it is given."""

    def __init__(
        self,
        settings: IdentitySettings,
        jwks_caches: Mapping[str, JwksCache],
        api_key_store: ApiKeyStore | None,
    ) -> None:
        """Raises ConfigError when API keys are enabled without a store, or a JWKS issuer has no cache."""
        if settings.api_keys.enabled and api_key_store is None:
            raise ConfigError("identity.api_keys.enabled needs an API key store")
        self._settings = settings
        self._caches = dict(jwks_caches)
        self._jwt = JwtVerifier(settings, self._caches)
        self._store = api_key_store if settings.api_keys.enabled else None
        self._recorder = (
            None
            if self._store is None
            else LastUsedRecorder(self._store, min_interval_s=settings.api_keys.last_used_write_interval_s)
        )

    @classmethod
    def from_settings(cls, settings: IdentitySettings, api_key_store: ApiKeyStore | None) -> Authenticator:
        """An authenticator with one `JwksCache` (and HTTP client) per JWKS-backed issuer."""
        caches = {issuer.issuer: JwksCache(issuer) for issuer in settings.jwt.issuers if issuer.shared_secret is None}
        return cls(settings, caches, api_key_store)

    async def authenticate(
        self,
        headers: Mapping[str, str],
        client_cert_subject: str | None = None,
        *,
        path: str = "",
        peer_host: str | None = None,
    ) -> Principal:
        """The caller of one HTTP request.

        `headers` has lower-case names; `client_cert_subject` is the verified certificate subject
        when uvicorn terminated TLS; `path` is the endpoint (selects the RFC 8707 resource and the
        metadata URL); `peer_host` is the TCP peer, needed to trust a proxy's certificate header.

        Raises:
            AuthenticationError: with ``data`` holding reason, error, error_description,
                status_code and www_authenticate.
        """
        try:
            return await self._identify(headers, client_cert_subject, path, peer_host)
        except AuthenticationError as exc:
            exc.data["www_authenticate"] = render_challenge(self._settings, path, exc)
            raise

    async def aclose(self) -> None:
        """Finish background last-used writes and close the JWKS caches."""
        if self._recorder is not None:
            await self._recorder.aclose()
        for cache in self._caches.values():
            await cache.aclose()

    async def _identify(
        self, headers: Mapping[str, str], client_cert_subject: str | None, path: str, peer_host: str | None
    ) -> Principal:
        authorization = headers.get("authorization")
        api_key = headers.get("x-api-key")
        # 1. Exactly one explicit credential; two are refused rather than guessed between.
        if authorization is not None and api_key is not None:
            raise refuse(
                Reason.AMBIGUOUS_CREDENTIALS, "Send one credential, not two", error=BearerError.INVALID_REQUEST
            )
        # 2. Authorization: Bearer <JWT | bst_ key> (RFC 6750 §2.1).
        if authorization is not None:
            scheme, _, credential = authorization.strip().partition(" ")
            credential = credential.strip()
            if scheme.lower() != "bearer" or not credential:
                raise refuse(
                    Reason.UNSUPPORTED_SCHEME, "Use the Bearer authorization scheme", error=BearerError.INVALID_REQUEST
                )
            if credential.startswith(KEY_PREFIX):
                return await self._verify_api_key(credential)
            return await self._jwt.verify_jwt(credential, path=path)
        # 3. X-API-Key: <bst_ key>.
        if api_key is not None:
            return await self._verify_api_key(api_key.strip())
        # 4. Client certificate, checked by uvicorn or by a trusted TLS-terminating proxy.
        subject = self._certificate_subject(headers, client_cert_subject, peer_host)
        if subject is not None:
            return Principal(subject=subject, issuer=MTLS_ISSUER, groups=frozenset(), method=AuthMethod.MTLS)
        # 5. Nothing presented.
        if self._settings.allow_anonymous:
            return Principal.anonymous()
        raise refuse(Reason.MISSING_CREDENTIALS, "Authentication required", error=BearerError.NONE)

    async def _verify_api_key(self, presented: str) -> Principal:
        if self._store is None:
            raise refuse(Reason.API_KEYS_DISABLED, "API keys are not accepted here")
        return await verify_api_key(self._store, presented, recorder=self._recorder)

    def _certificate_subject(
        self, headers: Mapping[str, str], client_cert_subject: str | None, peer_host: str | None
    ) -> str | None:
        mtls = self._settings.mtls
        if not mtls.enabled:
            return None
        if client_cert_subject:
            return client_cert_subject
        forwarded = headers.get(mtls.subject_header) if mtls.subject_header else None
        if not forwarded:
            return None
        try:
            peer = ipaddress.ip_address(peer_host or "")
        except ValueError:
            peer = None
        if peer is None or not any(peer in network for network in mtls.trusted_proxies):
            raise refuse(Reason.MTLS_UNTRUSTED_PROXY, "The client certificate header is not trusted")
        return forwarded.strip()
