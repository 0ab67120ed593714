"""Why a credential was refused: reason codes and the `AuthenticationError` that carries them.

Every refusal in this package is built by `refuse()`, so `exc.data` always holds the same keys:
``reason`` (a `Reason`, for logs and the audit trail), ``error`` and ``error_description``
(RFC 6750 §3.1, fixed texts safe to send to the client) and ``status_code`` (401 or 400).
`authenticator.py` adds ``www_authenticate``. No library error text is ever put in here.
"""

from __future__ import annotations

import enum

from bastion.errors import AuthenticationError


class Reason(enum.StrEnum):
    """Stable machine-readable cause of a refusal; tests and audit rows compare against these."""

    MISSING_CREDENTIALS = "missing_credentials"
    UNSUPPORTED_SCHEME = "unsupported_scheme"
    AMBIGUOUS_CREDENTIALS = "ambiguous_credentials"
    MALFORMED_TOKEN = "malformed_token"
    ALGORITHM_REFUSED = "algorithm_refused"
    UNKNOWN_ISSUER = "unknown_issuer"
    UNKNOWN_KEY = "unknown_key"
    KEYS_UNAVAILABLE = "keys_unavailable"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    ISSUED_IN_FUTURE = "issued_in_future"
    WRONG_AUDIENCE = "wrong_audience"
    MISSING_CLAIM = "missing_claim"
    INVALID_CLAIM = "invalid_claim"
    API_KEYS_DISABLED = "api_keys_disabled"
    API_KEY_MALFORMED = "api_key_malformed"
    API_KEY_UNKNOWN = "api_key_unknown"
    API_KEY_WRONG_SECRET = "api_key_wrong_secret"
    API_KEY_REVOKED = "api_key_revoked"
    API_KEY_EXPIRED = "api_key_expired"
    MTLS_UNTRUSTED_PROXY = "mtls_untrusted_proxy"


class BearerError(enum.StrEnum):
    """RFC 6750 §3.1 error codes; NONE is for a request that carried no credential at all."""

    NONE = ""
    INVALID_REQUEST = "invalid_request"
    INVALID_TOKEN = "invalid_token"


def refuse(reason: Reason, description: str, *, error: BearerError = BearerError.INVALID_TOKEN) -> AuthenticationError:
    """Build the error for a refused credential.

    Precondition: `description` is a fixed Bastion text with no ``"`` or ``\\`` (it is quoted
    into the WWW-Authenticate header) and reveals nothing a client should not learn.
    """
    status_code = 400 if error is BearerError.INVALID_REQUEST else 401
    return AuthenticationError(
        f"{reason.value}: {description}",
        data={"reason": reason, "error": error, "error_description": description, "status_code": status_code},
    )
