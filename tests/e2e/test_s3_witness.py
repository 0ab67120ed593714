"""The S3 witness against an S3-compatible server that checks what real S3 checks.

No real S3 is reachable from here. The server is moto's S3 server (``moto[server]``) on
127.0.0.1, run with IAM authentication on: it recomputes every request's SigV4 signature from
the access key it issued, refuses an overwrite under ``If-None-Match: *`` (412), keeps COMPLIANCE
Object Lock retention, and refuses to delete a locked version. The bucket then holds a witnessed
checkpoint that ``bastion audit verify --trusted`` takes as the auditor's independent copy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.audit.entry import StoredCheckpoint
from bastion.audit.keys import SigningKey, render_vkey
from bastion.audit.log import AuditLog, CheckpointPolicy
from bastion.audit.record import AuditEvent, EventKind
from bastion.audit.witness import S3Witness, SigV4Credentials, WitnessFanout
from bastion.cli.main import main
from bastion.errors import StorageError
from bastion.storage import open_store

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

REGION = "eu-west-1"
BUCKET = "audit-witness"
ORIGIN = "gw.s3/log"
KEY = SigningKey(ORIGIN, bytes(range(32)))
CHECKPOINT = StoredCheckpoint(ORIGIN, 7, b"\x01" * 32, f"{ORIGIN}\n7\nAQE=\n\n— k sig\n", "2026-11-24T23:59:01.123Z")
ALLOW_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


@dataclass(frozen=True)
class Bucket:
    endpoint: str
    creds: SigV4Credentials
    s3: Any
    """A boto3 client with the same credentials: the auditor's own view of the bucket."""

    def keys(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=BUCKET)
        return [o["Key"] for o in listed.get("Contents", [])]


@pytest.fixture(scope="module")
def bucket() -> Iterator[Bucket]:
    # The first calls (IAM user, policy, access key) run unauthenticated; every later request,
    # the witness's included, must carry a valid SigV4 signature of the issued key.
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"3").raise_for_status()
        bootstrap = {"endpoint_url": endpoint, "region_name": REGION, "aws_access_key_id": "AKIDBOOT",
                     "aws_secret_access_key": "boot"}
        iam = boto3.client("iam", **bootstrap)
        iam.create_user(UserName="bastion-witness")
        iam.put_user_policy(UserName="bastion-witness", PolicyName="all", PolicyDocument=ALLOW_ALL)
        issued = iam.create_access_key(UserName="bastion-witness")["AccessKey"]
        creds = SigV4Credentials(issued["AccessKeyId"], issued["SecretAccessKey"], REGION)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=creds.access_key,
                          aws_secret_access_key=creds.secret_key)
        s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True,
                         CreateBucketConfiguration={"LocationConstraint": REGION})
        yield Bucket(endpoint, creds, s3)
    finally:
        httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"inf")
        server.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def witness(bucket: Bucket, client: httpx.AsyncClient, prefix: str, **options: Any) -> S3Witness:
    return S3Witness(client, endpoint=bucket.endpoint, bucket=BUCKET, creds=options.pop("creds", bucket.creds),
                     prefix=prefix, **options)


async def test_checkpoints_land_locked_and_verify_as_trusted_when_the_log_runs_with_an_s3_witness(
    bucket: Bucket, client: httpx.AsyncClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fanout = WitnessFanout([witness(bucket, client, "e2e/", object_lock_days=30)])
    store = await open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    log = AuditLog(store, origin=ORIGIN, signing_key=KEY, witnesses=fanout,
                   checkpoints=CheckpointPolicy(every_records=5, every_s=3600, heartbeat_s=3600))
    await log.start()
    for i in range(12):
        await log.append(AuditEvent(kind=EventKind.REQUEST, subject="alice", method="tools/call", name=f"t{i}"))
    await log.aclose()  # flushes the fan-out: every checkpoint has been offered to the bucket
    stored = await store.fetch_checkpoints(ORIGIN)
    await store.aclose()

    assert fanout.stats.failures == 0
    keys = sorted(k for k in bucket.keys() if k.startswith("e2e/"))
    assert len(keys) == len(stored) >= 3  # start, every 5 records, and the closing one
    notes = {bucket.s3.get_object(Bucket=BUCKET, Key=k)["Body"].read().decode() for k in keys}
    assert notes == {c.note for c in stored}
    head = bucket.s3.head_object(Bucket=BUCKET, Key=keys[-1])
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=29)
    with pytest.raises(bucket.s3.exceptions.ClientError):  # a locked version cannot be deleted
        bucket.s3.delete_object(Bucket=BUCKET, Key=keys[-1], VersionId=head["VersionId"])

    latest = max(stored, key=lambda c: c.tree_size)
    witnessed = next(n for n in notes if n == latest.note)
    (tmp_path / "trusted.note").write_text(witnessed, encoding="utf-8")
    (tmp_path / "keys.txt").write_text(render_vkey(KEY.public()) + "\n", encoding="utf-8")
    code = await asyncio.to_thread(main, ["audit", "verify", "--store", f"sqlite:///{tmp_path / 'audit.db'}", "--keys",
                 str(tmp_path / "keys.txt"), "--trusted", str(tmp_path / "trusted.note")])
    assert code == 0, capsys.readouterr().out


async def test_put_is_refused_when_the_signature_is_wrong(bucket: Bucket, client: httpx.AsyncClient) -> None:
    forged = SigV4Credentials(bucket.creds.access_key, "not-the-secret", REGION)
    with pytest.raises(StorageError, match="HTTP 403"):
        await witness(bucket, client, "forged/", creds=forged).store_checkpoint(CHECKPOINT)
    assert not [k for k in bucket.keys() if k.startswith("forged/")]


async def test_second_put_of_a_checkpoint_is_refused_and_the_first_copy_stays(
    bucket: Bucket, client: httpx.AsyncClient
) -> None:
    await witness(bucket, client, "once/").store_checkpoint(CHECKPOINT)
    with pytest.raises(StorageError, match="HTTP 412"):
        await witness(bucket, client, "once/").store_checkpoint(CHECKPOINT)
    [key] = [k for k in bucket.keys() if k.startswith("once/")]
    assert bucket.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode() == CHECKPOINT.note
