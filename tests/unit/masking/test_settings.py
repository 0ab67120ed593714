"""``MaskingSettings`` validation and ``MaskingEngine`` construction errors."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bastion.errors import ConfigError
from bastion.masking import MaskingEngine, MaskingError, MaskingSettings


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({"surprise": 1}, "surprise"),
        ({"detectors": {"x": {"pattern": "("}}}, "invalid regex"),
        ({"detectors": {"x": {"pattern": "a(?i)b"}}}, "scoped flags"),
        ({"detectors": {"x": {"pattern": "(?P<other>a)"}}}, "named group"),
        ({"detectors": {"email": {"pattern": "a"}}}, "built-ins"),
        ({"profiles": {"p": {"detectors": ["nope"]}}}, "unknown detector"),
        ({"profiles": {"p": {"extends": ["nope"]}}}, "unknown profile"),
        ({"default_profiles": ["nope"]}, "unknown profile"),
        ({"hmac_key": "short"}, "16 bytes"),
        ({"on_failure": "ignore"}, "on_failure"),
    ],
)
def test_settings_rejected_when_invalid(section: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        MaskingSettings.model_validate(section)
    assert fragment in str(info.value)


def test_engine_refuses_hash_without_key() -> None:
    settings = MaskingSettings.model_validate({"profiles": {"h": {"extends": ["pii"], "strategies": {"email": "hash"}}}})
    with pytest.raises(ConfigError, match="hmac_key"):
        MaskingEngine(settings)


def test_engine_refuses_profile_cycle() -> None:
    settings = MaskingSettings.model_validate({"profiles": {"a": {"extends": ["b"]}, "b": {"extends": ["a"]}}})
    with pytest.raises(ConfigError, match="cycle"):
        MaskingEngine(settings)


def test_engine_refuses_bad_json_path() -> None:
    settings = MaskingSettings.model_validate({"fields": {"f": {"paths": ["users.name"]}}})
    with pytest.raises(ConfigError, match="JSON path"):
        MaskingEngine(settings)


def test_engine_caches_one_masker_per_profile_set() -> None:
    engine = MaskingEngine(MaskingSettings())
    assert engine.masker(["pii", "secrets"]) is engine.masker(["secrets", "pii"])
    assert engine.masker() is engine.masker(["all"])
    with pytest.raises(ConfigError):
        engine.masker(["nope"])


def test_stricter_strategy_wins_when_profiles_disagree() -> None:
    settings = MaskingSettings.model_validate({
        "profiles": {"soft": {"extends": ["pii"], "strategies": {"card": "partial"}},
                     "hard": {"detectors": ["card"], "strategies": {"card": "block"}}}})
    engine = MaskingEngine(settings)
    assert engine.masker(["soft"]).mask_text("4111 1111 1111 1111").value == "****1111"
    with pytest.raises(MaskingError) as info:
        engine.masker(["soft", "hard"]).mask_text("4111 1111 1111 1111")
    assert info.value.data["detector"] == "card"


def test_presidio_engine_refused_when_not_installed() -> None:
    from bastion.masking import presidio

    if presidio.AnalyzerEngine is not None:
        pytest.skip("presidio-analyzer is installed here")
    with pytest.raises(ConfigError, match="presidio"):
        MaskingEngine(MaskingSettings.model_validate({"engine": "presidio"}))
