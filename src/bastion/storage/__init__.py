"""Durable stores behind Bastion, chosen by the ``store:`` URL.

Owns ``open_store``: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite:///:memory:``,
``postgresql://user@host/db?schema=name``. The interfaces, and what each ``OpenMode`` may do, are
in ``storage/base.py``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bastion.errors import ConfigError
from bastion.storage.base import (
    AppendBatch,
    AuditStore,
    LogHead,
    OpenMode,
    RecordQuery,
    SearchCursor,
    Store,
    UnpreparedStoreError,
)

__all__ = [
    "AppendBatch",
    "AuditStore",
    "LogHead",
    "OpenMode",
    "RecordQuery",
    "SearchCursor",
    "Store",
    "UnpreparedStoreError",
    "open_store",
]


async def open_store(url: str, mode: OpenMode = OpenMode.CREATE) -> Store:
    """Open and return the store the URL names: created and migrated, or as ``mode`` allows.

    Raises:
        ConfigError: the URL scheme is not sqlite or postgresql.
        UnpreparedStoreError: without ``OpenMode.CREATE``, the store does not exist or is not migrated.
        StorageError: the store cannot be opened or migrated.
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from bastion.storage.sqlite import SqliteStore

        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError("sqlite store URL must look like sqlite:///path/to/file.db or sqlite:///:memory:")
        return await SqliteStore.open(path, mode)
    if parts.scheme in ("postgresql", "postgres"):
        from bastion.storage.postgres import PostgresStore

        query = parse_qsl(parts.query, keep_blank_values=True)
        schema = next((v for k, v in query if k == "schema"), None)
        rest = urlencode([(k, v) for k, v in query if k != "schema"])
        dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
        return await PostgresStore.open(dsn, schema=schema, mode=mode)
    raise ConfigError(f"unsupported store URL scheme {parts.scheme!r}; use sqlite:// or postgresql://")
