"""Durable stores behind Bastion, chosen by the ``store:`` URL.

Owns ``open_store``: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite:///:memory:``,
``postgresql://user@host/db?schema=name``. The interfaces are in ``storage/base.py``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bastion.errors import ConfigError
from bastion.storage.base import AppendBatch, AuditStore, LogHead, RecordQuery, Store

__all__ = ["AppendBatch", "AuditStore", "LogHead", "RecordQuery", "Store", "open_store"]


async def open_store(url: str) -> Store:
    """Open, migrate and return the store the URL names.

    Raises:
        ConfigError: the URL scheme is not sqlite or postgresql.
        StorageError: the store cannot be opened or migrated.
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from bastion.storage.sqlite import SqliteStore

        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError("sqlite store URL must look like sqlite:///path/to/file.db or sqlite:///:memory:")
        return await SqliteStore.open(path)
    if parts.scheme in ("postgresql", "postgres"):
        from bastion.storage.postgres import PostgresStore

        query = parse_qsl(parts.query, keep_blank_values=True)
        schema = next((v for k, v in query if k == "schema"), None)
        rest = urlencode([(k, v) for k, v in query if k != "schema"])
        dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
        return await PostgresStore.open(dsn, schema=schema)
    raise ConfigError(f"unsupported store URL scheme {parts.scheme!r}; use sqlite:// or postgresql://")
