"""CI smoke test of the gateway benchmark harness: a very short pass, structure and zero errors.

No timing assertions: only that every measured path completed calls without a single error and
that the results JSON has the structure docs/benchmarks.md is rendered from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_bench_quick_pass(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--no-peer", "--no-toggles", "--no-report", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out,) = tmp_path.glob("gateway-*.json")
    result = json.loads(out.read_text())

    for key in ("machine", "plan", "paths", "summary", "memory", "throughput_raw", "open_loop_raw", "skipped", "stage_toggles"):
        assert key in result
    assert {"direct-http", "direct-stdio", "bastion-http", "bastion-stdio"} <= set(result["paths"])

    measured = {r["path"] for r in result["throughput_raw"]}
    assert measured == set(result["paths"])
    for row in result["throughput_raw"]:
        assert row["calls"] > 0, row
        assert row["errors"] == 0, row
    for row in result["open_loop_raw"]:
        if not row.get("over_capacity"):
            assert row["calls"] > 0 and row["errors"] == 0, row
    for row in result["summary"]["throughput"]:
        assert {"path", "tool", "concurrency", "calls_per_s", "p50_ms", "p99_ms"} <= set(row)
        if row["path"] != "direct-http":
            assert "throughput_vs_direct" in row
    mem = result["memory"]["bastion-http"]
    assert [m["idle_sessions"] for m in mem] == result["plan"]["idle_sessions"]
    assert all(m["rss_bytes"] > 0 for m in mem)
