"""Talking to people while an incident lasts: user notices, escalation, "still open" comments.

Asked once a tick, it reads the incidents from the state store, lets the pure rules decide
(`rules.notices`, `rules.eta`, `rules.escalation`) and writes what is due in one transaction:
a `notice` or `escalation_fired` row (whose unique key makes each step happen once) and the
outbox rows that carry it out, one per target so each failure is seen and retried alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from monitor import store as st
from monitor.comms_config import AudienceConfig, CommsConfig
from monitor.config import Config
from monitor.lifecycle import incident_context
from monitor.metrics import Metrics
from monitor.selfmon import SELF_POLICY, admin_policy
from notifiers.apprise_channel import target_id
from rules.escalation import Policy, StepDue, due
from rules.eta import Eta, estimate
from rules.model import Rule
from rules.notices import (
    PHASE_ORDER,
    Cadence,
    IncidentFacts,
    NoticeDue,
    NoticeKind,
    Occurrence,
    Sent,
    affected,
    plan,
    plan_maintenance,
)
from rules.silences import MaintenanceWindow, covering, next_start

log = logging.getLogger(__name__)

TICKET = "@ticket"  # the audience of the ticket's own "still open" comments
HISTORY_LIMIT = 200  # past durations an estimate looks at, newest first
HOST_LABELS = ("host", "instance", "hostname")  # where an alert names the machine
# How long an escalation message waits for its incident's ticket (to name its number) before
# it goes without: people must hear even while the help desk is down.
ESCALATION_TICKET_GRACE = 300.0


@dataclass(frozen=True)
class CommsSettings:
    hostname: str
    helpdesk_contact: str
    comms: CommsConfig
    audiences: tuple[AudienceConfig, ...]
    email_enabled: bool
    maintenance: tuple[MaintenanceWindow, ...] = ()


def comms_settings(config: Config) -> CommsSettings:
    """The settings of a config; `[notify] users` is an audience of every service, and
    `[daemon] admins` the one step of the implicit escalation policy `forewarn-self`."""
    audiences, comms = config.comms.audiences, config.comms
    policy = admin_policy(config.daemon.admins)
    if policy is not None:  # after the file's own: a policy of that name there wins
        comms = dataclasses.replace(comms, escalations=(*comms.escalations, policy))
    if config.notify.users:
        users = AudienceConfig(
            "users",
            services=("*",),
            hosts=("*",),
            email=config.notify.users,
            language=config.comms.notices.language,
        )
        audiences = (*audiences, users)
    return CommsSettings(
        hostname=config.daemon.hostname,
        helpdesk_contact=config.helpdesk.contact,
        comms=comms,
        audiences=audiences,
        email_enabled=config.smtp is not None,
        maintenance=config.maintenance,
    )


def apprise_targets(settings: CommsSettings) -> dict[str, str]:
    """Target id -> Apprise URL: outbox rows name the id, so no token lands in the state file."""
    return {target_id(url): url for a in settings.audiences for url in a.apprise}


class Communicator:
    def __init__(
        self,
        store: st.Store,
        settings: CommsSettings,
        metrics: Metrics,
        rule_of: Callable[[str], Rule | None],
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self._rule_of = rule_of
        # Durations of past episodes by (column, value), read once per tick: in an alert
        # storm many incidents of one rule share its history.
        self._history: dict[tuple[str, str], list[float]] = {}

    def tick(self, now: float) -> int:
        """Decide and enqueue what is due; returns how many notices and steps were decided."""
        self._history.clear()  # past durations change only between ticks
        with self.store.transaction() as conn:
            return (
                self._incident_notices(conn, now)
                + self._escalations(conn, now)
                + self._ticket_updates(conn, now)
                + self._maintenance_notices(conn, now)
            )

    # --- user notices of incidents -------------------------------------------------------

    def _incident_notices(self, conn: sqlite3.Connection, now: float) -> int:
        decided = 0
        for row in _speaking_incidents(conn):
            rule = self._rule_of(row["rule"])
            if rule is None or not rule.notify_users:
                continue
            audiences = self._audiences_of(rule.service, self._host(row))
            if audiences:
                decided += self._notify_incident(conn, row, rule, audiences, now)
        return decided

    def _notify_incident(
        self,
        conn: sqlite3.Connection,
        row: sqlite3.Row,
        rule: Rule,
        audiences: list[AudienceConfig],
        now: float,
    ) -> int:
        subject = _subject(row["id"], row["episode"])
        eta = self._eta(conn, row, now) if row["status"] == "open" else None
        sent = _sent(conn, subject)
        before = _sent(conn, _subject(row["id"], row["episode"] - 1)) if row["episode"] > 1 else {}
        decided = 0
        for audience in audiences:
            relapse = _stopped_at_monitoring(before.get(audience.name))
            facts = _facts(row, rule, eta, relapse)
            for notice in plan(facts, sent.get(audience.name, Sent()), self._cadence, now):
                context = self._notice_context(row, rule, audience, notice, eta, now)
                decided += self._send_notice(conn, row, audience, notice, eta, context, now)
        return decided

    @property
    def _cadence(self) -> Cadence:
        return self.settings.comms.notices.cadence

    def _send_notice(
        self,
        conn: sqlite3.Connection,
        row: sqlite3.Row,
        audience: AudienceConfig,
        notice: NoticeDue,
        eta: Eta | None,
        context: dict[str, Any],
        now: float,
    ) -> int:
        subject = _subject(row["id"], row["episode"])
        recorded = _record_notice(
            conn, subject, row["id"], row["episode"], audience.name, notice, eta, now
        )
        if not recorded:
            return 0
        # The event log is what help-desk figures are computed from (time to first notice).
        st.add_event(
            conn,
            row["id"],
            now,
            "notice",
            notice=str(notice.kind),
            audience=audience.name,
            seq=notice.seq,
            reason=notice.reason,
        )
        payload = {"template": "notice", "kind": str(notice.kind), "language": audience.language}
        key = f"notice:{subject}:{audience.name}:{notice.kind}:{notice.seq}"
        self._enqueue_to(conn, audience, key, dict(payload, context=context), now, row["id"])
        self.metrics.notices.labels(kind=str(notice.kind)).inc()
        return 1

    def _eta(self, conn: sqlite3.Connection, row: sqlite3.Row, now: float) -> Eta | None:
        same_target = self._durations(conn, "fingerprint", row["fingerprint"])
        same_rule = self._durations(conn, "rule", row["rule"])
        return estimate(same_target, same_rule, row["opened_at"], now)

    def _durations(self, conn: sqlite3.Connection, column: str, value: str) -> list[float]:
        key = (column, value)
        if key not in self._history:
            self._history[key] = _durations(conn, column, value)
        return self._history[key]

    def _notice_context(
        self,
        row: sqlite3.Row,
        rule: Rule,
        audience: AudienceConfig,
        notice: NoticeDue,
        eta: Eta | None,
        now: float,
    ) -> dict[str, Any]:
        language = audience.language
        predicted = row["predicted_at"]
        incident = {
            "id": row["id"],
            "episode": row["episode"],
            "marker": row["marker"],
            "severity": incident_context(row)["severity"],
            "opened_at": row["opened_at"],
            "first_opened_at": row["first_opened_at"],
            "resolved_at": row["resolved_at"],
            "lasted": _lasted(row),
            "predicted_at": predicted,
            "heads_up": predicted is not None and predicted > now and row["status"] == "open",
            "acknowledged": row["acknowledged_at"] is not None,
        }
        texts = {
            "user_impact": rule.user_impact.get(language),
            "still_works": rule.still_works.get(language),
            "workaround": rule.workaround.get(language),
            "help_url": rule.help_url,
        }
        update = {"seq": notice.seq, "reason": notice.reason} if notice.seq else None
        return self._base_context(audience, str(notice.kind), rule.service, now) | {
            "incident": incident,
            "eta": _eta_context(eta),
            "next_update_at": notice.next_update_at,
            "update": update,
            "texts": texts,
        }

    def _base_context(
        self, audience: AudienceConfig, kind: str, service: str, now: float
    ) -> dict[str, Any]:
        comms, language = self.settings.comms, audience.language
        return {
            "language": language,
            "timezone": comms.notices.timezone,
            "kind": kind,
            "now": now,
            "audience": {"name": audience.name, "title": audience.title},
            "service": self._service_context(service, language),
            "host": self.settings.hostname,
            "incident": None,
            "eta": None,
            "next_update_at": None,
            "update": None,
            "texts": {"user_impact": "", "still_works": "", "workaround": "", "help_url": ""},
            "helpdesk": {"contact": self.settings.helpdesk_contact},
            "status_url": comms.notices.status_url,
            "maintenance": None,
            "ticket": None,
        }

    def _service_context(self, name: str, language: str) -> dict[str, str] | None:
        if not name:
            return None
        service = self.settings.comms.service(name)
        return {
            "name": name,
            "title": service.title_in(language),
            "description": service.description.get(language),
        }

    # --- escalation ----------------------------------------------------------------------

    def _escalations(self, conn: sqlite3.Connection, now: float) -> int:
        decided = 0
        for row in conn.execute(
            "SELECT * FROM incident WHERE status = 'open' AND muted = 0 AND parent_id IS NULL"
            " AND acknowledged_at IS NULL"
        ).fetchall():
            rule = self._rule_of(row["rule"])
            policy = self.settings.comms.policy(rule.escalation) if rule else None
            if rule is None or policy is None:
                continue
            fired = _fired(conn, row["id"], row["episode"])
            for step in due(policy, row["opened_at"], fired, False, True, row["predicted_at"], now):
                decided += self._escalate(conn, row, rule, policy, step, now)
        return decided

    def _escalate(
        self,
        conn: sqlite3.Connection,
        row: sqlite3.Row,
        rule: Rule,
        policy: Policy,
        step: StepDue,
        now: float,
    ) -> int:
        inserted = conn.execute(
            "INSERT OR IGNORE INTO escalation_fired VALUES (?,?,?,?,?,?)",
            (row["id"], row["episode"], step.index, policy.name, now, int(step.urgent)),
        ).rowcount
        if not inserted:
            return 0
        targets = list(step.step.targets)
        event_id = st.add_event(
            conn, row["id"], now, "escalated", step=step.index, urgent=step.urgent, to=targets
        )
        context = self._staff_context(row, rule, policy, step, now)
        key = f"incident:{row['id']}:episode:{row['episode']}:escalation:{step.index}"
        # forewarn's alerts about itself go at once: the help desk may be what failed.
        wait = False if policy.name == SELF_POLICY else ESCALATION_TICKET_GRACE
        for target in targets:
            audience = self._audience_named(target)
            payload = {"template": "escalation", "context": context, "wait_for_ticket": wait}
            self._enqueue_to(conn, audience, f"{key}:{target}", payload, now, row["id"])
        _comment(conn, row["id"], event_id, _escalation_note(step, targets, now, row), now)
        self.metrics.escalations.labels(urgent=str(step.urgent).lower()).inc()
        log.info("incident %s escalated: step %d to %s", row["id"], step.index + 1, targets)
        return 1

    def _audience_named(self, target: str) -> AudienceConfig:
        """An [[audience]] by name, or a bare e-mail address as an audience of its own."""
        for audience in self.settings.audiences:
            if audience.name == target:
                return audience
        return AudienceConfig(target, email=(target,))

    def _staff_context(
        self, row: sqlite3.Row, rule: Rule, policy: Policy, step: StepDue, now: float
    ) -> dict[str, Any]:
        steps = len(policy.steps)
        return {
            "host": self.settings.hostname,
            "incident": incident_context(row),
            "alert": {
                "rule": row["rule"],
                "summary": row["summary"],
                "labels": json.loads(row["labels"]),
                "runbook": rule.runbook,
            },
            "alerts": self.store.members(row["id"]),
            "service": rule.service,
            "helpdesk": {"contact": self.settings.helpdesk_contact},
            "ticket": None,
            "step": {
                "index": step.index,
                "round": step.round,
                "position": step.index % steps + 1,
                "of": steps,
                "urgent": step.urgent,
                "policy": policy.name,
                "started_at": row["opened_at"],
            },
            "acknowledge": f"forewarn incidents ack {row['id']}",
            "now": now,
        }

    # --- the ticket's "still open" comments ------------------------------------------------

    def _ticket_updates(self, conn: sqlite3.Connection, now: float) -> int:
        every = float(self.settings.comms.notices.ticket_update_every)
        decided = 0
        # One statement for every ticketed incident: this runs every tick.
        for row in conn.execute(
            "SELECT i.*, (SELECT COUNT(*) FROM notice n WHERE n.incident_id = i.id"
            " AND n.episode = i.episode AND n.audience = ?) AS updates,"
            " (SELECT MAX(n.at) FROM notice n WHERE n.incident_id = i.id"
            " AND n.episode = i.episode AND n.audience = ?) AS last_at"
            " FROM incident i JOIN ticket t ON t.incident_id = i.id"
            " WHERE i.status = 'open' AND i.muted = 0 AND i.parent_id IS NULL",
            (TICKET, TICKET),
        ).fetchall():
            if now < (row["last_at"] or row["opened_at"]) + every:
                continue
            subject = _subject(row["id"], row["episode"])
            notice = NoticeDue(NoticeKind.UPDATE, row["updates"] + 1, "cadence", now + every)
            eta = self._eta(conn, row, now)
            if _record_notice(conn, subject, row["id"], row["episode"], TICKET, notice, eta, now):
                context = self._still_open(conn, row, eta, now)
                _enqueue_still_open(conn, row, notice.seq, context, now)
                decided += 1
        return decided

    def _still_open(
        self, conn: sqlite3.Connection, row: sqlite3.Row, eta: Eta | None, now: float
    ) -> dict[str, Any]:
        notices = conn.execute(
            "SELECT COUNT(*) FROM notice WHERE incident_id = ? AND audience != ?",
            (row["id"], TICKET),
        ).fetchone()[0]
        steps = conn.execute(
            "SELECT COUNT(*) FROM escalation_fired WHERE incident_id = ? AND episode = ?",
            (row["id"], row["episode"]),
        ).fetchone()[0]
        return {
            "host": self.settings.hostname,
            "incident": incident_context(row),
            "alert": {"rule": row["rule"], "summary": row["summary"]},
            "alerts": self.store.members(row["id"]),
            "service": row["service"],
            "helpdesk": {"contact": self.settings.helpdesk_contact},
            "ticket": None,
            "open_for": now - row["opened_at"],
            "eta": _eta_context(eta),
            "notices_sent": notices,
            "escalation_steps": steps,
        }

    # --- scheduled maintenance -------------------------------------------------------------

    def _maintenance_notices(self, conn: sqlite3.Connection, now: float) -> int:
        decided = 0
        for window in self.settings.maintenance:
            if window.announce_before <= 0 or not window.services:
                continue
            for occurrence in _occurrences(conn, window, now):
                decided += self._announce(conn, window, occurrence, now)
        return decided

    def _announce(
        self,
        conn: sqlite3.Connection,
        window: MaintenanceWindow,
        occurrence: Occurrence,
        now: float,
    ) -> int:
        subject = f"maintenance:{window.name}:{occurrence.starts_at:.0f}"
        sent = _sent(conn, subject)
        decided = 0
        for audience in self._maintenance_audiences(window):
            kind = plan_maintenance(occurrence, sent.get(audience.name, Sent()).last_phase, now)
            if kind is None:
                continue
            notice = NoticeDue(kind, 0, str(kind), None)
            if not _record_notice(conn, subject, None, None, audience.name, notice, None, now):
                continue
            context = self._base_context(audience, str(kind), window.services[0], now)
            context["maintenance"] = {
                "name": window.name,
                "title": window.title or window.comment,
                "description": window.description,
                "services": [self._service_context(s, audience.language) for s in window.services],
                "starts_at": occurrence.starts_at,
                "ends_at": occurrence.ends_at,
            }
            payload = {"template": "notice", "kind": str(kind), "language": audience.language}
            key = f"notice:{subject}:{audience.name}:{kind}:0"
            self._enqueue_to(conn, audience, key, dict(payload, context=context), now, None)
            self.metrics.notices.labels(kind=str(kind)).inc()
            decided += 1
        return decided

    def _maintenance_audiences(self, window: MaintenanceWindow) -> list[AudienceConfig]:
        return [
            audience
            for audience in self.settings.audiences
            if any(affected(audience.audience, service, "") for service in window.services)
        ]

    # --- helpers -------------------------------------------------------------------------

    def _audiences_of(self, service: str, host: str) -> list[AudienceConfig]:
        return [a for a in self.settings.audiences if affected(a.audience, service, host)]

    def _host(self, row: sqlite3.Row) -> str:
        labels = json.loads(row["labels"])
        found = next((labels[name] for name in HOST_LABELS if labels.get(name)), None)
        return str(found).rsplit(":", 1)[0] if found else self.settings.hostname

    def _enqueue_to(
        self,
        conn: sqlite3.Connection,
        audience: AudienceConfig,
        key: str,
        payload: dict[str, Any],
        now: float,
        incident_id: int | None,
    ) -> None:
        """One outbox row per address and per Apprise URL of the audience."""
        if self.settings.email_enabled:
            for address in audience.email:
                row = dict(payload, to=[address])
                st.enqueue(conn, f"{key}:email:{address}", "email.send", row, now, incident_id)
        for url in audience.apprise:
            target = target_id(url)
            row = dict(payload, target=target)
            st.enqueue(conn, f"{key}:apprise:{target}", "apprise.send", row, now, incident_id)


# --- rows ------------------------------------------------------------------------------------


def _subject(incident_id: int, episode: int) -> str:
    return f"incident:{incident_id}:{episode}"


def _speaking_incidents(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Open incidents that may speak, and resolved ones some audience has not heard end."""
    return conn.execute(
        "SELECT * FROM incident WHERE status = 'open' AND muted = 0 AND parent_id IS NULL"
        " UNION SELECT i.* FROM incident i JOIN notice n ON n.incident_id = i.id"
        " AND n.episode = i.episode WHERE i.status = 'resolved' AND n.audience != ?"
        " AND NOT EXISTS (SELECT 1 FROM notice r WHERE r.subject = n.subject"
        " AND r.audience = n.audience AND r.kind = 'resolved')",
        (TICKET,),
    ).fetchall()


def _sent(conn: sqlite3.Connection, subject: str) -> dict[str, Sent]:
    """What each audience got for one subject (an incident's episode, a maintenance)."""
    rows = conn.execute("SELECT * FROM notice WHERE subject = ? ORDER BY id", (subject,)).fetchall()
    by_audience: dict[str, list[sqlite3.Row]] = {}
    for row in rows:
        by_audience.setdefault(row["audience"], []).append(row)
    return {name: _sent_of(rows) for name, rows in by_audience.items()}


def _sent_of(rows: Iterable[sqlite3.Row]) -> Sent:
    rows = list(rows)
    phases = [NoticeKind(r["kind"]) for r in rows if r["kind"] != NoticeKind.UPDATE]
    return Sent(
        last_phase=max(phases, key=PHASE_ORDER.__getitem__) if phases else None,
        last_at=max(r["at"] for r in rows),
        updates=sum(1 for r in rows if r["kind"] == NoticeKind.UPDATE),
        eta_at=rows[-1]["eta_at"],
    )


def _stopped_at_monitoring(sent: Sent | None) -> bool:
    return sent is not None and sent.last_phase == NoticeKind.MONITORING


def _record_notice(
    conn: sqlite3.Connection,
    subject: str,
    incident_id: int | None,
    episode: int | None,
    audience: str,
    notice: NoticeDue,
    eta: Eta | None,
    now: float,
) -> bool:
    """Record that the audience gets this notice; False when it already got it."""
    return bool(
        conn.execute(
            "INSERT OR IGNORE INTO notice (subject, incident_id, episode, audience, kind, seq,"
            " reason, at, eta_at, next_update_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                subject,
                incident_id,
                episode,
                audience,
                str(notice.kind),
                notice.seq,
                notice.reason,
                now,
                eta.expected_at if eta else None,
                notice.next_update_at,
            ),
        ).rowcount
    )


def _facts(row: sqlite3.Row, rule: Rule, eta: Eta | None, relapse: bool) -> IncidentFacts:
    return IncidentFacts(
        open=row["status"] == "open",
        opened_at=row["opened_at"],
        speaks_at=row["opened_at"] + rule.group_wait,
        resolved_at=row["resolved_at"],
        acknowledged=row["acknowledged_at"] is not None,
        eta_at=eta.expected_at if eta else None,
        relapse=relapse,
    )


def _durations(conn: sqlite3.Connection, column: str, value: str) -> list[float]:
    """How long past episodes lasted, newest first, by fingerprint or by rule."""
    assert column in ("fingerprint", "rule")
    rows = conn.execute(
        "SELECT json_extract(e.detail, '$.lasted') FROM event e JOIN incident i"
        f" ON i.id = e.incident_id WHERE e.kind = 'resolved' AND i.{column} = ?"
        " ORDER BY e.id DESC LIMIT ?",
        (value, HISTORY_LIMIT),
    ).fetchall()
    return [float(r[0]) for r in rows if r[0] is not None]


def _fired(conn: sqlite3.Connection, incident_id: int, episode: int) -> dict[int, float]:
    rows = conn.execute(
        "SELECT step, fired_at FROM escalation_fired WHERE incident_id = ? AND episode = ?",
        (incident_id, episode),
    ).fetchall()
    return {r["step"]: r["fired_at"] for r in rows}


def _occurrences(
    conn: sqlite3.Connection, window: MaintenanceWindow, now: float
) -> list[Occurrence]:
    """The occurrence to announce or run now, and earlier ones whose end is still untold."""
    found: dict[float, Occurrence] = {}
    current = covering(window, now)
    start = current[0] if current else next_start(window, now)
    if start is not None and start - window.announce_before <= now:
        found[start] = _occurrence(window, start)
    for (subject,) in conn.execute(
        "SELECT DISTINCT n.subject FROM notice n WHERE n.subject LIKE ? AND NOT EXISTS"
        " (SELECT 1 FROM notice c WHERE c.subject = n.subject AND c.audience = n.audience"
        " AND c.kind = 'completed')",
        (f"maintenance:{window.name}:%",),
    ):
        earlier = float(subject.rsplit(":", 1)[1])
        found.setdefault(earlier, _occurrence(window, earlier))
    return list(found.values())


def _occurrence(window: MaintenanceWindow, start: float) -> Occurrence:
    return Occurrence(start, start + window.duration, start - window.announce_before)


def _lasted(row: sqlite3.Row) -> float | None:
    if row["resolved_at"] is None:
        return None
    return float(row["resolved_at"] - row["opened_at"])


def _eta_context(eta: Eta | None) -> dict[str, Any] | None:
    if eta is None:
        return None
    return {
        "expected_at": eta.expected_at,
        "median": eta.median,
        "low": eta.low,
        "high": eta.high,
        "samples": eta.samples,
        "basis": eta.basis,
        "overdue": eta.overdue,
    }


def _escalation_note(step: StepDue, targets: list[str], now: float, row: sqlite3.Row) -> str:
    waited = round((now - row["opened_at"]) / 60)
    why = (
        "the problem is predicted to hit users before the next step was due"
        if step.urgent
        else f"not acknowledged after {waited} min"
    )
    return f"Escalated (step {step.index + 1}) to {', '.join(targets)}: {why}."


def _comment(
    conn: sqlite3.Connection, incident_id: int, event_id: int, text: str, now: float
) -> None:
    key = f"incident:{incident_id}:event:{event_id}:ticket.comment"
    st.enqueue(conn, key, "ticket.comment", {"text": text}, now, incident_id)


def _enqueue_still_open(
    conn: sqlite3.Connection, row: sqlite3.Row, seq: int, context: dict[str, Any], now: float
) -> None:
    key = f"incident:{row['id']}:episode:{row['episode']}:still_open:{seq}"
    payload = {"template": "ticket_still_open", "context": context}
    st.enqueue(conn, key, "ticket.comment", payload, now, row["id"])
