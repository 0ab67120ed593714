"""What the store-backed commands (``keys``, ``tools``) share: ``--store``, opening the store, times.

Owns the ``--store URL`` option (falling back to ``$BASTION_STORE``), running one command against
an opened store and closing it, and how a POSIX time is shown. The commands' logic lives in the
identity and policy packages; the SQL lives in storage/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from bastion.errors import ConfigError
from bastion.storage import open_store
from bastion.storage.base import Store

STORE_ENV = "BASTION_STORE"


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--store URL`` to a sub-command."""
    parser.add_argument(
        "--store", metavar="URL", help=f"store URL, e.g. sqlite:///./bastion.db (default: ${STORE_ENV})"
    )


def resolve_store_url(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> str:
    """The ``--store`` argument, else ``$BASTION_STORE``.

    Raises:
        ConfigError: neither is set.
    """
    url: str | None = args.store or environ.get(STORE_ENV)
    if not url:
        raise ConfigError(f"no store given: pass --store URL or set {STORE_ENV}")
    return url


def run_with_store(args: argparse.Namespace, action: Callable[[Store], Awaitable[int]]) -> int:
    """Open the store named by ``args``, run ``action`` on it, close it; returns the action's exit code.

    Raises:
        ConfigError: no store or an unsupported URL.
        StorageError: the store cannot be opened, read or written.
    """
    url = resolve_store_url(args)

    async def session() -> int:
        store = await open_store(url)
        try:
            return await action(store)
        finally:
            await store.aclose()

    return asyncio.run(session())


def render_time(posix_s: float | None) -> str | None:
    """RFC 3339 UTC time to the second, or None."""
    if posix_s is None:
        return None
    return datetime.fromtimestamp(posix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    """Left-aligned columns separated by two spaces; None shows as ``-``."""
    cells = [header, *(tuple("-" if v is None else str(v) for v in row) for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)
