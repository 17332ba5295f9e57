"""A step of the wall clock is seen by comparing it with the monotonic clock (the engine's
timers moving with it: tests/test_engine.py; the daemon end to end: tests/test_faults_crash.py)."""

from __future__ import annotations

import pytest

from monitor.clockstep import STEP, ClockWatch


@pytest.mark.parametrize(
    ("wall", "monotonic", "step"),
    [
        (1.0, 1.0, 0.0),  # in pace
        (1.0 + STEP * 0.9, 1.0, 0.0),  # a slow tick or slewing: not a step
        (3601.0, 1.0, 3600.0),  # ahead an hour
        (-3599.0, 1.0, -3600.0),  # back an hour
    ],
)
def test_a_step_is_the_wall_clock_leaving_the_monotonic_one(
    wall: float, monotonic: float, step: float
) -> None:
    watch = ClockWatch(0.0, 0.0)
    assert watch.step(wall, monotonic) == step
    assert watch.step(wall + 1, monotonic + 1) == 0.0, "measured from the last reading"
