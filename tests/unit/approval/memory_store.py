"""In-memory ``ApprovalStore``: a test double only; real stores live in the storage layer."""

from __future__ import annotations

from collections.abc import Sequence

from bastion.approval.model import Approval, ApprovalState, CallKey, Grant
from bastion.approval.store import ChangeListener
from bastion.errors import StorageError


class MemoryApprovalStore:
    """Keeps approvals and grants in dicts; counts published changes."""

    def __init__(self) -> None:
        self.approvals: dict[str, Approval] = {}
        self.grants: dict[str, Grant] = {}
        self.published: list[str] = []
        self.listener: ChangeListener | None = None

    async def insert_approval(self, approval: Approval) -> None:
        if approval.id in self.approvals:
            raise StorageError("duplicate approval id")
        self.approvals[approval.id] = approval

    async def fetch_approval(self, approval_id: str) -> Approval | None:
        return self.approvals.get(approval_id)

    async def list_approvals(self, state: ApprovalState | None = None, limit: int = 100) -> Sequence[Approval]:
        found = [a for a in self.approvals.values() if state is None or a.state is state]
        return sorted(found, key=lambda a: a.created_at, reverse=True)[:limit]

    async def replace_approval(self, approval: Approval) -> bool:
        stored = self.approvals.get(approval.id)
        if stored is None or stored.version != approval.version - 1:
            return False
        self.approvals[approval.id] = approval
        return True

    async def find_approval(self, key: CallKey, state: ApprovalState, now: float) -> Approval | None:
        found = [a for a in self.approvals.values() if a.key == key and a.state is state and a.expires_at > now]
        return min(found, key=lambda a: a.created_at, default=None)

    async def fetch_abandonable(self, holder: str, run_id: str) -> Sequence[Approval]:
        return [a for a in self.approvals.values()
                if a.state is ApprovalState.PENDING and a.held and a.holder == holder and a.run_id != run_id]

    async def fetch_due(self, now: float, limit: int = 100) -> Sequence[Approval]:
        return [a for a in self.approvals.values() if a.state is ApprovalState.PENDING and a.expires_at <= now][:limit]

    async def insert_grant(self, grant: Grant) -> None:
        self.grants[grant.id] = grant

    async def find_grant(self, key: CallKey, now: float) -> Grant | None:
        return next((g for g in self.grants.values() if g.covers(key, now)), None)

    async def publish_change(self, approval_id: str) -> None:
        self.published.append(approval_id)

    async def start_listening(self, listener: ChangeListener) -> None:
        self.listener = listener

    async def stop_listening(self) -> None:
        self.listener = None
