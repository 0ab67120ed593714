"""Checkpoint witnesses: copies of every signed checkpoint kept outside the database.

Owns the ``Witness`` protocol, an append-only directory witness, an S3-compatible bucket witness
(SigV4-signed PUT, optional Object Lock) and ``WitnessFanout``, which delivers checkpoints off the
writer's path so a failing witness is counted and logged but never loses or delays records.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit

import httpx

from bastion.audit.entry import StoredCheckpoint
from bastion.audit.settings import WitnessSettings
from bastion.errors import StorageError

log = logging.getLogger(__name__)


class Witness(Protocol):
    """A place that keeps a copy of each checkpoint."""

    name: str

    async def store_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Keep ``checkpoint``; never overwrite an earlier copy.

        Raises:
            StorageError: the copy could not be kept.
        """


def checkpoint_object_name(checkpoint: StoredCheckpoint) -> str:
    """``<origin-slug>/<tree_size, 20 digits>-<time>.note``: unique per checkpoint, sorted by size."""
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", checkpoint.origin)
    digest = hashlib.sha256(checkpoint.origin.encode()).hexdigest()[:8]
    stamp = re.sub(r"[^0-9TZ]", "", checkpoint.time)
    return f"{slug}-{digest}/{checkpoint.tree_size:020d}-{stamp}.note"


class DirectoryWitness:
    """Writes each checkpoint to its own new file (O_EXCL, read-only mode, fsync'd with its directory)."""

    def __init__(self, root: Path) -> None:
        self.name = f"directory:{root}"
        self._root = root

    async def store_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Write the checkpoint's note to a file that did not exist before (in a worker thread).

        Raises:
            StorageError: the file exists with other content, or the write failed.
        """
        await asyncio.to_thread(self._write, checkpoint_object_name(checkpoint), checkpoint.note.encode())

    def _write(self, name: str, data: bytes) -> None:
        path = self._root / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            except FileExistsError:
                if path.read_bytes() == data:
                    return
                raise StorageError(f"witness file {path} exists with different content") from None
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StorageError(f"cannot write witness file {path}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class SigV4Credentials:
    """An access key pair and the region/service it signs for."""

    access_key: str
    secret_key: str
    region: str
    service: str = "s3"


def sign_v4(
    method: str, url: str, headers: Mapping[str, str], payload_sha256: str, creds: SigV4Credentials, amz_date: str
) -> str:
    """Return the AWS Signature Version 4 ``Authorization`` header value signing every given header.

    Preconditions: ``headers`` include ``host`` and ``x-amz-date`` (== ``amz_date``, e.g. 20130524T000000Z);
    the URL path is already URI-encoded and has no query string.
    """
    path = urlsplit(url).path or "/"
    canonical_headers = {k.lower(): " ".join(v.strip().split()) for k, v in headers.items()}
    signed = ";".join(sorted(canonical_headers))
    canonical_request = "\n".join(
        [method, path, "", *(f"{k}:{canonical_headers[k]}" for k in sorted(canonical_headers)), "", signed, payload_sha256]
    )
    scope = f"{amz_date[:8]}/{creds.region}/{creds.service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()])
    key = ("AWS4" + creds.secret_key).encode()
    for part in (amz_date[:8], creds.region, creds.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope},SignedHeaders={signed},Signature={signature}"


class S3Witness:
    """PUTs each checkpoint as a new object (``If-None-Match: *``), optionally under COMPLIANCE Object Lock."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        endpoint: str,
        bucket: str,
        creds: SigV4Credentials,
        prefix: str = "checkpoints/",
        object_lock_days: int | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.name = f"s3:{bucket}"
        self._client = client
        self._base = f"{endpoint.rstrip('/')}/{quote(bucket, safe='')}/"
        self._prefix = prefix
        self._creds = creds
        self._lock_days = object_lock_days
        self._timeout_s = timeout_s

    async def store_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """PUT the checkpoint's note under a new key.

        Raises:
            StorageError: the bucket refused the object or could not be reached.
        """
        body = checkpoint.note.encode()
        url = self._base + quote(self._prefix + checkpoint_object_name(checkpoint), safe="/-_.~")
        now = datetime.now(UTC)
        payload_sha256 = hashlib.sha256(body).hexdigest()
        headers = {
            "host": urlsplit(url).netloc,
            "content-type": "text/plain; charset=utf-8",
            "content-md5": base64.b64encode(hashlib.md5(body).digest()).decode(),
            "if-none-match": "*",
            "x-amz-content-sha256": payload_sha256,
            "x-amz-date": now.strftime("%Y%m%dT%H%M%SZ"),
        }
        if self._lock_days is not None:
            until = now + timedelta(days=self._lock_days)
            headers["x-amz-object-lock-mode"] = "COMPLIANCE"
            headers["x-amz-object-lock-retain-until-date"] = until.strftime("%Y-%m-%dT%H:%M:%SZ")
        headers["authorization"] = sign_v4("PUT", url, headers, payload_sha256, self._creds, headers["x-amz-date"])
        try:
            response = await self._client.put(url, content=body, headers=headers, timeout=self._timeout_s)
        except httpx.HTTPError as exc:
            raise StorageError(f"S3 witness {self.name} unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise StorageError(f"S3 witness {self.name} refused {checkpoint.tree_size}: HTTP {response.status_code}")


@dataclass(slots=True)
class WitnessStats:
    """Counters for /metrics; they only grow."""

    delivered: int = 0
    failures: int = 0
    dropped: int = 0


class WitnessFanout:
    """Delivers checkpoints to every witness from its own task, with a bounded queue and per-call timeout."""

    def __init__(self, witnesses: Sequence[Witness], *, max_pending: int = 1000, timeout_s: float = 10.0) -> None:
        self._witnesses = tuple(witnesses)
        self._queue: asyncio.Queue[StoredCheckpoint | None] = asyncio.Queue(max_pending)  # None: stop
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self.stats = WitnessStats()

    def start(self) -> None:
        """Start the delivery task (called by ``AuditLog.start``)."""
        if self._task is None:
            self._task = asyncio.create_task(self._serve(), name="audit-witnesses")

    def submit(self, checkpoint: StoredCheckpoint) -> None:
        """Queue a committed checkpoint; if the queue is full, count and log the drop instead of waiting."""
        try:
            self._queue.put_nowait(checkpoint)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            log.error("witness queue full; checkpoint %s/%d not copied", checkpoint.origin, checkpoint.tree_size)

    async def aclose(self) -> None:
        """Deliver what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._task = None

    async def _serve(self) -> None:
        while (item := await self._queue.get()) is not None:
            for witness in self._witnesses:
                await self._deliver(witness, item)

    async def _deliver(self, witness: Witness, checkpoint: StoredCheckpoint) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await witness.store_checkpoint(checkpoint)
        except (StorageError, TimeoutError) as exc:
            self.stats.failures += 1
            log.error("witness %s missed checkpoint %d: %s", witness.name, checkpoint.tree_size, exc)
        except Exception:  # a witness bug must not stop the others from receiving copies
            self.stats.failures += 1
            log.exception("witness %s failed unexpectedly", witness.name)
        else:
            self.stats.delivered += 1


def build_witnesses(settings: WitnessSettings, client: httpx.AsyncClient) -> WitnessFanout | None:
    """Return a fan-out over the configured witnesses, or None when none is configured."""
    witnesses = configured_witnesses(settings, client)
    return WitnessFanout(witnesses) if witnesses else None


def configured_witnesses(settings: WitnessSettings, client: httpx.AsyncClient) -> list[Witness]:
    """The witnesses ``settings`` configure, each ready to store checkpoints."""
    witnesses: list[Witness] = []
    if settings.directory is not None:
        witnesses.append(DirectoryWitness(settings.directory))
    if (s3 := settings.s3) is not None:
        creds = SigV4Credentials(s3.access_key.get_secret_value(), s3.secret_key.get_secret_value(), s3.region)
        witnesses.append(
            S3Witness(
                client,
                endpoint=str(s3.endpoint),
                bucket=s3.bucket,
                creds=creds,
                prefix=s3.prefix,
                object_lock_days=s3.object_lock_days,
                timeout_s=s3.timeout_s,
            )
        )
    return witnesses
