"""Flap detection: the weighted share of state changes over the last N checks (Icinga 2).

The arithmetic is Icinga 2's (documentation: Advanced Topics, "Check Flapping", and its
`Checkable::UpdateFlappingStatus` since 2.8), the descendant of Nagios's flap detection:

- keep the last 21 check outcomes, i.e. the last 20 transitions between consecutive checks;
- each transition that is a state change counts with a weight rising linearly from the oldest
  slot to the newest: 0.8 + 0.02·i for slot i = 0 (oldest) .. 19 (newest), so the newest
  change weighs 1.18 (the documentation rounds it to 1.15; the code says 0.8 + 0.02·19);
- the flapping percentage is 100 · (sum of the weights of the changes) / 20;
- hysteresis: a checkable that is not flapping starts when the percentage exceeds the high
  threshold (default 30); one that is flapping stays so while it exceeds the low threshold
  (default 25), and stops at or below it.

Icinga 2's own worked example: changes in slots 2, 3, 4, 5, 9, 13, 16 and 19 weigh 7.82, i.e.
39.1 %. Before N outcomes are known the missing transitions count as "no change", as in
Icinga's zero-initialised buffer, so a new alert needs several real changes to flap.

Nagios (and Naemon) use the same scheme with weights 0.75 .. 1.25 and thresholds per object;
this module follows Icinga 2. For N other than 21 the weights still run from 0.8 in steps of
0.4 / (N - 1), which gives exactly Icinga's numbers at N = 21.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CHECKS = 21
DEFAULT_LOW = 25.0
DEFAULT_HIGH = 30.0
_OLDEST_WEIGHT = 0.8
_WEIGHT_RISE = 0.4  # over the whole window: 0.02 per slot with 20 transitions


@dataclass(frozen=True)
class FlapState:
    """Flap detection state of one alert.

    `states` are the last N outcomes, oldest first (True: the problem condition held).
    `changes` counts every state change ever observed by this state, not only those still
    in the window: the flap count of an incident is its value now minus its value when the
    incident opened.
    """

    states: tuple[bool, ...] = ()
    flapping: bool = False
    changes: int = 0


def observe(
    state: FlapState,
    problem: bool,
    n: int = DEFAULT_CHECKS,
    low: float = DEFAULT_LOW,
    high: float = DEFAULT_HIGH,
) -> FlapState:
    """`state` after one more check whose outcome is `problem`."""
    if n < 2 or not 0 <= low <= high <= 100:
        raise ValueError(f"need n >= 2 and 0 <= low <= high <= 100, got {n}, {low}, {high}")
    changed = bool(state.states) and state.states[-1] != problem
    states = (*state.states, problem)[-n:]
    value = _percent(states, n)
    flapping = value > low if state.flapping else value > high
    return FlapState(states, flapping, state.changes + changed)


def percent(state: FlapState, n: int = DEFAULT_CHECKS) -> float:
    """The weighted state-change percentage, in [0, 100) (at most 99 with N = 21)."""
    return _percent(state.states[-n:], n)


def _percent(states: tuple[bool, ...], n: int) -> float:
    slots = n - 1
    step = _WEIGHT_RISE / slots
    # The newest transition takes the newest slot (slots - 1); older ones count down from it.
    newest_first = zip(reversed(states[1:]), reversed(states[:-1]), strict=True)
    weighted = sum(
        _OLDEST_WEIGHT + step * (slots - 1 - age)
        for age, (after, before) in enumerate(newest_first)
        if after != before
    )
    return 100.0 * weighted / slots
