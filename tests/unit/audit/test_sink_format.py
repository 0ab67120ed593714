"""Sink wire formats: a committed record as a JSON line, an OTLP log record and an RFC 5424 message.

Pure functions over ``SinkRecord``s; no sockets.
"""

from __future__ import annotations

import json

import orjson
from sink_rig import HOSTILE, ORIGIN, SPAN_ID, TRACE_ID, make_entry, parse_rfc5424

from bastion.audit.hashing import hash_leaf
from bastion.audit.sinks.format import (
    SinkRecord,
    render_json_line,
    render_otlp_record,
    render_otlp_request,
    render_syslog_message,
)

LINE_BREAKS_AND_BIDI = ("\n", "\r", "\u2028", "\u2029", "\x85", "\x7f", "\u202e", "\u2066", "\u200f", "\x1b")


def test_json_line_is_one_line_holding_the_stored_record_when_values_hold_line_breaks() -> None:
    entry = make_entry(0, text=HOSTILE)
    line = render_json_line(SinkRecord(entry))
    assert line.endswith("\n") and line.splitlines() == [line[:-1]]
    assert not any(char in line[:-1] for char in LINE_BREAKS_AND_BIDI)
    doc = json.loads(line)
    assert doc["record"] == json.loads(entry.body) and doc["record"]["result"]["released"] == HOSTILE
    assert list(doc)[:5] == ["origin", "seq", "time", "kind", "leaf_hash"]
    assert (doc["origin"], doc["seq"], doc["leaf_hash"]) == (ORIGIN, 0, entry.leaf_hash.hex())


def test_otlp_body_is_the_stored_bytes_when_a_collector_recomputes_the_leaf_hash() -> None:
    entries = [make_entry(0, text=HOSTILE), make_entry(1, outcome=None)]
    request = orjson.loads(render_otlp_request([render_otlp_record(SinkRecord(e)) for e in entries], "svc"))
    first, second = request["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    for rendered, entry in ((first, entries[0]), (second, entries[1])):
        assert hash_leaf(rendered["body"]["stringValue"].encode()) == entry.leaf_hash
    assert (first["traceId"], first["spanId"]) == (TRACE_ID, SPAN_ID)
    assert second["severityText"] == "INFO"
    assert "bastion.outcome" not in {a["key"] for a in second["attributes"]}


def test_syslog_message_has_no_raw_line_break_when_the_record_holds_one() -> None:
    entry = make_entry(3, text=HOSTILE, outcome="denied")
    message = render_syslog_message(SinkRecord(entry), facility=13, app_name="bastion", hostname="gw 1\n",
                                    procid="42", max_message_bytes=8192)
    assert not any(char.encode() in message for char in LINE_BREAKS_AND_BIDI)
    pri, fields, msg = parse_rfc5424(message)
    assert pri == "<108>1"  # facility 13 * 8 + severity 4 (warning, for a denial)
    assert fields[1:6] == ["2026-11-24T23:59:01.123Z", "gw_1_", "bastion", "42", "response"]
    assert fields[6] == f'[bastion@32473 origin="{ORIGIN}" seq="3" leaf_hash="{entry.leaf_hash.hex()}"'
    assert json.loads(msg) == json.loads(entry.body)


def test_syslog_message_carries_a_summary_when_the_record_is_too_large() -> None:
    entry = make_entry(4, pad=10_000)
    message = render_syslog_message(SinkRecord(entry), facility=13, app_name="bastion", hostname="gw",
                                    procid="1", max_message_bytes=2048)
    assert len(message) <= 2048
    summary = json.loads(parse_rfc5424(message)[2])
    assert summary == {"origin": ORIGIN, "seq": 4, "time": entry.time, "kind": "response", "outcome": "ok",
                       "leaf_hash": entry.leaf_hash.hex(), "truncated": True}
