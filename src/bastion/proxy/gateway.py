"""The running gateway's shared state: settings, the pipeline, upstream factory and sessions.

Transports call into it; it owns the session table and its idle reaper, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

from bastion.config import Settings
from bastion.errors import StorageError
from bastion.exchange import CallerContext, Reply
from bastion.jsonrpc.envelope import Message
from bastion.pipeline.runner import Pipeline
from bastion.proxy.endpoint import Endpoint, FederatedEndpoint, ServerEndpoint
from bastion.proxy.session import DownstreamSession
from bastion.stages.audit import GatewayRecorder
from bastion.upstream.factory import UpstreamFactory

log = logging.getLogger("bastion.gateway")


SHUTDOWN_RECORD_WAIT_S = 5.0
"""At shutdown a session's close waits this long for its record, then closes without it."""


class Gateway:
    """Everything a client session needs from the process it runs in."""

    def __init__(self, settings: Settings, pipeline: Pipeline, upstreams: UpstreamFactory, recorder: GatewayRecorder) -> None:
        self.settings = settings
        self.recorder = recorder
        self.pipeline = pipeline
        self.upstreams = upstreams
        self.sessions: dict[str, DownstreamSession] = {}
        self.federated = FederatedEndpoint(list(settings.upstreams))
        self.per_server = {name: ServerEndpoint(name) for name in settings.upstreams}
        self._reaper: asyncio.Task[None] | None = None
        self.accepting = True
        self.stopping = asyncio.Event()
        """Set when shutdown begins: standalone GET streams end so connections can drain."""

    def endpoint_for(self, upstream: str | None) -> Endpoint | None:
        """The federated endpoint for None, the per-server one for a configured name, else None."""
        if upstream is None:
            return self.federated
        return self.per_server.get(upstream)

    def open_session(self, caller: CallerContext, endpoint: Endpoint) -> DownstreamSession:
        session_id = secrets.token_urlsafe(24)
        caller.session_id = session_id
        session = DownstreamSession(session_id, caller, endpoint, self)
        self.sessions[session_id] = session
        return session

    async def record_unrouted(self, caller: CallerContext, message: Message, reply: Reply) -> None:
        await self.recorder.unrouted(caller, message, reply)

    async def discard_session(self, session_id: str) -> None:
        """End a session whose opening could not be recorded: no close is recorded either."""
        session = self.sessions.pop(session_id, None)
        if session is not None:
            await session.close()

    async def close_session(self, session_id: str, *, unrecorded: bool = False) -> bool:
        """End a session, its session_closed record first (the calls it then cancels are recorded
        after it, as cancelled). A session the log cannot record as closed stays open and serving,
        so the client may retry, unless ``unrecorded`` (shutdown, which waits for the record at most
        ``SHUTDOWN_RECORD_WAIT_S``) or a stopping gateway says close it anyway.

        Raises:
            StorageError: the record failed and the session is still open.
        """
        session = self.sessions.get(session_id)
        if session is None or session.closing:  # a close already under way finishes the job
            return False
        session.closing = True
        try:
            async with asyncio.timeout(SHUTDOWN_RECORD_WAIT_S if unrecorded else None):
                await self.recorder.session(session.caller, opened=False)
        except (StorageError, TimeoutError):
            if not unrecorded and self.accepting:
                session.closing = False
                raise
            log.error("session %s closed without its session_closed record: the audit store cannot write", session_id)
        except BaseException:
            session.closing = False  # cancelled while recording (reaper stopped, DELETE dropped): a later close still runs
            raise
        self.sessions.pop(session_id, None)
        await session.close()
        return True

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_idle(), name="session-reaper")

    async def _reap_idle(self) -> None:
        idle_s = self.settings.http.session_idle_s
        while True:
            await asyncio.sleep(min(idle_s / 4, 60.0))
            cutoff = time.monotonic() - idle_s
            for session_id, session in list(self.sessions.items()):
                if session.last_used < cutoff and not any(s.attached for s in session.streams.values()):
                    log.info("closing idle session", extra={"session": session_id})
                    try:
                        await self.close_session(session_id)
                    except StorageError:  # kept open; the next round tries again
                        log.warning("idle session %s not closed: its close cannot be recorded", session_id)

    def begin_shutdown(self) -> None:
        """Stop taking new sessions and end GET streams; in-flight calls go on to completion."""
        self.accepting = False
        self.stopping.set()

    async def aclose(self) -> None:
        self.begin_shutdown()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(*(self.close_session(sid, unrecorded=True) for sid in list(self.sessions)), return_exceptions=True)
        await self.upstreams.aclose()
