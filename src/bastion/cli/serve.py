"""``bastion serve --config FILE``: run the gateway under uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

from bastion.app import create_app
from bastion.config import load_settings
from bastion.logs import configure_logging


def register(commands: Any) -> None:
    parser = commands.add_parser("serve", help="run the gateway")
    parser.add_argument("--config", "-c", required=True, help="path to the YAML configuration file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    configure_logging(settings.log_level)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.http.shutdown_grace_s) or None,
        lifespan="on",
    )
    return 0
