"""Shared masking fixtures: an engine with a known HMAC key and the default ``all`` masker."""

from __future__ import annotations

import pytest

from bastion.masking import Masker, MaskingEngine, MaskingSettings

KEY = "k" * 32


def make_masker(**settings: object) -> Masker:
    """A masker for ``profiles`` (default ``all``) built from settings with a fixed key."""
    profiles = settings.pop("use", None)
    engine = MaskingEngine(MaskingSettings.model_validate({"hmac_key": KEY, **settings}))
    return engine.masker(profiles)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def masker() -> Masker:
    return make_masker()
