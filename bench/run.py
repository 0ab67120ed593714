"""The gateway benchmark: direct vs Bastion (production, each stage off) vs a peer gateway.

``make bench`` → ``bench/run.py`` (a few minutes on 2 cores); ``make bench-smoke`` →
``bench/run.py --smoke`` (tens of seconds, CI). Everything runs on loopback on this machine:
the fast upstream (bench/upstream.py), every gateway, and the load generator (bench/loadgen.py).

All paths are measured in the same run and interleaved: every cell (payload × concurrency or
offered rate) runs each path in turn, in an order that rotates per round, so drift on the
machine affects every path alike. Ratios are against the direct path of the same run.

Output: bench/results/gateway-<UTC stamp>.json (and -smoke), then bench/report.py renders
docs/benchmarks.md (+ docs/benchmarks.png when matplotlib is installed). ``--no-report`` skips that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
import scenarios  # noqa: E402

PY = sys.executable
BASTION = str(Path(PY).parent / "bastion")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- process helpers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(c) for c in f.read().split())
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def gateway_pids(pid: int) -> list[int]:
    """The gateway process and its descendants, minus the bench upstream (stdio children)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p != pid and "bench/upstream.py" in _cmdline(p):
            continue
        pids.append(p)
        todo.extend(_children(p))
    return pids


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in gateway_pids(pid):
        with contextlib.suppress(OSError, IndexError):
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    return total


def rss_bytes(pid: int) -> int:
    total = 0
    for p in gateway_pids(pid):
        with contextlib.suppress(OSError, IndexError):
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
    return total


async def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[Any] | None = None) -> None:
    conn = loadgen.RawHttp(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            status, _, _ = await conn.request(b"GET", b"")
            await conn.close()
            if status < 500:
                return
        except (OSError, loadgen.CallError):
            pass
        conn = loadgen.RawHttp(url)
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


class Procs:
    """Every process the harness started, stopped in reverse order (by pid, never by name)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def start(self, argv: list[str], log: Path, **kw: Any) -> subprocess.Popen[Any]:
        f = open(log, "wb")  # kept open for the process's lifetime
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[Any]) -> None:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)


# -- credentials -------------------------------------------------------------------------------


def make_jwt_material(workdir: Path, issuer: str) -> tuple[Path, str]:
    """An ES256 issuer: its JWKS file (served by the upstream) and one long-lived bearer token."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "bench", "alg": "ES256", "use": "sig"})
    path = workdir / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    now = int(time.time())
    token = jwt.encode(
        {"iss": issuer, "sub": scenarios.JWT_SUBJECT, "aud": scenarios.JWT_AUDIENCE, "iat": now, "nbf": now - 5, "exp": now + 6 * 3600},
        key, algorithm="ES256", headers={"kid": "bench"},
    )
    return path, token


def make_audit_key(workdir: Path) -> Path:
    path = workdir / "audit.key"
    try:
        from bastion.audit.keys import generate_signing_key, render_signing_key

        path.write_text(render_signing_key(generate_signing_key("bench.local")) + "\n")
    except ImportError:
        path.write_text("")
    path.chmod(0o600)
    return path


# -- schema and configs ------------------------------------------------------------------------


def schema_sections() -> tuple[set[str], dict[str, Any]]:
    out = subprocess.run([BASTION, "config", "schema"], capture_output=True, text=True, check=True).stdout
    schema = json.loads(out)
    return set(schema.get("properties", {})), schema


def config_check(path: Path) -> str | None:
    """None when ``bastion config check`` accepts the file, else its message."""
    r = subprocess.run([BASTION, "config", "check", str(path)], capture_output=True, text=True)
    if r.returncode == 0:
        return None
    return (r.stdout + r.stderr).strip()[-800:]


# -- the run -----------------------------------------------------------------------------------


class Plan:
    def __init__(self, args: argparse.Namespace) -> None:
        self.mode = "quick" if args.quick else "smoke" if args.smoke else "full"
        if self.mode == "full":
            self.concurrency = [1, 16, 128, 512]
            self.stdio_concurrency = [1, 16]
            self.duration, self.warmup, self.rounds = 2.0, 0.3, 2
            self.rates = [200, 1000]
            self.open_duration = 4.0
            self.idle_sessions = [1, 1000, 5000]
            self.tools = ["small", "large"]
        elif self.mode == "smoke":
            self.concurrency = [1, 16, 128]
            self.stdio_concurrency = [1, 16]
            self.duration, self.warmup, self.rounds = 0.6, 0.15, 1
            self.rates = [200, 1000]
            self.open_duration = 1.0
            self.idle_sessions = [1, 1000]
            self.tools = ["small", "large"]
        else:  # quick: the CI smoke test (≤ 30 s)
            self.concurrency = [1, 16]
            self.stdio_concurrency = [1]
            self.duration, self.warmup, self.rounds = 0.25, 0.05, 1
            self.rates = [200]
            self.open_duration = 0.5
            self.idle_sessions = [1, 50]
            self.tools = ["small", "large"]
        if args.duration:
            self.duration = args.duration
        if args.rounds:
            self.rounds = args.rounds
        self.open_pool = {"http": 64, "stdio": 16}


async def measure_paths(plan: Plan, paths: dict[str, dict[str, Any]], procs_per_lg: int, log: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    throughput: list[dict[str, Any]] = []
    names = list(paths)
    for rnd in range(plan.rounds):
        for tool in plan.tools:
            for conc in plan.concurrency:
                k = (rnd + conc) % len(names)
                order = names[k:] + names[:k]
                for name in order:
                    p = paths[name]
                    if p["transport"] == "stdio" and conc not in plan.stdio_concurrency:
                        continue
                    cpu0 = cpu_seconds(p["pid"]) if p.get("pid") else None
                    t0 = time.perf_counter()
                    res = await loadgen.closed_loop_multi(p["target"], conc, p["tool_prefix"] + tool, plan.duration, plan.warmup,
                                                          procs_per_lg if conc >= 16 else 1)
                    wall = time.perf_counter() - t0
                    cpu = cpu_seconds(p["pid"]) - cpu0 if cpu0 is not None else None
                    row: dict[str, Any] = {  # one JSON record of the results file
                        "path": name, "tool": tool, "concurrency": conc, "round": rnd,
                        "calls": res.calls, "errors": res.errors, "error_samples": res.error_samples,
                        "calls_per_s": round(res.calls / res.elapsed_s, 1),
                        # CPU over the whole cell (setup + warmup + window + teardown) per call made in it.
                        "cpu_s": round(cpu, 3) if cpu is not None else None, "wall_s": round(wall, 2),
                        **loadgen.percentiles(res.latencies_us),
                    }
                    throughput.append(row)
                    log(f"  r{rnd} {tool:5} c={conc:<4} {name:24} {row['calls_per_s']:>9.1f}/s p50 {row['p50_ms']} ms p99 {row['p99_ms']} ms err {res.errors}")
    openloop: list[dict[str, Any]] = []
    for rate in plan.rates:
        for tool in plan.tools:
            for name in names:
                p = paths[name]
                pool = plan.open_pool[p["transport"]]
                capacity = max((r["calls_per_s"] for r in throughput if r["path"] == name and r["tool"] == tool), default=0.0)
                if capacity < rate / 1.5:
                    # Far beyond what the path sustains closed-loop: the queue would only grow for
                    # the whole window. Recorded as not kept up rather than run for minutes.
                    openloop.append({"path": name, "tool": tool, "rate": rate, "sessions": pool, "offered_calls": 0, "calls": 0,
                                     "errors": 0, "error_samples": [], "cpu_s": None, "cpu_s_per_1000": None, "kept_up": False,
                                     "over_capacity": f"closed-loop max {capacity}/s < {rate}/1.5", **loadgen.percentiles([])})
                    log(f"  open {rate:>5}/s {tool:5} {name:24} skipped: over capacity ({capacity}/s closed-loop)")
                    continue
                sessions = await loadgen.open_sessions(p["target"], pool)
                cpu0 = cpu_seconds(p["pid"]) if p.get("pid") else None
                try:
                    res = await loadgen.open_loop(sessions, p["tool_prefix"] + tool, rate, plan.open_duration, plan.warmup)
                finally:
                    cpu = cpu_seconds(p["pid"]) - cpu0 if cpu0 is not None else None
                    await loadgen.close_sessions(sessions)
                offered = int(plan.open_duration * rate)
                row = {
                    "path": name, "tool": tool, "rate": rate, "sessions": pool, "offered_calls": offered,
                    "calls": res.calls, "errors": res.errors, "error_samples": res.error_samples,
                    "cpu_s": round(cpu, 3) if cpu is not None else None,
                    "cpu_s_per_1000": round(cpu / max(1, res.calls) * 1000 * plan.open_duration / (plan.open_duration + plan.warmup), 3)
                    if cpu is not None else None,
                    **loadgen.percentiles(res.latencies_us),
                }
                row["kept_up"] = bool(row["p99_ms"] is not None and row["p99_ms"] < 1000 and res.calls >= 0.99 * offered)
                openloop.append(row)
                log(f"  open {rate:>5}/s {tool:5} {name:24} p50 {row['p50_ms']} p99 {row['p99_ms']} p99.9 {row['p999_ms']} ms err {res.errors}")
    return throughput, openloop


async def measure_memory(
    counts: list[int],
    start_gateway: Callable[[], Awaitable[tuple[subprocess.Popen[Any], int]]],
    target: dict[str, Any],
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """RSS of a fresh gateway holding N idle sessions (initialized, then no traffic).

    ``target`` is a loadgen session target: ``{"url": ..., "headers": ...}``.
    """
    rows: list[dict[str, Any]] = []
    proc, pid = await start_gateway()
    try:
        base = rss_bytes(pid)
        held: list[Any] = []
        for n in counts:
            held += await loadgen.open_sessions({"url": target["url"], "headers": target.get("headers")}, n - len(held), parallel=32)
            await asyncio.sleep(1.0)
            rss = rss_bytes(pid)
            rows.append({"idle_sessions": n, "rss_bytes": rss, "baseline_rss_bytes": base})
            log(f"  memory {n:>5} idle sessions: {rss / 2**20:.1f} MiB")
        await loadgen.close_sessions(held)
    finally:
        await proc_stop(proc)
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        per = (b["rss_bytes"] - a["rss_bytes"]) / max(1, b["idle_sessions"] - a["idle_sessions"])
        for r in rows:
            r["bytes_per_idle_session"] = round(per)
    return rows


async def proc_stop(proc: subprocess.Popen[Any]) -> None:
    await asyncio.get_running_loop().run_in_executor(None, PROCS.stop, proc)


PROCS = Procs()


def summarize(throughput: list[dict[str, Any]], openloop: list[dict[str, Any]], direct: str) -> dict[str, Any]:
    """Median over rounds per cell, with ratios to the direct path of this run."""
    import statistics

    cells: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in throughput:
        cells.setdefault((r["path"], r["tool"], r["concurrency"]), []).append(r)
    tp = []
    for (path, tool, conc), rows in cells.items():
        calls = sum(r["calls"] for r in rows)
        cpu = [r["cpu_s"] for r in rows if r["cpu_s"] is not None]
        tp.append({
            "path": path, "tool": tool, "concurrency": conc,
            "calls_per_s": round(statistics.median(r["calls_per_s"] for r in rows), 1),
            "p50_ms": statistics.median(r["p50_ms"] for r in rows if r["p50_ms"] is not None) if calls else None,
            "p99_ms": statistics.median(r["p99_ms"] for r in rows if r["p99_ms"] is not None) if calls else None,
            "errors": sum(r["errors"] for r in rows), "calls": calls,
            "cpu_s_per_1000_calls": round(sum(cpu) / calls * 1000, 3) if cpu and calls else None,
        })
    by = {(r["path"], r["tool"], r["concurrency"]): r for r in tp}
    for r in tp:
        d = by.get((direct, r["tool"], r["concurrency"]))
        if d and d["calls_per_s"]:
            r["throughput_vs_direct"] = round(r["calls_per_s"] / d["calls_per_s"], 3)
    ol = []
    dby = {(r["tool"], r["rate"]): r for r in openloop if r["path"] == direct}
    for r in openloop:
        row = {k: r[k] for k in ("path", "tool", "rate", "p50_ms", "p99_ms", "p999_ms", "errors", "calls", "kept_up", "cpu_s_per_1000")}
        d = dby.get((r["tool"], r["rate"]))
        if d and r["p50_ms"] is not None and d["p50_ms"] is not None:
            for q in ("p50_ms", "p99_ms", "p999_ms"):
                row["added_" + q] = round(r[q] - d[q], 3)
        ol.append(row)
    return {"throughput": sorted(tp, key=lambda r: (r["tool"], r["concurrency"], r["path"])),
            "open_loop": sorted(ol, key=lambda r: (r["rate"], r["tool"], r["path"]))}


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    def ver(mod: str) -> str | None:
        try:
            from importlib.metadata import version
            return version(mod)
        except Exception:
            return None
    return {
        "cpus": os.cpu_count(), "cpu_model": cpu, "mem_bytes": mem, "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {m: ver(m) for m in ("mcp-bastion", "uvicorn", "httpx", "starlette", "uvloop", "httptools", "orjson")},
    }


async def main_async(args: argparse.Namespace) -> Path:
    plan = Plan(args)
    started = datetime.now(UTC)
    log_lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_lines.append(msg)

    workdir = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    log(f"bench mode={plan.mode} workdir={workdir}")
    sections, _ = schema_sections()
    log(f"config schema sections: {sorted(sections)}")

    up_port = free_port()
    issuer = f"http://127.0.0.1:{up_port}"
    jwks, token = make_jwt_material(workdir, issuer)
    audit_key = make_audit_key(workdir)
    up = PROCS.start([PY, str(HERE / "upstream.py"), "--http", str(up_port), "--jwks", str(jwks)], workdir / "upstream.log")
    upstream_url = f"http://127.0.0.1:{up_port}/mcp"
    await wait_http(upstream_url, proc=up)
    stdio_cmd = [PY, str(HERE / "upstream.py"), "--stdio"]

    paths: dict[str, dict[str, Any]] = {
        "direct-http": {"transport": "http", "target": {"url": upstream_url}, "pid": None, "tool_prefix": ""},
        "direct-stdio": {"transport": "stdio", "target": {"command": stdio_cmd}, "pid": None, "tool_prefix": ""},
    }
    skipped: dict[str, str] = {}
    gateways: dict[str, dict[str, Any]] = {}

    def ctx_for(port: int) -> scenarios.Context:
        return scenarios.Context(str(workdir), port, upstream_url, issuer, stdio_cmd, str(audit_key), sections)

    variants: dict[str, tuple[dict[str, Any], bool]] = {}
    variants["bastion"] = ({}, True)
    if not args.no_toggles:
        for stage, toggle in scenarios.STAGE_TOGGLES.items():
            if not scenarios.toggle_applies(toggle, sections):
                skipped[f"bastion-no-{stage}"] = f"the config schema has no {sorted(set(toggle.fragment) - sections)} section yet"
                continue
            variants[f"bastion-no-{stage}"] = (toggle.fragment, toggle.client_token)

    async def start_bastion(name: str) -> tuple[subprocess.Popen[Any], int, dict[str, Any], bool]:
        fragment, client_token = variants[name]
        port = free_port()
        cfg = scenarios.merge(scenarios.production_config(ctx_for(port), name), fragment)
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        problem = config_check(path)
        if problem is not None:
            raise ValueError(f"config rejected by `bastion config check`: {problem}")
        proc = PROCS.start([BASTION, "serve", "--config", str(path)], workdir / f"{name}.log")
        await wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        return proc, port, cfg, client_token

    for name in variants:
        try:
            proc, port, cfg, client_token = await start_bastion(name)
        except (ValueError, RuntimeError) as exc:
            skipped[name] = str(exc)
            log(f"skip {name}: {exc}")
            continue
        headers = {"authorization": f"Bearer {token}"} if client_token and "identity" in sections else None
        gateways[name] = {"config": cfg, "port": port}
        paths[f"{name}-http"] = {"transport": "http", "pid": proc.pid, "tool_prefix": "",
                                 "target": {"url": f"http://127.0.0.1:{port}/servers/{scenarios.UPSTREAM_HTTP}/mcp", "headers": headers}}
        if name == "bastion":
            paths["bastion-stdio"] = {"transport": "stdio", "pid": proc.pid, "tool_prefix": "",
                                      "target": {"url": f"http://127.0.0.1:{port}/servers/{scenarios.UPSTREAM_STDIO}/mcp", "headers": headers}}
            paths["bastion-federated-http"] = {"transport": "http", "pid": proc.pid, "tool_prefix": f"{scenarios.UPSTREAM_HTTP}__",
                                               "target": {"url": f"http://127.0.0.1:{port}/mcp", "headers": headers}}
    # stdio paths are "stdio" for concurrency limits (one upstream process per session).
    peer_info: dict[str, Any] = {"attempted": False}
    if not args.no_peer:
        import peer

        peer_info = await peer.start(workdir, upstream_url, PROCS, log)
        if peer_info.get("target"):
            paths["contextforge-http"] = {"transport": "http", "pid": peer_info["pid"], "tool_prefix": peer_info.get("tool_prefix", ""),
                                          "target": peer_info["target"]}

    # Sanity: one call on every path; a path that cannot complete a call is reported, not measured.
    for name in list(paths):
        p = paths[name]
        try:
            ss = await loadgen.open_sessions(p["target"], 1)
            for tool in plan.tools:
                await ss[0].call(p["tool_prefix"] + tool)
            await loadgen.close_sessions(ss)
        except Exception as exc:
            skipped[name] = f"sanity call failed: {type(exc).__name__}: {exc}"[:800]
            log(f"skip {name}: {skipped[name]}")
            del paths[name]

    log("throughput (closed loop) and latency (open loop):")
    throughput, openloop = await measure_paths(plan, paths, args.procs, log)

    log("memory (fresh gateway, idle sessions):")
    memory: dict[str, list[dict[str, Any]]] = {}
    if "bastion" in gateways:
        memory["bastion-http"] = await _memory_of(plan, start_bastion, token, sections, log)
    if peer_info.get("target") and peer_info.get("restart"):
        memory["contextforge-http"] = await _peer_memory(plan, peer_info, log)

    summary = summarize(throughput, openloop, "direct-http")
    result = {
        "benchmark": "gateway", "mode": plan.mode, "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "plan": {k: v for k, v in vars(plan).items()},
        "load_generator": {"client": "raw asyncio HTTP/1.1 (bench/loadgen.py), one connection per MCP session",
                           "processes": args.procs, "same_machine": True},
        "schema_sections": sorted(sections),
        "paths": {n: {"transport": p["transport"], "url": p["target"].get("url"), "command": p["target"].get("command"),
                      "measured_pid_tree": bool(p["pid"])} for n, p in paths.items()},
        "skipped": skipped,
        "stage_toggles": {n: {"fragment": t.fragment, "client_token": t.client_token, "note": t.note}
                          for n, t in scenarios.STAGE_TOGGLES.items()},
        "gateway_configs": {n: g["config"] for n, g in gateways.items()},
        "peer": {k: v for k, v in peer_info.items() if k not in ("target", "restart")},
        "throughput_raw": throughput, "open_loop_raw": openloop,
        "summary": summary, "memory": memory,
    }
    out_dir = Path(args.out) if args.out else HERE / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if plan.mode == "full" else f"-{plan.mode}"
    out = out_dir / f"gateway-{started.strftime('%Y%m%dT%H%M%SZ')}{suffix}.json"
    out.write_text(json.dumps(result, indent=1))
    log(f"results: {out}")
    shutil.rmtree(workdir, ignore_errors=True) if not args.keep else None
    return out


async def _memory_of(plan: Plan, start_bastion: Any, token: str, sections: set[str], log: Any) -> list[dict[str, Any]]:
    proc, port, _, client_token = await start_bastion("bastion")
    headers = {"authorization": f"Bearer {token}"} if client_token and "identity" in sections else None
    url = f"http://127.0.0.1:{port}/servers/{scenarios.UPSTREAM_HTTP}/mcp"

    async def already() -> tuple[Any, int]:
        return proc, proc.pid

    return await measure_memory(plan.idle_sessions, already, {"url": url, "headers": headers}, log)


async def _peer_memory(plan: Plan, peer_info: dict[str, Any], log: Any) -> list[dict[str, Any]]:
    proc, pid, target = await peer_info["restart"]()

    async def already() -> tuple[Any, int]:
        return proc, pid

    return await measure_memory(plan.idle_sessions, already, target, log)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="short pass (tens of seconds), as CI runs it")
    ap.add_argument("--quick", action="store_true", help="very short pass for the pytest smoke test (≤ 30 s)")
    ap.add_argument("--duration", type=float, help="seconds per closed-loop cell (overrides the mode)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (overrides the mode)")
    ap.add_argument("--procs", type=int, default=1, help="load-generator processes for concurrency ≥ 16")
    ap.add_argument("--no-peer", action="store_true", help="skip the ContextForge peer gateway")
    ap.add_argument("--no-toggles", action="store_true", help="skip the stage-off variants")
    ap.add_argument("--no-report", action="store_true", help="do not render docs/benchmarks.md")
    ap.add_argument("--out", help="results directory (default bench/results)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    args = ap.parse_args()
    try:
        out = asyncio.run(main_async(args))
    finally:
        PROCS.stop_all()
    if not args.no_report:
        import report

        report.render(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
