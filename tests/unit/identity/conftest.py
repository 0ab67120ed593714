"""Fixtures for identity tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import KeyServer


@pytest.fixture
def key_server() -> Iterator[KeyServer]:
    """A JWKS and OIDC discovery server on 127.0.0.1, stopped after the test."""
    with KeyServer() as server:
        yield server
