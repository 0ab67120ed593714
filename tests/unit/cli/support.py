"""What the audit CLI tests share: running ``bastion audit …`` in-process and reading a store's SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bastion.cli.main import main


def run_audit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``bastion audit ARGV``; return its exit code, stdout and stderr."""
    code = main(["audit", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def sqlite_rows(path: Path, statement: str, *params: object) -> list[tuple[Any, ...]]:
    """Run one statement on the SQLite file at ``path`` (as someone with the database would)."""
    with sqlite3.connect(path) as conn:
        return conn.execute(statement, params).fetchall()
