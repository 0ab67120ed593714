"""ApprovalStage: pass-through, hold then release once, deny, expire, withdraw on cancel, pending_error, grants."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bastion.approval.model import ApprovalState, Step, Verdict
from bastion.approval.service import ApprovalService
from bastion.errors import DenialError
from bastion.exchange import CallerContext, Direction, Exchange, Kind, Reply
from bastion.identity.principal import Principal
from bastion.jsonrpc import codes
from bastion.policy.model import ApprovalMode, ApprovalRequirement
from bastion.stages.approval import ApprovalStage, ApprovalStageOptions

from .support import ALICE, BOB, POLICY_HASH, Clock, Recorder, make_service, requirement

pytestmark = pytest.mark.anyio
ARGS = {"table": "users", "password": "hunter2"}


def exchange(arguments: dict[str, Any] = ARGS, *, req: ApprovalRequirement | None = None,
             caller: Principal = ALICE, reason: str | None = None) -> Exchange:
    params: dict[str, Any] = {"name": "drop_table", "arguments": arguments}
    if reason is not None:
        params["_meta"] = {"bastion/reason": reason}

    async def deliver(_ex: Exchange) -> Reply | None:
        raise AssertionError("the stage must call call_next, not deliver")

    ex = Exchange(direction=Direction.TO_UPSTREAM, kind=Kind.REQUEST, method="tools/call", params=params, id=1,
                  caller=CallerContext(principal=caller, session_id="s-1", endpoint="/mcp"), upstream="db",
                  deliver=deliver, name="drop_table", approval_requirement=req)
    ex.notes.rule_id = "r-drop"
    ex.notes.policy_hash = POLICY_HASH
    return ex


class Upstream:
    """Counts calls that reached the rest of the pipeline."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, _ex: Exchange) -> Reply | None:
        self.calls += 1
        return {"result": {"content": [], "isError": False}}


def masked(arguments: dict[str, Any]) -> Any:
    return {k: ("***" if k == "password" else v) for k, v in arguments.items()}


def stage_for(service: ApprovalService, **grants: float) -> ApprovalStage:
    return ApprovalStage(service, masked, ApprovalStageOptions(grant_s_by_rule=grants))


async def test_passes_through_when_no_requirement() -> None:
    upstream = Upstream()
    recorder = Recorder()
    await stage_for(make_service(recorder=recorder))(exchange(), upstream)
    assert upstream.calls == 1 and recorder.events == []


async def test_held_call_released_once_when_approved() -> None:
    recorder = Recorder()
    service = make_service(recorder=recorder)
    upstream = Upstream()
    progress: list[str] = []
    ex = exchange(req=requirement(), reason="rotate staging")

    async def report(message: str) -> None:
        progress.append(message)

    ex.progress = report
    async with asyncio.timeout(5), asyncio.TaskGroup() as tasks:
        held = tasks.create_task(stage_for(service)(ex, upstream))
        requested = await recorder.wait_for(Step.REQUESTED)
        assert upstream.calls == 0
        approval_id = requested.detail["approval_id"] if requested.detail else ""
        await service.decide(approval_id, BOB, Verdict.APPROVE)
    assert held.result() == {"result": {"content": [], "isError": False}}
    assert upstream.calls == 1
    assert progress == [f"waiting for approval {approval_id} (approvers: dba)"]
    assert ex.notes.approval_id == approval_id
    approval = await service.fetch(approval_id)
    assert approval.state is ApprovalState.EXECUTED
    assert approval.arguments == {"table": "users", "password": "***"}
    assert approval.caller_reason == "rotate staging"
    assert recorder.steps() == ["requested", "reviewed", "executed"]
    assert await service.find_release(approval.key) is None  # the identical call cannot replay it


async def test_held_call_fails_denied_when_rejected() -> None:
    recorder = Recorder()
    service = make_service(recorder=recorder)
    upstream = Upstream()
    async with asyncio.timeout(5):
        held = asyncio.ensure_future(stage_for(service)(exchange(req=requirement()), upstream))
        requested = await recorder.wait_for(Step.REQUESTED)
        assert requested.detail is not None
        await service.decide(requested.detail["approval_id"], BOB, Verdict.DENY, "not today")
        with pytest.raises(DenialError) as caught:
            await held
    assert caught.value.code == codes.APPROVAL_DENIED
    assert caught.value.data == {"approval_id": requested.detail["approval_id"], "reason": "not today"}
    assert upstream.calls == 0


async def test_held_call_fails_expired_when_deadline_passes() -> None:
    clock = Clock()
    recorder = Recorder()
    service = make_service(clock=clock, recorder=recorder)
    upstream = Upstream()
    async with asyncio.timeout(5):
        held = asyncio.ensure_future(stage_for(service)(exchange(req=requirement(expires_s=60)), upstream))
        requested = await recorder.wait_for(Step.REQUESTED)
        assert requested.detail is not None
        clock.now += 60
        service.on_changed(requested.detail["approval_id"])
        with pytest.raises(DenialError) as caught:
            await held
    assert caught.value.code == codes.APPROVAL_EXPIRED
    assert upstream.calls == 0
    assert recorder.steps() == ["requested", "expired"]


async def test_cancelled_call_withdraws_its_approval() -> None:
    recorder = Recorder()
    service = make_service(recorder=recorder)
    upstream = Upstream()
    async with asyncio.timeout(5):
        held = asyncio.ensure_future(stage_for(service)(exchange(req=requirement()), upstream))
        requested = await recorder.wait_for(Step.REQUESTED)
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
        await recorder.wait_for(Step.WITHDRAWN)
    assert requested.detail is not None
    assert (await service.fetch(requested.detail["approval_id"])).state is ApprovalState.WITHDRAWN
    assert upstream.calls == 0


async def test_pending_error_answers_at_once_then_identical_call_succeeds_after_approval() -> None:
    service = make_service()
    upstream = Upstream()
    stage = stage_for(service)
    req = requirement(mode=ApprovalMode.PENDING_ERROR)
    with pytest.raises(DenialError) as first:
        await stage(exchange(req=req), upstream)
    assert first.value.code == codes.APPROVAL_PENDING
    approval_id = first.value.data["approval_id"]
    with pytest.raises(DenialError) as retried:
        await stage(exchange(req=req), upstream)
    assert retried.value.data == {"approval_id": approval_id}  # the retry reuses the pending approval
    await service.decide(approval_id, BOB, Verdict.APPROVE)
    with pytest.raises(DenialError) as changed:
        await stage(exchange({"table": "orders"}, req=req), upstream)
    assert changed.value.code == codes.APPROVAL_PENDING and changed.value.data["approval_id"] != approval_id
    await stage(exchange(req=req), upstream)
    assert upstream.calls == 1
    with pytest.raises(DenialError) as replay:
        await stage(exchange(req=req), upstream)
    assert replay.value.code == codes.APPROVAL_PENDING and replay.value.data["approval_id"] != approval_id
    assert upstream.calls == 1


async def test_grant_rule_lets_later_calls_through_with_grant_id() -> None:
    recorder = Recorder()
    service = make_service(recorder=recorder)
    upstream = Upstream()
    stage = stage_for(service, **{"r-drop": 900.0})
    async with asyncio.timeout(5):
        held = asyncio.ensure_future(stage(exchange(req=requirement()), upstream))
        requested = await recorder.wait_for(Step.REQUESTED)
        assert requested.detail is not None
        await service.decide(requested.detail["approval_id"], BOB, Verdict.APPROVE)
        await held
    later = exchange({"table": "sessions"}, req=requirement())
    await stage(later, upstream)
    assert upstream.calls == 2
    used = await recorder.wait_for(Step.GRANT_USED)
    assert used.detail is not None and used.detail["grant_id"].startswith("grt_")
    assert later.notes.approval_id == requested.detail["approval_id"]
