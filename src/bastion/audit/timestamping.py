"""RFC 3161 time-stamps for signed checkpoints: follow the store, ask each TSA, keep the tokens.

Owns the TSA exchange (RFC 3161 §3.4: POST ``application/timestamp-query`` over the gateway's
shared httpx client), the loop that follows one origin's newest stored checkpoint, retry backoff
per TSA and the counters /metrics shows. It reads checkpoints from the store, so it only ever
stamps what is durable, picks up after a restart, and needs nothing from the writer; a failing
TSA never delays a record or a call. After a TSA outage it stamps the newest checkpoint, not
the backlog: that one covers every earlier record, and a late token on an old checkpoint would
prove less. What a token must contain is audit/timestamp_token.py's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509

from bastion.audit.entry import StoredCheckpoint, StoredTimestamp
from bastion.audit.record import render_time
from bastion.audit.settings import TimestampingSettings
from bastion.audit.timestamp_token import (
    AcceptedToken,
    TimestampError,
    accept_reply,
    build_query,
    load_tsa_certificates,
)
from bastion.errors import BastionError, ConfigError, StorageError
from bastion.storage.base import AuditStore, CheckpointTimestampStore, Store

log = logging.getLogger(__name__)

QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"


class TsaError(BastionError):
    """Raised when a TSA gives no usable token: unreachable, an HTTP error, or a reply that fails the checks."""


class TsaClient:
    """One time-stamping authority, reached over HTTP."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        timeout_s: float = 10.0,
        policy_oid: str | None = None,
        roots: Sequence[x509.Certificate] = (),
    ) -> None:
        self.name = url
        self._client = client
        self._timeout_s = timeout_s
        self._policy_oid = policy_oid
        self._roots = tuple(roots)

    async def timestamp(self, note: str) -> AcceptedToken:
        """Get a token over SHA-256 of ``note`` and check it against the query (and the roots, if any).

        Raises:
            TsaError: no usable token (the reason says which check failed).
        """
        query = build_query(note)
        try:
            response = await self._client.post(
                self.name, content=query.der, headers={"content-type": QUERY_TYPE}, timeout=self._timeout_s
            )
        except httpx.HTTPError as exc:
            raise TsaError(f"TSA {self.name} unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise TsaError(f"TSA {self.name} answered HTTP {response.status_code}")
        if response.headers.get("content-type", "").split(";")[0].strip().lower() != REPLY_TYPE:
            raise TsaError(f"TSA {self.name} answered {response.headers.get('content-type')!r}, not {REPLY_TYPE}")
        try:
            return accept_reply(response.content, query, policy_oid=self._policy_oid, roots=self._roots)
        except TimestampError as exc:
            raise TsaError(f"TSA {self.name} reply refused: {exc}") from exc


@dataclass(slots=True)
class TimestampStats:
    """Counters for /metrics; they only grow."""

    stamped: int = 0
    failures: int = 0


@dataclass(slots=True)
class _TsaState:
    stamped_size: int = 0
    """Largest tree size this TSA has a stored token for; 0: an empty tree is never worth a token."""
    failed_in_a_row: int = 0
    retry_at: float = 0.0


class CheckpointTimestamper:
    """Keeps every TSA's token on the newest checkpoint of one origin; ``await start()``, then ``aclose()``."""

    def __init__(
        self,
        store: AuditStore,
        tokens: CheckpointTimestampStore,
        origin: str,
        tsas: Sequence[TsaClient],
        *,
        poll_s: float = 1.0,
        retry_max_s: float = 300.0,
        require: bool = False,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._origin = origin
        self._tsas = tuple(tsas)
        self._poll_s = poll_s
        self._retry_max_s = retry_max_s
        self._failure_level = logging.ERROR if require else logging.WARNING
        self._states = {tsa.name: _TsaState() for tsa in self._tsas}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.stats = TimestampStats()

    async def start(self) -> None:
        """Resume from the tokens already stored and start following the store.

        Raises:
            StorageError: the stored tokens cannot be read.
        """
        for tsa in self._tsas:
            latest = await self._tokens.fetch_latest_timestamp(self._origin, tsa.name)
            self._states[tsa.name].stamped_size = latest.tree_size if latest is not None else 0
        self._task = asyncio.create_task(self._serve(), name=f"audit-timestamper:{self._origin}")

    async def aclose(self) -> None:
        """Stop following; first give every TSA one try at the newest checkpoint (the final one at shutdown)."""
        if self._task is None:
            return
        self._stop.set()
        await self._task
        self._task = None
        for state in self._states.values():
            state.retry_at = 0.0
        await self._stamp_newest()

    async def _serve(self) -> None:
        while not self._stop.is_set():
            await self._stamp_newest()
            try:
                async with asyncio.timeout(self._poll_s):
                    await self._stop.wait()
            except TimeoutError:
                pass

    async def _stamp_newest(self) -> None:
        try:
            newest = await self._store.fetch_latest_checkpoint(self._origin)
        except StorageError as exc:
            log.warning("timestamper of %s cannot read checkpoints: %s", self._origin, exc)
            return
        if newest is None:
            return
        for tsa in self._tsas:
            state = self._states[tsa.name]
            if newest.tree_size > state.stamped_size and time.monotonic() >= state.retry_at:
                await self._stamp(tsa, state, newest)

    async def _stamp(self, tsa: TsaClient, state: _TsaState, checkpoint: StoredCheckpoint) -> None:
        try:
            accepted = await tsa.timestamp(checkpoint.note)
            gen_time = render_time(accepted.gen_time)
            await self._tokens.store_timestamp(
                StoredTimestamp(checkpoint.origin, checkpoint.tree_size, tsa.name, accepted.token, gen_time)
            )
        except Exception as exc:  # TsaError, StorageError, or a bug: none may stop the loop or the other TSAs
            self.stats.failures += 1
            state.failed_in_a_row += 1
            wait = min(self._retry_max_s, self._poll_s * 2**state.failed_in_a_row)
            state.retry_at = time.monotonic() + wait
            log.log(
                self._failure_level,
                "no time-stamp from %s for %s/%d (retry in %.0f s): %s",
                tsa.name, checkpoint.origin, checkpoint.tree_size, wait, exc,
                exc_info=not isinstance(exc, TsaError | StorageError),
            )
            return
        self.stats.stamped += 1
        state.stamped_size = checkpoint.tree_size
        state.failed_in_a_row = 0
        state.retry_at = 0.0


def read_tsa_certificates(path: Path) -> list[x509.Certificate]:
    """Load a PEM bundle of TSA certificates from a file.

    Raises:
        ConfigError: the file cannot be read or holds no usable certificate.
    """
    try:
        return load_tsa_certificates(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read TSA certificates {path}: {exc.strerror}") from exc
    except TimestampError as exc:
        raise ConfigError(f"TSA certificates {path}: {exc}") from exc


def build_timestamper(
    settings: TimestampingSettings | None, store: Store, client: httpx.AsyncClient, origin: str
) -> CheckpointTimestamper | None:
    """Return a timestamper for ``origin`` as the ``audit.timestamping`` section describes, or None when it is absent.

    Raises:
        ConfigError: ``ca_file`` cannot be read or holds no certificate.
    """
    if settings is None:
        return None
    roots = read_tsa_certificates(settings.ca_file) if settings.ca_file is not None else []
    urls = dict.fromkeys(str(url) for url in settings.urls)  # a TSA listed twice is asked once
    tsas = [
        TsaClient(client, url, timeout_s=settings.timeout_s, policy_oid=settings.policy_oid, roots=roots)
        for url in urls
    ]
    return CheckpointTimestamper(
        store,
        store.checkpoint_timestamps,
        origin,
        tsas,
        poll_s=settings.poll_s,
        retry_max_s=settings.retry_max_s,
        require=settings.require,
    )
