"""When will it be fixed? An honest estimate from how long the same problem took before.

Pure: the durations of past incidents (seconds from open to resolve) are passed in.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# Below this many incidents of the same rule and target, the rule's whole history is used
# when it has more.
TARGET_MIN_SAMPLES = 3
# An estimate "changed materially" when it moved by at least this much, or by a quarter of
# the time that was still to go.
MATERIAL_SHIFT = 900.0


@dataclass(frozen=True)
class Eta:
    expected_at: float  # epoch seconds: opened_at + the typical duration
    median: float  # seconds from open to resolve, typical
    low: float  # 25th percentile (seconds)
    high: float  # 75th percentile (seconds)
    samples: int  # how many past incidents the figures come from
    basis: str  # "target" (same rule and target) | "rule" (same rule, any target)
    # The typical time had already passed: the figures come from the past incidents that
    # lasted at least as long as this one has so far.
    overdue: bool = False


def estimate(
    same_target: Sequence[float], same_rule: Sequence[float], opened_at: float, now: float
) -> Eta | None:
    """The expected time of the fix, or None when history cannot tell ("unknown yet").

    Uses `same_target` when it has TARGET_MIN_SAMPLES durations or at least as many as
    `same_rule`, else `same_rule`. When `now` is past opened_at + median, only durations
    longer than the time elapsed so far count (overdue=True); None when there are none.
    """
    durations, basis = _chosen_history(_usable(same_target), _usable(same_rule))
    if not durations:
        return None
    typical = _figures(durations, opened_at, basis, overdue=False)
    if now <= typical.expected_at:
        return typical
    elapsed = now - opened_at
    # Those that lasted longer than this one so far are the only ones still telling.
    longer = [duration for duration in durations if duration > elapsed]
    if not longer:
        return None
    return _figures(longer, opened_at, basis, overdue=True)


def changed_materially(announced_at: float | None, current_at: float | None, now: float) -> bool:
    """Whether users must hear of a new estimate: it appeared, moved by at least
    max(MATERIAL_SHIFT, a quarter of the time from `now` to the announced time), or vanished
    (no past incident lasted this long) while the announced time is MATERIAL_SHIFT past."""
    if announced_at is None:
        return current_at is not None
    if current_at is None:
        # A fix a few minutes late is no news; one well past its time is.
        return now - announced_at >= MATERIAL_SHIFT
    # A far-off fix may drift by minutes unnoticed; a near one may not.
    threshold = max(MATERIAL_SHIFT, (announced_at - now) / 4)
    return abs(current_at - announced_at) >= threshold


def _usable(durations: Sequence[float]) -> list[float]:
    """The durations that can be real: finite and not negative (clock jumps, bad rows)."""
    return [float(d) for d in durations if math.isfinite(d) and d >= 0]


def _chosen_history(same_target: list[float], same_rule: list[float]) -> tuple[list[float], str]:
    if len(same_target) >= TARGET_MIN_SAMPLES or len(same_target) >= len(same_rule):
        return same_target, "target"
    return same_rule, "rule"


def _figures(durations: list[float], opened_at: float, basis: str, overdue: bool) -> Eta:
    median = statistics.median(durations)
    if len(durations) == 1:
        low = high = median
    else:
        low, _, high = statistics.quantiles(durations, n=4, method="inclusive")
    return Eta(opened_at + median, median, low, high, len(durations), basis, overdue)
