"""Noticing that the wall clock stepped (NTP fixing a wrong clock, a VM resumed, a person).

The daemon stamps samples, incidents and outbox rows with the wall clock, which people and
help desks read; but durations (how long a probe has been silent, when a probe runs next, when
a retry is due) must follow real time. A step shows as a disagreement between the wall clock
and the monotonic clock; once seen, the daemon shifts its own pending instants by it, so a
probe silent for 1 s is not "silent for an hour" after a step ahead, and the next probe run is
not an hour away after a step back.
"""

from __future__ import annotations

from dataclasses import dataclass

STEP = 2.0  # seconds of disagreement that count as a step, not as a slow tick or NTP slewing


@dataclass
class ClockWatch:
    """The last reading of both clocks; `step` says how far the wall clock stepped since."""

    wall: float
    monotonic: float

    def step(self, wall: float, monotonic: float) -> float:
        """The wall clock's step since the last reading (0.0 when it kept pace)."""
        jump = (wall - self.wall) - (monotonic - self.monotonic)
        self.wall, self.monotonic = wall, monotonic
        return jump if abs(jump) >= STEP else 0.0
