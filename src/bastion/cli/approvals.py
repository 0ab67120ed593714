"""``bastion approvals list|show|approve|deny``: review held calls from a terminal.

Reads work against the gateway's admin API (``--url`` + ``--token``) or the store directly
(``--store URL``). Decisions go only through the admin API: the gateway authenticates the reviewer
from the token and records the review in its audit log; there is no ``--as-subject`` to spoof.
Exit codes: 0 done, 1 refused / not found / gateway error, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import httpx
import orjson

from bastion.admin.approvals import render_approval
from bastion.approval.model import ApprovalState
from bastion.errors import BastionError, ConfigError

TOKEN_ENV = "BASTION_TOKEN"
TIMEOUT_S = 30.0


def register(commands: Any) -> None:
    """Add ``approvals`` and its sub-commands to the ``bastion`` parser."""
    parser = commands.add_parser("approvals", help="list, show, approve or deny held calls")
    parser.add_argument("--url", help="gateway base URL, e.g. https://bastion.internal:8443")
    parser.add_argument("--token", help=f"bearer token of the reviewer (default: ${TOKEN_ENV})")
    parser.add_argument("--store", help="read directly from a store URL (list/show only)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list approvals (pending by default)")
    listing.add_argument("--state", default="pending", choices=[*(s.value for s in ApprovalState), "all"])
    listing.add_argument("--limit", type=int, default=100)
    for name in ("show", "approve", "deny"):
        action = actions.add_parser(name, help=f"{name} one approval")
        action.add_argument("approval_id")
        if name != "show":
            action.add_argument("--reason", required=name == "deny", help="why (required to deny)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Entry point for ``bastion approvals``."""
    return asyncio.run(run_async(args, sys.stdout))


async def run_async(args: argparse.Namespace, out: TextIO, transport: httpx.AsyncBaseTransport | None = None) -> int:
    """Run one action; ``transport`` lets tests talk to an in-process gateway.

    Raises:
        ConfigError: neither or the wrong source was given.  BastionError: the gateway refused.
    """
    if args.store and args.action in ("approve", "deny"):
        raise ConfigError("decisions go through the admin API: use --url and --token, not --store")
    if args.store:
        items = await _read_store(args)
    elif args.url:
        items = await _call_api(args, transport)
    else:
        raise ConfigError("give --url (admin API) or --store (read-only)")
    _print(items, args, out)
    return 0


async def _read_store(args: argparse.Namespace) -> list[dict[str, Any]]:
    from bastion.approval.service import ApprovalService
    from bastion.storage import open_store

    store: Any = await open_store(args.store)
    try:
        async def no_record(_event: Any) -> None:
            raise BastionError("read-only access records nothing")

        service = ApprovalService(store.approvals, no_record)
        if args.action == "show":
            return [render_approval(await service.fetch(args.approval_id))]
        state = None if args.state == "all" else ApprovalState(args.state)
        return [render_approval(a) for a in await store.approvals.list_approvals(state, args.limit)]
    finally:
        await store.aclose()


async def _call_api(args: argparse.Namespace, transport: httpx.AsyncBaseTransport | None) -> list[dict[str, Any]]:
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise ConfigError(f"the admin API needs --token or ${TOKEN_ENV}")
    base = args.url.rstrip("/") + "/admin/approvals"
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT_S, headers=headers) as client:
        try:
            if args.action == "list":
                params = {"limit": str(args.limit)} | ({} if args.state == "all" else {"state": args.state})
                response = await client.get(base, params=params)
            elif args.action == "show":
                response = await client.get(f"{base}/{args.approval_id}")
            else:
                body = {"reason": args.reason} if args.reason else {}
                response = await client.post(f"{base}/{args.approval_id}/{args.action}", json=body)
        except httpx.HTTPError as exc:
            raise BastionError(f"cannot reach {args.url}: {type(exc).__name__}") from exc
    document = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if not response.is_success:
        raise BastionError(f"gateway answered {response.status_code}: {document.get('message', document.get('error'))}")
    return list(document["approvals"]) if args.action == "list" else [document]


def _print(items: Sequence[dict[str, Any]], args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        out.write(orjson.dumps(items if args.action == "list" else items[0], option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    for item in items:
        votes = ", ".join(f"{r['subject']}:{r['verdict']}" for r in item["reviews"]) or "-"
        out.write(f"{item['id']}  {item['state']:<9} {item['caller']['subject']} -> {item['server']}/{item['tool']}"
                  f"  rule={item['rule_id']}  approvers={','.join(item['approvers']) or '-'}  votes={votes}\n")
        if args.action != "list":
            out.write(f"  arguments: {orjson.dumps(item['arguments']).decode()}\n  reason: {item['reason'] or '-'}\n")
