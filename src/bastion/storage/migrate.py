"""Versioned schema migrations: which SQL files exist for a dialect and which are still to apply.

Files live in ``storage/migrations/<dialect>/NNNN_name.sql``; a store applies each pending file in
its own transaction and records it in ``schema_migrations``. Running SQL is the store's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from bastion.errors import StorageError

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

SCHEMA_MIGRATIONS_SQL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: its version number, name and SQL text."""

    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    """Return the dialect's migrations in version order.

    Raises:
        StorageError: a file is misnamed or two files share a version.
    """
    folder = resources.files("bastion.storage").joinpath("migrations", dialect)
    found: dict[int, Migration] = {}
    for item in folder.iterdir():
        if not item.name.endswith(".sql"):
            continue
        match = _NAME.match(item.name)
        if match is None:
            raise StorageError(f"migration file {item.name!r} is not named NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise StorageError(f"two migrations share version {version}")
        found[version] = Migration(version, match.group(2), item.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def pending_migrations(dialect: str, applied: set[int]) -> list[Migration]:
    """Return the migrations not yet in ``applied``, oldest first."""
    return [m for m in load_migrations(dialect) if m.version not in applied]
