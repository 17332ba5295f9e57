"""Hardware temperatures and fan speeds, as the kernel's hwmon drivers report them.

A machine without sensors (most VMs and containers) yields no samples; that is not an
error. Some platforms lack the psutil functions altogether.
"""

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import psutil

from probes.base import Sample, UnconfiguredProbe

TEMPERATURE = "temperature_celsius"
TEMPERATURE_HIGH = "temperature_high_celsius"
TEMPERATURE_CRITICAL = "temperature_critical_celsius"
FAN = "fan_rpm"


def _read(function_name: str) -> dict[str, list[Any]]:
    function: Callable[[], dict[str, list[Any]]] | None = getattr(psutil, function_name, None)
    return function() if function is not None else {}


def labelled(sensors: dict[str, list[Any]], unnamed: str) -> Iterable[tuple[dict[str, str], Any]]:
    """Each reading with labels unique within its chip.

    An entry without a label is named as hwmon numbers it (`temp1`, `fan2`). psutil groups
    chips by driver name, so two NVMe drives both bring a "Composite": the second becomes
    "Composite #2", otherwise their alerts would share one fingerprint.
    """
    for chip, entries in sensors.items():
        seen: dict[str, int] = {}
        for index, entry in enumerate(entries, start=1):
            label = entry.label or f"{unnamed}{index}"
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                label = f"{label} #{seen[label]}"
            yield {"sensor": chip, "label": label}, entry


def _threshold(value: float | None) -> float | None:
    # Drivers without a limit report None, and some report 0 or below: no real limit.
    return value if value is not None and value > 0 else None


def temperature_samples(entry: Any, labels: dict[str, str], now: float) -> list[Sample]:
    samples = [Sample(TEMPERATURE, float(entry.current), now, labels)]
    for metric, limit in ((TEMPERATURE_HIGH, entry.high), (TEMPERATURE_CRITICAL, entry.critical)):
        if _threshold(limit) is not None:
            samples.append(Sample(metric, float(limit), now, labels))
    return samples


class SensorsProbe(UnconfiguredProbe):
    kind: ClassVar[str] = "sensors"

    def collect(self, now: float) -> list[Sample]:
        samples: list[Sample] = []
        for labels, entry in labelled(_read("sensors_temperatures"), "temp"):
            if entry.current is not None:
                samples.extend(temperature_samples(entry, labels, now))
        for labels, entry in labelled(_read("sensors_fans"), "fan"):
            samples.append(Sample(FAN, float(entry.current), now, labels))
        return samples
