"""Escalation policies: which step is due (pure; `now` is passed in).

A policy is an ordered list of steps: after a delay from the episode's start, notify these
targets. Rounds repeat `repeat` more times, `repeat_every` apart. Escalation stops on
acknowledgement or resolution; each step fires once per episode (the monitor records which).
A step limited to business hours waits for the next business-hours instant (weekdays,
hours and holidays in the policy's time zone). Urgency: when the predicted time of impact
comes before the next step's time, that step fires now, so people hear before users are hit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# A calendar with no business day within this many days (say, every day a holiday) never opens.
_SEARCH_DAYS = 400


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

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError(f"escalation {self.name!r}: give at least one step")
        if min(self.repeat, self.repeat_every, self.urgent_gap) < 0 or any(
            step.after < 0 for step in self.steps
        ):
            raise ValueError(f"escalation {self.name!r}: delays and repeat cannot be negative")
        if self.repeat > 0 and round_length(self) == 0:
            # Every round would fall on the same instant as the first.
            raise ValueError(
                f"escalation {self.name!r}: repeating needs repeat_every or a step after > 0"
            )
        if self.hours is not None:
            _check_hours(self.name, self.hours)
        elif any(step.business_hours_only for step in self.steps):
            raise ValueError(
                f"escalation {self.name!r}: a business_hours_only step needs business hours"
            )


@dataclass(frozen=True)
class StepDue:
    index: int  # round * len(steps) + position: the key that makes a step fire once
    step: Step
    round: int
    due_at: float  # when it was due (its scheduled time, or `now` when urgent)
    urgent: bool


def schedule(policy: Policy, started_at: float) -> list[tuple[int, Step, float]]:
    """Every (index, step, nominal time) of the episode, in order, before business hours."""
    length, count = round_length(policy), len(policy.steps)
    entries = [
        (number * count + position, step, started_at + number * length + step.after)
        for number in range(policy.repeat + 1)
        for position, step in enumerate(policy.steps)
    ]
    # By time; a repeat_every shorter than the last step interleaves rounds.
    return sorted(entries, key=lambda entry: (entry[2], entry[0]))


def round_length(policy: Policy) -> float:
    """Seconds between the starts of two rounds: repeat_every, or the last step's delay."""
    return policy.repeat_every or max(step.after for step in policy.steps)


def next_business_instant(hours: BusinessHours, at: float) -> float:
    """The first instant at or after `at` inside business hours (skipping holidays)."""
    zone = ZoneInfo(hours.timezone)
    day = datetime.fromtimestamp(at, zone).date()
    for offset in range(_SEARCH_DAYS):
        window = _window(hours, day + timedelta(days=offset), zone)
        if window is not None and at < window[1]:
            return max(at, window[0])
    return math.inf


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
    if acknowledged or not open_:
        return []
    count = len(policy.steps)
    pending = [
        (index, step, _effective(policy, step, nominal))
        for index, step, nominal in schedule(policy, started_at)
        if index not in fired
    ]
    steps = [
        StepDue(index, step, index // count, at, urgent=False)
        for index, step, at in pending
        if at <= now
    ]
    if pending and pending[0][2] > now and _urgent(policy, pending[0], fired, predicted_at, now):
        index, step, _ = pending[0]
        steps.append(StepDue(index, step, index // count, now, urgent=True))
    return steps


def next_step_at(
    policy: Policy, started_at: float, fired: Mapping[int, float], now: float
) -> float | None:
    """When the next unfired step will fire, for display; None when all fired."""
    times = [
        _effective(policy, step, nominal)
        for index, step, nominal in schedule(policy, started_at)
        if index not in fired
    ]
    finite = [at for at in times if math.isfinite(at)]
    # A step already due fires at the next tick: now, not in the past.
    return max(min(finite), now) if finite else None


def _check_hours(policy: str, hours: BusinessHours) -> None:
    if not hours.weekdays or not hours.weekdays <= frozenset(range(7)):
        raise ValueError(f"escalation {policy!r}: business days must be some of 0 (Mon) .. 6")
    if hours.start >= hours.end:
        raise ValueError(f"escalation {policy!r}: business hours must start before they end")
    try:
        ZoneInfo(hours.timezone)
    except (ValueError, ZoneInfoNotFoundError):
        raise ValueError(f"escalation {policy!r}: unknown time zone {hours.timezone!r}") from None


def _effective(policy: Policy, step: Step, nominal: float) -> float:
    """When a step may fire: its nominal time, moved into business hours if limited to them."""
    if step.business_hours_only and policy.hours is not None:
        return next_business_instant(policy.hours, nominal)
    return nominal


def _urgent(
    policy: Policy,
    first_pending: tuple[int, Step, float],
    fired: Mapping[int, float],
    predicted_at: float | None,
    now: float,
) -> bool:
    """Whether the next step must fire now, ahead of its time, to beat the predicted impact."""
    _, step, at = first_pending
    if predicted_at is None or predicted_at >= at:
        return False
    if not _may_fire_at(policy, step, now):
        return False  # urgency does not wake people outside the hours they agreed to
    return not fired or max(fired.values()) <= now - policy.urgent_gap


def _may_fire_at(policy: Policy, step: Step, at: float) -> bool:
    return _effective(policy, step, at) == at


def _window(hours: BusinessHours, day: date, zone: ZoneInfo) -> tuple[float, float] | None:
    """The business hours of one local day as instants, None on a day off."""
    if day.weekday() not in hours.weekdays or hours.is_holiday(day):
        return None
    opens = _instant(datetime.combine(day, hours.start), zone)
    if hours.end == time.max:  # "24:00": up to midnight, not a microsecond before
        closes = _instant(datetime.combine(day + timedelta(days=1), time()), zone)
    else:
        closes = _instant(datetime.combine(day, hours.end), zone)
    return (opens, closes) if opens < closes else None


def _instant(wall: datetime, zone: ZoneInfo) -> float:
    """The first instant whose local time in `zone` is at or after the naive `wall` time.

    On a repeated hour (clocks back) that is its first occurrence; on a skipped hour (clocks
    forward) it is the moment the clocks jump, neither an hour early nor an hour late.
    """
    first = wall.replace(tzinfo=zone).timestamp()
    if _local(first, zone) == wall:
        return first
    # Skipped: fold=1 reads the wall time with the later offset, an instant before the jump.
    before, after = wall.replace(tzinfo=zone, fold=1).timestamp(), first
    while after - before > 1:
        middle = math.floor((before + after) / 2)
        if _local(middle, zone) >= wall:
            after = middle
        else:
            before = middle
    return after


def _local(at: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(at, zone).replace(tzinfo=None)
