"""One issuer's JSON Web Key Set, fetched over HTTPS and cached (RFC 7517; OIDC Discovery 1.0 §4).

Owns fetching (with OIDC discovery when no `jwks_url` is configured), parsing each key into a
`cryptography` public key with the algorithms it may verify, and the refresh rule: an unknown
`kid` triggers at most one fetch per `jwks_refresh_min_interval_s`, shared by concurrent callers.
Fetch failures are translated here; their detail goes to the log, never to a client.
Verifying tokens is `jwt.py`'s job.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import PyJWTError

from bastion.errors import AuthenticationError, ConfigError
from bastion.identity.refusal import Reason, refuse
from bastion.identity.settings import ASYMMETRIC_ALGORITHMS, IssuerSettings, check_url

logger = logging.getLogger(__name__)

PublicKey = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey

MAX_DOCUMENT_BYTES = 512 * 1024
MIN_RSA_KEY_BITS = 2048
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHM_BY_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    """A public key from the JWKS and the JWS algorithms it may verify (never empty)."""

    kid: str | None
    key: PublicKey
    algorithms: frozenset[str]


class _FetchError(Exception):
    """Raised inside this module when a discovery or JWKS document cannot be obtained."""


def _algorithms_for(key: PublicKey) -> frozenset[str]:
    """The algorithms a key's type can verify; an HMAC algorithm is never among them."""
    if isinstance(key, RSAPublicKey):
        return _RSA_ALGORITHMS if key.key_size >= MIN_RSA_KEY_BITS else frozenset()
    if isinstance(key, EllipticCurvePublicKey):
        name = _EC_ALGORITHM_BY_CURVE.get(key.curve.name)
        return frozenset({name}) if name else frozenset()
    return frozenset({"EdDSA"})


def _load_key(jwk: dict[str, Any]) -> PublicKey | None:
    """Turn one JWK into a public key, or None when it is not a usable signature key."""
    if jwk.get("use", "sig") != "sig" or _PRIVATE_MEMBERS & jwk.keys():
        return None  # encryption keys and anything carrying private material are ignored
    loaders: dict[str, Callable[[dict[str, Any]], object]] = {
        "RSA": RSAAlgorithm.from_jwk,
        "EC": ECAlgorithm.from_jwk,
        "OKP": OKPAlgorithm.from_jwk,
    }
    loader = loaders.get(jwk.get("kty", ""))
    if loader is None:
        return None  # "oct" (symmetric) keys are never taken from a JWKS
    try:
        key = loader(jwk)
    except (PyJWTError, ValueError, TypeError, KeyError):
        return None
    if isinstance(key, RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey):
        return key
    return None


def parse_jwks(document: object, allowed_algorithms: frozenset[str]) -> tuple[VerifyingKey, ...]:
    """Usable verification keys of a JWKS document; unusable keys are skipped and logged.

    Raises:
        AuthenticationError: (KEYS_UNAVAILABLE) the document is not a JWKS object.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise refuse(Reason.KEYS_UNAVAILABLE, "The token could not be verified")
    keys: list[VerifyingKey] = []
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            continue
        key = _load_key(jwk)
        algorithms = frozenset() if key is None else _algorithms_for(key) & allowed_algorithms
        if isinstance(jwk.get("alg"), str):
            algorithms &= {jwk["alg"]}
        kid = jwk.get("kid")
        if key is None or not algorithms or not (kid is None or isinstance(kid, str)):
            logger.info("jwks: skipping key kid=%r kty=%r (unusable or not allowed)", kid, jwk.get("kty"))
            continue
        keys.append(VerifyingKey(kid=kid, key=key, algorithms=algorithms))
    return tuple(keys)


def _build_client(settings: IssuerSettings) -> httpx.AsyncClient:
    verify: ssl.SSLContext | bool = True
    if settings.ca_bundle_path is not None:
        try:
            verify = ssl.create_default_context(cafile=str(settings.ca_bundle_path))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load ca_bundle_path {settings.ca_bundle_path}") from exc
    return httpx.AsyncClient(verify=verify, timeout=settings.fetch_timeout_s, follow_redirects=False)


class JwksCache:
    """Verification keys of one issuer; refreshed on an unknown kid, rate-limited, or when old."""

    def __init__(
        self,
        settings: IssuerSettings,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.shared_secret is not None:
            raise ConfigError(f"issuer {settings.issuer} uses a shared secret and has no JWKS")
        self.settings = settings
        self._allowed = frozenset(settings.algorithms) & ASYMMETRIC_ALGORITHMS
        self._owns_http = http is None
        self._http = _build_client(settings) if http is None else http
        self._clock = clock
        self._keys: tuple[VerifyingKey, ...] = ()
        self._by_kid: dict[str, tuple[VerifyingKey, ...]] = {}
        self._jwks_url = settings.jwks_url
        self._loaded_at_s: float | None = None  # monotonic time of the last successful fetch
        self._attempted_at_s: float | None = None  # monotonic time of the last fetch attempt
        self._inflight: asyncio.Task[None] | None = None
        self._closed = False

    async def fetch_verifying_key(self, kid: str | None, algorithm: str) -> VerifyingKey:
        """The key that must verify a token with this header `kid` and `alg`.

        Fetches the JWKS only when needed: first use, an unknown kid, or keys older than
        `jwks_max_age_s` — and never more often than `jwks_refresh_min_interval_s`.

        Raises:
            AuthenticationError: UNKNOWN_KEY, ALGORITHM_REFUSED (the key's type does not match
                `alg`) or KEYS_UNAVAILABLE (no keys could ever be fetched).
        """
        if self._loaded_at_s is not None and self._clock() - self._loaded_at_s < self.settings.jwks_max_age_s:
            key = self._select(kid, algorithm)
            if key is not None:
                return key
        await self._refresh()
        if self._loaded_at_s is None:
            raise refuse(Reason.KEYS_UNAVAILABLE, "The token could not be verified")
        key = self._select(kid, algorithm)
        if key is None:
            raise refuse(Reason.UNKNOWN_KEY, "The token was signed by an unknown key")
        return key

    async def aclose(self) -> None:
        """Stop a fetch in flight and close the HTTP client if this cache created it; no fetch follows."""
        self._closed = True
        if self._inflight is not None:
            self._inflight.cancel()
        if self._owns_http:
            await self._http.aclose()

    def _select(self, kid: str | None, algorithm: str) -> VerifyingKey | None:
        candidates = self._keys if kid is None else self._by_kid.get(kid, ())
        matches = [key for key in candidates if algorithm in key.algorithms]
        if kid is not None and candidates and not matches:
            # The kid is known but its key type cannot produce `alg` (e.g. HS256 over an RSA key).
            raise refuse(Reason.ALGORITHM_REFUSED, "The token's algorithm does not match its key")
        if kid is None and len(matches) != 1:
            return None  # without a kid, only an unambiguous key may be used
        return matches[0] if matches else None

    async def _refresh(self) -> None:
        """Join the fetch in flight, or start one if the minimum interval has passed."""
        if self._inflight is None:
            if self._closed:
                return
            now_s = self._clock()
            last_s = self._attempted_at_s
            if last_s is not None and now_s - last_s < self.settings.jwks_refresh_min_interval_s:
                return
            self._attempted_at_s = now_s
            self._inflight = asyncio.create_task(self._fetch_and_install(), name=f"jwks {self.settings.issuer}")
        # Shielded: a caller that gives up must not cancel the fetch the others are waiting for.
        await asyncio.shield(self._inflight)

    async def _fetch_and_install(self) -> None:
        try:
            keys = parse_jwks(await self._fetch_json(await self._resolve_jwks_url()), self._allowed)
        except (_FetchError, AuthenticationError) as exc:
            self._jwks_url = self.settings.jwks_url  # rediscover next time
            kept = "keeping the previous keys" if self._loaded_at_s is not None else "no keys yet"
            logger.warning("jwks: fetch for issuer %s failed (%s); %s", self.settings.issuer, exc, kept)
        else:
            by_kid: dict[str, tuple[VerifyingKey, ...]] = {}
            for key in keys:
                if key.kid is not None:
                    by_kid[key.kid] = (*by_kid.get(key.kid, ()), key)
            self._keys, self._by_kid = keys, by_kid
            self._loaded_at_s = self._clock()
            logger.info("jwks: loaded %d keys for issuer %s", len(keys), self.settings.issuer)
        finally:
            self._inflight = None

    async def _resolve_jwks_url(self) -> str:
        """The configured jwks_url, else `jwks_uri` from OIDC discovery (OIDC Discovery 1.0 §4)."""
        if self._jwks_url is not None:
            return self._jwks_url
        issuer = self.settings.issuer
        document = await self._fetch_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
        if not isinstance(document, dict) or document.get("issuer") != issuer:
            raise _FetchError("discovery document missing or names another issuer")  # §4.3
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise _FetchError("discovery document has no jwks_uri")
        try:
            check_url(jwks_uri, "jwks_uri")
        except ValueError as exc:
            raise _FetchError("discovery document has no usable https jwks_uri") from exc
        self._jwks_url = jwks_uri
        return jwks_uri

    async def _fetch_json(self, url: str) -> object:
        """GET a JSON document of bounded size within `fetch_timeout_s` overall."""
        body = bytearray()
        try:
            async with asyncio.timeout(self.settings.fetch_timeout_s):
                async with self._http.stream("GET", url, headers={"accept": "application/json"}) as response:
                    if response.status_code != 200:
                        raise _FetchError(f"{url} answered HTTP {response.status_code}")
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_DOCUMENT_BYTES:
                            raise _FetchError(f"{url} sent more than {MAX_DOCUMENT_BYTES} bytes")
        except TimeoutError as exc:
            raise _FetchError(f"{url} did not answer within {self.settings.fetch_timeout_s}s") from exc
        except httpx.HTTPError as exc:
            raise _FetchError(f"{url}: {type(exc).__name__}") from exc
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _FetchError(f"{url} did not send JSON") from exc
