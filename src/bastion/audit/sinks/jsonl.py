"""The JSON Lines sink: one line per record appended to a file, or to stdout.

Sent means written to the operating system (not fsynced). Writes run on a daemon thread of the
sink's own, so a write that never returns (a stalled FIFO, a hung mount) holds up nothing else;
a line a failed write cut short is finished, not repeated, in the same file.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import functools
import io
import itertools
import os
import queue
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bastion.audit.sinks.delivery import DeliveryError, Sink, render_in_slices
from bastion.audit.sinks.format import (
    SinkRecord,
    render_json_line,
)
from bastion.audit.sinks.settings import JsonLinesSinkSettings

T = TypeVar("T")


class WriterThread:
    """Runs one sink's blocking writes in order on a daemon thread of its own.

    Not the event loop's executor: its threads are joined when the loop closes, so a write that
    never returns would hang the gateway's exit; a daemon thread is left to the process exit.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[[], Any]]] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    @property
    def started(self) -> bool:
        """Whether a job was ever queued (the thread starts with the first)."""
        return self._thread.ident is not None

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args)``; the future settles with its result or exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, functools.partial(fn, *args)))
        if self._thread.ident is None:  # the first job starts it
            self._thread.start()
        return future

    def _serve(self) -> None:
        while True:
            loop, future, job = self._jobs.get()
            try:
                result, failure = job(), None
            except BaseException as exc:  # handed to the awaiting task, which decides
                result, failure = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, result, failure)


def _settle(future: asyncio.Future[Any], result: Any, failure: BaseException | None) -> None:
    if future.done():
        return
    if failure is None:
        future.set_result(result)
    else:
        future.set_exception(failure)


class _RawStream(Protocol):
    def write(self, data: bytes | memoryview, /) -> int | None: ...


def _write_some(stream: _RawStream, data: bytes | memoryview) -> int:
    """One unbuffered write; how many bytes it took, which may be fewer than given."""
    count = stream.write(data)
    if not count:  # None: a non-blocking stream is full (and 0 would have the caller spin)
        raise BlockingIOError(errno.EAGAIN, "the stream takes no bytes now")
    return count


def _os_error_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


_FileId = tuple[int, int]
"""A file's identity: (st_dev, st_ino)."""
_Place = tuple[int, int, int]
"""Where the next byte written to a file goes: its identity and its size (-1 for a FIFO, which has none)."""


def _file_id(status: os.stat_result) -> _FileId:
    return status.st_dev, status.st_ino


def _place(status: os.stat_result) -> _Place:
    return status.st_dev, status.st_ino, -1 if stat.S_ISFIFO(status.st_mode) else status.st_size


def _path_id(path: Path) -> _FileId | None:
    """The identity of the file ``path`` names now; None when it names none."""
    try:
        return _file_id(os.stat(path))
    except FileNotFoundError:
        return None


class JsonLinesSink(Sink):
    """Appends one line per record to a file (opened on first write) or to stdout.

    Sent: the record's line was written to the operating system (not fsynced). A write the system
    refuses (a full disk, an I/O error, a pipe whose reader is gone) is retried, on the path opened
    afresh unless it is a FIFO, and a file renamed or deleted under the sink (rotation) is followed by
    a new one at the path. Writes are unbuffered, so a failed one leaves nothing behind to come out later, and the line
    it cut short is finished, not written again, when its record comes back to the same file: no line
    appears twice, and none is torn between whole ones.
    """

    def __init__(self, settings: JsonLinesSinkSettings) -> None:
        super().__init__(settings.name or "jsonl", max_buffer_records=settings.max_buffer_records,
                         max_batch_records=settings.max_batch_records, drain_timeout_s=settings.drain_timeout_s)
        self._path = None if settings.path == "-" else Path(settings.path)
        self._file: io.FileIO | None = None
        self._file_id: _FileId | None = None
        self._file_is_fifo = False
        self._torn: tuple[SinkRecord, int, _Place | None] | None = None
        """The record whose line a failed write cut short, how many of the line's bytes are out, and
        where the fragment ends (None: stdout). Its line is finished only right there: not in a new
        file that happens to reuse the inode of a deleted one, nor in a file truncated meanwhile."""
        self._writer = WriterThread(f"audit-sink-{self.name}")

    async def _deliver(self, batch: list[SinkRecord]) -> None:
        # Encoded in the render slices too: in one go, megabytes of text would hold the GIL at length.
        lines = await render_in_slices(lambda record: render_json_line(record).encode(), batch)
        await self._writer.run(self._write, batch, lines)  # file writes block; keep them off the loop

    def _write(self, batch: list[SinkRecord], lines: list[bytes]) -> None:
        ends = list(itertools.accumulate(len(line) for line in lines))
        data = memoryview(b"".join(lines))  # one write per batch, not per line
        out = 0
        try:
            stream = self._stream()
            if self._torn is not None:
                torn_record, torn_out, torn_at = self._torn
                if torn_at == self._where():  # the fragment ends here: finish its line, or end it
                    if torn_record is batch[0]:
                        out = torn_out
                    else:  # its record was given up: end the fragment, keep later lines whole
                        _write_some(stream, b"\n")
                # Otherwise the fragment stays, unterminated, in the file that was moved away; its
                # line, if its record comes back, is written whole here.
                self._torn = None
            while out < len(data):
                out += _write_some(stream, data[out:])
        except OSError as exc:
            written = bisect.bisect_right(ends, out)  # whole lines out
            line_start = ends[written - 1] if written else 0
            if written < len(lines) and out > line_start:
                with contextlib.suppress(OSError):  # unknown, it cannot be finished: the line goes whole
                    self._torn = (batch[written], out - line_start, self._where())
            # The next attempt opens the path again: a descriptor an error has left dead (a stale NFS
            # handle, a file at its size limit, one deleted to free the disk) would fail for ever. Not a
            # FIFO's: a pipe no reader has open loses its buffered bytes, counted as sent, with its last
            # writer; and once a reader opens it again, the same descriptor writes on.
            if not self._file_is_fifo:
                self._close_file()
            raise DeliveryError(written, _os_error_name(exc), retryable=True) from exc

    def _where(self) -> _Place | None:
        """Where the next byte written goes (None for stdout)."""
        return None if self._file is None else _place(os.fstat(self._file.fileno()))

    def _stream(self) -> _RawStream:
        """Where the next batch goes: stdout, or the file at the path (opened again if it is another now)."""
        if self._path is None:
            sys.stdout.flush()  # text printed before goes first, whole
            # Below the buffered layer: a failed write must not leave bytes in a buffer that would
            # come out after the retry had written them again.
            stream: _RawStream = getattr(sys.stdout.buffer, "raw", sys.stdout.buffer)
            return stream
        if self._file is not None and _path_id(self._path) != self._file_id:
            self._close_file()  # renamed or deleted (rotation): the next lines go to the file at the path now
        if self._file is None:
            file = self._path.open("ab", buffering=0)
            try:
                status = os.fstat(file.fileno())
            except OSError:
                file.close()
                raise
            self._file, self._file_id, self._file_is_fifo = file, _file_id(status), stat.S_ISFIFO(status.st_mode)
        return self._file

    def _close_file(self) -> None:
        file, self._file, self._file_id = self._file, None, None
        if file is not None:
            with contextlib.suppress(OSError):  # a late write-back error (NFS) concerns lines already counted
                file.close()

    async def _close(self) -> None:
        if self._writer.started:
            # Behind a write that never returns (a stalled FIFO, a hung mount) this waits too:
            # shutdown gives it the drain time once more, then leaves the thread to the process exit.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._writer.run(self._finish), self._drain_timeout_s)

    def _finish(self) -> None:
        """End a line left torn (its record was cut at shutdown), so that what follows starts whole; close the file.

        Only where the fragment ends: the path is not opened if it names another file now, nor created.
        """
        torn, self._torn = self._torn, None
        if torn is not None:
            with contextlib.suppress(OSError):  # then it stays unterminated; its record counts as dropped either way
                if self._path is None:
                    _write_some(self._stream(), b"\n")
                elif self._file is not None:
                    if self._where() == torn[2]:
                        _write_some(self._file, b"\n")
                elif _fragment_at_path(self._path, torn[2]):
                    _write_some(self._stream(), b"\n")
        self._close_file()


def _fragment_at_path(path: Path, where: _Place | None) -> bool:
    """Whether the file at ``path`` ends where a fragment was left (so it may be opened to end it)."""
    try:
        return where is not None and _place(os.stat(path)) == where
    except FileNotFoundError:
        return False
