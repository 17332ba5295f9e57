"""The daemon's own Prometheus registry: every probe sample, and forewarn's health.

Probe samples are exported through a collector that reads the latest samples at scrape time,
because label sets differ per probe and series come and go (a mount point disappears).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from probes.base import Sample
from rules.model import AlertState, Phase

_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(metric: str) -> str:
    return "forewarn_" + _INVALID.sub("_", metric)


class SampleCollector(Collector):
    """Exports the newest samples of every probe as gauges named `forewarn_<metric>`."""

    def __init__(self) -> None:
        self._latest: dict[str, list[Sample]] = {}
        self._lock = threading.Lock()

    def update(self, probe: str, samples: list[Sample]) -> None:
        with self._lock:
            self._latest[probe] = samples

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the samples of probes no longer configured (after a reload)."""
        keep = set(keep)
        with self._lock:
            self._latest = {k: v for k, v in self._latest.items() if k in keep}

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            samples = [s for batch in self._latest.values() for s in batch]
        by_metric: dict[str, list[Sample]] = {}
        for sample in samples:
            by_metric.setdefault(sample.metric, []).append(sample)
        for metric, group in sorted(by_metric.items()):
            yield _family(metric, group)


def _family(metric: str, samples: list[Sample]) -> GaugeMetricFamily:
    names = sorted({_INVALID.sub("_", k) for s in samples for k in s.labels})
    family = GaugeMetricFamily(
        metric_name(metric), f"Probe metric {metric}, as last sampled.", labels=names
    )
    seen: set[tuple[str, ...]] = set()
    for sample in samples:
        labels = {_INVALID.sub("_", k): v for k, v in sample.labels.items()}
        values = tuple(labels.get(n, "") for n in names)
        if values in seen:  # two samples for one series in a batch: keep the first
            continue
        seen.add(values)
        family.add_metric(list(values), sample.value)
    return family


class Metrics:
    """All metrics the daemon updates, on a registry of its own (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.samples = SampleCollector()
        self.registry.register(self.samples)
        r = self.registry
        self.probe_duration = Histogram(
            "forewarn_probe_duration_seconds",
            "Time a probe run took.",
            ["probe", "kind"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.probe_errors = Counter(
            "forewarn_probe_errors",
            "Probe runs that raised or timed out.",
            ["probe", "kind"],
            registry=r,
        )
        self.rule_errors = Counter(
            "forewarn_rule_errors", "Rule conditions that failed to evaluate.", ["rule"], registry=r
        )
        self.alerts = Gauge("forewarn_alerts", "Alerts by state.", ["state"], registry=r)
        self.tickets = Counter(
            "forewarn_tickets", "Incident ticket actions decided.", ["action"], registry=r
        )
        self.deliveries = Counter(
            "forewarn_deliveries",
            "Outbox deliveries by operation and result.",
            ["op", "result"],
            registry=r,
        )
        self.notices = Counter(
            "forewarn_notices", "User notices decided, by kind, per audience.", ["kind"], registry=r
        )
        self.escalations = Counter(
            "forewarn_escalations",
            "Escalation steps fired, urgent when before the predicted impact.",
            ["urgent"],
            registry=r,
        )
        self.up = Gauge("forewarn_up", "1 while the daemon runs.", registry=r)
        self.up.set(1)

    def watch_store(
        self, open_incidents: Callable[[], float], outbox: Callable[[float], tuple[int, float, int]]
    ) -> None:
        """Gauges read from the state store at scrape time."""
        Gauge(
            "forewarn_incidents_open", "Incidents currently open.", registry=self.registry
        ).set_function(open_incidents)
        depth = Gauge("forewarn_outbox_depth", "Undelivered outbox rows.", registry=self.registry)
        age = Gauge(
            "forewarn_outbox_oldest_age_seconds",
            "Age of the oldest undelivered outbox row.",
            registry=self.registry,
        )
        dead = Gauge(
            "forewarn_outbox_dead",
            "Outbox rows given up after a permanent error.",
            registry=self.registry,
        )
        depth.set_function(lambda: outbox(time.time())[0])
        age.set_function(lambda: outbox(time.time())[1])
        dead.set_function(lambda: outbox(time.time())[2])

    def set_alert_states(self, alerts: Iterable[AlertState]) -> None:
        counts: dict[str, int] = {phase.value: 0 for phase in Phase}
        for alert in alerts:
            counts[alert.phase.value] += 1
        for phase, count in counts.items():
            self.alerts.labels(state=phase).set(count)


def serve(metrics: Metrics, listen: str) -> Any:
    """Serve /metrics on `host:port`; returns the server (call `.shutdown()`), or None when off."""
    from prometheus_client import start_http_server

    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(
        int(port), addr=host.strip("[]") or "127.0.0.1", registry=metrics.registry
    )
    return server
