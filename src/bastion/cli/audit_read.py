"""``bastion audit search|show|tail|proof|unseal|export``: every command that releases records.

Thin shells over audit/{reading,proving,export,sealing}.py. Each one first records the read in the log
(cli/audit_reader.py: a ``log_read``, or ``log_exported`` for export, durable and signed) and
only then reads; if the record cannot be written the command prints why, exits 2 and releases
nothing. Malformed arguments (numbers, times, a search cursor) are refused by argparse, exit 2,
before anything is recorded. Text output escapes control characters so records cannot forge lines.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from bastion.audit import export, proving, reading
from bastion.audit.entry import LogEntry
from bastion.audit.record import EventKind
from bastion.audit.seal_keys import load_seal_private_key
from bastion.audit.sealing import SealedField, unseal_record
from bastion.cli._audit_shared import (
    BadInputError,
    add_origins,
    escape,
    load_ring,
    positive_seconds,
    run,
    time_bound,
    whole_number,
    with_store,
)
from bastion.cli._store import render_table
from bastion.cli.audit_reader import (
    add_recording_options,
    append_read_record,
    fail_closed,
    resolve_reader,
    run_recorded,
)
from bastion.errors import StorageError
from bastion.storage import AuditStore, OpenMode, RecordQuery, SearchCursor, Store
from bastion.storage.base import MAX_SEARCH_LIMIT

SEQ = whole_number(0, reading.MAX_SEQ)
COUNT = whole_number(0, reading.MAX_SEQ)
SEARCH_LIMIT = whole_number(1, MAX_SEARCH_LIMIT, "; page through more with --page-after")


def register(sub: Any) -> None:
    """Add the reading commands to the ``audit`` sub-command group."""
    p = sub.add_parser("search", help="find records (newest first)")
    p.add_argument("--origin")
    p.add_argument("--subject", help="records whose who.subject is this")
    p.add_argument("--tool")
    p.add_argument("--session")
    p.add_argument("--outcome")
    p.add_argument("--kind")
    p.add_argument("--since", type=time_bound, help="records at or after this RFC 3339 time (with Z or an offset)")
    p.add_argument("--until", type=time_bound, help="records before this RFC 3339 time (with Z or an offset)")
    p.add_argument("--limit", type=SEARCH_LIMIT, default=100, help=f"at most this many records, 1..{MAX_SEARCH_LIMIT}")
    p.add_argument("--page-after", type=search_cursor, metavar="CURSOR",
                   help="the next page: the cursor a search printed when it stopped at --limit")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    add_recording_options(p, taken=frozenset({"--subject"}))
    p.set_defaults(run=run_search)

    p = sub.add_parser("show", help="one interaction: the request record, then its approval and response records")
    p.add_argument("--origin", required=True)
    p.add_argument("--seq", type=SEQ, required=True)
    p.add_argument("--window", type=COUNT, default=1000, help="records after the request searched for its replies")
    p.add_argument("--json", action="store_true")
    add_recording_options(p)
    p.set_defaults(run=run_show)

    p = sub.add_parser("tail", help="print the newest records; --follow keeps polling for new ones")
    p.add_argument("--origin", required=True)
    p.add_argument("--last", type=COUNT, default=10)
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument("--poll-s", type=positive_seconds, default=1.0)
    p.add_argument("--json", action="store_true")
    add_recording_options(p)
    p.set_defaults(run=run_tail)

    p = sub.add_parser("proof", help="inclusion proof of one record against the latest checkpoint (JSON)")
    p.add_argument("--origin", required=True)
    p.add_argument("--seq", type=SEQ, required=True)
    p.add_argument("--keys", help="check the checkpoint's signature against this key ring first")
    p.add_argument("--out", help="write the proof here instead of stdout")
    add_recording_options(p)
    p.set_defaults(run=run_proof)

    p = sub.add_parser("unseal", help="decrypt the raw value sealed in one record (exit 0 ok, 1 failed, 2 bad input)")
    p.add_argument("--origin", required=True)
    p.add_argument("--seq", type=SEQ, required=True)
    p.add_argument("--key", required=True, help="auditor private key file written by 'bastion audit sealkey'")
    p.add_argument("--field", choices=[f.value for f in SealedField], help="which sealed value (default: the only one)")
    add_recording_options(p, taken=frozenset({"--key", "--key-env"}))
    p.set_defaults(run=run_unseal)

    p = sub.add_parser("export", help="write records and checkpoints as JSON Lines, verifiable with verify --export")
    add_origins(p)
    p.add_argument("--from", dest="time_from", type=time_bound, help="records at or after this RFC 3339 time")
    p.add_argument("--to", dest="time_to", type=time_bound, help="records before this RFC 3339 time")
    p.add_argument("--out", required=True, help="file to create")
    add_recording_options(p)
    p.set_defaults(run=run_export)


def _present(detail: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in detail.items() if v is not None}


def render_cursor(cursor: SearchCursor) -> str:
    """The ``--page-after`` value that continues a search past ``cursor``: base64url of a JSON
    ``[time, origin, seq]``, safe to paste into a shell whatever the origin holds."""
    doc = json.dumps([cursor.time, cursor.origin, cursor.seq], ensure_ascii=True, separators=(",", ":"))
    return base64.urlsafe_b64encode(doc.encode("ascii")).decode("ascii").rstrip("=")


def search_cursor(text: str) -> SearchCursor:
    """An argparse ``type``: a cursor ``render_cursor`` made."""
    refusal = argparse.ArgumentTypeError(f"{text!r} is not a cursor printed by an earlier search")
    try:
        doc = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise refusal from exc
    match doc:
        case [str(time), str(origin), int(seq)] if not isinstance(seq, bool) and 0 <= seq <= reading.MAX_SEQ:
            return SearchCursor(time, origin, seq)
    raise refusal


# -- search, show, tail ------------------------------------------------------------------------------


@fail_closed
def run_search(args: argparse.Namespace) -> int:
    query = RecordQuery(
        origin=args.origin,
        subject=args.subject,
        tool=args.tool,
        session_id=args.session,
        outcome=args.outcome,
        kind=args.kind,
        time_from=args.since,
        time_to=args.until,
        limit=args.limit,
        after=args.page_after,
    )
    detail = {"command": "search", "query": _present(dataclasses.asdict(query))}
    found = run_recorded(resolve_reader(args), detail, lambda store: store.search_entries(query))
    _print_entries(found, args.json, header=True)
    if len(found) == args.limit:
        last = found[-1]
        print(
            f"bastion audit search: stopped at --limit {args.limit}; more records may match. Next page: "
            f"--page-after {render_cursor(SearchCursor(last.time, last.origin, last.seq))}",
            file=sys.stderr,
        )
    return 0


@fail_closed
def run_show(args: argparse.Namespace) -> int:
    detail = {"command": "show", "origin": args.origin, "seq": args.seq}
    found = run_recorded(
        resolve_reader(args), detail, lambda s: reading.fetch_interaction(s, args.origin, args.seq, args.window)
    )
    if args.json:
        print(json.dumps([_entry_json(e) for e in found], ensure_ascii=True, indent=2))
        return 0
    for entry in found:
        role = "request" if entry is found[0] else entry.kind
        print(f"== {escape(role)}: {escape(entry.origin)} seq {entry.seq} at {escape(entry.time)}")
        # ensure_ascii escapes every control and non-ASCII character inside strings: no forged lines.
        print(json.dumps(_entry_json(entry)["body"], ensure_ascii=True, indent=2, sort_keys=True))
    return 0


@fail_closed
def run_tail(args: argparse.Namespace) -> int:
    # --follow is recorded once, at the start: the record says the reader kept watching.
    detail = {"command": "tail", "origin": args.origin, "last": args.last, "follow": args.follow}

    async def follow(store: AuditStore) -> None:
        start = await reading.fetch_tail_start(store, args.origin, args.last)
        entries = reading.follow_entries(store, args.origin, start, args.poll_s, args.follow, on_retry=_tell_retry)
        async for entry in entries:
            _print_entries([entry], args.json, header=False)
            sys.stdout.flush()

    run_recorded(resolve_reader(args), detail, follow)
    return 0


def _tell_retry(exc: StorageError, pause_s: float) -> None:
    print(f"bastion audit tail: cannot read the store, retrying in {pause_s:g} s: {escape(str(exc))}", file=sys.stderr)


# -- proof, unseal -------------------------------------------------------------------------------------


@fail_closed
def run_proof(args: argparse.Namespace) -> int:
    ring = load_ring(args.keys) if args.keys else None
    detail = {"command": "proof", "origin": args.origin, "seq": args.seq}
    proof = run_recorded(
        resolve_reader(args), detail, lambda store: proving.build_inclusion_proof(store, args.origin, args.seq)
    )
    if ring is not None:
        proving.verify_proof(proof, ring)
    text = proving.render_proof(proof)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


@fail_closed
def run_unseal(args: argparse.Namespace) -> int:
    key = load_seal_private_key(args.key)
    # Which value was opened, never the value itself.
    detail = _present({"command": "unseal", "origin": args.origin, "seq": args.seq, "field": args.field})
    entry = run_recorded(resolve_reader(args), detail, lambda store: store.fetch_entry(args.origin, args.seq))
    if entry is None:
        raise StorageError(f"no record {args.origin!r}/{args.seq} in the store")
    _, value = unseal_record(entry.body, key, SealedField(args.field) if args.field else None)
    print(json.dumps(value, ensure_ascii=True))  # escapes controls and bidi: the raw value cannot forge lines
    return 0


# -- export --------------------------------------------------------------------------------------------


@fail_closed
def run_export(args: argparse.Namespace) -> int:
    requested = list(dict.fromkeys(args.origin))
    reader = resolve_reader(args)
    window = export.ExportWindow(args.time_from, args.time_to)
    try:
        handle = open(args.out, "x", encoding="utf-8")
    except OSError as exc:
        raise BadInputError(f"cannot create {args.out}: {exc.strerror}") from exc

    async def work(store: Store) -> export.ExportStats:
        origins = requested or await store.fetch_origins()
        if not origins:
            raise BadInputError("the store holds no audit log")
        detail = {"command": "export", "origins": origins, "from": args.time_from, "to": args.time_to,
                  "file": Path(args.out).name}
        await append_read_record(store, reader, _present(detail), EventKind.LOG_EXPORTED)
        return await export.write_export(store, origins, window, handle)

    try:
        with handle:
            stats = run(with_store(reader.store_url, work, mode=OpenMode.EXISTING))
    except BaseException:
        Path(args.out).unlink(missing_ok=True)  # never leave a partial or unrecorded export behind
        raise
    stamps = f" ({stats.timestamps} RFC 3161 time-stamp tokens)" if stats.timestamps else ""
    print(
        f"exported {stats.records} records and {stats.checkpoints} checkpoints{stamps} of "
        f"{', '.join(escape(o) for o in stats.origins)} to {escape(args.out)}",
        file=sys.stderr,
    )
    if stats.unsigned:
        print(f"left out {stats.unsigned} records after the newest checkpoint: no signature covers them yet", file=sys.stderr)
    return 0


# -- output ----------------------------------------------------------------------------------------------


def _entry_json(entry: LogEntry) -> dict[str, Any]:
    try:
        body: Any = json.loads(entry.body)
    except ValueError:
        body = None
    return {
        "origin": entry.origin,
        "seq": entry.seq,
        "time": entry.time,
        "kind": entry.kind,
        "leaf_hash": entry.leaf_hash.hex(),
        "body": body,
    }


TABLE_HEADER = ("TIME", "ORIGIN", "SEQ", "KIND", "OUTCOME", "SUBJECT", "METHOD", "NAME", "SESSION")


def _group(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name)
    return value if isinstance(value, dict) else {}


def _entry_row(entry: LogEntry) -> tuple[str | None, ...]:
    body = _entry_json(entry)["body"]
    doc: dict[str, Any] = body if isinstance(body, dict) else {}
    who, what, correlation = _group(doc, "who"), _group(doc, "what"), _group(doc, "correlation")
    cells = [
        entry.time,
        entry.origin,
        entry.seq,
        entry.kind,
        doc.get("outcome"),
        who.get("subject"),
        what.get("method"),
        what.get("name"),
        correlation.get("session_id"),
    ]
    return tuple(None if c is None else escape(str(c)) for c in cells)


def _print_entries(entries: list[LogEntry], as_json: bool, *, header: bool) -> None:
    if as_json:
        for entry in entries:
            print(json.dumps(_entry_json(entry), ensure_ascii=True, sort_keys=True))
        return
    rows = [_entry_row(entry) for entry in entries]
    if header:
        print(render_table(TABLE_HEADER, rows))
        return
    for row in rows:
        print("  ".join("-" if cell is None else cell for cell in row))
