"""``bastion``: parse the command line, dispatch to a command module, map errors to exit codes.

Exit codes: 0 success, 1 the command ran and found a problem (e.g. verification failed),
2 bad input (usage, configuration, unreadable file).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bastion import __version__
from bastion.cli import approvals, audit, config_cmd, connect, keys, policy, serve, tools
from bastion.errors import BastionError, ConfigError

COMMANDS = (serve, config_cmd, connect, keys, tools, audit, policy, approvals)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bastion", description="MCP gateway with identity, policy, masking, approval and audit.")
    parser.add_argument("--version", action="version", version=f"bastion {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
        return result
    except ConfigError as exc:
        print(f"bastion: configuration error:\n{exc.diagnostics()}", file=sys.stderr)
        return 2
    except BastionError as exc:
        print(f"bastion: {exc.diagnostics()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
