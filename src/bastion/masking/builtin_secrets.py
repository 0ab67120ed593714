"""Built-in credential detectors: cloud and SaaS tokens, JWTs, PEM keys, passwords, entropic secrets.

Token formats with a fixed prefix are gated by that literal, so text without it costs one substring
search; assignment-style detectors are gated by their keywords and confirmed by entropy.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from typing import Final

import orjson

from bastion.masking import checksum
from bastion.masking.model import Detector

_PLACEHOLDERS: Final = frozenset({"null", "none", "true", "false", "undefined", "nil", "redacted", "<redacted>"})


def jwt_ok(text: str) -> bool:
    """Three base64url parts whose header decodes to a JSON object naming an ``alg`` (RFC 7519 §7.2)."""
    header = text.split(".", 1)[0]
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(decoded, dict) and isinstance(decoded.get("alg"), str)


def password_ok(text: str) -> bool:
    """Anything but an empty placeholder or a run of mask characters counts as a password."""
    value = text.strip("\"'")
    return bool(value) and value.lower() not in _PLACEHOLDERS and value.strip("*x.") != ""


def secret_value_ok(text: str) -> bool:
    """A value assigned to a secret-like name counts when it looks random (entropy ≥ 3 bits/char)."""
    return checksum.looks_random(text, 3.0)


def aws_secret_ok(text: str) -> bool:
    """A 40-char AWS secret key mixes upper, lower and digits and is close to uniformly random."""
    return any(c.isupper() for c in text) and any(c.islower() for c in text) and checksum.looks_random(text, 3.5)


_SCHEME: Final = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,20}\Z")
_USERINFO: Final = re.compile(r"://[^\s:/?#@\"'<>\x00]*:([^\s/?#@\"'<>\x00]+)@")


def find_url_passwords(text: str) -> Iterator[tuple[int, int]]:
    """Yield the password spans of ``scheme://user:password@host`` URLs (RFC 3986 §3.2.1)."""
    at = text.find("://")
    while at != -1:
        m = _USERINFO.match(text, at) if _SCHEME.search(text, max(0, at - 21), at) else None
        if m is not None:
            yield m.span(1)
        at = text.find("://", at + 3)


_NAME: Final = r"(?:api[_-]?key|apikey|access[_-]?key|secret|token|auth|bearer|credential|private[_-]?key|session[_-]?id)"

SECRET_DETECTORS: Final = (
    Detector(
        "private_key", "PRIVATE_KEY", "secrets", literals=("PRIVATE KEY-----",), min_len=40,
        pattern=r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
    ),
    Detector(
        "jwt", "JWT", "secrets", literals=("eyJ",), min_len=20, validator=jwt_ok,
        pattern=r"eyJ(?<![\w-]eyJ)[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*(?![\w-])",
    ),
    Detector(
        "aws_access_key_id", "AWS_KEY", "secrets", literals=("AKIA", "ASIA", "ABIA", "ACCA"), min_len=20,
        pattern=r"A(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA)[A-Z2-7]{16}(?![A-Za-z0-9])",
    ),
    Detector(
        "github_token", "GITHUB_TOKEN", "secrets", literals=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        # Classic tokens have 36 characters after the prefix; the prefix alone is distinctive enough
        # to mask shorter look-alikes too (test fixtures, truncated pastes).
        min_len=24, pattern=r"g(?<![\w]g)(?:h[pousr]_[A-Za-z0-9]{20,255}|ithub_pat_[A-Za-z0-9_]{22,255})(?![\w])",
    ),
    Detector(
        "gitlab_token", "GITLAB_TOKEN", "secrets", literals=("glpat-",), min_len=26,
        pattern=r"glpat-(?<![\w-]glpat-)[A-Za-z0-9_-]{20,}(?![\w-])",
    ),
    Detector(
        "slack_token", "SLACK_TOKEN", "secrets", literals=("xox",), min_len=15,
        pattern=r"xox(?<![\w-]xox)[baprs]-[A-Za-z0-9-]{10,}(?![\w-])",
    ),
    Detector(
        "stripe_key", "STRIPE_KEY", "secrets", literals=("_live_", "_test_"), min_len=24,
        pattern=r"[sr]k_(?<![\w][sr]k_)(?:live|test)_[A-Za-z0-9]{16,}(?![\w])",
    ),
    Detector(
        "google_api_key", "GOOGLE_API_KEY", "secrets", literals=("AIza",), min_len=39,
        pattern=r"AIza(?<![\w-]AIza)[0-9A-Za-z_-]{35}(?![\w-])",
    ),
    Detector(
        "url_password", "PASSWORD", "secrets", finder=find_url_passwords, literals=("://",), min_len=10,
        validator=password_ok,
    ),
    Detector(
        "aws_secret_access_key", "AWS_SECRET", "secrets", validator=aws_secret_ok, min_len=40,
        # An access key id nearby is as telling as the word "secret": the two travel together.
        context=("aws_secret", "secret_access_key", "secretaccesskey", "aws secret", "akia", "asia", "aws_access_key_id"),
        window=64,
        pattern=r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])",
    ),
    Detector(
        "password_assignment", "PASSWORD", "secrets", keywords=("passw", "pwd"), min_len=6, validator=password_ok,
        pattern=r"(?i:(?<![a-z])(?:password|passwd|pwd)[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s;'\",&}\]\x00]+)",
    ),
    Detector(
        "secret_assignment", "SECRET", "secrets", keywords=("api", "access", "secret", "token", "auth", "bearer",
        "credential", "private", "session"), min_len=20, validator=secret_value_ok,
        pattern=r"(?i:" + _NAME + r"[\w-]{0,24}[\"']?\s*[:=]\s*[\"']?(?:bearer\s+|basic\s+)?)"
        r"(?P<value>[A-Za-z0-9_\-+/=.~]{16,})",
    ),
)
"""Order matters: specific formats come before the generic assignment detectors."""
