"""Reply streams of one client session: each POST with requests, and each GET, gets one.

A stream numbers its events (``<stream>.<n>``) and keeps the last few for resumption with
``Last-Event-ID``; a POST stream knows which request ids it still owes a response for.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from bastion.jsonrpc.envelope import Message, RequestId, dumps


class ReplyStream:
    """Outgoing messages for one HTTP response, in order."""

    def __init__(self, stream_id: str, owed: Iterable[RequestId], replay_limit: int) -> None:
        self.stream_id = stream_id
        self.owed: set[RequestId] = set(owed)
        self.is_get = not self.owed
        self._seq = 0
        self._replay: deque[tuple[int, bytes]] = deque(maxlen=max(replay_limit, 1))
        self._queue: asyncio.Queue[tuple[int, Message, bytes] | None] = asyncio.Queue()
        self.closed = False
        self.attached = True
        """Whether an HTTP response is currently reading this stream."""

    def push(self, message: Message) -> None:
        """Queue a message; a response settles the request id it answers."""
        self._seq += 1
        data = dumps(message)
        self._replay.append((self._seq, data))
        self._queue.put_nowait((self._seq, message, data))
        if "method" not in message:
            self.owed.discard(message["id"])

    @property
    def finished(self) -> bool:
        """A POST stream is finished once every request it carried has its response queued."""
        return not self.is_get and not self.owed

    def settle(self, request_id: RequestId) -> None:
        """The request will get no response (it was cancelled): stop owing it, and wake the reader."""
        self.owed.discard(request_id)
        self._queue.put_nowait(None)

    async def next(self) -> tuple[int, Message, bytes] | None:
        """The next queued message, or None when only a settlement woke the reader."""
        return await self._queue.get()

    def drain(self) -> list[tuple[int, Message, bytes]]:
        items = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                items.append(item)
        return items

    def event_id(self, seq: int) -> str:
        return f"{self.stream_id}.{seq}"

    def replay_after(self, seq: int) -> list[tuple[int, bytes]]:
        """Events after ``seq`` still in the replay buffer (the queue is drained to avoid duplicates)."""
        self.drain()
        return [(n, data) for n, data in self._replay if n > seq]


def parse_event_id(value: str) -> tuple[str, int] | None:
    """Split a ``Last-Event-ID`` into (stream id, sequence), or None if it is not ours."""
    stream_id, _, seq = value.rpartition(".")
    if not stream_id or not seq.isdigit():
        return None
    return stream_id, int(seq)
