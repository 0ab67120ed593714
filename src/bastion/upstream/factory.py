"""Turns upstream settings into links: one shared, pooled HTTP client per HTTP upstream, and a
fresh transport (child process or HTTP session) for every link that asks for one."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from bastion.config import UpstreamSettings
from bastion.upstream.base import UpstreamTransport
from bastion.upstream.link import ServerMessageHandler, UpstreamLink
from bastion.upstream.sse import SseTransport
from bastion.upstream.stdio import StdioTransport
from bastion.upstream.streamable_http import StreamableHttpTransport


class UpstreamFactory:
    """Creates links to the configured upstreams and owns their shared HTTP connection pools."""

    def __init__(self, upstreams: dict[str, UpstreamSettings]) -> None:
        self.settings = upstreams
        self._clients: dict[str, httpx.AsyncClient] = {}

    def _client(self, name: str, settings: UpstreamSettings) -> httpx.AsyncClient:
        client = self._clients.get(name)
        if client is None:
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
                limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
                follow_redirects=False,
            )
            self._clients[name] = client
        return client

    def transport_maker(self, name: str) -> Callable[[], UpstreamTransport]:
        settings = self.settings[name]
        if settings.command is not None:
            command = settings.command
            return lambda: StdioTransport(name, command, settings.env, settings.cwd)
        assert settings.url is not None
        url = settings.url
        client = self._client(name, settings)
        if settings.transport == "sse":
            return lambda: SseTransport(name, url, settings.headers, client, settings.connect_timeout_s)
        return lambda: StreamableHttpTransport(name, url, settings.headers, client)

    def link(self, name: str, on_server_message: ServerMessageHandler) -> UpstreamLink:
        """A new, not yet initialized link to upstream ``name``."""
        settings = self.settings[name]
        return UpstreamLink(
            name,
            self.transport_maker(name),
            on_server_message,
            timeout_s=settings.timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
            restart_backoff_s=settings.restart_backoff_s,
        )

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
