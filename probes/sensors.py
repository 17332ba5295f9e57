"""Hardware temperatures and fan speeds, as the kernel's hwmon drivers report them, and the
battery of a laptop or of a machine running on one.

A machine without sensors (most VMs and containers) yields no samples; that is not an
error. Some platforms lack the psutil functions altogether.

Metrics, labelled {sensor, label} (the hwmon chip and its reading, e.g. coretemp, Core 0):
    temperature_celsius, temperature_high_celsius, temperature_critical_celsius, fan_rpm
and for the battery (psutil's first battery), labelled {sensor="battery", label="battery"}:
    battery_percent       charge left
    battery_plugged       1 on mains power, 0 on the battery (left out when unknown)
    battery_seconds_left  estimated time left, only while discharging and when known
"""

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import psutil

from probes.base import Sample, UnconfiguredProbe

TEMPERATURE = "temperature_celsius"
TEMPERATURE_HIGH = "temperature_high_celsius"
TEMPERATURE_CRITICAL = "temperature_critical_celsius"
FAN = "fan_rpm"
BATTERY_PERCENT = "battery_percent"
BATTERY_PLUGGED = "battery_plugged"
BATTERY_SECONDS_LEFT = "battery_seconds_left"
BATTERY_LABELS = {"sensor": "battery", "label": "battery"}


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


def battery_samples(now: float) -> list[Sample]:
    """The battery's charge, power source and time left; nothing without a battery."""
    read: Callable[[], Any] | None = getattr(psutil, "sensors_battery", None)
    battery = read() if read is not None else None
    if battery is None:
        return []
    labels = dict(BATTERY_LABELS)
    samples = [Sample(BATTERY_PERCENT, float(battery.percent), now, labels)]
    if battery.power_plugged is not None:
        plugged = 1.0 if battery.power_plugged else 0.0
        samples.append(Sample(BATTERY_PLUGGED, plugged, now, labels))
    # psutil says POWER_TIME_UNLIMITED (-2) on mains and POWER_TIME_UNKNOWN (-1) when unsure.
    if not battery.power_plugged and battery.secsleft >= 0:
        samples.append(Sample(BATTERY_SECONDS_LEFT, float(battery.secsleft), now, labels))
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
        return samples + battery_samples(now)
