"""Application log lines: one JSON object per line whatever a logged value holds, and the shared escaping."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import orjson
import pytest

from bastion.logs import JsonFormatter, configure_logging, escape_json_text

LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
"""Every character ``str.splitlines()`` splits on."""
DISGUISES = "\x1b\x7f\u202e\u202a\u2066\u2069\u200e\u200f\u061c"
"""The start of a terminal escape, DEL, and the bidi controls that reorder how a line reads."""
HOSTILE = f"ok\n{{\"level\":\"info\",\"message\":\"forged\"}}{LINE_BREAKS}\x1b[2J{DISGUISES}end"


def log_record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("bastion.test", logging.WARNING, __file__, 1, "%s", (message,), None)
    record.__dict__.update(extra)
    return record


def test_escaping_keeps_the_json_value_when_text_holds_line_breaks_and_bidi_controls() -> None:
    raw = orjson.dumps({"v": HOSTILE}).decode()
    escaped = escape_json_text(raw)
    assert json.loads(escaped) == {"v": HOSTILE}
    assert escaped.splitlines() == [escaped]
    assert not any(char in escaped for char in LINE_BREAKS + DISGUISES)


@pytest.mark.parametrize("text", ["plain ascii", "é and — and 日本 and \U0001f600"])
def test_escaping_returns_the_text_unchanged_when_it_holds_nothing_unsafe(text: str) -> None:
    raw = orjson.dumps({"v": text}).decode()
    assert escape_json_text(raw) is raw


def test_log_line_stays_one_line_when_the_message_and_extra_fields_hold_line_breaks() -> None:
    line = JsonFormatter().format(log_record(HOSTILE, client_name=HOSTILE))
    assert line.splitlines() == [line]
    assert not any(char in line for char in LINE_BREAKS + DISGUISES)
    doc = json.loads(line)
    assert (doc["message"], doc["client_name"], doc["level"], doc["logger"]) == (HOSTILE, HOSTILE, "warning", "bastion.test")


def test_log_line_stays_one_line_when_an_exception_is_attached() -> None:
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        record = log_record("failed")
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert line.splitlines() == [line]
    assert "ValueError" in json.loads(line)["exception"]


def test_log_line_is_json_when_a_value_holds_a_lone_surrogate() -> None:
    line = JsonFormatter().format(log_record("bad \ud800 value\u2028", path="/x\udcff"))
    assert line.splitlines() == [line]
    doc = json.loads(line)
    assert (doc["message"], doc["path"]) == ("bad \ud800 value\u2028", "/x\udcff")


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_configure_logging_writes_json_lines_to_stderr_when_called(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("warning")
    logging.getLogger("bastion.test").info("not at this level")
    logging.getLogger("bastion.test").warning("client said %s", HOSTILE)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == f"client said {HOSTILE}"
