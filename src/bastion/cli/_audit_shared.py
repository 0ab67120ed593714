"""What the ``bastion audit`` sub-commands share: safe text output, bad input, key and file options.

Owns escaping record text for a terminal (one record, one line), the exit-2 ``BadInputError``,
reading key rings and input files, the ``--key``/``--origin`` options, the argument types that
refuse a malformed number or time before anything runs (argparse exits 2), and running one
coroutine against an opened store. The commands themselves live in cli/audit_{keys,verify,read}.py.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from bastion.audit.keys import KeyRing, SigningKey, load_signing_key, parse_key_ring
from bastion.audit.reading import parse_time_bound
from bastion.errors import BastionError, ConfigError
from bastion.storage import OpenMode, Store, open_store

T = TypeVar("T")
_UNSAFE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def escape(text: str) -> str:
    """Escape backslash, C0/C1 controls, DEL, line separators and bidi controls (one record, one line)."""
    return _UNSAFE.sub(lambda m: "\\\\" if m.group() == "\\" else f"\\u{ord(m.group()):04x}", text)


class BadInputError(ConfigError):
    """Raised when an argument or input file is unusable (exit 2)."""


def add_key_source(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """Add ``--key FILE | --key-env VAR`` (a checkpoint signing key)."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--key", help="private key file")
    group.add_argument("--key-env", help="environment variable holding the private key")


def add_origins(parser: argparse.ArgumentParser) -> None:
    """Add the repeatable ``--origin``."""
    parser.add_argument(
        "--origin",
        action="append",
        default=[],
        help="origin to include (repeatable; default: every origin in the store)",
    )


def whole_number(low: int, high: int, hint: str = "") -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``low..high``; ``hint`` is added to the refusal."""

    def parse(text: str) -> int:
        refusal = argparse.ArgumentTypeError(f"{text!r} is not a whole number in {low}..{high}{hint}")
        try:
            value = int(text)
        except ValueError as exc:
            raise refusal from exc
        if not low <= value <= high:
            raise refusal
        return value

    return parse


def positive_seconds(text: str) -> float:
    """An argparse ``type``: a finite number of seconds above zero."""
    refusal = argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    try:
        value = float(text)
    except ValueError as exc:
        raise refusal from exc
    if not 0 < value < float("inf"):  # also refuses nan
        raise refusal
    return value


def time_bound(text: str) -> str:
    """An argparse ``type``: an RFC 3339 date-time with an offset, as a bound in the stored time format."""
    try:
        return parse_time_bound(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def require_key(args: argparse.Namespace) -> SigningKey:
    """The signing key named by ``--key``/``--key-env``.

    Raises:
        BadInputError: neither is given.
        ConfigError: the key cannot be read or parsed.
    """
    if args.key is None and args.key_env is None:
        raise BadInputError("give --key FILE or --key-env VAR")
    return load_signing_key(path=args.key, env_var=args.key_env)


def read_text(path: str, what: str) -> str:
    """Read a UTF-8 input file.

    Raises:
        BadInputError: it cannot be read or decoded.
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read {what} {path}: {type(exc).__name__}") from exc


def load_ring(path: str) -> KeyRing:
    """Read a key ring that holds at least one key.

    Raises:
        BadInputError: unreadable or empty.
        ConfigError: a line is not a vkey.
    """
    ring = parse_key_ring(read_text(path, "key ring"))
    if not len(ring):
        raise BadInputError(f"key ring {path} holds no keys")
    return ring


async def with_store(url: str, work: Callable[[Store], Awaitable[T]], *, mode: OpenMode = OpenMode.CREATE) -> T:
    """Open the store at ``url`` as ``mode`` allows, run ``work`` on it and close it."""
    store = await open_store(url, mode)
    try:
        return await work(store)
    finally:
        await store.aclose()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine to completion on a fresh event loop."""
    return asyncio.run(coro)


def fail_input(exc: BastionError) -> int:
    """Print ``exc`` for a human and return exit code 2."""
    print(f"bastion audit: {escape(exc.diagnostics())}", file=sys.stderr)
    return 2
