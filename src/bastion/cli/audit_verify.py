"""``bastion audit verify|verify-proof``: check a stored or exported log, or one proof, offline.

Thin shells over bastion.verifier and audit/{reading,export_verify,proving}.py. Exit codes: 0
verified, 1 verification failed, 2 bad input. These commands only read and are deliberately *not*
recorded in the log: an independent verifier may hold read-only credentials, and must not
change the log it checks (docs/audit.md, "Reads of the log are recorded").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion.audit import export_verify, proving, reading
from bastion.audit.checkpoint import MalformedNoteError, parse_checkpoint, parse_signed_note
from bastion.audit.entry import StoredCheckpoint
from bastion.audit.evidence import EvidenceFormatError
from bastion.audit.keys import KeyRing
from bastion.audit.record import parse_rfc3339
from bastion.audit.timestamping import read_tsa_certificates
from bastion.cli._audit_shared import (
    BadInputError,
    add_origins,
    escape,
    fail_input,
    load_ring,
    read_text,
    run,
    with_store,
)
from bastion.cli._store import resolve_store_url
from bastion.errors import ConfigError, StorageError, VerificationError
from bastion.storage import OpenMode, Store
from bastion.verifier import Options, Report, TimestampTrust
from bastion.verifier.timestamps import DEFAULT_TOLERANCE_S


def register(sub: Any) -> None:
    """Add verify and verify-proof to the ``audit`` sub-command group."""
    p = sub.add_parser("verify", help="verify a stored or exported log offline (exit 0 ok, 1 failed, 2 bad input)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--store", metavar="URL", help="store URL, only read (default: $BASTION_STORE)")
    source.add_argument("--export", help="JSON Lines file written by 'bastion audit export'")
    p.add_argument(
        "--keys",
        required=True,
        help="key ring file: one vkey per line, optional from=/until= and origin= (an origin the key may sign)",
    )
    p.add_argument("--trusted", help="a signed checkpoint obtained independently (e.g. from a witness)")
    p.add_argument(
        "--tsa-certs",
        metavar="FILE",
        help="PEM bundle of trusted TSA root certificates: verify every stored RFC 3161 token against it",
    )
    p.add_argument(
        "--tsa-tolerance-seconds",
        type=float,
        default=DEFAULT_TOLERANCE_S,
        help="how much later than a token's TSA time its checkpoint may be dated (default: %(default)s)",
    )
    add_origins(p)
    p.add_argument(
        "--max-gap-records",
        type=int,
        default=reading.DEFAULT_OPTIONS.max_records_between_checkpoints,
        help="most records allowed between checkpoints (default: %(default)s)",
    )
    p.add_argument(
        "--max-gap-seconds",
        type=float,
        default=reading.DEFAULT_OPTIONS.max_seconds_between_checkpoints,
        help="longest silence allowed between checkpoints, and longest wait of a record for one (default: %(default)s)",
    )
    p.add_argument(
        "--now",
        nargs="?",
        const="",
        metavar="TIME",
        help="also flag a newest checkpoint (or unsigned tail) older than --max-gap-seconds at TIME "
        "(RFC 3339; default: the current time)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_verify)

    p = sub.add_parser("verify-proof", help="check an inclusion proof offline (exit 0 ok, 1 failed, 2 bad input)")
    p.add_argument("file")
    p.add_argument("--keys", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_verify_proof)


def _parse_now(value: str | None) -> datetime | None:
    if value is None:
        return None
    if not value:
        return datetime.now(UTC)
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        raise BadInputError(f"--now: {exc}") from exc


def _load_trusted(path: str) -> StoredCheckpoint:
    text = read_text(path, "trusted checkpoint")
    try:
        checkpoint = parse_checkpoint(parse_signed_note(text).text)
    except MalformedNoteError as exc:
        raise BadInputError(f"trusted checkpoint {path} is not a signed checkpoint: {exc}") from exc
    return StoredCheckpoint(checkpoint.origin, checkpoint.tree_size, checkpoint.root_hash, text, "")


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


@contextlib.contextmanager
def _progress(total: int | None) -> Iterator[_Progress | None]:
    """A progress bar over ``total`` records, ended on the way out; None (no bar) without a total."""
    progress = _Progress(total) if total is not None else None
    try:
        yield progress
    finally:
        if progress is not None:
            progress.close()


def run_verify(args: argparse.Namespace) -> int:
    try:
        ring = load_ring(args.keys)
        trusted = _load_trusted(args.trusted) if args.trusted else None
        tsa = (
            TimestampTrust(tuple(read_tsa_certificates(Path(args.tsa_certs))), args.tsa_tolerance_seconds)
            if args.tsa_certs
            else None
        )
        options = Options(
            max_records_between_checkpoints=args.max_gap_records,
            max_seconds_between_checkpoints=args.max_gap_seconds,
            now=_parse_now(args.now),
        )
        if args.export:
            report = _verify_export(Path(args.export), args.origin, ring, trusted, options, tsa)
        else:
            origins = list(dict.fromkeys(args.origin))
            if origins and trusted is not None and trusted.origin not in origins:
                origins.append(trusted.origin)
            report = run(
                with_store(
                    resolve_store_url(args),
                    lambda store: _verify_store(store, origins, ring, trusted, options, tsa),
                    mode=OpenMode.READ_ONLY,  # the verifier never changes the log it checks
                )
            )
    except (ConfigError, StorageError, EvidenceFormatError) as exc:
        return fail_input(exc)
    print(report.to_json() if args.json else report.render_text(), end="\n" if args.json else "")
    return 0 if report.ok else 1


async def _verify_store(
    store: Store,
    origins: list[str],
    ring: KeyRing,
    trusted: StoredCheckpoint | None,
    options: Options,
    tsa: TimestampTrust | None,
) -> Report:
    # Without --origin an auditor means "everything": every origin the store holds anything of,
    # a head, a record, a checkpoint or (SQLite) a search index row; a named one must be among them.
    stored = await store.fetch_origins()
    if not stored:
        raise BadInputError("the store holds no audit log")
    for origin in origins:
        if origin not in stored:
            raise BadInputError(f"nothing is stored for origin {origin!r}")
    origins = origins or stored
    total = await reading.count_records(store, origins) if sys.stderr.isatty() else None
    with _progress(total) as progress:
        return await reading.verify_store(
            store, origins, ring, trusted=trusted, options=options, on_progress=progress, tsa=tsa
        )


def _verify_export(
    path: Path,
    origins: list[str],
    ring: KeyRing,
    trusted: StoredCheckpoint | None,
    options: Options,
    tsa: TimestampTrust | None,
) -> Report:
    exported = export_verify.read_export(path)
    wanted = set(origins or exported.all_origins())
    with _progress(exported.count_records(wanted) if sys.stderr.isatty() else None) as progress:
        return export_verify.verify_export(
            exported, ring, trusted=trusted, origins=origins, options=options, tsa=tsa, on_progress=progress
        )


def run_verify_proof(args: argparse.Namespace) -> int:
    try:
        ring = load_ring(args.keys)
        proof = proving.parse_proof(read_text(args.file, "proof"))
    except (ConfigError, EvidenceFormatError) as exc:
        return fail_input(exc)
    try:
        proving.verify_proof(proof, ring)
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
