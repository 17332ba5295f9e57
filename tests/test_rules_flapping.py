"""Flap detection with Icinga 2's weighted state-change percentage and hysteresis."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.flapping import FlapState, observe, percent


def run(outcomes: Iterable[bool], **options: float) -> list[FlapState]:
    state, seen = FlapState(), []
    for problem in outcomes:
        state = observe(state, problem, **options)  # type: ignore[arg-type]
        seen.append(state)
    return seen


def with_changes_at(slots: set[int]) -> list[bool]:
    """21 outcomes whose transition i (between check i and i + 1) is a change iff i in slots."""
    outcomes = [False]
    for slot in range(20):
        outcomes.append(outcomes[-1] != (slot in slots))
    return outcomes


ICINGA_EXAMPLE = {2, 3, 4, 5, 9, 13, 16, 19}


def test_icinga_documentation_example_is_39_point_1_percent() -> None:
    # Icinga 2 docs, "Check Flapping": 0.84 + 0.86 + 0.88 + 0.9 + 0.98 + 1.06 + 1.12 + 1.18
    # = 7.82, and 7.82 / 20 * 100 = 39.1 %: flapping, the default high threshold being 30 %.
    last = run(with_changes_at(ICINGA_EXAMPLE))[-1]
    assert percent(last) == pytest.approx(39.1)
    assert last.flapping
    assert last.changes == 8


def test_icinga_example_stops_flapping_below_the_low_threshold_not_the_high_one() -> None:
    # The docs: seven checks without a change bring it below 25 %. Exactly: after four it is
    # 28.2 % (under the high 30 %, yet still flapping: hysteresis), after five 23.7 %.
    outcomes = with_changes_at(ICINGA_EXAMPLE)
    quiet = [outcomes[-1]] * 7
    states = run(outcomes + quiet)[-7:]
    assert [round(percent(s), 1) for s in states] == [38.3, 37.5, 32.8, 28.2, 23.7, 19.3, 18.9]
    assert [s.flapping for s in states] == [True, True, True, True, False, False, False]


@pytest.mark.parametrize("problem", [True, False])
def test_a_steady_series_never_flaps(problem: bool) -> None:
    states = run([problem] * 100)
    assert not any(s.flapping for s in states)
    assert {percent(s) for s in states} == {0.0}
    assert states[-1].changes == 0


def test_alternating_checks_flap_on_the_seventh() -> None:
    # Six changes in the newest slots: 1.18 + 1.16 + ... + 1.08 = 6.78, i.e. 33.9 % > 30 %;
    # five changes were 28.5 %.
    states = run([k % 2 == 1 for k in range(30)])
    assert [s.flapping for s in states[:8]] == [False] * 6 + [True, True]
    assert percent(states[5]) == pytest.approx(28.5)
    assert percent(states[6]) == pytest.approx(33.9)
    assert all(s.flapping for s in states[6:])
    assert percent(states[-1]) == pytest.approx(99.0)  # every slot changed: the maximum


def test_a_single_outage_does_not_flap() -> None:
    states = run([False] * 10 + [True] * 5 + [False] * 30)
    assert not any(s.flapping for s in states)
    # At the recovery the failure is five slots older: (1.18 + 1.08) / 20.
    assert max(percent(s) for s in states) == pytest.approx(11.3)
    assert states[-1].changes == 2


def test_outcomes_older_than_the_window_are_forgotten() -> None:
    states = run([k % 2 == 1 for k in range(21)] + [True] * 21)
    assert len(states[-1].states) == 21
    assert percent(states[-1]) == 0.0
    assert not states[-1].flapping
    assert states[-1].changes == 21  # the running count keeps them: the incident's flap count


def test_a_shorter_window_scales_the_weights() -> None:
    # N = 6: 5 transitions weighted 0.8, 0.88, 0.96, 1.04, 1.12.
    last = run([False, True, True, True, True, False], n=6)[-1]
    assert percent(last, n=6) == pytest.approx(100 * (0.8 + 1.12) / 5)
    assert percent(last, n=6) != percent(last)


def test_observe_returns_a_new_state() -> None:
    first = FlapState()
    second = observe(first, True)
    assert first == FlapState()
    assert second.states == (True,)


@pytest.mark.parametrize(("n", "low", "high"), [(1, 25, 30), (21, 30, 25), (21, -1, 30)])
def test_observe_rejects_nonsense_settings(n: int, low: float, high: float) -> None:
    with pytest.raises(ValueError, match="low <= high"):
        observe(FlapState(), True, n=n, low=low, high=high)


@given(st.lists(st.booleans(), max_size=120), st.integers(min_value=2, max_value=40))
def test_percent_stays_within_bounds_and_flapping_follows_the_thresholds(
    outcomes: list[bool], n: int
) -> None:
    state = FlapState()
    for problem in outcomes:
        before = state.flapping
        state = observe(state, problem, n=n)
        value = percent(state, n=n)
        assert 0.0 <= value < 100.0
        assert len(state.states) <= n
        if state.flapping and not before:
            assert value > 30.0
        if before and not state.flapping:
            assert value <= 25.0
        if 25.0 < value <= 30.0:
            assert state.flapping == before  # between the thresholds nothing changes


@given(st.lists(st.booleans(), max_size=120))
def test_changes_counts_every_state_change(outcomes: list[bool]) -> None:
    states = run(outcomes)
    expected = sum(1 for a, b in itertools.pairwise(outcomes) if a != b)
    assert (states[-1].changes if states else 0) == expected
