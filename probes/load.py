"""System load averages, raw and divided by the number of logical CPUs.

The per-core figures let one threshold fit machines of any size.
"""

from typing import ClassVar

import psutil

from probes.base import Sample, UnconfiguredProbe

WINDOWS = ("load1", "load5", "load15")


class LoadProbe(UnconfiguredProbe):
    kind: ClassVar[str] = "load"

    def collect(self, now: float) -> list[Sample]:
        # Asked every time: CPUs can be brought online or offline while the daemon runs.
        cores = psutil.cpu_count(logical=True) or 1
        pairs = list(zip(WINDOWS, psutil.getloadavg(), strict=True))
        samples = [Sample(metric, value, now) for metric, value in pairs]
        samples += [Sample(f"{metric}_per_core", value / cores, now) for metric, value in pairs]
        return samples
