"""Checkpoint witnesses: append-only directory, S3-compatible bucket (against a loopback fake), and the fan-out.

No real S3 is reachable from the test environment: the bucket tests here run against ``FakeS3``,
a tiny S3-compatible PUT endpoint served on 127.0.0.1 by this module, which checks the SigV4
signature, Content-MD5, x-amz-content-sha256 and If-None-Match like S3 does and lets a test read
the exact headers. The signing code is additionally pinned to the worked example in the AWS S3
SigV4 documentation, and tests/e2e/test_s3_witness.py runs the witness against moto's S3 server.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from bastion.audit.entry import StoredCheckpoint
from bastion.audit.witness import (
    DirectoryWitness,
    S3Witness,
    SigV4Credentials,
    WitnessFanout,
    checkpoint_object_name,
    sign_v4,
)
from bastion.errors import StorageError

pytestmark = pytest.mark.anyio

CHECKPOINT = StoredCheckpoint("bastion/gw-1", 42, b"\x01" * 32, "bastion/gw-1\n42\nAQE=\n\n— k sig\n", "2026-11-24T23:59:01.123Z")
HEARTBEAT = StoredCheckpoint("bastion/gw-1", 42, b"\x01" * 32, "later note\n", "2026-11-24T23:59:31.000Z")
CREDS = SigV4Credentials("AKIDTEST", "secret-test-key", "eu-west-1")


def test_sigv4_matches_the_aws_documented_example_when_signing_a_get() -> None:
    # AWS S3 API reference, "Signature calculations for the Authorization header", example GET Object.
    creds = SigV4Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1")
    empty = hashlib.sha256(b"").hexdigest()
    headers = {"Host": "examplebucket.s3.amazonaws.com", "Range": "bytes=0-9", "x-amz-content-sha256": empty,
               "x-amz-date": "20130524T000000Z"}
    header = sign_v4("GET", "https://examplebucket.s3.amazonaws.com/test.txt", headers, empty, creds, "20130524T000000Z")
    assert header == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_object_names_are_unique_per_checkpoint_and_path_safe() -> None:
    first, second = checkpoint_object_name(CHECKPOINT), checkpoint_object_name(HEARTBEAT)
    assert first != second
    assert first.startswith("bastion_gw-1-") and first.endswith("/00000000000000000042-20261124T235901123Z.note")
    other_origin = StoredCheckpoint("bastion_gw-1", 42, b"\x01" * 32, "n\n", CHECKPOINT.time)
    assert checkpoint_object_name(other_origin) != first  # the slug alone would collide


async def test_directory_witness_writes_one_read_only_file_per_checkpoint(tmp_path: Path) -> None:
    witness = DirectoryWitness(tmp_path)
    await witness.store_checkpoint(CHECKPOINT)
    await witness.store_checkpoint(HEARTBEAT)
    await witness.store_checkpoint(CHECKPOINT)  # the same copy again is a no-op, not an error
    path = tmp_path / checkpoint_object_name(CHECKPOINT)
    assert path.read_text(encoding="utf-8") == CHECKPOINT.note
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert len(list(path.parent.iterdir())) == 2


async def test_directory_witness_refuses_to_overwrite_when_content_differs(tmp_path: Path) -> None:
    witness = DirectoryWitness(tmp_path)
    await witness.store_checkpoint(CHECKPOINT)
    forged = StoredCheckpoint(CHECKPOINT.origin, 42, CHECKPOINT.root_hash, "forged\n", CHECKPOINT.time)
    with pytest.raises(StorageError):
        await witness.store_checkpoint(forged)
    assert (tmp_path / checkpoint_object_name(CHECKPOINT)).read_text(encoding="utf-8") == CHECKPOINT.note


async def test_directory_witness_raises_storage_error_when_the_root_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(StorageError):
        await DirectoryWitness(blocker).store_checkpoint(CHECKPOINT)


class FakeS3(ThreadingHTTPServer):
    """S3-compatible PUT-object endpoint on loopback: path-style bucket, SigV4, MD5, If-None-Match."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FakeS3Handler)
        self.objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _FakeS3Handler(BaseHTTPRequestHandler):
    server: FakeS3

    def do_PUT(self) -> None:  # noqa: N802 (http.server naming)
        body = self.rfile.read(int(self.headers["content-length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        status = self._check(body, headers)
        if status == 200:
            with self.server.lock:
                if headers.get("if-none-match") == "*" and self.path in self.server.objects:
                    status = 412
                else:
                    self.server.objects[self.path] = (body, headers)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def _check(self, body: bytes, headers: dict[str, str]) -> int:
        if headers.get("content-md5") != base64.b64encode(hashlib.md5(body).digest()).decode():
            return 400
        if headers.get("x-amz-content-sha256") != hashlib.sha256(body).hexdigest():
            return 400
        auth = headers.get("authorization", "")
        signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";") if "SignedHeaders=" in auth else []
        expected = sign_v4("PUT", f"{self.server.endpoint}{self.path}", {h: headers[h] for h in signed if h in headers},
                           headers["x-amz-content-sha256"], CREDS, headers.get("x-amz-date", ""))
        required = {"host", "x-amz-date", "x-amz-content-sha256", "content-md5"}
        return 200 if auth == expected and required <= set(signed) else 403

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def fake_s3() -> Iterator[FakeS3]:
    server = FakeS3()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def make_s3(fake: FakeS3, client: httpx.AsyncClient, creds: SigV4Credentials = CREDS, **options: int) -> S3Witness:
    return S3Witness(client, endpoint=fake.endpoint, bucket="audit-bucket", creds=creds, **options)  # type: ignore[arg-type]


async def test_s3_witness_puts_a_signed_object_with_object_lock_when_configured(
    fake_s3: FakeS3, client: httpx.AsyncClient
) -> None:
    await make_s3(fake_s3, client, object_lock_days=30).store_checkpoint(CHECKPOINT)
    key = f"/audit-bucket/checkpoints/{checkpoint_object_name(CHECKPOINT)}"
    body, headers = fake_s3.objects[key]
    assert body == CHECKPOINT.note.encode()
    assert headers["x-amz-object-lock-mode"] == "COMPLIANCE"
    assert headers["x-amz-object-lock-retain-until-date"].endswith("Z")
    assert "x-amz-object-lock-mode" in headers["authorization"]


async def test_s3_witness_omits_object_lock_when_not_configured(fake_s3: FakeS3, client: httpx.AsyncClient) -> None:
    await make_s3(fake_s3, client).store_checkpoint(CHECKPOINT)
    [(_, headers)] = fake_s3.objects.values()
    assert "x-amz-object-lock-mode" not in headers


async def test_s3_witness_raises_storage_error_when_the_bucket_refuses(fake_s3: FakeS3, client: httpx.AsyncClient) -> None:
    wrong = SigV4Credentials(CREDS.access_key, "not-the-secret", CREDS.region)
    with pytest.raises(StorageError, match="HTTP 403"):
        await make_s3(fake_s3, client, creds=wrong).store_checkpoint(CHECKPOINT)
    witness = make_s3(fake_s3, client)
    await witness.store_checkpoint(CHECKPOINT)
    with pytest.raises(StorageError, match="HTTP 412"):  # never overwrites an existing copy
        await witness.store_checkpoint(CHECKPOINT)


async def test_s3_witness_raises_storage_error_when_unreachable(client: httpx.AsyncClient) -> None:
    with socket.socket() as s:  # bound but never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        witness = S3Witness(client, endpoint=f"http://127.0.0.1:{s.getsockname()[1]}", bucket="b-1", creds=CREDS,
                            timeout_s=2)
        with pytest.raises(StorageError, match="unreachable"):
            await witness.store_checkpoint(CHECKPOINT)


class _Recorder:
    def __init__(self, name: str, fail: bool) -> None:
        self.name, self.fail, self.got = name, fail, list[StoredCheckpoint]()

    async def store_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        if self.fail:
            raise StorageError("down")
        self.got.append(checkpoint)


async def test_fanout_counts_failures_and_still_serves_other_witnesses() -> None:
    bad, good = _Recorder("bad", fail=True), _Recorder("good", fail=False)
    fanout = WitnessFanout([bad, good])
    fanout.start()
    fanout.submit(CHECKPOINT)
    fanout.submit(HEARTBEAT)
    await fanout.aclose()
    assert good.got == [CHECKPOINT, HEARTBEAT]
    assert (fanout.stats.delivered, fanout.stats.failures, fanout.stats.dropped) == (2, 2, 0)


async def test_fanout_drops_and_counts_when_its_queue_is_full() -> None:
    good = _Recorder("good", fail=False)
    fanout = WitnessFanout([good], max_pending=1)
    fanout.submit(CHECKPOINT)
    fanout.submit(HEARTBEAT)  # not started: the queue is full, the writer must not wait
    fanout.start()
    await fanout.aclose()
    assert good.got == [CHECKPOINT]
    assert fanout.stats.dropped == 1


def test_directory_witness_files_are_fsynced_with_exclusive_create(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_open, real_fsync = os.open, os.fsync
    monkeypatch.setattr(os, "open", lambda p, flags, *a: calls.append(f"open:{flags & os.O_EXCL != 0}") or real_open(p, flags, *a))
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    DirectoryWitness(tmp_path)._write("o/x.note", b"data")
    assert calls == ["open:True", "fsync", "open:False", "fsync"]
