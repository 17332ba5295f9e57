"""When will it be fixed? An honest estimate from how long the same problem took before.

Pure: the durations of past incidents (seconds from open to resolve) are passed in.
"""

from __future__ import annotations

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
    raise NotImplementedError


def changed_materially(announced_at: float | None, current_at: float | None, now: float) -> bool:
    """Whether users must hear of a new estimate: it appeared, vanished, or moved by at least
    max(MATERIAL_SHIFT, a quarter of the time from `now` to the announced time)."""
    raise NotImplementedError
