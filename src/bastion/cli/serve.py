"""``bastion serve --config FILE``: run the gateway under uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import socket
from typing import Any

import uvicorn
from starlette.applications import Starlette

from bastion.app import create_app, preflight
from bastion.config import load_settings
from bastion.logs import configure_logging
from bastion.transport.tls import tls_protocol_class, uvicorn_tls_options


def register(commands: Any) -> None:
    parser = commands.add_parser("serve", help="run the gateway")
    parser.add_argument("--config", "-c", required=True, help="path to the YAML configuration file")
    parser.set_defaults(run=run)


class _Server(uvicorn.Server):
    """uvicorn, plus: on a stop signal, end the gateway's GET streams first, so that draining
    connections waits only for calls in flight (up to ``http.shutdown_grace_s``)."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        runtime = getattr(self._app.state, "runtime", None)
        if runtime is not None:
            runtime.gateway.begin_shutdown()
        await super().shutdown(sockets)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    preflight(settings)
    configure_logging(settings.log_level)
    app = create_app(settings)
    # TLS: uvicorn terminates it; the protocol class adds the verified client certificate to each scope.
    tls: dict[str, Any] = {} if settings.tls is None else {
        "http": tls_protocol_class(), **uvicorn_tls_options(settings.tls)}
    config = uvicorn.Config(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.http.shutdown_grace_s) or None,
        lifespan="on",
        **tls,
    )
    server = _Server(config, app)
    server.run()
    return 0 if server.started else 1
