"""``bastion tools list|diff|approve``: review tool-definition changes and pin approved ones.

Thin shell over ``policy/pins.py`` (hashes, diffs) and the store's ``tool_pins``. Exit codes:
0 done, 1 nothing pending for that tool or it changed since it was reviewed, 2 bad input.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
import time
from typing import Any

from bastion.cli._store import add_store_argument, render_table, render_time, run_with_store
from bastion.errors import ConfigError
from bastion.storage.base import Store
from bastion.storage.pins import ToolPinStore

_SHA256_PREFIX = re.compile(r"[0-9a-f]{8,64}")
SHORT_HASH = 12


def register(commands: Any) -> None:
    """Add ``tools list|diff|approve`` to the ``bastion`` sub-commands."""
    parser = commands.add_parser("tools", help="review and approve changed tool definitions (pins)")
    sub = parser.add_subparsers(dest="tools_command", required=True)

    listing = sub.add_parser("list", help="list pinned tools and whether a change awaits review")
    add_store_argument(listing)
    listing.add_argument("--server", help="only this upstream")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(run=run, action=list_tools)

    diff = sub.add_parser("diff", help="show pending tool-definition changes as unified diffs")
    add_store_argument(diff)
    diff.add_argument("--server", help="only this upstream")
    diff.set_defaults(run=run, action=diff_tools)

    approve = sub.add_parser("approve", help="pin the pending definition of one tool")
    add_store_argument(approve)
    approve.add_argument("--server", required=True, help="the upstream's name")
    approve.add_argument("--tool", required=True, help="the tool's name")
    approve.add_argument("--sha256", help="refuse unless the pending definition's hash starts with this (from diff)")
    approve.add_argument("--by", help="who approves, recorded with the pin (default: your login name)")
    approve.set_defaults(run=run, action=approve_tool)


def run(args: argparse.Namespace) -> int:
    """Run the chosen ``tools`` sub-command against the store."""

    async def act(store: Store) -> int:
        result: int = await args.action(store.tool_pins, args)
        return result

    return run_with_store(args, act)


async def list_tools(pins: ToolPinStore, args: argparse.Namespace) -> int:
    """Print every pin with its approver, as a table or JSON."""
    pending = {(c.new.server, c.new.name) for c in await pins.list_pending(args.server)}
    records = await pins.list_pins(args.server)
    status = ["change pending" if (r.pin.server, r.pin.name) in pending else "pinned" for r in records]
    if args.json:
        print(json.dumps([
            {"server": r.pin.server, "tool": r.pin.name, "sha256": r.pin.sha256, "status": s,
             "pinned_at": render_time(r.pinned_at), "approved_by": r.approved_by}
            for r, s in zip(records, status, strict=True)
        ], indent=2))
        return 0
    header = ("SERVER", "TOOL", "SHA256", "STATUS", "PINNED", "APPROVED BY")
    print(render_table(header, [
        (r.pin.server, r.pin.name, r.pin.sha256[:SHORT_HASH], s, render_time(r.pinned_at),
         r.approved_by or "(gateway)")
        for r, s in zip(records, status, strict=True)
    ]))
    return 0


async def diff_tools(pins: ToolPinStore, args: argparse.Namespace) -> int:
    """Print each pending change as a unified diff with the command that approves it."""
    changes = await pins.list_pending(args.server)
    if not changes:
        print("no pending tool changes")
    for change in changes:
        new = change.new
        print(f"# {new.server}/{new.name}: pinned {change.old.sha256[:SHORT_HASH]} -> now {new.sha256[:SHORT_HASH]}")
        print(change.diff)
        print(f"# approve: bastion tools approve --server {new.server} --tool {new.name} --sha256 {new.sha256[:16]}\n")
    return 0


async def approve_tool(pins: ToolPinStore, args: argparse.Namespace) -> int:
    """Pin the pending definition of ``--server``/``--tool`` and record who approved it.

    Raises:
        ConfigError: ``--sha256`` is not 8-64 hex digits, or no approver name is known.
    """
    expected = None if args.sha256 is None else args.sha256.lower()
    if expected is not None and not _SHA256_PREFIX.fullmatch(expected):
        raise ConfigError(f"--sha256 {args.sha256!r}: expected 8 to 64 hex digits from 'bastion tools diff'")
    approver = args.by or _login_name()
    where = f"{args.server}/{args.tool}"
    change = (await pins.fetch_pending(args.server)).get(args.tool)
    if change is None:
        print(f"bastion: no pending change for {where}", file=sys.stderr)
        return 1
    if expected is not None and not change.new.sha256.startswith(expected):
        print(f"bastion: pending definition of {where} is {change.new.sha256[:SHORT_HASH]}, not {expected};"
              " review it again with 'bastion tools diff'", file=sys.stderr)
        return 1
    record = await pins.approve_pending(
        args.server, args.tool, change.new.sha256, approved_by=approver, approved_at=time.time()
    )
    if record is None:
        print(f"bastion: {where} changed or was approved meanwhile; review it again", file=sys.stderr)
        return 1
    print(f"pinned {where} at {record.pin.sha256[:SHORT_HASH]} (approved by {record.approved_by})")
    return 0


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError) as exc:  # no LOGNAME/USER and no passwd entry (e.g. some containers)
        raise ConfigError("cannot tell who is approving; pass --by NAME") from exc
