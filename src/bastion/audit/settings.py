"""The ``audit:`` section of the configuration file, validated once at load time.

Owns the audit settings model and its defaults (mode, checkpoint cadence, signing key source,
witnesses, RFC 3161 timestamping, origin, sealed raw values). Reading keys, building witnesses,
the timestamper, the sealer and the writer is audit/{log,timestamping,sealing}.py's and the app
factory's business; ``${ENV}`` expansion is the loader's.
"""

from __future__ import annotations

import socket
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, model_validator

from bastion.audit.sealing import SealedField
from bastion.audit.sinks import SinkSettings


class AuditMode(StrEnum):
    """What happens when a record cannot be made durable."""

    DURABLE = "durable"
    """Fail closed: the caller gets StorageError and the exchange does not proceed."""
    BEST_EFFORT = "best_effort"
    """Log and count the loss, let the exchange proceed, and write a records_lost record later."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class S3WitnessSettings(_Section):
    """An S3-compatible bucket that receives a copy of every checkpoint."""

    endpoint: HttpUrl
    bucket: str = Field(min_length=3, max_length=63)
    region: str = "us-east-1"
    access_key: SecretStr
    secret_key: SecretStr
    prefix: str = "checkpoints/"
    object_lock_days: int | None = Field(default=None, ge=1)
    """When set, objects are written with COMPLIANCE Object Lock for this many days."""
    timeout_s: float = Field(default=10.0, gt=0)


class WitnessSettings(_Section):
    """Where checkpoint copies go besides the store."""

    directory: Path | None = None
    s3: S3WitnessSettings | None = None


class TimestampingSettings(_Section):
    """RFC 3161 time-stamping authorities that countersign checkpoints (audit/timestamping.py); absent means off.

    Each TSA stamps the newest checkpoint once it is durable, off the write path: a failing TSA is
    counted, logged and retried with backoff, and never delays or refuses a call.
    """

    urls: list[HttpUrl] = Field(
        min_length=1, description="TSA endpoints (RFC 3161 over HTTP POST); each stamps checkpoints independently of the others."
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Time allowed for one TSA request.")
    ca_file: Path | None = Field(
        default=None,
        description="PEM bundle of the TSAs' root (and intermediate) certificates; when set, a token must verify "
        "against it before it is stored.",
    )
    policy_oid: str | None = Field(
        default=None,
        pattern=r"^[0-2](\.(0|[1-9][0-9]*))+$",
        description="When set, tokens issued under any other TSA policy are refused.",
    )
    require: bool = Field(
        default=False,
        description="Only how a failure is logged: as an error when true, as a warning when false. "
        "Timestamping never blocks or refuses calls.",
    )
    poll_s: float = Field(default=1.0, gt=0, description="How often the store is checked for a newer checkpoint.")
    retry_max_s: float = Field(
        default=300.0, gt=0, description="Longest wait before retrying a failing TSA (the wait doubles from poll_s)."
    )


class SealRawSettings(_Section):
    """Raw (unmasked) values stored encrypted for auditors (audit/sealing.py); absent means never stored."""

    recipients: list[Path] = Field(min_length=1)
    """Auditor public key files (``bastion audit sealkey``); each can open every sealed value."""
    what: list[SealedField] = Field(default=[SealedField.ARGUMENTS, SealedField.RESULT], min_length=1)
    """Which raw values to seal: request arguments, reply results, or both."""


def default_origin() -> str:
    """The origin used when none is configured: ``bastion/<hostname>``."""
    return f"bastion/{socket.gethostname()}"


class AuditSettings(_Section):
    """The ``audit:`` configuration section."""

    mode: AuditMode = AuditMode.DURABLE
    origin: str = Field(default_factory=default_origin, min_length=1, pattern=r"^[^\s]+$")
    checkpoint_every_records: int = Field(default=1000, ge=1)
    checkpoint_every_s: float = Field(default=10.0, gt=0)
    heartbeat_s: float = Field(default=300.0, gt=0)
    """An idle log still gets a checkpoint this often, so a silent gap is visible."""
    signing_key_file: Path | None = None
    signing_key_env: str | None = None
    key_name: str | None = Field(default=None, min_length=1, pattern=r"^[^\s+]+$")
    """When set, the loaded key must carry this name (guards against loading another log's key)."""
    max_queue_records: int = Field(default=10_000, ge=1)
    """Appends wait (backpressure) once this many records are queued for the writer."""
    max_batch_records: int = Field(default=1024, ge=1)
    witnesses: WitnessSettings = WitnessSettings()
    sinks: list[SinkSettings] = []
    """Where copies of committed records are streamed (JSON Lines, OTLP, syslog); best-effort."""
    timestamping: TimestampingSettings | None = None
    """RFC 3161 time-stamps of checkpoints from independent TSAs; off (None) by default."""
    seal_raw: SealRawSettings | None = None
    """Store raw arguments/results encrypted to auditor keys; off (None) by default."""

    @model_validator(mode="after")
    def _one_key_source(self) -> AuditSettings:
        if (self.signing_key_file is None) == (self.signing_key_env is None):
            raise ValueError("set exactly one of signing_key_file or signing_key_env")
        return self
