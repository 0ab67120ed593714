"""``bastion audit keygen|pubkey|sealkey``: checkpoint signing keys and auditors' seal key pairs.

Thin shells over bastion.audit.{keys,sealing}. Key files are created with O_EXCL and never
overwritten; private files get mode 0600. None of these commands touches the log.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from bastion.audit.keys import generate_signing_key, render_signing_key, render_vkey
from bastion.audit.seal_keys import generate_seal_key, render_seal_private_key, render_seal_public_key
from bastion.cli._audit_shared import BadInputError, add_key_source, require_key


def register(sub: Any) -> None:
    """Add keygen, pubkey and sealkey to the ``audit`` sub-command group."""
    p = sub.add_parser("keygen", help="generate a checkpoint signing key; prints its vkey for the key ring")
    p.add_argument("--name", required=True, help="key name; by convention the log's origin")
    p.add_argument("--out", required=True, help="private key file to create (mode 0600, never overwritten)")
    p.set_defaults(run=run_keygen)

    p = sub.add_parser("pubkey", help="print the vkey of a private key")
    add_key_source(p, required=True)
    p.set_defaults(run=run_pubkey)

    p = sub.add_parser("sealkey", help="generate an auditor key pair for sealed raw values (PREFIX.key, PREFIX.pub)")
    p.add_argument("--out", required=True, metavar="PREFIX", help="writes PREFIX.key (mode 0600) and PREFIX.pub")
    p.add_argument("--name", help="key name recorded in each envelope (default: the file name part of PREFIX)")
    p.set_defaults(run=run_sealkey)


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
    print(render_vkey(require_key(args).public()))
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
