"""Benchmark ``PolicyEngine.decide`` and ``visible`` on a generated 200-rule policy.

Run: .venv/bin/python bench/policy_eval.py [--rules 200] [--calls 20000]
Prints p50/p99 per call for: calls that reach no CEL rule, calls that reach one CEL rule, and
list visibility. The policy mixes exact and glob targets, argument regexes and comparisons,
annotation rules, time windows, mask-only and rate-limit rules, as a large deployment would.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bastion.policy import Kind, PolicyEngine, PolicyRequest

SERVERS = [f"srv{i}" for i in range(20)]
TOOLS = [f"tool{i}" for i in range(10)]
GROUPS = ["sre", "dev", "dba", "ops", "analysts", "support"]


def build_policy(rule_count: int, rng: random.Random) -> dict[str, Any]:
    """A policy of ``rule_count`` rules; every 20th rule (on srv0 only) has a CEL ``when``."""
    rules: list[dict[str, Any]] = [
        {"id": "destructive", "match": {"annotations": {"destructiveHint": True}}, "action": "require_approval"},
        {"id": "agents-masked", "match": {"subject": "svc:agents:*"}, "mask": ["pii", "secrets"]},
        {"id": "per-caller", "rate_limit": {"calls": 1000, "per_s": 60}},
    ]
    while len(rules) < rule_count:
        index = len(rules)
        server, tool = rng.choice(SERVERS), rng.choice(TOOLS)
        shape = index % 10
        rule: dict[str, Any] = {"id": f"r{index}", "action": "allow", "match": {"groups": [rng.choice(GROUPS)],
                                                                                  "server": server, "tool": tool}}
        if shape == 1:
            rule["match"]["args"] = {"sql": {"regex": r"(?i)\b(drop|truncate|delete|update)\b"}}
            rule["action"] = "require_approval"
        elif shape == 2:
            rule["match"]["args"] = {"filter.limit": {"le": 1000}, "filter.owner": {"in": ["me", "team"]}}
        elif shape == 3:
            rule["match"]["tool"] = tool[:-1] + "*"
        elif shape == 4:
            rule["match"]["time"] = {"tz": "Europe/Paris", "days": ["mon", "tue", "wed", "thu", "fri"],
                                     "hours": ["08:00-19:00"]}
        elif shape == 5:
            rule = {"id": f"r{index}", "match": {"server": server}, "mask": ["emails"]}
        elif shape == 6:
            rule["action"] = "deny"
            rule["match"]["subject"] = "contractor:*"
        elif index % 20 == 0:
            rule["match"] = {"server": "srv0", "tool": tool}
            rule["when"] = "size(args) < 10 && !subject.startsWith('bot:')"
        rules.append(rule)
    return {"default": "deny", "rules": rules}


def make_requests(count: int, rng: random.Random, servers: list[str]) -> list[PolicyRequest]:
    now = datetime(2025, 6, 2, 10, 0, tzinfo=UTC)
    requests = []
    for _ in range(count):
        args = {"sql": rng.choice(["select 1", "DROP TABLE t"]), "filter": {"limit": rng.randint(1, 2000),
                                                                              "owner": rng.choice(["me", "x"])}}
        requests.append(PolicyRequest(
            subject=rng.choice(["alice", "bob", "svc:agents:bot", "contractor:eve"]),
            groups=frozenset(rng.sample(GROUPS, 2)), server=rng.choice(servers), kind=Kind.TOOL,
            name=rng.choice(TOOLS), args=args, annotations={"readOnlyHint": rng.random() < 0.7},
            upstream_trusted=rng.random() < 0.8, now=now))
    return requests


def measure(label: str, items: list[Any], call: Callable[[Any], object]) -> None:
    for item in items[:1000]:
        call(item)  # warm the candidate cache and CPU caches
    samples = []
    for item in items:
        start = time.perf_counter_ns()
        call(item)
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    p50, p99 = samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000
    print(f"{label:<44} p50 {p50:8.1f} µs   p99 {p99:8.1f} µs   mean {statistics.fmean(samples) / 1000:8.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--calls", type=int, default=20000)
    options = parser.parse_args()
    rng = random.Random(7)
    started = time.perf_counter()
    engine = PolicyEngine.from_mapping(build_policy(options.rules, rng))
    print(f"compiled {len(engine.rules)} rules in {(time.perf_counter() - started) * 1000:.1f} ms")
    measure("decide, servers without CEL rules", make_requests(options.calls, rng, SERVERS[1:]), engine.decide)
    measure("decide, srv0 (a CEL rule is reached)", make_requests(options.calls // 10, rng, ["srv0"]), engine.decide)
    items = make_requests(options.calls, rng, SERVERS)
    measure("visible", items, lambda r: engine.visible(r.subject, r.groups, r.server, r.kind, r.name,
                                                       r.annotations, r.upstream_trusted))


if __name__ == "__main__":
    main()
