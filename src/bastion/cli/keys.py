"""``bastion keys create|list|revoke``: manage API keys in the store.

Thin shell over ``identity/apikey.py`` (key format, hashing, expiry rules) and the store's
``api_keys``. Exit codes: 0 done, 1 no such key, 2 bad input or no store.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from bastion.cli._store import add_store_argument, render_table, render_time, run_with_store
from bastion.identity.apikey import ApiKeyRecord, ApiKeyStore, create_api_key, parse_duration
from bastion.storage.base import Store


def register(commands: Any) -> None:
    """Add ``keys create|list|revoke`` to the ``bastion`` sub-commands."""
    parser = commands.add_parser("keys", help="create, list and revoke API keys")
    sub = parser.add_subparsers(dest="keys_command", required=True)

    create = sub.add_parser("create", help="create a key and print it once")
    add_store_argument(create)
    create.add_argument("--subject", required=True, help="who the key identifies")
    create.add_argument("--groups", default="", help="comma-separated group names, e.g. ops,dev")
    create.add_argument("--expires", metavar="DURATION", help="lifetime such as 30d, 12h or 1h30m (default: never)")
    create.set_defaults(run=run, action=create_key)

    listing = sub.add_parser("list", help="list every key (never its secret or hash)")
    add_store_argument(listing)
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(run=run, action=list_keys)

    revoke = sub.add_parser("revoke", help="revoke a key now; exit 1 if it does not exist")
    add_store_argument(revoke)
    revoke.add_argument("key_id", metavar="ID", help="the key id shown by create and list")
    revoke.set_defaults(run=run, action=revoke_key)


def run(args: argparse.Namespace) -> int:
    """Run the chosen ``keys`` sub-command against the store."""

    async def act(store: Store) -> int:
        result: int = await args.action(store.api_keys, args)
        return result

    return run_with_store(args, act)


async def create_key(keys: ApiKeyStore, args: argparse.Namespace) -> int:
    """Create a key; the plaintext goes to stdout once and is never stored."""
    expires_in_s = None if args.expires is None else parse_duration(args.expires)
    groups = sorted({g.strip() for g in args.groups.split(",") if g.strip()})
    plaintext, record = await create_api_key(keys, args.subject, groups, expires_in_s)
    print(f"key id:  {record.key_id}")
    print(f"subject: {record.subject}")
    print(f"groups:  {', '.join(groups) or '-'}")
    print(f"expires: {render_time(record.expires_at) or 'never'}")
    print("Store this key now; it cannot be shown again:", file=sys.stderr)
    print(plaintext)
    return 0


async def list_keys(keys: ApiKeyStore, args: argparse.Namespace) -> int:
    """Print every key, oldest first, as a table or JSON."""
    now = time.time()
    rows = [_describe(record, now) for record in await keys.list_api_keys()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("ID", "SUBJECT", "GROUPS", "STATUS", "CREATED", "EXPIRES", "REVOKED", "LAST USED")
    columns = ("key_id", "subject", "groups", "status", "created_at", "expires_at", "revoked_at", "last_used_at")
    table = [tuple(",".join(r[c]) if c == "groups" else r[c] for c in columns) for r in rows]
    print(render_table(header, table))
    return 0


async def revoke_key(keys: ApiKeyStore, args: argparse.Namespace) -> int:
    """Revoke a key from now on; an earlier revocation is kept."""
    record = await keys.fetch_api_key(args.key_id)
    if record is None:
        print(f"bastion: no API key {args.key_id!r}", file=sys.stderr)
        return 1
    now = time.time()
    await keys.revoke_api_key(record.key_id, now)
    revoked_at = now if record.revoked_at is None else min(record.revoked_at, now)
    print(f"revoked {record.key_id} ({record.subject}) as of {render_time(revoked_at)}")
    return 0


def _describe(record: ApiKeyRecord, now: float) -> dict[str, Any]:
    """What ``list`` shows of a record: everything except the secret's hash."""
    if record.revoked_at is not None and record.revoked_at <= now:
        status = "revoked"
    elif record.expires_at is not None and now >= record.expires_at:
        status = "expired"
    else:
        status = "active"
    return {
        "key_id": record.key_id,
        "subject": record.subject,
        "groups": sorted(record.groups),
        "status": status,
        "created_at": render_time(record.created_at),
        "expires_at": render_time(record.expires_at),
        "revoked_at": render_time(record.revoked_at),
        "last_used_at": render_time(record.last_used_at),
    }
