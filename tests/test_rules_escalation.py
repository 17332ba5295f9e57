"""Escalation: which step is due, to the second, in business hours and ahead of an impact.

Expected instants are written in UTC so that the time-zone arithmetic is checked against
the calendar, not against itself: Rome is UTC+1 in winter and UTC+2 from the last Sunday of
March (29 March 2026) to the last Sunday of October (25 October 2026).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.escalation import (
    BusinessHours,
    Policy,
    Step,
    StepDue,
    due,
    next_business_instant,
    next_step_at,
    schedule,
)


def utc(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


ONCALL, LEAD, MANAGER = Step(0, ("oncall",)), Step(900, ("lead",)), Step(3600, ("manager",))
THREE = Policy("default", (ONCALL, LEAD, MANAGER))
T0 = utc(2026, 1, 14, 10)  # a Wednesday
ROME = BusinessHours(timezone="Europe/Rome")
EASTER_MONDAY = date(2026, 4, 6)
ROME_HOLIDAYS = BusinessHours(timezone="Europe/Rome", is_holiday={EASTER_MONDAY}.__contains__)


def fire(
    policy: Policy,
    now: float,
    fired: Mapping[int, float] | None = None,
    predicted_at: float | None = None,
    started_at: float = T0,
) -> list[tuple[int, float, bool]]:
    steps = due(policy, started_at, fired or {}, False, True, predicted_at, now)
    return [(step.index, step.due_at, step.urgent) for step in steps]


def test_the_schedule_lists_every_step_at_its_delay() -> None:
    assert schedule(THREE, T0) == [(0, ONCALL, T0), (1, LEAD, T0 + 900), (2, MANAGER, T0 + 3600)]


@pytest.mark.parametrize(
    ("now", "fired", "expected"),
    [
        (T0, {}, [(0, T0, False)]),
        (T0 + 899, {0: T0}, []),
        (T0 + 900, {0: T0}, [(1, T0 + 900, False)]),
        (T0 + 901, {0: T0}, [(1, T0 + 900, False)]),  # a late tick still fires it
        (T0 + 3599, {0: T0, 1: T0 + 900}, []),
        (T0 + 3600, {0: T0, 1: T0 + 900}, [(2, T0 + 3600, False)]),
        (T0 + 9999, {0: T0, 1: T0 + 900, 2: T0 + 3600}, []),
        # The daemon was down: everything overdue fires, in order.
        (T0 + 4000, {}, [(0, T0, False), (1, T0 + 900, False), (2, T0 + 3600, False)]),
    ],
)
def test_each_step_fires_at_its_delay_and_once(
    now: float, fired: dict[int, float], expected: list[tuple[int, float, bool]]
) -> None:
    assert fire(THREE, now, fired) == expected


def test_due_reports_the_step_and_its_round() -> None:
    assert due(THREE, T0, {0: T0}, False, True, None, T0 + 900) == [
        StepDue(index=1, step=LEAD, round=0, due_at=T0 + 900, urgent=False)
    ]


@pytest.mark.parametrize(("acknowledged", "open_"), [(True, True), (False, False), (True, False)])
def test_acknowledgement_or_resolution_stops_everything(acknowledged: bool, open_: bool) -> None:
    overdue = T0 + 4000
    assert due(THREE, T0, {}, acknowledged, open_, overdue - 1, overdue) == []


@pytest.mark.parametrize(
    ("now", "fired", "predicted_at", "expected"),
    [
        # Impact predicted before the lead's step: the lead hears now.
        (T0 + 400, {0: T0}, T0 + 600, [(1, T0 + 400, True)]),
        # One at a time: the manager waits urgent_gap (300 s) after the lead.
        (T0 + 500, {0: T0, 1: T0 + 400}, T0 + 600, []),
        (T0 + 699, {0: T0, 1: T0 + 400}, T0 + 600, []),
        (T0 + 700, {0: T0, 1: T0 + 400}, T0 + 600, [(2, T0 + 700, True)]),
        # No prediction, or one after the step's own time, or exactly at it: no hurry.
        (T0 + 400, {0: T0}, None, []),
        (T0 + 400, {0: T0}, T0 + 901, []),
        (T0 + 400, {0: T0}, T0 + 900, []),
        # At its time the step is simply due, not urgent.
        (T0 + 900, {0: T0}, T0 + 600, [(1, T0 + 900, False)]),
    ],
)
def test_a_predicted_impact_brings_the_next_step_forward(
    now: float,
    fired: dict[int, float],
    predicted_at: float | None,
    expected: list[tuple[int, float, bool]],
) -> None:
    assert fire(THREE, now, fired, predicted_at) == expected


def test_urgency_fires_the_first_step_when_none_fired_yet() -> None:
    later = Policy("later", (Step(600, ("oncall",)), Step(1200, ("lead",))))
    assert fire(later, T0 + 10, {}, T0 + 300) == [(0, T0 + 10, True)]


def test_urgency_never_moves_more_than_the_next_step() -> None:
    impact = T0 + 60
    now = T0 + 30
    assert fire(THREE, now, {0: T0 - 600}, impact) == [(1, now, True)]


# A step limited to business hours, 30 minutes after the start.
OFFICE = Policy(
    "office",
    (Step(0, ("oncall",)), Step(1800, ("manager",), business_hours_only=True)),
    hours=ROME,
)


@pytest.mark.parametrize(
    ("started_at", "now", "expected"),
    [
        # Friday 2026-01-16 18:30 in Rome; the manager's step (19:00) waits for Monday 09:00.
        (utc(2026, 1, 16, 17, 30), utc(2026, 1, 16, 18), []),
        (utc(2026, 1, 16, 17, 30), utc(2026, 1, 19, 7, 59, 59), []),
        (utc(2026, 1, 16, 17, 30), utc(2026, 1, 19, 8), [(1, utc(2026, 1, 19, 8), False)]),
        # A Wednesday at 14:00 in Rome: within the hours, at its delay.
        (utc(2026, 1, 14, 13), utc(2026, 1, 14, 13, 30), [(1, utc(2026, 1, 14, 13, 30), False)]),
    ],
)
def test_a_business_hours_step_waits_for_business_hours(
    started_at: float, now: float, expected: list[tuple[int, float, bool]]
) -> None:
    assert fire(OFFICE, now, {0: started_at}, started_at=started_at) == expected


def test_next_step_at_shows_the_business_hours_instant() -> None:
    friday = utc(2026, 1, 16, 17, 30)
    assert next_step_at(OFFICE, friday, {0: friday}, friday + 60) == utc(2026, 1, 19, 8)


def test_urgency_does_not_call_a_business_hours_step_outside_them() -> None:
    friday = utc(2026, 1, 16, 17, 30)
    saturday = utc(2026, 1, 17, 10)
    assert fire(OFFICE, friday + 600, {0: friday}, saturday, started_at=friday) == []


def test_urgency_calls_a_business_hours_step_inside_them() -> None:
    wednesday = utc(2026, 1, 14, 13)  # 14:00 in Rome
    now = wednesday + 300
    assert fire(OFFICE, now, {0: wednesday}, wednesday + 600, wednesday) == [(1, now, True)]


@pytest.mark.parametrize(
    ("hours", "at", "expected"),
    [
        # Friday 19:00 CET -> Monday 09:00 CET.
        (ROME, utc(2026, 1, 16, 18), utc(2026, 1, 19, 8)),
        # Inside: the instant itself; the start is inside, the end is not.
        (ROME, utc(2026, 1, 14, 12, 34, 56), utc(2026, 1, 14, 12, 34, 56)),
        (ROME, utc(2026, 1, 14, 8), utc(2026, 1, 14, 8)),
        (ROME, utc(2026, 1, 14, 15, 59, 59), utc(2026, 1, 14, 15, 59, 59)),
        (ROME, utc(2026, 1, 14, 16), utc(2026, 1, 15, 8)),
        # Early morning: later the same day.
        (ROME, utc(2026, 1, 14, 5), utc(2026, 1, 14, 8)),
        # Friday 19:00 CET before the clocks go forward -> Monday 09:00 CEST, 07:00 UTC.
        (ROME, utc(2026, 3, 27, 18), utc(2026, 3, 30, 7)),
        # Friday 19:00 CEST before Easter Monday -> Tuesday 09:00 CEST.
        (ROME_HOLIDAYS, utc(2026, 4, 3, 17), utc(2026, 4, 7, 7)),
        (ROME, utc(2026, 4, 3, 17), utc(2026, 4, 6, 7)),
        # Friday 19:00 CEST before the clocks go back -> Monday 09:00 CET, 08:00 UTC.
        (ROME, utc(2026, 10, 23, 17), utc(2026, 10, 26, 8)),
    ],
)
def test_next_business_instant(hours: BusinessHours, at: float, expected: float) -> None:
    assert next_business_instant(hours, at) == expected


EVERY_DAY = frozenset(range(7))


@pytest.mark.parametrize(
    ("hours", "at", "expected"),
    [
        # Sunday 29 March: 09:00 is already summer time (07:00 UTC), an hour earlier in UTC
        # than on Saturday.
        (
            BusinessHours(EVERY_DAY, timezone="Europe/Rome"),
            utc(2026, 3, 28, 17),
            utc(2026, 3, 29, 7),
        ),
        # 02:30 does not exist that night: the hours open when the clocks jump to 03:00.
        (
            BusinessHours(EVERY_DAY, time(2, 30), time(4), "Europe/Rome"),
            utc(2026, 3, 28, 22),
            utc(2026, 3, 29, 1),
        ),
        # 02:30 happens twice on 25 October: the first time (CEST) opens.
        (
            BusinessHours(EVERY_DAY, time(2, 30), time(4), "Europe/Rome"),
            utc(2026, 10, 24, 22),
            utc(2026, 10, 25, 0, 30),
        ),
        # 03:00 to 04:00 CET that night: the repeated hour is before it.
        (
            BusinessHours(EVERY_DAY, time(2, 30), time(4), "Europe/Rome"),
            utc(2026, 10, 25, 2, 30),
            utc(2026, 10, 25, 2, 30),
        ),
        # "24:00": open until midnight, not a microsecond before.
        (
            BusinessHours(EVERY_DAY, time(20), time.max, "Europe/Rome"),
            utc(2026, 1, 14, 22, 59, 59),
            utc(2026, 1, 14, 22, 59, 59),
        ),
    ],
)
def test_business_hours_across_a_change_of_clocks(
    hours: BusinessHours, at: float, expected: float
) -> None:
    assert next_business_instant(hours, at) == expected


def test_a_calendar_without_business_days_never_opens() -> None:
    every_day_off = BusinessHours(is_holiday=lambda _day: True)
    assert next_business_instant(every_day_off, T0) == math.inf
    policy = Policy("never", (Step(0, ("a",), business_hours_only=True),), hours=every_day_off)
    assert fire(policy, T0 + 86400 * 30) == []
    assert next_step_at(policy, T0, {}, T0) is None


TWO = (Step(0, ("oncall",)), Step(600, ("lead",)))


def test_repeat_rounds_are_repeat_every_apart() -> None:
    policy = Policy("loud", TWO, repeat=2, repeat_every=1800)
    assert schedule(policy, T0) == [
        (0, TWO[0], T0),
        (1, TWO[1], T0 + 600),
        (2, TWO[0], T0 + 1800),
        (3, TWO[1], T0 + 2400),
        (4, TWO[0], T0 + 3600),
        (5, TWO[1], T0 + 4200),
    ]
    steps = due(policy, T0, {0: T0, 1: T0 + 600}, False, True, None, T0 + 2400)
    assert [(s.index, s.round, s.step, s.due_at) for s in steps] == [
        (2, 1, TWO[0], T0 + 1800),
        (3, 1, TWO[1], T0 + 2400),
    ]


def test_a_round_lasts_the_last_delay_by_default() -> None:
    policy = Policy("loud", TWO, repeat=1)
    assert [(index, at) for index, _, at in schedule(policy, T0)] == [
        (0, T0),
        (1, T0 + 600),
        (2, T0 + 600),
        (3, T0 + 1200),
    ]


@pytest.mark.parametrize(
    ("fired", "now", "expected"),
    [
        ({}, T0 - 10, T0),
        ({0: T0}, T0 + 10, T0 + 900),
        ({0: T0}, T0 + 1000, T0 + 1000),  # overdue: it fires at the next tick
        ({0: T0, 1: T0 + 900, 2: T0 + 3600}, T0 + 4000, None),
    ],
)
def test_next_step_at(fired: dict[int, float], now: float, expected: float | None) -> None:
    assert next_step_at(THREE, T0, fired, now) == expected


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Policy("p", ()), "at least one step"),
        (lambda: Policy("p", (Step(-1, ("a",)),)), "negative"),
        (lambda: Policy("p", TWO, repeat=-1), "negative"),
        (lambda: Policy("p", TWO, repeat_every=-1), "negative"),
        (lambda: Policy("p", TWO, urgent_gap=-1), "negative"),
        (lambda: Policy("p", (Step(0, ("a",)),), repeat=2), "repeat"),
        (lambda: Policy("p", (Step(0, ("a",), business_hours_only=True),)), "business hours"),
        (lambda: Policy("p", TWO, hours=BusinessHours(frozenset())), "business days"),
        (lambda: Policy("p", TWO, hours=BusinessHours(frozenset({7}))), "business days"),
        (lambda: Policy("p", TWO, hours=BusinessHours(start=time(17), end=time(9))), "start"),
        (lambda: Policy("p", TWO, hours=BusinessHours(timezone="Europe/Nowhere")), "time zone"),
    ],
)
def test_invalid_policies_are_refused(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_a_single_step_at_zero_may_repeat_with_repeat_every() -> None:
    policy = Policy("p", (Step(0, ("a",)),), repeat=1, repeat_every=60)
    assert [at for _, _, at in schedule(policy, T0)] == [T0, T0 + 60]


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    afters = draw(st.lists(st.integers(0, 7200), min_size=1, max_size=4))
    limited = draw(st.lists(st.booleans(), min_size=len(afters), max_size=len(afters)))
    pairs = enumerate(zip(afters, limited, strict=True))
    steps = tuple(Step(float(after), (f"t{n}",), bh) for n, (after, bh) in pairs)
    repeat_every = draw(st.sampled_from([0, 300, 3600]))
    repeat = draw(st.integers(0, 2)) if repeat_every or max(afters) else 0
    return Policy("p", steps, repeat, float(repeat_every), ROME, float(draw(st.integers(0, 900))))


@given(
    policies(),
    st.lists(st.integers(0, 3 * 86400), min_size=1, max_size=12),
    st.one_of(st.none(), st.integers(0, 86400)),
)
def test_ticks_fire_each_step_once_and_never_early_unless_urgent(
    policy: Policy, ticks: list[int], predicted: int | None
) -> None:
    started_at = utc(2026, 3, 27, 15)  # a Friday afternoon before a change of clocks
    predicted_at = None if predicted is None else started_at + predicted
    fired: dict[int, float] = {}
    for tick in sorted(ticks):
        now = started_at + tick
        steps = due(policy, started_at, fired, False, True, predicted_at, now)
        assert not {step.index for step in steps} & fired.keys()
        assert len({step.index for step in steps}) == len(steps)
        assert sum(step.urgent for step in steps) <= 1
        for step in steps:
            assert step.due_at <= now
            assert step.urgent or step.due_at >= started_at + step.step.after
            assert (
                step.urgent
                or not step.step.business_hours_only
                or (next_business_instant(ROME, step.due_at) == step.due_at)
            )
            fired[step.index] = now
