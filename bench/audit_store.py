"""Audit append throughput and latency on SQLite and PostgreSQL, plus restart cost.

Runs ``AuditLog.append`` from 1, 16 and 256 concurrent appenders for a fixed time per case and
reports records/s and p50/p99 latency of ``append`` (which returns only once the record is
committed). Then 256 concurrent gateway-shaped calls (request record, upstream time, response
record) report calls/s and the latency the two appends add to each call, and two writer
processes with an origin each show what the store itself absorbs. Also times ``AuditLog.start()``
(head row) against rebuilding the frontier from every stored leaf hash.

First it measures the machine's floor in the same run: bare durable commits of one row (and, on
SQLite, of 100 rows) with the same durability settings, no Bastion code. The issue's reference
points are such figures, and they vary between machines (and between runs of one VM) by 2x and
more, so each result is also given as a ratio to the floor: ``added_floor_ratio`` is the
latency the audit stage adds to a call over two bare durable commits (a call waits for two).
Usage: ``.venv/bin/python bench/audit_store.py [--seconds 3] [--no-postgres]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from uvicorn.loops.auto import auto_loop_factory

from bastion.audit.compact import Frontier
from bastion.audit.keys import generate_signing_key
from bastion.audit.log import AuditLog, CheckpointPolicy
from bastion.audit.record import AuditEvent, EventKind, Outcome, compute_arguments_sha256
from bastion.storage import AuditStore, open_store

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
ORIGIN = "bench/audit"
ARGUMENTS = {"query": "quarterly revenue by region", "limit": 50, "filters": {"region": ["emea", "apac"]}}
EVENT = AuditEvent(
    kind=EventKind.REQUEST, outcome=Outcome.OK, subject="alice@example.com", issuer="https://idp.example.com",
    upstream="warehouse", method="tools/call", name="sql_query", arguments=ARGUMENTS,
    arguments_sha256=compute_arguments_sha256(ARGUMENTS), jsonrpc_id=1, session_id="sess-" + "0" * 32,
)
RESULT = {"content": [{"type": "text", "text": "emea 1.2M, apac 0.9M"}], "isError": False}
RESPONSE = AuditEvent(
    kind=EventKind.RESPONSE, outcome=Outcome.OK, subject="alice@example.com", upstream="warehouse",
    method="tools/call", name="sql_query", result=RESULT, result_sha256="0" * 64, is_error=False,
    latency_ms=12.5, jsonrpc_id=1, session_id="sess-" + "0" * 32, request_seq=0,
)


T = TypeVar("T")
WRITER_PROCESSES = 2
CHILD_START_S = 5.0
"""Time for the spawned writer processes to import and connect before their load starts together."""
CALL_CONCURRENCY = 256
CALL_UPSTREAM_S = (0.0, 0.05, 0.5)
"""Upstream time per call: none (the store's ceiling), 50 ms (a quick real tool), 500 ms (a typical one)."""


FLOOR_ROW = ("bench/floor", "2026-11-25T00:00:00.000Z", "request", bytes(400), bytes(32))
"""About the size of one of this benchmark's records."""
SPACING_S = 0.001
"""Pause before each commit of the floor's spaced series: 256 calls of 500 ms arrive about this far apart.
Both ends go idle in between and waking them again adds to each commit, so back-to-back commits
understate what a call under that load can get."""


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def _sqlite_floor(path: Path, seconds: float) -> dict[str, Any]:
    """Bare durable commits in WAL mode with synchronous=FULL, as the store opens its database."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE floor (seq INTEGER PRIMARY KEY, origin TEXT, time TEXT, kind TEXT, body BLOB, leaf BLOB)")
        insert = "INSERT INTO floor (origin, time, kind, body, leaf) VALUES (?, ?, ?, ?, ?)"
        commit_ms: list[float] = []
        deadline = time.perf_counter() + seconds / 2
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            conn.execute("BEGIN")
            conn.execute(insert, FLOOR_ROW)
            conn.execute("COMMIT")
            commit_ms.append((time.perf_counter() - started) * 1000)
        spaced_ms: list[float] = []
        deadline = time.perf_counter() + seconds / 4
        while time.perf_counter() < deadline:
            time.sleep(SPACING_S)
            started = time.perf_counter()
            conn.execute("BEGIN")
            conn.execute(insert, FLOOR_ROW)
            conn.execute("COMMIT")
            spaced_ms.append((time.perf_counter() - started) * 1000)
        rows = 0
        started = time.perf_counter()
        while time.perf_counter() < started + seconds / 2:
            conn.execute("BEGIN")
            conn.executemany(insert, [FLOOR_ROW] * 100)
            conn.execute("COMMIT")
            rows += 100
        rows_per_s = rows / (time.perf_counter() - started)
    finally:
        conn.close()
    commit_ms.sort()
    return {
        "one_row_commits_per_s": round(len(commit_ms) / (seconds / 2), 1),
        "one_row_commit_p50_ms": round(percentile(commit_ms, 0.5), 3),
        "one_row_commit_spaced_p50_ms": round(percentile(sorted(spaced_ms), 0.5), 3),
        "rows_per_s_at_100_per_commit": round(rows_per_s, 1),
    }


async def _postgres_floor(seconds: float) -> dict[str, Any]:
    """Bare durable one-row INSERTs in autocommit (one round trip and one WAL flush each)."""
    conn = await asyncpg.connect(PG_DSN)
    table = f"bench_floor_{uuid.uuid4().hex[:12]}"
    try:
        await conn.execute(f"CREATE TABLE {table} (seq bigserial PRIMARY KEY, origin text, time text, kind text,"
                           " body bytea, leaf bytea)")
        insert = f"INSERT INTO {table} (origin, time, kind, body, leaf) VALUES ($1, $2, $3, $4, $5)"
        commit_ms: list[float] = []
        deadline = time.perf_counter() + seconds / 2
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await conn.execute(insert, *FLOOR_ROW)
            commit_ms.append((time.perf_counter() - started) * 1000)
        spaced_ms: list[float] = []
        deadline = time.perf_counter() + seconds / 4
        while time.perf_counter() < deadline:
            await asyncio.sleep(SPACING_S)
            started = time.perf_counter()
            await conn.execute(insert, *FLOOR_ROW)
            spaced_ms.append((time.perf_counter() - started) * 1000)
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
    commit_ms.sort()
    return {
        "one_row_commits_per_s": round(len(commit_ms) / (seconds / 2), 1),
        "one_row_commit_p50_ms": round(percentile(commit_ms, 0.5), 3),
        "one_row_commit_spaced_p50_ms": round(percentile(sorted(spaced_ms), 0.5), 3),
    }


async def run_case(store: AuditStore, concurrency: int, seconds: float) -> dict[str, Any]:
    log = AuditLog(store, origin=ORIGIN, signing_key=generate_signing_key("bench"),
                   checkpoints=CheckpointPolicy(every_records=1000, every_s=10, heartbeat_s=300))
    await log.start()
    latencies_ms: list[float] = []
    deadline = time.perf_counter() + seconds

    async def appender() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await log.append(EVENT)
            latencies_ms.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(appender() for _ in range(concurrency)))
    elapsed_s = time.perf_counter() - started
    batches_before = log.stats.batches_committed
    await log.aclose()
    latencies_ms.sort()
    return {
        "concurrency": concurrency,
        "records": len(latencies_ms),
        "records_per_s": round(len(latencies_ms) / elapsed_s, 1),
        "p50_ms": round(percentile(latencies_ms, 0.50), 3),
        "p99_ms": round(percentile(latencies_ms, 0.99), 3),
        "mean_batch_records": round(len(latencies_ms) / max(batches_before, 1), 1),
    }


async def run_calls(
    store: AuditStore, concurrency: int, upstream_s: float, seconds: float, origin: str = ORIGIN
) -> dict[str, Any]:
    """Calls shaped like the gateway's: request record, the upstream's time, response record.

    The audit stage's added latency of one call is the time its two appends took (each returns
    once its record is durable); the upstream's own time is not counted. Upstream times vary
    ±50 % around ``upstream_s`` so that callers do not march in lockstep.
    """
    log = AuditLog(store, origin=origin, signing_key=generate_signing_key("bench"),
                   checkpoints=CheckpointPolicy(every_records=1000, every_s=10, heartbeat_s=300))
    await log.start()
    added_ms: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller(rng: random.Random) -> None:
        await asyncio.sleep(rng.uniform(0, upstream_s))  # callers arrive spread out, not in lockstep
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await log.append(EVENT)
            sent = time.perf_counter()
            await asyncio.sleep(rng.uniform(0.5, 1.5) * upstream_s)
            answered = time.perf_counter()
            await log.append(RESPONSE)
            added_ms.append((sent - started + time.perf_counter() - answered) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller(random.Random(n)) for n in range(concurrency)))
    elapsed_s = time.perf_counter() - started
    await log.aclose()
    added_ms.sort()
    return {
        "concurrency": concurrency,
        "upstream_ms": upstream_s * 1000,
        "calls_per_s": round(len(added_ms) / elapsed_s, 1),
        "added_p50_ms": round(percentile(added_ms, 0.50), 3),
        "added_p99_ms": round(percentile(added_ms, 0.99), 3),
    }


def _calls_in_child(url: str, origin: str, seconds: float, start_at: float, results: Any) -> None:
    async def run() -> dict[str, Any]:
        store = await open_store(url)
        try:
            await asyncio.sleep(max(0.0, start_at - time.time()))  # every process starts its load together
            return await run_calls(store, CALL_CONCURRENCY, 0.0, seconds, origin=origin)
        finally:
            await store.aclose()

    results.put(run_on_gateway_loop(run()))


async def run_calls_in_processes(url: str, processes: int, seconds: float) -> dict[str, Any]:
    """The store fed by several writer processes at once, an origin each, as gateway instances sharing it.

    One process is CPU-bound in Python well below what the store absorbs; this shows the store's
    own ceiling. Each process runs the no-upstream calls case; the rates add up because the
    processes start together and run equally long.
    """
    context = multiprocessing.get_context("spawn")  # not fork: this process runs an event loop
    results = context.Queue()
    start_at = time.time() + CHILD_START_S
    children = [
        context.Process(target=_calls_in_child, args=(url, f"{ORIGIN}-p{i}", seconds, start_at, results))
        for i in range(processes)
    ]
    for child in children:
        child.start()
    each = [await asyncio.to_thread(results.get, True, CHILD_START_S + seconds + 60) for _ in children]
    for child in children:
        await asyncio.to_thread(child.join)
    return {
        "processes": processes,
        "calls_per_s": round(sum(r["calls_per_s"] for r in each), 1),
        "per_process_calls_per_s": [r["calls_per_s"] for r in each],
    }


async def measure_restart(store: AuditStore) -> dict[str, Any]:
    head = await store.fetch_head(ORIGIN)
    size = head.tree_size if head else 0
    started = time.perf_counter()
    log = AuditLog(store, origin=ORIGIN, signing_key=generate_signing_key("bench"),
                   checkpoints=CheckpointPolicy(every_records=10**9, every_s=3600, heartbeat_s=3600))
    await log.start()
    start_ms = (time.perf_counter() - started) * 1000
    await log.aclose()
    started = time.perf_counter()
    frontier = Frontier()
    async for entry in store.stream_entries(ORIGIN, batch_size=5000):
        frontier.append(entry.leaf_hash)
    rebuild_ms = (time.perf_counter() - started) * 1000
    assert head is None or frontier.hashes == head.frontier, "stored head disagrees with the leaves"
    return {"tree_size": size, "start_from_head_ms": round(start_ms, 2), "rebuild_from_leaves_ms": round(rebuild_ms, 1)}


async def bench_backend(name: str, url: str, seconds: float, scratch: Path) -> dict[str, Any]:
    if name == "sqlite":
        floor = await asyncio.to_thread(_sqlite_floor, scratch / "floor.db", seconds)
    else:
        floor = await _postgres_floor(seconds)
    cases = []
    for concurrency in (1, 16, 256):
        store = await open_store(url)
        try:
            cases.append(await run_case(store, concurrency, seconds))
        finally:
            await store.aclose()
    calls = []
    for upstream_s in CALL_UPSTREAM_S:
        store = await open_store(url)
        try:
            call = await run_calls(store, CALL_CONCURRENCY, upstream_s, seconds)
            call["added_floor_ratio"] = round(call["added_p50_ms"] / (2 * floor["one_row_commit_p50_ms"]), 2)
            calls.append(call)
        finally:
            await store.aclose()
    processes = await run_calls_in_processes(url, WRITER_PROCESSES, seconds)
    store = await open_store(url)
    try:
        restart = await measure_restart(store)
    finally:
        await store.aclose()
    return {"backend": name, "floor": floor, "cases": cases, "calls": calls, "processes": processes, "restart": restart}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each case")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        results.append(await bench_backend("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}", args.seconds, Path(tmp)))
    if not args.no_postgres:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        try:
            results.append(await bench_backend("postgres", f"{PG_DSN}?schema={schema}", args.seconds, Path()))
        finally:
            conn = await asyncpg.connect(PG_DSN)
            try:
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            finally:
                await conn.close()
    for result in results:
        f = result["floor"]
        hundred = f.get("rows_per_s_at_100_per_commit")
        print(f"{result['backend']} floor (bare durable commits, no Bastion): one row {f['one_row_commits_per_s']} commits/s, "
              f"p50 {f['one_row_commit_p50_ms']} ms (spaced {SPACING_S * 1000:g} ms apart: "
              f"{f['one_row_commit_spaced_p50_ms']} ms)" + (f"; 100 rows per commit {hundred} rows/s" if hundred else ""))
    print(f"\n{'backend':<9} {'appenders':>9} {'records':>8} {'records/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'batch':>6}")
    for result in results:
        for c in result["cases"]:
            print(f"{result['backend']:<9} {c['concurrency']:>9} {c['records']:>8} {c['records_per_s']:>10} "
                  f"{c['p50_ms']:>8} {c['p99_ms']:>8} {c['mean_batch_records']:>6}")
    print(f"\n{'backend':<9} {'calls':>6} {'upstream ms':>11} {'calls/s':>9} {'added p50 ms':>12} {'added p99 ms':>12}"
          f" {'p50/2 floor commits':>19}")
    for result in results:
        for c in result["calls"]:
            print(f"{result['backend']:<9} {c['concurrency']:>6} {c['upstream_ms']:>11} {c['calls_per_s']:>9} "
                  f"{c['added_p50_ms']:>12} {c['added_p99_ms']:>12} {c['added_floor_ratio']:>19}")
    for result in results:
        p = result["processes"]
        print(f"{result['backend']}: {p['processes']} writer processes (an origin each), 256 calls each, no upstream time: "
              f"{p['calls_per_s']} calls/s in all ({' + '.join(str(x) for x in p['per_process_calls_per_s'])})")
    for result in results:
        r = result["restart"]
        print(f"{result['backend']}: restart at tree size {r['tree_size']}: start() from head row "
              f"{r['start_from_head_ms']} ms; rebuilding the frontier from all leaves {r['rebuild_from_leaves_ms']} ms")
    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = out_dir / f"audit_store-{stamp}.json"
    meta = {"python": platform.python_version(), "machine": platform.machine(), "seconds_per_case": args.seconds,
            "event_loop": type(asyncio.get_running_loop()).__module__}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


def run_on_gateway_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on the event loop ``bastion serve`` runs on: uvicorn's "auto" (uvloop when installed)."""
    with asyncio.Runner(loop_factory=auto_loop_factory()) as runner:
        return runner.run(main)


if __name__ == "__main__":
    run_on_gateway_loop(main())
