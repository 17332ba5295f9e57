"""CPU usage and I/O wait, as a percentage of the time since the previous collection.

Each probe keeps its own previous `psutil.cpu_times()` instead of calling
`psutil.cpu_percent(interval=None)`, whose baseline is one global shared with every other
caller in the process (a second cpu probe or a diagnostic snapshot would reset it).

The baseline is taken when the probe is built, so the first `collect` reports the usage
since then. A window shorter than `probes._window.MIN_WINDOW_SECONDS` (a first call right
after the probe was built, as `forewarn check` does) is a clock tick or two, which reads as
0 or 100 %: `collect` then waits for the rest of the window. Should no CPU time have passed
at all, the average since boot is reported instead of a meaningless 0.
"""

from dataclasses import dataclass
from typing import Any, ClassVar

import psutil

from probes._window import Baseline
from probes.base import Sample

CPU_USAGE = "cpu_usage_percent"
CPU_IOWAIT = "cpu_iowait_percent"

CpuTimes = Any  # psutil's platform-specific `scputimes` named tuple


def _total_time(times: CpuTimes) -> float:
    # On Linux guest time is already counted in user and nice: subtracting it, as psutil
    # and htop do, avoids counting it twice.
    return float(sum(times)) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _idle_time(times: CpuTimes) -> float:
    # Linux does not count I/O wait as idle; the CPU is free to run other work meanwhile.
    return float(times.idle + getattr(times, "iowait", 0.0))


def _zero_times(times: CpuTimes) -> CpuTimes:
    return type(times)(*(0.0 for _ in times))


def _percent(part: float, total: float) -> float:
    return min(100.0, max(0.0, 100.0 * part / total)) if total > 0 else 0.0


def _window(before: CpuTimes | None, after: CpuTimes) -> tuple[CpuTimes, CpuTimes]:
    """The pair of readings to compare: since `before`, or since boot if nothing elapsed."""
    if before is None or _total_time(after) - _total_time(before) <= 0:
        return _zero_times(after), after
    return before, after


def usage_percent(before: CpuTimes | None, after: CpuTimes) -> float:
    start, end = _window(before, after)
    busy = (_total_time(end) - _idle_time(end)) - (_total_time(start) - _idle_time(start))
    return _percent(busy, _total_time(end) - _total_time(start))


def iowait_percent(before: CpuTimes | None, after: CpuTimes) -> float | None:
    """None where the platform does not report I/O wait (it is a Linux notion)."""
    if not hasattr(after, "iowait"):
        return None
    start, end = _window(before, after)
    return _percent(end.iowait - start.iowait, _total_time(end) - _total_time(start))


class CpuProbe:
    kind: ClassVar[str] = "cpu"

    @dataclass(frozen=True)
    class Options:
        per_cpu: bool = False

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self._baseline: Baseline[CpuTimes] = Baseline(psutil.cpu_times())
        self._previous_per_cpu: list[CpuTimes] = psutil.cpu_times(percpu=True)

    def collect(self, now: float) -> list[Sample]:
        self._baseline.wait_for_full_window()
        current = psutil.cpu_times()
        previous, _seconds = self._baseline.advance(current)
        samples = [Sample(CPU_USAGE, usage_percent(previous, current), now)]
        iowait = iowait_percent(previous, current)
        if iowait is not None:
            samples.append(Sample(CPU_IOWAIT, iowait, now))
        if self.options.per_cpu:
            samples.extend(self._collect_per_cpu(now))
        return samples

    def _collect_per_cpu(self, now: float) -> list[Sample]:
        current = psutil.cpu_times(percpu=True)
        # A CPU brought online since the last call has no baseline: it reports since boot.
        previous = self._previous_per_cpu + [None] * (len(current) - len(self._previous_per_cpu))
        self._previous_per_cpu = current
        return [
            Sample(CPU_USAGE, usage_percent(before, after), now, {"cpu": str(index)})
            for index, (before, after) in enumerate(zip(previous, current, strict=False))
        ]
