"""The ``audit.sinks`` settings: one entry per sink, ``type`` picks the kind (``SinkSettings``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _SinkBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, min_length=1, max_length=64,
                             description="Label in logs and metrics (`sink=\"...\"`); defaults to the type.")
    max_buffer_records: int = Field(default=10_000, ge=1,
                                    description="Records held for this sink; beyond that new ones are dropped and counted.")
    max_batch_records: int = Field(default=256, ge=1, description="Most records sent in one delivery.")
    drain_timeout_s: float = Field(default=5.0, ge=0,
                                   description="At shutdown, how long buffered records may take to go out before "
                                   "they are dropped.")


class JsonLinesSinkSettings(_SinkBase):
    """One JSON object per line, appended to ``path`` (or written to stdout when ``path`` is ``-``)."""

    type: Literal["jsonl"]
    path: str = Field(default="-", min_length=1, description="File to append to (opened on first write); `-` is stdout.")


class OtlpSinkSettings(_SinkBase):
    """OpenTelemetry logs over OTLP/HTTP with the JSON encoding: POST ``<endpoint>/v1/logs``."""

    type: Literal["otlp"]
    endpoint: str = Field(pattern=r"^https?://", description="Collector base URL; records go to `<endpoint>/v1/logs`.")
    headers: dict[str, SecretStr] = Field(default={}, description="Sent with every export, e.g. an `authorization` token.")
    service_name: str = Field(default="bastion", description="The `service.name` resource attribute.")
    timeout_s: float = Field(default=10.0, gt=0, description="Time allowed for one export, connecting included.")


class SyslogSinkSettings(_SinkBase):
    """RFC 5424 messages over UDP (RFC 5426, one per datagram) or TCP (RFC 6587 octet counting)."""

    type: Literal["syslog"]
    host: str = Field(min_length=1, description="Syslog receiver host name or address.")
    port: int = Field(default=514, ge=1, le=65535, description="Syslog receiver port.")
    protocol: Literal["udp", "tcp"] = Field(default="udp", description="`udp`: one message per datagram (RFC 5426); "
                                            "`tcp`: octet-counted frames (RFC 6587).")
    facility: int = Field(default=13, ge=0, le=23, description="13 is \"log audit\" (RFC 5424 §6.2.1).")
    app_name: str = Field(default="bastion", pattern=r"^[!-~]{1,48}$", description="The APP-NAME header field.")
    max_message_bytes: int = Field(default=8192, ge=480, le=65_000,
                                   description="A larger record is sent as a summary (origin, seq, kind, outcome, "
                                   "leaf hash) marked `truncated`.")
    timeout_s: float = Field(default=5.0, gt=0,
                             description="Time allowed to resolve `host` and, over TCP, to connect and have a batch "
                             "acknowledged by the receiver's TCP stack.")


SinkSettings = Annotated[
    JsonLinesSinkSettings | OtlpSinkSettings | SyslogSinkSettings, Field(discriminator="type")
]
"""One entry of ``audit.sinks``; ``type`` picks the kind."""
