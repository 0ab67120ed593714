"""``bastion audit ...``: keys, offline verification, proofs, exports, search and retention.

Thin shells over bastion.audit.{keys,reading,export,retention} and bastion.verifier. Exit codes
(verify, verify-proof): 0 verified, 1 verification failed, 2 bad input (unreadable or malformed
files, unusable store URL). Text output escapes control characters so records cannot forge lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bastion.audit import export, reading, retention
from bastion.audit.checkpoint import MalformedNoteError, parse_checkpoint, parse_signed_note
from bastion.audit.entry import LogEntry, StoredCheckpoint
from bastion.audit.keys import (
    KeyFormatError,
    KeyRing,
    generate_signing_key,
    load_signing_key,
    parse_key_ring,
    render_signing_key,
    render_vkey,
)
from bastion.audit.log import AuditLog
from bastion.errors import BastionError, ConfigError, StorageError
from bastion.storage import AuditStore, RecordQuery, open_store
from bastion.verifier import Options, Report

T = TypeVar("T")
_UNSAFE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def escape(text: str) -> str:
    """Escape backslash, C0/C1 controls, DEL, line separators and bidi controls (one record, one line)."""
    return _UNSAFE.sub(lambda m: "\\\\" if m.group() == "\\" else f"\\u{ord(m.group()):04x}", text)


class BadInputError(ConfigError):
    """Raised when an argument or input file is unusable (exit 2)."""


# -- argument wiring -------------------------------------------------------------------------------


def register(commands: Any) -> None:
    parser = commands.add_parser("audit", help="keys, verification, proofs, export, search and retention")
    sub = parser.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("keygen", help="generate a checkpoint signing key; prints its vkey for the key ring")
    p.add_argument("--name", required=True, help="key name; by convention the log's origin")
    p.add_argument("--out", required=True, help="private key file to create (mode 0600, never overwritten)")
    p.set_defaults(run=run_keygen)

    p = sub.add_parser("pubkey", help="print the vkey of a private key")
    _key_source(p, required=True)
    p.set_defaults(run=run_pubkey)

    p = sub.add_parser("verify", help="verify a stored or exported log offline (exit 0 ok, 1 failed, 2 bad input)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", help="store URL (only read)")
    source.add_argument("--export", help="JSON Lines file written by 'bastion audit export'")
    p.add_argument("--keys", required=True, help="key ring file: one vkey per line, optional from=/until=")
    p.add_argument("--trusted", help="a signed checkpoint obtained independently (e.g. from a witness)")
    _origins(p)
    p.add_argument("--max-gap-records", type=int, default=Options.max_records_between_checkpoints)
    p.add_argument("--max-gap-seconds", type=float, default=Options.max_seconds_between_checkpoints)
    p.add_argument("--now", action="store_true", help="also flag an unsigned tail older than --max-gap-seconds")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_verify)

    p = sub.add_parser("proof", help="inclusion proof of one record against the latest checkpoint (JSON)")
    p.add_argument("--store", required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--keys", help="check the checkpoint's signature against this key ring first")
    p.add_argument("--out", help="write the proof here instead of stdout")
    p.set_defaults(run=run_proof)

    p = sub.add_parser("verify-proof", help="check an inclusion proof offline (exit 0 ok, 1 failed, 2 bad input)")
    p.add_argument("file")
    p.add_argument("--keys", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_verify_proof)

    p = sub.add_parser("export", help="write records and checkpoints as JSON Lines, verifiable with verify --export")
    p.add_argument("--store", required=True)
    _origins(p)
    p.add_argument("--keys", help="key ring; its key names are the default origins")
    p.add_argument("--from", dest="time_from", help="first record time (RFC 3339, inclusive)")
    p.add_argument("--to", dest="time_to", help="last record time (RFC 3339, exclusive)")
    p.add_argument("--out", required=True, help="file to create")
    p.add_argument("--record-as", help="append a log_exported record to this origin before writing")
    p.add_argument("--subject", help="who exports (goes into the log_exported record)")
    _key_source(p, required=False)
    p.set_defaults(run=run_export)

    p = sub.add_parser("search", help="find records (newest first)")
    p.add_argument("--store", required=True)
    p.add_argument("--origin")
    p.add_argument("--subject")
    p.add_argument("--tool")
    p.add_argument("--session")
    p.add_argument("--outcome")
    p.add_argument("--kind")
    p.add_argument("--since", help="RFC 3339, inclusive")
    p.add_argument("--until", help="RFC 3339, exclusive")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=run_search)

    p = sub.add_parser("show", help="one interaction: request, decision and response records")
    p.add_argument("--store", required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--window", type=int, default=1000, help="records after the request searched for its replies")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_show)

    p = sub.add_parser("tail", help="print the newest records; --follow keeps polling for new ones")
    p.add_argument("--store", required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("--last", type=int, default=10)
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument("--poll-s", type=float, default=1.0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_tail)

    p = sub.add_parser("prune", help="delete records below SEQ behind a signed retention checkpoint")
    p.add_argument("--store", required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("--before", type=int, required=True, help="first seq to keep")
    _key_source(p, required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_prune)


def _key_source(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--key", help="private key file")
    group.add_argument("--key-env", help="environment variable holding the private key")


def _origins(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--origin", action="append", default=[], help="origin to include (repeatable; default: the key ring's names)"
    )


# -- shared helpers ----------------------------------------------------------------------------------


def _load_key(args: argparse.Namespace) -> Any:
    return load_signing_key(path=args.key, env_var=args.key_env) if args.key else load_signing_key(env_var=args.key_env)


def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read {what} {path}: {type(exc).__name__}") from exc


def _load_ring(path: str) -> KeyRing:
    ring = parse_key_ring(_read_text(path, "key ring"))
    if not len(ring):
        raise BadInputError(f"key ring {path} holds no keys")
    return ring


def _load_trusted(path: str) -> StoredCheckpoint:
    text = _read_text(path, "trusted checkpoint")
    try:
        checkpoint = parse_checkpoint(parse_signed_note(text).text)
    except MalformedNoteError as exc:
        raise BadInputError(f"trusted checkpoint {path} is not a signed checkpoint: {exc}") from exc
    return StoredCheckpoint(checkpoint.origin, checkpoint.tree_size, checkpoint.root_hash, text, "")


def _resolve_origins(args: argparse.Namespace, ring: KeyRing | None) -> list[str]:
    origins = list(dict.fromkeys(args.origin or ([k.name for k in ring] if ring is not None else [])))
    if not origins:
        raise BadInputError("name the origins with --origin (or give --keys: its key names are the default)")
    return origins


async def _with_store(url: str, work: Callable[[AuditStore], Awaitable[T]]) -> T:
    store = await open_store(url)
    try:
        return await work(store)
    finally:
        await store.aclose()


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def _fail_input(exc: BastionError) -> int:
    print(f"bastion audit: {escape(exc.diagnostics())}", file=sys.stderr)
    return 2


def _entry_json(entry: LogEntry) -> dict[str, Any]:
    try:
        body: Any = json.loads(entry.body)
    except ValueError:
        body = None
    return {"origin": entry.origin, "seq": entry.seq, "time": entry.time, "kind": entry.kind,
            "leaf_hash": entry.leaf_hash.hex(), "body": body}


def _entry_line(entry: LogEntry) -> str:
    doc = _entry_json(entry)["body"]
    doc = doc if isinstance(doc, dict) else {}
    who, what = doc.get("who") or {}, doc.get("what") or {}
    cells = [entry.time, entry.origin, str(entry.seq), entry.kind, str(doc.get("outcome") or "-"),
             str(who.get("subject") or "-"), str(what.get("method") or "-"), str(what.get("name") or "-"),
             str((doc.get("correlation") or {}).get("session_id") or "-")]
    return "  ".join(escape(c) for c in cells)


TABLE_HEADER = "TIME  ORIGIN  SEQ  KIND  OUTCOME  SUBJECT  METHOD  NAME  SESSION"


# -- keys ------------------------------------------------------------------------------------------------


def run_keygen(args: argparse.Namespace) -> int:
    key = generate_signing_key(args.name)
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise BadInputError(f"cannot create {args.out}: {exc.strerror} (existing keys are never overwritten)") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(render_signing_key(key) + "\n")
    print(render_vkey(key.public()))
    return 0


def run_pubkey(args: argparse.Namespace) -> int:
    print(render_vkey(_load_key(args).public()))
    return 0


# -- verify ----------------------------------------------------------------------------------------------


class _Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.drawn = False

    def __call__(self, done: int) -> None:
        percent = f" ({100 * done // self.total}%)" if self.total else ""
        sys.stderr.write(f"\rverifying: {done}/{self.total} records{percent}")
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")


def run_verify(args: argparse.Namespace) -> int:
    try:
        ring = _load_ring(args.keys)
        trusted = _load_trusted(args.trusted) if args.trusted else None
        options = Options(
            max_records_between_checkpoints=args.max_gap_records,
            max_seconds_between_checkpoints=args.max_gap_seconds,
            now=datetime.now(UTC) if args.now else None,
        )
        if args.export:
            report = export.verify_export(Path(args.export), ring, trusted=trusted, origins=args.origin, options=options)
        else:
            origins = _resolve_origins(args, ring)
            if trusted is not None and trusted.origin not in origins:
                origins.append(trusted.origin)
            report = _run(_with_store(args.store, lambda store: _verify_store(store, origins, ring, trusted, options)))
    except (ConfigError, StorageError, export.ExportFormatError) as exc:
        return _fail_input(exc)
    print(report.to_json() if args.json else report.render_text(), end="\n" if args.json else "")
    return 0 if report.ok else 1


async def _verify_store(
    store: AuditStore, origins: list[str], ring: KeyRing, trusted: StoredCheckpoint | None, options: Options
) -> Report:
    for origin in origins:
        if await store.fetch_head(origin) is None and not await store.fetch_checkpoints(origin, 0, 1):
            raise BadInputError(f"nothing is stored for origin {origin!r}; name the origins with --origin")
    progress = _Progress(await reading.count_records(store, origins)) if sys.stderr.isatty() else None
    try:
        return await reading.verify_store(store, origins, ring, trusted=trusted, options=options, on_progress=progress)
    finally:
        if progress is not None:
            progress.close()
