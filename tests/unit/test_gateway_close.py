"""Closing a session: its record first, yet shutdown always ends it.

Unit-level, with a hung recorder standing in for an audit store that never answers (the e2e tests
cover the store that refuses: tests/e2e/test_gateway_records.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bastion.proxy import gateway as gateway_module
from bastion.proxy.gateway import Gateway

pytestmark = pytest.mark.anyio


class HungRecorder:
    async def session(self, caller: Any, opened: bool) -> None:
        await asyncio.Event().wait()


class FakeSession:
    closing = False
    closed = False
    caller = None

    async def close(self) -> None:
        self.closed = True


class NoUpstreams:
    async def aclose(self) -> None:
        return None


async def test_shutdown_closes_a_session_whose_close_was_cancelled_while_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_module, "SHUTDOWN_RECORD_WAIT_S", 0.2)
    gateway = Gateway.__new__(Gateway)  # only what closing sessions touches
    gateway.recorder, gateway.accepting, gateway.upstreams = HungRecorder(), True, NoUpstreams()  # type: ignore[assignment]
    gateway.stopping, gateway.sessions = asyncio.Event(), {}
    session = gateway.sessions["s1"] = FakeSession()  # type: ignore[assignment]
    gateway._reaper = asyncio.create_task(gateway.close_session("s1"))  # the reaper is closing it
    await asyncio.sleep(0.05)
    await asyncio.wait_for(gateway.aclose(), 3)  # cancels the reaper mid-record, then closes regardless
    assert session.closed and "s1" not in gateway.sessions
