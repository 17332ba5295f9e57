"""Swap use. A machine without swap reports 0 % used, so "swap filling up" never fires there."""

from typing import ClassVar

import psutil

from probes.base import Sample, UnconfiguredProbe


class SwapProbe(UnconfiguredProbe):
    kind: ClassVar[str] = "swap"

    def collect(self, now: float) -> list[Sample]:
        swap = psutil.swap_memory()
        percent = 100.0 * swap.used / swap.total if swap.total else 0.0
        return [
            Sample("swap_used_percent", percent, now),
            Sample("swap_used_bytes", float(swap.used), now),
            Sample("swap_total_bytes", float(swap.total), now),
        ]
