"""The store URLs every contract suite runs against (see backends.py); a module may narrow them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.contract.backends import ALL_BACKENDS, PERSISTENT_BACKENDS, provision


@pytest.fixture(params=ALL_BACKENDS)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with provision(request.param, tmp_path) as url:
        yield url


@pytest.fixture(params=PERSISTENT_BACKENDS)
async def persistent_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Only stores that outlive a close (not SQLite in memory)."""
    async with provision(request.param, tmp_path) as url:
        yield url
