"""PolicyStage: asks the policy engine about every call, filters listings, applies rate limits.

Protocol plumbing (initialize, ping, logging level, notifications) passes; tools/call,
prompts/get, resources/read|subscribe and unknown methods are decided; listings are filtered so a
caller only sees what it may use, and a hidden tool answers exactly like an unknown one.
``require_approval`` without an approval stage is a denial — never an allow.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from bastion.errors import DenialError, ProtocolError
from bastion.exchange import Direction, Exchange, Kind, Reply
from bastion.jsonrpc import codes
from bastion.pipeline.stage import Next
from bastion.policy import Action, PolicyEngine, PolicyRequest, RateLimiter, denial_error
from bastion.policy.model import Kind as Target
from bastion.proxy.naming import unknown_name_error
from bastion.stages.pinning import ToolPinning

_PASS = frozenset({"initialize", "ping", "logging/setLevel", "completion/complete"})
_DECIDED = {
    "tools/call": Target.TOOL,
    "prompts/get": Target.PROMPT,
    "resources/read": Target.RESOURCE,
    "resources/subscribe": Target.RESOURCE,
    "resources/unsubscribe": Target.RESOURCE,
}
_LISTINGS = {
    "tools/list": ("tools", Target.TOOL, "name"),
    "prompts/list": ("prompts", Target.PROMPT, "name"),
    "resources/list": ("resources", Target.RESOURCE, "uri"),
}
_NAMED = frozenset({Target.TOOL, Target.PROMPT})
"""Targets with a fixed, listable set of names (resources may be templated, so any URI can exist)."""


def _unknown(target: Target, ex: Exchange) -> ProtocolError:
    """The error for a name this caller may not see — the same as for a name that does not exist."""
    shown = ex.shown_name or ex.name or ""
    if target is Target.RESOURCE:
        return ProtocolError(f"Resource not found: {shown}", code=codes.RESOURCE_NOT_FOUND, data={"uri": shown})
    return unknown_name_error(target.value, shown)


class PolicyStage:
    """Decides per identity, server, tool and arguments."""

    name: ClassVar[str] = "policy"

    def __init__(
        self,
        engine: Callable[[], PolicyEngine],
        limiter: RateLimiter,
        trusted_upstreams: frozenset[str],
        pinning: ToolPinning | None,
    ) -> None:
        self._engine = engine
        self._pinning = pinning
        self._limiter = limiter
        self._trusted = trusted_upstreams
        self._annotations: dict[tuple[str, str], dict[str, Any]] = {}
        """Tool annotations by (upstream, tool), as last listed by the upstream."""

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply | None:
        if ex.direction is Direction.TO_CLIENT or ex.kind is Kind.NOTIFICATION or ex.method in _PASS:
            return await call_next(ex)
        engine = self._engine()  # in-flight calls keep the engine they started with
        listing = _LISTINGS.get(ex.method)
        if listing is not None:
            reply = await call_next(ex)
            if reply is None:
                return None
            if ex.method == "tools/list" and self._pinning is not None:
                reply = await self._review_pins(engine, ex, reply)
            return self._filter(engine, ex, reply, *listing)
        target = _DECIDED.get(ex.method, Target.OTHER)
        name = ex.name or ex.method
        annotations = self._annotations.get((ex.upstream, name)) if target is Target.TOOL else None
        principal = ex.caller.principal
        trusted = ex.upstream in self._trusted
        listed = ex.caller.listed_names.get((ex.upstream, target.value)) if target in _NAMED else None
        if target in _NAMED and ex.listing_failed:
            # proxy/endpoint.py lists the upstream first when this caller has not, and that listing
            # failed. Which names exist, their annotations and their pins are unknown, so the call
            # cannot be decided (after a restart, a changed tool would otherwise pass unreviewed).
            ex.notes.outcome = "denied"
            ex.notes.reason = f"the upstream's {target.value} listing could not be read"
            ex.notes.policy_hash = engine.policy_hash
            raise DenialError(
                f"Refused: upstream {ex.upstream!r} did not list its {target.value}s, so the call cannot be checked",
                data={"upstream": ex.upstream, "reason": "listing_unavailable"},
            )
        if target is not Target.OTHER:
            if listed is not None and name not in listed:
                unseen = (
                    "hidden: its definition changed since it was pinned and nobody approved the change"
                    if self._pinning is not None and self._pinning.hidden_after_change(ex.upstream, name)
                    else f"the upstream does not list this {target.value}"
                )
            elif not engine.visible(principal.subject, principal.groups, ex.upstream, target, name, annotations, trusted):
                unseen = "hidden from this caller by policy"
            else:
                unseen = None
            if unseen is not None:  # the caller hears "unknown" either way; the record says which
                ex.notes.outcome = "denied"
                ex.notes.reason = unseen
                ex.notes.policy_hash = engine.policy_hash
                raise _unknown(target, ex)
        decision = engine.decide(
            PolicyRequest(
                subject=principal.subject,
                groups=principal.groups,
                server=ex.upstream,
                kind=target,
                name=name,
                args=ex.arguments if target is Target.TOOL else (ex.params or {}).get("arguments") or {},
                annotations=annotations,
                upstream_trusted=trusted,
                now=datetime.now(UTC),
            )
        )
        notes = ex.notes
        notes.rule_id = decision.rule_id
        notes.action = decision.action.value
        notes.policy_hash = decision.policy_hash
        notes.mask_profiles = decision.mask_profiles
        notes.reason = decision.reason
        if decision.action is Action.DENY:
            notes.outcome = "denied"
            raise denial_error(decision)
        if decision.action is Action.REQUIRE_APPROVAL:
            if decision.approval is None:  # an engine bug, but never an allow
                notes.outcome = "denied"
                raise DenialError("Approval required but the rule names no approvers", data={"rule": decision.rule_id})
            ex.approval_requirement = decision.approval
        try:
            if target is Target.TOOL and self._pinning is not None:
                await self._pinning.check_call(ex.upstream, name)
            if decision.rate_limits:
                self._limiter.acquire(decision.rate_limits)
        except DenialError as exc:
            # The rule allowed, a later check refused: the record names the check, not the rule.
            notes.outcome = "denied"
            notes.action = Action.DENY.value
            notes.rule_id = exc.data.get("rule", notes.rule_id)
            notes.reason = str(exc)
            raise
        return await call_next(ex)

    async def _review_pins(self, engine: PolicyEngine, ex: Exchange, reply: Reply) -> Reply:
        assert self._pinning is not None
        result = reply.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            return reply
        tools = [t for t in result["tools"] if isinstance(t, dict) and isinstance(t.get("name"), str)]
        listed = await self._pinning.review_listing(ex.upstream, tools, engine.on_tool_change)
        return {**reply, "result": {**result, "tools": listed}}

    def _filter(self, engine: PolicyEngine, ex: Exchange, reply: Reply, key: str, target: Target, field: str) -> Reply:
        result = reply.get("result")
        if not isinstance(result, dict) or not isinstance(result.get(key), list):
            return reply
        principal = ex.caller.principal
        trusted = ex.upstream in self._trusted
        if target in _NAMED:
            names = frozenset(
                item["name"] for item in result[key] if isinstance(item, dict) and isinstance(item.get("name"), str)
            )
            listing = (ex.upstream, target.value)
            if (ex.params or {}).get("cursor"):  # a later page adds to the ones before
                names |= ex.caller.listing_pages.get(listing, frozenset())
            if result.get("nextCursor"):
                # Not the whole catalogue yet: a name on a page not read must not look unknown.
                ex.caller.listing_pages[listing] = names
            else:
                ex.caller.listing_pages.pop(listing, None)
                ex.caller.listed_names[listing] = names
        visible = []
        for item in result[key]:
            if not isinstance(item, dict) or not isinstance(item.get(field), str):
                continue
            annotations = item.get("annotations") if target is Target.TOOL else None
            if target is Target.TOOL:
                self._annotations[(ex.upstream, item[field])] = annotations if isinstance(annotations, dict) else {}
            if engine.visible(principal.subject, principal.groups, ex.upstream, target, item[field], annotations, trusted):
                visible.append(item)
        ex.notes.policy_hash = engine.policy_hash
        return {**reply, "result": {**result, key: visible}}
