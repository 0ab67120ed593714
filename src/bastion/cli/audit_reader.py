"""Who reads the audit log through the CLI, and where that read is recorded (fail closed).

Owns the recording options of the reading commands (``--config`` or ``--record-as`` with a key,
``--record-subject``), resolving them into a ``Reader``, and the rule that a read which cannot be
recorded releases nothing and exits 2. Appending the record is audit/access.py's; the commands
are cli/audit_read.py's. The CLI never appends to the gateway's own origin: it uses
``<audit.origin>/cli``, or the origin named with ``--record-as``.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import os
import re
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from bastion.audit.access import append_access_record
from bastion.audit.keys import SigningKey, load_signing_key
from bastion.audit.record import EventKind
from bastion.cli._audit_shared import BadInputError, escape, run, with_store
from bastion.cli._store import STORE_ENV, add_store_argument, resolve_store_url
from bastion.config import load_settings
from bastion.errors import BastionError, ConfigError, StorageError
from bastion.storage import AuditStore, OpenMode

T = TypeVar("T")
READER_SUFFIX = "/cli"
"""A gateway's CLI readers record to ``<audit.origin>/cli``; the gateway's writer owns ``<audit.origin>``."""
OS_USER = "os_user"
"""``who.auth_method`` when the subject is the OS account that ran the command (not authenticated)."""
CLAIMED = "claimed"
"""``who.auth_method`` when the subject was given with ``--record-subject`` (not authenticated)."""
_ORIGIN = re.compile(r"^\S+$")

NOT_RECORDED = (
    "reads of the audit log are recorded in the log, and this command was not told where. Give either\n"
    "  --config FILE        the gateway's configuration: its store and audit signing key; the read is\n"
    "                       recorded to origin <audit.origin>/cli, or\n"
    "  --record-as ORIGIN   an origin of your own, with --record-key FILE or --record-key-env VAR (the key\n"
    f"                       that signs it) and --store URL or ${STORE_ENV}"
)


@dataclass(frozen=True, slots=True)
class Reader:
    """Where a CLI read happens and is recorded, and who claims to make it."""

    store_url: str
    origin: str
    key: SigningKey = field(repr=False)  # never print the private key
    subject: str
    auth_method: str
    os_user: str


class UnrecordedReadError(BastionError):
    """Raised when a read could not be recorded in the log; the command released nothing (exit 2)."""


def add_recording_options(parser: argparse.ArgumentParser, *, taken: frozenset[str] = frozenset()) -> None:
    """Add ``--store`` and the recording options; ``taken`` names short spellings the command uses otherwise.

    ``--key``, ``--key-env`` and ``--subject`` are accepted as spellings of ``--record-key``,
    ``--record-key-env`` and ``--record-subject`` wherever the command gives them no other meaning.
    """
    add_store_argument(parser)
    group = parser.add_argument_group("recording this read in the audit log (give --config or --record-as)")
    source = group.add_mutually_exclusive_group()
    source.add_argument(
        "--config",
        metavar="FILE",
        help="the gateway's configuration: its store, and its audit key for <audit.origin>/cli",
    )
    source.add_argument("--record-as", metavar="ORIGIN", help="record to this origin, signed with --record-key")
    keys = group.add_mutually_exclusive_group()
    keys.add_argument(*_spellings("--record-key", "--key", taken), dest="record_key", metavar="FILE",
                      help="private key that signs --record-as ORIGIN")
    keys.add_argument(*_spellings("--record-key-env", "--key-env", taken), dest="record_key_env", metavar="VAR",
                      help="environment variable holding that key")
    group.add_argument(*_spellings("--record-subject", "--subject", taken), dest="record_subject", metavar="WHO",
                       help="who reads (default: OS user@host); recorded as a claim, not authenticated")


def _spellings(name: str, short: str, taken: frozenset[str]) -> tuple[str, ...]:
    return (name,) if short in taken else (name, short)


def resolve_reader(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Reader:
    """The store, reader origin, key and subject the recording options name.

    Raises:
        BadInputError: no recording source, or a key without ``--record-as``, or an invalid origin.
        ConfigError: the configuration file or the key cannot be loaded, or no store is given.
    """
    key_given = args.record_key is not None or args.record_key_env is not None
    if args.config is not None:
        if key_given:
            raise BadInputError("--record-key/--record-key-env go with --record-as; --config uses the gateway's key")
        settings = load_settings(args.config)
        audit = settings.audit
        key = load_signing_key(path=audit.signing_key_file, env_var=audit.signing_key_env, environ=environ)
        if audit.key_name is not None and key.name != audit.key_name:
            raise ConfigError(f"signing key is named {key.name!r}, audit.key_name expects {audit.key_name!r}")
        origin, store_url = audit.origin + READER_SUFFIX, args.store or settings.store
    elif args.record_as is not None:
        if not _ORIGIN.match(args.record_as):
            raise BadInputError(f"--record-as {args.record_as!r}: an origin is one word without spaces")
        if not key_given:
            raise BadInputError("--record-as needs --record-key FILE or --record-key-env VAR (the key that signs it)")
        key = load_signing_key(path=args.record_key, env_var=args.record_key_env, environ=environ)
        origin, store_url = args.record_as, resolve_store_url(args, environ)
    else:
        raise BadInputError(NOT_RECORDED)
    os_user = current_os_user()
    if args.record_subject:
        return Reader(store_url, origin, key, args.record_subject, CLAIMED, os_user)
    return Reader(store_url, origin, key, os_user, OS_USER, os_user)


def current_os_user() -> str:
    """``user@host`` of the process: what the OS says, which nobody has authenticated to the log."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (e.g. an arbitrary container uid)
        user = f"uid-{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


async def append_read_record(
    store: AuditStore,
    reader: Reader,
    detail: Mapping[str, Any],
    kind: Literal[EventKind.LOG_READ, EventKind.LOG_EXPORTED] = EventKind.LOG_READ,
) -> None:
    """Record this read durably and under a signed checkpoint before anything is released.

    Raises:
        UnrecordedReadError: the record could not be made durable and signed.
    """
    if reader.auth_method == CLAIMED:
        detail = {**detail, "os_user": reader.os_user}  # a claimed subject still names the account that ran it
    try:
        await append_access_record(
            store,
            origin=reader.origin,
            signing_key=reader.key,
            kind=kind,
            subject=reader.subject,
            auth_method=reader.auth_method,
            detail=detail,
        )
    except StorageError as exc:
        raise UnrecordedReadError(
            f"this read could not be recorded in the audit log, so nothing was released: {exc}"
        ) from exc


def run_recorded(reader: Reader, detail: Mapping[str, Any], read: Callable[[AuditStore], Awaitable[T]]) -> T:
    """Open the reader's store, record a ``log_read`` with ``detail``, then run ``read``.

    The store must exist at this code's schema version (``OpenMode.EXISTING``): a mistyped store
    URL is refused rather than met with a new, empty store.

    Raises:
        UnrecordedReadError: the read could not be recorded (``read`` did not run).
        UnpreparedStoreError: no store at the URL, or not migrated (exit 2).
        StorageError: the store cannot be opened, or ``read`` failed.
    """

    async def work(store: AuditStore) -> T:
        await append_read_record(store, reader, detail)
        return await read(store)

    return run(with_store(reader.store_url, work, mode=OpenMode.EXISTING))


def fail_closed(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a reading command: an unrecorded read prints why and exits 2 (its output was never produced)."""

    @functools.wraps(command)
    def guarded(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except UnrecordedReadError as exc:
            print(f"bastion audit: {escape(exc.diagnostics())}", file=sys.stderr)
            return 2

    return guarded
