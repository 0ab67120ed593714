"""MCP protocol revisions Bastion serves to clients (handshake era, negotiated by initialize).

2026-07-28 clients first probe ``server/discover``; Bastion answers it as a handshake-era
server would, so they fall back to ``initialize`` (see README, "Protocol revisions").
"""

from __future__ import annotations

SUPPORTED_VERSIONS: tuple[str, ...] = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
DEFAULT_VERSION_WITHOUT_HEADER = "2025-03-26"
"""MCP 2025-06-18 §transports: assume this when a client sends no MCP-Protocol-Version."""
BATCH_VERSIONS = frozenset({"2024-11-05", "2025-03-26"})
"""Revisions that still allow JSON-RPC batches (removed in 2025-06-18)."""
