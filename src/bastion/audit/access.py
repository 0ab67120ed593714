"""Recording a read or an export of the log by a process other than the gateway (the CLI).

Owns one narrow step: append one ``log_read`` / ``log_exported`` record to a *reader origin*,
durably and covered by a signed checkpoint, before the caller releases any data; retried when
other readers race for the same origin. Which origin, key and subject to use is the caller's
business (cli/audit_reader.py); the gateway's own reads go through ``AuditLog.search_entries``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from bastion.audit import log as audit_log
from bastion.audit.keys import SigningKey
from bastion.audit.log import AuditLog, CheckpointPolicy, Receipt
from bastion.audit.record import AuditEvent, EventKind
from bastion.errors import StorageError
from bastion.storage.base import AuditStore

ACCESS_KINDS = frozenset({EventKind.LOG_READ, EventKind.LOG_EXPORTED})
DEFAULT_ATTEMPTS = 5
DEFAULT_BACKOFF_S = 0.02
"""First retry waits about this long (jittered ±50%); each later retry twice as long."""
_SIGN_EVERY_RECORD = CheckpointPolicy(every_records=1)
"""The record and a checkpoint covering it commit in one transaction: never durable yet unsigned."""
_writers_muted = contextvars.ContextVar("bastion_access_writers_muted", default=False)
"""Set while an access record is being appended; the writer's task and callbacks inherit it."""


class _MutedWriterErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _writers_muted.get()


logging.getLogger(audit_log.__name__).addFilter(_MutedWriterErrors())


async def append_access_record(
    store: AuditStore,
    *,
    origin: str,
    signing_key: SigningKey,
    kind: Literal[EventKind.LOG_READ, EventKind.LOG_EXPORTED],
    subject: str | None,
    detail: Mapping[str, Any],
    auth_method: str | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_s: float = DEFAULT_BACKOFF_S,
) -> Receipt:
    """Append one access record to ``origin`` and return once it is durable and under a signed checkpoint.

    Each attempt opens an ``AuditLog`` for ``origin`` (it resumes the head from the store), appends
    the record, in one transaction with a checkpoint that covers it, and closes the log (which signs
    the head it then sees, unless a checkpoint covers it already). Another reader appending to the same origin makes
    the store refuse the stale head (compare-and-swap on the tree size); the attempt is then retried
    after a short jittered backoff. The store is asked afterwards whether a checkpoint covers the
    record; if not, the next attempt only signs again, so the record is not appended twice.

    Preconditions: ``kind`` is ``LOG_READ`` or ``LOG_EXPORTED``; ``attempts >= 1``; nobody else
    appends to ``origin`` through a long-lived writer (a running gateway owns its own origin).

    Raises:
        StorageError: after ``attempts`` tries the record is not durable or no signed checkpoint
            covers it; the caller must not release the data.
        ValueError: ``kind`` is not an access kind or ``attempts < 1``.
    """
    if kind not in ACCESS_KINDS or attempts < 1:
        raise ValueError("append_access_record takes log_read or log_exported and at least one attempt")
    event = AuditEvent(kind=kind, subject=subject, auth_method=auth_method, detail=detail)
    receipt: Receipt | None = None
    problem = ""
    with _writer_errors_muted():
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
            try:
                receipt = await _append_and_sign(store, origin, signing_key, event, receipt)
            except StorageError as exc:
                problem = str(exc.__cause__ or exc)  # the store's own words, e.g. the tree-size conflict
                continue
            if await _is_signed(store, origin, receipt.seq):
                return receipt
            problem = f"no signed checkpoint covers seq {receipt.seq} yet"
    raise StorageError(f"cannot record the {kind.value} in origin {origin!r} after {attempts} attempts: {problem}")


@contextlib.contextmanager
def _writer_errors_muted() -> Iterator[None]:
    """Hold back the writer's per-batch errors: a lost race is retried, and only the last failure
    is the caller's to report (a CLI user would otherwise see errors before a success).

    Scoped to this task's context, not the logger's level: a concurrent append that finished
    first would otherwise restore the level while this one still races.
    """
    token = _writers_muted.set(True)
    try:
        yield
    finally:
        _writers_muted.reset(token)


async def _append_and_sign(
    store: AuditStore, origin: str, key: SigningKey, event: AuditEvent, receipt: Receipt | None
) -> Receipt:
    """One attempt: append ``event`` unless ``receipt`` says it already landed; always close (sign)."""
    log = AuditLog(store, origin=origin, signing_key=key, checkpoints=_SIGN_EVERY_RECORD)
    await log.start()
    try:
        if receipt is None:
            receipt = await log.append(event)
    finally:
        await log.aclose()  # signs whatever head the store holds now, unless already signed
    return receipt


async def _is_signed(store: AuditStore, origin: str, seq: int | None) -> bool:
    latest = await store.fetch_latest_checkpoint(origin)
    return seq is not None and latest is not None and latest.tree_size > seq
