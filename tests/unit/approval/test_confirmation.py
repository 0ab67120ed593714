"""UserConfirmationStage: who is asked, what they are asked, which answers release, and the audit record."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from bastion.approval.model import Step, Verdict
from bastion.errors import DenialError, StorageError, UpstreamError
from bastion.exchange import CallerContext, Direction, Exchange, Kind, Reply
from bastion.jsonrpc import codes
from bastion.pipeline.runner import Pipeline
from bastion.policy.model import ApprovalRequirement, Confirm
from bastion.stages.approval import ApprovalStage
from bastion.stages.confirmation import (
    REQUESTED_SCHEMA,
    STEP,
    Confirmation,
    UserConfirmationOptions,
    UserConfirmationStage,
)

from .support import ALICE, BOB, POLICY_HASH, Recorder, make_service, requirement

pytestmark = pytest.mark.anyio
ARGS = {"table": "users", "password": "hunter2"}
ELICITING = {"elicitation": {}}
CONFIRM_USER = replace(requirement(), confirm=Confirm.USER)


def masked(arguments: dict[str, Any]) -> Any:
    return {k: ("***" if k == "password" else v) for k, v in arguments.items()}


class Client:
    """The caller's client: records what it was asked and answers with a fixed reply (or never)."""

    def __init__(self, reply: Reply | None = None, *, raises: BaseException | None = None) -> None:
        self.reply = reply
        self.raises = raises
        self.asked: list[tuple[str, dict[str, Any]]] = []
        self.waiting = asyncio.Event()

    async def __call__(self, method: str, params: dict[str, Any]) -> Reply:
        self.asked.append((method, params))
        self.waiting.set()
        if self.raises is not None:
            raise self.raises
        if self.reply is None:
            await asyncio.Event().wait()  # the user never answers
        assert self.reply is not None
        return self.reply


def accept(confirm: Any = True) -> Reply:
    return {"result": {"action": "accept", "content": {"confirm": confirm}}}


class Upstream:
    """Counts calls that reached the rest of the pipeline."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, _ex: Exchange) -> Reply | None:
        self.calls += 1
        return {"result": {"content": [], "isError": False}}


def exchange(client: Client | None, *, req: ApprovalRequirement | None = CONFIRM_USER,
             capabilities: dict[str, Any] | None = ELICITING, version: str = "2025-06-18") -> Exchange:
    async def deliver(_ex: Exchange) -> Reply | None:
        raise AssertionError("the stage must call call_next, not deliver")

    caller = CallerContext(principal=ALICE, session_id="s-1", endpoint="/mcp", protocol_version=version,
                           client_capabilities=capabilities)
    ex = Exchange(direction=Direction.TO_UPSTREAM, kind=Kind.REQUEST, method="tools/call",
                  params={"name": "drop_table", "arguments": ARGS}, id=7, caller=caller, upstream="db",
                  deliver=deliver, name="drop_table", approval_requirement=req, ask_client=client)
    ex.notes.rule_id = "r-drop"
    ex.notes.policy_hash = POLICY_HASH
    return ex


def stage(recorder: Recorder, timeout_s: float = 5.0) -> UserConfirmationStage:
    return UserConfirmationStage(recorder, masked, UserConfirmationOptions(timeout_s=timeout_s))


async def refused(ex: Exchange, recorder: Recorder, upstream: Upstream, timeout_s: float = 5.0) -> DenialError:
    with pytest.raises(DenialError) as caught:
        async with asyncio.timeout(5):
            await stage(recorder, timeout_s)(ex, upstream)
    assert upstream.calls == 0
    return caught.value


@pytest.mark.parametrize("req", [None, requirement()])
async def test_passes_through_without_asking_when_rule_has_no_confirm_user(req: ApprovalRequirement | None) -> None:
    client, recorder, upstream = Client(accept()), Recorder(), Upstream()
    await stage(recorder)(exchange(client, req=req), upstream)
    assert (upstream.calls, client.asked, recorder.events) == (1, [], [])


async def test_call_runs_once_and_is_recorded_when_user_accepts() -> None:
    client, recorder, upstream = Client(accept()), Recorder(), Upstream()
    reply = await stage(recorder)(exchange(client), upstream)
    assert reply == {"result": {"content": [], "isError": False}} and upstream.calls == 1
    [(method, params)] = client.asked
    assert method == "elicitation/create"
    assert params["requestedSchema"] == REQUESTED_SCHEMA
    assert params["requestedSchema"]["properties"]["confirm"] == {"type": "boolean", "title": "Allow this call?"}
    message = params["message"]
    assert "'drop_table'" in message and "'db'" in message and '"password":"***"' in message
    assert "hunter2" not in message
    [event] = recorder.events
    assert event.kind.value == "approval" and event.outcome is not None and event.outcome.value == "approved"
    assert event.detail == {"step": STEP, "confirmation": "accepted", "client_action": "accept"}
    assert event.arguments == {"table": "users", "password": "***"}
    assert (event.subject, event.upstream, event.name, event.rule_id, event.jsonrpc_id) == \
        ("alice", "db", "drop_table", "r-drop", 7)


async def test_message_names_the_federated_name_when_client_wrote_one() -> None:
    client, recorder = Client(accept()), Recorder()
    ex = exchange(client)
    ex.shown_name = "db__drop_table"
    await stage(recorder)(ex, Upstream())
    assert "'db__drop_table'" in client.asked[0][1]["message"]


@pytest.mark.parametrize(("reply", "confirmation", "outcome", "client_action"), [
    ({"result": {"action": "decline"}}, "declined", "denied", "decline"),
    ({"result": {"action": "cancel"}}, "cancelled", "cancelled", "cancel"),
    (accept(False), "declined", "denied", "accept"),
    (accept("true"), "declined", "denied", "accept"),
    ({"result": {"action": "accept"}}, "declined", "denied", "accept"),
    ({"result": {"action": "accept", "content": {"confirm": 1}}}, "declined", "denied", "accept"),
    ({"error": {"code": -32601, "message": "Method not found"}}, "invalid", "denied", None),
    ({"result": {"action": "maybe"}}, "invalid", "denied", None),
])
async def test_call_refused_when_user_does_not_accept(reply: Reply, confirmation: str, outcome: str,
                                                      client_action: str | None) -> None:
    recorder, upstream = Recorder(), Upstream()
    ex = exchange(Client(reply))
    error = await refused(ex, recorder, upstream)
    assert error.code == codes.APPROVAL_DENIED and error.data == {"confirmation": confirmation}
    assert ex.notes.outcome == "denied"
    [event] = recorder.events
    assert event.outcome is not None and event.outcome.value == outcome
    assert (event.detail or {})["confirmation"] == confirmation
    assert (event.detail or {}).get("client_action") == client_action


async def test_call_refused_with_timeout_when_user_never_answers() -> None:
    recorder, upstream = Recorder(), Upstream()
    error = await refused(exchange(Client(None)), recorder, upstream, timeout_s=0.05)
    assert error.code == codes.APPROVAL_DENIED and error.data == {"confirmation": "timeout"}
    assert [(e.detail or {})["confirmation"] for e in recorder.events] == ["timeout"]


async def test_wait_is_bounded_by_rule_expiry_when_shorter_than_stage_timeout() -> None:
    recorder, upstream = Recorder(), Upstream()
    ex = exchange(Client(None), req=replace(CONFIRM_USER, expires_s=0.05))
    error = await refused(ex, recorder, upstream, timeout_s=60.0)
    assert error.data == {"confirmation": "timeout"}


async def test_call_refused_with_timeout_when_session_gives_up_on_client() -> None:
    recorder, upstream = Recorder(), Upstream()
    client = Client(raises=UpstreamError("the client did not answer in time", code=codes.UPSTREAM_TIMEOUT))
    error = await refused(exchange(client), recorder, upstream)
    assert error.data == {"confirmation": "timeout"}


@pytest.mark.parametrize(("capabilities", "version"), [
    (None, "2025-06-18"),
    ({}, "2025-06-18"),
    ({"sampling": {}}, "2025-06-18"),
    ({"elicitation": {"url": {}}}, "2025-11-25"),
    ({"elicitation": True}, "2025-06-18"),
    ({"elicitation": {}}, "2025-03-26"),
])
async def test_fails_closed_without_asking_when_client_cannot_elicit(capabilities: dict[str, Any] | None,
                                                                     version: str) -> None:
    client, recorder, upstream = Client(accept()), Recorder(), Upstream()
    error = await refused(exchange(client, capabilities=capabilities, version=version), recorder, upstream)
    assert error.code == codes.APPROVAL_DENIED and error.data == {"confirmation": "unsupported"}
    assert "elicitation" in error.public_message
    assert client.asked == []
    [event] = recorder.events
    assert (event.detail or {})["step"] == STEP and (event.detail or {})["confirmation"] == "unsupported"


async def test_fails_closed_when_exchange_has_no_session_to_ask() -> None:
    recorder, upstream = Recorder(), Upstream()
    error = await refused(exchange(None), recorder, upstream)
    assert error.data == {"confirmation": "unsupported"}


@pytest.mark.parametrize("capabilities", [{"elicitation": {"form": {}}}, {"elicitation": {"form": {}, "url": {}}}])
async def test_asks_when_client_declares_form_mode(capabilities: dict[str, Any]) -> None:
    client, upstream = Client(accept()), Upstream()
    await stage(Recorder())(exchange(client, capabilities=capabilities, version="2025-11-25"), upstream)
    assert len(client.asked) == 1 and upstream.calls == 1


async def test_call_does_not_run_when_confirmation_cannot_be_recorded() -> None:
    upstream = Upstream()

    async def broken(_event: Any) -> None:
        raise StorageError("disk full")

    with pytest.raises(StorageError):
        await UserConfirmationStage(broken, masked)(exchange(Client(accept())), upstream)
    assert upstream.calls == 0


async def test_withdrawal_recorded_and_cancellation_propagates_when_call_cancelled() -> None:
    client, recorder, upstream = Client(None), Recorder(), Upstream()
    task = asyncio.create_task(stage(recorder)(exchange(client), upstream))
    async with asyncio.timeout(5):
        await client.waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    assert upstream.calls == 0
    assert [(e.detail or {})["confirmation"] for e in recorder.events] == [Confirmation.WITHDRAWN.value]


# -- with the approval stage, as app.py orders them: user first, then approvers ----------------


def pipeline(recorder: Recorder) -> tuple[Pipeline, Any]:
    service = make_service(recorder=recorder)
    return Pipeline(outer=[], inner=[stage(recorder), ApprovalStage(service, masked)]), service


async def test_no_approval_requested_when_user_declines() -> None:
    recorder = Recorder()
    pipe, _service = pipeline(recorder)
    ex = exchange(Client({"result": {"action": "decline"}}))
    ex.deliver = Upstream()
    reply = await pipe(ex)
    assert reply is not None and reply["error"]["code"] == codes.APPROVAL_DENIED
    assert reply["error"]["data"]["confirmation"] == "declined"
    assert recorder.steps() == [STEP]


async def test_approvers_still_decide_after_user_accepts() -> None:
    recorder = Recorder()
    pipe, service = pipeline(recorder)
    upstream = Upstream()
    ex = exchange(Client(accept()))
    ex.deliver = upstream
    async with asyncio.timeout(5), asyncio.TaskGroup() as tasks:
        held = tasks.create_task(pipe(ex))
        requested = await recorder.wait_for(Step.REQUESTED)
        assert upstream.calls == 0
        await service.decide(requested.detail["approval_id"], BOB, Verdict.APPROVE)  # type: ignore[index]
    assert held.result() == {"result": {"content": [], "isError": False}} and upstream.calls == 1
    assert recorder.steps()[:2] == [STEP, Step.REQUESTED.value]

