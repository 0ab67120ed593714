"""One contract suite for every ApprovalStore: SQLite (file and memory) and PostgreSQL, plus cross-instance release."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.contract.backends import provision

from bastion.approval.model import Approval, ApprovalState, CallKey, Grant, Review, Verdict
from bastion.approval.service import ApprovalService, CallRequest
from bastion.approval.store import ApprovalStore
from bastion.audit.record import AuditEvent
from bastion.identity.principal import AuthMethod, Principal
from bastion.policy.model import ApprovalMode, ApprovalRequirement
from bastion.storage import open_store

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000.0
ALICE = Principal("alice", "https://idp", frozenset({"dev"}), AuthMethod.JWT)
BOB = Principal("bob", "https://idp", frozenset({"dba"}), AuthMethod.JWT)
KEY = CallKey("alice", "https://idp", "db", "drop_table", "a" * 64, "p" * 64)


@pytest.fixture
async def approvals(store_url: str) -> AsyncIterator[ApprovalStore]:
    opened: Any = await open_store(store_url)
    try:
        yield opened.approvals
    finally:
        await opened.aclose()


def approval(approval_id: str = "apr_1", **changes: Any) -> Approval:
    base = Approval(
        id=approval_id, subject=KEY.subject, issuer=KEY.issuer, server=KEY.server, tool=KEY.tool,
        arguments={"table": "users", "nested": [1, "***"]}, arguments_sha256=KEY.arguments_sha256, rule_id="r",
        policy_hash=KEY.policy_hash, caller_reason="why", approver_groups=("dba", "sre"), min_approvals=2,
        deny_min=1, created_at=NOW, expires_at=NOW + 3600, held=True, holder="gw-a", run_id="run-1", grant_s=60.0,
    )
    return dataclasses.replace(base, **changes)


async def test_approval_round_trips_every_field(approvals: ApprovalStore) -> None:
    review = Review("bob", "https://idp", Verdict.APPROVE, "ok", NOW + 1, "cli")
    stored = approval(reviews=(review,))
    await approvals.insert_approval(stored)
    assert await approvals.fetch_approval("apr_1") == stored
    assert await approvals.fetch_approval("apr_missing") is None


async def test_replace_applies_only_when_version_matches(approvals: ApprovalStore) -> None:
    await approvals.insert_approval(approval())
    review = Review("bob", "https://idp", Verdict.DENY, None, NOW + 2, "api")
    denied = approval(state=ApprovalState.DENIED, reviews=(review,), closed_at=NOW + 2, version=1)
    assert await approvals.replace_approval(denied) is True
    assert await approvals.replace_approval(dataclasses.replace(denied, state=ApprovalState.EXPIRED)) is False
    assert await approvals.fetch_approval("apr_1") == denied


async def test_find_approval_matches_exact_binding_state_and_live_only(approvals: ApprovalStore) -> None:
    await approvals.insert_approval(approval("apr_old", created_at=NOW, state=ApprovalState.APPROVED))
    await approvals.insert_approval(approval("apr_new", created_at=NOW + 5, state=ApprovalState.APPROVED))
    await approvals.insert_approval(approval("apr_other", arguments_sha256="b" * 64, state=ApprovalState.APPROVED))
    found = await approvals.find_approval(KEY, ApprovalState.APPROVED, NOW + 10)
    assert found is not None and found.id == "apr_old"
    assert await approvals.find_approval(KEY, ApprovalState.PENDING, NOW + 10) is None
    assert await approvals.find_approval(dataclasses.replace(KEY, policy_hash="q" * 64), ApprovalState.APPROVED,
                                         NOW + 10) is None
    assert await approvals.find_approval(KEY, ApprovalState.APPROVED, NOW + 3600) is None


async def test_list_filters_by_state_newest_first(approvals: ApprovalStore) -> None:
    await approvals.insert_approval(approval("apr_a", created_at=NOW))
    await approvals.insert_approval(approval("apr_b", created_at=NOW + 1, state=ApprovalState.DENIED))
    await approvals.insert_approval(approval("apr_c", created_at=NOW + 2))
    assert [a.id for a in await approvals.list_approvals()] == ["apr_c", "apr_b", "apr_a"]
    assert [a.id for a in await approvals.list_approvals(ApprovalState.PENDING, limit=1)] == ["apr_c"]


async def test_abandonable_and_due_select_the_right_rows(approvals: ApprovalStore) -> None:
    await approvals.insert_approval(approval("apr_prev", run_id="run-0"))
    await approvals.insert_approval(approval("apr_mine", run_id="run-1"))
    await approvals.insert_approval(approval("apr_unheld", run_id="run-0", held=False, expires_at=NOW + 1))
    await approvals.insert_approval(approval("apr_elsewhere", run_id="run-0", holder="gw-b"))
    assert [a.id for a in await approvals.fetch_abandonable("gw-a", "run-1")] == ["apr_prev"]
    assert [a.id for a in await approvals.fetch_due(NOW + 1)] == ["apr_unheld"]


async def test_grant_found_for_any_arguments_until_expiry(approvals: ApprovalStore) -> None:
    await approvals.insert_approval(approval())
    grant = Grant("grt_1", "apr_1", KEY.subject, KEY.issuer, KEY.server, KEY.tool, KEY.policy_hash, NOW, NOW + 60)
    await approvals.insert_grant(grant)
    assert await approvals.find_grant(dataclasses.replace(KEY, arguments_sha256="c" * 64), NOW + 1) == grant
    assert await approvals.find_grant(dataclasses.replace(KEY, tool="other"), NOW + 1) is None
    assert await approvals.find_grant(KEY, NOW + 60) is None


class Recorder:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.requested = asyncio.Event()

    async def __call__(self, event: AuditEvent) -> None:
        self.events.append(event)
        if event.detail and event.detail.get("step") == "requested":
            self.requested.set()


def request() -> CallRequest:
    req = ApprovalRequirement(("dba",), 1, 1, 3600.0, ApprovalMode.HOLD, None)
    return CallRequest(caller=ALICE, key=KEY, arguments={"table": "users"}, rule_id="r", requirement=req)


async def test_service_releases_held_call_and_refuses_replay(approvals: ApprovalStore) -> None:
    service = ApprovalService(approvals, Recorder(), recheck_s=60.0)
    async with asyncio.timeout(10), service.running():
        held = await service.request(request())
        async with asyncio.TaskGroup() as tasks:
            waiter = tasks.create_task(service.wait(held.id, held.expires_at))
            await service.decide(held.id, BOB, Verdict.APPROVE, "fine")
        assert waiter.result().state is ApprovalState.APPROVED
        await service.consume(held.id)
        assert await service.find_release(KEY) is None


async def test_concurrent_reviews_through_the_store_keep_both_votes(approvals: ApprovalStore) -> None:
    carol = Principal("carol", "https://idp", frozenset({"dba"}), AuthMethod.JWT)
    req = ApprovalRequirement(("dba",), 2, 1, 3600.0, ApprovalMode.HOLD, None)
    service = ApprovalService(approvals, Recorder())
    held = await service.request(dataclasses.replace(request(), requirement=req))
    async with asyncio.timeout(10):
        await asyncio.gather(service.decide(held.id, BOB, Verdict.APPROVE), service.decide(held.id, carol, Verdict.APPROVE))
    decided = await service.fetch(held.id)
    assert decided.state is ApprovalState.APPROVED and {r.subject for r in decided.reviews} == {"bob", "carol"}


@pytest.mark.postgres
async def test_decision_through_one_instance_releases_waiter_in_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with provision("postgres", tmp_path) as url:
        store_a: Any = await open_store(url)
        store_b: Any = await open_store(url)
        try:
            recorder = Recorder()
            # recheck_s far beyond the bound: only LISTEN/NOTIFY can release the waiter in time.
            gateway_a = ApprovalService(store_a.approvals, recorder, instance="gw-a", recheck_s=3600.0)
            gateway_b = ApprovalService(store_b.approvals, Recorder(), instance="gw-b", recheck_s=3600.0)
            waiting = asyncio.Event()
            fetch = store_a.approvals.fetch_approval

            async def fetch_then_signal(approval_id: str) -> Approval | None:
                found: Approval | None = await fetch(approval_id)
                waiting.set()  # the waiter goes straight from this read to its event, without yielding
                return found

            monkeypatch.setattr(store_a.approvals, "fetch_approval", fetch_then_signal)
            async with asyncio.timeout(10), gateway_a.running(), gateway_b.running():
                held = await gateway_a.request(request())
                async with asyncio.TaskGroup() as tasks:
                    waiter = tasks.create_task(gateway_a.wait(held.id, held.expires_at))
                    await waiting.wait()
                    await gateway_b.decide(held.id, BOB, Verdict.APPROVE, "via b")
                assert waiter.result().state is ApprovalState.APPROVED
                await gateway_a.consume(held.id)
                assert await gateway_b.find_release(KEY) is None
        finally:
            await store_a.aclose()
            await store_b.aclose()
