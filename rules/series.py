"""The recent history of one series, and what can be predicted from it.

Pure building blocks for prediction, rate-of-change and X-within-Y rules. Every function takes
values and returns new values; nothing reads the clock.

- `History` keeps (timestamp, value) points of one series within a retention `window`, in
  O(max_points) memory whatever the sampling rate (see `add` for the thinning rule).
- `trend` fits a least-squares line; `time_to_threshold` says when that line reaches a level.
- `rate` is the per-second increase of a counter, reset-aware like Prometheus `rate()`.
- `Recent` is the ring of the last N check outcomes behind "fails 3 times in 10 checks".

The rule shape that predicts without crying wolf (what the tests demonstrate):
    level already past a warning AND predicted breach within a horizon AND both sustained
    for a while (`for`), the trend fitted over a long window with a minimum span.
A routine sudden drop of size `d` (log rotation, a cleanup) lowers the fitted slope by at most
1.5·d/window (when it happens mid-window; 6·f·(1-f)·d/window at fraction f of the window). So
the fitted direction survives every such drop when the growth over the window exceeds 1.5·d:
pick the window from the largest routine drop and the slowest growth worth predicting. A short
window flips to "falling" after the drop, the prediction vanishes and comes back one window
later: a resolve and a re-fire, i.e. noise. The level condition keeps a fast but harmless
climb far from the threshold quiet. A short spike (logrotate's copytruncate copying a big log)
makes a 15 min window predict "full within hours" for a few minutes, level past the warning
included; `for` longer than the spike, or a window an order longer than it, keeps it quiet.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter

Point = tuple[float, float]  # (epoch seconds, value)
_time = itemgetter(0)


@dataclass(frozen=True)
class History:
    """Points of one series, sorted by strictly increasing time. Build it with `add`."""

    points: tuple[Point, ...] = ()

    def __len__(self) -> int:
        return len(self.points)

    @property
    def latest(self) -> Point | None:
        return self.points[-1] if self.points else None


def add(history: History, t: float, value: float, window: float, max_points: int) -> History:
    """`history` moved to time `t`, with (t, value) stored when `value` is finite.

    Points older than `t - window` are dropped. Points newer than `t` are dropped too: samples
    of one series arrive in time order, so a later point means the clock stepped back and what
    was stored after `t` cannot be trusted against `now` any more.

    Thinning: time is cut into buckets of `window / max_points` seconds on a fixed grid, and a
    bucket keeps only its newest point (a new point in the bucket of the last point replaces
    it). A series sampled slower than one point per bucket keeps every point; a faster one keeps
    one point per bucket, always including the latest value. The window spans at most
    `max_points + 1` buckets, so the oldest point is dropped when that happens: the history never
    holds more than `max_points` points. NaN and infinities are not stored.
    """
    if window <= 0 or max_points < 2:
        raise ValueError(f"need window > 0 and max_points >= 2, got {window}, {max_points}")
    points = history.points
    kept = points[bisect_left(points, t - window, key=_time) : bisect_right(points, t, key=_time)]
    if not math.isfinite(value):
        return History(kept)
    width = window / max_points
    if kept and math.floor(kept[-1][0] / width) == math.floor(t / width):
        kept = kept[:-1]
    kept = (*kept, (t, value))
    return History(kept[-max_points:])


@dataclass(frozen=True)
class Trend:
    """A least-squares line: value(t) = level + slope · (t - origin).

    The line is anchored at `origin`, the mean timestamp of the fitted points, rather than at
    t = 0: an intercept at the epoch is a difference of two numbers near slope·1.7e9 and keeps
    few significant digits. Use `value_at` for the fitted value at any time.
    """

    slope: float  # units per second
    level: float  # fitted value at `origin`
    origin: float  # epoch seconds
    points: int
    span: float  # seconds between the first and the last fitted point

    def value_at(self, t: float) -> float:
        return self.level + self.slope * (t - self.origin)


def trend(history: History, min_span: float = 0.0, min_points: int = 2) -> Trend | None:
    """The least-squares line through the points, or None when there is too little to fit.

    None with fewer than `min_points` (at least 2) points, or when the points span less than
    `min_span` seconds or no time at all. A `min_span` of about a quarter of the window keeps
    a prediction from resting on the first few samples after a start or a gap.
    """
    points = history.points
    if len(points) < max(2, min_points):
        return None
    span = points[-1][0] - points[0][0]
    if span <= 0 or span < min_span:
        return None
    return _fit(points, span)


def _fit(points: Sequence[Point], span: float) -> Trend:
    # Centring on the mean timestamp keeps the sums small: squares of raw epoch seconds
    # (~3e18) leave no room for the fractions that make the slope. Offsets from the last
    # timestamp are exact (Sterbenz), the mean of the offsets then centres them.
    anchor = points[-1][0]
    offsets = [t - anchor for t, _ in points]
    mean_offset = math.fsum(offsets) / len(points)
    mean_value = math.fsum(v for _, v in points) / len(points)
    centred = [offset - mean_offset for offset in offsets]
    sxx = math.fsum(c * c for c in centred)
    sxy = math.fsum(c * (v - mean_value) for c, (_, v) in zip(centred, points, strict=True))
    return Trend(sxy / sxx, mean_value, anchor + mean_offset, len(points), span)


def time_to_threshold(
    line: Trend, now: float, threshold: float, above: bool = True
) -> float | None:
    """Seconds from `now` until the fitted line breaches `threshold`.

    `above` says which side is the breach: True for "value >= threshold" (disk used), False
    for "value <= threshold" (free bytes). Returns 0 when the line is already past the
    threshold at `now` (the fitted value, not the last raw sample), None when the line is flat
    or moving away from the threshold.
    """
    gap = threshold - line.value_at(now)
    if (gap <= 0) if above else (gap >= 0):
        return 0.0
    if line.slope == 0 or (line.slope > 0) != above:
        return None
    return gap / line.slope


def rate(history: History, window: float) -> float | None:
    """Per-second increase of a counter over the last `window` seconds of `history`.

    Counter-reset aware like Prometheus `rate()`: a drop means the counter restarted from zero,
    so the value before the drop is added back. The window ends at the newest point; the rate
    is the increase between the first and the last point inside it divided by the time between
    them (no extrapolation to the window's edges, unlike Prometheus). None with fewer than two
    points in the window. A stale series keeps its last rate: staleness is a rule of its own.
    Thinning (see `add`) can hide all but the last of several resets within one bucket.
    """
    if not history.points:
        return None
    end = history.points[-1][0]
    inside = [p for p in history.points if p[0] >= end - window]
    if len(inside) < 2 or inside[-1][0] == inside[0][0]:
        return None
    return _increase(inside) / (inside[-1][0] - inside[0][0])


def _increase(points: Sequence[Point]) -> float:
    total = points[-1][1] - points[0][1]
    for (_, before), (_, after) in itertools.pairwise(points):
        if after < before:
            total += before
    return total


@dataclass(frozen=True)
class Recent:
    """The outcomes of the last N checks, oldest first: "fails 3 times in 10 checks".

    Catches intermittent faults that never last long enough for `for`.
    """

    flags: tuple[bool, ...] = ()


def push(recent: Recent, flag: bool, n: int) -> Recent:
    """`recent` with `flag` appended, keeping the last `n` outcomes."""
    if n < 1:
        raise ValueError(f"need n >= 1, got {n}")
    return Recent((*recent.flags, flag)[-n:])


def count(recent: Recent) -> int:
    """How many of the kept outcomes are True."""
    return sum(recent.flags)
