"""Applies the rule engine's decisions to the state store.

Samples come in; `rules` says what changed; this module writes the new alert states, the
incident rows, the event log and the outbox rows of every side effect, all in one transaction.
It never talks to a help desk or a mail server: the dispatcher does, from the outbox.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from monitor import store as st
from monitor.metrics import Metrics
from probes.base import Sample
from rules import (
    AlertState,
    IncidentDecision,
    OpenIncident,
    Phase,
    ReopenIncident,
    ResolveIncident,
    Rule,
    Severity,
    Transition,
    UpdateSeverity,
    decide,
    evaluate,
    fingerprint,
    marker,
    matches,
    render_summary,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    hostname: str
    reopen_within: float
    backend: str  # ticket backend kind
    helpdesk_contact: str = ""
    helpdesk_emails: tuple[str, ...] = ()
    user_emails: tuple[str, ...] = ()
    email_enabled: bool = False


@dataclass
class _Batch:
    """Evaluations of one batch, to be written in one transaction."""

    states: list[tuple[Rule, AlertState]] = field(default_factory=list)
    transitions: list[tuple[Rule, Transition]] = field(default_factory=list)


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
        self.rules = tuple(rules)
        self.settings = settings
        self.metrics = metrics
        self._snapshot = snapshot
        self._alerts = store.load_alerts()

    def reconfigure(self, rules: Iterable[Rule], settings: EngineSettings) -> None:
        self.rules = tuple(rules)
        self.settings = settings

    @property
    def alerts(self) -> dict[str, AlertState]:
        return dict(self._alerts)

    def process(self, samples: Iterable[Sample], now: float) -> int:
        """Evaluate samples against every matching rule; return the number of transitions."""
        batch = self._evaluate(samples, now)
        if not batch.states:
            return 0
        with self.store.transaction() as conn:
            for _rule, state in batch.states:
                self._persist(conn, state)
            for rule, transition in batch.transitions:
                self._on_transition(conn, rule, transition, now)
        for _rule, state in batch.states:
            self._alerts[state.fingerprint] = state
        self.metrics.set_alert_states(self._alerts.values())
        return len(batch.transitions)

    def _evaluate(self, samples: Iterable[Sample], now: float) -> _Batch:
        batch = _Batch()
        stepped: dict[str, AlertState] = {}  # a series seen twice in a batch steps from its newest
        for sample in samples:
            for rule in self.rules:
                if not matches(rule, sample):
                    continue
                fp = fingerprint(rule.name, sample.labels)
                result = evaluate(rule, stepped.get(fp, self._alerts.get(fp)), sample, now)
                stepped[fp] = result.state
                for note in result.notes:
                    log.warning("rule %s: %s", rule.name, note)
                    self.metrics.rule_errors.labels(rule=rule.name).inc()
                batch.states.append((rule, result.state))
                if result.transition is not None:
                    batch.transitions.append((rule, result.transition))
        return batch

    def _persist(self, conn: sqlite3.Connection, state: AlertState) -> None:
        # Inactive alerts with no history are not worth a row: most series are healthy.
        previous = self._alerts.get(state.fingerprint)
        if state.phase is Phase.INACTIVE and (previous is None or previous.phase is Phase.INACTIVE):
            if previous is not None:
                st.delete_alert(conn, state.fingerprint)
            return
        st.save_alert(conn, state)

    def _on_transition(
        self, conn: sqlite3.Connection, rule: Rule, transition: Transition, now: float
    ) -> None:
        fp = transition.alert.fingerprint
        log.info("alert %s %s: %s", rule.name, transition.kind.value, transition.alert.labels)
        decisions = decide(
            transition,
            self.store.open_incident(fp),
            self.store.last_incident(fp),
            self.settings.reopen_within,
            now,
        )
        for decision in decisions:
            self._apply(conn, rule, transition, decision)

    def _apply(
        self,
        conn: sqlite3.Connection,
        rule: Rule,
        transition: Transition,
        decision: IncidentDecision,
    ) -> None:
        if isinstance(decision, OpenIncident):
            self._open(conn, rule, transition, decision)
        elif isinstance(decision, ReopenIncident):
            self._reopen(conn, rule, transition, decision)
        elif isinstance(decision, UpdateSeverity):
            self._update_severity(conn, rule, transition, decision)
        elif isinstance(decision, ResolveIncident):
            self._resolve(conn, rule, transition, decision)

    # --- one method per decision --------------------------------------------------------

    def _open(self, conn: sqlite3.Connection, rule: Rule, tr: Transition, d: OpenIncident) -> None:
        alert = tr.alert
        earlier = conn.execute(
            "SELECT COUNT(*) FROM incident WHERE fingerprint = ?", (d.fingerprint,)
        ).fetchone()[0]
        cur = conn.execute(
            "INSERT INTO incident (fingerprint, marker, rule, labels, status, episode, severity,"
            " priority, category, service, summary, first_opened_at, opened_at)"
            " VALUES (?,?,?,?,'open',1,?,?,?,?,?,?,?)",
            (
                d.fingerprint,
                marker(d.fingerprint, earlier + 1),
                rule.name,
                _json(alert.labels),
                int(d.severity),
                d.severity.priority,
                rule.category,
                rule.service,
                render_summary(rule, alert),
                d.at,
                d.at,
            ),
        )
        incident_id = int(cur.lastrowid or 0)
        st.add_event(
            conn, incident_id, d.at, "opened", severity=d.severity.label, value=alert.value
        )
        context = self._context(conn, incident_id, rule, tr, snapshot=True)
        self._enqueue_ticket(conn, incident_id, 1, "ticket.create", "ticket_body", context, d.at)
        self._enqueue_mails(conn, incident_id, 1, rule, "opened", context, d.at)
        self.metrics.tickets.labels(action="opened").inc()

    def _reopen(
        self, conn: sqlite3.Connection, rule: Rule, tr: Transition, d: ReopenIncident
    ) -> None:
        conn.execute(
            "UPDATE incident SET status='open', episode=?, severity=?, priority=?, opened_at=?,"
            " resolved_at=NULL WHERE id=?",
            (d.episode, int(d.severity), d.severity.priority, d.at, d.incident_id),
        )
        st.add_event(
            conn, d.incident_id, d.at, "reopened", episode=d.episode, resolved_for=d.resolved_for
        )
        context = self._context(conn, d.incident_id, rule, tr, snapshot=True)
        context["incident"]["resolved_for"] = d.resolved_for
        self._enqueue_ticket(
            conn, d.incident_id, d.episode, "ticket.reopen", "ticket_reopened", context, d.at
        )
        self._enqueue_mails(conn, d.incident_id, d.episode, rule, "reopened", context, d.at)
        self.metrics.tickets.labels(action="reopened").inc()

    def _update_severity(
        self, conn: sqlite3.Connection, rule: Rule, tr: Transition, d: UpdateSeverity
    ) -> None:
        conn.execute(
            "UPDATE incident SET severity=?, priority=? WHERE id=?",
            (int(d.severity), d.severity.priority, d.incident_id),
        )
        event_id = st.add_event(
            conn, d.incident_id, d.at, "severity", to=d.severity.label, previous=d.previous.label
        )
        context = self._context(conn, d.incident_id, rule, tr)
        key = f"incident:{d.incident_id}:event:{event_id}"
        st.enqueue(
            conn,
            f"{key}:ticket.comment",
            "ticket.comment",
            {"template": "ticket_update", "context": context},
            d.at,
            d.incident_id,
        )
        self._enqueue_mail(
            conn,
            f"{key}:helpdesk_updated",
            "helpdesk_updated",
            self.settings.helpdesk_emails,
            context,
            d.at,
            d.incident_id,
        )

    def _resolve(
        self, conn: sqlite3.Connection, rule: Rule, tr: Transition, d: ResolveIncident
    ) -> None:
        conn.execute(
            "UPDATE incident SET status='resolved', resolved_at=? WHERE id=?", (d.at, d.incident_id)
        )
        st.add_event(conn, d.incident_id, d.at, "resolved", lasted=d.lasted)
        context = self._context(conn, d.incident_id, rule, tr)
        context["incident"]["lasted"] = d.lasted
        episode = context["incident"]["episode"]
        self._enqueue_ticket(
            conn, d.incident_id, episode, "ticket.resolve", "ticket_resolved", context, d.at
        )
        self._enqueue_mails(conn, d.incident_id, episode, rule, "resolved", context, d.at)
        self.metrics.tickets.labels(action="resolved").inc()

    # --- outbox rows --------------------------------------------------------------------

    def _enqueue_ticket(
        self,
        conn: sqlite3.Connection,
        incident_id: int,
        episode: int,
        op: str,
        template: str,
        context: dict[str, Any],
        now: float,
    ) -> None:
        key = f"incident:{incident_id}:episode:{episode}:{op}"
        payload = {"template": template, "context": context}
        st.enqueue(conn, key, op, payload, now, incident_id)

    def _enqueue_mails(
        self,
        conn: sqlite3.Connection,
        incident_id: int,
        episode: int,
        rule: Rule,
        stage: str,
        context: dict[str, Any],
        now: float,
    ) -> None:
        """The help-desk e-mail of this stage, and the users' notice where the rule asks for it."""
        base = f"incident:{incident_id}:episode:{episode}"
        helpdesk = f"helpdesk_{stage}"
        self._enqueue_mail(
            conn,
            f"{base}:{helpdesk}",
            helpdesk,
            self.settings.helpdesk_emails,
            context,
            now,
            incident_id,
        )
        if rule.notify_users:
            user = "user_resolved" if stage == "resolved" else "user_outage"
            self._enqueue_mail(
                conn, f"{base}:{user}", user, self.settings.user_emails, context, now, incident_id
            )

    def _enqueue_mail(
        self,
        conn: sqlite3.Connection,
        key: str,
        template: str,
        to: tuple[str, ...],
        context: dict[str, Any],
        now: float,
        incident_id: int,
    ) -> None:
        if not (self.settings.email_enabled and to):
            return
        payload = {"template": template, "to": list(to), "context": context}
        st.enqueue(conn, f"{key}:email", "email.send", payload, now, incident_id)

    # --- what templates see --------------------------------------------------------------

    def _context(
        self,
        conn: sqlite3.Connection,
        incident_id: int,
        rule: Rule,
        tr: Transition,
        snapshot: bool = False,
    ) -> dict[str, Any]:
        row = conn.execute("SELECT * FROM incident WHERE id = ?", (incident_id,)).fetchone()
        alert = tr.alert
        context: dict[str, Any] = {
            "host": self.settings.hostname,
            "incident": {
                "id": incident_id,
                "episode": row["episode"],
                "fingerprint": alert.fingerprint,
                "marker": row["marker"],
                "severity": Severity(row["severity"]).label,
                "priority": row["priority"],
                "category": row["category"],
                "status": row["status"],
                "opened_at": row["opened_at"],
                "first_opened_at": row["first_opened_at"],
                "resolved_at": row["resolved_at"],
                "lasted": None,
            },
            "alert": _alert_context(rule, alert, tr),
            "service": rule.service,
            "helpdesk": {"contact": self.settings.helpdesk_contact},
            "ticket": None,
        }
        if snapshot:
            context["snapshot"] = self._snapshot()
        return context


def _alert_context(rule: Rule, alert: AlertState, tr: Transition) -> dict[str, Any]:
    previous = tr.previous_severity.label if tr.previous_severity is not None else None
    return {
        "rule": rule.name,
        "metric": rule.metric,
        "labels": dict(alert.labels),
        "value": alert.value if math.isfinite(alert.value) else None,
        "error": alert.error,
        "summary": render_summary(rule, alert),
        "description": rule.description,
        "runbook": rule.runbook,
        "condition": rule.condition.source,
        "clear": rule.clear.source if rule.clear else None,
        "critical": rule.critical.source if rule.critical else None,
        "for": rule.for_seconds,
        "since": alert.active_since if alert.active_since is not None else alert.changed_at,
        "previous_severity": previous,
    }


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
