"""Stdio upstream: a child process speaking newline-delimited JSON-RPC (MCP stdio transport).

The child runs in its own process group so that a wrapper (npx, sh) and its children are
stopped together; stderr goes line by line into Bastion's log under the upstream's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from bastion.errors import ProtocolError, UpstreamError
from bastion.jsonrpc.envelope import Message, dumps, invalid_response_id, parse_message
from bastion.upstream.base import TransportListener

log = logging.getLogger("bastion.upstream.stdio")

_LINE_LIMIT_BYTES = 64 * 1024 * 1024
_BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "SHELL", "TERM", "NODE_PATH", "SYSTEMROOT")


class StdioTransport:
    """Runs ``command`` and exchanges messages over its stdin/stdout."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: str | None = None) -> None:
        self.name = name
        self._command = command
        # The child sees a minimal environment plus what the configuration gives it: never the
        # gateway's own secrets (database URLs, signing keys) by accident.
        self._env = {k: os.environ[k] for k in _BASE_ENV_KEYS if k in os.environ} | env
        self._cwd = cwd
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def open(self, listener: TransportListener) -> None:
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self._command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                cwd=self._cwd,
                limit=_LINE_LIMIT_BYTES,
                start_new_session=True,
            )
        except OSError as exc:
            raise UpstreamError(f"cannot start upstream {self.name!r}: {exc.strerror}") from exc
        log.info("upstream started", extra={"upstream": self.name, "pid": self._proc.pid})
        self._tasks = [
            asyncio.create_task(self._read_stdout(listener), name=f"stdio-out-{self.name}"),
            asyncio.create_task(self._read_stderr(), name=f"stdio-err-{self.name}"),
        ]

    async def _read_stdout(self, listener: TransportListener) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        reason = "upstream process exited"
        try:
            while True:
                try:
                    line = await self._proc.stdout.readline()
                except ValueError:
                    reason = "upstream wrote a line longer than the limit"
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self._proc.pid, signal.SIGKILL)
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                try:
                    message = parse_message(line)
                except ProtocolError:
                    log.warning(
                        "upstream wrote invalid JSON-RPC to stdout",
                        extra={"upstream": self.name, "line": line[:200].decode("utf-8", "replace")},
                    )
                    listener.on_invalid("upstream wrote invalid JSON-RPC to stdout", invalid_response_id(line))
                    continue
                await listener.on_message(message, None)
        finally:
            if not self._closing:
                code = await self._proc.wait()
                listener.on_closed(f"{reason} (exit code {code})")

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while line := await self._proc.stderr.readline():
            log.info("upstream stderr", extra={"upstream": self.name, "line": line.decode("utf-8", "replace").rstrip()})

    async def send(self, message: Message) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            raise UpstreamError(f"upstream {self.name!r} is not running")
        try:
            proc.stdin.write(dumps(message) + b"\n")
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise UpstreamError(f"upstream {self.name!r} closed its input") from exc

    async def close(self) -> None:
        self._closing = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            # MCP stdio shutdown: close stdin, then SIGTERM, then SIGKILL.
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)
                try:
                    await asyncio.wait_for(proc.wait(), timeout=2.0)
                    break
                except TimeoutError:
                    continue
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
