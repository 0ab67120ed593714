"""Human approval through a real gateway, driven by the official SDK client.

Callers and approvers are API-key identities created in the gateway's store before any call
(``agent`` in ``agents``; ``alice`` and ``bob`` in ``dba``; ``mallory`` outside it; ``carol`` both
caller and dba member). Approvers act through the admin HTTP API with their own keys, once through
the ``bastion approvals`` CLI. Every test checks the wire reply (result or JSON-RPC code from
``bastion.jsonrpc.codes``) and the approval audit records (``detail.step``) in the gateway's store.

Each test uses its own argument text, so its approval is found by arguments without relying on
order. Restart is a real ``python -m bastion serve`` child killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from mcp.shared.exceptions import MCPError
from tests.contract.backends import pg_schema
from tests.e2e.approvals_support import (
    WAIT_S,
    Admin,
    Gateway,
    approval_config,
    approval_records,
    create_keys,
    gateway_in_thread,
    responses_for,
    sdk_client,
    search,
    wait_for_responses,
    wait_for_steps,
)
from tests.e2e.gateway import echo_upstream, free_port
from tests.e2e.test_crash import GatewayProcess
from tests.e2e.test_identity import RawSession

from bastion.cli.main import main as bastion_main
from bastion.jsonrpc import codes

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

SHORT_EXPIRY_S = 1.5
APPROVAL_ID = re.compile(r"apr_[0-9a-f]{32}")

POLICY: dict[str, Any] = {
    "default": "allow",
    "rules": [
        {"id": "risky-echo", "match": {"server": "alpha", "tool": "echo", "args": {"text": {"regex": "^drop"}}},
         "action": "require_approval", "approvers": {"groups": ["dba"], "min": 1}},
        {"id": "two-person", "match": {"server": "alpha", "tool": "echo", "args": {"text": {"regex": "^wipe"}}},
         "action": "require_approval", "approvers": {"groups": ["dba"], "min": 2}},
        {"id": "short-fuse", "match": {"server": "alpha", "tool": "echo", "args": {"text": {"regex": "^flash"}}},
         "action": "require_approval", "approvers": {"groups": ["dba"]}, "expires_s": SHORT_EXPIRY_S},
        {"id": "ticketed", "match": {"server": "alpha", "tool": "echo", "args": {"text": {"regex": "^ticket"}}},
         "action": "require_approval", "approvers": {"groups": ["dba"]}, "mode": "pending_error"},
    ],
}


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:12]}"


@dataclass
class HeldCall:
    """One ``tools/call`` running in the background through the SDK client, and its approval."""

    approval: dict[str, Any]
    scope: anyio.CancelScope
    done: anyio.Event
    result: Any = None
    error: MCPError | None = None

    async def outcome(self) -> HeldCall:
        """Wait (bounded) until the client has its answer."""
        with anyio.fail_after(WAIT_S):
            await self.done.wait()
        return self


@contextlib.asynccontextmanager
async def held_call(gateway: Gateway, http: httpx.AsyncClient, caller: str, text: str,
                    on_progress: Any = None) -> AsyncIterator[HeldCall]:
    """Start ``echo(text)`` as ``caller``; yield once the gateway lists its pending approval."""
    done = anyio.Event()
    scope = anyio.CancelScope()
    holder: dict[str, Any] = {}
    async with sdk_client(gateway.endpoint(), gateway.keys[caller]) as client, anyio.create_task_group() as tg:
        async def run() -> None:
            try:
                with scope:
                    holder["result"] = await client.call_tool("echo", {"text": text}, progress_callback=on_progress)
            except MCPError as exc:
                holder["error"] = exc
            finally:
                done.set()

        tg.start_soon(run)
        approval = await gateway.admin(http, "alice").wait_for_pending(text)
        call = HeldCall(approval, scope, done)
        try:
            yield call
        finally:
            await call.outcome()
            call.result, call.error = holder.get("result"), holder.get("error")


def text_of(result: Any) -> str:
    assert result.is_error is False, result
    return str(result.content[0].text)


# -- the shared gateway ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    with tempfile.TemporaryDirectory(prefix="bastion-e2e-approvals-") as workdir:
        store_url = f"sqlite:///{workdir}/audit.db"
        keys = anyio.run(create_keys, store_url)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        config = approval_config(POLICY, workdir, url, "test/approvals",
                                 upstreams={"alpha": echo_upstream("alpha")}, store=store_url)
        with gateway_in_thread(config, workdir, port):
            yield Gateway(url, workdir, store_url, keys, "test/approvals")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        yield client


# -- hold mode: approve, deny, expire -------------------------------------------------------------


async def test_held_call_executes_once_when_an_approver_approves(gateway: Gateway, http: httpx.AsyncClient) -> None:
    text = unique("drop table")
    async with held_call(gateway, http, "agent", text) as call:
        assert not call.done.is_set()
        response = await gateway.admin(http, "alice").approve(call.approval["id"], "ticket 4711")
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "approved"
    approval_id = call.approval["id"]

    assert call.error is None and text_of(call.result) == text
    assert (await gateway.admin(http, "alice").show(approval_id))["state"] == "executed"
    requested, reviewed, executed = await wait_for_steps(gateway.store_url, approval_id,
                                                         ["requested", "reviewed", "executed"])
    assert (requested["who"]["subject"], requested["decision"]["rule_id"]) == ("agent", "risky-echo")
    assert (requested["detail"]["approvers"], requested["outcome"]) == (["dba"], "held")
    assert (reviewed["who"]["subject"], reviewed["detail"]["verdict"], reviewed["detail"]["reason"],
            reviewed["detail"]["caller"], reviewed["detail"]["via"]) == ("alice", "approve", "ticket 4711", "agent", "api")
    assert (executed["who"]["subject"], executed["outcome"], executed["detail"]["state"]) == ("agent", "ok", "executed")
    assert requested["what"]["arguments_sha256"] == executed["what"]["arguments_sha256"]
    [response_record] = await wait_for_responses(gateway.store_url, approval_id, 1)  # forwarded exactly once
    assert (response_record["who"]["subject"], response_record["outcome"]) == ("agent", "ok")
    assert response_record["result"]["released"]["content"][0]["text"] == text


async def test_held_call_fails_with_approval_denied_when_an_approver_denies(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    text = unique("drop database")
    async with held_call(gateway, http, "agent", text) as call:
        response = await gateway.admin(http, "bob").deny(call.approval["id"], "not during the freeze")
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "denied"
    approval_id = call.approval["id"]

    assert call.result is None and call.error is not None
    assert call.error.error.code == codes.APPROVAL_DENIED
    assert call.error.error.data == {"approval_id": approval_id, "reason": "not during the freeze"}
    _, reviewed = await wait_for_steps(gateway.store_url, approval_id, ["requested", "reviewed"])
    assert (reviewed["who"]["subject"], reviewed["detail"]["verdict"], reviewed["detail"]["reason"],
            reviewed["outcome"]) == ("bob", "deny", "not during the freeze", "denied")
    [response_record] = await wait_for_responses(gateway.store_url, approval_id, 1)
    assert (response_record["outcome"], response_record["result"]["error"]["code"]) == ("denied", codes.APPROVAL_DENIED)


async def test_denial_reason_reaches_the_client_when_an_approver_denies(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    text = unique("drop index")
    async with held_call(gateway, http, "agent", text) as call:
        assert (await gateway.admin(http, "bob").deny(call.approval["id"], "change freeze")).status_code == 200

    assert call.error is not None and call.error.error.code == codes.APPROVAL_DENIED
    await wait_for_steps(gateway.store_url, call.approval["id"], ["requested", "reviewed"])
    data = call.error.error.data or {}
    assert "change freeze" in (str(data.get("reason")) + call.error.error.message)


async def test_held_call_fails_with_approval_expired_when_nobody_decides_in_time(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    text = unique("flash firmware")
    async with held_call(gateway, http, "agent", text) as call:
        assert call.approval["rule_id"] == "short-fuse"
        assert call.approval["expires_at"] - call.approval["created_at"] == pytest.approx(SHORT_EXPIRY_S)
    approval_id = call.approval["id"]

    assert call.error is not None and call.error.error.code == codes.APPROVAL_EXPIRED
    assert call.error.error.data == {"approval_id": approval_id}
    late = await gateway.admin(http, "alice").approve(approval_id)
    assert (late.status_code, late.json()["error"]) == (403, "refused")
    assert (await gateway.admin(http, "alice").show(approval_id))["state"] == "expired"
    _, expired = await wait_for_steps(gateway.store_url, approval_id, ["requested", "expired"])
    assert (expired["who"]["subject"], expired["outcome"]) == ("agent", "expired")
    [response_record] = await wait_for_responses(gateway.store_url, approval_id, 1)
    assert response_record["result"]["error"]["code"] == codes.APPROVAL_EXPIRED


# -- who may decide -------------------------------------------------------------------------------


async def test_caller_cannot_approve_own_call_when_caller_is_an_approver(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    text = unique("drop schema")
    async with held_call(gateway, http, "carol", text) as call:
        approval_id = call.approval["id"]
        own = await gateway.admin(http, "carol").approve(approval_id, "looks fine to me")
        assert (own.status_code, own.json()["error"]) == (403, "refused")
        current = await gateway.admin(http, "carol").show(approval_id)
        assert (current["state"], current["reviews"], call.done.is_set()) == ("pending", [], False)
        assert (await gateway.admin(http, "alice").approve(approval_id)).status_code == 200

    assert call.error is None and text_of(call.result) == text
    _, reviewed, executed = await wait_for_steps(gateway.store_url, approval_id, ["requested", "reviewed", "executed"])
    assert (reviewed["who"]["subject"], reviewed["detail"]["caller"]) == ("alice", "carol")
    assert executed["who"]["subject"] == "carol"


async def test_non_approver_is_refused_when_not_in_the_rule_groups(gateway: Gateway, http: httpx.AsyncClient) -> None:
    text = unique("drop user")
    async with held_call(gateway, http, "agent", text) as call:
        approval_id = call.approval["id"]
        mallory = gateway.admin(http, "mallory")
        for attempt in (await mallory.approve(approval_id), await mallory.deny(approval_id, "because")):
            assert (attempt.status_code, attempt.json()["error"]) == (403, "refused")
        anonymous = await http.post(f"{mallory.base}/admin/approvals/{approval_id}/approve", json={})
        assert anonymous.status_code == 401
        current = await mallory.show(approval_id)
        assert (current["state"], current["reviews"], call.done.is_set()) == ("pending", [], False)
        assert (await gateway.admin(http, "alice").deny(approval_id, "cleanup")).status_code == 200

    assert call.error is not None and call.error.error.code == codes.APPROVAL_DENIED
    _, reviewed = await wait_for_steps(gateway.store_url, approval_id, ["requested", "reviewed"])
    assert reviewed["who"]["subject"] == "alice"  # mallory's attempts left no review behind


async def test_call_waits_for_second_approval_when_rule_needs_two(gateway: Gateway, http: httpx.AsyncClient) -> None:
    text = unique("wipe cluster")
    async with held_call(gateway, http, "agent", text) as call:
        approval_id = call.approval["id"]
        assert call.approval["min_approvals"] == 2
        first = await gateway.admin(http, "alice").approve(approval_id, "one")
        assert (first.status_code, first.json()["state"], len(first.json()["reviews"])) == (200, "pending", 1)
        again = await gateway.admin(http, "alice").approve(approval_id, "one more time")
        assert (again.status_code, again.json()["error"]) == (403, "refused")  # one vote per reviewer
        assert not call.done.is_set()
        second = await gateway.admin(http, "bob").approve(approval_id, "two")
        assert (second.status_code, second.json()["state"]) == (200, "approved")

    assert call.error is None and text_of(call.result) == text
    records = await wait_for_steps(gateway.store_url, approval_id, ["requested", "reviewed", "reviewed", "executed"])
    assert [(r["who"]["subject"], r["detail"]["state"]) for r in records[1:3]] == [("alice", "pending"),
                                                                                    ("bob", "approved")]
    await wait_for_responses(gateway.store_url, approval_id, 1)


async def test_cli_approval_releases_held_call_when_reviewer_uses_own_token(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    text = unique("drop view")
    async with held_call(gateway, http, "agent", text) as call:
        approval_id = call.approval["id"]
        argv = ["approvals", "--url", gateway.url, "--token", gateway.keys["bob"],
                "approve", approval_id, "--reason", "ticket 4712"]
        out = io.StringIO()

        def run_cli() -> int:
            with contextlib.redirect_stdout(out):
                return bastion_main(argv)

        with anyio.fail_after(WAIT_S):
            assert await anyio.to_thread.run_sync(run_cli) == 0
        assert approval_id in out.getvalue() and "approved" in out.getvalue()

    assert call.error is None and text_of(call.result) == text
    _, reviewed, _ = await wait_for_steps(gateway.store_url, approval_id, ["requested", "reviewed", "executed"])
    assert (reviewed["who"]["subject"], reviewed["who"]["issuer"], reviewed["detail"]["reason"]) == (
        "bob", "urn:bastion:api-key", "ticket 4712")


async def test_admin_api_answers_at_documented_path_when_gateway_runs(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    response = await http.get(f"{gateway.url}/admin/approvals", headers={"authorization": f"Bearer {gateway.keys['alice']}"})
    assert response.status_code == 200
    assert "approvals" in response.json()


# -- pending_error mode: binding and replay -------------------------------------------------------


async def call_now(gateway: Gateway, caller: str, text: str) -> tuple[Any, MCPError | None]:
    """One immediate ``echo(text)`` in its own SDK session: (result, None) or (None, error)."""
    async with sdk_client(gateway.endpoint(), gateway.keys[caller]) as client:
        try:
            with anyio.fail_after(WAIT_S):
                return await client.call_tool("echo", {"text": text}), None
        except MCPError as exc:
            return None, exc


def pending_id(error: MCPError | None) -> str:
    assert error is not None and error.error.code == codes.APPROVAL_PENDING, error
    approval_id = str((error.error.data or {})["approval_id"])
    assert APPROVAL_ID.fullmatch(approval_id) and approval_id in error.error.message
    return approval_id


async def test_approval_does_not_cover_changed_arguments_when_mode_is_pending_error(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    text_a, text_b = unique("ticket A"), unique("ticket B")
    first = pending_id((await call_now(gateway, "agent", text_a))[1])
    assert pending_id((await call_now(gateway, "agent", text_a))[1]) == first  # a retry reuses the approval
    assert (await gateway.admin(http, "alice").approve(first)).status_code == 200

    other = pending_id((await call_now(gateway, "agent", text_b))[1])
    result, error = await call_now(gateway, "agent", text_a)

    assert other != first
    assert error is None and text_of(result) == text_a
    shown = await gateway.admin(http, "alice").show(other)
    assert (shown["state"], shown["arguments"], shown["held"]) == ("pending", {"text": text_b}, False)
    await wait_for_steps(gateway.store_url, first, ["requested", "reviewed", "executed"])
    await wait_for_steps(gateway.store_url, other, ["requested"])
    held = await responses_for(gateway.store_url, other)
    assert [(r["outcome"], r["result"]["error"]["code"]) for r in held] == [("held", codes.APPROVAL_PENDING)]
    assert (await gateway.admin(http, "bob").deny(other, "cleanup")).status_code == 200


async def test_identical_call_needs_new_approval_when_approval_was_used(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    text = unique("ticket replay")
    first = pending_id((await call_now(gateway, "agent", text))[1])
    assert (await gateway.admin(http, "alice").approve(first)).status_code == 200
    result, error = await call_now(gateway, "agent", text)
    assert error is None and text_of(result) == text

    replay = pending_id((await call_now(gateway, "agent", text))[1])

    assert replay != first
    assert (await gateway.admin(http, "alice").show(first))["state"] == "executed"
    executed = await wait_for_steps(gateway.store_url, first, ["requested", "reviewed", "executed"])
    assert executed[0]["what"]["arguments_sha256"] == (await approval_records(gateway.store_url, replay))[0]["what"]["arguments_sha256"]
    await wait_for_steps(gateway.store_url, replay, ["requested"])
    assert [r["outcome"] for r in await responses_for(gateway.store_url, first)] == ["held", "ok"]
    assert (await gateway.admin(http, "bob").deny(replay, "cleanup")).status_code == 200


# -- cancellation and progress --------------------------------------------------------------------


async def test_approval_is_withdrawn_when_client_cancels_held_call(gateway: Gateway, http: httpx.AsyncClient) -> None:
    text = unique("drop tablespace")
    async with held_call(gateway, http, "agent", text) as call:
        call.scope.cancel()  # the SDK sends notifications/cancelled for the abandoned request
        withdrawn = await gateway.admin(http, "alice").wait_for_state(call.approval["id"], "withdrawn")
    approval_id = call.approval["id"]

    assert call.result is None and call.error is None and call.scope.cancelled_caught
    assert withdrawn["closed_at"] is not None
    late = await gateway.admin(http, "alice").approve(approval_id)
    assert (late.status_code, late.json()["error"]) == (403, "refused")
    _, closed = await wait_for_steps(gateway.store_url, approval_id, ["requested", "withdrawn"])
    assert (closed["who"]["subject"], closed["outcome"]) == ("agent", "cancelled")
    cancels = [r for r in await search(gateway.store_url, kind="cancelled", subject="agent")
               if r.get("correlation", {}).get("session_id") is not None]
    assert cancels, "the client's notifications/cancelled is recorded"


async def test_client_gets_waiting_progress_when_it_sent_a_progress_token(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    text = unique("drop constraint")
    messages: list[str | None] = []
    arrived = anyio.Event()

    async def on_progress(_progress: float, _total: float | None, message: str | None) -> None:
        messages.append(message)
        arrived.set()

    async with held_call(gateway, http, "agent", text, on_progress=on_progress) as call:
        with anyio.fail_after(WAIT_S):
            await arrived.wait()
        assert (await gateway.admin(http, "alice").approve(call.approval["id"])).status_code == 200
    approval_id = call.approval["id"]

    assert messages[0] == f"waiting for approval {approval_id} (approvers: dba)"
    assert call.error is None and text_of(call.result) == text
    await wait_for_steps(gateway.store_url, approval_id, ["requested", "reviewed", "executed"])


# -- restart ---------------------------------------------------------------------------------------


def gateway_process(workdir: Path, store_url: str) -> GatewayProcess:
    """A ``python -m bastion serve`` child on ``workdir``'s store whose resource_url is its own URL."""
    process = GatewayProcess({"upstreams": {"alpha": echo_upstream("alpha")}, "store": store_url}, workdir)
    process.config.update(approval_config(POLICY, str(workdir), process.url, "test/approvals-restart"))
    process.config_path.write_text(yaml.safe_dump(process.config), encoding="utf-8")
    return process


async def test_held_call_fails_and_approval_is_abandoned_when_gateway_restarts(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    store_url = f"sqlite:///{tmp_path}/audit.db"
    keys = await create_keys(store_url)
    text = unique("drop everything")
    first = gateway_process(tmp_path, store_url)
    second: GatewayProcess | None = None
    try:
        await first.start()
        caller = RawSession(http, f"{first.url}/servers/alpha/mcp", {"authorization": f"Bearer {keys['agent']}"})
        assert (await caller.initialize()).status_code == 200
        failure: dict[str, BaseException] = {}
        async with anyio.create_task_group() as tg:
            async def call() -> None:
                try:
                    await caller.call_tool("echo", {"text": text})
                except httpx.TransportError as exc:
                    failure["error"] = exc

            tg.start_soon(call)
            admin = Admin(http, first.url, keys["alice"])
            approval_id = (await admin.wait_for_pending(text))["id"]
            await first.kill()
        assert isinstance(failure.get("error"), httpx.TransportError)  # the client's call failed

        second = gateway_process(tmp_path, store_url)
        await second.start()  # a service abandons its previous runs' held calls before it serves
        admin = Admin(http, second.url, keys["alice"])
        abandoned = await admin.show(approval_id)
        late = await admin.approve(approval_id, "too late")
    finally:
        for process in (first, second):
            if process is not None:
                process.ensure_dead()

    assert abandoned["state"] == "abandoned" and abandoned["executed_at"] is None
    assert (late.status_code, late.json()["error"]) == (403, "refused")
    _, closed = await wait_for_steps(store_url, approval_id, ["requested", "abandoned"])
    assert (closed["who"]["subject"], closed["outcome"], closed["origin"]) == ("agent", "expired", "test/approvals-restart")
    assert await responses_for(store_url, approval_id) == []  # never forwarded


# -- two instances on PostgreSQL ------------------------------------------------------------------

NOTIFY_RELEASE_S = 3.0
"""Well under the waiters' 5 s store re-read: a release this fast came through LISTEN/NOTIFY."""


@pytest.mark.postgres
async def test_approval_through_one_instance_releases_call_held_in_another_when_sharing_postgres(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    async with pg_schema("e2e_approvals") as store_url:
        keys = await create_keys(store_url)
        ports = free_port(), free_port()
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        configs = [approval_config(POLICY, str(tmp_path), url, origin, store=store_url,
                                   upstreams={"alpha": echo_upstream("alpha")})
                   for url, origin in zip(urls, ("test/approvals-a", "test/approvals-b"), strict=True)]
        with gateway_in_thread(configs[0], str(tmp_path), ports[0]), \
                gateway_in_thread(configs[1], str(tmp_path), ports[1]):
            a = Gateway(urls[0], str(tmp_path), store_url, keys, "test/approvals-a")
            text = unique("drop shard")
            async with held_call(a, http, "agent", text) as call:
                via_b = Admin(http, urls[1], keys["alice"])
                decided = await via_b.approve(call.approval["id"], "approved on b")
                assert decided.status_code == 200, decided.text
                approved_at = anyio.current_time()
                with anyio.fail_after(NOTIFY_RELEASE_S):
                    await call.done.wait()
                released_after_s = anyio.current_time() - approved_at
        approval_id = call.approval["id"]

        assert call.error is None and text_of(call.result) == text
        assert released_after_s < NOTIFY_RELEASE_S
        records = await wait_for_steps(store_url, approval_id, ["requested", "reviewed", "executed"])
        assert [r["origin"] for r in records] == ["test/approvals-a", "test/approvals-b", "test/approvals-a"]
        assert records[1]["who"]["subject"] == "alice"
        [response_record] = await wait_for_responses(store_url, approval_id, 1)
        assert response_record["origin"] == "test/approvals-a"
