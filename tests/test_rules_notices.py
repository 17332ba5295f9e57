"""User notices: the whole story of an incident as one audience hears it, tick by tick.

`tell` plays the monitor: it asks `plan` at each tick and records what was sent the way the
`notice` table does, so a table of ticks reads as the audience's inbox.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.notices import (
    PHASE_ORDER,
    Audience,
    Cadence,
    IncidentFacts,
    NoticeDue,
    NoticeKind,
    Occurrence,
    Sent,
    affected,
    current_phase,
    plan,
    plan_maintenance,
)

T0 = 1_800_000_000.0
HOUR = 3600.0
CADENCE = Cadence(update_every=HOUR, monitor_for=1800)
OPEN = IncidentFacts(
    open=True, opened_at=T0, speaks_at=T0 + 300, resolved_at=None, acknowledged=False, eta_at=None
)

INV, IDE, UPD = NoticeKind.INVESTIGATING, NoticeKind.IDENTIFIED, NoticeKind.UPDATE
MON, RES = NoticeKind.MONITORING, NoticeKind.RESOLVED


def record(sent: Sent, notice: NoticeDue, facts: IncidentFacts, now: float) -> Sent:
    if notice.kind is UPD:
        return Sent(sent.last_phase, now, sent.updates + 1, facts.eta_at)
    return Sent(notice.kind, now, sent.updates, facts.eta_at)


Tick = tuple[float, dict[str, Any]]  # seconds after T0, the facts that changed by then


def tell(
    ticks: Sequence[Tick], cadence: Cadence = CADENCE, facts: IncidentFacts = OPEN
) -> list[tuple[float, NoticeKind, int, str, float | None]]:
    """Every notice the audience got: (seconds after T0, kind, seq, reason, next update in s)."""
    sent, inbox = Sent(), []
    for offset, changes in ticks:
        facts = dataclasses.replace(facts, **changes)
        now = T0 + offset
        notices = plan(facts, sent, cadence, now)
        assert len(notices) <= 1
        for notice in notices:
            after = None if notice.next_update_at is None else notice.next_update_at - T0
            inbox.append((offset, notice.kind, notice.seq, notice.reason, after))
            sent = record(sent, notice, facts, now)
    return inbox


def test_the_whole_story_of_an_incident() -> None:
    ticks: list[Tick] = [
        (0, {}),
        (299, {}),  # group_wait: nobody hears before speaks_at
        (300, {}),
        (301, {}),
        (1000, {"acknowledged": True}),
        (1001, {}),
        (4599, {}),
        (4600, {}),  # an hour after the identified notice
        (5000, {"eta_at": T0 + 20000}),  # an estimate appeared
        (5100, {"eta_at": T0 + 20000 + 899}),  # moved, but not materially
        (8599, {}),
        (8600, {}),
        (9000, {"open": False, "resolved_at": T0 + 9000}),
        (10799, {}),
        (10800, {}),  # held for monitor_for
        (20000, {}),
    ]
    assert tell(ticks) == [
        (300, INV, 0, "investigating", 3900),
        (1000, IDE, 0, "identified", 4600),
        (4600, UPD, 1, "cadence", 8200),
        (5000, UPD, 2, "eta", 8600),
        (8600, UPD, 3, "cadence", 12200),
        (9000, MON, 0, "monitoring", None),
        (10800, RES, 0, "resolved", None),
    ]


def test_acknowledged_before_anyone_heard_starts_at_identified() -> None:
    assert tell([(300, {"acknowledged": True}), (400, {})]) == [(300, IDE, 0, "identified", 3900)]


def test_never_told_and_resolved_is_nothing() -> None:
    ticks: list[Tick] = [
        (0, {}),
        (200, {"open": False, "resolved_at": T0 + 200}),
        (300, {}),
        (2000, {}),
        (9000, {}),
    ]
    assert tell(ticks) == []


def test_without_monitoring_the_fix_is_announced_at_once() -> None:
    ticks: list[Tick] = [(300, {}), (900, {"open": False, "resolved_at": T0 + 900}), (901, {})]
    assert tell(ticks, Cadence(HOUR, monitor_for=0)) == [
        (300, INV, 0, "investigating", 3900),
        (900, RES, 0, "resolved", None),
    ]


def test_a_monitoring_period_missed_entirely_goes_straight_to_resolved() -> None:
    # The daemon was down during the whole monitoring period: "monitoring" is stale news.
    ticks: list[Tick] = [(300, {}), (5000, {"open": False, "resolved_at": T0 + 900})]
    assert tell(ticks) == [(300, INV, 0, "investigating", 3900), (5000, RES, 0, "resolved", None)]


def test_a_relapse_continues_the_story_with_an_update() -> None:
    relapse = dataclasses.replace(OPEN, relapse=True)
    ticks: list[Tick] = [
        (0, {}),
        (300, {}),  # the relapse waits for group_wait like any first notice
        (301, {}),
        (600, {"acknowledged": True}),  # identified is where the story already is
        (3899, {}),
        (3900, {}),
        (5000, {"open": False, "resolved_at": T0 + 5000}),
        (6800, {}),
    ]
    assert tell(ticks, facts=relapse) == [
        (300, UPD, 1, "relapse", 3900),
        (3900, UPD, 2, "cadence", 7500),
        (5000, MON, 0, "monitoring", None),
        (6800, RES, 0, "resolved", None),
    ]


def test_a_relapse_gone_before_anyone_heard_still_ends_with_resolved() -> None:
    # The previous episode left the audience at "monitoring": they hear it is over, once.
    relapse = dataclasses.replace(OPEN, relapse=True)
    ticks: list[Tick] = [
        (100, {"open": False, "resolved_at": T0 + 100}),
        (1899, {}),
        (1900, {}),
        (5000, {}),
    ]
    assert tell(ticks, facts=relapse) == [(1900, RES, 0, "resolved", None)]


def test_phases_never_go_back() -> None:
    # Open again in an episode that already said "monitoring": no "identified" any more.
    facts = dataclasses.replace(OPEN, acknowledged=True)
    sent = Sent(MON, T0 + 1000, 2, None)
    assert plan(facts, sent, CADENCE, T0 + 1001) == []
    assert plan(facts, sent, CADENCE, T0 + 1000 + HOUR) == [
        NoticeDue(UPD, 3, "cadence", T0 + 1000 + 2 * HOUR)
    ]


@pytest.mark.parametrize(
    ("announced", "current", "reason"),
    [
        (None, T0 + HOUR, "eta"),  # appeared
        (T0 + HOUR, None, None),  # unknown now, but the announced time is still ahead
        (T0 - 900, None, "eta"),  # unknown, 15 min past the announced time: taking longer
        (T0 + HOUR, T0 + HOUR + 900, "eta"),
        (T0 + HOUR, T0 + HOUR + 899, None),
        (T0 + HOUR, T0 + HOUR, None),
        (None, None, None),
    ],
)
def test_an_update_when_the_estimate_moves(
    announced: float | None, current: float | None, reason: str | None
) -> None:
    facts = dataclasses.replace(OPEN, eta_at=current)
    notices = plan(facts, Sent(INV, T0 + 300, 0, announced), CADENCE, T0 + 600)
    assert [n.reason for n in notices] == ([] if reason is None else [reason])


def test_no_estimate_news_before_the_first_notice() -> None:
    facts = dataclasses.replace(OPEN, eta_at=T0 + HOUR)
    assert plan(facts, Sent(), CADENCE, T0 + 100) == []
    assert plan(facts, Sent(), CADENCE, T0 + 300) == [
        NoticeDue(INV, 0, "investigating", T0 + 300 + HOUR)
    ]


def test_without_a_cadence_only_news_is_sent() -> None:
    quiet = Cadence(update_every=0)
    assert plan(OPEN, Sent(), quiet, T0 + 300) == [NoticeDue(INV, 0, "investigating", None)]
    assert plan(OPEN, Sent(INV, T0 + 300), quiet, T0 + 86400) == []


@pytest.mark.parametrize(
    ("changes", "offset", "phase"),
    [
        ({}, 0, INV),
        ({"acknowledged": True}, 0, IDE),
        ({"open": False, "resolved_at": T0 + 100}, 100, MON),
        ({"open": False, "resolved_at": T0 + 100}, 1899, MON),
        ({"open": False, "resolved_at": T0 + 100}, 1900, RES),
        ({"open": False, "resolved_at": None}, 100, RES),
    ],
)
def test_current_phase(changes: dict[str, Any], offset: float, phase: NoticeKind) -> None:
    assert current_phase(dataclasses.replace(OPEN, **changes), CADENCE, T0 + offset) is phase


def test_without_monitoring_a_recovered_incident_is_resolved() -> None:
    facts = dataclasses.replace(OPEN, open=False, resolved_at=T0)
    assert current_phase(facts, Cadence(monitor_for=0), T0) is RES


WINDOW = Occurrence(starts_at=T0, ends_at=T0 + 2 * HOUR, announce_at=T0 - 86400)
SCH, PRO, COM = NoticeKind.SCHEDULED, NoticeKind.IN_PROGRESS, NoticeKind.COMPLETED


@pytest.mark.parametrize(
    ("last_phase", "offset", "expected"),
    [
        (None, -86401, None),
        (None, -86400, SCH),
        (SCH, -100, None),
        (SCH, 0, PRO),
        (None, 0, PRO),  # announced too late for "scheduled": straight to in progress
        (PRO, 7199, None),
        (PRO, 7200, COM),
        (SCH, 7200, COM),  # the daemon missed the start: completed all the same
        (None, 7200, None),  # nobody heard of it: nothing to complete
        (COM, 9999, None),
    ],
)
def test_maintenance_phases(
    last_phase: NoticeKind | None, offset: float, expected: NoticeKind | None
) -> None:
    assert plan_maintenance(WINDOW, last_phase, T0 + offset) == expected


@pytest.mark.parametrize(
    ("audience", "service", "host", "expected"),
    [
        (Audience("a", services=("mail",)), "mail", "mx1", True),
        (Audience("a", services=("mail",)), "web", "mx1", False),
        (Audience("a", services=("*",)), "web", "mx1", True),
        (Audience("a", services=("*",)), "", "mx1", False),  # a machine problem, no service
        (Audience("a", services=("",)), "", "mx1", False),
        (Audience("a", hosts=("web-*",)), "", "web-3", True),
        (Audience("a", hosts=("web-*",)), "mail", "WEB-3", False),  # patterns are exact
        (Audience("a", hosts=("web-?",)), "", "web-12", False),
        (Audience("a", hosts=("*",)), "", "", False),
        (Audience("a", services=("mail",), hosts=("db1",)), "", "db1", True),
        (Audience("a", services=("mail",), hosts=("db1",)), "mail", "db2", True),
        (Audience("a"), "mail", "db1", False),
    ],
)
def test_affected(audience: Audience, service: str, host: str, expected: bool) -> None:
    assert affected(audience, service, host) is expected


@st.composite
def stories(draw: st.DrawFn) -> tuple[list[float], float | None, float | None, bool]:
    ticks = sorted(draw(st.lists(st.integers(0, 40000), min_size=1, max_size=30)))
    acked = draw(st.one_of(st.none(), st.integers(0, 40000)))
    resolved = draw(st.one_of(st.none(), st.integers(0, 40000)))
    return [float(t) for t in ticks], acked, resolved, draw(st.booleans())


@given(stories(), st.sampled_from([0.0, 1800.0]), st.lists(st.integers(0, 20000), max_size=5))
def test_phases_only_move_forward_and_each_comes_once(
    story: tuple[list[float], float | None, float | None, bool],
    monitor_for: float,
    etas: list[int],
) -> None:
    ticks, acked, resolved, relapse = story
    cadence = Cadence(HOUR, monitor_for)
    sent, phases, updates = Sent(), [], []
    for number, offset in enumerate(ticks):
        gone = resolved is not None and offset >= resolved
        facts = IncidentFacts(
            open=not gone,
            opened_at=T0,
            speaks_at=T0 + 300,
            resolved_at=T0 + resolved if gone and resolved is not None else None,
            acknowledged=acked is not None and offset >= acked,
            eta_at=T0 + etas[number % len(etas)] if etas else None,
            relapse=relapse,
        )
        for notice in plan(facts, sent, cadence, T0 + offset):
            # A relapse's "resolved" closes the previous episode's story, group_wait or not.
            assert offset >= 300 or (relapse and notice.kind is RES)
            if notice.kind is UPD:
                updates.append(notice.seq)
                assert facts.open
            else:
                phases.append(notice.kind)
            sent = record(sent, notice, facts, T0 + offset)
    orders = [PHASE_ORDER[phase] for phase in phases]
    assert orders == sorted(set(orders))
    assert updates == list(range(1, len(updates) + 1))
    if relapse:
        assert INV not in phases
    if phases or updates:
        return
    # Silence needs a reason: not yet speaking, or over before anyone heard.
    first_open = [t for t in ticks if t >= 300 and (resolved is None or t < resolved)]
    assert not first_open
