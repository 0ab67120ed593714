"""The ``masking:`` configuration section, validated once at load time (pydantic v2, extra=forbid).

Cross-references (profiles naming detectors and field rules) are checked here; building the runtime
objects (compiled detectors, HMAC key, Presidio) is ``engine.py``'s job.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from bastion.masking.catalog import BUILTIN_DETECTORS, BUILTIN_FIELD_RULES, BUILTIN_PROFILE_MEMBERS
from bastion.masking.model import Strategy


class ValidatorName(enum.StrEnum):
    """Named checksum/plausibility validators a custom detector may require."""

    LUHN = "luhn"
    MOD97 = "mod97"
    IBAN = "iban"
    VERHOEFF = "verhoeff"
    AADHAAR = "aadhaar"
    CPF = "cpf"
    CN_RESIDENT_ID = "cn_resident_id"
    NINO = "nino"
    SSN = "ssn"
    ENTROPY = "entropy"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomDetectorSettings(_Model):
    """A detector defined in configuration: regex, optional validator, context words, strategy."""

    pattern: str
    label: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")] | None = None
    validator: ValidatorName | None = None
    context: list[str] = []
    context_window: Annotated[int, Field(ge=1, le=1000)] = 48
    ignore_case: bool = False
    strategy: Strategy = Strategy.REDACT

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, v: str) -> str:
        try:
            rx = re.compile(v)
            re.compile(f"(?:{v})x")  # global inline flags cannot be embedded: ask for scoped ones
        except re.error as exc:
            raise ValueError(f"invalid regex ({exc.msg}); use scoped flags like (?i:...)") from None
        if set(rx.groupindex) - {"value"}:
            raise ValueError("only one named group is allowed, and it must be called 'value'")
        return v


class FieldRuleSettings(_Model):
    """Mask values by key name, key regex or JSON path, whatever they contain."""

    names: list[str] = []
    patterns: list[str] = []
    paths: list[str] = []
    label: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")] = "REDACTED"
    strategy: Strategy = Strategy.REDACT

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"invalid key pattern {p!r}: {exc.msg}") from None
        return v


class ProfileSettings(_Model):
    """A named set of detectors and field rules, with per-name strategy overrides."""

    extends: list[str] = []
    detectors: list[str] = []
    field_rules: list[str] = []
    strategies: dict[str, Strategy] = {}


class PresidioSettings(_Model):
    """Options for the optional Presidio analyzer (``pip install mcp-bastion[presidio]``)."""

    language: str = "en"
    entities: list[str] = []
    score_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.6
    strategy: Strategy = Strategy.REDACT


BUILTIN_PROFILES = tuple(BUILTIN_PROFILE_MEMBERS)


class MaskingSettings(_Model):
    """The ``masking:`` section: profiles, custom detectors, field rules and failure behaviour."""

    default_profiles: list[str] = ["all"]
    profiles: dict[str, ProfileSettings] = {}
    detectors: dict[str, CustomDetectorSettings] = {}
    fields: dict[str, FieldRuleSettings] = {}
    hmac_key: SecretStr | None = None
    hash_chars: Annotated[int, Field(ge=6, le=64)] = 6
    on_failure: Literal["block", "best_effort"] = "block"
    blobs: Literal["pass", "block"] = "pass"
    max_depth: Annotated[int, Field(ge=1, le=1000)] = 64
    phone_regions: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] = ["US"]
    engine: Literal["builtin", "presidio"] = "builtin"
    presidio: PresidioSettings = PresidioSettings()
    mask_arguments_upstream: bool = False
    """Also mask tools/call arguments before they reach the upstream (they are always masked in the log)."""

    @field_validator("hmac_key")
    @classmethod
    def _key_long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value().encode()) < 16:
            raise ValueError("hmac_key must be at least 16 bytes")
        return v

    @model_validator(mode="after")
    def _references_exist(self) -> MaskingSettings:
        known_profiles = set(self.profiles) | set(BUILTIN_PROFILES)
        known_detectors = set(self.detectors) | set(BUILTIN_DETECTORS)
        known_fields = set(self.fields) | set(BUILTIN_FIELD_RULES)
        clash = set(self.detectors) & set(BUILTIN_DETECTORS) or set(self.profiles) & set(BUILTIN_PROFILES)
        if clash:
            raise ValueError(f"names already used by built-ins: {sorted(clash)}")
        for name in self.default_profiles:
            if name not in known_profiles:
                raise ValueError(f"default_profiles names unknown profile {name!r}")
        for pname, prof in self.profiles.items():
            for ref, known, kind in (
                (prof.extends, known_profiles, "profile"),
                (prof.detectors, known_detectors, "detector"),
                (prof.field_rules, known_fields, "field rule"),
                (list(prof.strategies), known_detectors | known_fields, "detector or field rule"),
            ):
                missing = sorted(set(ref) - known)
                if missing:
                    raise ValueError(f"profile {pname!r} names unknown {kind}(s): {missing}")
        return self
