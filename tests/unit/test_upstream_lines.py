"""Lines of a streamed SSE body: split across chunks, the last one unterminated, a bound on length."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bastion.upstream.lines import LineTooLongError, response_lines

pytestmark = pytest.mark.anyio


class _Content:
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


class _Response:
    def __init__(self, chunks: list[bytes]) -> None:
        self.content = _Content(chunks)


async def lines(chunks: list[bytes], max_line_bytes: int = 1024) -> list[str]:
    return [line async for line in response_lines(_Response(chunks), max_line_bytes)]  # type: ignore[arg-type]


async def test_lines_are_rejoined_across_chunks_and_the_unterminated_tail_is_kept() -> None:
    chunks = [b"event: message\ndata: {\"a\"", b": 1", b"}\n\n", b"data: \xc3", b"\xa9\ndata: tail"]
    assert await lines(chunks) == ["event: message", 'data: {"a": 1}', "", "data: é", "data: tail"]


async def test_one_chunk_may_hold_many_lines_and_a_long_line_may_span_many_chunks() -> None:
    long_line = b"data: " + b"x" * 5000
    chunks = [long_line[i : i + 7] for i in range(0, len(long_line), 7)] + [b"\nid: 1\nid: 2\n"]
    assert await lines(chunks, max_line_bytes=10_000) == [long_line.decode(), "id: 1", "id: 2"]


async def test_a_line_over_the_bound_is_refused() -> None:
    with pytest.raises(LineTooLongError):
        await lines([b"data: ", b"y" * 2000], max_line_bytes=1024)
