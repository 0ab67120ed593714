"""Tool-definition pinning ("rug pull" detection): hash, compare, diff, decide exposure.

Owns the pinned fields and their hash (SHA-256 of RFC 8785 canonical JSON), the NEW / UNCHANGED /
CHANGED comparison, a readable unified diff, and what ``on_tool_change`` does with a changed tool.
Persistence is the ``PinStore`` protocol; its SQLite/PostgreSQL implementations live in storage/.
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import rfc8785

from bastion.errors import DenialError
from bastion.jsonrpc import codes
from bastion.policy.model import ToolChangeMode

PINNED_FIELDS = ("name", "description", "inputSchema", "outputSchema", "annotations")
"""The parts of a tool definition (MCP ``Tool``) a model sees or a policy relies on; ``title``,
``icons`` and ``_meta`` are display or transport details and are not pinned."""


class PinState(enum.StrEnum):
    """How a tool's current definition compares with its pin."""

    NEW = "new"
    UNCHANGED = "unchanged"
    CHANGED = "changed"


@dataclass(frozen=True, slots=True)
class ToolPin:
    """The approved definition of one tool of one upstream."""

    server: str
    name: str
    sha256: str
    definition: Mapping[str, Any]
    """Only the ``PINNED_FIELDS`` the tool declared."""


@dataclass(frozen=True, slots=True)
class PendingChange:
    """A changed definition waiting for an operator: approve by storing ``new`` as the pin."""

    old: ToolPin
    new: ToolPin
    diff: str


@dataclass(frozen=True, slots=True)
class ToolReview:
    """What to do with one tool of a ``tools/list`` reply under the policy's ``on_tool_change``."""

    pin: ToolPin
    state: PinState
    listed: bool
    callable: bool
    store_pin: bool
    """Pin ``pin`` now: first sight (trust on first use), or a change accepted by ``allow``."""
    pending: PendingChange | None
    """A change to record for review (``hide`` and ``block``), or None."""


class PinStore(Protocol):
    """Where pins and pending changes live; implemented per database in storage/."""

    async def fetch_pins(self, server: str) -> Mapping[str, ToolPin]:
        """Every pin of ``server``, by tool name."""
        ...

    async def store_pin(self, pin: ToolPin) -> None:
        """Create or replace the pin for ``(pin.server, pin.name)``."""
        ...

    async def fetch_pending(self, server: str) -> Mapping[str, PendingChange]:
        """Every change of ``server`` waiting for review, by tool name."""
        ...

    async def store_pending(self, change: PendingChange) -> None:
        """Create or replace the pending change for ``(server, name)`` of ``change.new``."""
        ...

    async def delete_pending(self, server: str, name: str) -> None:
        """Forget a pending change (approved or withdrawn); absent is not an error."""
        ...


def pinned_definition(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The pinned fields of an MCP tool definition."""
    return {field: tool[field] for field in PINNED_FIELDS if field in tool}


def compute_tool_hash(tool: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON (RFC 8785) of the tool's pinned fields."""
    return hashlib.sha256(rfc8785.dumps(pinned_definition(tool))).hexdigest()


def make_pin(server: str, tool: Mapping[str, Any]) -> ToolPin:
    """Pin a tool definition as it is now."""
    return ToolPin(server, str(tool.get("name", "")), compute_tool_hash(tool), pinned_definition(tool))


def compare_pin(pinned: ToolPin | None, current: ToolPin) -> PinState:
    """NEW when never pinned, UNCHANGED when the hashes agree, CHANGED otherwise."""
    if pinned is None:
        return PinState.NEW
    return PinState.UNCHANGED if pinned.sha256 == current.sha256 else PinState.CHANGED


def diff_tool_definitions(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """A unified diff of two tool definitions' pinned fields, pretty-printed with sorted keys."""
    def lines(tool: Mapping[str, Any]) -> list[str]:
        return json.dumps(pinned_definition(tool), indent=2, sort_keys=True, ensure_ascii=False).splitlines()

    name = str(new.get("name", old.get("name", "")))
    return "\n".join(difflib.unified_diff(
        lines(old), lines(new), fromfile=f"{name} (pinned {compute_tool_hash(old)[:12]})",
        tofile=f"{name} (now {compute_tool_hash(new)[:12]})", lineterm="",
    ))


def review_tools(server: str, tools: Iterable[Mapping[str, Any]], pins: Mapping[str, ToolPin],
                 mode: ToolChangeMode) -> list[ToolReview]:
    """Decide, for each tool of a ``tools/list`` reply, whether to list it, allow calls and what to store.

    NEW tools are pinned and served; CHANGED ones are hidden (``hide``), listed but not callable
    (``block``) — both leave a pending change for review — or re-pinned and served (``allow``).
    """
    reviews = []
    for tool in tools:
        current = make_pin(server, tool)
        pinned = pins.get(current.name)
        state = compare_pin(pinned, current)
        if pinned is None or state is PinState.UNCHANGED:
            reviews.append(ToolReview(current, state, True, True, pinned is None, None))
        elif mode is ToolChangeMode.ALLOW:
            reviews.append(ToolReview(current, state, True, True, True, None))
        else:
            pending = PendingChange(pinned, current, diff_tool_definitions(pinned.definition, current.definition))
            reviews.append(ToolReview(current, state, mode is ToolChangeMode.BLOCK, False, False, pending))
    return reviews


async def store_review(store: PinStore, reviews: Sequence[ToolReview]) -> None:
    """Persist what ``review_tools`` decided: new pins and pending changes."""
    for review in reviews:
        if review.store_pin:
            await store.store_pin(review.pin)
        if review.pending is not None:
            await store.store_pending(review.pending)


def tool_changed_error(review: ToolReview) -> DenialError:
    """POLICY_DENIED for a call to a tool whose definition changed and awaits review."""
    return DenialError(
        f"tool {review.pin.name!r} changed since it was approved; an operator must review the change",
        code=codes.POLICY_DENIED,
        data={"rule": "tool-pin", "tool_sha256": review.pin.sha256},
    )
