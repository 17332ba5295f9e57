"""Probes: they observe the machine and the services it reaches, and turn that into samples.

`REGISTRY` maps each config `kind` to its probe class. Importing this package reads nothing
from the system and opens nothing: probes act only when built and collected.
"""

from probes.cpu import CpuProbe
from probes.disk import DiskProbe
from probes.http import HttpProbe
from probes.load import LoadProbe
from probes.memory import MemoryProbe
from probes.process import ProcessProbe
from probes.sensors import SensorsProbe
from probes.swap import SwapProbe

REGISTRY: dict[str, type] = {
    probe.kind: probe
    for probe in (
        CpuProbe,
        LoadProbe,
        MemoryProbe,
        SwapProbe,
        DiskProbe,
        SensorsProbe,
        ProcessProbe,
        HttpProbe,
    )
}

__all__ = ["REGISTRY"]
