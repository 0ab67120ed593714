"""``MaskingEngine``: turns validated ``MaskingSettings`` into cached ``Masker`` objects.

Resolves profiles (``extends``, built-ins, custom detectors and field rules), picks the strictest
strategy when profiles disagree, checks the runtime prerequisites (HMAC key, Presidio) and builds
one ``Masker`` per distinct set of profile names, once.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable

from bastion.errors import ConfigError
from bastion.masking import checksum
from bastion.masking.builtin_pii import phone_ok
from bastion.masking.catalog import BUILTIN_DETECTORS, BUILTIN_FIELD_RULES, BUILTIN_PROFILE_MEMBERS
from bastion.masking.fields import FieldRule, compile_path, normalise_name
from bastion.masking.masker import Masker, MaskerOptions, TextAnalyzer
from bastion.masking.model import STRICTNESS, Detector, Strategy
from bastion.masking.settings import CustomDetectorSettings, MaskingSettings, ValidatorName
from bastion.masking.strategy import Renderer

_VALIDATORS: dict[ValidatorName, Callable[[str], bool]] = {
    ValidatorName.LUHN: checksum.luhn_ok,
    ValidatorName.MOD97: checksum.mod97_ok,
    ValidatorName.IBAN: checksum.iban_ok,
    ValidatorName.VERHOEFF: checksum.verhoeff_ok,
    ValidatorName.AADHAAR: checksum.aadhaar_ok,
    ValidatorName.CPF: checksum.cpf_ok,
    ValidatorName.CN_RESIDENT_ID: checksum.cn_resident_id_ok,
    ValidatorName.NINO: checksum.nino_ok,
    ValidatorName.SSN: checksum.ssn_ok,
    ValidatorName.ENTROPY: checksum.looks_random,
}


def custom_detector(name: str, spec: CustomDetectorSettings) -> Detector:
    """The runtime detector for one ``masking.detectors`` entry."""
    pattern = f"(?i:{spec.pattern})" if spec.ignore_case else spec.pattern
    return Detector(
        name=name,
        label=spec.label or re.sub(r"[^A-Z0-9_]", "_", name.upper()),
        category="custom",
        pattern=pattern,
        validator=_VALIDATORS[spec.validator] if spec.validator else None,
        context=tuple(w.lower() for w in spec.context),
        window=spec.context_window,
        min_len=1,
    )


class MaskingEngine:
    """Builds and caches one ``Masker`` per set of profile names.

    Raises (constructor):
        ConfigError: a ``hash`` strategy without ``hmac_key``, a profile cycle, or ``engine:
            presidio`` without the optional dependency installed.
    """

    def __init__(self, settings: MaskingSettings, analyzer: TextAnalyzer | None = None) -> None:
        self.settings = settings
        self._detectors = dict(BUILTIN_DETECTORS)
        self._detectors["phone"] = dataclasses.replace(
            BUILTIN_DETECTORS["phone"], validator=functools.partial(phone_ok, regions=tuple(settings.phone_regions))
        )
        self._detectors.update({n: custom_detector(n, s) for n, s in settings.detectors.items()})
        self._fields = dict(BUILTIN_FIELD_RULES)
        for name, spec in settings.fields.items():
            self._fields[name] = FieldRule(
                name, spec.label, spec.strategy, frozenset(normalise_name(n) for n in spec.names),
                tuple(re.compile(p) for p in spec.patterns), tuple(compile_path(p) for p in spec.paths),
            )
        key = settings.hmac_key.get_secret_value().encode() if settings.hmac_key else None
        self._renderer = Renderer(key, settings.hash_chars)
        self._options = MaskerOptions(settings.on_failure == "block", settings.blobs == "block", settings.max_depth)
        self._analyzer = analyzer
        if settings.engine == "presidio" and analyzer is None:
            from bastion.masking.presidio import PresidioAnalyzer

            self._analyzer = PresidioAnalyzer.from_settings(settings.presidio)
        self._cache: dict[frozenset[str], Masker] = {}
        for name in [*settings.profiles, *BUILTIN_PROFILE_MEMBERS]:
            self.masker([name])  # resolve everything now: configuration errors surface at load time

    def masker(self, profiles: Iterable[str] | None = None) -> Masker:
        """The masker for these profile names (``default_profiles`` when None); built once.

        Raises:
            ConfigError: a name is not a known profile.
        """
        names = frozenset(self.settings.default_profiles if profiles is None else profiles)
        cached = self._cache.get(names)
        if cached is not None:
            return cached
        detectors: dict[str, Detector] = {}
        rules: dict[str, FieldRule] = {}
        strategies: dict[str, Strategy] = {}
        for name in sorted(names):
            for det, rule, strategy in self._resolve(name, ()):
                key = det.name if det else rule.name  # type: ignore[union-attr]
                if det:
                    detectors[key] = det
                elif rule:
                    rules[key] = rule
                if key not in strategies or STRICTNESS[strategy] > STRICTNESS[strategies[key]]:
                    strategies[key] = strategy
        if Strategy.HASH in strategies.values() and self.settings.hmac_key is None:
            raise ConfigError("a masking profile uses the 'hash' strategy but masking.hmac_key is not set")
        ordered = tuple(d for d in self._detectors.values() if d.name in detectors)
        masker = Masker(
            ordered, strategies, tuple(rules.values()), self._renderer, self._options,
            self._analyzer if ordered and any(d.category == "pii" for d in ordered) else None,
            self.settings.presidio.strategy,
        )
        self._cache[names] = masker
        return masker

    def _resolve(
        self, name: str, seen: tuple[str, ...]
    ) -> list[tuple[Detector | None, FieldRule | None, Strategy]]:
        """Flatten one profile into (detector | rule, strategy) entries, following ``extends``."""
        if name in seen:
            raise ConfigError(f"masking profile cycle: {' -> '.join((*seen, name))}")
        if name in BUILTIN_PROFILE_MEMBERS:
            dets, rules = BUILTIN_PROFILE_MEMBERS[name]
            return [(self._detectors[d], None, Strategy.REDACT) for d in dets] + [
                (None, self._fields[r], self._fields[r].strategy) for r in rules
            ]
        profile = self.settings.profiles.get(name)
        if profile is None:
            raise ConfigError(f"unknown masking profile {name!r}")
        out: list[tuple[Detector | None, FieldRule | None, Strategy]] = []
        for parent in profile.extends:
            out.extend(self._resolve(parent, (*seen, name)))
        for d in profile.detectors:
            spec = self.settings.detectors.get(d)
            out.append((self._detectors[d], None, spec.strategy if spec else Strategy.REDACT))
        out.extend((None, self._fields[r], self._fields[r].strategy) for r in profile.field_rules)
        overrides = profile.strategies
        return [
            (det, rule, overrides.get(det.name if det else rule.name, strategy))  # type: ignore[union-attr]
            for det, rule, strategy in out
        ]
