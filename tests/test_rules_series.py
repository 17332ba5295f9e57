"""Series history, least-squares trend, time to threshold, counter rate and X-within-Y."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.series import (
    History,
    Recent,
    Trend,
    add,
    count,
    push,
    rate,
    time_to_threshold,
    trend,
)

T0 = 1_760_000_000.0  # an epoch-sized start: precision problems only show at this scale
HOUR = 3600.0


def build(
    samples: Iterable[tuple[float, float]], window: float = 1e6, max_points: int = 1_000_000
) -> History:
    history = History()
    for t, value in samples:
        history = add(history, t, value, window, max_points)
    return history


def line(
    slope: float, start_value: float, seconds: float, every: float
) -> list[tuple[float, float]]:
    steps = int(seconds // every)
    return [(T0 + k * every, start_value + slope * k * every) for k in range(steps + 1)]


# --- history ------------------------------------------------------------------------------


def test_add_keeps_points_within_the_window() -> None:
    history = build([(0.0, 1.0), (50.0, 2.0), (100.0, 3.0), (160.0, 4.0)], window=100.0)
    assert history.points == ((100.0, 3.0), (160.0, 4.0))


def test_point_exactly_window_old_is_kept() -> None:
    history = build([(0.0, 1.0), (100.0, 2.0)], window=100.0)
    assert history.points == ((0.0, 1.0), (100.0, 2.0))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_not_stored_but_time_moves_on(bad: float) -> None:
    history = build([(0.0, 1.0), (10.0, 2.0)], window=100.0)
    after = add(history, 105.0, bad, 100.0, 100)
    assert after.points == ((10.0, 2.0),)


def test_same_timestamp_replaces_the_value() -> None:
    assert build([(10.0, 1.0), (10.0, 7.0)]).points == ((10.0, 7.0),)


def test_clock_stepping_back_drops_the_points_from_the_future() -> None:
    history = build([(0.0, 1.0), (10.0, 2.0), (20.0, 3.0)], window=100.0)
    assert add(history, 15.0, 9.0, 100.0, 100).points == ((0.0, 1.0), (10.0, 2.0), (15.0, 9.0))


def test_add_returns_a_new_history_and_leaves_the_old_one_alone() -> None:
    first = build([(0.0, 1.0)])
    second = add(first, 10.0, 2.0, 100.0, 10)
    assert first.points == ((0.0, 1.0),)
    assert second.points == ((0.0, 1.0), (10.0, 2.0))
    assert second.latest == (10.0, 2.0)
    assert History().latest is None


def test_thinning_keeps_the_newest_point_of_each_bucket() -> None:
    # window 100 s, 10 points: buckets of 10 s on a fixed grid; samples every 2 s.
    history = build([(float(t), float(t)) for t in range(0, 101, 2)], window=100.0, max_points=10)
    assert len(history) == 10
    assert history.points[-1] == (100.0, 100.0)  # the current value is never thinned away
    # Each 10 s bucket keeps its last sample (8, 18, ...); 11 buckets span the window, so the
    # oldest goes.
    assert [t for t, _ in history.points] == [*range(18, 99, 10), 100]


def test_slow_series_is_not_thinned() -> None:
    history = build([(float(t), 1.0) for t in range(0, 100, 20)], window=100.0, max_points=10)
    assert [t for t, _ in history.points] == [0.0, 20.0, 40.0, 60.0, 80.0]


@pytest.mark.parametrize(("window", "max_points"), [(0.0, 10), (-1.0, 10), (10.0, 1)])
def test_add_rejects_a_useless_shape(window: float, max_points: int) -> None:
    with pytest.raises(ValueError, match="window"):
        add(History(), 0.0, 1.0, window, max_points)


samples_strategy = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
        st.floats(allow_nan=True, allow_infinity=True),
    ),
    max_size=200,
)


@given(
    samples=samples_strategy,
    window=st.floats(min_value=0.001, max_value=1e5),
    max_points=st.integers(min_value=2, max_value=50),
)
def test_history_stays_bounded_sorted_and_inside_the_window(
    samples: list[tuple[float, float]], window: float, max_points: int
) -> None:
    history = History()
    for t, value in samples:
        history = add(history, t, value, window, max_points)
        times = [p[0] for p in history.points]
        assert len(times) <= max_points
        assert all(earlier < later for earlier, later in itertools.pairwise(times))
        assert all(t - window <= p <= t for p in times)
        assert all(math.isfinite(v) for _, v in history.points)
        if math.isfinite(value):
            assert history.points[-1] == (t, value)  # the newest sample is always there


# --- trend --------------------------------------------------------------------------------


@pytest.mark.parametrize("every", [60.0, 10.37])
def test_exact_slope_on_a_line_with_epoch_timestamps(every: float) -> None:
    samples = [(t, 2.0 * t + 5.0) for t, _ in line(0.0, 0.0, 6 * HOUR, every)]
    fitted = trend(build(samples))
    assert fitted is not None
    assert fitted.slope == pytest.approx(2.0, rel=1e-9)
    for t, value in samples[:: len(samples) // 7]:
        assert fitted.value_at(t) == pytest.approx(value, rel=1e-12)
    assert fitted.points == len(samples)
    assert fitted.span == pytest.approx(samples[-1][0] - samples[0][0])


def test_exact_small_slope_far_from_the_epoch() -> None:
    # 1e-6 units/s on values near 1e6: what uncentred sums of t² get wrong at this scale.
    samples = [(t, 1e6 + 1e-6 * (t - T0)) for t, _ in line(0.0, 0.0, 24 * HOUR, 60.0)]
    fitted = trend(build(samples))
    assert fitted is not None
    assert fitted.slope == pytest.approx(1e-6, rel=1e-6)


def test_trend_tolerates_noise() -> None:
    noise = random.Random(4)
    samples = [(t, v + noise.gauss(0.0, 2.0)) for t, v in line(0.01, 50.0, 2 * HOUR, 10.0)]
    fitted = trend(build(samples))
    assert fitted is not None
    assert fitted.slope == pytest.approx(0.01, rel=0.05)


def test_trend_needs_two_points_and_a_span() -> None:
    assert trend(History()) is None
    assert trend(build([(T0, 1.0)])) is None
    assert trend(build([(T0, 1.0), (T0 + 10, 2.0)])) is not None
    assert trend(build([(T0, 1.0), (T0 + 10, 2.0)]), min_span=11.0) is None
    assert trend(build([(T0, 1.0), (T0 + 10, 2.0)]), min_span=10.0) is not None
    assert trend(build([(T0, 1.0), (T0 + 10, 2.0)]), min_points=3) is None


def test_flat_series_has_zero_slope() -> None:
    fitted = trend(build(line(0.0, 42.0, HOUR, 60.0)))
    assert fitted is not None
    assert (fitted.slope, fitted.value_at(T0 + 10 * HOUR)) == (0.0, 42.0)


# --- time to threshold --------------------------------------------------------------------

PER_MINUTE = 1.0 / 60.0


def test_disk_filling_at_one_percent_a_minute_from_half_is_full_to_95_in_45_minutes() -> None:
    window, max_points = HOUR, 120  # buckets of 30 s with samples every 10 s: thinning is on
    history = History()
    for k in range(0, 2701, 10):
        now = T0 + k
        history = add(history, now, 50.0 + PER_MINUTE * k, window, max_points)
        fitted = trend(history, min_span=60.0)
        if k < 60:
            assert fitted is None  # less than a minute of data: no prediction yet
            continue
        assert fitted is not None
        left = time_to_threshold(fitted, now, 95.0)
        assert left is not None
        assert now + left == pytest.approx(T0 + 45 * 60, abs=1.0), f"at +{k}s"
    assert left == pytest.approx(0.0, abs=1e-6)


def fitted_line(slope: float, level: float) -> Trend:
    return Trend(slope=slope, level=level, origin=T0, points=10, span=600.0)


@pytest.mark.parametrize(
    ("slope", "level", "threshold", "above", "expected"),
    [
        (0.5, 80.0, 90.0, True, 20.0),  # rising towards a ceiling
        (0.5, 95.0, 90.0, True, 0.0),  # already past it on the line
        (0.5, 90.0, 90.0, True, 0.0),  # exactly on it
        (-0.5, 80.0, 90.0, True, None),  # moving away
        (0.0, 80.0, 90.0, True, None),  # flat
        (0.0, 95.0, 90.0, True, 0.0),  # flat but already past
        (-2.0, 100.0, 10.0, False, 45.0),  # free space falling towards a floor
        (-2.0, 5.0, 10.0, False, 0.0),
        (2.0, 50.0, 10.0, False, None),
    ],
)
def test_time_to_threshold(
    slope: float, level: float, threshold: float, above: bool, expected: float | None
) -> None:
    assert time_to_threshold(fitted_line(slope, level), T0, threshold, above) == expected


def test_time_to_threshold_is_measured_from_now_on_the_fitted_line() -> None:
    assert time_to_threshold(fitted_line(0.5, 80.0), T0 + 10.0, 90.0) == pytest.approx(10.0)


# --- a log rotation: a single sudden drop -------------------------------------------------

GROWTH = 1.0 / HOUR  # 1 % an hour
DROP = 3.0  # log rotation frees 3 %
ROTATION = T0 + 9 * HOUR


def rotating_disk(step: float = 60.0) -> list[tuple[float, float]]:
    samples = []
    for t, value in line(GROWTH, 80.0, 14 * HOUR, step):
        samples.append((t, value - (DROP if t >= ROTATION else 0.0)))
    return samples


def slopes_after_warmup(window: float) -> list[tuple[float, float]]:
    """(now, fitted slope) at each sample once the window is full."""
    history, seen = History(), []
    for t, value in rotating_disk():
        history = add(history, t, value, window, 360)
        fitted = trend(history, min_span=window / 4)
        if t >= T0 + window and fitted is not None:
            seen.append((t, fitted.slope))
    return seen


def test_long_window_keeps_the_direction_through_a_log_rotation() -> None:
    # Growth over 6 h (6 %) exceeds 1.5 x the drop (4.5 %): the fitted line keeps rising
    # whatever the position of the drop in the window, so the prediction never vanishes.
    seen = slopes_after_warmup(6 * HOUR)
    assert all(slope > 0 for _, slope in seen)
    # Worst case, drop in the middle of the window: growth - 1.5 * drop / window.
    worst = min(slope for _, slope in seen)
    assert worst == pytest.approx(GROWTH - 1.5 * DROP / (6 * HOUR), rel=0.05)
    worst_at = min(seen, key=lambda item: item[1])[0]
    assert worst_at == pytest.approx(ROTATION + 3 * HOUR, abs=10 * 60)


def test_short_window_flips_after_a_log_rotation_and_flips_back() -> None:
    # Growth over 1 h (1 %) is less than 1.5 x the drop: right after the rotation the line
    # falls, the prediction vanishes (an alert on it would resolve) and returns one window
    # later (and re-fire): noise on the help desk for a harmless event.
    seen = slopes_after_warmup(HOUR)
    rising = [slope > 0 for _, slope in seen]
    assert rising[0] and rising[-1]
    assert not all(rising)
    flips = sum(1 for before, after in itertools.pairwise(rising) if before != after)
    assert flips == 2
    falling = [t for t, slope in seen if slope <= 0]
    assert falling[0] >= ROTATION and falling[-1] < ROTATION + HOUR


def would_fire(
    samples: list[tuple[float, float]],
    window: float,
    warning: float,
    full: float,
    horizon: float,
    for_seconds: float,
) -> list[float]:
    """Times the documented rule shape fires: level past `warning` AND predicted to reach
    `full` within `horizon`, both held for `for_seconds`."""
    history, since, fired = History(), None, []
    for now, value in samples:
        history = add(history, now, value, window, 360)
        holds = value >= warning and _predicted_within(history, now, full, horizon, window)
        if not holds:
            since = None
            continue
        since = now if since is None else since
        if now - since >= for_seconds and (not fired or fired[-1] < since):
            fired.append(now)
    return fired


def _predicted_within(
    history: History, now: float, full: float, horizon: float, window: float
) -> bool:
    fitted = trend(history, min_span=window / 4)
    left = None if fitted is None else time_to_threshold(fitted, now, full)
    return left is not None and left <= horizon


def copy_then_truncate(base: float) -> Callable[[float], float]:
    """logrotate's copytruncate: the log is copied (+8 % over 4 min), then truncated."""

    def usage(t: float) -> float:
        into = t - ROTATION
        if 0 <= into < 4 * 60:
            return base + 8.0 * into / (4 * 60)
        return base

    return usage


@pytest.mark.parametrize(
    ("window", "warning", "for_seconds", "fires_at_minute"),
    [
        # A 15 min window and prediction alone: a disk "6 h from full" 1.5 min into the copy.
        (15 * 60, 0.0, 0.0, 1.5),
        # The level alone does not help: the copy does push usage past 85 %.
        (15 * 60, 85.0, 0.0, 2.5),
        # `for` does: the prediction holds for 7 min, the level for 1.5 min.
        (15 * 60, 0.0, 600.0, None),
        (15 * 60, 85.0, 600.0, None),
        # So does a long window: 4 min of copying barely tilt an hour of flat usage.
        (HOUR, 0.0, 0.0, None),
        (HOUR, 85.0, 600.0, None),
    ],
)
def test_a_copytruncate_spike_alerts_only_on_a_short_window_without_for(
    window: float, warning: float, for_seconds: float, fires_at_minute: float | None
) -> None:
    usage = copy_then_truncate(80.0)
    samples = [(t, usage(t)) for t, _ in line(0.0, 0.0, 12 * HOUR, 30.0)]
    fired = would_fire(samples, window, warning, 100.0, 6 * HOUR, for_seconds)
    expected = [] if fires_at_minute is None else [ROTATION + fires_at_minute * 60]
    assert fired == expected


def test_rule_shape_still_warns_before_a_steady_fill() -> None:
    samples = line(2.0 / HOUR, 80.0, 12 * HOUR, 60.0)  # reaches 100 % after 10 h
    fired = would_fire(samples, 6 * HOUR, warning=85, full=100.0, horizon=6 * HOUR, for_seconds=600)
    assert len(fired) == 1
    # Level 85 % is reached at 2.5 h, but the disk is then 7.5 h from full: beyond the
    # horizon. At 4 h (88 %) it is 6 h away; held 10 min, it fires 5 h 50 min before full.
    assert fired[0] == pytest.approx(T0 + 4 * HOUR + 600, abs=60)


# --- rate ---------------------------------------------------------------------------------


def test_rate_of_a_steady_counter() -> None:
    history = build([(T0 + k * 10, 1000.0 + 25.0 * k) for k in range(31)])
    assert rate(history, 300.0) == pytest.approx(2.5)


def test_rate_adds_back_the_value_before_a_counter_reset() -> None:
    history = build(
        [(T0, 100.0), (T0 + 10, 200.0), (T0 + 20, 300.0), (T0 + 30, 50.0), (T0 + 40, 150.0)]
    )
    # 100 -> 300 (+200), restart from 0 -> 50 (+50), -> 150 (+100): 350 in 40 s.
    assert rate(history, 60.0) == pytest.approx(350.0 / 40.0)


def test_rate_over_two_resets() -> None:
    history = build([(T0, 5.0), (T0 + 10, 1.0), (T0 + 20, 4.0), (T0 + 30, 2.0)])
    assert rate(history, 60.0) == pytest.approx((1.0 + 3.0 + 2.0) / 30.0)


def test_rate_looks_only_at_the_window_ending_at_the_newest_point() -> None:
    samples = [(T0 + k * 10, 10.0 * k) for k in range(30)]  # 1/s
    samples += [(T0 + 300 + k * 10, 290.0 + 50.0 * k) for k in range(1, 7)]  # then 5/s
    assert rate(build(samples), 60.0) == pytest.approx(5.0)


def test_rate_needs_two_points_in_the_window() -> None:
    assert rate(History(), 60.0) is None
    assert rate(build([(T0, 1.0)]), 60.0) is None
    assert rate(build([(T0, 1.0), (T0 + 100, 2.0)]), 60.0) is None


@given(st.lists(st.floats(min_value=0.0, max_value=1e9), min_size=2, max_size=50))
def test_rate_of_a_counter_is_never_negative(values: list[float]) -> None:
    history = build([(T0 + 10.0 * k, value) for k, value in enumerate(values)])
    found = rate(history, 1e6)
    assert found is not None and found >= 0


# --- X within Y ---------------------------------------------------------------------------


def test_fails_three_times_in_ten_checks() -> None:
    recent = Recent()
    outcomes = [True, False, False, True, False, False, False, False, False, False, True]
    counts = []
    for failed in outcomes:
        recent = push(recent, failed, 10)
        counts.append(count(recent))
    assert counts == [1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]  # the first failure left the window
    assert len(recent.flags) == 10
    assert count(push(recent, True, 10)) == 3


def test_push_is_immutable_and_checks_n() -> None:
    empty = Recent()
    assert push(empty, True, 3).flags == (True,)
    assert empty.flags == ()
    with pytest.raises(ValueError, match="n >= 1"):
        push(empty, True, 0)


@given(st.lists(st.booleans(), max_size=60), st.integers(min_value=1, max_value=20))
def test_recent_counts_the_last_n(flags: list[bool], n: int) -> None:
    recent = Recent()
    for flag in flags:
        recent = push(recent, flag, n)
    assert recent.flags == tuple(flags[-n:])
    assert count(recent) == sum(flags[-n:])
