"""``ApprovalService``: request, wait, decide, close and execute approvals over an ``ApprovalStore``.

Owns in-process waiters by approval id, the cross-instance wake-ups the store delivers, the
notification tasks (inside the service's own TaskGroup, see ``running``) and every audit record of
an approval's life. Transitions are model.py's; rows and NOTIFY are the store's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bastion.approval import model
from bastion.approval.events import Record, approval_event, review_event
from bastion.approval.model import Approval, ApprovalState, CallKey, Grant, Review, Step, TransitionError, Verdict
from bastion.approval.notify import Notifier
from bastion.approval.store import ApprovalStore
from bastion.errors import BastionError, StorageError
from bastion.identity.principal import Principal
from bastion.policy.model import ApprovalRequirement

log = logging.getLogger(__name__)

MAX_CAS_ATTEMPTS = 8
RECHECK_S = 5.0
SWEEP_INTERVAL_S = 30.0


class ApprovalNotFoundError(BastionError):
    """Raised when an approval id is unknown."""


@dataclass(frozen=True, slots=True)
class Release:
    """Why a call may run now: an executed approval, or a time-box grant (then ``grant_id`` is set)."""

    approval_id: str
    grant_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallRequest:
    """What the approval stage knows about a call that needs approval."""

    caller: Principal
    key: CallKey
    arguments: Any
    """The arguments masked for display; the binding uses ``key.arguments_sha256``."""
    rule_id: str | None
    requirement: ApprovalRequirement
    caller_reason: str | None = None
    grant_s: float | None = None


class ApprovalService:
    """Approvals of one gateway run; use ``async with service.running():`` around serving.

    ``instance`` names this gateway (stable across restarts); ``default_approver_groups`` apply to
    rules naming no groups; ``clock`` returns POSIX seconds; ``recheck_s`` bounds how long a waiter
    trusts notifications before re-reading the store.
    """

    def __init__(
        self,
        store: ApprovalStore,
        record: Record,
        *,
        instance: str = "default",
        default_approver_groups: frozenset[str] = frozenset(),
        notifiers: Sequence[Notifier] = (),
        clock: Callable[[], float] = time.time,
        recheck_s: float = RECHECK_S,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        self.store = store
        self._record = record
        self.instance = instance
        self.run_id = uuid.uuid4().hex
        self._default_groups = default_approver_groups
        self._notifiers = tuple(notifiers)
        self._clock = clock
        self._recheck_s = recheck_s
        self._sweep_interval_s = sweep_interval_s
        self._wakeups: dict[str, asyncio.Event] = {}
        self._tasks: asyncio.TaskGroup | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ApprovalService]:
        """Abandon the previous run's held calls, listen for other instances, own notification tasks."""
        await self.abandon_pending_on_start()
        await self.store.start_listening(self.on_changed)
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                sweeper = tasks.create_task(self._sweep_forever(), name="bastion-approval-sweeper")
                try:
                    yield self
                finally:
                    self._tasks = None
                    sweeper.cancel()
        finally:
            await self.store.stop_listening()

    async def abandon_pending_on_start(self) -> list[str]:
        """Close every call a previous run of this instance held as abandoned; return their ids.

        Raises:
            StorageError: the store cannot be read or written.
        """
        abandoned = []
        for stale in await self.store.fetch_abandonable(self.instance, self.run_id):
            closed = await self._close(stale.id, ApprovalState.ABANDONED)
            if closed.state is ApprovalState.ABANDONED:
                abandoned.append(closed.id)
        return abandoned

    def on_changed(self, approval_id: str) -> None:
        """Wake local waiters of ``approval_id``; the store's listener calls this for other instances."""
        event = self._wakeups.get(approval_id)
        if event is not None:
            event.set()

    # -- the caller's side -----------------------------------------------------------------------

    async def find_release(self, key: CallKey) -> Release | None:
        """Execute an approved approval binding ``key``, or use a live grant; None when neither exists.

        Raises:
            StorageError: the store or audit log cannot write (the call must not run).
        """
        for _ in range(MAX_CAS_ATTEMPTS):
            found = await self.store.find_approval(key, ApprovalState.APPROVED, self._clock())
            if found is None:
                break
            with contextlib.suppress(TransitionError):
                return Release(approval_id=(await self.consume(found.id)).id)
        grant = await self.store.find_grant(key, self._clock())
        if grant is None:
            return None
        approval = await self.fetch(grant.approval_id)
        await self._record(approval_event(approval, Step.GRANT_USED, grant_id=grant.id,
                                          grant_expires_at=grant.expires_at, arguments_sha256=key.arguments_sha256))
        return Release(approval_id=grant.approval_id, grant_id=grant.id)

    async def find_pending(self, key: CallKey) -> Approval | None:
        """Return a live pending approval binding exactly ``key`` (so a retried call reuses it)."""
        return await self.store.find_approval(key, ApprovalState.PENDING, self._clock())

    async def request(self, call: CallRequest, *, held: bool = True) -> Approval:
        """Persist a pending approval for ``call``, record it and start its notifications.

        Raises:
            StorageError: it cannot be stored or recorded (the call must not run).
            BastionError: notifiers are configured but the service is not ``running``.
        """
        if self._notifiers and self._tasks is None:
            raise BastionError("approval service is not running; notifications cannot be sent")
        now, req, key = self._clock(), call.requirement, call.key
        approval = Approval(
            id=f"apr_{uuid.uuid4().hex}", subject=key.subject, issuer=key.issuer, server=key.server, tool=key.tool,
            arguments=call.arguments, arguments_sha256=key.arguments_sha256, rule_id=call.rule_id,
            policy_hash=key.policy_hash, caller_reason=call.caller_reason, approver_groups=tuple(req.groups),
            min_approvals=req.min_approvals, deny_min=req.deny_min, created_at=now, expires_at=now + req.expires_s,
            held=held, holder=self.instance, run_id=self.run_id, grant_s=call.grant_s,
        )
        await self.store.insert_approval(approval)
        await self._record(approval_event(approval, Step.REQUESTED, caller_reason=call.caller_reason,
                                          expires_at=approval.expires_at, approvers=list(approval.approver_groups)))
        if self._tasks is not None:
            for notifier in self._notifiers:
                self._tasks.create_task(self._notify(notifier, approval), name=f"bastion-notify-{approval.id}")
        return approval

    async def wait(self, approval_id: str, deadline: float) -> Approval:
        """Wait until the approval leaves PENDING or ``deadline`` (POSIX s) passes, then expire it.

        Returns the approval in its final (or APPROVED) state.
        Raises:
            ApprovalNotFoundError: unknown id.  StorageError: the store fails.
        """
        event = self._wakeups.setdefault(approval_id, asyncio.Event())
        try:
            while True:
                event.clear()
                current = await self.fetch(approval_id)
                if current.state is not ApprovalState.PENDING:
                    return current
                remaining = min(deadline, current.expires_at) - self._clock()
                if remaining <= 0:
                    return await self.expire(approval_id)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, self._recheck_s)):
                        await event.wait()
        finally:
            self._wakeups.pop(approval_id, None)

    async def consume(self, approval_id: str) -> Approval:
        """Mark the approved approval executed (exactly once, across instances) and record it.

        Raises:
            TransitionError: it is not approved, already executed or expired.
        """
        executed = await self._update(approval_id, lambda a: model.execute(a, self._clock()))
        await self._record(approval_event(executed, Step.EXECUTED))
        return executed

    async def withdraw(self, approval_id: str) -> Approval:
        """Close a pending approval because its caller cancelled or went away."""
        return await self._close(approval_id, ApprovalState.WITHDRAWN)

    async def expire(self, approval_id: str) -> Approval:
        """Close a pending approval whose deadline passed; returns it as stored."""
        return await self._close(approval_id, ApprovalState.EXPIRED)

    # -- the approver's side ---------------------------------------------------------------------

    async def decide(
        self, approval_id: str, reviewer: Principal, verdict: Verdict, reason: str | None = None, *, via: str = "api"
    ) -> Approval:
        """Add ``reviewer``'s vote and apply the thresholds; record the review.

        Raises:
            ApprovalNotFoundError: unknown id.
            ReviewRefusedError: own call, not an approver, already voted, not pending or expired.
        """
        def vote(current: Approval) -> Approval:
            model.may_review(current, reviewer, self._default_groups)
            now = self._clock()
            review = Review(reviewer.subject, reviewer.issuer, verdict, reason, now, via)
            return model.apply_review(current, review, now)

        async def record_first(decided: Approval) -> None:
            # The review is durable before it can release anything (a waiter here or in another
            # instance acts on the stored state). A lost compare-and-set race records the vote
            # again on the retry: the log then shows the attempt that did not apply, never the reverse.
            await self._record(review_event(decided, decided.reviews[-1]))

        decided = await self._update(approval_id, vote, before_write=record_first)
        if decided.state is ApprovalState.APPROVED and decided.grant_s is not None:
            start = decided.closed_at if decided.closed_at is not None else self._clock()
            grant = Grant(f"grt_{uuid.uuid4().hex}", decided.id, decided.subject, decided.issuer, decided.server,
                          decided.tool, decided.policy_hash, start, start + decided.grant_s)
            await self.store.insert_grant(grant)
        return decided

    async def fetch(self, approval_id: str) -> Approval:
        """Return the stored approval.

        Raises:
            ApprovalNotFoundError: unknown id.
        """
        found = await self.store.fetch_approval(approval_id)
        if found is None:
            raise ApprovalNotFoundError(f"no approval {approval_id!r}")
        return found

    async def list_approvals(self, state: ApprovalState | None = None, limit: int = 100) -> Sequence[Approval]:
        """Expire what is due, then return approvals (of ``state``), newest first."""
        await self.expire_due()
        return await self.store.list_approvals(state, limit)

    async def expire_due(self) -> list[str]:
        """Expire pending approvals past their deadline (pending_error ones have no waiter to do it)."""
        return [a.id for a in [await self.expire(d.id) for d in await self.store.fetch_due(self._clock())]
                if a.state is ApprovalState.EXPIRED]

    # -- internals -------------------------------------------------------------------------------

    async def _update(
        self,
        approval_id: str,
        change: Callable[[Approval], Approval],
        before_write: Callable[[Approval], Awaitable[None]] | None = None,
    ) -> Approval:
        """Apply ``change`` with compare-and-set on ``version``, retrying when another writer won;
        ``before_write`` runs (and may refuse by raising) before the change is stored."""
        for _ in range(MAX_CAS_ATTEMPTS):
            current = await self.fetch(approval_id)
            changed = dataclasses.replace(change(current), version=current.version + 1)
            if before_write is not None:
                await before_write(changed)
            if await self.store.replace_approval(changed):
                self.on_changed(approval_id)
                await self.store.publish_change(approval_id)
                return changed
        raise StorageError(f"approval {approval_id} kept changing under us; giving up")

    async def _close(self, approval_id: str, state: ApprovalState) -> Approval:
        try:
            closed = await self._update(approval_id, lambda a: model.close(a, state, self._clock()))
        except TransitionError:
            return await self.fetch(approval_id)
        await self._record(approval_event(closed, Step(state.value)))
        return closed

    async def _notify(self, notifier: Notifier, approval: Approval) -> None:
        """Send one notice (the notifier bounds its own retries) and record whether it arrived."""
        try:
            await notifier.send_notice(approval)
            delivered = True
        except Exception:  # a failed notification must not stop the service's other tasks
            log.exception("approval %s: notifier %s failed", approval.id, notifier.name)
            delivered = False
        try:
            await self._record(approval_event(approval, Step.NOTIFIED, channel=notifier.name, delivered=delivered))
        except BastionError:
            log.exception("approval %s: cannot record notification", approval.id)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            try:
                await self.expire_due()
            except BastionError:
                log.exception("approval expiry sweep failed")
