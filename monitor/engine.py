"""Applies the rule engine to samples and to the passing of time, and records the outcome.

Samples come in; `rules` says how each alert moves and what that means for its incident; the
lifecycle writes the alert states, incidents, events and outbox rows, all in one transaction
per batch. `tick` handles what happens without samples: series that stopped reporting, and
incidents whose silence or maintenance window ended while their problem goes on. Nothing here
talks to a help desk or a mail server: the dispatcher does, from the outbox.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from monitor import store as st
from monitor.lifecycle import Change, EngineSettings, Lifecycle
from monitor.metrics import Metrics
from probes.base import Sample
from rules import (
    AlertState,
    Evaluation,
    IncidentView,
    Phase,
    Rule,
    Situation,
    Transition,
    decide,
    evaluate,
    expire,
    fingerprint,
    incident_key,
    matches,
    past_predicted_level,
)
from rules.silences import MaintenanceWindow, Silence, muted

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_STALE_AFTER", "Engine", "EngineSettings"]

DEFAULT_STALE_AFTER = 300.0  # for series of probes the engine knows no interval of


@dataclass
class _Batch:
    """Evaluations of one batch, to be written in one transaction."""

    steps: list[tuple[Rule, Evaluation]] = field(default_factory=list)


class Engine:
    def __init__(
        self,
        store: st.Store,
        rules: Iterable[Rule],
        settings: EngineSettings,
        metrics: Metrics,
        snapshot: Callable[[], dict[str, Any]],
    ) -> None:
        self.store = store
        self.metrics = metrics
        self._alerts = store.load_alerts()
        self.reconfigure(rules, settings)
        self.lifecycle = Lifecycle(store, settings, metrics, snapshot, self._alert_of, self._mute)
        self._silences: list[Silence] = []
        self._first_tick: float | None = None
        self._past_level: set[str] = set()  # fingerprints whose value is past `predict`

    def reconfigure(self, rules: Iterable[Rule], settings: EngineSettings) -> None:
        self.rules = tuple(rules)
        self.by_name = {rule.name: rule for rule in self.rules}
        self.by_metric: dict[str, list[Rule]] = {}  # a sample is only matched against these
        for rule in self.rules:
            self.by_metric.setdefault(rule.metric, []).append(rule)
        self.settings = settings
        if hasattr(self, "lifecycle"):
            self.lifecycle.settings = settings

    @property
    def alerts(self) -> dict[str, AlertState]:
        return dict(self._alerts)

    def _alert_of(self, fp: str) -> tuple[Rule, AlertState] | None:
        alert = self._alerts.get(fp)
        rule = self.by_name.get(alert.rule) if alert else None
        return (rule, alert) if rule and alert else None

    # --- samples ------------------------------------------------------------------------

    def process(self, samples: Iterable[Sample], now: float) -> int:
        """Evaluate samples against every matching rule; return the number of transitions."""
        return self._commit(self._evaluate(samples, now), now)

    def _evaluate(self, samples: Iterable[Sample], now: float) -> _Batch:
        batch = _Batch()
        stepped: dict[str, AlertState] = {}  # a series seen twice in a batch steps from its newest
        for sample in samples:
            for rule in self.by_metric.get(sample.metric, ()):
                if not matches(rule, sample):
                    continue
                fp = fingerprint(rule.name, sample.labels)
                result = evaluate(rule, stepped.get(fp, self._alerts.get(fp)), sample, now)
                stepped[fp] = result.state
                batch.steps.append((rule, result))
        return batch

    def _commit(self, batch: _Batch, now: float) -> int:
        """Write what changed in one transaction; a batch of healthy series writes nothing."""
        if not batch.steps:  # most ticks: no need to recount every alert for the metrics
            return 0
        writes = [
            (rule, result)
            for rule, result in batch.steps
            if result.transition is not None or self._changed(result.state)
        ]
        for rule, result in batch.steps:
            self._note(rule, result)
        impacts = self._impacts(batch)
        if writes or impacts:
            with self.store.transaction() as conn:
                for rule, result in writes:
                    self._persist(conn, result.state)
                    if result.transition is not None:
                        self._on_transition(conn, rule, result.transition, now)
                for state in impacts:  # after the transitions: an alert may open and hit at once
                    self.lifecycle.impact(conn, state, now)
        for _rule, result in batch.steps:
            self._alerts[result.state.fingerprint] = result.state
        self.metrics.set_alert_states(self._alerts.values())
        return sum(result.transition is not None for _rule, result in writes)

    def _impacts(self, batch: _Batch) -> list[AlertState]:
        """Firing alerts whose value has just reached the level their rule predicted: the
        moment a warning's lead time ends (an incident closed before it was averted)."""
        reached = []
        for rule, result in batch.steps:
            fp = result.state.fingerprint
            if not past_predicted_level(rule, result.state):
                self._past_level.discard(fp)
            elif fp not in self._past_level:
                self._past_level.add(fp)
                reached.append(result.state)
        return reached

    def _note(self, rule: Rule, result: Evaluation) -> None:
        for note in result.notes:
            log.warning("rule %s: %s", rule.name, note)
            self.metrics.rule_errors.labels(rule=rule.name).inc()

    def _changed(self, state: AlertState) -> bool:
        """Whether the stored row must change: the phase, its timing and the predicted impact,
        not every new value. Healthy series have no row at all."""
        previous = self._alerts.get(state.fingerprint)
        if previous is None:
            return state.phase is not Phase.INACTIVE
        return _significant(previous) != _significant(state)

    def _persist(self, conn: sqlite3.Connection, state: AlertState) -> None:
        if state.phase is Phase.INACTIVE:
            st.delete_alert(conn, state.fingerprint)  # healthy again: no row needed
        else:
            st.save_alert(conn, state)

    # --- incidents ----------------------------------------------------------------------

    def _on_transition(
        self, conn: sqlite3.Connection, rule: Rule, transition: Transition, now: float
    ) -> None:
        alert = transition.alert
        log.info("alert %s %s: %s", rule.name, transition.kind.value, alert.labels)
        key = incident_key(rule.name, alert.labels, rule.group_by)
        situation = self._situation(rule, alert, key)
        mute = self._mute(rule, alert.labels, now)
        decisions = decide(transition, situation, key, self.settings.reopen_within, now)
        for decision in decisions:
            self.lifecycle.apply(conn, Change(rule, transition, decision, mute))

    def _situation(self, rule: Rule, alert: AlertState, key: str) -> Situation:
        incident = self.store.open_incident(key)
        others = self.store.firing_members(incident.id, alert.fingerprint) if incident else 0
        return Situation(
            open=incident,
            last=self.store.last_incident(key),
            others_firing=others,
            root=self._root(rule, alert) if incident is None else None,
        )

    def _root(self, rule: Rule, alert: AlertState) -> IncidentView | None:
        """An open incident of a rule this one depends on, on the same `depends_match` labels."""
        if not rule.depends_on:
            return None
        for row in self.store.open_roots(rule.depends_on):
            labels = json.loads(row["labels"])
            if all(labels.get(k) == alert.labels.get(k) for k in rule.depends_match):
                return st.incident_view(row)
        return None

    # --- silences -----------------------------------------------------------------------

    def _mute(self, rule: Rule, labels: dict[str, str], now: float) -> str | None:
        """Why messages about this alert are held back now, or None."""
        found = muted({**labels, "rule": rule.name}, self._silences, self.settings.maintenance, now)
        if isinstance(found, Silence):
            return f"silence {found.id} by {found.author}: {found.comment}"
        if isinstance(found, MaintenanceWindow):
            return f"maintenance window {found.name}: {found.comment}"
        return None

    def load_silences(self, now: float) -> None:
        silences = []
        for row in self.store.silences(now):
            try:
                silences.append(st.silence_from_row(row))
            except ValueError as exc:  # a hand-edited row must not stop every tick
                log.warning("ignoring silence %s: %s", row["id"], exc)
        self._silences = silences

    # --- time passing -------------------------------------------------------------------

    def rebase(self, jump: float) -> None:
        """The wall clock stepped by `jump` seconds: move the alerts' own instants with it, so
        that series ages and `for` / hold-down timers keep counting real time."""

        def moved(at: float | None) -> float | None:
            return None if at is None else at + jump

        self._alerts = {
            fp: replace(
                alert,
                evaluated_at=alert.evaluated_at + jump,
                changed_at=alert.changed_at + jump,
                active_since=moved(alert.active_since),
                cleared_since=moved(alert.cleared_since),
                predicted_at=moved(alert.predicted_at),
            )
            for fp, alert in self._alerts.items()
        }
        if self._first_tick is not None:
            self._first_tick += jump

    def tick(self, now: float) -> int:
        """Expire series that stopped reporting; promote symptoms that outlived their root
        cause; release incidents whose mute ended."""
        if self._first_tick is None:
            self._first_tick = now
        self.load_silences(now)
        transitions = self._commit(self._expired(now), now)
        orphans = self.store.orphaned_symptoms(now - self.settings.promote_after)
        released = [row for row in self.store.muted_incidents() if self._mute_ended(row, now)]
        if orphans or released:
            with self.store.transaction() as conn:
                for child in orphans:
                    self.lifecycle.promote(conn, child, now)
                for row in released:
                    self.lifecycle.release(conn, row["id"], now)
        return transitions

    def _mute_ended(self, incident: Any, now: float) -> bool:
        rule = self.by_name.get(incident["rule"])
        return rule is not None and self._mute(rule, json.loads(incident["labels"]), now) is None

    def _expired(self, now: float) -> _Batch:
        batch = _Batch()
        for alert in self._alerts.values():
            rule = self.by_name.get(alert.rule)
            if rule is None or not (alert.phase in (Phase.PENDING, Phase.FIRING) or alert.flapping):
                continue
            stale_after = self.settings.stale_after.get(
                alert.labels.get("probe", ""), DEFAULT_STALE_AFTER
            )
            # Loaded from the store after a restart, an alert was last seen before the daemon
            # started: its series gets a full `stale_after` from the first tick to report.
            if now - max(alert.evaluated_at, self._first_tick or now) > stale_after:
                log.info("rule %s: %s stopped reporting", rule.name, alert.labels)
                batch.steps.append((rule, expire(rule, alert, now)))
        return batch


def _significant(state: AlertState) -> tuple[object, ...]:
    return (
        state.phase,
        state.severity,
        state.changed_at,
        state.active_since,
        state.cleared_since,
        state.flapping,
        state.predicted_at,  # the time of impact is kept on the alert, as it moves
    )
