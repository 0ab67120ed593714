"""The Presidio adapter's mapping, driven by a stand-in with Presidio's ``analyze`` signature.

Real Presidio is an optional extra not installed in CI; this checks our side of the seam only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bastion.masking import MaskingEngine, MaskingSettings
from bastion.masking.presidio import PresidioAnalyzer


@dataclass
class Result:
    entity_type: str
    start: int
    end: int
    score: float = 0.9


class FakeAnalyzerEngine:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def analyze(self, **kwargs: Any) -> list[Result]:
        self.calls.append(kwargs)
        text = kwargs["text"]
        at = text.find("Jane Doe")
        email = text.find("jane@example.com")
        out = [Result("PERSON", at, at + 8)] if at >= 0 else []
        return out + ([Result("EMAIL_ADDRESS", email, email + 16)] if email >= 0 else [])


def test_presidio_hits_added_without_overriding_builtin_hits() -> None:
    fake = FakeAnalyzerEngine()
    analyzer = PresidioAnalyzer(fake, "en", ["PERSON"], 0.5)
    engine = MaskingEngine(MaskingSettings(), analyzer=analyzer)
    out = engine.masker(["pii"]).mask_text("Jane Doe <jane@example.com>")
    assert out.value == "[PERSON] <[EMAIL]>"
    assert sorted(f.detector for f in out.findings) == ["email", "presidio_person"]
    assert fake.calls[0]["language"] == "en" and fake.calls[0]["entities"] == ["PERSON"]
    assert fake.calls[0]["score_threshold"] == 0.5


def test_presidio_not_consulted_for_secrets_only_profile() -> None:
    fake = FakeAnalyzerEngine()
    engine = MaskingEngine(MaskingSettings(), analyzer=PresidioAnalyzer(fake, "en", [], 0.5))
    assert engine.masker(["secrets"]).mask_text("Jane Doe").value == "Jane Doe"
    assert fake.calls == []
