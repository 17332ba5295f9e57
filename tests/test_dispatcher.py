"""The outbox dispatcher against the real built-in ticket store and a real SMTP server.

Failures are injected where they happen in life: the SMTP server stops or rejects a recipient,
an override template is broken, the help desk times out before or after creating a ticket.
The dispatcher's clock is a fake one the tests move; nothing sleeps.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
from smtp_server import ReceivedMail, SmtpTestServer

from monitor.dispatcher import Dispatcher, RetryPolicy
from monitor.engine import Engine, EngineSettings
from monitor.metrics import Metrics
from monitor.store import Store, acknowledge, enqueue
from notifiers.base import DeliveryError, TicketDraft, TicketInfo
from notifiers.builtin import BuiltinTickets
from notifiers.email import SmtpChannel, SmtpSettings
from notifiers.render import Renderer
from probes.base import Sample
from rules import Rule, Severity, compile_condition, fingerprint, marker

T0 = 1_800_000_000.0
HOUR = 3600.0
METRIC = "disk_used_percent"
ROOT = {"mountpoint": "/"}
MARKER = marker(fingerprint("disk_full", ROOT))
HELPDESK = "helpdesk@example.com"
RETRY = RetryPolicy(base=10.0, cap=1000.0, defer=1.0)
SETTINGS = EngineSettings(
    hostname="web01",
    reopen_within=HOUR,
    backend="builtin",
    helpdesk_contact=HELPDESK,
    helpdesk_emails=(HELPDESK,),
    email_enabled=True,
)
RULE = Rule(
    name="disk_full",
    metric=METRIC,
    condition=compile_condition("value > 90"),
    severity=Severity.CRITICAL,
    service="file shares",
    notify_users=True,
)


@dataclass
class FakeClock:
    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RecordingTickets:
    """BuiltinTickets seen through a help desk that fails on demand.

    `create_failures` says what each `create` call does: "before" fails before reaching the
    help desk (connection refused), "after" fails once the ticket exists (the reply timed out),
    "ok" (or running out of the list) works. Every call is recorded by name.
    """

    inner: BuiltinTickets
    create_failures: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    drafts: list[TicketDraft] = field(default_factory=list)
    kind: ClassVar[str] = "builtin"

    def create(self, draft: TicketDraft) -> TicketInfo:
        self.calls.append("create")
        self.drafts.append(draft)
        mode = self.create_failures.pop(0) if self.create_failures else "ok"
        if mode == "before":
            raise DeliveryError("connection refused")
        info = self.inner.create(draft)
        if mode == "after":
            raise DeliveryError("read timed out")
        return info

    def find_by_marker(self, marker: str) -> TicketInfo | None:
        self.calls.append("find_by_marker")
        return self.inner.find_by_marker(marker)

    def comment(self, external_id: str, text: str) -> None:
        self.calls.append("comment")
        self.inner.comment(external_id, text)

    def resolve(self, external_id: str, text: str) -> None:
        self.calls.append("resolve")
        self.inner.resolve(external_id, text)

    def reopen(self, external_id: str, text: str) -> None:
        self.calls.append("reopen")
        self.inner.reopen(external_id, text)

    def get(self, external_id: str) -> TicketInfo | None:
        return self.inner.get(external_id)


@dataclass
class Rig:
    store: Store
    tickets: BuiltinTickets
    backend: RecordingTickets
    engine: Engine
    dispatcher: Dispatcher
    metrics: Metrics
    clock: FakeClock
    smtp: SmtpTestServer

    def feed(self, value: float, seconds: float = 0.0) -> None:
        """A sample at T0 + seconds; the dispatcher's clock follows."""
        now = T0 + seconds
        self.clock.now = max(self.clock.now, now)
        self.engine.process([Sample(METRIC, value, now, dict(ROOT))], now)

    def row(self, key_tail: str) -> sqlite3.Row:
        [row] = self.store.query("SELECT * FROM outbox WHERE key LIKE ?", (f"%:{key_tail}",))
        return row

    def statuses(self) -> dict[str, str]:
        rows = self.store.query("SELECT key, status FROM outbox ORDER BY id")
        return {r["key"].split(":", 4)[-1]: r["status"] for r in rows}

    def events(self, kind: str) -> list[dict[str, Any]]:
        rows = self.store.query("SELECT detail FROM event WHERE kind = ? ORDER BY id", (kind,))
        return [json.loads(r["detail"]) for r in rows]

    def mails_to(self, address: str) -> list[ReceivedMail]:
        return [m for m in self.smtp.received if address in m.rcpt_tos]

    def deliveries(self, op: str, result: str) -> float:
        labels = {"op": op, "result": result}
        value = self.metrics.registry.get_sample_value("forewarn_deliveries_total", labels)
        return value or 0.0


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


def build_rig(tmp_path: Path, smtp: SmtpTestServer, renderer: Renderer | None = None) -> Rig:
    path = tmp_path / "forewarn.db"
    store, tickets, metrics, clock = Store(path), BuiltinTickets(str(path)), Metrics(), FakeClock()
    backend = RecordingTickets(tickets)
    channel = SmtpChannel(
        SmtpSettings(host=smtp.host, port=smtp.port, sender="forewarn@example.com", timeout=5.0)
    )
    dispatcher = Dispatcher(
        store, backend, channel, renderer or Renderer(), metrics, RETRY, clock=clock
    )
    engine = Engine(store, [RULE], SETTINGS, metrics, snapshot=dict)
    return Rig(store, tickets, backend, engine, dispatcher, metrics, clock, smtp)


@pytest.fixture
def rig(tmp_path: Path, smtp: SmtpTestServer) -> Iterator[Rig]:
    built = build_rig(tmp_path, smtp)
    yield built
    built.store.close()


def reset_to_pending(rig: Rig, key_tail: str) -> None:
    """What a crash after the send, before the row was marked done, leaves behind."""
    with rig.store.transaction() as conn:
        conn.execute(
            "UPDATE outbox SET status = 'pending', next_attempt_at = 0 WHERE key LIKE ?",
            (f"%:{key_tail}",),
        )


# --- the happy path -----------------------------------------------------------------------


def test_ticket_then_mails_naming_it(rig: Rig) -> None:
    rig.feed(95.0)
    assert rig.dispatcher.run_once() == 2

    [ticket] = rig.tickets.list_tickets()
    assert (ticket.label, ticket.marker, ticket.priority) == ("#1", MARKER, "high")
    assert MARKER in ticket.body
    stored = rig.store.ticket_for(1)
    assert stored is not None
    assert (stored.number, stored.external_id, stored.backend) == ("#1", "1", "builtin")
    assert set(rig.statuses().values()) == {"done"}
    assert rig.events("ticket_created") == [{"backend": "builtin", "ticket": "#1"}]

    [helpdesk] = rig.mails_to(HELPDESK)
    assert helpdesk.message["Subject"].startswith("[#1] CRITICAL disk_full on web01")
    assert helpdesk.message["X-Forewarn-Marker"] == MARKER
    assert rig.dispatcher.run_once() == 0  # nothing is delivered twice


def test_message_id_is_stable_per_outbox_row(rig: Rig) -> None:
    rig.feed(95.0)
    rig.dispatcher.run_once()
    reset_to_pending(rig, "helpdesk_opened:email")
    assert rig.dispatcher.run_once() == 1

    first, resent = rig.mails_to(HELPDESK)
    assert first.message["Message-ID"] == resent.message["Message-ID"]
    assert first.message["Message-ID"].endswith("@web01.forewarn>")
    assert len(rig.tickets.list_tickets()) == 1


def test_resolve_and_reopen_reach_the_same_ticket(rig: Rig) -> None:
    rig.feed(95.0)
    rig.dispatcher.run_once()
    rig.feed(50.0, 600)
    rig.dispatcher.run_once()
    assert rig.tickets.show(1).status == "resolved"

    rig.feed(95.0, 1200)
    rig.dispatcher.run_once()
    [ticket] = rig.tickets.list_tickets()
    assert ticket.status == "open"
    assert [c.text.split("\n")[0] for c in rig.tickets.show(1).comments] == [
        "Status changed to resolved.",
        "Status changed to open.",
    ]
    reopened = rig.mails_to(HELPDESK)[-1]
    assert reopened.message["Subject"].startswith("[#1] REOPENED CRITICAL disk_full")


def test_a_new_incident_after_the_reopen_window_gets_a_new_ticket(rig: Rig) -> None:
    rig.feed(95.0)
    rig.dispatcher.run_once()
    rig.feed(50.0, 600)
    rig.dispatcher.run_once()
    rig.feed(95.0, 601 + HOUR)
    rig.dispatcher.run_once()

    assert [t.status for t in rig.tickets.list_tickets()] == ["new", "resolved"]
    draft = rig.backend.drafts[-1]
    assert draft.related == ("1",)  # linked to the old ticket
    assert "The same problem had earlier tickets: #1." in rig.tickets.show(2).body


def test_a_ticket_in_human_hands_gets_comments_not_status_changes(rig: Rig) -> None:
    rig.feed(95.0)
    rig.dispatcher.run_once()
    rig.tickets.take(1, "ana")  # an agent owns it now
    rig.feed(50.0, 600)
    rig.dispatcher.run_once()
    ticket = rig.tickets.show(1)
    assert (ticket.status, ticket.owner) == ("open", "ana")  # not resolved over her head
    assert "resolve" not in rig.backend.calls
    assert any("the problem is gone" in c.text for c in ticket.comments)


# --- unknown outcomes ---------------------------------------------------------------------


def test_unknown_outcome_finds_the_ticket_by_marker_instead_of_creating(rig: Rig) -> None:
    rig.feed(95.0)
    # The daemon died after the help desk created the ticket, before it stored the answer.
    rig.tickets.create(TicketDraft(marker=MARKER, subject="disk full", body=MARKER))
    with rig.store.transaction() as conn:
        conn.execute("UPDATE outbox SET attempts = 1 WHERE op = 'ticket.create'")

    assert rig.dispatcher.run_once() == 2
    assert "create" not in rig.backend.calls and rig.backend.calls[0] == "find_by_marker"
    assert len(rig.tickets.list_tickets()) == 1
    stored = rig.store.ticket_for(1)
    assert stored is not None and stored.number == "#1"
    assert rig.events("ticket_created") == [{"backend": "builtin", "ticket": "#1"}]


def test_help_desk_failing_then_working_leaves_exactly_one_ticket(rig: Rig) -> None:
    rig.backend.create_failures = ["before", "before", "after"]
    rig.feed(95.0)
    for _ in range(3):
        assert rig.dispatcher.run_once() == 0  # mails wait for the ticket
        assert rig.row("ticket.create")["status"] == "pending"
        rig.clock.advance(RETRY.cap * 1.2)

    assert rig.dispatcher.run_once() == 2
    assert len(rig.tickets.list_tickets()) == 1
    # Every attempt looks before creating (a replica may have opened it); after the timeout
    # the ticket existed, and the last look found it.
    assert rig.backend.calls == [
        "find_by_marker",
        "create",
        "find_by_marker",
        "create",
        "find_by_marker",
        "create",
        "find_by_marker",
    ]
    created = rig.row("ticket.create")
    assert (created["attempts"], created["last_error"]) == (3, None)
    assert rig.deliveries("ticket.create", "retry") == 3
    assert len(rig.mails_to(HELPDESK)) == 1


# --- ordering -----------------------------------------------------------------------------


def test_rows_wait_for_their_ticket_without_using_up_attempts(rig: Rig) -> None:
    rig.backend.create_failures = ["before"]
    rig.feed(95.0)
    rig.feed(50.0, 60)  # resolved before anything was delivered
    acknowledged = acknowledge(rig.store, 1, "alice", "", T0 + 30)
    assert not acknowledged  # already resolved: nothing to own

    assert rig.dispatcher.run_once() == 0
    waiting = rig.store.query("SELECT * FROM outbox WHERE op != 'ticket.create'")
    assert len(waiting) == 3  # ticket.resolve and two mails
    for row in waiting:
        assert (row["status"], row["attempts"]) == ("pending", 0), row["key"]
        assert row["next_attempt_at"] == rig.clock.now + RETRY.defer
    assert rig.smtp.received == []
    assert rig.deliveries("email.send", "retry") == 0

    rig.clock.advance(RETRY.base * 1.2)
    assert rig.dispatcher.run_once() == 4
    assert rig.tickets.show(1).status == "resolved"
    resolved = rig.mails_to(HELPDESK)[-1]
    assert resolved.message["Subject"].startswith("[#1] RESOLVED disk_full")


# --- mail failures ------------------------------------------------------------------------


def test_smtp_down_backs_off_exponentially_then_delivers_once(rig: Rig) -> None:
    rig.engine.reconfigure([replace(RULE, notify_users=False)], SETTINGS)  # one mail row
    rig.smtp.stop()
    rig.feed(95.0)
    for attempt in (1, 2, 3):
        rig.dispatcher.run_once()
        row = rig.row("helpdesk_opened:email")
        assert (row["status"], row["attempts"]) == ("pending", attempt)
        assert "refused" in row["last_error"].lower()
        delay = row["next_attempt_at"] - rig.clock.now
        nominal = RETRY.base * 2 ** (attempt - 1)
        assert 0.8 * nominal <= delay <= 1.2 * nominal, (attempt, delay)
        rig.clock.advance(delay - 0.001)
        assert rig.dispatcher.run_once() == 0  # not due yet: not tried
        assert rig.row("helpdesk_opened:email")["attempts"] == attempt
        rig.clock.advance(0.001)

    rig.smtp.start()
    assert rig.dispatcher.run_once() == 1
    assert rig.dispatcher.run_once() == 0
    assert len(rig.smtp.received) == 1
    assert rig.row("helpdesk_opened:email")["last_error"] is None
    assert rig.deliveries("email.send", "retry") == 3


def test_backoff_is_capped(rig: Rig) -> None:
    rig.smtp.stop()
    rig.feed(95.0)
    for _ in range(10):
        rig.dispatcher.run_once()
        rig.clock.advance(RETRY.cap * 1.2)
    row = rig.row("helpdesk_opened:email")
    assert row["attempts"] == 10
    delay = row["next_attempt_at"] - (rig.clock.now - RETRY.cap * 1.2)
    assert 0.8 * RETRY.cap <= delay <= 1.2 * RETRY.cap


def test_rejected_recipient_is_dead_and_the_rest_is_delivered(rig: Rig) -> None:
    rig.smtp.set_rcpt_reply("550 5.1.1 no such user", HELPDESK)
    rig.feed(95.0)
    assert rig.dispatcher.run_once() == 1

    assert rig.statuses() == {"ticket.create": "done", "helpdesk_opened:email": "dead"}
    dead = rig.row("helpdesk_opened:email")
    assert "550" in dead["last_error"] and dead["attempts"] == 1
    [failed] = rig.events("delivery_failed")
    assert failed["key"] == dead["key"] and "550" in failed["error"]
    assert rig.deliveries("email.send", "dead") == 1
    assert rig.tickets.list_tickets() != []
    # what the daemon's built-in `delivery_failed` self-alert reads
    assert rig.store.failed_deliveries_since(T0 - 1) == 1
    assert rig.store.failed_deliveries_since(rig.clock.now + 1) == 0

    rig.clock.advance(RETRY.cap * 10)
    assert rig.dispatcher.run_once() == 0  # dead stays dead
    assert rig.row("helpdesk_opened:email")["attempts"] == 1


# --- templates ----------------------------------------------------------------------------


def rig_with_override(tmp_path: Path, smtp: SmtpTestServer, name: str, source: str) -> Rig:
    overrides = tmp_path / "templates"
    overrides.mkdir()
    (overrides / name).write_text(source)
    return build_rig(tmp_path, smtp, Renderer(str(overrides)))


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("{% if %}broken", id="syntax-error"),
        pytest.param("{{ 1/0 }}", id="raises-at-render"),
    ],
)
def test_broken_override_template_kills_the_row_not_the_loop(
    tmp_path: Path, smtp: SmtpTestServer, source: str
) -> None:
    rig = rig_with_override(tmp_path, smtp, "helpdesk_opened.subject.j2", source)
    rig.feed(95.0)
    assert rig.dispatcher.run_once() == 1  # the ticket

    row = rig.row("helpdesk_opened:email")
    assert row["status"] == "dead"
    assert row["last_error"].startswith("template error")
    assert rig.deliveries("email.send", "dead") == 1
    assert rig.mails_to(HELPDESK) == []
    rig.store.close()


# --- acknowledgement ----------------------------------------------------------------------


def test_acknowledgement_is_written_on_the_ticket(rig: Rig) -> None:
    rig.feed(95.0)
    rig.dispatcher.run_once()

    rig.clock.advance(30)
    assert acknowledge(rig.store, 1, "alice", "looking at the disk", rig.clock.now)
    assert not acknowledge(rig.store, 1, "bob", "", rig.clock.now)  # owned already
    assert rig.dispatcher.run_once() == 1

    [comment] = rig.tickets.show(1).comments
    assert (comment.author, comment.kind) == ("forewarn", "comment")
    assert comment.text == "Acknowledged by alice.\n\nlooking at the disk"
    incident = rig.store.incident(1)
    assert incident is not None and incident["acknowledged_by"] == "alice"


def test_acknowledgement_before_the_ticket_exists_waits_for_it(rig: Rig) -> None:
    rig.backend.create_failures = ["before"]
    rig.feed(95.0)
    assert acknowledge(rig.store, 1, "alice", "", rig.clock.now)
    rig.dispatcher.run_once()
    comment = rig.row("ticket.comment")
    assert (comment["attempts"], comment["next_attempt_at"]) == (0, rig.clock.now + RETRY.defer)

    rig.clock.advance(RETRY.base * 1.2)
    rig.dispatcher.run_once()
    assert [c.text for c in rig.tickets.show(1).comments] == ["Acknowledged by alice."]


def test_no_channel_configured_is_permanent(tmp_path: Path, smtp: SmtpTestServer) -> None:
    rig = build_rig(tmp_path, smtp)
    rig.dispatcher.channel = None
    rig.feed(95.0)
    assert rig.dispatcher.run_once() == 1
    assert rig.statuses() == {"ticket.create": "done", "helpdesk_opened:email": "dead"}
    rig.store.close()


def test_severity_update_comments_on_the_ticket(tmp_path: Path, smtp: SmtpTestServer) -> None:
    rig = build_rig(tmp_path, smtp)
    rule = replace(RULE, severity=Severity.WARNING, critical=compile_condition("value > 97"))
    rig.engine.reconfigure([rule], SETTINGS)
    rig.feed(95.0)
    rig.feed(98.0, 60)
    assert rig.dispatcher.run_once() == 4

    [comment] = rig.tickets.show(1).comments
    assert comment.text.startswith("Severity changed from warning to critical (priority high).")
    updated = rig.mails_to(HELPDESK)[-1]
    assert updated.message["Subject"].startswith("[#1] now CRITICAL (was warning) disk_full")
    rig.store.close()


# --- routing ------------------------------------------------------------------------------


def test_routes_send_each_incident_to_the_help_desk_its_labels_match(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    from dataclasses import replace as replaced

    from rules.silences import parse_matcher

    rig = build_rig(tmp_path, smtp)
    payroll_path = tmp_path / "payroll.db"
    payroll = RecordingTickets(BuiltinTickets(str(payroll_path)))
    routes = (("payroll", (parse_matcher('mountpoint=~"/srv/payroll.*"'),)),)
    rig.engine.reconfigure(rig.engine.rules, replaced(SETTINGS, routes=routes))
    rig.dispatcher.routes = {"payroll": payroll}

    now = T0
    rig.engine.process([Sample(METRIC, 95.0, now, {"mountpoint": "/srv/payroll"})], now)
    rig.engine.process([Sample(METRIC, 95.0, now, dict(ROOT))], now)
    rig.dispatcher.run_once()

    [routed] = payroll.inner.list_tickets()
    assert "/srv/payroll" in routed.subject and "/srv/payroll" in payroll.inner.show(1).body
    [default] = rig.tickets.list_tickets()
    assert "/srv/payroll" not in rig.tickets.show(default.number).body
    # later operations follow the incident to its help desk
    rig.engine.process([Sample(METRIC, 50.0, now + 60, {"mountpoint": "/srv/payroll"})], now + 60)
    rig.clock.advance(60)
    rig.dispatcher.run_once()
    assert payroll.inner.show(1).status == "resolved"
    assert rig.tickets.show(default.number).status == "new"


# --- user notices and escalations (the rows `monitor.comms` writes) -------------------------

# Override templates: these tests check what the dispatcher chose and passed, not wording.
MESSAGE_TEMPLATES = {
    "notices/it/investigating.subject.j2": "[{{ kind }}/{{ language }}] {{ service.title }}",
    "notices/it/investigating.txt.j2": "ticket: {{ ticket.number if ticket else 'nessuno' }}",
    "notices/it/investigating.html.j2": "<p>{{ service.title }}</p>",
    "notices/it/scheduled.subject.j2": "[{{ kind }}/{{ language }}] {{ maintenance.title }}",
    "notices/it/scheduled.txt.j2": "ticket: {{ ticket.number if ticket else 'nessuno' }}",
    "notices/it/scheduled.html.j2": "<p>{{ maintenance.title }}</p>",
    "escalation.subject.j2": "[{{ ticket.number }}] step {{ step.position }} of {{ step.of }}",
    "escalation.txt.j2": "Nobody has acknowledged it: {{ acknowledge }}",
    "escalation.html.j2": "<p>{{ acknowledge }}</p>",
}
SERVICE = {"name": "files", "title": "Cartelle condivise", "description": ""}
ANNA, BRUNO, ONCALL = "anna@example.com", "bruno@example.com", "oncall@example.com"


def message_rig(tmp_path: Path, smtp: SmtpTestServer) -> Rig:
    overrides = tmp_path / "templates"
    for name, source in MESSAGE_TEMPLATES.items():
        (overrides / name).parent.mkdir(parents=True, exist_ok=True)
        (overrides / name).write_text(source)
    return build_rig(tmp_path, smtp, Renderer(str(overrides)))


def enqueue_row(
    rig: Rig, key: str, payload: dict[str, Any], incident_id: int | None, op: str = "email.send"
) -> None:
    with rig.store.transaction() as conn:
        enqueue(conn, key, op, payload, rig.clock.now, incident_id)


def notice(kind: str, to: str, context: dict[str, Any]) -> dict[str, Any]:
    return {"template": "notice", "kind": kind, "language": "it", "to": [to], "context": context}


def test_notice_mails_go_one_per_recipient_and_name_the_ticket_they_waited_for(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    rig = message_rig(tmp_path, smtp)
    rig.backend.create_failures = ["before"]
    rig.feed(95.0)
    context = {"host": "web01", "service": SERVICE, "incident": {"id": 1, "marker": MARKER}}
    for address in (ANNA, BRUNO):
        enqueue_row(rig, f"notice:1:{address}", notice("investigating", address, context), 1)

    rig.dispatcher.run_once()
    assert rig.mails_to(ANNA) == [] and rig.mails_to(BRUNO) == []
    assert rig.row(ANNA)["attempts"] == 0  # waiting for the ticket is not an attempt

    rig.clock.advance(RETRY.base * 1.2)
    rig.dispatcher.run_once()
    [anna], [bruno] = rig.mails_to(ANNA), rig.mails_to(BRUNO)
    for mail, address in ((anna, ANNA), (bruno, BRUNO)):
        assert mail.rcpt_tos == (address,)
        assert mail.message["Subject"] == "[investigating/it] Cartelle condivise"
        assert mail.body().strip() == "ticket: #1"
        assert mail.body("html").strip() == "<p>Cartelle condivise</p>"
        assert mail.message["X-Forewarn-Marker"] == MARKER
        assert mail.message["X-Forewarn-Notice"] == "investigating"
    assert anna.message["Message-ID"] != bruno.message["Message-ID"]
    assert rig.row(ANNA)["status"] == rig.row(BRUNO)["status"] == "done"
    rig.store.close()


def test_a_maintenance_notice_has_no_incident_and_waits_for_no_ticket(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    rig = message_rig(tmp_path, smtp)
    rig.backend.create_failures = ["before"]
    rig.feed(95.0)  # an unrelated incident whose ticket is still pending
    window = {"name": "backup", "title": "Backup notturno", "starts_at": T0, "ends_at": T0 + HOUR}
    context = {"host": "web01", "service": SERVICE, "maintenance": window}
    enqueue_row(rig, f"maintenance:backup:{T0}:{ANNA}", notice("scheduled", ANNA, context), None)

    assert rig.dispatcher.run_once() == 1  # the notice; the incident's rows wait
    [mail] = rig.mails_to(ANNA)
    assert mail.message["Subject"] == "[scheduled/it] Backup notturno"
    assert mail.body().strip() == "ticket: nessuno"
    assert "X-Forewarn-Marker" not in mail.message
    assert mail.message["X-Forewarn-Notice"] == "scheduled"
    delivered = rig.store.query(
        "SELECT detail FROM event WHERE kind = 'delivered' AND incident_id IS NULL"
    )
    assert [json.loads(r["detail"])["template"] for r in delivered] == ["notice"]
    rig.store.close()


def test_an_escalation_mail_uses_the_staff_template(tmp_path: Path, smtp: SmtpTestServer) -> None:
    rig = message_rig(tmp_path, smtp)
    rig.feed(95.0)
    rig.dispatcher.run_once()  # the ticket exists
    context = {
        "host": "web01",
        "incident": {"id": 1, "marker": MARKER},
        "step": {"position": 2, "of": 3},
        "acknowledge": "forewarn incidents ack 1",
    }
    payload = {"template": "escalation", "to": [ONCALL], "context": context}
    enqueue_row(rig, "incident:1:episode:1:escalation:2:email", payload, 1)

    assert rig.dispatcher.run_once() == 1
    [mail] = rig.mails_to(ONCALL)
    assert mail.message["Subject"] == "[#1] step 2 of 3"
    assert mail.body().strip() == "Nobody has acknowledged it: forewarn incidents ack 1"
    assert mail.message["X-Forewarn-Marker"] == MARKER
    assert "X-Forewarn-Notice" not in mail.message  # staff, not a user notice
    rig.store.close()


def test_an_unknown_apprise_target_is_dead_at_once(tmp_path: Path, smtp: SmtpTestServer) -> None:
    rig = message_rig(tmp_path, smtp)
    rig.backend.create_failures = ["before"]
    rig.feed(95.0)  # its ticket is pending: a doomed row does not wait for it
    payload = {"template": "notice", "kind": "investigating", "language": "it",
               "target": "0123456789ab", "context": {"service": SERVICE}}
    enqueue_row(rig, "notice:1:apprise:0123456789ab", payload, 1, op="apprise.send")

    rig.dispatcher.run_once()
    row = rig.row("apprise:0123456789ab")
    assert row["status"] == "dead"
    assert row["last_error"].startswith("Apprise target 0123456789ab is no longer configured")
    [failed] = rig.events("delivery_failed")
    assert failed["key"] == row["key"]
    assert rig.deliveries("apprise.send", "dead") == 1
    rig.store.close()
