"""The previous reading of counters that a probe turns into rates (cpu, net, diskio)."""

import time
from typing import Generic, TypeVar

MIN_WINDOW_SECONDS = 0.25

Reading = TypeVar("Reading")


class Baseline(Generic[Reading]):
    """A reading and when it was taken; rates cover the window from it to the next one.

    The first reading is taken when the probe is built, so its first collection already
    reports. A window shorter than `MIN_WINDOW_SECONDS` (a check right after the probe was
    built, as `forewarn check` does) is a clock tick or two of counting: it is waited out.
    """

    def __init__(self, reading: Reading) -> None:
        self.reading = reading
        self.taken = time.monotonic()

    def wait_for_full_window(self) -> None:
        short_by = MIN_WINDOW_SECONDS - (time.monotonic() - self.taken)
        if short_by > 0:
            time.sleep(short_by)

    def advance(self, reading: Reading) -> tuple[Reading, float]:
        """The previous reading and the seconds since it; `reading` is the next baseline."""
        taken = time.monotonic()
        previous, seconds = self.reading, taken - self.taken
        self.reading, self.taken = reading, taken
        return previous, seconds
