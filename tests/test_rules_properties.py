"""Properties of the rule engine whatever the samples, checked with hypothesis.

On the pure functions (`rules.evaluate`, `rules.expire`): no transition without its
condition. An alert fires exactly when its condition has held for `for` (or held `times` in
the last `checks`), resolves exactly when its clear (or the condition's absence) has held for
`keep_firing_for`, and otherwise only "resolves" when flapping settles. The oracles recompute
all this from the raw samples, apart from the state machine.

On the engine with its store: one open incident per key whatever the sequence, every firing
alert belongs to an open incident, every open incident has a reason to be open, no ticket
update before its ticket; and a silence never prevents resolution: once everything recovers,
every ticket forewarn opened ends resolved, silences and maintenance windows toggling all along.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from monitor.engine import Engine, EngineSettings
from monitor.metrics import Metrics
from monitor.store import Store, silence_from_row
from probes.base import Sample
from rules import (
    AlertState,
    Phase,
    Rule,
    Severity,
    TransitionKind,
    compile_condition,
    evaluate,
    expire,
)
from rules.flapping import FlapState, observe
from rules.silences import MaintenanceWindow, muted, parse_matcher

T0 = 1_800_000_000.0  # Friday 2027-01-15 08:00 UTC
PURE = settings(max_examples=300, deadline=None)
# More examples for a long hunt: FOREWARN_ENGINE_EXAMPLES=1500 python -m pytest this file.
ENGINE = settings(
    max_examples=int(os.environ.get("FOREWARN_ENGINE_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# --- the pure state machine --------------------------------------------------------------

# Values around the thresholds: condition > 90, clear < 80, critical > 97; NaN: a failed probe.
VALUES = st.sampled_from([50.0, 78.0, 85.0, 92.0, 99.0, math.nan])
# Gaps on both sides of the `for` and `keep_firing_for` durations the rules draw.
GAPS = st.sampled_from([1.0, 10.0, 29.0, 30.0, 31.0, 59.0, 60.0, 61.0, 119.0, 120.0, 300.0])


@st.composite
def samples(draw: st.DrawFn) -> list[tuple[float, float]]:
    """(gap, value) pairs: a random start, a pattern repeated (a flap when it alternates),
    then a steady tail long enough for flapping to settle."""
    sample = st.tuples(GAPS, VALUES)
    start = draw(st.lists(sample, max_size=20))
    pattern = draw(st.lists(sample, min_size=1, max_size=4)) * draw(st.integers(0, 12))
    tail = [draw(sample)] * draw(st.integers(0, 30))
    return [*start, *pattern, *tail] or [draw(sample)]


@st.composite
def threshold_rules(draw: st.DrawFn) -> Rule:
    """A threshold rule, or an X-within-Y one; with or without `for`, clear, hold-down."""
    checks = draw(st.sampled_from([0, 0, 3, 5, 10]))
    # A clear with X-within-Y could hold while the window still counts failures; the oracle
    # keeps the clear and the trigger exclusive, as sane rules do.
    clear = None if checks else draw(st.sampled_from([None, compile_condition("value < 80")]))
    return Rule(
        name="disk_full",
        metric="disk_used_percent",
        condition=compile_condition("value > 90"),
        for_seconds=draw(st.sampled_from([0.0, 30.0, 120.0])),
        clear=clear,
        critical=draw(st.sampled_from([None, compile_condition("value > 97")])),
        keep_firing_for=draw(st.sampled_from([0.0, 60.0, 120.0])),
        times=draw(st.integers(1, checks)) if checks else 0,
        checks=checks,
        flap_detection=draw(st.booleans()),
    )


@dataclass
class Oracle:
    """What the rule says from the raw samples alone: since when the trigger has been active
    and since when the clear has held (None: not now), and the flap state of the outcomes."""

    rule: Rule
    outcomes: tuple[bool, ...] = ()
    active_since: float | None = None
    clear_since: float | None = None
    flap: FlapState = field(default_factory=FlapState)

    def see(self, now: float, value: float) -> None:
        held = value > 90
        self.outcomes = (*self.outcomes, held)[-max(1, self.rule.checks) :]
        failures = sum(self.outcomes)
        active = failures >= self.rule.times if self.rule.checks else held
        if self.rule.clear is not None:
            clearing = value < 80
        else:
            clearing = failures == 0 if self.rule.checks else not held
        self.active_since = _since(self.active_since, now, active)
        self.clear_since = _since(self.clear_since, now, clearing)
        if self.rule.flap_detection:
            self.flap = observe(self.flap, active)

    def fires(self, now: float, was_firing: bool) -> bool:
        since = self.active_since
        return not was_firing and since is not None and now - since >= self.rule.for_seconds

    def resolves(self, now: float, was_firing: bool) -> bool:
        since = self.clear_since
        return was_firing and since is not None and now - since >= self.rule.keep_firing_for

    def severity(self, value: float) -> Severity:
        critical = self.rule.critical is not None and value > 97
        return Severity.CRITICAL if critical else self.rule.severity


def _since(since: float | None, now: float, holds: bool) -> float | None:
    """When an unbroken run of `holds` began: kept while it holds, `now` when it starts."""
    if not holds:
        return None
    return now if since is None else since


def sample(value: float, now: float) -> Sample:
    return Sample("disk_used_percent", value, now, {"mountpoint": "/"})


FLAPPING = Rule(
    name="disk_full",
    metric="disk_used_percent",
    condition=compile_condition("value > 90"),
)
FLAPS = [(60.0, 50.0), (60.0, 92.0)] * 6


@PURE
@given(threshold_rules(), samples())
@example(FLAPPING, [*FLAPS, *[(60.0, 92.0)] * 25])  # settles while firing: no transition
@example(FLAPPING, [*FLAPS, *[(60.0, 50.0)] * 25])  # settles while fine: the incident may close
def test_no_transition_without_its_condition(rule: Rule, steps: list[tuple[float, float]]) -> None:
    oracle, state, now = Oracle(rule), None, T0
    for gap, value in steps:
        now += gap
        oracle.see(now, value)
        prior = state
        was_firing = prior is not None and prior.phase is Phase.FIRING
        result = evaluate(rule, prior, sample(value, now), now)
        state = result.state
        fires, resolves = oracle.fires(now, was_firing), oracle.resolves(now, was_firing)
        settles = not was_firing and not fires and bool(prior and prior.flapping)
        settles = settles and not oracle.flap.flapping
        kind = result.transition.kind if result.transition else None
        assert (kind is TransitionKind.FIRED) == fires, (now - T0, value)
        assert (kind is TransitionKind.RESOLVED) == (resolves or settles), (now - T0, value)
        assert (state.phase is Phase.FIRING) == (fires or (was_firing and not resolves))
        assert state.flapping == oracle.flap.flapping
        if state.flapping:
            event("flapping" + (" while firing" if state.phase is Phase.FIRING else ""))
        if state.phase is Phase.FIRING:
            assert state.severity == oracle.severity(value)
            changed = was_firing and prior is not None and prior.severity != state.severity
            assert (kind is TransitionKind.SEVERITY_CHANGED) == changed
    assert state is not None
    _expiry_resolves_only_what_fires(rule, state, now + 3600)


def _expiry_resolves_only_what_fires(rule: Rule, state: AlertState, now: float) -> None:
    """A series that stops reporting resolves a firing alert, settles a flapping one (whose
    incident may be held open), and lets a pending one lapse: nothing else."""
    result = expire(rule, state, now)
    resolved = result.transition is not None and result.transition.kind is TransitionKind.RESOLVED
    assert resolved == (state.phase is Phase.FIRING or state.flapping)
    assert result.state.phase not in (Phase.FIRING, Phase.PENDING)
    assert not result.state.flapping


@PURE
@given(
    st.sampled_from([0.0, 60.0, 300.0]),
    st.floats(0.0, 90.0),
    st.lists(
        st.tuples(st.sampled_from([10.0, 30.0, 60.0, 120.0]), st.sampled_from([-5, -1, 0, 1, 3])),
        min_size=1,
        max_size=80,
    ),
)
def test_a_prediction_fires_only_after_it_was_predicted_for_for(
    for_seconds: float, start: float, steps: list[tuple[float, int]]
) -> None:
    rule = Rule(
        name="disk_will_fill",
        metric="disk_used_percent",
        condition=compile_condition("value > 80 and eta < 1800"),
        for_seconds=for_seconds,
        window=1200.0,
        predict=100.0,
    )
    state: AlertState | None = None
    predicted: dict[float, float | None] = {}  # evaluation time -> predicted breach
    now, value = T0, start
    for gap, change in steps:
        now, value = now + gap, value + change
        result = evaluate(rule, state, sample(value, now), now)
        state, predicted[now] = result.state, result.state.predicted_at
        if state.predicted_at is not None:
            assert state.predicted_at >= now  # a breach is never predicted in the past
        if result.transition is not None and result.transition.kind is TransitionKind.FIRED:
            assert state.active_since is not None and now - state.active_since >= for_seconds
            episode = [at for at in predicted if state.active_since <= at <= now]
            # Every evaluation of the episode predicted the breach within the horizon.
            assert all((p := predicted[at]) is not None and p - at < 1800 for at in episode)


# --- the engine and its store ------------------------------------------------------------

HOSTS = ("web01", "web02")
SERVICES = ("shop", "api")
SERIES = (
    *(("ping_up", {"host": host}) for host in HOSTS),
    *(("http_up", {"host": host, "service": s}) for host in HOSTS for s in SERVICES),
)
MATCHERS = ('host="web01"', 'service="shop"', 'rule="service_down"', 'host="web02"')
SETTINGS = EngineSettings(
    hostname="mon01",
    reopen_within=900.0,
    backend="builtin",
    helpdesk_emails=("helpdesk@example.com",),
    email_enabled=True,
)
# Every ten minutes for five, on web02: windows open and close all along a sequence.
WINDOW = MaintenanceWindow(
    name="churn", cron="*/10 * * * *", duration=300.0, matchers=(parse_matcher('host="web02"'),)
)


@st.composite
def engine_rules(draw: st.DrawFn) -> tuple[Rule, ...]:
    checks = draw(st.sampled_from([0, 0, 4]))
    host = Rule(
        name="host_down",
        metric="ping_up",
        condition=compile_condition("value == 0"),
        for_seconds=draw(st.sampled_from([0.0, 60.0])),
        keep_firing_for=draw(st.sampled_from([0.0, 120.0])),
        severity=Severity.CRITICAL,
    )
    service = Rule(
        name="service_down",
        metric="http_up",
        condition=compile_condition("value < 1"),  # 0.5: degraded, a warning
        critical=compile_condition("value == 0"),
        for_seconds=draw(st.sampled_from([0.0, 60.0, 120.0])),
        keep_firing_for=draw(st.sampled_from([0.0, 120.0])),
        times=2 if checks else 0,
        checks=checks,
        flap_detection=draw(st.booleans()),
        depends_on=("host_down",) if draw(st.booleans()) else (),
        depends_match=("host",),
        group_by=draw(st.sampled_from([None, ("host",)])),
        group_wait=draw(st.sampled_from([0.0, 60.0])),
    )
    return host, service


@dataclass(frozen=True)
class Step:
    gap: float
    values: tuple[float | None, ...]  # per series; None: no sample this time (it may go stale)
    silence: tuple[str, float, float] | None  # matcher, starts after, lasts


STEP = st.builds(
    Step,
    gap=st.sampled_from([30.0, 60.0, 60.0, 120.0, 400.0]),
    values=st.tuples(*[st.sampled_from([0.0, 0.5, 1.0, 1.0, None]) for _ in SERIES]),
    silence=st.none()
    | st.tuples(
        st.sampled_from(MATCHERS),
        st.sampled_from([0.0, 60.0]),
        st.sampled_from([60.0, 300.0, 1800.0]),
    ),
)


@st.composite
def sequences(draw: st.DrawFn) -> list[Step]:
    """A random start, then a pattern repeated: flapping, and silences again and again."""
    start = draw(st.lists(STEP, max_size=15))
    pattern = draw(st.lists(STEP, min_size=1, max_size=3)) * draw(st.integers(0, 10))
    return [*start, *pattern] or [draw(STEP)]


@dataclass
class Rig:
    store: Store
    engine: Engine

    def rows(self, sql: str, *params: Any) -> list[Any]:
        return self.store.query(sql, params)

    def step(self, now: float, values: tuple[float | None, ...]) -> None:
        samples = [
            Sample(metric, value, now, dict(labels))
            for (metric, labels), value in zip(SERIES, values, strict=True)
            if value is not None
        ]
        self.engine.process(samples, now)
        self.engine.tick(now)

    def silence(self, now: float, matcher: str, after: float, lasts: float) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO silence (matchers, starts_at, ends_at, author, comment, created_at)"
                " VALUES (?,?,?,?,?,?)",
                (json.dumps([matcher]), now + after, now + after + lasts, "ana", "test", now),
            )
        self.engine.load_silences(now)  # what the daemon's next tick, a second later, does


def make_rig(rules: tuple[Rule, ...], windows: bool) -> Rig:
    # An in-memory database: the same SQLite, constraints and partial index, without fsyncs.
    store = Store(":memory:")
    settings_ = EngineSettings(**{**SETTINGS.__dict__, "maintenance": (WINDOW,) if windows else ()})
    return Rig(store, Engine(store, rules, settings_, Metrics(), snapshot=dict))


def play(rig: Rig, steps: list[Step]) -> float:
    now = T0
    for step in steps:
        now += step.gap
        if step.silence is not None:
            rig.silence(now, *step.silence)
        rig.step(now, step.values)
        assert_invariants(rig)
    return now


def recover(rig: Rig, now: float) -> float:
    """Every series healthy, every minute, long enough for any hold-down and flapping to end."""
    for _ in range(45):
        now += 60.0
        rig.step(now, tuple(1.0 for _ in SERIES))
    return now


def assert_invariants(rig: Rig) -> None:
    doubles = rig.rows(
        "SELECT fingerprint FROM incident WHERE status = 'open'"
        " GROUP BY fingerprint HAVING COUNT(*) > 1"
    )
    assert doubles == [], "two open incidents for one key"
    alerts = rig.engine.alerts
    for fp, alert in alerts.items():
        if alert.phase is Phase.FIRING:
            assert _open_membership(rig, fp), f"firing alert {alert.labels} has no open incident"
    for incident in rig.rows("SELECT * FROM incident WHERE status = 'open'"):
        members = rig.rows(
            "SELECT fingerprint FROM incident_alert WHERE incident_id = ? AND status = 'firing'",
            incident["id"],
        )
        assert any(_has_a_problem(alerts.get(m["fingerprint"])) for m in members), (
            f"open incident {incident['id']} without a firing or flapping alert"
        )
    _assert_no_update_before_its_ticket(rig)
    _assert_no_mail_while_muted(rig)


def _open_membership(rig: Rig, fp: str) -> bool:
    return bool(
        rig.rows(
            "SELECT 1 FROM incident_alert ia JOIN incident i ON i.id = ia.incident_id"
            " WHERE ia.fingerprint = ? AND ia.status = 'firing' AND i.status = 'open'",
            fp,
        )
    )


def _has_a_problem(alert: AlertState | None) -> bool:
    return alert is not None and (alert.phase is Phase.FIRING or alert.flapping)


def _assert_no_update_before_its_ticket(rig: Rig) -> None:
    """A comment, resolve or reopen goes to a ticket whose creation was asked before it."""
    created: set[int] = set()
    for row in rig.rows("SELECT id, op, incident_id FROM outbox ORDER BY id"):
        if row["op"] == "ticket.create":
            created.add(row["incident_id"])
        elif row["op"].startswith("ticket."):
            assert row["incident_id"] in created, f"{row['op']} of a ticket never created"


def _assert_no_mail_while_muted(rig: Rig) -> None:
    """No e-mail about an alert that a silence or maintenance window selected at the time."""
    silences = [silence_from_row(row) for row in rig.rows("SELECT * FROM silence")]
    windows = rig.engine.settings.maintenance
    for row in rig.rows("SELECT payload, created_at FROM outbox WHERE op = 'email.send'"):
        alert = json.loads(row["payload"])["context"]["alert"]
        labels = {**alert["labels"], "rule": alert["rule"]}
        mute = muted(labels, silences, windows, row["created_at"])
        assert mute is None, f"mail about {labels} while muted by {mute}"


def ticket_ops(rig: Rig) -> dict[int, list[str]]:
    ops: dict[int, list[str]] = {}
    for row in rig.rows(
        "SELECT op, incident_id FROM outbox WHERE op IN"
        " ('ticket.create', 'ticket.reopen', 'ticket.resolve') ORDER BY id"
    ):
        ops.setdefault(row["incident_id"], []).append(row["op"])
    return ops


@ENGINE
@given(engine_rules(), st.booleans(), sequences())
def test_one_open_incident_per_key_and_none_without_a_problem(
    rules: tuple[Rule, ...], windows: bool, steps: list[Step]
) -> None:
    rig = make_rig(rules, windows)
    try:
        play(rig, steps)  # the invariants are checked after every step
    finally:
        rig.store.close()


@ENGINE
@given(engine_rules(), st.booleans(), sequences())
def test_series_that_stop_reporting_leave_no_incident_open(
    rules: tuple[Rule, ...], windows: bool, steps: list[Step]
) -> None:
    rig = make_rig(rules, windows)
    try:
        now = play(rig, steps)
        for _ in range(20):  # the probes fall silent: only the daemon's ticks go on
            now += 60.0
            rig.engine.tick(now)
            assert_invariants(rig)
        assert rig.rows("SELECT id FROM incident WHERE status = 'open'") == []
        for incident, ops in ticket_ops(rig).items():
            assert ops[-1] == "ticket.resolve", (incident, ops)
    finally:
        rig.store.close()


@ENGINE
@given(engine_rules(), st.booleans(), sequences())
def test_a_silence_never_prevents_resolution(
    rules: tuple[Rule, ...], windows: bool, steps: list[Step]
) -> None:
    rig = make_rig(rules, windows)
    try:
        now = play(rig, steps)
        for row in rig.rows("SELECT DISTINCT kind FROM event"):
            event(row["kind"])  # how much of the lifecycle the examples reach
        # The recovery happens whatever silence is still running (some last past the end).
        rig.silence(now, 'host="web01"', 0.0, 3600.0)
        recover(rig, now)
        assert rig.rows("SELECT id FROM incident WHERE status = 'open'") == []
        for incident, ops in ticket_ops(rig).items():
            assert ops[0] == "ticket.create", (incident, ops)
            assert ops[-1] == "ticket.resolve", (incident, ops)
    finally:
        rig.store.close()
