"""What a gateway's start and stop records say about its run, and what changed between two runs.

While a gateway runs, each change is recorded as it happens (a policy reload, a tool's pinned
definition, a mode switch). What changed while it was stopped only a comparison with the last
run's own records can tell: its ``gateway_stopped`` record (which says how the run ended) or, after
a crash, its ``gateway_started`` record and the policy reloads that followed it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

import orjson
from pydantic import SecretBytes, SecretStr

from bastion import __version__
from bastion.audit.log import AuditLog
from bastion.audit.record import AuditEvent, EventKind
from bastion.config import Settings
from bastion.storage import RecordQuery, SearchCursor, Store
from bastion.storage.base import MAX_SEARCH_LIMIT


def settings_sha256(settings: Settings) -> str:
    """SHA-256 of the effective configuration, each secret in it by its own SHA-256.

    pydantic writes every secret as ``**********``, so a rotated secret (an HMAC key, a JWT shared
    secret) would not change the hash; hashing each one keeps it out of the input in clear.
    """
    document = _with_secret_digests(settings.model_dump(), settings.model_dump(mode="json"))
    # The standard library's encoder, not orjson: a policy may hold an integer beyond 64 bits.
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


def _with_secret_digests(native: Any, rendered: Any) -> Any:
    """``rendered`` (the JSON dump) with each secret of ``native`` (the Python dump) as its digest."""
    if isinstance(native, SecretStr | SecretBytes):
        value = native.get_secret_value()
        return "sha256:" + hashlib.sha256(value.encode() if isinstance(value, str) else value).hexdigest()
    if isinstance(native, dict) and isinstance(rendered, dict):
        return {key: _with_secret_digests(native.get(key), value) for key, value in rendered.items()}
    if isinstance(native, list | tuple) and isinstance(rendered, list) and len(native) == len(rendered):
        return [_with_secret_digests(n, r) for n, r in zip(native, rendered, strict=True)]
    return rendered


def run_detail(settings: Settings, policy_hash: str, audit: AuditLog) -> dict[str, Any]:
    """The ``detail`` of a ``gateway_started`` or ``gateway_stopped`` record: what the run ran with."""
    return {"version": __version__, "config_sha256": settings_sha256(settings), "policy_hash": policy_hash,
            "audit_mode": audit.mode.value, "upstreams": sorted(settings.upstreams)}


@dataclass(frozen=True, slots=True)
class _Found:
    kind: EventKind
    seq: int
    time: str
    detail: dict[str, Any]


async def _find_records(store: Store, origin: str, kind: EventKind, since: str | None = None) -> list[_Found]:
    """``origin``'s records of ``kind``, newest first: every one from time ``since`` on, or else the newest only."""
    found: list[_Found] = []
    query = RecordQuery(origin=origin, kind=kind.value, time_from=since, limit=1 if since is None else MAX_SEARCH_LIMIT)
    while True:
        page = await store.search_entries(query)
        found += [_Found(kind, e.seq, e.time, orjson.loads(e.body).get("detail") or {}) for e in page]
        if since is None or len(page) < query.limit:
            return found
        query = replace(query, after=SearchCursor(page[-1].time, page[-1].origin, page[-1].seq))


async def record_changes_since_last_run(store: Store, audit: AuditLog, settings: Settings, policy_hash: str) -> None:
    """Record, before anything is served, what changed while this origin was stopped: the audit
    mode (the log must show when it stopped failing closed), the configuration and the policy.

    With no start or stop record left to compare with (pruned) in a log that has records, the
    configuration change is recorded with no old hash, saying why.
    """
    origin = settings.audit.origin
    had_records = audit.tree_size > 0
    started = await _find_records(store, origin, EventKind.GATEWAY_STARTED)
    stopped = await _find_records(store, origin, EventKind.GATEWAY_STOPPED)
    switched = await _find_records(store, origin, EventKind.MODE_CHANGED)
    modes = [(r.seq, r.detail.get("audit_mode") or r.detail.get("to")) for r in started + stopped + switched]
    mode = max(((seq, m) for seq, m in modes if isinstance(m, str)), default=None)
    if mode is not None and mode[1] != audit.mode.value:
        await audit.append(
            AuditEvent(kind=EventKind.MODE_CHANGED, detail={"from": mode[1], "to": audit.mode.value, "reason": "configuration"})
        )
    # Stop records of releases before this one carry no hashes: they say nothing about the run.
    runs = [r for r in started + stopped if "config_sha256" in r.detail]
    last = max(runs, key=lambda r: r.seq, default=None)
    config_sha256 = settings_sha256(settings)
    detail: dict[str, Any]
    if last is None:
        if had_records:
            detail = {"what": "configuration", "reason": "restart", "old_config_sha256": None,
                      "new_config_sha256": config_sha256, "note": "no earlier start or stop record to compare with"}
            await audit.append(AuditEvent(kind=EventKind.CONFIG_CHANGED, detail=detail))
        return
    if last.detail.get("config_sha256") != config_sha256:
        before, after = set(last.detail.get("upstreams") or ()), set(settings.upstreams)
        detail = {"what": "configuration", "reason": "restart", "old_config_sha256": last.detail.get("config_sha256"),
                  "new_config_sha256": config_sha256, "upstreams_added": sorted(after - before),
                  "upstreams_removed": sorted(before - after)}
        await audit.append(AuditEvent(kind=EventKind.CONFIG_CHANGED, detail=detail))
    last_policy = last.detail.get("policy_hash")
    if last.kind is EventKind.GATEWAY_STARTED:  # the run did not stop cleanly: its last hot reload, if any
        changes = await _find_records(store, origin, EventKind.CONFIG_CHANGED, since=last.time)
        reloads = [r.detail.get("new_policy_hash") for r in changes if r.seq > last.seq and r.detail.get("what") == "policy"]
        last_policy = reloads[0] if reloads else last_policy
    if last_policy != policy_hash:
        detail = {"what": "policy", "reason": "restart", "old_policy_hash": last_policy, "new_policy_hash": policy_hash}
        await audit.append(AuditEvent(kind=EventKind.CONFIG_CHANGED, detail=detail))
