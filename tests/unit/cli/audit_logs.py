"""The audit log the CLI tests read: request/response pairs written through ``AuditLog``, one clock tick per record."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bastion.audit.keys import SigningKey
from bastion.audit.log import AuditLog, CheckpointPolicy
from bastion.audit.record import AuditEvent, EventKind, Outcome
from bastion.storage import open_store

ORIGIN = "gw.test/log"
READER = f"{ORIGIN}/cli"
"""Where the reading commands record themselves here (signed with KEY, so the ring covers it)."""
KEY = SigningKey(ORIGIN, bytes(range(32)))
EVERY = CheckpointPolicy(every_records=4, every_s=3600, heartbeat_s=3600)
T0 = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def ticking_clock(start: datetime) -> Callable[[], datetime]:
    """A clock that moves one second per reading, so every record gets its own time."""
    ticks = itertools.count()
    return lambda: start + timedelta(seconds=next(ticks))


async def append_interactions(url: str, count: int, *, start: int = 0, subject: str | None = None) -> None:
    """Append ``count`` request/response pairs (alternating alice/bob, search/fetch) through AuditLog.

    Pair ``i`` starts at minute ``start``; the clock ticks once per record and once per checkpoint,
    so 5 pairs from 0 put seq 0..9 at 12:00:00, :02, :03, :04, :05, :07, :08, :09, :10, :12 (checkpoints
    at tree sizes 1, 5, 9 and, on close, 10).
    Every third response (``i % 3 == 2``) is denied.
    """
    store = await open_store(url)
    clock = ticking_clock(T0 + timedelta(minutes=start))
    log = AuditLog(store, origin=ORIGIN, signing_key=KEY, checkpoints=EVERY, clock=clock)
    await log.start()
    try:
        for i in range(start, start + count):
            who = subject or ("alice" if i % 2 == 0 else "bob")
            tool = "search" if i % 2 == 0 else "fetch"
            request = await log.append(
                AuditEvent(
                    kind=EventKind.REQUEST,
                    subject=who,
                    method="tools/call",
                    name=tool,
                    session_id=f"s-{i % 2}",
                    arguments={"q": i},
                    jsonrpc_id=i,
                )
            )
            denied = i % 3 == 2
            await log.append(
                AuditEvent(
                    kind=EventKind.RESPONSE,
                    outcome=Outcome.DENIED if denied else Outcome.OK,
                    subject=who,
                    method="tools/call",
                    name=tool,
                    session_id=f"s-{i % 2}",
                    request_seq=request.seq,
                    rule_id="deny-every-third" if denied else "allow-all",
                    action="deny" if denied else "allow",
                    result=None if denied else {"content": [{"type": "text", "text": f"r{i}"}]},
                )
            )
    finally:
        await log.aclose()
        await store.aclose()
