"""JSON-RPC error codes Bastion sends, one docstring each.

Standard codes come from JSON-RPC 2.0 §5.1. Bastion's own decisions use the
implementation-defined band -32010..-32019, staying clear of -32000/-32001 (used inside
the MCP SDKs) and -32002 (MCP "resource not found") and -32022 (unsupported protocol version).
"""

from __future__ import annotations

from typing import Final

PARSE_ERROR: Final = -32700
"""The body is not valid JSON."""
INVALID_REQUEST: Final = -32600
"""The JSON is not a valid JSON-RPC 2.0 request object."""
METHOD_NOT_FOUND: Final = -32601
"""The method does not exist or is not offered to this caller."""
INVALID_PARAMS: Final = -32602
"""The params are invalid; MCP also uses this for an unknown tool name."""
INTERNAL_ERROR: Final = -32603
"""Something unexpected failed inside Bastion; the reply carries a correlation id only."""

RESOURCE_NOT_FOUND: Final = -32002
"""MCP: the requested resource URI does not exist."""
UNSUPPORTED_PROTOCOL_VERSION: Final = -32022
"""MCP 2026-07-28: the requested protocol revision is not served here."""

# -32010..-32019: Bastion's gateway decisions.
POLICY_DENIED: Final = -32010
"""Policy refused the call; ``data.rule`` names the rule."""
APPROVAL_DENIED: Final = -32011
"""A human approver rejected the call."""
APPROVAL_EXPIRED: Final = -32012
"""No approval arrived before the deadline, or the hold was abandoned."""
UPSTREAM_UNAVAILABLE: Final = -32013
"""The upstream could not be reached, crashed, or answered with garbage."""
UPSTREAM_TIMEOUT: Final = -32014
"""The upstream did not answer within its configured timeout."""
AUDIT_UNAVAILABLE: Final = -32015
"""The audit record could not be made durable, so the call was not performed (fail closed)."""
RATE_LIMITED: Final = -32016
"""The caller exceeded a rate limit; ``data.retry_after_s`` says when to try again."""
APPROVAL_PENDING: Final = -32017
"""The call needs approval that is not yet granted; ``data.approval_id`` identifies it."""
MASKING_FAILED: Final = -32018
"""The reply could not be masked, so it was not released (fail closed)."""
SESSION_FORBIDDEN: Final = -32019
"""The session id belongs to another identity."""
