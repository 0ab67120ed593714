"""Legacy HTTP+SSE upstream (MCP 2024-11-05): one GET event stream, messages POSTed to the
endpoint the server announces in its first ``endpoint`` event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urljoin

import aiohttp

from bastion.errors import ProtocolError, UpstreamError
from bastion.jsonrpc.envelope import Message, dumps, invalid_response_id, parse_message
from bastion.transport.sse import parse_events
from bastion.upstream.base import TransportListener
from bastion.upstream.lines import HTTP_ERRORS, response_lines

log = logging.getLogger("bastion.upstream.sse")


class SseTransport:
    """One session with a legacy SSE server; the GET stream lives as long as the session."""

    def __init__(
        self, name: str, url: str, headers: dict[str, str], client: aiohttp.ClientSession, connect_timeout_s: float
    ) -> None:
        self.name = name
        self._url = url
        self._headers = headers
        self._client = client
        self._connect_timeout_s = connect_timeout_s
        self._endpoint: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def open(self, listener: TransportListener) -> None:
        endpoint_ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(listener, endpoint_ready), name=f"sse-{self.name}")
        try:
            self._endpoint = await asyncio.wait_for(asyncio.shield(endpoint_ready), self._connect_timeout_s)
        except TimeoutError as exc:
            await self.close()
            raise UpstreamError(f"upstream {self.name!r} sent no endpoint event") from exc
        except UpstreamError:
            await self.close()
            raise

    async def _run(self, listener: TransportListener, endpoint_ready: asyncio.Future[str]) -> None:
        reason = "upstream event stream ended"
        try:
            async with self._client.get(
                self._url,
                headers={**self._headers, "accept": "text/event-stream"},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout_s, sock_read=None),
            ) as response:
                if response.status != 200:
                    raise UpstreamError(f"upstream {self.name!r} answered HTTP {response.status}")
                async for event in parse_events(response_lines(response)):
                    if event.event == "endpoint":
                        if not endpoint_ready.done():
                            endpoint_ready.set_result(urljoin(self._url, event.data.strip()))
                        continue
                    if event.event != "message":
                        continue
                    try:
                        message = parse_message(event.data)
                    except ProtocolError:
                        listener.on_invalid("upstream sent invalid JSON-RPC", invalid_response_id(event.data))
                        continue
                    await listener.on_message(message, None)
        except UpstreamError as exc:
            reason = str(exc)
            if not endpoint_ready.done():
                endpoint_ready.set_exception(exc)
        except HTTP_ERRORS as exc:
            reason = f"upstream unreachable: {type(exc).__name__}"
            if not endpoint_ready.done():
                endpoint_ready.set_exception(UpstreamError(reason))
        finally:
            if not self._closing:
                listener.on_closed(reason)

    async def send(self, message: Message) -> None:
        if self._endpoint is None:
            raise UpstreamError(f"upstream {self.name!r} is not connected")
        try:
            async with self._client.post(
                self._endpoint, data=dumps(message), headers={**self._headers, "content-type": "application/json"}
            ) as response:
                status = response.status
                await response.read()
        except HTTP_ERRORS as exc:
            raise UpstreamError(f"upstream {self.name!r} unreachable: {type(exc).__name__}") from exc
        if status >= 400:
            raise UpstreamError(f"upstream {self.name!r} refused a message with HTTP {status}")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
