"""What the audit sinks send: one committed record as a JSON line, an OTLP log record or an RFC 5424 message.

Owns ``SinkRecord`` (a committed record parsed and made line-safe once, however many sinks copy
it) and the pure ``render_*`` functions; buffering and counting are audit/sinks/delivery.py's, transports audit/sinks/'s.
Nothing here does I/O, masks, signs or verifies.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from bastion.audit.entry import LogEntry
from bastion.logs import escape_json_text

SYSLOG_ENTERPRISE_ID = 32473
"""SD-ID suffix: 32473 is the private enterprise number reserved for documentation (RFC 5612)."""

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_ALERTING_OUTCOMES = frozenset({"denied", "error", "upstream_failed"})
"""Outcomes sent at warning severity; every other record is informational."""


class SinkRecord:
    """One committed record as the sinks see it; its body is parsed and escaped on first use only.

    The fan-out hands the same object to every sink, so a record is parsed once however many sinks
    copy it, and by the first sink worker to render it rather than by the writer that committed it.
    """

    __slots__ = ("_line_safe_body", "_outcome", "_trace", "entry")

    def __init__(self, entry: LogEntry) -> None:
        self.entry = entry
        self._line_safe_body: str | None = None
        self._outcome: str | None = None
        self._trace: tuple[str, str] | None = None

    def _parse(self) -> str:
        # Two sink workers may race to here; both compute the same values, so either may win.
        text = self.entry.body.decode("utf-8", errors="replace")
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            doc = None  # deeper than orjson parses (1024 levels): still JSON, without outcome or trace
        if isinstance(doc, dict):
            outcome = doc.get("outcome")
            self._outcome = outcome if isinstance(outcome, str) else None
            correlation = doc.get("correlation")
            traceparent = correlation.get("traceparent") if isinstance(correlation, dict) else None
            match = _TRACEPARENT.match(traceparent) if isinstance(traceparent, str) else None
            self._trace = (match.group(1), match.group(2)) if match is not None else None
        self._line_safe_body = escape_json_text(text)
        return self._line_safe_body

    @property
    def line_safe_body(self) -> str:
        """The record's canonical JSON with line breaks and bidi controls escaped (``escape_json_text``)."""
        return self._line_safe_body if self._line_safe_body is not None else self._parse()

    @property
    def outcome(self) -> str | None:
        """The record's ``outcome``, when it has one."""
        if self._line_safe_body is None:
            self._parse()
        return self._outcome

    @property
    def trace(self) -> tuple[str, str] | None:
        """(trace id, span id) from the record's W3C ``correlation.traceparent``, when it has a valid one."""
        if self._line_safe_body is None:
            self._parse()
        return self._trace

    @property
    def alerting(self) -> bool:
        """Whether the outcome is a denial or a failure (sent as a warning rather than as information)."""
        return self.outcome in _ALERTING_OUTCOMES


def render_json_line(record: SinkRecord) -> str:
    """One record as one line of JSON (no line break or bidi control inside), ending in a newline."""
    entry = record.entry
    head = orjson.dumps({"origin": entry.origin, "seq": entry.seq, "time": entry.time, "kind": entry.kind,
                         "leaf_hash": entry.leaf_hash.hex()})
    # The body is spliced in as it is, not re-encoded: it is already JSON and already line-safe.
    return f'{escape_json_text(head[:-1].decode())},"record":{record.line_safe_body}}}\n'


def _unix_nano(rfc3339: str) -> str:
    moment = datetime.fromisoformat(rfc3339)  # Python 3.11+ reads the trailing Z
    return str(int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000)


def _attr(key: str, value: str | int) -> dict[str, Any]:
    # proto3 JSON mapping: int64 travels as a decimal string.
    return {"key": key, "value": {"intValue": str(value)} if isinstance(value, int) else {"stringValue": value}}


def render_otlp_record(record: SinkRecord) -> bytes:
    """One record as an encoded OTLP ``LogRecord`` (JSON); the body is the record's canonical JSON as stored.

    Not escaped: OTLP/HTTP is not line-oriented, and these exact bytes let a collector recompute the leaf hash.
    """
    entry = record.entry
    attributes = [_attr("bastion.origin", entry.origin), _attr("bastion.seq", entry.seq),
                  _attr("bastion.kind", entry.kind), _attr("bastion.leaf_hash", entry.leaf_hash.hex())]
    if record.outcome is not None:
        attributes.append(_attr("bastion.outcome", record.outcome))
    alerting = record.alerting
    rendered: dict[str, Any] = {
        "timeUnixNano": _unix_nano(entry.time),
        "severityNumber": 13 if alerting else 9,  # WARN / INFO (OTel logs data model)
        "severityText": "WARN" if alerting else "INFO",
        "body": {"stringValue": entry.body.decode("utf-8", errors="replace")},
        "attributes": attributes,
    }
    if record.trace is not None:  # OTLP/JSON carries trace and span ids as hex, not base64
        rendered["traceId"], rendered["spanId"] = record.trace
    return orjson.dumps(rendered)


def render_otlp_request(log_records: Sequence[bytes], service_name: str) -> bytes:
    """An ``ExportLogsServiceRequest`` (OTLP/HTTP JSON) holding ``log_records`` from ``render_otlp_record``."""
    resource = orjson.dumps({"attributes": [_attr("service.name", service_name)]})
    # Spliced, not re-encoded: each record was encoded on its own, a slice at a time (audit/sinks/delivery.py).
    return (b'{"resourceLogs":[{"resource":' + resource + b',"scopeLogs":[{"scope":{"name":"bastion.audit"},'
            b'"logRecords":[' + b",".join(log_records) + b"]}]}]}")


def _printable(text: str, limit: int) -> str:
    """RFC 5424 header fields are PRINTUSASCII (33-126); anything else becomes ``_``."""
    cleaned = "".join(c if "!" <= c <= "~" else "_" for c in text)[:limit]
    return cleaned or "-"


def _sd_value(text: str) -> str:
    """Escape an SD-PARAM value (RFC 5424 §6.3.3) and its control characters."""
    return escape_json_text(text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]"))


def render_syslog_message(
    record: SinkRecord, *, facility: int, app_name: str, hostname: str, procid: str, max_message_bytes: int
) -> bytes:
    """One record as an RFC 5424 message: structured data names it, MSG is its JSON (one line, BOM-led UTF-8).

    A message over ``max_message_bytes`` carries a summary instead of the record, marked ``truncated``.
    """
    entry = record.entry
    severity = 4 if record.alerting else 6  # warning / informational
    sd = (f"[bastion@{SYSLOG_ENTERPRISE_ID} origin=\"{_sd_value(entry.origin)}\" seq=\"{entry.seq}\" "
          f"leaf_hash=\"{entry.leaf_hash.hex()}\"]")
    header = (f"<{facility * 8 + severity}>1 {entry.time} {_printable(hostname, 255)} {_printable(app_name, 48)} "
              f"{_printable(procid, 128)} {_printable(entry.kind, 32)} {sd} ").encode()
    message = header + b"\xef\xbb\xbf" + record.line_safe_body.encode("utf-8")
    if len(message) > max_message_bytes:
        summary = {"origin": entry.origin, "seq": entry.seq, "time": entry.time, "kind": entry.kind,
                   "outcome": record.outcome, "leaf_hash": entry.leaf_hash.hex(), "truncated": True}
        message = header + b"\xef\xbb\xbf" + escape_json_text(orjson.dumps(summary).decode()).encode("utf-8")
    return message
