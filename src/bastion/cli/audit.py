"""``bastion audit ...``: keys, offline verification, proofs, exports, search, retention, sealed values.

Thin shells over bastion.audit.{keys,reading,export,retention,sealing} and bastion.verifier. Exit
codes (verify, verify-proof, unseal): 0 verified, 1 verification failed, 2 bad input (unreadable or
malformed files, unusable store URL). Text output escapes control characters so records cannot forge lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bastion.audit import export, reading, retention
from bastion.audit.checkpoint import MalformedNoteError, parse_checkpoint, parse_signed_note
from bastion.audit.entry import LogEntry, StoredCheckpoint
from bastion.audit.keys import (
    KeyRing,
    SigningKey,
    generate_signing_key,
    load_signing_key,
    parse_key_ring,
    render_signing_key,
    render_vkey,
)
from bastion.audit.log import AuditLog
from bastion.audit.sealing import (
    SealedField,
    generate_seal_key,
    load_seal_private_key,
    render_seal_private_key,
    render_seal_public_key,
    unseal_record,
)
from bastion.cli._store import add_store_argument, render_table, resolve_store_url
from bastion.errors import BastionError, ConfigError, StorageError, VerificationError
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

    p = sub.add_parser("sealkey", help="generate an auditor key pair for sealed raw values (PREFIX.key, PREFIX.pub)")
    p.add_argument("--out", required=True, metavar="PREFIX", help="writes PREFIX.key (mode 0600) and PREFIX.pub")
    p.add_argument("--name", help="key name recorded in each envelope (default: the file name part of PREFIX)")
    p.set_defaults(run=run_sealkey)

    p = sub.add_parser("unseal", help="decrypt the raw value sealed in one record (exit 0 ok, 1 failed, 2 bad input)")
    add_store_argument(p)
    p.add_argument("--origin", required=True)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--key", required=True, help="auditor private key file written by 'bastion audit sealkey'")
    p.add_argument("--field", choices=[f.value for f in SealedField], help="which sealed value (default: the only one)")
    p.set_defaults(run=run_unseal)

    p = sub.add_parser("verify", help="verify a stored or exported log offline (exit 0 ok, 1 failed, 2 bad input)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--store", metavar="URL", help="store URL, only read (default: $BASTION_STORE)")
    source.add_argument("--export", help="JSON Lines file written by 'bastion audit export'")
    p.add_argument("--keys", required=True, help="key ring file: one vkey per line, optional from=/until=")
    p.add_argument("--trusted", help="a signed checkpoint obtained independently (e.g. from a witness)")
    _origins(p)
    p.add_argument("--max-gap-records", type=int, default=reading.DEFAULT_OPTIONS.max_records_between_checkpoints)
    p.add_argument("--max-gap-seconds", type=float, default=reading.DEFAULT_OPTIONS.max_seconds_between_checkpoints)
    p.add_argument("--now", action="store_true", help="also flag an unsigned tail older than --max-gap-seconds")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_verify)

    p = sub.add_parser("proof", help="inclusion proof of one record against the latest checkpoint (JSON)")
    add_store_argument(p)
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
    add_store_argument(p)
    _origins(p)
    p.add_argument("--from", dest="time_from", help="first record time (RFC 3339, inclusive)")
    p.add_argument("--to", dest="time_to", help="last record time (RFC 3339, exclusive)")
    p.add_argument("--out", required=True, help="file to create")
    p.add_argument("--record-as", help="append a log_exported record to this origin before writing")
    p.add_argument("--subject", help="who exports (goes into the log_exported record)")
    _key_source(p, required=False)
    p.set_defaults(run=run_export)

    p = sub.add_parser("search", help="find records (newest first)")
    add_store_argument(p)
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
    add_store_argument(p)
    p.add_argument("--origin", required=True)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--window", type=int, default=1000, help="records after the request searched for its replies")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_show)

    p = sub.add_parser("tail", help="print the newest records; --follow keeps polling for new ones")
    add_store_argument(p)
    p.add_argument("--origin", required=True)
    p.add_argument("--last", type=int, default=10)
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument("--poll-s", type=float, default=1.0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_tail)

    p = sub.add_parser("prune", help="delete records below SEQ behind a signed retention checkpoint")
    add_store_argument(p)
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
        "--origin", action="append", default=[], help="origin to include (repeatable; default: every origin in the store)"
    )


# -- shared helpers ----------------------------------------------------------------------------------


def _load_key(args: argparse.Namespace) -> SigningKey | None:
    if args.key is None and args.key_env is None:
        return None
    return load_signing_key(path=args.key, env_var=args.key_env)


def _require_key(args: argparse.Namespace) -> SigningKey:
    key = _load_key(args)
    if key is None:
        raise BadInputError("give --key FILE or --key-env VAR")
    return key


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


async def _with_store(url: str, work: Callable[[AuditStore], Awaitable[T]]) -> T:
    store = await open_store(url)
    try:
        return await work(store)
    finally:
        await store.aclose()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _fail_input(exc: BastionError) -> int:
    print(f"bastion audit: {escape(exc.diagnostics())}", file=sys.stderr)
    return 2


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
    print(render_vkey(_require_key(args).public()))
    return 0


def _create_file(path: str, text: str, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise BadInputError(f"cannot create {path}: {exc.strerror} (existing keys are never overwritten)") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def run_sealkey(args: argparse.Namespace) -> int:
    key = generate_seal_key(args.name or Path(args.out).name)
    private_path, public_path = f"{args.out}.key", f"{args.out}.pub"
    public = render_seal_public_key(key.public())
    _create_file(private_path, render_seal_private_key(key) + "\n", 0o600)
    try:
        _create_file(public_path, public + "\n", 0o644)
    except BadInputError:
        Path(private_path).unlink()  # no half-made pair
        raise
    print(public)
    return 0


def run_unseal(args: argparse.Namespace) -> int:
    key = load_seal_private_key(args.key)
    entry = _run(_with_store(resolve_store_url(args), lambda store: store.fetch_entry(args.origin, args.seq)))
    if entry is None:
        raise StorageError(f"no record {args.origin!r}/{args.seq} in the store")
    _, value = unseal_record(entry.body, key, SealedField(args.field) if args.field else None)
    print(json.dumps(value, ensure_ascii=True))  # escapes controls and bidi: the raw value cannot forge lines
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
            report = export.verify_export(
                Path(args.export), ring, trusted=trusted, origins=args.origin, options=options
            )
        else:
            origins = list(dict.fromkeys(args.origin))
            if origins and trusted is not None and trusted.origin not in origins:
                origins.append(trusted.origin)
            report = _run(
                _with_store(
                    resolve_store_url(args), lambda store: _verify_store(store, origins, ring, trusted, options)
                )
            )
    except (ConfigError, StorageError, reading.EvidenceFormatError) as exc:
        return _fail_input(exc)
    print(report.to_json() if args.json else report.render_text(), end="\n" if args.json else "")
    return 0 if report.ok else 1


async def _verify_store(
    store: AuditStore, origins: list[str], ring: KeyRing, trusted: StoredCheckpoint | None, options: Options
) -> Report:
    # Without --origin an auditor means "everything": every origin the store holds.
    origins = origins or await store.fetch_origins()
    if not origins:
        raise BadInputError("the store holds no audit log")
    for origin in origins:
        if await store.fetch_head(origin) is None and not await store.fetch_checkpoints(origin, 0, 1):
            raise BadInputError(f"nothing is stored for origin {origin!r}; name the origins with --origin")
    progress = _Progress(await reading.count_records(store, origins)) if sys.stderr.isatty() else None
    try:
        return await reading.verify_store(store, origins, ring, trusted=trusted, options=options, on_progress=progress)
    finally:
        if progress is not None:
            progress.close()


# -- proofs ----------------------------------------------------------------------------------------------


def run_proof(args: argparse.Namespace) -> int:
    ring = _load_ring(args.keys) if args.keys else None
    proof = _run(
        _with_store(resolve_store_url(args), lambda store: reading.build_inclusion_proof(store, args.origin, args.seq))
    )
    if ring is not None:
        reading.verify_proof(proof, ring)
    text = reading.render_proof(proof)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


def run_verify_proof(args: argparse.Namespace) -> int:
    try:
        ring = _load_ring(args.keys)
        proof = reading.parse_proof(_read_text(args.file, "proof"))
    except (ConfigError, reading.EvidenceFormatError) as exc:
        return _fail_input(exc)
    try:
        reading.verify_proof(proof, ring)
    except VerificationError as exc:
        reason = f"{type(exc).__name__}: {exc}"
        print(json.dumps({"ok": False, "reason": reason}) if args.json else f"result: FAILED\n{escape(reason)}")
        return 1
    where = f"{proof.origin} seq {proof.leaf_index} in tree size {proof.tree_size}"
    print(
        json.dumps({"ok": True, "origin": proof.origin, "leaf_index": proof.leaf_index, "tree_size": proof.tree_size})
        if args.json
        else f"result: OK\nrecord {escape(where)} is in the signed log"
    )
    return 0


# -- export ----------------------------------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    requested = list(dict.fromkeys(args.origin))
    key = _require_key(args) if args.record_as else None
    window = export.ExportWindow(args.time_from, args.time_to)
    try:
        handle = open(args.out, "x", encoding="utf-8")
    except OSError as exc:
        raise BadInputError(f"cannot create {args.out}: {exc.strerror}") from exc

    async def work(store: AuditStore) -> export.ExportStats:
        origins = requested or await store.fetch_origins()
        if not origins:
            raise BadInputError("the store holds no audit log")
        if key is not None:
            detail = {"origins": origins, "from": args.time_from, "to": args.time_to, "file": Path(args.out).name}
            log = AuditLog(store, origin=args.record_as, signing_key=key)
            await log.start()
            try:
                await log.append_export(subject=args.subject, detail={k: v for k, v in detail.items() if v})
            finally:
                await log.aclose()
        return await export.write_export(store, origins, window, handle)

    try:
        with handle:
            stats = _run(_with_store(resolve_store_url(args), work))
    except BaseException:
        Path(args.out).unlink(missing_ok=True)  # never leave a partial export that looks complete
        raise
    print(
        f"exported {stats.records} records and {stats.checkpoints} checkpoints of "
        f"{', '.join(escape(o) for o in stats.origins)} to {escape(args.out)}",
        file=sys.stderr,
    )
    return 0


# -- reading ---------------------------------------------------------------------------------------------


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
    )
    found = _run(_with_store(resolve_store_url(args), lambda store: store.search_entries(query)))
    _print_entries(found, args.json, header=True)
    return 0


def run_show(args: argparse.Namespace) -> int:
    found = _run(
        _with_store(resolve_store_url(args), lambda s: reading.fetch_interaction(s, args.origin, args.seq, args.window))
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


def run_tail(args: argparse.Namespace) -> int:
    async def work(store: AuditStore) -> None:
        start = await reading.fetch_tail_start(store, args.origin, args.last)
        async for entry in reading.follow_entries(store, args.origin, start, args.poll_s, args.follow):
            _print_entries([entry], args.json, header=False)
            sys.stdout.flush()

    _run(_with_store(resolve_store_url(args), work))
    return 0


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


# -- retention -------------------------------------------------------------------------------------------


def run_prune(args: argparse.Namespace) -> int:
    key = _require_key(args)
    result = _run(
        _with_store(resolve_store_url(args), lambda store: retention.prune(store, args.origin, args.before, key))
    )
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
