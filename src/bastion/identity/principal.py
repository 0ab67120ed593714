"""Who is calling: the `Principal` every later stage (policy, audit, sessions) sees.

Owns only the value type and its authentication-method enum; how a credential becomes a
Principal lives in `jwt.py`, `apikey.py` and `authenticator.py`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

ANONYMOUS_ISSUER = "urn:bastion:anonymous"
"""Issuer given to callers admitted without a credential (only when `allow_anonymous` is on)."""
API_KEY_ISSUER = "urn:bastion:api-key"
"""Issuer given to callers identified by a Bastion API key."""
MTLS_ISSUER = "urn:bastion:mtls"
"""Issuer given to callers identified by a client certificate subject."""


class AuthMethod(enum.Enum):
    """How the caller proved who it is."""

    JWT = "jwt"
    API_KEY = "api_key"
    MTLS = "mtls"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller; `subject` is unique only together with `issuer`.

    `expires_at` is POSIX seconds (the credential's own expiry), `client_id` the OAuth
    client the token was issued to, when the token names one.
    """

    subject: str
    issuer: str
    groups: frozenset[str]
    method: AuthMethod
    client_id: str | None = None
    expires_at: float | None = None

    @classmethod
    def anonymous(cls) -> Principal:
        """The caller admitted without any credential."""
        return cls(subject="anonymous", issuer=ANONYMOUS_ISSUER, groups=frozenset(), method=AuthMethod.ANONYMOUS)
