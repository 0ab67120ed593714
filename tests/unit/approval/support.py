"""Builders shared by the approval unit tests: principals, requirements, a clock and a recorder."""

from __future__ import annotations

import asyncio
from typing import Any

from bastion.approval.model import CallKey, Step
from bastion.approval.service import ApprovalService, CallRequest
from bastion.audit.record import AuditEvent, compute_arguments_sha256
from bastion.identity.principal import AuthMethod, Principal
from bastion.policy.model import ApprovalMode, ApprovalRequirement

from .memory_store import MemoryApprovalStore

ISSUER = "https://idp.example"
POLICY_HASH = "p" * 64


def person(subject: str, *groups: str) -> Principal:
    return Principal(subject=subject, issuer=ISSUER, groups=frozenset(groups), method=AuthMethod.JWT)


ALICE = person("alice", "dev")
BOB = person("bob", "dba")
CAROL = person("carol", "dba")
DAVE = person("dave", "dba")
MALLORY = person("mallory", "dev")


def requirement(*, groups: tuple[str, ...] = ("dba",), min_approvals: int = 1, deny_min: int = 1,
                expires_s: float = 3600.0, mode: ApprovalMode = ApprovalMode.HOLD) -> ApprovalRequirement:
    return ApprovalRequirement(groups=groups, min_approvals=min_approvals, deny_min=deny_min,
                               expires_s=expires_s, mode=mode, confirm=None)


def key_for(arguments: dict[str, Any], *, caller: Principal = ALICE, tool: str = "drop_table") -> CallKey:
    return CallKey(caller.subject, caller.issuer, "db", tool, compute_arguments_sha256(arguments), POLICY_HASH)


def call(arguments: dict[str, Any], *, req: ApprovalRequirement | None = None, grant_s: float | None = None,
         caller: Principal = ALICE) -> CallRequest:
    return CallRequest(caller=caller, key=key_for(arguments, caller=caller), arguments=arguments, rule_id="r-drop",
                       requirement=req or requirement(), caller_reason="cleanup", grant_s=grant_s)


class Clock:
    """A settable POSIX clock."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Collects audit events and lets tests wait for a given approval step."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self._changed = asyncio.Event()

    async def __call__(self, event: AuditEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def steps(self) -> list[str]:
        return [str((e.detail or {})["step"]) for e in self.events]

    async def wait_for(self, step: Step, count: int = 1) -> AuditEvent:
        async with asyncio.timeout(5):
            while True:
                matching = [e for e in self.events if (e.detail or {}).get("step") == step.value]
                if len(matching) >= count:
                    return matching[count - 1]
                self._changed.clear()
                await self._changed.wait()


def make_service(store: MemoryApprovalStore | None = None, *, clock: Clock | None = None,
                 recorder: Recorder | None = None, **kwargs: Any) -> ApprovalService:
    return ApprovalService(store or MemoryApprovalStore(), recorder or Recorder(), clock=clock or Clock(),
                           recheck_s=60.0, **kwargs)
