"""``bastion tools``: driven through ``bastion.cli.main.main`` against a temporary SQLite store."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from bastion.cli.main import main
from bastion.policy.pins import PendingChange, diff_tool_definitions, make_pin
from bastion.storage import open_store
from bastion.storage.base import Store
from bastion.storage.pins import PinRecord, ToolPinStore
from bastion.storage.sqlite_pins import SqliteToolPinStore

T = TypeVar("T")

OLD = {"name": "query", "description": "Run a read-only SQL query", "inputSchema": {"type": "object"}}
NEW = {"name": "query", "description": "Run any SQL query", "inputSchema": {"type": "object"}}
CHANGE = PendingChange(make_pin("db", OLD), make_pin("db", NEW), diff_tool_definitions(OLD, NEW))
READ_OLD = {"name": "read", "description": "Read a file"}
READ_NEW = {"name": "read", "description": "Read a file and upload it"}
FS_CHANGE = PendingChange(make_pin("fs", READ_OLD), make_pin("fs", READ_NEW), diff_tool_definitions(READ_OLD, READ_NEW))


def with_pins(url: str, action: Callable[[ToolPinStore], Awaitable[T]]) -> T:
    """Run ``action`` on the store's tool pins outside the CLI (to seed or inspect)."""

    async def session() -> T:
        store = cast(Store, await open_store(url))
        try:
            return await action(store.tool_pins)
        finally:
            await store.aclose()

    return asyncio.run(session())


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A store where db/query and fs/read are pinned with a pending change, and db/ddl is pinned unchanged."""
    monkeypatch.delenv("BASTION_STORE", raising=False)
    url = f"sqlite:///{tmp_path / 'bastion.db'}"

    async def seed(pins: ToolPinStore) -> None:
        for change in (CHANGE, FS_CHANGE):
            await pins.store_pin(change.old)
            await pins.store_pending(change)
        await pins.store_pin(make_pin("db", {"name": "ddl", "description": "Change the schema"}))

    with_pins(url, seed)
    return url


def tools(url: str, *argv: str) -> int:
    return main(["tools", argv[0], "--store", url, *argv[1:]])


def test_diff_shows_each_pending_change_as_a_unified_diff(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert tools(store_url, "diff") == 0
    out = capsys.readouterr().out
    assert out.index("# db/query:") < out.index("# fs/read:")
    assert '-  "description": "Run a read-only SQL query",' in out
    assert '+  "description": "Run any SQL query",' in out
    assert f"--server db --tool query --sha256 {CHANGE.new.sha256[:16]}" in out
    assert '+  "description": "Read a file and upload it",' in out


def test_diff_shows_only_that_server_when_server_is_given(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert tools(store_url, "diff", "--server", "fs") == 0
    out = capsys.readouterr().out
    assert "# fs/read:" in out and "db/query" not in out


def test_diff_says_so_when_nothing_is_pending(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert tools(store_url, "diff", "--server", "nope") == 0
    assert capsys.readouterr().out == "no pending tool changes\n"


def test_approve_pins_new_definition_and_records_approver_when_hash_matches(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sha = CHANGE.new.sha256
    assert tools(store_url, "approve", "--server", "db", "--tool", "query", "--sha256", sha[:16].upper(),
                 "--by", "carol") == 0
    assert capsys.readouterr().out == f"pinned db/query at {sha[:12]} (approved by carol)\n"
    assert with_pins(store_url, lambda p: p.fetch_pins("db"))["query"] == CHANGE.new
    assert with_pins(store_url, lambda p: p.fetch_pending("db")) == {}
    assert with_pins(store_url, lambda p: p.fetch_pending("fs")) == {"read": FS_CHANGE}


def test_approve_records_the_login_name_when_by_is_not_given(
    store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(getpass, "getuser", lambda: "dave")
    assert tools(store_url, "approve", "--server", "fs", "--tool", "read") == 0
    records: list[PinRecord] = list(with_pins(store_url, lambda p: p.list_pins("fs")))
    assert [(r.pin, r.approved_by) for r in records] == [(FS_CHANGE.new, "dave")]


def test_approve_exits_2_when_no_approver_name_is_known(
    store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unknown() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(getpass, "getuser", unknown)
    assert tools(store_url, "approve", "--server", "fs", "--tool", "read") == 2
    assert "--by NAME" in capsys.readouterr().err
    assert with_pins(store_url, lambda p: p.fetch_pending("fs")) == {"read": FS_CHANGE}


def test_approve_exits_1_and_changes_nothing_when_hash_differs(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tools(store_url, "approve", "--server", "db", "--tool", "query", "--sha256", CHANGE.old.sha256[:16],
                 "--by", "carol") == 1
    assert "review it again" in capsys.readouterr().err
    assert with_pins(store_url, lambda p: p.fetch_pins("db"))["query"] == CHANGE.old
    assert with_pins(store_url, lambda p: p.fetch_pending("db")) == {"query": CHANGE}


def test_approve_exits_2_when_hash_is_not_hex(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert tools(store_url, "approve", "--server", "db", "--tool", "query", "--sha256", "xyz", "--by", "c") == 2
    assert "8 to 64 hex digits" in capsys.readouterr().err
    assert with_pins(store_url, lambda p: p.fetch_pending("db")) == {"query": CHANGE}


def test_approve_exits_1_when_nothing_is_pending_for_the_tool(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tools(store_url, "approve", "--server", "db", "--tool", "ddl", "--by", "carol") == 1
    assert "no pending change for db/ddl" in capsys.readouterr().err


def test_approve_exits_1_when_the_change_was_replaced_meanwhile(
    store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The upstream changes the tool again between the operator's read and the approval.
    newer = {"name": "query", "description": "Run any SQL query, then email it", "inputSchema": {"type": "object"}}
    replaced = PendingChange(CHANGE.old, make_pin("db", newer), diff_tool_definitions(OLD, newer))
    approve = SqliteToolPinStore.approve_pending

    async def approve_after_replacement(self: SqliteToolPinStore, *args: Any, **kwargs: Any) -> PinRecord | None:
        await self.store_pending(replaced)
        return await approve(self, *args, **kwargs)

    monkeypatch.setattr(SqliteToolPinStore, "approve_pending", approve_after_replacement)
    assert tools(store_url, "approve", "--server", "db", "--tool", "query", "--by", "carol") == 1
    assert "changed or was approved meanwhile" in capsys.readouterr().err
    assert with_pins(store_url, lambda p: p.fetch_pending("db")) == {"query": replaced}


def test_list_shows_pins_with_status_and_approver(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert tools(store_url, "approve", "--server", "fs", "--tool", "read", "--by", "carol") == 0
    capsys.readouterr()
    assert tools(store_url, "list", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["server"], r["tool"], r["status"], r["approved_by"]) for r in rows] == [
        ("db", "ddl", "pinned", None), ("db", "query", "change pending", None), ("fs", "read", "pinned", "carol")]
    assert rows[1]["sha256"] == CHANGE.old.sha256
    assert all(r["pinned_at"].endswith("Z") for r in rows)
    assert tools(store_url, "list", "--server", "db") == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in table] == [
        ["SERVER", "TOOL", "SHA256"], ["db", "ddl", make_pin("db", {"name": "ddl", "description": "Change the schema"})
                                      .sha256[:12]], ["db", "query", CHANGE.old.sha256[:12]]]
    assert table[2].split()[3:5] == ["change", "pending"] and table[2].endswith("(gateway)")
