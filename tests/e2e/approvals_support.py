"""Helpers for the approval end-to-end tests: a gateway whose resource URL is its own address,
API-key identities created in its store, an SDK client carrying a key, the admin API as an
approver sees it, and reads of the approval audit records.

Every wait here is bounded by a deadline and polls shared state (the admin API or the store);
none of them sleeps for a fixed time to "let something happen".
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import orjson
import uvicorn
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from tests.e2e.gateway import complete_config, signing_key_file

from bastion.app import create_app
from bastion.config import parse_settings
from bastion.identity.apikey import create_api_key
from bastion.storage import RecordQuery, open_store

WAIT_S = 10.0
POLL_S = 0.05
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
GRACEFUL_STOP_S = 2

IDENTITIES: Mapping[str, tuple[str, ...]] = {
    "agent": ("agents",),
    "alice": ("dba",),
    "bob": ("dba",),
    "mallory": ("ops",),
    "carol": ("agents", "dba"),  # a caller who is also an approver: may never approve her own call
}


def approval_config(policy: dict[str, Any], workdir: str, url: str, origin: str, **extra: Any) -> dict[str, Any]:
    """A config with API-key identities only (resource_url = the gateway's own ``url``) and a
    stable audit origin and signing key, so a restarted gateway continues the same log."""
    name = origin.replace("/", "-")
    key_path = Path(workdir) / f"{name}.key"
    if not key_path.exists():
        signing_key_file(workdir, name)
    return {
        "identity": {"resource_url": url, "allow_anonymous": False,
                     "api_keys": {"enabled": True, "last_used_write_interval_s": 0}},
        "policy": policy,
        "audit": {"signing_key_file": str(key_path), "origin": origin},
        **extra,
    }


async def create_keys(store_url: str, identities: Mapping[str, Iterable[str]] = IDENTITIES) -> dict[str, str]:
    """Create one API key per subject in the store at ``store_url``; returns subject -> plaintext."""
    store = await open_store(store_url)
    try:
        return {subject: (await create_api_key(store.api_keys, subject, groups, None))[0]
                for subject, groups in identities.items()}
    finally:
        await store.aclose()


@contextlib.contextmanager
def gateway_in_thread(config: dict[str, Any], workdir: str, port: int) -> Iterator[str]:
    """Serve ``config`` on 127.0.0.1:``port`` in a thread; yields the base URL.

    Unlike tests/e2e/gateway.py this takes the port, because the identity's resource_url must name
    it, and it bounds uvicorn's graceful stop so a call still held cannot hang the teardown.
    """
    settings = parse_settings(complete_config(config, port, workdir))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", timeout_graceful_shutdown=GRACEFUL_STOP_S))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("gateway did not start")
        time.sleep(POLL_S)  # waiting for another thread's startup flag, bounded by the deadline
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            raise RuntimeError("gateway did not stop")


@dataclass(frozen=True)
class Gateway:
    """A running gateway, its store and the API keys of every identity."""

    url: str
    workdir: str
    store_url: str
    keys: Mapping[str, str]
    origin: str

    def endpoint(self, server: str = "alpha") -> str:
        return f"{self.url}/servers/{server}/mcp"

    def admin(self, http: httpx.AsyncClient, subject: str) -> Admin:
        return Admin(http, self.url, self.keys[subject])


@contextlib.asynccontextmanager
async def sdk_client(url: str, api_key: str) -> AsyncIterator[Client]:
    """The official SDK client on ``url``, authenticated with ``api_key`` (read timeout bounded)."""
    timeout = httpx2.Timeout(WAIT_S, read=60.0)
    async with httpx2.AsyncClient(headers={"authorization": f"Bearer {api_key}"}, timeout=timeout) as http:
        async with Client(streamable_http_client(url, http_client=http), read_timeout_seconds=60.0) as client:
            yield client


@dataclass
class Admin:
    """The admin approvals API as one reviewer (their own API key) sees it."""

    http: httpx.AsyncClient
    base: str
    api_key: str

    @property
    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}

    async def approve(self, approval_id: str, reason: str | None = None) -> httpx.Response:
        body = {"reason": reason} if reason is not None else {}
        return await self.http.post(f"{self.base}/admin/approvals/{approval_id}/approve", json=body,
                                    headers=self._headers)

    async def deny(self, approval_id: str, reason: str) -> httpx.Response:
        return await self.http.post(f"{self.base}/admin/approvals/{approval_id}/deny", json={"reason": reason},
                                    headers=self._headers)

    async def show(self, approval_id: str) -> dict[str, Any]:
        response = await self.http.get(f"{self.base}/admin/approvals/{approval_id}", headers=self._headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def pending(self) -> list[dict[str, Any]]:
        response = await self.http.get(f"{self.base}/admin/approvals", params={"state": "pending"},
                                       headers=self._headers)
        assert response.status_code == 200, response.text
        return list(response.json()["approvals"])

    async def wait_for_pending(self, text: str, timeout_s: float = WAIT_S) -> dict[str, Any]:
        """The one pending approval whose (display) arguments are ``{"text": text}``."""
        with anyio.fail_after(timeout_s):
            while True:
                found = [a for a in await self.pending() if a["arguments"] == {"text": text}]
                if found:
                    assert len(found) == 1, found
                    return found[0]
                await anyio.sleep(POLL_S)  # polling the admin API, bounded by fail_after

    async def wait_for_state(self, approval_id: str, state: str, timeout_s: float = WAIT_S) -> dict[str, Any]:
        with anyio.fail_after(timeout_s):
            while (current := await self.show(approval_id))["state"] != state:
                await anyio.sleep(POLL_S)  # polling the admin API, bounded by fail_after
        return current


# -- audit records -------------------------------------------------------------------------------


async def search(store_url: str, **query: Any) -> list[dict[str, Any]]:
    """Bodies of the records matching ``query`` (RecordQuery fields), oldest first (by time across origins)."""
    store = await open_store(store_url)
    try:
        entries = await store.search_entries(RecordQuery(limit=1000, **query))
    finally:
        await store.aclose()
    return sorted((orjson.loads(e.body) for e in entries), key=lambda b: (b["time"], b["origin"], b["seq"]))


async def approval_records(store_url: str, approval_id: str) -> list[dict[str, Any]]:
    """The ``approval`` records of one approval, oldest first."""
    return [b for b in await search(store_url, kind="approval")
            if (b.get("detail") or {}).get("approval_id") == approval_id]


def steps(records: Iterable[dict[str, Any]]) -> list[str]:
    return [r["detail"]["step"] for r in records]


async def wait_for_steps(store_url: str, approval_id: str, expected: list[str],
                         timeout_s: float = WAIT_S) -> list[dict[str, Any]]:
    """Poll until the approval's audit steps are ``expected`` (bounded); returns the records in that order.

    ``requested`` must come first in the log; the later steps are compared as a multiset because
    the gateway appends a ``reviewed`` record only after the approval is stored as decided, so the
    released call's ``executed`` record may land before it (known race, see the e2e report).
    """
    found: list[dict[str, Any]] = []
    with contextlib.suppress(TimeoutError), anyio.fail_after(timeout_s):
        while sorted(steps(found := await approval_records(store_url, approval_id))) != sorted(expected):
            await anyio.sleep(POLL_S)  # polling the store, bounded by fail_after
    assert sorted(steps(found)) == sorted(expected), found
    assert steps(found)[0] == expected[0], found
    return sorted(found, key=lambda r: expected.index(r["detail"]["step"]))

async def responses_for(store_url: str, approval_id: str) -> list[dict[str, Any]]:
    """``response`` records of the tools/call exchanges the approval stage tied to ``approval_id``."""
    return [b for b in await search(store_url, kind="response")
            if b.get("what", {}).get("method") == "tools/call"
            and (b.get("detail") or {}).get("approval_id") == approval_id]


async def wait_for_responses(store_url: str, approval_id: str, count: int,
                             timeout_s: float = WAIT_S) -> list[dict[str, Any]]:
    """Poll until ``count`` response records name ``approval_id`` (bounded); returns them."""
    found: list[dict[str, Any]] = []
    with contextlib.suppress(TimeoutError), anyio.fail_after(timeout_s):
        while len(found := await responses_for(store_url, approval_id)) < count:
            await anyio.sleep(POLL_S)  # polling the store, bounded by fail_after
    assert len(found) == count, found
    return found
