"""Sinks: copies of committed audit records streamed to a SIEM (JSON Lines, OTLP/HTTP logs, syslog).

Owns ``SinkFanout``, which the writer (audit/log.py) hands every committed batch, and
``build_sinks``. A sink is best-effort by design: a slow or dead sink never blocks or fails a
call, because the durable store stays the source of truth (an auditor re-reads gaps from it by
origin and seq). The modules: settings.py (``audit.sinks``), delivery.py (buffering, retries,
counting), format.py (the wire formats), jsonl.py and network.py (the kinds, and what "sent"
means on each transport). Records are already masked when committed; nothing here masks, signs
or verifies. See docs/audit-sinks.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import httpx

from bastion.audit.entry import LogEntry
from bastion.audit.sinks.delivery import Sink
from bastion.audit.sinks.format import SinkRecord
from bastion.audit.sinks.jsonl import JsonLinesSink
from bastion.audit.sinks.network import OtlpSink, SyslogSink
from bastion.audit.sinks.settings import JsonLinesSinkSettings, OtlpSinkSettings, SinkSettings, SyslogSinkSettings

__all__ = ["JsonLinesSink", "JsonLinesSinkSettings", "OtlpSink", "OtlpSinkSettings", "SinkFanout", "SinkSettings",
           "SyslogSink", "SyslogSinkSettings", "build_sinks"]

log = logging.getLogger(__name__)


class SinkFanout:
    """Every configured sink; the writer calls ``offer`` with each committed batch."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = tuple(sinks)

    def start(self) -> None:
        """Start each sink's delivery task."""
        for sink in self.sinks:
            sink.start()

    def offer(self, entries: Sequence[LogEntry]) -> None:
        """Hand committed records to every sink without waiting; never raises (the records are committed).

        Each record is wrapped once and shared, so it is parsed once however many sinks copy it.
        """
        records = [SinkRecord(entry) for entry in entries]
        for sink in self.sinks:
            try:
                sink.offer(records)
            except Exception:
                log.exception("audit sink %s failed to buffer records", sink.name)

    async def aclose(self) -> None:
        """Drain and close every sink (each bounded by its own ``drain_timeout_s``)."""
        await asyncio.gather(*(sink.aclose() for sink in self.sinks))


def build_sinks(settings: Sequence[SinkSettings], http_client: httpx.AsyncClient) -> SinkFanout | None:
    """Build the sinks ``audit.sinks`` lists, or None when it lists none."""
    sinks: list[Sink] = []
    for item in settings:
        if isinstance(item, JsonLinesSinkSettings):
            sinks.append(JsonLinesSink(item))
        elif isinstance(item, OtlpSinkSettings):
            sinks.append(OtlpSink(item, http_client))
        else:
            sinks.append(SyslogSink(item))
    return SinkFanout(sinks) if sinks else None
