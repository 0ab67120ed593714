"""Turns upstream settings into links: one shared, pooled HTTP client per HTTP upstream, and a
fresh transport (child process or HTTP session) for every link that asks for one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp

from bastion.config import UpstreamSettings
from bastion.errors import DenialError
from bastion.identity.principal import Principal
from bastion.upstream.base import UpstreamTransport
from bastion.upstream.link import ServerMessageHandler, UpstreamLink
from bastion.upstream.sse import SseTransport
from bastion.upstream.stdio import StdioTransport
from bastion.upstream.streamable_http import StreamableHttpTransport


class UpstreamFactory:
    """Creates links to the configured upstreams and owns their shared HTTP connection pools."""

    def __init__(self, upstreams: dict[str, UpstreamSettings]) -> None:
        self.settings = upstreams
        self._clients: dict[str, aiohttp.ClientSession] = {}

    def _client(self, name: str, settings: UpstreamSettings) -> aiohttp.ClientSession:
        client = self._clients.get(name)
        if client is None:
            # Per-reply deadlines belong to the link (it also cancels upstream); here only the
            # connection attempt and a stalled read are bounded.
            client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout_s),
                connector=aiohttp.TCPConnector(limit=512, limit_per_host=0),
                auto_decompress=True,
                raise_for_status=False,
            )
            self._clients[name] = client
        return client

    def transport_maker(self, name: str, caller: Principal) -> Callable[[], UpstreamTransport]:
        """How to (re)open a transport to ``name`` on behalf of ``caller``.

        Raises:
            DenialError: the upstream has per-caller credentials and none is for this caller.
        """
        settings = self.settings[name]
        headers, env = dict(settings.headers), dict(settings.env)
        if settings.credentials:
            credential = next((c for c in settings.credentials if c.matches(caller)), None)
            if credential is None:
                raise DenialError(f"no upstream credential for this caller on {name!r}")
            headers.update(credential.headers)
            env.update(credential.env)
        if settings.command is not None:
            command = settings.command
            return lambda: StdioTransport(name, command, env, settings.cwd)
        assert settings.url is not None
        url = settings.url
        client = self._client(name, settings)
        if settings.transport == "sse":
            return lambda: SseTransport(name, url, headers, client, settings.connect_timeout_s)
        return lambda: StreamableHttpTransport(name, url, headers, client)

    def link(self, name: str, on_server_message: ServerMessageHandler, caller: Principal) -> UpstreamLink:
        """A new, not yet initialized link to upstream ``name``, with ``caller``'s upstream credentials."""
        settings = self.settings[name]
        return UpstreamLink(
            name,
            self.transport_maker(name, caller),
            on_server_message,
            timeout_s=settings.timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
            restart_backoff_s=settings.restart_backoff_s,
        )

    async def probe(self, name: str, timeout_s: float = 1.0) -> str | None:
        """Readiness of one upstream without an MCP session: None when reachable, else why not.

        A stdio upstream is ready when its command can be executed; an HTTP one when its host
        accepts a TCP connection.
        """
        settings = self.settings[name]
        if settings.command is not None:
            program = settings.command[0]
            found = shutil.which(program, path=settings.env.get("PATH") or os.environ.get("PATH"))
            return None if found else f"command not found: {program}"
        assert settings.url is not None
        url = urlsplit(settings.url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(url.hostname, port), timeout_s)
        except (OSError, TimeoutError) as exc:
            return f"cannot connect to {url.hostname}:{port}: {type(exc).__name__}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
