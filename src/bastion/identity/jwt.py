"""Bearer JWT verification (RFC 7515, RFC 7519, RFC 8725) turning a token into a `Principal`.

Owns the checks and their order: shape, header, issuer, algorithm allow-list, key/algorithm
consistency, signature, time claims with skew, audience (RFC 8707), claim mapping (including
Kubernetes service-account tokens). Key fetching is `jwks.py`'s; choosing between a JWT, an API
key or a certificate is `authenticator.py`'s. Signatures are checked with PyJWT's algorithms.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from jwt.algorithms import Algorithm, get_default_algorithms

from bastion.errors import ConfigError
from bastion.identity.jwks import JwksCache
from bastion.identity.principal import AuthMethod, Principal
from bastion.identity.refusal import Reason, refuse
from bastion.identity.resource import resource_for_path
from bastion.identity.settings import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, IdentitySettings, IssuerSettings

MAX_TOKEN_BYTES = 16 * 1024
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_ALGORITHMS: dict[str, Algorithm] = {
    name: algorithm
    for name, algorithm in get_default_algorithms().items()
    if name in ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS
}
_KUBERNETES_CLAIM = "kubernetes.io"


@dataclass(frozen=True, slots=True)
class _IssuerRule:
    """What one configured issuer accepts, precomputed once so verification only looks up."""

    settings: IssuerSettings
    algorithms: frozenset[str]
    audiences: frozenset[str]  # empty: Bastion's resource URIs are expected instead
    hmac_key: bytes | None
    cache: JwksCache | None


def _decode_segment(segment: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2); anything else is malformed."""
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise refuse(Reason.MALFORMED_TOKEN, "The token is malformed")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise refuse(Reason.MALFORMED_TOKEN, "The token is malformed") from exc


def _decode_object(segment: str) -> dict[str, Any]:
    try:
        value = orjson.loads(_decode_segment(segment))
    except orjson.JSONDecodeError as exc:
        raise refuse(Reason.MALFORMED_TOKEN, "The token is malformed") from exc
    if not isinstance(value, dict):
        raise refuse(Reason.MALFORMED_TOKEN, "The token is malformed")
    return value


def _numeric_date(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise refuse(Reason.INVALID_CLAIM, f"The token's {name} claim is not a number")
    return float(value)


def _string_set(value: object) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise refuse(Reason.INVALID_CLAIM, "A token claim is not a string or a list of strings")


def _kubernetes_groups(payload: Mapping[str, Any], subject: str) -> frozenset[str]:
    """Groups Kubernetes itself gives a service account; the token must be self-consistent."""
    claim = payload.get(_KUBERNETES_CLAIM)
    namespace = claim.get("namespace") if isinstance(claim, dict) else None
    account = claim.get("serviceaccount") if isinstance(claim, dict) else None
    name = account.get("name") if isinstance(account, dict) else None
    if not isinstance(namespace, str) or not isinstance(name, str) or not namespace or not name:
        raise refuse(Reason.INVALID_CLAIM, "The token is not a Kubernetes service-account token")
    if subject != f"system:serviceaccount:{namespace}:{name}":
        raise refuse(Reason.INVALID_CLAIM, "The token's subject does not match its service account")
    return frozenset({"system:serviceaccounts", f"system:serviceaccounts:{namespace}"})


class JwtVerifier:
    """Verifies bearer JWTs from the configured issuers, using one `JwksCache` per issuer."""

    def __init__(
        self,
        settings: IdentitySettings,
        caches: Mapping[str, JwksCache],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Raises ConfigError if an issuer that needs a JWKS has no cache in `caches`."""
        self._resource_url = settings.resource_url
        self._clock = clock
        self._rules: dict[str, _IssuerRule] = {}
        for issuer in settings.jwt.issuers:
            secret = issuer.shared_secret
            cache = caches.get(issuer.issuer)
            if secret is None and cache is None:
                raise ConfigError(f"no JWKS cache for issuer {issuer.issuer}")
            self._rules[issuer.issuer] = _IssuerRule(
                settings=issuer,
                algorithms=frozenset(issuer.algorithms),
                audiences=frozenset(issuer.audiences),
                hmac_key=None if secret is None else secret.get_secret_value().encode(),
                cache=None if secret is not None else cache,
            )

    async def verify_jwt(self, token: str, *, path: str = "") -> Principal:
        """The caller a bearer JWT proves, for a request to the endpoint at `path`.

        Raises:
            AuthenticationError: the token is refused; ``data["reason"]`` says why.
        """
        # 1. Shape: three base64url segments, bounded size (RFC 7515 §7.1).
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise refuse(Reason.MALFORMED_TOKEN, "The token is malformed")
        header_segment, payload_segment, signature_segment = token.split(".")
        header = _decode_object(header_segment)

        # 2. Header: `alg` is required, "none" never passes; `crit` names extensions we do not
        #    implement, so it is refused (RFC 7515 §4.1.11). jku/x5u/jwk are ignored: keys come
        #    only from the issuer's configured source (RFC 8725 §3.10).
        algorithm = header.get("alg")
        kid = header.get("kid")
        if not isinstance(algorithm, str) or (kid is not None and not isinstance(kid, str)):
            raise refuse(Reason.MALFORMED_TOKEN, "The token is malformed")
        if algorithm.lower() == "none" or "crit" in header:
            raise refuse(Reason.ALGORITHM_REFUSED, "The token's algorithm is not accepted")
        payload = _decode_object(payload_segment)
        signature = _decode_segment(signature_segment)

        # 3. Issuer: the still-unverified `iss` only selects which configured issuer's keys to try.
        issuer = payload.get("iss")
        rule = self._rules.get(issuer) if isinstance(issuer, str) else None
        if rule is None:
            raise refuse(Reason.UNKNOWN_ISSUER, "The token's issuer is not trusted")

        # 4. Algorithm allow-list of that issuer (RFC 8725 §3.1).
        if algorithm not in rule.algorithms:
            raise refuse(Reason.ALGORITHM_REFUSED, "The token's algorithm is not accepted")

        # 5. Key: the issuer's shared secret for HS* (settings forbid HS* on JWKS issuers), else the
        #    JWKS key with this kid whose type can produce `alg` — an RSA key never verifies HS256.
        if rule.cache is None:
            key: Any = rule.hmac_key
        else:
            key = (await rule.cache.fetch_verifying_key(kid, algorithm)).key

        # 6. Signature over the exact received header.payload bytes.
        signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
        if not _ALGORITHMS[algorithm].verify(signing_input, key, signature):
            raise refuse(Reason.BAD_SIGNATURE, "The token's signature is not valid")

        # 7. Time (RFC 7519 §4.1.4-6): exp required; nbf and iat honoured; skew both ways.
        now_s = self._clock()
        skew_s = rule.settings.clock_skew_s
        expires_at = _numeric_date(payload, "exp")
        not_before = _numeric_date(payload, "nbf")
        issued_at = _numeric_date(payload, "iat")
        if expires_at is None:
            raise refuse(Reason.MISSING_CLAIM, "The token has no exp claim")
        if now_s >= expires_at + skew_s:
            raise refuse(Reason.EXPIRED, "The token has expired")
        if not_before is not None and now_s + skew_s < not_before:
            raise refuse(Reason.NOT_YET_VALID, "The token is not valid yet")
        if issued_at is not None and now_s + skew_s < issued_at:
            raise refuse(Reason.ISSUED_IN_FUTURE, "The token was issued in the future")

        # 8. Audience (RFC 7519 §4.1.3): configured audiences, else Bastion itself or this
        #    endpoint's resource URI (RFC 8707; MCP clients ask for the endpoint's URI).
        if "aud" not in payload:
            raise refuse(Reason.MISSING_CLAIM, "The token has no aud claim")
        audiences = _string_set(payload["aud"])
        expected = rule.audiences or {self._resource_url, resource_for_path(self._resource_url, path)}
        if audiences.isdisjoint(expected):
            raise refuse(Reason.WRONG_AUDIENCE, "The token was not issued for this resource")

        # 9. Claims to Principal.
        settings = rule.settings
        subject = payload.get(settings.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise refuse(Reason.MISSING_CLAIM, "The token has no subject")
        groups = _string_set(payload.get(settings.groups_claim))
        if settings.kubernetes_service_accounts:
            groups |= _kubernetes_groups(payload, subject)
        client_id = payload.get("client_id", payload.get("azp"))
        return Principal(
            subject=subject,
            issuer=settings.issuer,
            groups=groups,
            method=AuthMethod.JWT,
            client_id=client_id if isinstance(client_id, str) else None,
            expires_at=expires_at,
        )
