"""The ``ApprovalStore`` protocol: what the approval service needs from a durable store.

Changes are compare-and-set on ``Approval.version`` so that two gateway instances deciding,
expiring or executing the same approval cannot both win. Implementations live in
storage/sqlite_approvals.py and storage/postgres_approvals.py; the service owns all logic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from bastion.approval.model import Approval, ApprovalState, CallKey, Grant

ChangeListener = Callable[[str], None]
"""Called (on the event loop, must not block) with the id of an approval changed elsewhere."""


class ApprovalStore(Protocol):
    """Durable approvals and time-box grants."""

    async def insert_approval(self, approval: Approval) -> None:
        """Store a new approval.

        Raises:
            StorageError: the id exists or the store cannot write.
        """

    async def fetch_approval(self, approval_id: str) -> Approval | None:
        """Return the approval or None."""

    async def list_approvals(self, state: ApprovalState | None = None, limit: int = 100) -> Sequence[Approval]:
        """Return approvals (of ``state`` when given), newest first, at most ``limit``."""

    async def replace_approval(self, approval: Approval) -> bool:
        """Store ``approval`` iff the stored row still has ``approval.version - 1``; return whether it did.

        Raises:
            StorageError: the store cannot write.
        """

    async def find_approval(self, key: CallKey, state: ApprovalState, now: float) -> Approval | None:
        """Return the oldest approval in ``state`` binding exactly ``key`` whose ``expires_at`` is after ``now``."""

    async def fetch_abandonable(self, holder: str, run_id: str) -> Sequence[Approval]:
        """Return pending held approvals of ``holder`` made by a run other than ``run_id``."""

    async def fetch_due(self, now: float, limit: int = 100) -> Sequence[Approval]:
        """Return pending approvals whose ``expires_at`` has passed."""

    async def insert_grant(self, grant: Grant) -> None:
        """Store a time-box grant.

        Raises:
            StorageError: the store cannot write.
        """

    async def find_grant(self, key: CallKey, now: float) -> Grant | None:
        """Return an unexpired grant covering ``key``'s caller, server, tool and policy hash (any arguments)."""

    async def publish_change(self, approval_id: str) -> None:
        """Tell other gateway instances that ``approval_id`` changed (a no-op for a single instance)."""

    async def start_listening(self, listener: ChangeListener) -> None:
        """Start delivering other instances' changes to ``listener`` until ``stop_listening``.

        Raises:
            StorageError: the store cannot subscribe.
        """

    async def stop_listening(self) -> None:
        """Stop delivering changes; safe to call when not listening."""
