"""Optional adapter for Microsoft Presidio (``pip install 'mcp-bastion[presidio]'``).

Imported only when ``masking.engine`` is ``presidio``; without the package installed the engine
refuses to start (ConfigError) rather than silently masking less. Presidio adds NER-based PII
(names, locations) on top of the built-in detectors; its hits never override a built-in hit.
"""

from __future__ import annotations

from typing import Any

from bastion.errors import ConfigError
from bastion.masking.model import Detector, Hit
from bastion.masking.settings import PresidioSettings

try:  # optional dependency: the guard keeps the built-in engine import-light
    from presidio_analyzer import AnalyzerEngine  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - exercised only where presidio is absent
    AnalyzerEngine = None


class PresidioAnalyzer:
    """Wraps any object with Presidio's ``analyze(text=, language=, entities=, score_threshold=)``."""

    def __init__(self, engine: Any, language: str, entities: list[str], score_threshold: float) -> None:
        self._engine = engine
        self._language = language
        self._entities = entities or None
        self._threshold = score_threshold
        self._detectors: dict[str, Detector] = {}

    @classmethod
    def from_settings(cls, settings: PresidioSettings) -> PresidioAnalyzer:
        """Build Presidio's default ``AnalyzerEngine`` (loads its NLP model once).

        Raises:
            ConfigError: ``presidio-analyzer`` is not installed.
        """
        if AnalyzerEngine is None:
            raise ConfigError("masking.engine is 'presidio' but presidio-analyzer is not installed")
        return cls(AnalyzerEngine(), settings.language, settings.entities, settings.score_threshold)

    def analyze(self, text: str) -> list[Hit]:
        """Presidio's recognizer results for ``text`` as hits, one detector per entity type."""
        results = self._engine.analyze(
            text=text, language=self._language, entities=self._entities, score_threshold=self._threshold
        )
        return [Hit(r.start, r.end, self._detector(r.entity_type)) for r in results if r.end > r.start]

    def _detector(self, entity: str) -> Detector:
        det = self._detectors.get(entity)
        if det is None:
            label = "".join(ch if ch.isalnum() else "_" for ch in entity.upper())
            det = self._detectors[entity] = Detector(f"presidio_{label.lower()}", label, "pii")
        return det
