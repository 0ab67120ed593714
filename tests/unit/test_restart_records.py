"""What changed while a gateway was stopped is recorded when it starts again: the audit mode, the
configuration and the policy (within a run, each change is recorded as it happens)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.gateway import complete_config, echo_upstream, signing_key_file

from bastion.app import start_runtime, stop_runtime
from bastion.audit.keys import load_signing_key
from bastion.audit.retention import prune
from bastion.audit.record import EventKind
from bastion.config import parse_settings
from bastion.storage import RecordQuery, open_store

ORIGIN = "test/restarts"
PORT = 18999  # written into the configuration only; nothing listens

pytestmark = pytest.mark.anyio


def _config(tmp_path: Path, upstreams: list[str], **extra: Any) -> dict[str, Any]:
    key = tmp_path / "restarts.key"
    audit = {"signing_key_file": str(key) if key.exists() else signing_key_file(str(tmp_path), "restarts"), "origin": ORIGIN}
    return complete_config({"upstreams": {name: echo_upstream(name) for name in upstreams}, "audit": audit, **extra},
                           PORT, str(tmp_path))


async def _run_once(config: dict[str, Any], during: Any = None) -> None:
    runtime = await start_runtime(parse_settings(config))
    try:
        if during is not None:
            await during()
    finally:
        await stop_runtime(runtime)


async def _details(tmp_path: Path, kind: EventKind) -> list[dict[str, Any]]:
    store = await open_store(f"sqlite:///{tmp_path}/audit.db")
    try:
        found = await store.search_entries(RecordQuery(origin=ORIGIN, kind=kind.value))
    finally:
        await store.aclose()
    return [json.loads(entry.body)["detail"] for entry in reversed(found)]  # oldest first


def _write_policy(path: Path, default: str) -> None:
    path.write_text(yaml.safe_dump({"policy": {"default": default}}))


async def test_restart_with_the_same_configuration_records_no_change(tmp_path: Path) -> None:
    await _run_once(_config(tmp_path, ["alpha"]))
    await _run_once(_config(tmp_path, ["alpha"]))
    assert await _details(tmp_path, EventKind.CONFIG_CHANGED) == []
    assert len(await _details(tmp_path, EventKind.GATEWAY_STARTED)) == 2


async def test_restart_with_a_changed_configuration_records_both_hashes_and_the_upstreams(tmp_path: Path) -> None:
    await _run_once(_config(tmp_path, ["alpha", "beta"]))
    await _run_once(_config(tmp_path, ["alpha", "gamma"]))
    started = await _details(tmp_path, EventKind.GATEWAY_STARTED)
    [change] = await _details(tmp_path, EventKind.CONFIG_CHANGED)
    assert change == {
        "what": "configuration", "reason": "restart",
        "old_config_sha256": started[0]["config_sha256"], "new_config_sha256": started[1]["config_sha256"],
        "upstreams_added": ["gamma"], "upstreams_removed": ["beta"],
    }
    assert started[0]["config_sha256"] != started[1]["config_sha256"]


async def test_policy_edited_while_stopped_is_compared_with_the_policy_the_last_run_ended_with(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    _write_policy(policy, "allow")
    config = _config(tmp_path, ["alpha"], policy_file=str(policy), policy_reload_s=0.05)

    async def reload_while_running() -> None:
        _write_policy(policy, "deny")
        for _ in range(200):  # the watcher polls every 50 ms; bounded wait for its record
            if await _details(tmp_path, EventKind.CONFIG_CHANGED):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the hot reload was not recorded")

    await _run_once(config, reload_while_running)
    [reload] = await _details(tmp_path, EventKind.CONFIG_CHANGED)
    assert reload["what"] == "policy"

    await _run_once(config)  # unchanged since the reload: nothing to record
    assert len(await _details(tmp_path, EventKind.CONFIG_CHANGED)) == 1

    _write_policy(policy, "allow")  # edited while stopped
    await _run_once(config)
    changes = await _details(tmp_path, EventKind.CONFIG_CHANGED)
    assert changes[1:] == [{"what": "policy", "reason": "restart", "old_policy_hash": reload["new_policy_hash"],
                            "new_policy_hash": reload["old_policy_hash"]}]


async def test_a_rotated_secret_is_a_configuration_change(tmp_path: Path) -> None:
    await _run_once(_config(tmp_path, ["alpha"], masking={"hmac_key": "k" * 32}))
    await _run_once(_config(tmp_path, ["alpha"], masking={"hmac_key": "z" * 32}))
    [change] = await _details(tmp_path, EventKind.CONFIG_CHANGED)
    assert change["what"] == "configuration" and change["upstreams_added"] == change["upstreams_removed"] == []
    started = await _details(tmp_path, EventKind.GATEWAY_STARTED)
    assert "k" * 32 not in json.dumps(started)  # the secret goes into the hash only as its own digest


async def test_the_stop_record_says_how_the_run_ended_so_a_pruned_start_still_compares(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    _write_policy(policy, "allow")
    config = _config(tmp_path, ["alpha"], policy_file=str(policy))
    await _run_once(config)
    [stopped] = await _details(tmp_path, EventKind.GATEWAY_STOPPED)
    [started] = await _details(tmp_path, EventKind.GATEWAY_STARTED)
    assert stopped == started
    store = await open_store(f"sqlite:///{tmp_path}/audit.db")
    try:  # the retention cut takes the start record and leaves the stop record
        head = await store.fetch_head(ORIGIN)
        assert head is not None
        await prune(store, ORIGIN, head.tree_size - 1, load_signing_key(path=str(tmp_path / "restarts.key")))
    finally:
        await store.aclose()
    assert await _details(tmp_path, EventKind.GATEWAY_STARTED) == []

    _write_policy(policy, "deny")
    await _run_once(_config(tmp_path, ["alpha", "beta"], policy_file=str(policy)))
    changes = await _details(tmp_path, EventKind.CONFIG_CHANGED)
    assert [(c["what"], c.get("upstreams_added")) for c in changes] == [("configuration", ["beta"]), ("policy", None)]
    assert changes[0]["old_config_sha256"] == stopped["config_sha256"]
    assert changes[1]["old_policy_hash"] == stopped["policy_hash"]


async def test_with_nothing_left_to_compare_with_the_change_is_recorded_as_unknown(tmp_path: Path) -> None:
    await _run_once(_config(tmp_path, ["alpha"]))
    store = await open_store(f"sqlite:///{tmp_path}/audit.db")
    try:  # a crash-like end: no stop record, and the start record pruned
        head = await store.fetch_head(ORIGIN)
        assert head is not None
        await prune(store, ORIGIN, head.tree_size, load_signing_key(path=str(tmp_path / "restarts.key")))
    finally:
        await store.aclose()
    await _run_once(_config(tmp_path, ["alpha"]))
    [change] = await _details(tmp_path, EventKind.CONFIG_CHANGED)
    assert change["old_config_sha256"] is None and change["note"] == "no earlier start or stop record to compare with"


def test_the_configuration_hash_takes_integers_beyond_64_bits() -> None:
    from bastion.run_changes import settings_sha256

    rule = {"id": "r1", "action": "deny", "match": {"tool": "*", "args": {"a": {"eq": 2**70}}}}
    settings = parse_settings({"upstreams": {"a": {"command": ["x"]}}, "audit": {"origin": "o", "signing_key_env": "K"},
                               "identity": {"resource_url": "http://127.0.0.1:8080", "allow_anonymous": True},
                               "policy": {"default": "allow", "rules": [rule]}}, environ={})
    assert len(settings_sha256(settings)) == 64
