"""The engine on a real state store: samples in, alert rows, incidents, events and outbox out.

Time is passed as `now`; nothing here sleeps or reads the clock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from monitor.engine import DEFAULT_STALE_AFTER, Engine, EngineSettings, _significant
from monitor.metrics import Metrics
from monitor.store import Store
from probes.base import Sample
from rules import Phase, Rule, Severity, compile_condition, fingerprint

T0 = 1_800_000_000.0
HOUR = 3600.0
METRIC = "disk_used_percent"
ROOT = {"mountpoint": "/"}
FP = fingerprint("disk_full", ROOT)
SETTINGS = EngineSettings(
    hostname="web01",
    reopen_within=HOUR,
    backend="builtin",
    helpdesk_contact="helpdesk@example.com",
    helpdesk_emails=("helpdesk@example.com",),
    email_enabled=True,
)


def disk_rule(**changes: Any) -> Rule:
    base = Rule(
        name="disk_full",
        metric=METRIC,
        condition=compile_condition("value > 90"),
        critical=compile_condition("value > 97"),
        severity=Severity.WARNING,
        service="file shares",
        category="storage",
    )
    return replace(base, **changes)


def disk(value: float, now: float, **labels: str) -> Sample:
    return Sample(METRIC, value, now, labels or dict(ROOT))


@dataclass
class Rig:
    store: Store
    engine: Engine
    metrics: Metrics

    def feed(self, value: float, now: float, **labels: str) -> int:
        return self.engine.process([disk(value, now, **labels)], now)

    def rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        return self.store.query(sql, params)

    def outbox(self) -> list[tuple[str, str]]:
        return [(r["op"], r["key"]) for r in self.rows("SELECT op, key FROM outbox ORDER BY id")]

    def incidents(self) -> list[sqlite3.Row]:
        return self.rows("SELECT * FROM incident ORDER BY id")

    def events(self, incident_id: int = 1) -> list[str]:
        rows = self.rows("SELECT kind FROM event WHERE incident_id = ? ORDER BY id", incident_id)
        return [r["kind"] for r in rows]

    def count(self, table: str) -> int:
        return int(self.rows(f"SELECT COUNT(*) FROM {table}")[0][0])


RigFactory = Callable[..., Rig]


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[RigFactory]:
    """A rig on the same state file every time: a second call is a daemon restart."""
    stores: list[Store] = []

    def make(
        *rules: Rule,
        settings: EngineSettings = SETTINGS,
        snapshot: Callable[[], dict[str, Any]] = dict,
    ) -> Rig:
        store = Store(tmp_path / "forewarn.db")
        stores.append(store)
        metrics = Metrics()
        engine = Engine(store, rules or (disk_rule(),), settings, metrics, snapshot=snapshot)
        return Rig(store, engine, metrics)

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def rig(make_rig: RigFactory) -> Rig:
    return make_rig()


def key(incident: int, episode: int, tail: str) -> str:
    return f"incident:{incident}:episode:{episode}:{tail}"


# --- opening ----------------------------------------------------------------------------


def test_firing_opens_one_incident_with_its_ticket_and_mail_rows(make_rig: RigFactory) -> None:
    rig = make_rig(disk_rule(severity=Severity.CRITICAL, critical=None))

    assert rig.feed(95.0, T0) == 1

    [incident] = rig.incidents()
    assert (incident["status"], incident["episode"], incident["fingerprint"]) == ("open", 1, FP)
    assert (incident["severity"], incident["priority"]) == (Severity.CRITICAL, "high")
    assert (incident["opened_at"], incident["first_opened_at"]) == (T0, T0)
    assert (incident["category"], incident["service"]) == ("storage", "file shares")
    assert rig.outbox() == [
        ("ticket.create", key(1, 1, "ticket.create")),
        ("email.send", key(1, 1, "helpdesk_opened:email")),
    ]
    assert rig.events() == ["opened"]
    assert rig.rows("SELECT phase FROM alert")[0]["phase"] == "firing"


def test_the_engine_mails_the_help_desk_and_leaves_users_to_the_communicator(
    make_rig: RigFactory,
) -> None:
    rig = make_rig(disk_rule(notify_users=True))
    rig.feed(95.0, T0)

    mails = rig.rows("SELECT key, payload FROM outbox WHERE op = 'email.send' ORDER BY id")
    assert [m["key"] for m in mails] == [key(1, 1, "helpdesk_opened:email")]
    assert '"to": ["helpdesk@example.com"]' in mails[0]["payload"]


def test_incident_and_outbox_rows_are_written_in_one_transaction(make_rig: RigFactory) -> None:
    failing = [True]

    def snapshot() -> dict[str, Any]:
        if failing:  # fails after the incident INSERT, before the outbox rows
            raise OSError("disk full")
        return {}

    broken = make_rig(snapshot=snapshot)
    with pytest.raises(OSError):
        broken.feed(95.0, T0)
    for table in ("incident", "outbox", "event", "alert"):
        assert broken.count(table) == 0, table

    # Nothing was remembered in memory either: the next sample fires and opens it for real.
    failing.clear()
    assert broken.feed(95.0, T0 + 60) == 1
    assert len(broken.incidents()) == 1 and broken.count("outbox") == 2


def test_the_store_refuses_a_second_open_incident_per_fingerprint(rig: Rig) -> None:
    rig.feed(95.0, T0)
    second_open = (
        "INSERT INTO incident (fingerprint, marker, rule, labels, status, severity, priority,"
        " first_opened_at, opened_at)"
        " VALUES (?, 'm', 'disk_full', '{}', 'open', 1, 'medium', ?, ?)"
    )
    with pytest.raises(sqlite3.IntegrityError), rig.store.transaction() as conn:
        conn.execute(second_open, (FP, T0, T0))
    # A resolved one next to the open one is history, and allowed.
    with rig.store.transaction() as conn:
        conn.execute(second_open.replace("'open'", "'resolved'"), (FP, T0, T0))
    assert [r["status"] for r in rig.incidents()] == ["open", "resolved"]


# --- `for` --------------------------------------------------------------------------------


def test_for_duration_holds_pending_until_it_has_held_to_the_second(make_rig: RigFactory) -> None:
    rig = make_rig(disk_rule(for_seconds=300.0))

    assert rig.feed(95.0, T0) == 0
    assert rig.feed(96.0, T0 + 299.0) == 0
    assert tuple(rig.rows("SELECT phase, active_since FROM alert")[0]) == ("pending", T0)
    assert rig.count("incident") == 0 and rig.count("outbox") == 0

    assert rig.feed(96.0, T0 + 300.0) == 1
    [incident] = rig.incidents()
    assert incident["opened_at"] == T0 + 300.0


def test_for_duration_starts_again_after_the_condition_lapsed(make_rig: RigFactory) -> None:
    rig = make_rig(disk_rule(for_seconds=300.0))
    rig.feed(95.0, T0)
    rig.feed(50.0, T0 + 200.0)  # lapsed: pending is forgotten
    rig.feed(95.0, T0 + 250.0)

    assert rig.feed(95.0, T0 + 500.0) == 0  # 300 s after the first, 250 after the second start
    assert rig.feed(95.0, T0 + 550.0) == 1
    assert rig.incidents()[0]["opened_at"] == T0 + 550.0


# --- severity, resolve, reopen ----------------------------------------------------------


def test_severity_change_while_firing_updates_the_incident(rig: Rig) -> None:
    rig.feed(95.0, T0)
    assert rig.feed(98.0, T0 + 60) == 1

    [incident] = rig.incidents()
    assert (incident["severity"], incident["priority"]) == (Severity.CRITICAL, "high")
    [event] = rig.rows("SELECT id, detail FROM event WHERE kind = 'severity'")
    assert '"previous": "warning"' in event["detail"] and '"to": "critical"' in event["detail"]
    base = f"incident:1:event:{event['id']}"
    assert rig.outbox()[2:] == [
        ("ticket.comment", f"{base}:ticket.comment"),
        ("email.send", f"{base}:helpdesk_updated:email"),
    ]

    rig.feed(98.5, T0 + 120)  # still critical: nothing new
    assert rig.count("outbox") == 4
    rig.feed(95.0, T0 + 180)  # back to warning: a second update
    assert rig.incidents()[0]["priority"] == "medium"
    assert rig.count("outbox") == 6


def test_resolve_closes_the_ticket_and_sends_the_resolution_mails(make_rig: RigFactory) -> None:
    rig = make_rig(disk_rule(notify_users=True))
    rig.feed(95.0, T0)
    assert rig.feed(80.0, T0 + 600) == 1

    [incident] = rig.incidents()
    assert (incident["status"], incident["resolved_at"]) == ("resolved", T0 + 600)
    assert rig.outbox()[2:] == [
        ("ticket.resolve", key(1, 1, "ticket.resolve")),
        ("email.send", key(1, 1, "helpdesk_resolved:email")),
    ]
    assert rig.events() == ["opened", "resolved"]
    [resolved] = rig.rows("SELECT detail FROM event WHERE kind = 'resolved'")
    assert '"lasted": 600.0' in resolved["detail"]


def test_recurrence_inside_the_window_reopens_the_same_incident(rig: Rig) -> None:
    rig.feed(95.0, T0)
    rig.feed(80.0, T0 + 600)
    assert rig.feed(95.0, T0 + 600 + HOUR) == 1  # exactly at the edge still counts

    [incident] = rig.incidents()
    assert (incident["id"], incident["episode"], incident["status"]) == (1, 2, "open")
    assert (incident["opened_at"], incident["first_opened_at"]) == (T0 + 600 + HOUR, T0)
    assert incident["resolved_at"] is None
    assert rig.outbox()[4:] == [
        ("ticket.reopen", key(1, 2, "ticket.reopen")),
        ("email.send", key(1, 2, "helpdesk_reopened:email")),
    ]
    assert rig.events() == ["opened", "resolved", "reopened"]

    rig.feed(80.0, T0 + 2 * HOUR)
    assert rig.outbox()[-2][1] == key(1, 2, "ticket.resolve")


def test_recurrence_after_the_window_opens_a_new_incident(rig: Rig) -> None:
    rig.feed(95.0, T0)
    rig.feed(80.0, T0 + 600)
    rig.feed(95.0, T0 + 601 + HOUR)

    assert [(r["id"], r["status"], r["episode"]) for r in rig.incidents()] == [
        (1, "resolved", 1),
        (2, "open", 1),
    ]
    assert rig.outbox()[-2:] == [
        ("ticket.create", key(2, 1, "ticket.create")),
        ("email.send", key(2, 1, "helpdesk_opened:email")),
    ]


# --- restart ------------------------------------------------------------------------------


def test_restart_continues_a_firing_series_without_duplicates(make_rig: RigFactory) -> None:
    before = make_rig()
    before.feed(95.0, T0)
    before.store.close()

    after = make_rig()
    assert after.engine.alerts[FP].phase is Phase.FIRING
    assert after.feed(95.5, T0 + 60) == 0
    assert after.count("incident") == 1 and after.count("outbox") == 2

    assert after.feed(80.0, T0 + 120) == 1  # and it still knows what to resolve
    assert [op for op, _ in after.outbox()][2:] == ["ticket.resolve", "email.send"]


def test_a_long_restart_does_not_expire_what_still_fires(make_rig: RigFactory) -> None:
    make_rig().feed(95.0, T0)
    after = make_rig()  # the daemon was down for an hour
    assert after.engine.tick(T0 + 3600) == 0  # its first tick: the series gets time to report
    assert after.engine.alerts[FP].phase is Phase.FIRING
    assert after.feed(95.0, T0 + 3601) == 0  # it reports: nothing resolved, nothing reopened
    stale_after = 300.0  # the engine's default for a probe it knows no interval of
    assert after.engine.tick(T0 + 3601 + stale_after + 1) == 1  # silent since: it expires
    assert after.engine.alerts[FP].phase is Phase.RESOLVED


def test_restart_keeps_a_pending_for_duration(make_rig: RigFactory) -> None:
    make_rig(disk_rule(for_seconds=300.0)).feed(95.0, T0)

    after = make_rig(disk_rule(for_seconds=300.0))
    assert after.feed(95.0, T0 + 299.0) == 0
    assert after.feed(95.0, T0 + 300.0) == 1
    assert after.count("incident") == 1


def test_a_replayed_firing_with_its_incident_open_writes_nothing(make_rig: RigFactory) -> None:
    # E.g. a state file whose alert row was lost: the incident table still knows.
    first = make_rig()
    first.feed(95.0, T0)
    with first.store.transaction() as conn:
        conn.execute("DELETE FROM alert")

    again = make_rig()
    assert again.feed(95.0, T0 + 60) == 1  # the alert fires again from scratch ...
    assert again.count("incident") == 1 and again.count("outbox") == 2  # ... and that is all


# --- what is stored -----------------------------------------------------------------------


def stored_matches_memory(rig: Rig) -> bool:
    """The alert table holds exactly the engine's non-inactive alerts, with the same phase and
    timing (the latest value is not written at every sample: only what a restart needs)."""
    stored, memory = rig.store.load_alerts(), rig.engine.alerts
    active = {fp: s for fp, s in memory.items() if s.phase is not Phase.INACTIVE}
    return set(stored) == set(active) and all(
        _significant(stored[fp]) == _significant(s) for fp, s in active.items()
    )


def test_healthy_series_are_not_stored(rig: Rig) -> None:
    samples = [disk(40.0, T0, mountpoint=f"/srv/{n}") for n in range(50)]
    for minute in range(3):
        rig.engine.process(samples, T0 + 60 * minute)

    assert rig.count("alert") == 0
    assert len(rig.engine.alerts) == 50
    assert stored_matches_memory(rig)


def test_a_series_back_to_inactive_leaves_the_table(make_rig: RigFactory) -> None:
    rig = make_rig(disk_rule(for_seconds=300.0))
    timeline = [  # value, seconds, expected phase of the stored row (None: no row)
        (95.0, 0, "pending"),
        (50.0, 60, None),  # healthy again: the row goes
        (50.0, 120, None),
        (95.0, 180, "pending"),
        (95.0, 480, "firing"),
        (50.0, 540, "resolved"),
        (50.0, 600, "resolved"),  # a resolved series stays: it keeps when its episode began
        (95.0, 660, "pending"),
        (50.0, 720, None),
        (50.0, 780, None),
    ]
    for value, seconds, phase in timeline:
        rig.feed(value, T0 + seconds)
        rows = rig.rows("SELECT phase FROM alert")
        assert [r["phase"] for r in rows] == ([phase] if phase else []), seconds
        assert stored_matches_memory(rig), seconds
    assert [(r["status"], r["episode"]) for r in rig.incidents()] == [("resolved", 1)]


# --- failures and settings ----------------------------------------------------------------


def rule_errors(rig: Rig, rule: str) -> float:
    value = rig.metrics.registry.get_sample_value("forewarn_rule_errors_total", {"rule": rule})
    return value or 0.0


def test_a_condition_that_raises_is_counted_and_never_escapes(make_rig: RigFactory) -> None:
    broken = disk_rule(name="broken", condition=compile_condition("labels.x + 1 > 2"))
    rig = make_rig(broken, disk_rule())

    samples = [disk(95.0, T0, mountpoint="/", x="text")]
    assert rig.engine.process(samples, T0) == 1  # the healthy rule still fires
    assert rule_errors(rig, "broken") == 1.0
    rig.engine.process(samples, T0 + 60)
    assert rule_errors(rig, "broken") == 2.0
    assert rule_errors(rig, "disk_full") == 0.0
    assert [r["rule"] for r in rig.incidents()] == ["disk_full"]


def test_a_critical_condition_that_raises_keeps_the_base_severity(make_rig: RigFactory) -> None:
    rig = make_rig(disk_rule(critical=compile_condition("labels.x + 1 > 2")))
    assert rig.feed(99.0, T0, mountpoint="/", x="text") == 1
    assert rig.incidents()[0]["severity"] == Severity.WARNING
    assert rule_errors(rig, "disk_full") == 1.0


def test_with_email_disabled_no_mail_rows_are_written(make_rig: RigFactory) -> None:
    rig = make_rig(disk_rule(notify_users=True), settings=replace(SETTINGS, email_enabled=False))
    rig.feed(95.0, T0)
    rig.feed(98.0, T0 + 60)
    rig.feed(50.0, T0 + 120)
    rig.feed(95.0, T0 + 180)

    assert [op for op, _ in rig.outbox()] == [
        "ticket.create",
        "ticket.comment",
        "ticket.resolve",
        "ticket.reopen",
    ]


def test_no_recipients_means_no_mail_rows(make_rig: RigFactory) -> None:
    rig = make_rig(disk_rule(notify_users=True), settings=replace(SETTINGS, helpdesk_emails=()))
    rig.feed(95.0, T0)
    assert rig.outbox() == [("ticket.create", key(1, 1, "ticket.create"))]


START_STEP = 1_800_000_000.0


def test_after_a_step_ahead_a_firing_series_is_not_stale_and_for_counts_real_time(
    make_rig: RigFactory,
) -> None:
    rig = make_rig(disk_rule(for_seconds=60.0))
    rig.engine.process([disk(95.0, START_STEP)], START_STEP)
    [pending] = rig.engine.alerts.values()
    assert pending.phase is Phase.PENDING

    jump = 3600.0
    rig.engine.rebase(jump)
    later = START_STEP + jump + 10  # 10 s of real time after the first sample
    assert rig.engine.tick(later) == 0, "the series is 10 s old, not an hour"
    rig.engine.process([disk(95.0, later)], later)
    [alert] = rig.engine.alerts.values()
    assert alert.phase is Phase.PENDING, "`for` is 60 s: only 10 s have passed"
    assert alert.active_since == START_STEP + jump

    stale = START_STEP + jump + DEFAULT_STALE_AFTER + 20
    rig.engine.tick(stale)
    [expired] = rig.engine.alerts.values()
    assert expired.phase is not Phase.PENDING, "a series that really stopped still expires"
