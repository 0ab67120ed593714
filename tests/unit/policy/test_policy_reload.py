"""Hot reload: a valid new file swaps the engine after ``on_change``; an invalid one keeps the old engine."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from conftest import build_request

from bastion.errors import ConfigError
from bastion.policy import Action, PolicyWatcher

ALLOW = "policy:\n  default: allow\n"
DENY = "policy:\n  default: deny\n"

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.changes: list[tuple[str, str]] = []
        self.errors: list[ConfigError] = []
        self.fail = fail

    async def on_change(self, old: str, new: str) -> None:
        if self.fail:
            raise RuntimeError("audit store down")
        self.changes.append((old, new))

    def on_error(self, error: ConfigError) -> None:
        self.errors.append(error)


async def open_watcher(path: Path, recorder: Recorder) -> PolicyWatcher:
    return await PolicyWatcher.open(path, on_change=recorder.on_change, on_error=recorder.on_error)


async def test_engine_is_swapped_and_callback_gets_hashes_when_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ALLOW)
    recorder = Recorder()
    watcher = await open_watcher(path, recorder)
    in_flight = watcher.engine
    assert await watcher.check_once() is False
    path.write_text(DENY)
    assert await watcher.check_once() is True
    assert recorder.changes == [(in_flight.policy_hash, watcher.engine.policy_hash)]
    assert in_flight.policy_hash != watcher.engine.policy_hash
    assert in_flight.decide(build_request()).action is Action.ALLOW
    assert watcher.engine.decide(build_request()).action is Action.DENY


async def test_old_engine_is_kept_and_error_reported_once_when_file_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ALLOW)
    recorder = Recorder()
    watcher = await open_watcher(path, recorder)
    before = watcher.engine
    path.write_text("policy:\n  default: maybe\n")
    assert await watcher.check_once() is False
    assert await watcher.check_once() is False
    assert watcher.engine is before
    assert len(recorder.errors) == 1
    assert "policy.default" in str(recorder.errors[0])
    assert recorder.changes == []
    path.write_text(DENY)
    assert await watcher.check_once() is True
    assert watcher.engine.decide(build_request()).action is Action.DENY


async def test_invalid_cel_is_rejected_when_reloading(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ALLOW)
    recorder = Recorder()
    watcher = await open_watcher(path, recorder)
    path.write_text("policy:\n  rules:\n    - {id: r, when: 'args.(', action: allow}\n")
    assert await watcher.check_once() is False
    assert "policy.rules[0](r).when" in str(recorder.errors[0])


async def test_old_engine_is_kept_when_file_disappears(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ALLOW)
    recorder = Recorder()
    watcher = await open_watcher(path, recorder)
    path.unlink()
    assert await watcher.check_once() is False
    assert watcher.engine.decide(build_request()).action is Action.ALLOW
    assert len(recorder.errors) == 1
    path.write_text(ALLOW)
    assert await watcher.check_once() is False
    assert recorder.changes == []


async def test_no_callback_when_only_formatting_changes(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ALLOW)
    recorder = Recorder()
    watcher = await open_watcher(path, recorder)
    path.write_text("# reviewed\npolicy: {default: allow, rules: []}\n")
    assert await watcher.check_once() is False
    assert recorder.changes == []


async def test_policy_is_not_swapped_when_change_callback_fails(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ALLOW)
    recorder = Recorder(fail=True)
    watcher = await open_watcher(path, recorder)
    before = watcher.engine
    path.write_text(DENY)
    assert await watcher.check_once() is False
    assert watcher.engine is before
    recorder.fail = False
    assert await watcher.check_once() is True
    assert recorder.changes == [(before.policy_hash, watcher.engine.policy_hash)]


async def test_open_raises_when_first_file_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules: []\n")
    with pytest.raises(ConfigError, match="exactly one top-level key, 'policy'"):
        await open_watcher(path, Recorder())


async def test_run_polls_until_a_change_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ALLOW)
    changed = anyio.Event()
    seen: list[tuple[str, str]] = []

    async def on_change(old: str, new: str) -> None:
        seen.append((old, new))
        changed.set()

    watcher = await PolicyWatcher.open(path, on_change=on_change, interval_s=0.01)
    path.write_text(DENY)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(watcher.run)
            await changed.wait()
            group.cancel_scope.cancel()
    assert seen == [(seen[0][0], watcher.engine.policy_hash)]
    assert watcher.engine.decide(build_request()).action is Action.DENY
