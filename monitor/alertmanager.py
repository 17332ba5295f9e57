"""Alertmanager's webhook (payload version 4) turned into samples for forewarn's own pipeline.

Each alert becomes one sample of `alertmanager_alert` (1 firing, 0 resolved) whose labels are
the alert's labels plus `probe="alertmanager"`. The built-in rule `alertmanager` (below; a
config overrides it by defining a rule of that name) fires on `value == 1`, so an alert from
Prometheus gets the same incident, ticket, notices and escalation as one of forewarn's own.

Identity: forewarn's fingerprint is the rule name plus the labels, as Alertmanager's own
fingerprint is a hash of the labels; the same alert sent by two Alertmanagers (or twice) is
the same series, and the engine's state machine makes a repeat change nothing.

Annotations are text written by whoever wrote the Prometheus rule, and their values change
(`{{ $value }}`): they are not labels. They travel in the sample's `error` text (summary, then
description, one per line), which reaches templates only through the sandbox.

An alert that stops being re-sent: a firing alert with an `endsAt` resolves when that time
passes without a resend (`Deadlines`). Alertmanager itself sends firing alerts without an
`endsAt`, re-sending them every `repeat_interval`; for them the engine's staleness does the
same after `[alertmanager] resolve_timeout` without a resend (the daemon sets the
`stale_after` of the `alertmanager` probe to it), so a lost "resolved" still closes the ticket.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from monitor.durations import at_least
from probes.base import Duration, Sample
from rules.condition import compile_condition
from rules.fingerprint import fingerprint
from rules.model import Rule, Severity

log = logging.getLogger(__name__)

PAYLOAD_VERSION = "4"
PROBE = "alertmanager"  # the `probe` label of every sample; no [[probe]] may take the name
METRIC = "alertmanager_alert"
RULE_NAME = "alertmanager"
STATUSES = ("firing", "resolved")
MAX_TEXT = 2000  # characters of annotations kept per alert: they are stored with the alert
DEFAULT_RESOLVE_TIMEOUT = 5 * 3600.0  # above Alertmanager's default repeat_interval (4h)

RULE = Rule(
    name=RULE_NAME,
    metric=METRIC,
    probe=PROBE,
    condition=compile_condition("value == 1"),
    critical=compile_condition('labels.severity == "critical"'),
    severity=Severity.WARNING,
    category="alertmanager",  # a tag on the ticket: where the alert came from
    summary=(
        "{% if error %}{{ error.splitlines()[0] | truncate(160) }}"
        "{% else %}{{ labels.alertname }}"
        "{% if labels.instance %} on {{ labels.instance }}{% endif %}{% endif %}"
    ),
    description=(
        "Alertmanager reported this alert: Prometheus (or another source behind Alertmanager) "
        "found the problem, forewarn keeps the ticket. The labels are the alert's own; the "
        "Error line holds its summary and description annotations. The ticket resolves when "
        "Alertmanager sends the alert as resolved (send_resolved: true), or when it has not "
        "re-sent it for [alertmanager] resolve_timeout."
    ),
)


@dataclass(frozen=True)
class AlertmanagerConfig:
    """`[alertmanager]`: how long a firing alert lasts without being re-sent."""

    # Above the repeat_interval (plus group_interval) of the route that posts to forewarn.
    resolve_timeout: Duration = field(
        default=Duration(DEFAULT_RESOLVE_TIMEOUT), metadata={"check": at_least(60.0)}
    )


@dataclass(frozen=True)
class Received:
    """What one webhook post brings: a sample per alert, and the firing alerts that carry an
    `endsAt` still ahead, each with the time it resolves unless re-sent."""

    samples: tuple[Sample, ...]
    ends: tuple[tuple[Sample, float], ...] = ()

    @property
    def summary(self) -> dict[str, int]:
        """The webhook's answer: how many alerts came, how many of them fire, how many not."""
        firing = sum(sample.value == 1.0 for sample in self.samples)
        return {
            "received": len(self.samples),
            "firing": firing,
            "resolved": len(self.samples) - firing,
        }


def receive(payload: Any, now: float) -> Received:
    """Validate a webhook payload and turn its alerts into samples taken at `now`.

    Raises ValueError naming what is malformed (`alerts[2].labels.severity: expected a
    string, got 5`); nothing of a malformed payload is used.
    """
    alerts = _alerts_of(payload)
    truncated = payload.get("truncatedAlerts", 0)
    if isinstance(truncated, int) and truncated > 0:
        log.warning("Alertmanager left %d alerts out of a notification (max_alerts)", truncated)
    received = [_received(alert, f"alerts[{number}]", now) for number, alert in enumerate(alerts)]
    ends = tuple((sample, end) for sample, end in received if end is not None)
    return Received(tuple(sample for sample, _ in received), ends)


def _alerts_of(payload: Any) -> list[Any]:
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object, got {_kind(payload)}")
    version = payload.get("version")
    if version != PAYLOAD_VERSION:
        raise ValueError(
            f"version: {version!r} is not the webhook payload version {PAYLOAD_VERSION!r}"
        )
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise ValueError(f"alerts: expected a list of alerts, got {_kind(alerts)}")
    return alerts


def _received(alert: Any, where: str, now: float) -> tuple[Sample, float | None]:
    """The alert's sample, and when it resolves if it is firing with an `endsAt` ahead."""
    if not isinstance(alert, dict):
        raise ValueError(f"{where}: expected an object, got {_kind(alert)}")
    status = alert.get("status")
    if status not in STATUSES:
        raise ValueError(f"{where}.status: {status!r} is not one of {', '.join(STATUSES)}")
    labels = _labels(alert.get("labels"), f"{where}.labels")
    text = _text(_strings(alert.get("annotations", {}), f"{where}.annotations"))
    ends_at = _time(alert.get("endsAt"), f"{where}.endsAt")
    _time(alert.get("startsAt"), f"{where}.startsAt")  # validated, not used
    firing = status == "firing" and (ends_at is None or ends_at > now)
    sample = Sample(METRIC, 1.0 if firing else 0.0, now, labels, text or None)
    return sample, (ends_at if firing else None)


def _labels(value: Any, where: str) -> dict[str, str]:
    labels = _strings(value, where)
    if not labels:
        raise ValueError(f"{where}: an alert needs at least one label")
    if "" in labels:
        raise ValueError(f"{where}: a label name is empty")
    if "probe" in labels:  # forewarn's own label: keep the alert's as Prometheus would
        labels["exported_probe"] = labels.pop("probe")
    return {**labels, "probe": PROBE}


def _strings(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object of strings, got {_kind(value)}")
    for name, item in value.items():
        if not isinstance(item, str):
            raise ValueError(f"{where}.{name}: expected a string, got {_kind(item)}")
    return dict(value)


def _text(annotations: Mapping[str, str]) -> str:
    """The summary, then the description, one per line (each on one line of its own)."""
    parts = [" ".join(annotations.get(name, "").split()) for name in ("summary", "description")]
    unique = [part for number, part in enumerate(parts) if part and part not in parts[:number]]
    return "\n".join(unique)[:MAX_TEXT]


def _time(value: Any, where: str) -> float | None:
    """Epoch seconds of an RFC 3339 time; None when absent or Go's zero time (year 1)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected an RFC 3339 time, got {_kind(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{where}: {value!r} has no time zone")
    return None if moment.year <= 1 else moment.timestamp()


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return {dict: "an object", list: "a list", bool: str(value).lower()}.get(
        type(value), repr(value)[:40]
    )


class Deadlines:
    """Firing alerts that carry an `endsAt`: each resolves when it passes without a resend.

    Fed from the HTTP server's threads (`note`), read by the daemon's main loop (`lapsed`).
    Kept in memory: after a restart the engine's staleness (`resolve_timeout`) takes over.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[str, tuple[float, Sample]] = {}

    def note(self, received: Received) -> None:
        """A resend replaces the deadline; an alert resent without one, or resolved, drops it."""
        with self._lock:
            for sample in received.samples:
                self._due.pop(_series(sample), None)
            for sample, ends_at in received.ends:
                self._due[_series(sample)] = (ends_at, sample)

    def lapsed(self, now: float) -> list[Sample]:
        """A resolved sample for each alert whose `endsAt` passed; each is given once."""
        with self._lock:
            gone = [key for key, (ends_at, _) in self._due.items() if ends_at <= now]
            samples = [self._due.pop(key)[1] for key in gone]
        for sample in samples:
            log.info("Alertmanager alert %s ended without a resend", sample.labels)
        return [replace(sample, value=0.0, timestamp=now) for sample in samples]

    def __len__(self) -> int:
        with self._lock:
            return len(self._due)


def _series(sample: Sample) -> str:
    return fingerprint(METRIC, sample.labels)
