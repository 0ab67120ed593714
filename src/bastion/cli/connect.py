"""``bastion connect URL [--header 'Name: value' ...]``: the stdio bridge for desktop clients."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from bastion.errors import ConfigError
from bastion.transport.bridge import main as bridge_main


def register(commands: Any) -> None:
    parser = commands.add_parser("connect", help="bridge stdio (for desktop MCP clients) to a Bastion URL")
    parser.add_argument("url", help="e.g. http://127.0.0.1:8080/mcp")
    parser.add_argument(
        "--header", "-H", action="append", default=[],
        help="extra HTTP header 'Name: value' (repeatable); ${VAR} is expanded from the environment",
    )
    parser.set_defaults(run=run)


def parse_headers(values: list[str]) -> dict[str, str]:
    headers = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"--header {value!r}: expected 'Name: value'")
        headers[name.strip().lower()] = os.path.expandvars(content.strip())
    return headers


def run(args: argparse.Namespace) -> int:
    asyncio.run(bridge_main(args.url, parse_headers(args.header)))
    return 0
