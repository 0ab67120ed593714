"""Masking throughput (MB/s of JSON on one core) and added latency per 2 KB response.

Workloads: ``clean`` (API payloads without sensitive values: the common case), ``corpus`` (the
labelled corpus, dense with positives: the worst case), 64 KB of English prose as one ``tools/call``
text, and 2 KB ``tools/call`` results. The scanner backend is printed first; compare with
``BASTION_MASKING_SCANNER=python``. Sizes are
bytes of compact JSON; the message is already parsed, as in the gateway. Run:
``.venv/bin/python bench/masking/throughput.py``.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import orjson

from bastion.masking import Masker, MaskingEngine, MaskingSettings, mask_tool_result
from bastion.masking.scanner import BACKEND

CORPUS = Path(__file__).parent / "corpus" / "corpus.jsonl"
R = random.Random(7)
WORDS = ["the", "order", "was", "shipped", "to", "customer", "warehouse", "status", "active", "pending", "total", "item", "description"]


def clean_record(i: int) -> dict[str, Any]:
    return {
        "id": i, "uuid": f"{R.getrandbits(128):032x}", "name": " ".join(R.choices(WORDS, k=3)),
        "created_at": f"2024-05-{R.randint(1, 28):02d}T10:{R.randint(0, 59):02d}:00Z", "active": R.random() < 0.5,
        "price": round(R.uniform(1, 999), 2), "currency": "EUR", "sku": f"SKU-{R.randint(0, 999999):06d}",
        "tags": R.sample(WORDS, 3), "description": " ".join(R.choices(WORDS, k=R.randint(8, 30))),
        "version": f"1.{R.randint(0, 9)}.{R.randint(0, 20)}", "quantity": R.randint(1, 50),
    }


def corpus_values() -> list[Any]:
    docs = [json.loads(line)["payload"] for line in CORPUS.open()]
    return [d if isinstance(d, dict) else {"content": [{"type": "text", "text": d}]} for d in docs]


def rate(masker: Masker, values: list[Any], rounds: int = 5) -> tuple[float, float]:
    size = sum(len(orjson.dumps(v)) for v in values)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for v in values:
            masker.mask_json(v)
        best = min(best, time.perf_counter() - t)
    best_rt = float("inf")
    raws = [orjson.dumps(v) for v in values]
    for _ in range(rounds):
        t = time.perf_counter()
        for raw in raws:
            orjson.dumps(masker.mask_json(orjson.loads(raw)).value)
        best_rt = min(best_rt, time.perf_counter() - t)
    return size / best / 1e6, size / best_rt / 1e6


def latency_2kb(masker: Masker, result: dict[str, Any], n: int = 2000) -> tuple[float, float]:
    """p50 and p99 of ``mask_tool_result`` on ``result``, in milliseconds."""
    samples: list[int] = []
    for _ in range(n):
        t = time.perf_counter_ns()
        mask_tool_result(masker, result)
        samples.append(time.perf_counter_ns() - t)
    samples.sort()
    return samples[len(samples) // 2] / 1e6, samples[int(len(samples) * 0.99)] / 1e6


def sized_result(records: list[dict[str, Any]], target: int = 2048) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    while len(orjson.dumps(rows)) < target - 200:
        rows.append(records[len(rows)])
    return {"content": [{"type": "text", "text": orjson.dumps(rows).decode()}], "structuredContent": {"rows": rows}}


def prose_rate(masker: Masker, rounds: int = 20) -> float:
    text = ("The quick brown fox jumps over the lazy dog. " * 1457)[:65536]
    result = {"content": [{"type": "text", "text": text}]}
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        mask_tool_result(masker, result)
        best = min(best, time.perf_counter() - t)
    return len(text) / best / 1e6


def main() -> None:
    print(f"scanner backend: {BACKEND}")
    masker = MaskingEngine(MaskingSettings()).masker(["all"])
    clean = [[clean_record(i * 50 + j) for j in range(50)] for i in range(40)]
    corpus = corpus_values()
    for name, values in (("clean API JSON", clean), ("labelled corpus (PII-dense)", corpus)):
        mbps, mbps_rt = rate(masker, values)
        print(f"{name:30s} mask_json {mbps:6.1f} MB/s   parse+mask+serialise {mbps_rt:6.1f} MB/s")
    print(f"{'64 KB prose, one tools/call':30s} mask_tool_result {prose_rate(masker):6.1f} MB/s")
    records = [clean_record(i) for i in range(50)]
    clean_2k = sized_result(records, 1024)  # text + structuredContent copy: ~2 KB total
    dirty = [dict(r, contact=f"{r['name'].split()[0]}.x@example.com") for r in records]
    dirty_2k = sized_result(dirty, 1024)
    for name, result in (("2 KB tool result, clean", clean_2k), ("2 KB tool result, 3+ e-mails", dirty_2k)):
        p50, p99 = latency_2kb(masker, result)
        print(f"{name:30s} {len(orjson.dumps(result))} bytes  p50 {p50:.3f} ms  p99 {p99:.3f} ms")


if __name__ == "__main__":
    main()
