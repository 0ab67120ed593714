"""Fixtures for policy tests: build engines from YAML, build requests, and an in-memory PinStore."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from bastion.policy import Kind, PendingChange, PolicyEngine, PolicyRequest, ToolPin

UNSET = object()
"""Default for ``annotations``: a tool that declared none (None means the definition is unknown)."""
MONDAY_NOON = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)

EngineFactory = Callable[[str], PolicyEngine]
RequestFactory = Callable[..., PolicyRequest]


def build_engine(yaml_text: str) -> PolicyEngine:
    return PolicyEngine.from_text(textwrap.dedent(yaml_text), source="test")


def build_request(*, subject: str = "alice", groups: tuple[str, ...] = (), server: str = "postgres",
                  kind: Kind = Kind.TOOL, name: str = "query", args: Mapping[str, Any] | None = None,
                  annotations: Mapping[str, Any] | object | None = UNSET, trusted: bool = True,
                  now: datetime = MONDAY_NOON) -> PolicyRequest:
    known = {} if annotations is UNSET else annotations
    assert known is None or isinstance(known, Mapping)
    return PolicyRequest(subject, frozenset(groups), server, kind, name, args or {}, known, trusted, now)


@pytest.fixture
def engine_from() -> EngineFactory:
    return build_engine


@pytest.fixture
def request_for() -> RequestFactory:
    return build_request


class MemoryPinStore:
    """In-memory PinStore for tests only; the real ones live in storage/."""

    def __init__(self) -> None:
        self.pins: dict[tuple[str, str], ToolPin] = {}
        self.pending: dict[tuple[str, str], PendingChange] = {}

    async def fetch_pins(self, server: str) -> Mapping[str, ToolPin]:
        return {name: pin for (srv, name), pin in self.pins.items() if srv == server}

    async def store_pin(self, pin: ToolPin) -> None:
        self.pins[(pin.server, pin.name)] = pin

    async def fetch_pending(self, server: str) -> Mapping[str, PendingChange]:
        return {name: change for (srv, name), change in self.pending.items() if srv == server}

    async def store_pending(self, change: PendingChange) -> None:
        self.pending[(change.new.server, change.new.name)] = change

    async def delete_pending(self, server: str, name: str) -> None:
        self.pending.pop((server, name), None)


@pytest.fixture
def pin_store() -> MemoryPinStore:
    return MemoryPinStore()
