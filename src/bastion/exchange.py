"""The vocabulary every pipeline stage speaks: one Exchange per JSON-RPC message crossing Bastion.

Plain slotted dataclasses and enums only; no logic beyond trivial accessors.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bastion.jsonrpc.envelope import Message, RequestId

if TYPE_CHECKING:
    from bastion.identity.principal import Principal
    from bastion.policy.model import ApprovalRequirement

Reply = Message
"""A reply body without id: ``{"result": {...}}`` or ``{"error": {...}}``."""


class Direction(enum.Enum):
    TO_UPSTREAM = "to_upstream"
    """Client → Bastion → upstream server."""
    TO_CLIENT = "to_client"
    """Upstream server → Bastion → client (sampling, elicitation, roots, notifications)."""


class Kind(enum.Enum):
    REQUEST = "request"
    NOTIFICATION = "notification"


@dataclass(slots=True)
class CallerContext:
    """Who sent the HTTP request carrying this exchange, and over which session."""

    principal: Principal
    session_id: str | None
    endpoint: str
    source_address: str | None = None
    user_agent: str | None = None
    client_info: dict[str, Any] | None = None
    protocol_version: str | None = None
    client_capabilities: dict[str, Any] | None = None
    """The ``capabilities`` the client declared in its initialize params (None: not an object)."""
    listed_names: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    """Tool and prompt names by (upstream, "tool" | "prompt") as this session last listed them, every
    page read: a call to any other name is answered exactly like a hidden one."""
    listing_pages: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    """Names from the pages of a listing still being read; they move to ``listed_names`` with the last."""


@dataclass(slots=True)
class AuditNotes:
    """What stages decided, collected for the audit record of the reply."""

    request_seq: int | None = None
    rule_id: str | None = None
    action: str | None = None
    policy_hash: str | None = None
    reason: str | None = None
    mask_profiles: tuple[str, ...] = ()
    masking: list[dict[str, Any]] = field(default_factory=list)
    raw_result_sha256: str | None = None
    result_masked: bool = False
    """The reply's result was masked with (at least) the default profiles: the log may keep it as is."""
    raw_result: Any = None
    """The result before masking; kept only when raw results are sealed (audit.seal_raw)."""
    approval_id: str | None = None
    outcome: str | None = None


Deliver = Callable[["Exchange"], Awaitable[Reply | None]]
AskClient = Callable[[str, dict[str, Any]], Awaitable[Reply]]
"""Sends one request (method, params) to the caller's own client and returns its reply body."""


@dataclass(slots=True)
class Exchange:
    """One message travelling the pipeline, with everything stages need to decide on it."""

    direction: Direction
    kind: Kind
    method: str
    params: dict[str, Any] | None
    id: RequestId | None
    caller: CallerContext
    upstream: str
    """The upstream's configured name."""
    deliver: Deliver
    """The terminal step: send to the peer and (for requests) wait for its reply."""
    name: str | None = None
    """The tool/prompt name or resource URI as the upstream knows it, when the method has one."""
    shown_name: str | None = None
    """The same name as the client wrote it, when that differs (the federated endpoint's namespace)."""
    listing_failed: bool = False
    """The upstream's tools or prompts were listed for this call first, and that listing failed."""
    traceparent: str | None = None
    progress: Callable[[str], Awaitable[None]] | None = None
    """Sends a progress message to the client for this request, when it asked for progress."""
    approval_requirement: ApprovalRequirement | None = None
    """Set by the policy stage when a human must approve this call first."""
    ask_client: AskClient | None = None
    """Asks the caller's client something in-band (e.g. ``elicitation/create``), when a session can."""
    started_at: float = field(default_factory=time.monotonic)
    notes: AuditNotes = field(default_factory=AuditNotes)

    @property
    def arguments(self) -> dict[str, Any]:
        """The tools/call arguments (empty for other methods)."""
        if self.params is None:
            return {}
        args = self.params.get("arguments")
        return args if isinstance(args, dict) else {}
