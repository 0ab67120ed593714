"""Builds the stage onion once and is the only place where exceptions become wire errors.

Outermost is audit, so it sees every outcome; just inside it, errors raised by later stages
(policy denial, upstream failure, anything unexpected) are turned into JSON-RPC error replies.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import ClassVar

from bastion.errors import BastionError
from bastion.exchange import Exchange, Reply
from bastion.jsonrpc import codes
from bastion.jsonrpc.envelope import error_body
from bastion.pipeline.stage import Next, Stage

log = logging.getLogger("bastion.pipeline")


async def _deliver(ex: Exchange) -> Reply | None:
    return await ex.deliver(ex)


def error_reply(exc: BaseException) -> Reply:
    """Turn an exception into a JSON-RPC error reply; unknown ones get a correlation id only."""
    if isinstance(exc, BastionError):
        return {"error": error_body(exc.code, exc.public_message, exc.data or None)}
    correlation_id = uuid.uuid4().hex
    log.error("internal error", exc_info=exc, extra={"correlation_id": correlation_id})
    return {"error": error_body(codes.INTERNAL_ERROR, "Internal error", {"correlation_id": correlation_id})}


class _ErrorBoundary:
    name: ClassVar[str] = "errors"

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply | None:
        try:
            return await call_next(ex)
        except BastionError as exc:
            if ex.notes.outcome is None:
                ex.notes.outcome = _outcome_for(exc)
            return error_reply(exc)
        except Exception as exc:  # the one boundary where anything unexpected becomes -32603
            ex.notes.outcome = "error"
            return error_reply(exc)


def _outcome_for(exc: BastionError) -> str:
    from bastion.errors import DenialError, UpstreamError

    if isinstance(exc, DenialError):
        if exc.code == codes.APPROVAL_EXPIRED:
            return "expired"
        return "denied"
    if isinstance(exc, UpstreamError):
        return "upstream_failed"
    return "error"


class Pipeline:
    """The built onion: ``await pipeline(ex)`` runs every stage, then delivers to the peer."""

    def __init__(self, outer: Sequence[Stage], inner: Sequence[Stage]) -> None:
        """``outer`` stages see raw exceptions turned into replies (audit); ``inner`` ones raise."""
        self._handler = _build([*outer, _ErrorBoundary(), *inner])
        self._outer_handler = _build([*outer, _ErrorBoundary()])
        self.stage_names = tuple(s.name for s in (*outer, *inner))

    async def __call__(self, ex: Exchange) -> Reply | None:
        return await self._handler(ex)

    async def run_outer(self, ex: Exchange) -> Reply | None:
        """Run an exchange Bastion answers itself (``ex.deliver`` composes the reply, e.g. the
        federated endpoint's merged listing) through the outer stages only: it is recorded and
        counted like any other, but it has no upstream of its own for policy, approval or masking
        to decide on; the upstream exchanges it is composed of ran the whole pipeline."""
        return await self._outer_handler(ex)


def _build(stages: Sequence[Stage]) -> Next:
    handler: Next = _deliver
    for stage in reversed(stages):
        handler = _bind(stage, handler)
    return handler


def _bind(stage: Stage, call_next: Next) -> Next:
    async def run(ex: Exchange) -> Reply | None:
        return await stage(ex, call_next)

    return run
