"""Carries out the incident decisions of `rules.incidents` on the state store.

Each decision becomes rows in one transaction: the incident, its alerts, the event log, and
the outbox rows of every side effect (ticket operations, e-mails). Muting follows one rule:
a silence or maintenance window holds back messages, and the ticket of an incident that began
while muted; it never holds back the resolution of a ticket that exists. A symptom of a root
cause (a dependency) speaks on the root's ticket instead of a ticket of its own.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from monitor import store as st
from monitor.metrics import Metrics
from rules import (
    AlertJoined,
    AlertLeft,
    AlertState,
    IncidentDecision,
    MarkIntermittent,
    OpenIncident,
    ReopenIncident,
    ResolveIncident,
    Rule,
    Severity,
    Transition,
    TransitionKind,
    UpdateSeverity,
    marker,
    render_summary,
)
from rules.routing import Route, route_for
from rules.silences import MaintenanceWindow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    hostname: str
    reopen_within: float
    backend: str  # ticket backend kind
    helpdesk_contact: str = ""
    helpdesk_emails: tuple[str, ...] = ()
    email_enabled: bool = False
    maintenance: tuple[MaintenanceWindow, ...] = ()
    # Seconds without a sample after which a probe's series count as stale, by probe name.
    stale_after: dict[str, float] = field(default_factory=dict)
    # A symptom still failing this long after its root cause resolved gets its own ticket;
    # services that restart a little after their host came back do not.
    promote_after: float = 300.0
    # (name, matchers) of each [[route]], in order: where an incident's ticket goes.
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True)
class Change:
    """One decision with what it concerns: the rule, the transition, and the mute, if any."""

    rule: Rule
    transition: Transition
    decision: IncidentDecision
    mute: str | None  # why messages are held back ("silence 3 by ana: ..."), or None


class Lifecycle:
    def __init__(
        self,
        store: st.Store,
        settings: EngineSettings,
        metrics: Metrics,
        snapshot: Callable[[], dict[str, Any]],
        alert_of: Callable[[str], tuple[Rule, AlertState] | None],
        mute_of: Callable[[Rule, dict[str, str], float], str | None] = lambda *_: None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self._snapshot = snapshot
        self._alert_of = alert_of
        self._mute_of = mute_of  # why messages about an alert are held back now, or None

    def apply(self, conn: sqlite3.Connection, change: Change) -> None:
        handler = {
            OpenIncident: self._open,
            ReopenIncident: self._reopen,
            UpdateSeverity: self._update_severity,
            ResolveIncident: self._resolve,
            AlertJoined: self._joined,
            AlertLeft: self._left,
            MarkIntermittent: self._intermittent,
        }[type(change.decision)]
        handler(conn, change)

    # --- opening ------------------------------------------------------------------------

    def _open(self, conn: sqlite3.Connection, change: Change) -> None:
        d, rule, alert = change.decision, change.rule, change.transition.alert
        assert isinstance(d, OpenIncident)
        earlier = conn.execute(
            "SELECT COUNT(*) FROM incident WHERE fingerprint = ?", (d.fingerprint,)
        ).fetchone()[0]
        route = route_for(rule, alert.labels, self.settings.routes)
        incident_id = _insert_incident(
            conn, d, rule, alert, marker(d.fingerprint, earlier + 1), route
        )
        _upsert_member(conn, incident_id, rule, alert, d.at)
        st.add_event(
            conn,
            incident_id,
            d.at,
            "opened",
            severity=d.severity.label,
            value=_finite(alert.value),
            mute=change.mute,
            parent=d.parent_id,
            **_detection(alert),
        )
        self.metrics.tickets.labels(action="opened").inc()
        if d.parent_id is not None:
            self._tell_root(conn, d.parent_id, rule, alert, "ticket_symptom", d.at)
        elif change.mute is not None:
            _set_muted(conn, incident_id, True)
        else:
            self._announce_opening(conn, incident_id, rule, change.transition, d.at)

    def _announce_opening(
        self, conn: sqlite3.Connection, incident_id: int, rule: Rule, tr: Transition, now: float
    ) -> None:
        """The ticket and the first messages of an incident."""
        context = self._context(conn, incident_id, rule, tr, snapshot=True)
        episode = context["incident"]["episode"]
        if conn.execute("SELECT 1 FROM ticket WHERE incident_id = ?", (incident_id,)).fetchone():
            self._ticket_op(
                conn, incident_id, episode, "ticket.reopen", "ticket_reopened", context, now
            )
            self._mails(conn, incident_id, episode, "reopened", context, now)
            return
        self._ticket_op(
            conn,
            incident_id,
            episode,
            "ticket.create",
            "ticket_body",
            context,
            now,
            delay=rule.group_wait,
        )
        self._mails(conn, incident_id, episode, "opened", context, now, delay=rule.group_wait)

    def _reopen(self, conn: sqlite3.Connection, change: Change) -> None:
        d, rule, alert = change.decision, change.rule, change.transition.alert
        assert isinstance(d, ReopenIncident)
        conn.execute(
            # Not a symptom any more: `decide` reopens only when no root cause is open.
            "UPDATE incident SET status='open', episode=?, severity=?, priority=?, opened_at=?,"
            " resolved_at=NULL, intermittent=0, parent_id=NULL WHERE id=?",
            (d.episode, int(d.severity), rule.ticket_priority, d.at, d.incident_id),
        )
        _upsert_member(conn, d.incident_id, rule, alert, d.at)
        st.add_event(
            conn,
            d.incident_id,
            d.at,
            "reopened",
            episode=d.episode,
            resolved_for=d.resolved_for,
            mute=change.mute,
            **_detection(alert),
        )
        self.metrics.tickets.labels(action="reopened").inc()
        if change.mute is not None:
            _set_muted(conn, d.incident_id, True)
            return
        if not _ticket_asked(conn, d.incident_id):
            # Its earlier episodes were a symptom's or muted: there is no ticket to reopen.
            self._announce_opening(conn, d.incident_id, rule, change.transition, d.at)
            return
        context = self._context(conn, d.incident_id, rule, change.transition, snapshot=True)
        context["incident"]["resolved_for"] = d.resolved_for
        self._ticket_op(
            conn, d.incident_id, d.episode, "ticket.reopen", "ticket_reopened", context, d.at
        )
        self._mails(conn, d.incident_id, d.episode, "reopened", context, d.at)

    def release(self, conn: sqlite3.Connection, incident_id: int, now: float) -> None:
        """A mute ended while the incident's problem goes on: open its ticket now."""
        firing = self._firing_alert(conn, incident_id)
        if firing is None:
            return  # its alert is not known in memory (yet): try at the next tick
        if self._mute_of(firing[0], firing[1].alert.labels, now) is not None:
            return  # the alert the ticket would speak of is muted itself (in a group)
        _set_muted(conn, incident_id, False)
        st.add_event(conn, incident_id, now, "unmuted")
        self._announce_opening(conn, incident_id, *firing, now)

    # --- while open ---------------------------------------------------------------------

    def _update_severity(self, conn: sqlite3.Connection, change: Change) -> None:
        d = change.decision
        assert isinstance(d, UpdateSeverity)
        priority = change.rule.priority or d.severity.priority
        conn.execute(
            "UPDATE incident SET severity=?, priority=? WHERE id=?",
            (int(d.severity), priority, d.incident_id),
        )
        event_id = st.add_event(
            conn, d.incident_id, d.at, "severity", to=d.severity.label, previous=d.previous.label
        )
        self._comment(conn, change, d.incident_id, event_id, "ticket_update", "helpdesk_updated")

    def _joined(self, conn: sqlite3.Connection, change: Change) -> None:
        d = change.decision
        assert isinstance(d, AlertJoined)
        if not _upsert_member(conn, d.incident_id, change.rule, change.transition.alert, d.at):
            return  # the same alert again (a restart, a flap): nothing new to say
        self._member_changed(conn, change, d.incident_id, "alert_joined")

    def _left(self, conn: sqlite3.Connection, change: Change) -> None:
        d = change.decision
        assert isinstance(d, AlertLeft)
        _close_member(conn, d.incident_id, change.transition.alert.fingerprint, d.at)
        self._member_changed(conn, change, d.incident_id, "alert_left")

    def _member_changed(
        self, conn: sqlite3.Connection, change: Change, incident_id: int, kind: str
    ) -> None:
        """An alert joined or left a group: an event, and a comment `ticket_<kind>`."""
        alert = change.transition.alert
        event_id = st.add_event(
            conn,
            incident_id,
            change.decision.at,
            kind,
            fingerprint=alert.fingerprint,
            labels=alert.labels,
        )
        self._comment(conn, change, incident_id, event_id, f"ticket_{kind}", None)

    def _intermittent(self, conn: sqlite3.Connection, change: Change) -> None:
        d = change.decision
        assert isinstance(d, MarkIntermittent)
        conn.execute(
            "UPDATE incident SET intermittent=1, flap_changes=? WHERE id=?",
            (d.flap_changes, d.incident_id),
        )
        event_id = st.add_event(
            conn, d.incident_id, d.at, "intermittent", flap_changes=d.flap_changes
        )
        self._comment(conn, change, d.incident_id, event_id, "ticket_intermittent", None)

    def _comment(
        self,
        conn: sqlite3.Connection,
        change: Change,
        incident_id: int,
        event_id: int,
        template: str,
        mail: str | None,
    ) -> None:
        """A comment on the incident's ticket, or on its root's when it is a symptom."""
        row = _incident(conn, incident_id)
        target = row["parent_id"] or incident_id
        # A symptom speaks on its root's ticket. No ticket (yet): a mute holds it back, or the
        # root ended inside one; the ticket opened after a mute will say it all.
        if row["muted"] or not _ticketed(conn, target):
            return
        context = self._context(conn, incident_id, change.rule, change.transition)
        key, now = f"incident:{incident_id}:event:{event_id}", change.decision.at
        st.enqueue(
            conn,
            f"{key}:ticket.comment",
            "ticket.comment",
            {"template": template, "context": context},
            now,
            target,
        )
        if mail and change.mute is None and row["parent_id"] is None:
            self._mail(
                conn,
                f"{key}:{mail}",
                mail,
                self.settings.helpdesk_emails,
                context,
                now,
                incident_id,
            )

    def impact(self, conn: sqlite3.Connection, alert: AlertState, now: float) -> None:
        """The alert's value reached the level its rule predicted: an `impact` event on its
        open incident, once per episode (the end of the warning's lead time)."""
        row = conn.execute(
            "SELECT i.id, i.opened_at FROM incident i JOIN incident_alert m ON m.incident_id = i.id"
            " WHERE m.fingerprint = ? AND m.status = 'firing' AND i.status = 'open'",
            (alert.fingerprint,),
        ).fetchone()
        if row is None:
            return
        seen = conn.execute(
            "SELECT 1 FROM event WHERE incident_id = ? AND kind = 'impact' AND at >= ?",
            (row["id"], row["opened_at"]),
        ).fetchone()
        if seen is None:
            st.add_event(
                conn,
                row["id"],
                now,
                "impact",
                value=_finite(alert.value),
                fingerprint=alert.fingerprint,
            )

    # --- closing ------------------------------------------------------------------------

    def _resolve(self, conn: sqlite3.Connection, change: Change) -> None:
        d, rule = change.decision, change.rule
        assert isinstance(d, ResolveIncident)
        row = _incident(conn, d.incident_id)
        st.mark_resolved(conn, d.incident_id, d.at)
        st.add_event(
            conn,
            d.incident_id,
            d.at,
            "resolved",
            lasted=d.lasted,
            mute=change.mute,
            silent=bool(row["muted"]),
        )
        self.metrics.tickets.labels(action="resolved").inc()
        if row["parent_id"] is not None:
            self._tell_root(
                conn,
                row["parent_id"],
                rule,
                change.transition.alert,
                "ticket_symptom_recovered",
                d.at,
            )
        elif not row["muted"]:  # a muted episode opened no ticket: nothing to close
            self._announce_resolution(conn, change, d)

    def _announce_resolution(
        self, conn: sqlite3.Connection, change: Change, d: ResolveIncident
    ) -> None:
        context = self._context(conn, d.incident_id, change.rule, change.transition)
        context["incident"]["lasted"] = d.lasted
        episode = context["incident"]["episode"]
        # Resolution always reaches the ticket; only the messages respect a mute.
        self._ticket_op(
            conn, d.incident_id, episode, "ticket.resolve", "ticket_resolved", context, d.at
        )
        if change.mute is None:
            self._mails(conn, d.incident_id, episode, "resolved", context, d.at)

    def promote(self, conn: sqlite3.Connection, child: sqlite3.Row, now: float) -> None:
        """The root cause is gone for a while but this symptom goes on: it is a problem of its
        own now, with a ticket of its own (held back while it is muted)."""
        conn.execute("UPDATE incident SET parent_id=NULL WHERE id=?", (child["id"],))
        st.add_event(conn, child["id"], now, "promoted", former_root=child["parent_id"])
        firing = self._firing_alert(conn, child["id"])
        if firing is None or child["muted"]:
            return
        rule, transition = firing
        if self._mute_of(rule, transition.alert.labels, now) is not None:
            _set_muted(conn, child["id"], True)  # its ticket waits for the mute's end
            return
        self._announce_opening(conn, child["id"], rule, transition, now)

    def _firing_alert(
        self, conn: sqlite3.Connection, incident_id: int
    ) -> tuple[Rule, Transition] | None:
        """A firing alert of the incident, as a FIRED transition, for its messages."""
        for row in conn.execute(
            "SELECT fingerprint FROM incident_alert WHERE incident_id=? AND status='firing'",
            (incident_id,),
        ):
            found = self._alert_of(row["fingerprint"])
            if found is not None:
                rule, alert = found
                return rule, Transition(TransitionKind.FIRED, alert)
        return None

    def _tell_root(
        self,
        conn: sqlite3.Connection,
        root_id: int,
        rule: Rule,
        alert: AlertState,
        template: str,
        now: float,
    ) -> None:
        """A symptom's news goes to the root cause's ticket, when it has one."""
        root = _incident(conn, root_id)
        if not _ticketed(conn, root_id):
            return
        context = {
            "host": self.settings.hostname,
            "symptom": {
                "rule": rule.name,
                "summary": render_summary(rule, alert),
                "labels": dict(alert.labels),
                "service": rule.service,
            },
            "incident": {"id": root_id, "marker": root["marker"]},
        }
        key = f"incident:{root_id}:symptom:{alert.fingerprint}:{template}:{now}"
        st.enqueue(
            conn, key, "ticket.comment", {"template": template, "context": context}, now, root_id
        )

    # --- outbox rows --------------------------------------------------------------------

    def _ticket_op(
        self,
        conn: sqlite3.Connection,
        incident_id: int,
        episode: int,
        op: str,
        template: str,
        context: dict[str, Any],
        now: float,
        delay: float = 0.0,
    ) -> None:
        key = f"incident:{incident_id}:episode:{episode}:{op}"
        st.enqueue(
            conn,
            key,
            op,
            {"template": template, "context": context},
            now,
            incident_id,
            not_before=now + delay,
        )

    def _mails(
        self,
        conn: sqlite3.Connection,
        incident_id: int,
        episode: int,
        stage: str,
        context: dict[str, Any],
        now: float,
        delay: float = 0.0,
    ) -> None:
        """The help-desk e-mail of this stage (users hear through `monitor.comms`)."""
        helpdesk = f"helpdesk_{stage}"
        key = f"incident:{incident_id}:episode:{episode}:{helpdesk}"
        to = self.settings.helpdesk_emails
        self._mail(conn, key, helpdesk, to, context, now, incident_id, delay)

    def _mail(
        self,
        conn: sqlite3.Connection,
        key: str,
        template: str,
        to: tuple[str, ...],
        context: dict[str, Any],
        now: float,
        incident_id: int,
        delay: float = 0.0,
    ) -> None:
        if not (self.settings.email_enabled and to):
            return
        payload = {"template": template, "to": list(to), "context": context}
        st.enqueue(
            conn, f"{key}:email", "email.send", payload, now, incident_id, not_before=now + delay
        )

    # --- what templates see --------------------------------------------------------------

    def _context(
        self,
        conn: sqlite3.Connection,
        incident_id: int,
        rule: Rule,
        tr: Transition,
        snapshot: bool = False,
    ) -> dict[str, Any]:
        row = _incident(conn, incident_id)
        context: dict[str, Any] = {
            "host": self.settings.hostname,
            "incident": incident_context(row),
            "alert": _alert_context(rule, tr),
            "alerts": self.store.members(incident_id),
            "service": rule.service,
            "helpdesk": {"contact": self.settings.helpdesk_contact},
            "ticket": None,
        }
        if snapshot:
            context["snapshot"] = self._snapshot()
        return context


# --- rows ---------------------------------------------------------------------------------


def _insert_incident(
    conn: sqlite3.Connection,
    d: OpenIncident,
    rule: Rule,
    alert: AlertState,
    ticket_marker: str,
    route: str,
) -> int:
    cur = conn.execute(
        "INSERT INTO incident (fingerprint, marker, rule, labels, status, episode, severity,"
        " priority, category, service, summary, first_opened_at, opened_at, parent_id,"
        " predicted_at, route) VALUES (?,?,?,?,'open',1,?,?,?,?,?,?,?,?,?,?)",
        (
            d.fingerprint,
            ticket_marker,
            rule.name,
            _json(alert.labels),
            int(d.severity),
            rule.priority or d.severity.priority,
            rule.category,
            rule.service,
            render_summary(rule, alert),
            d.at,
            d.at,
            d.parent_id,
            alert.predicted_at,
            route,
        ),
    )
    return int(cur.lastrowid or 0)


def _upsert_member(
    conn: sqlite3.Connection, incident_id: int, rule: Rule, alert: AlertState, now: float
) -> bool:
    """Record the alert as firing in the incident; True when that is news."""
    row = conn.execute(
        "SELECT status FROM incident_alert WHERE incident_id=? AND fingerprint=?",
        (incident_id, alert.fingerprint),
    ).fetchone()
    if row is not None and row["status"] == "firing":
        return False
    conn.execute(
        "INSERT OR REPLACE INTO incident_alert VALUES (?,?,?,?,?,'firing',?,NULL)",
        (
            incident_id,
            alert.fingerprint,
            rule.name,
            _json(alert.labels),
            render_summary(rule, alert),
            now,
        ),
    )
    return True


def _close_member(conn: sqlite3.Connection, incident_id: int, fp: str, now: float) -> None:
    conn.execute(
        "UPDATE incident_alert SET status='resolved', until=? WHERE incident_id=? AND"
        " fingerprint=?",
        (now, incident_id, fp),
    )


def _ticket_asked(conn: sqlite3.Connection, incident_id: int) -> bool:
    """Whether a ticket was ever asked for this incident (created, or still in the outbox)."""
    row = conn.execute(
        "SELECT 1 FROM outbox WHERE incident_id = ? AND op = 'ticket.create' LIMIT 1",
        (incident_id,),
    ).fetchone()
    return row is not None


def _ticketed(conn: sqlite3.Connection, incident_id: int) -> bool:
    """Whether the incident has a ticket, or one is on its way in the outbox."""
    found = conn.execute(
        "SELECT 1 FROM ticket WHERE incident_id = ? UNION ALL SELECT 1 FROM outbox"
        " WHERE incident_id = ? AND op = 'ticket.create' AND status != 'dead' LIMIT 1",
        (incident_id, incident_id),
    ).fetchone()
    return found is not None


def _set_muted(conn: sqlite3.Connection, incident_id: int, muted: bool) -> None:
    conn.execute("UPDATE incident SET muted=? WHERE id=?", (int(muted), incident_id))


def _incident(conn: sqlite3.Connection, incident_id: int) -> sqlite3.Row:
    row: sqlite3.Row = conn.execute(
        "SELECT * FROM incident WHERE id = ?", (incident_id,)
    ).fetchone()
    return row


def incident_context(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "episode": row["episode"],
        "fingerprint": row["fingerprint"],
        "marker": row["marker"],
        "severity": Severity(row["severity"]).label,
        "priority": row["priority"],
        "category": row["category"],
        "status": row["status"],
        "opened_at": row["opened_at"],
        "first_opened_at": row["first_opened_at"],
        "resolved_at": row["resolved_at"],
        "intermittent": bool(row["intermittent"]),
        "flap_changes": row["flap_changes"],
        "predicted_at": row["predicted_at"],
        "lasted": None,
    }


def _alert_context(rule: Rule, tr: Transition) -> dict[str, Any]:
    alert = tr.alert
    previous = tr.previous_severity.label if tr.previous_severity is not None else None
    return {
        "rule": rule.name,
        "metric": rule.metric,
        "labels": dict(alert.labels),
        "value": _finite(alert.value),
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
        "predicted_at": alert.predicted_at,
        "predict": rule.predict,
        "window": rule.window,
        "flapping": alert.flapping,
        "flap_changes": alert.flap_changes,
        "evaluated_at": alert.evaluated_at,
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _detection(alert: AlertState) -> dict[str, float | None]:
    """When the condition first held (time to detect) and the impact predicted, if any (lead
    time): the help-desk figures read them from the opening event."""
    return {"since": alert.active_since, "predicted_at": alert.predicted_at}
