"""Server-Sent Events framing (WHATWG HTML §9.2): render events, and parse a line stream.

Used by the client-facing endpoint (render) and by the upstream transports and the stdio
bridge (parse). Knows nothing about MCP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    data: str
    event: str = "message"
    id: str | None = None
    retry_ms: int | None = None


def render_event(data: bytes, event_id: str | None = None, event: str | None = None) -> bytes:
    """One SSE event; ``data`` must be a single line (compact JSON always is)."""
    parts = []
    if event_id is not None:
        parts.append(b"id: " + event_id.encode())
    if event is not None:
        parts.append(b"event: " + event.encode())
    parts.append(b"data: " + data)
    return b"\n".join(parts) + b"\n\n"


async def parse_events(lines: AsyncIterator[str]) -> AsyncIterator[Event]:
    """Turn the lines of an event stream into events (comments and unknown fields ignored)."""
    data: list[str] = []
    event = "message"
    event_id: str | None = None
    retry_ms: int | None = None
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield Event("\n".join(data), event, event_id, retry_ms)
            data, event, retry_ms = [], "message", None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            event_id = value
        elif name == "retry" and value.isdigit():
            retry_ms = int(value)
    if data:
        yield Event("\n".join(data), event, event_id, retry_ms)
