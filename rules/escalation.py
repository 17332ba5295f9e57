"""Escalation policies: which step is due (pure; `now` is passed in).

A policy is an ordered list of steps: after a delay from the episode's start, notify these
targets. Rounds repeat `repeat` more times, `repeat_every` apart. Escalation stops on
acknowledgement or resolution; each step fires once per episode (the monitor records which).
A step limited to business hours waits for the next business-hours instant (weekdays,
hours and holidays in the policy's time zone). Urgency: when the predicted time of impact
comes before the next step's time, that step fires now, so people hear before users are hit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, time


@dataclass(frozen=True)
class BusinessHours:
    weekdays: frozenset[int] = frozenset(range(5))  # 0 = Monday
    start: time = time(9)
    end: time = time(17)
    timezone: str = "UTC"  # IANA name
    # Days off besides weekends: a calendar (e.g. the `holidays` package's) asked per date.
    is_holiday: Callable[[date], bool] = field(default=lambda _day: False, compare=False)


@dataclass(frozen=True)
class Step:
    after: float  # seconds from the episode's start (in the first round)
    targets: tuple[str, ...]  # names the monitor resolves to e-mail addresses or Apprise URLs
    business_hours_only: bool = False


@dataclass(frozen=True)
class Policy:
    name: str
    steps: tuple[Step, ...]
    repeat: int = 0  # further rounds after the first
    repeat_every: float = 0.0  # a round's length; 0: the last step's `after`
    hours: BusinessHours | None = None  # required when a step is business_hours_only
    # Urgency moves at most one step at a time: the next urgent step waits this long after
    # the previous one fired.
    urgent_gap: float = 300.0


@dataclass(frozen=True)
class StepDue:
    index: int  # round * len(steps) + position: the key that makes a step fire once
    step: Step
    round: int
    due_at: float  # when it was due (its scheduled time, or `now` when urgent)
    urgent: bool


def schedule(policy: Policy, started_at: float) -> list[tuple[int, Step, float]]:
    """Every (index, step, nominal time) of the episode, in order, before business hours."""
    raise NotImplementedError


def next_business_instant(hours: BusinessHours, at: float) -> float:
    """The first instant at or after `at` inside business hours (skipping holidays)."""
    raise NotImplementedError


def due(
    policy: Policy,
    started_at: float,
    fired: Mapping[int, float],  # index -> when it fired
    acknowledged: bool,
    open_: bool,
    predicted_at: float | None,
    now: float,
) -> list[StepDue]:
    """The steps to fire now, in order: every unfired step whose time (moved to business hours
    when limited to them) has come; plus, when the predicted impact comes before the next
    unfired step's time, that step, urgent (if it may fire now and the latest fired step fired
    at least `urgent_gap` ago). None once acknowledged or resolved."""
    raise NotImplementedError


def next_step_at(
    policy: Policy, started_at: float, fired: Mapping[int, float], now: float
) -> float | None:
    """When the next unfired step will fire, for display; None when all fired."""
    raise NotImplementedError
