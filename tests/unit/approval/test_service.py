"""ApprovalService: binding, exactly-once execution, waiting, expiry, abandonment, grants and audit."""

from __future__ import annotations

import asyncio

import pytest

from bastion.approval.model import ApprovalState, ReviewRefusedError, TransitionError, Verdict
from bastion.approval.service import ApprovalNotFoundError, ApprovalService
from bastion.errors import StorageError

from .memory_store import MemoryApprovalStore
from .support import ALICE, BOB, CAROL, MALLORY, Clock, Recorder, call, key_for, make_service, requirement

pytestmark = pytest.mark.anyio
ARGS = {"table": "users"}


async def test_approved_call_released_once_when_identical() -> None:
    service = make_service()
    approval = await service.request(call(ARGS), held=False)
    await service.decide(approval.id, BOB, Verdict.APPROVE, "looks fine")
    release = await service.find_release(key_for(ARGS))
    assert release is not None and release.approval_id == approval.id and release.grant_id is None
    assert (await service.fetch(approval.id)).state is ApprovalState.EXECUTED
    assert await service.find_release(key_for(ARGS)) is None  # no replay


async def test_approval_not_usable_when_arguments_tool_or_caller_differ() -> None:
    service = make_service()
    approval = await service.request(call(ARGS), held=False)
    await service.decide(approval.id, BOB, Verdict.APPROVE)
    assert await service.find_release(key_for({"table": "orders"})) is None
    assert await service.find_release(key_for(ARGS, tool="truncate")) is None
    assert await service.find_release(key_for(ARGS, caller=MALLORY)) is None
    assert (await service.fetch(approval.id)).state is ApprovalState.APPROVED


async def test_consume_refused_when_already_executed() -> None:
    service = make_service()
    approval = await service.request(call(ARGS))
    await service.decide(approval.id, BOB, Verdict.APPROVE)
    await service.consume(approval.id)
    with pytest.raises(TransitionError):
        await service.consume(approval.id)


async def test_decide_refused_when_self_or_non_approver() -> None:
    service = make_service()
    approval = await service.request(call(ARGS, caller=BOB))
    with pytest.raises(ReviewRefusedError, match="own call"):
        await service.decide(approval.id, BOB, Verdict.APPROVE)
    with pytest.raises(ReviewRefusedError, match="approver group"):
        await service.decide(approval.id, MALLORY, Verdict.APPROVE)
    assert (await service.fetch(approval.id)).state is ApprovalState.PENDING


async def test_decide_raises_not_found_when_id_unknown() -> None:
    with pytest.raises(ApprovalNotFoundError):
        await make_service().decide("apr_missing", BOB, Verdict.APPROVE)


async def test_waiter_released_when_second_of_two_approves() -> None:
    service = make_service()
    approval = await service.request(call(ARGS, req=requirement(min_approvals=2)))
    async with asyncio.timeout(5), asyncio.TaskGroup() as tasks:
        waiter = tasks.create_task(service.wait(approval.id, approval.expires_at))
        await service.decide(approval.id, BOB, Verdict.APPROVE)
        await asyncio.sleep(0)  # let the waiter observe the first vote (still pending)
        assert not waiter.done()
        await service.decide(approval.id, CAROL, Verdict.APPROVE)
    assert waiter.result().state is ApprovalState.APPROVED


async def test_wait_expires_when_clock_passes_deadline() -> None:
    clock = Clock()
    recorder = Recorder()
    service = make_service(clock=clock, recorder=recorder)
    approval = await service.request(call(ARGS))
    async with asyncio.timeout(5), asyncio.TaskGroup() as tasks:
        waiter = tasks.create_task(service.wait(approval.id, approval.expires_at))
        await asyncio.sleep(0)
        clock.now = approval.expires_at
        service.on_changed(approval.id)
    assert waiter.result().state is ApprovalState.EXPIRED
    assert recorder.steps() == ["requested", "expired"]
    with pytest.raises(ReviewRefusedError):
        await service.decide(approval.id, BOB, Verdict.APPROVE)


async def test_withdraw_closes_pending_and_is_recorded() -> None:
    recorder = Recorder()
    service = make_service(recorder=recorder)
    approval = await service.request(call(ARGS))
    assert (await service.withdraw(approval.id)).state is ApprovalState.WITHDRAWN
    assert recorder.steps() == ["requested", "withdrawn"]


async def test_withdraw_leaves_decided_approval_alone() -> None:
    service = make_service()
    approval = await service.request(call(ARGS))
    await service.decide(approval.id, BOB, Verdict.DENY, "no")
    assert (await service.withdraw(approval.id)).state is ApprovalState.DENIED


async def test_restart_abandons_held_calls_of_previous_run_only() -> None:
    store = MemoryApprovalStore()
    recorder = Recorder()
    first = make_service(store, instance="gw-a")
    held = await first.request(call(ARGS))
    not_held = await first.request(call({"table": "x"}), held=False)
    other_instance = await make_service(store, instance="gw-b").request(call({"table": "y"}))
    restarted = make_service(store, instance="gw-a", recorder=recorder)
    async with restarted.running():
        assert (await restarted.fetch(held.id)).state is ApprovalState.ABANDONED
        assert (await restarted.fetch(not_held.id)).state is ApprovalState.PENDING
        assert (await restarted.fetch(other_instance.id)).state is ApprovalState.PENDING
        with pytest.raises(ReviewRefusedError):
            await restarted.decide(held.id, BOB, Verdict.APPROVE)
        assert await restarted.find_release(key_for(ARGS)) is None
    assert recorder.steps() == ["abandoned"]


async def test_grant_covers_other_arguments_until_it_expires() -> None:
    clock = Clock()
    recorder = Recorder()
    service = make_service(clock=clock, recorder=recorder)
    approval = await service.request(call(ARGS, grant_s=600))
    await service.decide(approval.id, BOB, Verdict.APPROVE)
    await service.consume(approval.id)
    release = await service.find_release(key_for({"table": "orders"}))
    assert release is not None and release.grant_id is not None and release.approval_id == approval.id
    assert recorder.events[-1].detail is not None and recorder.events[-1].detail["grant_id"] == release.grant_id
    assert await service.find_release(key_for(ARGS, tool="truncate")) is None
    clock.now += 600
    assert await service.find_release(key_for({"table": "orders"})) is None


async def test_every_step_recorded_with_reviewer_and_reason() -> None:
    recorder = Recorder()
    service = make_service(recorder=recorder)
    approval = await service.request(call(ARGS, req=requirement(min_approvals=2)))
    await service.decide(approval.id, BOB, Verdict.APPROVE, "ticket 42", via="cli")
    await service.decide(approval.id, CAROL, Verdict.APPROVE)
    await service.consume(approval.id)
    assert recorder.steps() == ["requested", "reviewed", "reviewed", "executed"]
    review = recorder.events[1]
    assert review.subject == "bob" and review.detail is not None
    assert (review.detail["verdict"], review.detail["reason"], review.detail["via"]) == ("approve", "ticket 42", "cli")
    assert review.detail["caller"] == ALICE.subject
    assert recorder.events[0].detail is not None and recorder.events[0].detail["caller_reason"] == "cleanup"


async def test_list_expires_due_pending_error_approvals() -> None:
    clock = Clock()
    service = make_service(clock=clock)
    approval = await service.request(call(ARGS), held=False)
    clock.now = approval.expires_at + 1
    listed = await service.list_approvals()
    assert [(a.id, a.state) for a in listed] == [(approval.id, ApprovalState.EXPIRED)]


async def test_audit_failure_fails_the_request_closed() -> None:
    async def broken(_event: object) -> None:
        raise StorageError("disk full")

    service = ApprovalService(MemoryApprovalStore(), broken, clock=Clock())
    with pytest.raises(StorageError):
        await service.request(call(ARGS))


async def test_concurrent_decisions_do_not_lose_votes() -> None:
    service = make_service()
    approval = await service.request(call(ARGS, req=requirement(min_approvals=2)))
    async with asyncio.timeout(5):
        await asyncio.gather(service.decide(approval.id, BOB, Verdict.APPROVE),
                             service.decide(approval.id, CAROL, Verdict.APPROVE))
    decided = await service.fetch(approval.id)
    assert decided.state is ApprovalState.APPROVED and len(decided.reviews) == 2
