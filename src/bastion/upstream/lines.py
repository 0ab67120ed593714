"""Lines of a streamed HTTP body (for SSE), with a bound on line length.

aiohttp's own line iterator refuses lines longer than its read buffer (64 KiB by default),
and one SSE ``data:`` line can hold a whole large MCP result; this splits chunks itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

MAX_LINE_BYTES = 64 * 1024 * 1024
HTTP_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
"""What an aiohttp exchange with an HTTP upstream raises when the upstream or the network fails."""


class LineTooLongError(aiohttp.ClientPayloadError):
    """Raised when a server sends a line longer than ``MAX_LINE_BYTES`` (a broken or hostile stream)."""


async def response_lines(response: aiohttp.ClientResponse, max_line_bytes: int = MAX_LINE_BYTES) -> AsyncIterator[str]:
    """Decoded lines of the body, ``\\n``-terminated ones without the terminator."""
    pending = bytearray()
    async for chunk in response.content.iter_any():
        # Only the new chunk is searched for line ends; re-splitting the whole buffer per chunk
        # made one long line (a large result) cost quadratic time on the event loop.
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            pending += chunk[start:end]
            yield pending.decode("utf-8", "replace")
            pending.clear()
            start = end + 1
        pending += chunk[start:]
        if len(pending) > max_line_bytes:
            raise LineTooLongError(f"a line exceeds {max_line_bytes} bytes")
    if pending:
        yield pending.decode("utf-8", "replace")
