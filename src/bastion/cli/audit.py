"""``bastion audit ...``: the command group, and ``prune`` (retention).

The sub-commands live by what they do: cli/audit_keys.py (keygen, pubkey, sealkey),
cli/audit_verify.py (verify, verify-proof: offline, never recorded), cli/audit_read.py (search,
show, tail, proof, unseal, export: each recorded in the log first, fail closed). Exit codes:
0 done or verified, 1 verification or the command failed, 2 bad input (unreadable or malformed
files, unusable store URL, no way to record a read, a read that could not be recorded).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from bastion.audit import retention
from bastion.audit.retention import PruneResult
from bastion.audit.witness import configured_witnesses
from bastion.cli import audit_keys, audit_read, audit_verify
from bastion.cli._audit_shared import add_key_source, escape, require_key, run, with_store
from bastion.cli._store import add_store_argument, resolve_store_url
from bastion.config import load_settings
from bastion.storage import OpenMode


def register(commands: Any) -> None:
    """Add ``bastion audit`` and its sub-commands."""
    parser = commands.add_parser("audit", help="keys, verification, proofs, export, search and retention")
    sub = parser.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    audit_keys.register(sub)
    audit_verify.register(sub)
    audit_read.register(sub)

    p = sub.add_parser("prune", help="delete records below SEQ behind a signed retention checkpoint")
    add_store_argument(p)
    p.add_argument("--origin", required=True)
    p.add_argument("--before", type=int, required=True, help="first seq to keep")
    add_key_source(p, required=True)
    p.add_argument(
        "--config",
        help="the gateway's configuration: the retention checkpoint is copied to its audit.witnesses before "
        "anything is deleted, and nothing is deleted if one of them does not take it",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_prune)


def run_prune(args: argparse.Namespace) -> int:
    key = require_key(args)
    witness_settings = load_settings(args.config).audit.witnesses if args.config else None
    if witness_settings is None:
        print("bastion audit: no --config: the retention checkpoint is kept in the database only", file=sys.stderr)

    async def prune() -> PruneResult:
        async with httpx.AsyncClient() as client:
            witnesses = configured_witnesses(witness_settings, client) if witness_settings else []
            return await with_store(
                resolve_store_url(args),
                lambda store: retention.prune(store, args.origin, args.before, key, witnesses=witnesses),
                mode=OpenMode.EXISTING,  # a mistyped path is refused, not created
            )

    result = run(prune())
    if args.json:
        print(
            json.dumps(
                {
                    "origin": result.origin,
                    "first_retained_seq": result.tree_size,
                    "records_deleted": result.records_deleted,
                    "checkpoint": result.note,
                }
            )
        )
    else:
        print(
            f"pruned {result.records_deleted} records of {escape(result.origin)} below seq {result.tree_size}; "
            "retention checkpoint:"
        )
        print(result.note, end="")
    return 0
