"""The daemon's own Prometheus registry: every probe sample, and forewarn's health.

Probe samples are exported through a collector that reads the latest samples at scrape time,
because label sets differ per probe and series come and go (a mount point disappears).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from probes.base import Sample
from rules.figures import BLIP
from rules.model import AlertState, Phase

log = logging.getLogger(__name__)

_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(metric: str) -> str:
    """The name a probe metric is exported under on /metrics."""
    return "forewarn_" + export_of(metric).name


@dataclass(frozen=True)
class Export:
    """How a probe metric whose own name breaks Prometheus' conventions is exported."""

    name: str  # without the forewarn_ prefix
    scale: float = 1.0  # the sampled value times this is in the exported name's unit


# Rules keep the probes' names; only the export changes (promtool: base units, no _count).
EXPORT_AS = {
    "net_speed_bits_per_second": Export("net_speed_bytes_per_second", 1 / 8),
    "smart_power_on_hours": Export("smart_power_on_seconds", 3600.0),
    "process_count": Export("processes"),
    "gpu_count": Export("gpus"),
}
# Suffixes and labels Prometheus keeps for histograms and summaries: a probe series named so
# (scraped, or a PromQL result) is exported untyped, since forewarn does not know its type.
_RESERVED_SUFFIXES = ("_count", "_sum", "_bucket")
_RESERVED_LABELS = frozenset({"le", "quantile"})
_UNITS = (  # name ending -> what a help text says of the value
    ("_bytes_per_second", "in bytes per second"),
    ("_per_second", "per second"),
    ("_seconds", "in seconds"),
    ("_bytes", "in bytes"),
    ("_percent", "in percent (0-100)"),
    ("_ratio", "a ratio (0-1)"),
    ("_celsius", "in degrees Celsius"),
    ("_rpm", "in revolutions per minute"),
    ("_total", "a count that only grows (from 0 again when its source restarts)"),
    ("_up", "1 when up, 0 when not"),
)


class SampleCollector(Collector):
    """Exports the newest samples of every probe as `forewarn_<metric>`.

    A metric named `*_total` is a counter (each probe that emits one counts since a start), every
    other one a gauge; see `EXPORT_AS` and `export_of` for the few exported under another name.
    A name the daemon's own metrics use (`taken`) is not exported twice: a scrape would fail.
    """

    def __init__(self, taken: Callable[[], Iterable[str]] = tuple) -> None:
        self._latest: dict[str, list[Sample]] = {}
        self._lock = threading.Lock()
        self.taken = taken
        self._warned: set[str] = set()

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
        taken = set(self.taken())
        for metric, group in sorted(by_metric.items()):
            family = _family(metric, group)
            if family.name in taken or family.name + "_total" in taken:
                self._warn_taken(metric, family.name)
                continue
            yield family

    def _warn_taken(self, metric: str, name: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            log.warning(
                "probe metric %s is not exported: forewarn's own %s has its name", metric, name
            )


def export_of(metric: str) -> Export:
    return EXPORT_AS.get(metric, Export(_INVALID.sub("_", metric)))


def _family(metric: str, samples: list[Sample]) -> Metric:
    export = export_of(metric)
    names = sorted({_INVALID.sub("_", k) for s in samples for k in s.labels})
    kind = _kind(export.name, names)
    # prometheus-client writes a counter's family name without _total, its series with it
    family = Metric("forewarn_" + export.name.removesuffix("_total"), _help(metric, export), kind)
    series = "forewarn_" + export.name
    seen: set[tuple[str, ...]] = set()
    for sample in samples:
        labels = {_INVALID.sub("_", k): v for k, v in sample.labels.items()}
        values = tuple(labels.get(n, "") for n in names)
        if values in seen:  # two samples for one series in a batch: keep the first
            continue
        if kind == "counter" and math.isnan(sample.value):  # not read: no count to give
            continue
        seen.add(values)
        value = sample.value * export.scale
        family.add_sample(series, dict(zip(names, values, strict=True)), value)
    return family


def _kind(name: str, labels: list[str]) -> str:
    if name.endswith(_RESERVED_SUFFIXES) or _RESERVED_LABELS.intersection(labels):
        return "unknown"
    return "counter" if name.endswith("_total") else "gauge"


# Help-desk times, from a ticket created at once (a second) to an outage fixed the next day.
HELP_DESK_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
# rules.figures.Episode's durations, each exported as forewarn_incident_<figure>_seconds.
INCIDENT_TIMES = {
    "time_to_detect": "Time from an incident episode's first failing sample to its alert firing"
    " (the episode opened), in seconds.",
    "time_to_ticket": "Time from an incident episode's opening to its ticket created or reopened"
    " in the help desk, in seconds.",
    "time_to_first_notice": "Time from an incident episode's opening to its first user notice"
    " delivered, in seconds.",
    "time_to_acknowledge": "Time from an incident episode's opening to a person acknowledging"
    " it, in seconds.",
    "time_to_resolve": "Time from an incident episode's opening to its resolution, in seconds.",
    "lead_time": "Time from a predicted episode's opening to its value reaching the predicted"
    " level, in seconds (0 when the level was reached first).",
}
_ONCE = " At most one observation per episode; symptoms of another incident are left out."


def _help(metric: str, export: Export) -> str:
    unit = next((u for end, u in _UNITS if export.name.endswith(end)), None)
    what = unit or "no unit (a count, a state or a 0/1 flag)"
    renamed = f" (exported as {export.name})" if export.name != _INVALID.sub("_", metric) else ""
    return f"Probe metric {metric}{renamed} as last sampled, {what}."


class Metrics:
    """All metrics the daemon updates, on a registry of its own (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.samples = SampleCollector(lambda: _own_names(self.registry))
        self.registry.register(self.samples)
        r = self.registry
        self.probe_duration = Histogram(
            "forewarn_probe_duration_seconds",
            "Time a probe run took, in seconds (a run that hit its timeout counts its timeout).",
            ["probe", "kind"],
            registry=r,
            # From a /proc read (milliseconds) to a slow smartctl or plugin (a minute).
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.fault_to_ticket = Histogram(
            "forewarn_fault_to_ticket_seconds",
            "Time from an incident's first failing sample (its alert's active_since) to its"
            " ticket created in the help desk, in seconds; one observation per created ticket.",
            registry=r,
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
        )
        self.state_dir_free = Gauge(
            "forewarn_state_dir_free_ratio",
            "Share of the state directory's file system still free for forewarn (0-1).",
            registry=r,
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
        self._add_help_desk_figures()

    def _add_help_desk_figures(self) -> None:
        """The figures of `forewarn report`, as episodes become known (monitor.figures_metrics)."""
        r = self.registry
        self.incident_times = {
            figure: Histogram(
                f"forewarn_incident_{figure}_seconds",
                text + _ONCE,
                registry=r,
                buckets=HELP_DESK_BUCKETS,
            )
            for figure, text in INCIDENT_TIMES.items()
        }
        self.incident_episodes = Counter(
            "forewarn_incident_episodes",
            "Incident episodes opened, symptoms of another incident left out; recurrence is"
            " true for a reopen of an earlier episode.",
            ["rule", "recurrence"],
            registry=r,
        )
        self.incidents_resolved = Counter(
            "forewarn_incidents_resolved",
            "Incident episodes resolved, by forewarn (the problem went away) or by a person.",
            ["rule", "by"],
            registry=r,
        )
        self.escalations_reached = Counter(
            "forewarn_incident_escalations_reached",
            "Incident episodes that reached an escalation step (1-based), once per step reached:"
            " an episode at step 2 counts under step 1 and step 2.",
            ["rule", "step"],
            registry=r,
        )
        self.predictions = Counter(
            "forewarn_predictions",
            "Episodes opened on a prediction, by outcome: averted (resolved before the"
            " predicted level), warned (the level reached after the warning) or late.",
            ["rule", "outcome"],
            registry=r,
        )
        self.user_reports = Counter(
            "forewarn_user_reports",
            "Incident episodes users reported, once at the first report: first is forewarn"
            " when the episode opened before the report, user when the user was first.",
            ["rule", "first"],
            registry=r,
        )
        self.incident_blips = Counter(
            "forewarn_incident_blips",
            f"Incident episodes gone by themselves within {BLIP:.0f} s, unacknowledged, with no"
            " impact and no user report (likely noise), counted at resolution.",
            ["rule"],
            registry=r,
        )
        self.incident_tier1 = Counter(
            "forewarn_incident_tier1",
            "Incident episodes resolved with no escalation, counted at resolution: a later"
            " recurrence does not take it back (the report's tier-1 share does).",
            ["rule"],
            registry=r,
        )
        self.figure_errors = Counter(
            "forewarn_figure_errors",
            "Reads of the event log for the help-desk figures that failed.",
            registry=r,
        )

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
            "Age of the oldest undelivered outbox row, in seconds (0 when none waits).",
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


def _own_names(registry: CollectorRegistry) -> list[str]:
    """The series names of the registry's own metrics (the probe collector declares none)."""
    return list(getattr(registry, "_names_to_collectors", {}))


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
