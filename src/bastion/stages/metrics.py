"""MetricsStage and the Prometheus registry: calls by upstream, method and outcome, and how long
they took as the client saw it. Labels come from bounded sets (configured upstream names, known
MCP methods) so a caller cannot blow up cardinality with invented names."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import ClassVar, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bastion.exchange import Exchange, Kind, Reply
from bastion.pipeline.stage import Next
from bastion.proxy.naming import ALL_UPSTREAMS

_KNOWN_METHODS = frozenset({
    "initialize", "ping", "tools/list", "tools/call", "prompts/list", "prompts/get", "resources/list",
    "resources/templates/list", "resources/read", "resources/subscribe", "resources/unsubscribe",
    "completion/complete", "logging/setLevel", "sampling/createMessage", "elicitation/create", "roots/list",
})
_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The gateway's metric families, in a registry of their own (one per app instance)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter(
            "bastion_requests", "MCP requests answered, by upstream, method and outcome.",
            ["upstream", "method", "outcome"], registry=self.registry,
        )
        self.latency = Histogram(
            "bastion_request_seconds", "Time from the request entering the pipeline to its reply leaving it.",
            ["upstream", "method"], buckets=_BUCKETS_S, registry=self.registry,
        )

    def add_gauges(self, read: Callable[[], Iterable[GaugeReading]]) -> None:
        """Expose values read at scrape time."""
        self.registry.register(_GaugeCollector(read))


class GaugeReading(NamedTuple):
    """One value read at scrape time; readings that share a name are one family, told apart by labels."""

    name: str
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


class _GaugeCollector(Collector):
    def __init__(self, read: Callable[[], Iterable[GaugeReading]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for reading in self._read():
            family = families.get(reading.name)
            if family is None:
                family = GaugeMetricFamily(reading.name, reading.help, labels=[k for k, _ in reading.labels])
                families[reading.name] = family
            family.add_metric([v for _, v in reading.labels], reading.value)
        yield from families.values()


class MetricsStage:
    """Outermost stage: counts every request with the outcome the client got."""

    name: ClassVar[str] = "metrics"

    def __init__(self, metrics: Metrics, upstreams: Iterable[str]) -> None:
        self._metrics = metrics
        self._upstreams = frozenset((*upstreams, ALL_UPSTREAMS))  # "*": replies the federated endpoint composes

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply | None:
        if ex.kind is Kind.NOTIFICATION:
            return await call_next(ex)
        started = time.perf_counter()
        reply = await call_next(ex)
        method = ex.method if ex.method in _KNOWN_METHODS else "other"
        upstream = ex.upstream if ex.upstream in self._upstreams else "other"
        if ex.notes.outcome is not None:
            outcome = ex.notes.outcome
        elif reply is not None and "error" in reply:
            outcome = "error"
        else:
            outcome = "ok"
        self._metrics.calls.labels(upstream, method, outcome).inc()
        self._metrics.latency.labels(upstream, method).observe(time.perf_counter() - started)
        return reply
