"""``bastion config check FILE`` and ``bastion config schema``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bastion.app import preflight
from bastion.config import Settings, load_settings


def register(commands: Any) -> None:
    parser = commands.add_parser("config", help="validate a configuration file or print its schema")
    sub = parser.add_subparsers(dest="config_command", required=True)
    check = sub.add_parser("check", help="validate FILE; exit 2 with every problem listed if it is invalid")
    check.add_argument("file")
    check.set_defaults(run=run_check)
    schema = sub.add_parser("schema", help="print the JSON Schema of the configuration file")
    schema.set_defaults(run=run_schema)


def run_check(args: argparse.Namespace) -> int:
    settings = load_settings(args.file)
    preflight(settings)
    print(f"{args.file}: OK ({len(settings.upstreams)} upstreams: {', '.join(settings.upstreams)})")
    return 0


def run_schema(args: argparse.Namespace) -> int:
    print(json.dumps(Settings.model_json_schema(), indent=2, sort_keys=True))
    return 0
