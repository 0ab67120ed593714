"""User confirmation (``confirm: user``) through a real gateway, driven by the official SDK client.

The client's ``elicitation_callback`` plays the user behind the session: it accepts, declines or
cancels Bastion's ``elicitation/create``; a client without the callback declares no elicitation
capability and is refused. Approvers act through the admin HTTP API with their own keys. Every
test checks the wire reply (result or code from ``bastion.jsonrpc.codes``) and the audit records
(the ``user_confirmation`` step, the approval steps, the response) in the gateway's SQLite store.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import types
from mcp.client.client import Client
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from tests.e2e.approvals_support import (
    WAIT_S,
    Gateway,
    approval_config,
    create_keys,
    gateway_in_thread,
    search,
    wait_for_steps,
)
from tests.e2e.gateway import echo_upstream, free_port

from bastion.jsonrpc import codes

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

POLICY: dict[str, Any] = {
    "default": "allow",
    "rules": [
        {"id": "confirm-then-dba", "match": {"server": "alpha", "tool": "echo", "args": {"text": {"regex": "^deploy"}}},
         "action": "require_approval", "approvers": {"groups": ["dba"]}, "confirm": "user"},
    ],
}


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:12]}"


class User:
    """The human behind the client: answers every confirmation with ``answer`` and remembers the questions."""

    def __init__(self, answer: types.ElicitResult) -> None:
        self.answer = answer
        self.questions: list[types.ElicitRequestParams] = []

    async def __call__(self, _context: ClientRequestContext,
                       params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData:
        self.questions.append(params)
        return self.answer


ACCEPT = types.ElicitResult(action="accept", content={"confirm": True})


@contextlib.asynccontextmanager
async def client_as(gateway: Gateway, subject: str, user: User | None) -> AsyncIterator[Client]:
    """The SDK client as ``subject``; with ``user`` it declares elicitation and answers through it."""
    timeout = httpx2.Timeout(WAIT_S, read=60.0)
    headers = {"authorization": f"Bearer {gateway.keys[subject]}"}
    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
        async with Client(streamable_http_client(gateway.endpoint(), http_client=http), read_timeout_seconds=60.0,
                          elicitation_callback=user) as client:
            yield client


async def confirmation_records(store_url: str, text: str) -> list[dict[str, Any]]:
    """The ``user_confirmation`` approval records of the call ``echo(text)``."""
    return [b for b in await search(store_url, kind="approval")
            if (b.get("detail") or {}).get("step") == "user_confirmation"
            and b.get("what", {}).get("arguments") == {"text": text}]


async def response_records(store_url: str, text: str) -> list[dict[str, Any]]:
    """The ``response`` records answering the ``tools/call`` request(s) ``echo(text)``."""
    requests = {b["seq"] for b in await search(store_url, kind="request")
                if b.get("what", {}).get("method") == "tools/call" and b["what"].get("arguments") == {"text": text}}
    return [b for b in await search(store_url, kind="response")
            if b.get("correlation", {}).get("request_seq") in requests]


async def requested_records(store_url: str, text: str) -> list[dict[str, Any]]:
    return [b for b in await search(store_url, kind="approval")
            if (b.get("detail") or {}).get("step") == "requested" and b.get("what", {}).get("arguments") == {"text": text}]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    with tempfile.TemporaryDirectory(prefix="bastion-e2e-confirm-") as workdir:
        store_url = f"sqlite:///{workdir}/audit.db"
        keys = anyio.run(create_keys, store_url)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        config = approval_config(POLICY, workdir, url, "test/confirm", upstreams={"alpha": echo_upstream("alpha")},
                                 store=store_url)
        with gateway_in_thread(config, workdir, port):
            yield Gateway(url, workdir, store_url, keys, "test/confirm")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        yield client


async def test_call_runs_after_user_confirms_and_approver_approves_when_rule_says_confirm_user(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    text = unique("deploy prod")
    user = User(ACCEPT)
    holder: dict[str, Any] = {}
    async with client_as(gateway, "agent", user) as client, anyio.create_task_group() as tg:
        async def run() -> None:
            holder["result"] = await client.call_tool("echo", {"text": text})

        tg.start_soon(run)
        approval = await gateway.admin(http, "alice").wait_for_pending(text)  # user first, then approvers
        [question] = user.questions
        assert isinstance(question, types.ElicitRequestFormParams)
        assert "'echo'" in question.message and "'alpha'" in question.message and text in question.message
        assert question.requested_schema == {
            "type": "object", "properties": {"confirm": {"type": "boolean", "title": "Allow this call?"}},
            "required": ["confirm"],
        }
        response = await gateway.admin(http, "alice").approve(approval["id"])
        assert response.status_code == 200, response.text

    result = holder["result"]
    assert result.is_error is False and result.content[0].text == text
    [confirmed] = await confirmation_records(gateway.store_url, text)
    assert (confirmed["who"]["subject"], confirmed["outcome"], confirmed["decision"]["rule_id"]) == \
        ("agent", "approved", "confirm-then-dba")
    assert confirmed["detail"] == {"step": "user_confirmation", "confirmation": "accepted", "client_action": "accept"}
    requested, _reviewed, _executed = await wait_for_steps(gateway.store_url, approval["id"],
                                                           ["requested", "reviewed", "executed"])
    assert (confirmed["origin"], confirmed["seq"]) < (requested["origin"], requested["seq"])
    [answered] = await response_records(gateway.store_url, text)
    assert answered["outcome"] == "ok" and answered["detail"]["approval_id"] == approval["id"]


@pytest.mark.parametrize(("answer", "confirmation", "outcome"), [
    (types.ElicitResult(action="decline"), "declined", "denied"),
    (types.ElicitResult(action="cancel"), "cancelled", "cancelled"),
    (types.ElicitResult(action="accept", content={"confirm": False}), "declined", "denied"),
])
async def test_call_refused_and_no_approval_requested_when_user_does_not_confirm(
    gateway: Gateway, answer: types.ElicitResult, confirmation: str, outcome: str
) -> None:
    text = unique("deploy staging")
    user = User(answer)
    async with client_as(gateway, "agent", user) as client:
        with anyio.fail_after(WAIT_S), pytest.raises(MCPError) as caught:
            await client.call_tool("echo", {"text": text})
    assert len(user.questions) == 1
    assert caught.value.error.code == codes.APPROVAL_DENIED
    assert caught.value.error.data == {"confirmation": confirmation}
    [record] = await confirmation_records(gateway.store_url, text)
    assert (record["who"]["subject"], record["outcome"], record["detail"]["confirmation"]) == \
        ("agent", outcome, confirmation)
    assert await requested_records(gateway.store_url, text) == []  # approvers were never bothered
    [answered] = await response_records(gateway.store_url, text)
    assert (answered["outcome"], answered["result"]["error"]["code"]) == ("denied", codes.APPROVAL_DENIED)


async def test_call_refused_without_asking_when_client_has_no_elicitation(gateway: Gateway) -> None:
    text = unique("deploy canary")
    async with client_as(gateway, "agent", None) as client:
        with anyio.fail_after(WAIT_S), pytest.raises(MCPError) as caught:
            await client.call_tool("echo", {"text": text})
    assert caught.value.error.code == codes.APPROVAL_DENIED
    assert caught.value.error.data == {"confirmation": "unsupported"}
    assert "elicitation" in caught.value.error.message
    [record] = await confirmation_records(gateway.store_url, text)
    assert (record["outcome"], record["detail"]["confirmation"]) == ("denied", "unsupported")
    assert await requested_records(gateway.store_url, text) == []
    [answered] = await response_records(gateway.store_url, text)
    assert answered["result"]["error"]["code"] == codes.APPROVAL_DENIED


async def test_calls_outside_confirm_rules_never_ask_the_user(gateway: Gateway) -> None:
    text = unique("status")
    user = User(ACCEPT)
    async with client_as(gateway, "agent", user) as client:
        with anyio.fail_after(WAIT_S):
            result = await client.call_tool("echo", {"text": text})
    assert result.is_error is False and result.content[0].text == text and user.questions == []
    assert await confirmation_records(gateway.store_url, text) == []
    [answered] = await response_records(gateway.store_url, text)
    assert answered["outcome"] == "ok"
