"""The checkpoint timestamper: tokens for what the writer commits, TSA failures, retries, restarts.

The TSA is OpenSSL's reference responder (``openssl ts -reply`` behind a tiny HTTP server,
tests/servers/openssl_tsa.py) because no public TSA is reachable from the test environment. The
log is a real ``AuditLog`` over a real SQLite store; every token stored is checked against the
note it covers, by us and by ``openssl ts -verify``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydantic
import pytest
from tests.servers.openssl_tsa import OpenSslTsa, make_tsa_pki, running_tsa

from bastion.audit.entry import StoredCheckpoint, StoredTimestamp
from bastion.audit.keys import generate_signing_key
from bastion.audit.log import AuditLog, CheckpointPolicy
from bastion.audit.record import AuditEvent, EventKind
from bastion.audit.settings import TimestampingSettings
from bastion.audit.timestamp_token import load_tsa_certificates, verify_token
from bastion.audit.timestamping import CheckpointTimestamper, TsaClient, TsaError, build_timestamper
from bastion.errors import ConfigError
from bastion.storage import Store, open_store

pytestmark = pytest.mark.anyio

ORIGIN = "bastion.test/log"
KEY = generate_signing_key(ORIGIN)
EVERY_2 = CheckpointPolicy(every_records=2, every_s=3600, heartbeat_s=3600)
POLL_S = 0.02
WAIT_S = 10.0


async def eventually(condition: Callable[[], Awaitable[bool]], timeout_s: float = WAIT_S) -> None:
    """Wait (bounded) until ``condition`` holds; the timestamper works on its own task."""
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(POLL_S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Rig:
    store: Store
    log: AuditLog
    http: httpx.AsyncClient

    def timestamper(self, *tsas: TsaClient, **options: float) -> CheckpointTimestamper:
        return CheckpointTimestamper(
            self.store, self.store.checkpoint_timestamps, ORIGIN, tsas,
            poll_s=POLL_S, retry_max_s=options.get("retry_max_s", 0.2),
        )

    async def append(self, count: int) -> None:
        for i in range(count):
            await self.log.append(AuditEvent(kind=EventKind.REQUEST, method="tools/call", name="t", arguments={"i": i}))

    async def tokens(self) -> list[StoredTimestamp]:
        return await self.store.checkpoint_timestamps.fetch_timestamps(ORIGIN)

    async def checkpoints_at(self, size: int) -> list[StoredCheckpoint]:
        return [c for c in await self.store.fetch_checkpoints(ORIGIN) if c.tree_size == size]


@asynccontextmanager
async def rig_at(path: Path, checkpoints: CheckpointPolicy = EVERY_2) -> AsyncIterator[Rig]:
    store = await open_store(f"sqlite:///{path}")
    log = AuditLog(store, origin=ORIGIN, signing_key=KEY, checkpoints=checkpoints)
    await log.start()
    async with httpx.AsyncClient() as http:
        try:
            yield Rig(store, log, http)
        finally:
            await log.aclose()
            await store.aclose()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig_at(tmp_path / "audit.db") as opened:
        yield opened


def openssl_verifies(tsa: OpenSslTsa, note: str, token: bytes, directory: Path) -> bool:
    (directory / "note").write_bytes(note.encode("utf-8"))
    (directory / "token.der").write_bytes(token)
    done = subprocess.run(
        ["openssl", "ts", "-verify", "-data", str(directory / "note"), "-in", str(directory / "token.der"),
         "-token_in", "-CAfile", str(tsa.pki.root_cert)],
        capture_output=True, text=True, check=False,
    )
    return done.returncode == 0 and done.stdout.strip() == "Verification: OK"


async def test_token_is_stored_for_the_checkpoint_the_log_commits_and_verifies_independently(
    rig: Rig, tmp_path: Path
) -> None:
    with running_tsa(tmp_path / "pki") as tsa:
        roots = load_tsa_certificates(tsa.pki.root_cert.read_bytes())
        stamper = rig.timestamper(TsaClient(rig.http, tsa.url, roots=roots))
        await stamper.start()
        await rig.append(2)  # the writer signs a checkpoint at size 2

        async def stamped() -> bool:
            return [t.tree_size for t in await rig.tokens()] == [2]

        await eventually(stamped)
        await stamper.aclose()
    [token] = await rig.tokens()
    [checkpoint] = await rig.checkpoints_at(2)
    assert (token.origin, token.tsa, stamper.stats.stamped, stamper.stats.failures) == (ORIGIN, tsa.url, 1, 0)
    gen_time = verify_token(token.token, checkpoint.note, roots)
    assert token.gen_time == gen_time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert openssl_verifies(tsa, checkpoint.note, token.token, tmp_path)
    assert len(tsa.queries) == 1


async def test_newest_checkpoint_gets_stamped_and_an_unchanged_tree_is_not_stamped_again(tmp_path: Path) -> None:
    heartbeats = CheckpointPolicy(every_records=2, every_s=3600, heartbeat_s=0.2)
    async with rig_at(tmp_path / "audit.db", heartbeats) as rig:
        with running_tsa(tmp_path / "pki") as tsa:
            stamper = rig.timestamper(TsaClient(rig.http, tsa.url))
            await stamper.start()
            await rig.append(2)
            await eventually(lambda: _sizes(rig, [2]))
            await rig.append(2)
            await eventually(lambda: _sizes(rig, [2, 4]))

            async def heartbeats_at_4() -> bool:  # idle: they repeat size 4, nothing new to prove
                return len(await rig.checkpoints_at(4)) >= 3

            await eventually(heartbeats_at_4)
            await stamper.aclose()
            assert [t.tree_size for t in await rig.tokens()] == [2, 4]
            assert len(tsa.queries) == 2


async def _sizes(rig: Rig, sizes: list[int]) -> bool:
    return [t.tree_size for t in await rig.tokens()] == sizes


async def test_calls_succeed_while_the_tsa_is_down_and_the_checkpoint_is_stamped_once_it_is_back(
    rig: Rig, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens here yet: connection refused
    stamper = rig.timestamper(TsaClient(rig.http, f"http://127.0.0.1:{port}/", timeout_s=1.0))
    await stamper.start()
    await rig.append(4)  # every append returns: the TSA is not on the write path

    async def failed_twice() -> bool:
        return stamper.stats.failures >= 2

    await eventually(failed_twice)  # retried, with backoff, while down
    assert await rig.tokens() == []
    assert rig.log.stats.records_committed == 4
    with OpenSslTsa(make_tsa_pki(tmp_path / "pki"), port) as tsa:
        await eventually(lambda: _sizes(rig, [4]))
        await stamper.aclose()
    [token] = await rig.tokens()
    [checkpoint] = await rig.checkpoints_at(4)
    assert verify_token(token.token, checkpoint.note, load_tsa_certificates(tsa.pki.root_cert.read_bytes()))
    assert stamper.stats.stamped == 1


async def test_reply_from_an_untrusted_tsa_is_counted_as_a_failure_and_not_stored(
    rig: Rig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = load_tsa_certificates(make_tsa_pki(tmp_path / "other", "Other TSA").root_cert.read_bytes())
    with running_tsa(tmp_path / "pki") as tsa, caplog.at_level(logging.WARNING, "bastion.audit.timestamping"):
        stamper = rig.timestamper(TsaClient(rig.http, tsa.url, roots=stranger))
        await stamper.start()
        await rig.append(2)

        async def failed() -> bool:
            return stamper.stats.failures >= 1

        await eventually(failed)
        await stamper.aclose()
    assert await rig.tokens() == []
    assert stamper.stats.stamped == 0
    refused = [r for r in caplog.records if "no time-stamp" in r.getMessage()]
    assert refused and refused[0].levelno == logging.WARNING and "signature" in refused[0].getMessage()


async def test_http_errors_and_wrong_content_types_are_failures(rig: Rig) -> None:
    answers = iter([httpx.Response(503), httpx.Response(200, content=b"x", headers={"content-type": "text/html"})])
    transport = httpx.MockTransport(lambda request: next(answers))
    async with httpx.AsyncClient(transport=transport) as http:
        client = TsaClient(http, "http://tsa.test/")
        await rig.append(2)
        [checkpoint] = await rig.checkpoints_at(2)
        for expected in ("HTTP 503", "text/html"):
            with pytest.raises(TsaError, match=expected):
                await client.timestamp(checkpoint.note)


async def test_restart_resumes_from_stored_tokens_without_asking_again(tmp_path: Path) -> None:
    with running_tsa(tmp_path / "pki") as tsa:
        async with rig_at(tmp_path / "audit.db") as rig:
            stamper = rig.timestamper(TsaClient(rig.http, tsa.url))
            await stamper.start()
            await rig.append(2)
            await eventually(lambda: _sizes(rig, [2]))
            await stamper.aclose()
        async with rig_at(tmp_path / "audit.db") as rig:
            stamper = rig.timestamper(TsaClient(rig.http, tsa.url))
            await stamper.start()
            await asyncio.sleep(POLL_S * 10)
            assert len(tsa.queries) == 1  # size 2 is stamped already
            await rig.append(2)
            await eventually(lambda: _sizes(rig, [2, 4]))
            await stamper.aclose()


async def test_failures_are_logged_as_errors_when_timestamping_is_required(
    rig: Rig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = TimestampingSettings(urls=[f"http://127.0.0.1:{free_port()}/"], require=True, poll_s=POLL_S, timeout_s=1)
    stamper = build_timestamper(settings, rig.store, rig.http, ORIGIN)
    assert stamper is not None
    with caplog.at_level(logging.WARNING, "bastion.audit.timestamping"):
        await stamper.start()
        await rig.append(2)

        async def failed() -> bool:
            return stamper.stats.failures >= 1

        await eventually(failed)
        await stamper.aclose()
    assert {r.levelno for r in caplog.records if "no time-stamp" in r.getMessage()} == {logging.ERROR}


def test_settings_refuse_bad_policy_oids_and_builder_refuses_unreadable_ca_files(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError):
        TimestampingSettings(urls=["http://tsa.test/"], policy_oid="not.an.oid")
    with pytest.raises(pydantic.ValidationError):
        TimestampingSettings(urls=[])
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    for ca_file in (tmp_path / "bad.pem", tmp_path / "missing.pem"):
        settings = TimestampingSettings(urls=["http://tsa.test/"], ca_file=ca_file)
        with pytest.raises(ConfigError):
            build_timestamper(settings, None, None, ORIGIN)  # type: ignore[arg-type]
    assert build_timestamper(None, None, None, ORIGIN) is None  # type: ignore[arg-type]
