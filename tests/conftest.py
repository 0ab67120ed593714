"""Shared pytest configuration: async tests run on asyncio through anyio's plugin; property tests
explore new examples on every local run but replay a fixed set in CI (``.ci/run`` sets
``HYPOTHESIS_PROFILE=ci``), so that a merge is never refused for an example no change introduced."""

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
