"""Versioned schema migrations: which SQL files exist for a dialect and which are still to apply.

Files live in ``storage/migrations/<dialect>/NNNN_name.sql``; a store applies each pending file in
its own transaction and records it in ``schema_migrations``, or, opened without creating
(``OpenMode.EXISTING``, ``READ_ONLY``), refuses a schema that lacks one. Running SQL is the store's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from bastion.errors import StorageError
from bastion.storage.base import UnpreparedStoreError

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


def require_migrated(dialect: str, applied: set[int] | None, where: str) -> None:
    """Refuse a store whose schema this code cannot use as it is; ``applied``: None when there is no
    ``schema_migrations`` table. ``where`` names the store in the message.

    Migrations this code does not know are not refused: a newer gateway may have applied them.

    Raises:
        UnpreparedStoreError: no Bastion schema, or a migration of this code is not applied.
    """
    if applied is None:
        raise UnpreparedStoreError(f"{where} holds no Bastion store (no schema_migrations table)")
    missing = pending_migrations(dialect, applied)
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        raise UnpreparedStoreError(
            f"{where} has an older schema than this Bastion needs (missing migrations {names}); "
            "start the gateway of this version (bastion serve) once to migrate it"
        )
