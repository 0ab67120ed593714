"""Load generator: many concurrent MCP sessions doing ``tools/call``, closed or open loop.

The HTTP client is a minimal hand-written asyncio HTTP/1.1 keep-alive client (one TCP
connection per MCP session, as a real MCP client has), because httpx costs ~10x more CPU
per request and would make the load generator the bottleneck on a 2-core machine (measured:
see docs/benchmarks.md, "load generator"). The stdio client spawns one server process per
session, exactly as an MCP host does.

Modes:
  * closed loop: ``concurrency`` sessions each issue the next call as soon as the previous one
    returns, for ``duration`` seconds → throughput (calls/s) and latency.
  * open loop: calls are *scheduled* at a fixed rate (``rate`` calls/s) independent of replies;
    a call's latency is measured from its scheduled time, so queueing is not hidden
    (no coordinated omission). A pool of sessions carries the calls; if every session is busy
    the call waits, and that wait counts.

Used as a library by bench/run.py, and as a worker process:
  ``python bench/loadgen.py worker '<json spec>'`` → prints one JSON result line.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

PROTOCOL_VERSION = "2025-11-25"
MIN_BYTES = {"small": 150, "large": 65536}


class CallError(Exception):
    pass


# -- HTTP --------------------------------------------------------------------------------------


class RawHttp:
    """One keep-alive HTTP/1.1 connection; Content-Length and chunked replies."""

    def __init__(self, url: str, extra_headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = (parts.path or "/").encode()
        hdrs = {"host": f"{self.host}:{self.port}", **(extra_headers or {})}
        self.base_headers = "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    async def request(self, method: bytes, headers: bytes, body: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
        if self.writer is None:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        self.writer.write(
            method + b" " + self.path + b" HTTP/1.1\r\n" + self.base_headers + headers
            + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        r = self.reader
        try:
            head = await r.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.writer = None
            raise CallError(f"connection closed: {type(exc).__name__}") from None
        lines = head[:-4].split(b"\r\n")
        status = int(lines[0][9:12])
        hdrs: dict[bytes, bytes] = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            hdrs[k.strip().lower()] = v.strip()
        if b"content-length" in hdrs:
            data = await r.readexactly(int(hdrs[b"content-length"]))
        elif hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:
                size = int((await r.readline()).split(b";")[0], 16)
                if size == 0:
                    await r.readline()
                    break
                parts.append(await r.readexactly(size))
                await r.readexactly(2)
            data = b"".join(parts)
        else:
            data = await r.read()
            self.writer = None
        if hdrs.get(b"connection", b"").lower() == b"close":
            self.writer = None
        return status, hdrs, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
            self.writer = None


def _sse_reply(data: bytes) -> bytes:
    """The last JSON-RPC reply (not a notification) carried in an SSE body."""
    found = b""
    for block in data.split(b"\n\n"):
        payload = b"\n".join(line[5:].lstrip() for line in block.split(b"\n") if line.startswith(b"data:"))
        if payload and b'"method"' not in payload[:64]:
            found = payload
    return found


class HttpSession:
    """One MCP session over Streamable HTTP."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.conn = RawHttp(url, headers)
        self.session_id: bytes | None = None
        self.ids = itertools.count(1)
        self.common = (
            b"accept: application/json, text/event-stream\r\ncontent-type: application/json\r\n"
        )

    def _headers(self) -> bytes:
        h = self.common
        if self.session_id is not None:
            h += b"mcp-session-id: " + self.session_id + b"\r\nmcp-protocol-version: " + PROTOCOL_VERSION.encode() + b"\r\n"
        return h

    async def _rpc(self, method: str, params: dict[str, Any] | None) -> bytes:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self.ids), "method": method}
        if params is not None:
            msg["params"] = params
        status, hdrs, body = await self.conn.request(b"POST", self._headers(), orjson.dumps(msg))
        if status != 200:
            raise CallError(f"HTTP {status}: {body[:200]!r}")
        if hdrs.get(b"content-type", b"").startswith(b"text/event-stream"):
            body = _sse_reply(body)
        if method == "initialize":
            sid = hdrs.get(b"mcp-session-id")
            if sid:
                self.session_id = sid
        return body

    async def open(self) -> None:
        await self.conn.connect()
        body = await self._rpc(
            "initialize",
            {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
        )
        if b'"result"' not in body:
            raise CallError(f"initialize failed: {body[:300]!r}")
        status, _, body = await self.conn.request(
            b"POST", self._headers(), b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
        )
        if status not in (200, 202):
            raise CallError(f"initialized notification: HTTP {status}")

    async def call(self, tool: str) -> int:
        body = await self._rpc("tools/call", {"name": tool, "arguments": {"n": 1}})
        _check(body, tool)
        return len(body)

    async def close(self) -> None:
        if self.session_id is not None and self.conn.writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.request(b"DELETE", self._headers()), 5)
        await self.conn.close()


def _check(body: bytes, tool: str) -> None:
    if b'"result"' not in body or b'"isError":true' in body or len(body) < MIN_BYTES["large" if tool.endswith("large") else "small"]:
        raise CallError(f"bad reply ({len(body)} B): {body[:300]!r}")


# -- stdio -------------------------------------------------------------------------------------


class StdioSession:
    """One MCP session with a server process of its own over stdio."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.proc: asyncio.subprocess.Process | None = None
        self.ids = itertools.count(1)

    async def _rpc(self, method: str, params: dict[str, Any] | None) -> bytes:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self.ids), "method": method}
        if params is not None:
            msg["params"] = params
        self.proc.stdin.write(orjson.dumps(msg) + b"\n")
        line = await self.proc.stdout.readline()
        if not line:
            raise CallError("stdio server exited")
        return line

    async def open(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, limit=1 << 24
        )
        await self._rpc("initialize", {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}})
        assert self.proc.stdin is not None
        self.proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')

    async def call(self, tool: str) -> int:
        body = await self._rpc("tools/call", {"name": tool, "arguments": {"n": 1}})
        _check(body, tool)
        return len(body)

    async def close(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                await asyncio.wait_for(self.proc.wait(), 3)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


def make_session(target: dict[str, Any]) -> HttpSession | StdioSession:
    if target.get("command"):
        return StdioSession(target["command"])
    return HttpSession(target["url"], target.get("headers"))


async def open_sessions(target: dict[str, Any], n: int, parallel: int = 64) -> list[Any]:
    sessions = [make_session(target) for _ in range(n)]
    sem = asyncio.Semaphore(parallel)

    async def one(s: Any) -> None:
        async with sem:
            await s.open()

    await asyncio.gather(*(one(s) for s in sessions))
    return sessions


async def close_sessions(sessions: list[Any]) -> None:
    sem = asyncio.Semaphore(64)

    async def one(s: Any) -> None:
        async with sem:
            await s.close()

    await asyncio.gather(*(one(s) for s in sessions), return_exceptions=True)


# -- measurement -------------------------------------------------------------------------------


@dataclass
class Result:
    calls: int = 0
    errors: int = 0
    bytes: int = 0
    elapsed_s: float = 0.0
    latencies_us: list[int] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    def note_error(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls, "errors": self.errors, "bytes": self.bytes, "elapsed_s": self.elapsed_s,
            "latencies_us": self.latencies_us, "error_samples": self.error_samples,
        }


async def closed_loop(sessions: list[Any], tool: str, duration: float, warmup: float, start_at: float | None = None) -> Result:
    """Every session calls back-to-back; only calls that *start* inside the window count."""
    res = Result()
    if start_at is not None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
    t_begin = time.perf_counter() + warmup
    t_end = t_begin + duration
    lat = res.latencies_us
    perf = time.perf_counter

    async def worker(s: Any) -> None:
        # A call counts when it *completes* inside [t_begin, t_end): slow calls longer than the
        # window still count, and calls in flight at t_end are not waited for beyond one call.
        while True:
            t0 = perf()
            if t0 >= t_end:
                return
            try:
                n = await s.call(tool)
            except Exception as exc:  # every failure is counted, none hidden
                if t_begin <= perf() < t_end:
                    res.note_error(exc)
                await asyncio.sleep(0.01)
                continue
            t1 = perf()
            if t_begin <= t1 < t_end:
                res.calls += 1
                res.bytes += n
                lat.append(int((t1 - t0) * 1e6))

    await asyncio.gather(*(worker(s) for s in sessions))
    res.elapsed_s = duration
    return res


async def open_loop(sessions: list[Any], tool: str, rate: float, duration: float, warmup: float) -> Result:
    """Calls scheduled at ``rate``/s; latency = completion − scheduled time (includes queueing)."""
    res = Result()
    free: asyncio.Queue[Any] = asyncio.Queue()
    for s in sessions:
        free.put_nowait(s)
    perf = time.perf_counter
    start = perf()
    t_begin = start + warmup
    total = int((warmup + duration) * rate)
    inflight: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        s = await free.get()
        try:
            n = await s.call(tool)
        except Exception as exc:
            if scheduled >= t_begin:
                res.note_error(exc)
            return
        finally:
            free.put_nowait(s)
        if scheduled >= t_begin:
            res.calls += 1
            res.bytes += n
            res.latencies_us.append(int((perf() - scheduled) * 1e6))

    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - perf()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(scheduled))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
    if inflight:
        await asyncio.wait(inflight, timeout=30)
    res.elapsed_s = duration
    return res


# -- worker processes --------------------------------------------------------------------------


async def _worker_main(spec: dict[str, Any]) -> dict[str, Any]:
    sessions = await open_sessions(spec["target"], spec["sessions"])
    print("READY", flush=True)
    # Wait for the coordinator's "GO <epoch>" so every worker starts its window together.
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    start_at = float(line.split()[1])
    try:
        res = await closed_loop(sessions, spec["tool"], spec["duration"], spec["warmup"], start_at)
    finally:
        await close_sessions(sessions)
    return res.to_json()


def merge(results: list[Result]) -> Result:
    out = Result()
    for r in results:
        out.calls += r.calls
        out.errors += r.errors
        out.bytes += r.bytes
        out.elapsed_s = max(out.elapsed_s, r.elapsed_s)
        out.latencies_us.extend(r.latencies_us)
        out.error_samples.extend(r.error_samples[: 5 - len(out.error_samples)])
    return out


async def closed_loop_multi(target: dict[str, Any], concurrency: int, tool: str, duration: float, warmup: float, procs: int) -> Result:
    """Closed loop split over ``procs`` load-generator processes (1 = in this process)."""
    procs = max(1, min(procs, concurrency))
    if procs == 1:
        try:
            sessions = await open_sessions(target, concurrency)
        except Exception as exc:  # a path that cannot open its sessions is an error, not a crash
            res = Result(elapsed_s=duration)
            res.note_error(exc)
            return res
        try:
            return await closed_loop(sessions, tool, duration, warmup)
        finally:
            await close_sessions(sessions)
    shares = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    workers = []
    for share in shares:
        spec = {"target": target, "sessions": share, "tool": tool, "duration": duration, "warmup": warmup}
        workers.append(
            await asyncio.create_subprocess_exec(
                sys.executable, os.path.abspath(__file__), "worker", json.dumps(spec),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, limit=1 << 26,
            )
        )
    for w in workers:
        assert w.stdout is not None
        ready = await w.stdout.readline()
        if not ready.startswith(b"READY"):
            raise RuntimeError(f"load-generator worker failed to start: {ready!r}")
    go = f"GO {time.time() + 0.05}\n".encode()
    for w in workers:
        assert w.stdin is not None
        w.stdin.write(go)
        await w.stdin.drain()
    results = []
    for w in workers:
        out, _ = await w.communicate()
        d = json.loads(out.decode().strip().splitlines()[-1])
        results.append(Result(d["calls"], d["errors"], d["bytes"], d["elapsed_s"], d["latencies_us"], d["error_samples"]))
    return merge(results)


def percentiles(lat_us: list[int]) -> dict[str, float | None]:
    if not lat_us:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None, "mean_ms": None}
    s = sorted(lat_us)
    n = len(s)

    def q(p: float) -> float:
        return round(s[min(n - 1, int(p * n))] / 1000, 3)

    return {
        "p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99), "p999_ms": q(0.999),
        "max_ms": round(s[-1] / 1000, 3), "mean_ms": round(sum(s) / n / 1000, 3),
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        result = asyncio.run(_worker_main(json.loads(sys.argv[2])))
        print(json.dumps(result), flush=True)
    else:
        print(__doc__)
        sys.exit(2)
