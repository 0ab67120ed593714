"""Tool-definition pinning at the gateway ("rug pull" defence), used by the policy stage.

Each ``tools/list`` reply is compared with the pinned definitions in the store: new tools are
pinned on first sight, changed ones are hidden or blocked (per ``on_tool_change``) until an
operator approves them (``bastion tools diff/approve``), and every change is recorded. The check
happens where a model learns what a tool does — the listing — and calls to a tool whose last
listing showed an unapproved change are refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bastion.policy import ToolChangeMode
from bastion.policy.pins import PinState, PinStore, ToolReview, review_tools, store_review, tool_changed_error

RecordChange = Callable[[dict[str, Any]], Awaitable[None]]


class ToolPinning:
    """Reviews tool listings against the pin store and remembers which tools are blocked."""

    def __init__(self, store: PinStore, record_change: RecordChange) -> None:
        self._store = store
        self._record = record_change
        self._blocked: dict[tuple[str, str], ToolReview] = {}

    async def review_listing(self, server: str, tools: list[dict[str, Any]], mode: ToolChangeMode) -> list[dict[str, Any]]:
        """The tools to list, after pinning new ones and recording changed ones."""
        pins = await self._store.fetch_pins(server)
        reviews = review_tools(server, tools, pins, mode)
        await store_review(self._store, reviews)
        listed = []
        for tool, review in zip(tools, reviews, strict=True):
            key = (server, review.pin.name)
            if review.state is PinState.CHANGED:
                old = pins[review.pin.name]
                await self._record(
                    {"what": "tool_definition_changed", "server": server, "tool": review.pin.name,
                     "old_sha256": old.sha256, "new_sha256": review.pin.sha256, "on_tool_change": mode.value}
                )
            if review.callable:
                self._blocked.pop(key, None)
            else:
                self._blocked[key] = review
            if review.listed:
                listed.append(tool)
        return listed

    def hidden_after_change(self, server: str, tool: str) -> bool:
        """Whether the tool's last listing hid it (``on_tool_change: hide``) for a change nobody approved."""
        review = self._blocked.get((server, tool))
        return review is not None and not review.listed

    async def check_call(self, server: str, tool: str) -> None:
        """Raise POLICY_DENIED if the tool's last listing showed a change nobody approved yet."""
        review = self._blocked.get((server, tool))
        if review is None:
            return
        pinned = (await self._store.fetch_pins(server)).get(tool)
        if pinned is not None and pinned.sha256 == review.pin.sha256:
            del self._blocked[(server, tool)]  # approved since the listing
            return
        raise tool_changed_error(review)
