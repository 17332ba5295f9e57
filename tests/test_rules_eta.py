"""The estimate of a fix from the durations of past incidents, and when it moved enough to say."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.eta import MATERIAL_SHIFT, Eta, changed_materially, estimate

OPENED = 1_700_000_000.0
FIVE = [600.0, 1200.0, 1800.0, 2400.0, 3000.0]
TWO = [60.0, 120.0]
TEN = [float(minutes * 60) for minutes in range(1, 11)]


@pytest.mark.parametrize(
    ("same_target", "same_rule", "basis", "samples"),
    [
        (FIVE[:3], TEN, "target", 3),  # enough of its own: the rule's longer history is ignored
        (TWO, TEN, "rule", 10),  # too few of its own, the rule knows more
        (TWO, TWO, "target", 2),  # as many as the rule: its own are closer to the case
        (TWO, [60.0], "target", 2),
        ([], FIVE, "rule", 5),
        (FIVE, [], "target", 5),
    ],
)
def test_the_basis_is_the_targets_history_unless_the_rule_knows_more(
    same_target: list[float], same_rule: list[float], basis: str, samples: int
) -> None:
    eta = estimate(same_target, same_rule, OPENED, OPENED)
    assert eta is not None
    assert (eta.basis, eta.samples) == (basis, samples)


def test_figures_are_the_median_and_the_inclusive_quartiles() -> None:
    assert estimate(FIVE, [], OPENED, OPENED + 60) == Eta(
        expected_at=OPENED + 1800, median=1800, low=1200, high=2400, samples=5, basis="target"
    )


def test_an_even_count_interpolates_between_the_middle_durations() -> None:
    eta = estimate([400.0, 100.0, 300.0, 200.0], [], OPENED, OPENED)
    assert eta is not None
    assert (eta.median, eta.low, eta.high, eta.expected_at) == (250, 175, 325, OPENED + 250)


def test_one_past_incident_gives_one_figure() -> None:
    eta = estimate([], [900.0], OPENED, OPENED)
    assert eta == Eta(OPENED + 900, 900, 900, 900, 1, "rule")


@pytest.mark.parametrize("same_rule", [[], [-1.0, math.nan, math.inf, -math.inf]])
def test_no_usable_history_is_unknown(same_rule: list[float]) -> None:
    assert estimate([], same_rule, OPENED, OPENED) is None


def test_impossible_durations_are_ignored_before_choosing_the_basis() -> None:
    # The target has four rows but one usable duration: fewer than the rule's two.
    eta = estimate([math.nan, -30.0, math.inf, 500.0], [100.0, 300.0], OPENED, OPENED)
    assert eta is not None
    assert (eta.basis, eta.samples, eta.median) == ("rule", 2, 200)


def test_at_the_typical_time_the_estimate_still_stands() -> None:
    eta = estimate(FIVE, [], OPENED, OPENED + 1800)
    assert eta is not None
    assert (eta.expected_at, eta.overdue) == (OPENED + 1800, False)


def test_past_the_typical_time_only_the_longer_incidents_count() -> None:
    # 1801 s elapsed: 2400 and 3000 lasted longer; median 2700, quartiles 2550 and 2850.
    assert estimate(FIVE, [], OPENED, OPENED + 1801) == Eta(
        OPENED + 2700, 2700, 2550, 2850, 2, "target", overdue=True
    )


@pytest.mark.parametrize("elapsed", [3000, 3001, 86400])
def test_longer_than_any_before_is_unknown(elapsed: int) -> None:
    # "Longer" is strict: an incident as long as the longest one is beyond the history.
    assert estimate(FIVE, [], OPENED, OPENED + elapsed) is None


def test_overdue_keeps_the_chosen_basis() -> None:
    # The rule's median is 330 s; past it, 360 .. 600 s lasted longer: median 480 s.
    eta = estimate([60.0], TEN, OPENED, OPENED + 331)
    assert eta is not None
    assert (eta.basis, eta.samples, eta.median, eta.overdue) == ("rule", 5, 480, True)


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("announced", "current", "changed"),
    [
        (None, None, False),
        (None, NOW + 600, True),  # an estimate appeared
        # Vanished (overdue, longer than any before): news once well past the announced time.
        (NOW + 600, None, False),
        (NOW - 899, None, False),
        (NOW - 900, None, True),
        (NOW + 600, NOW + 600, False),
        # An hour to go: a quarter is 15 min, the floor itself.
        (NOW + 3600, NOW + 3600 + 899, False),
        (NOW + 3600, NOW + 3600 + 900, True),
        (NOW + 3600, NOW + 3600 - 900, True),
        # Eight hours to go: a quarter is two hours, so 15 minutes is no news.
        (NOW + 8 * 3600, NOW + 8 * 3600 + 900, False),
        (NOW + 8 * 3600, NOW + 8 * 3600 + 7199, False),
        (NOW + 8 * 3600, NOW + 8 * 3600 - 7200, True),
        # The announced time has passed: the floor applies.
        (NOW - 100, NOW - 100 + 899, False),
        (NOW - 100, NOW + 800, True),
    ],
)
def test_material_change(announced: float | None, current: float | None, changed: bool) -> None:
    assert changed_materially(announced, current, NOW) is changed


durations = st.lists(st.floats(min_value=0, max_value=1e6), max_size=12)


@given(durations, durations, st.floats(min_value=0, max_value=2e6))
def test_estimates_are_ordered_and_never_in_the_past(
    same_target: list[float], same_rule: list[float], elapsed: float
) -> None:
    now = OPENED + elapsed
    eta = estimate(same_target, same_rule, OPENED, now)
    if eta is None:
        return
    elapsed = now - OPENED  # as rounded in floating point, which is what the module sees
    assert eta.low <= eta.median <= eta.high
    assert eta.expected_at == OPENED + eta.median
    assert eta.overdue or eta.expected_at >= now
    assert not eta.overdue or eta.median > elapsed


@given(st.floats(min_value=-1e5, max_value=1e5), st.floats(min_value=-1e5, max_value=1e5))
def test_a_shift_under_the_floor_is_never_material(to_go: float, shift: float) -> None:
    changed = changed_materially(NOW + to_go, NOW + to_go + shift, NOW)
    assert changed is (abs(shift) >= max(MATERIAL_SHIFT, to_go / 4))
    if abs(shift) < MATERIAL_SHIFT:
        assert not changed
