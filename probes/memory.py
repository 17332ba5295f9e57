"""Physical memory use, counted from what the kernel says is `available`.

`available` includes reclaimable page cache, so a machine full of cache is not "full".
"""

from typing import ClassVar

import psutil

from probes.base import Sample, UnconfiguredProbe


class MemoryProbe(UnconfiguredProbe):
    kind: ClassVar[str] = "memory"

    def collect(self, now: float) -> list[Sample]:
        memory = psutil.virtual_memory()
        used = memory.total - memory.available
        percent = 100.0 * used / memory.total if memory.total else 0.0
        return [
            Sample("memory_used_percent", percent, now),
            Sample("memory_available_bytes", float(memory.available), now),
            Sample("memory_total_bytes", float(memory.total), now),
        ]
