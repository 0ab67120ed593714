"""The built-in catalogue: detectors, field rules and the ``pii``/``secrets``/``all`` profiles.

Pure data assembled from ``builtin_pii`` and ``builtin_secrets``; configuration may add to it
(``engine.py`` merges custom entries) but never replaces a built-in name.
"""

from __future__ import annotations

from typing import Final

from bastion.masking.builtin_pii import PII_DETECTORS
from bastion.masking.builtin_secrets import SECRET_DETECTORS
from bastion.masking.fields import FieldRule, normalise_name
from bastion.masking.model import Detector, Strategy

BUILTIN_DETECTORS: Final[dict[str, Detector]] = {d.name: d for d in SECRET_DETECTORS + PII_DETECTORS}
"""Secrets first: in a combined scan, the more specific token formats are tried first."""


def _names(*names: str) -> frozenset[str]:
    return frozenset(normalise_name(n) for n in names)


BUILTIN_FIELD_RULES: Final[dict[str, FieldRule]] = {
    "password_fields": FieldRule(
        "password_fields", "PASSWORD", Strategy.REDACT, _names("password", "passwd", "pwd", "passphrase", "db_password")
    ),
    "secret_fields": FieldRule(
        "secret_fields", "SECRET", Strategy.REDACT, _names(
            "secret", "client_secret", "api_key", "apikey", "api_secret", "access_key", "secret_key",
            "secret_access_key", "aws_secret_access_key", "private_key", "token", "access_token", "refresh_token",
            "id_token", "auth_token", "session_token", "bearer_token", "authorization", "credentials",
            "connection_string", "x-api-key",
        ),
    ),
    "pii_fields": FieldRule(
        "pii_fields", "PII", Strategy.REDACT, _names(
            "ssn", "social_security_number", "card_number", "credit_card", "credit_card_number", "cc_number",
            "cvv", "cvc", "cvv2", "iban", "tax_id", "national_id", "passport_number", "date_of_birth", "dob",
        ),
    ),
}

BUILTIN_PROFILE_MEMBERS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "pii": (tuple(d.name for d in PII_DETECTORS), ("pii_fields",)),
    "secrets": (tuple(d.name for d in SECRET_DETECTORS), ("password_fields", "secret_fields")),
    "all": (tuple(BUILTIN_DETECTORS), tuple(BUILTIN_FIELD_RULES)),
}
"""Profile name → (detector names, field rule names)."""
