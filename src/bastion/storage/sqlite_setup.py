"""Preparing a SQLite file for the store: WAL mode and the schema migrations, or checking that a
file opened without preparing it (``OpenMode.EXISTING``, ``READ_ONLY``) needs none.

Several processes may open one new file at once (gateway instances, CLI readers): the switch to
WAL is retried while another opener holds the file, and each migration is asked for again under
the write lock and run statement by statement inside its transaction, so it is applied exactly
once and never half.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from bastion.storage.migrate import SCHEMA_MIGRATIONS_SQL, pending_migrations, require_migrated
from bastion.storage.sqlite_search import is_busy


def use_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Put the database in WAL mode (a setting of the file, kept once set).

    Switching a new file takes an exclusive lock and does not wait for one: when several
    processes open the same new file at once, all but one are refused for a moment.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
        else:
            if mode == "wal":
                return
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError(f"journal mode stays {mode!r}, not WAL")
        time.sleep(0.01)


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the pending migrations, each in its own transaction (see module docstring)."""
    conn.execute(SCHEMA_MIGRATIONS_SQL)
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    for migration in pending_migrations("sqlite", applied):
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Asked again under the lock: another process opening the same new file may have
            # applied it while this one waited.
            if conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)).fetchone() is None:
                for statement in migration_statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    (migration.version, migration.name, datetime.now(UTC).isoformat()),
                )
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def check_migrated(conn: sqlite3.Connection, path: str) -> None:
    """Refuse the database unless every migration of this code is applied; reads only.

    Raises:
        UnpreparedStoreError: no Bastion schema, or an older one.
        sqlite3.Error: the file cannot be read (or is not a database).
    """
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").fetchone()
    applied = None if found is None else {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    require_migrated("sqlite", applied, f"SQLite database {path}")


def migration_statements(script: str) -> Iterator[str]:
    """The statements of a migration file, one by one (``executescript`` would commit the transaction first)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):  # a ";" inside a comment or a string does not end one
            if _has_sql(pending):
                yield pending
            pending = ""
    if _has_sql(pending):  # a last statement without ";" (or one left open): SQLite runs or refuses it
        yield pending[:-1]


def _has_sql(text: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in text.rstrip(";").splitlines())
