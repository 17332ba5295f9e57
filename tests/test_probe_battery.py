"""The battery part of the sensors probe: on this machine for real (most servers, VMs and
containers have no battery), and with batteries injected as psutil reports them."""

from collections import namedtuple
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from probes.base import Sample
from probes.sensors import SensorsProbe

NOW = 1_700_000_000.0
BATTERY = {"sensor": "battery", "label": "battery"}
# The shape of psutil's (private) sbattery tuple, which psutil.sensors_battery() returns.
Battery = namedtuple("Battery", "percent secsleft power_plugged")


def battery_samples(monkeypatch: pytest.MonkeyPatch, battery: Any) -> dict[str, Sample]:
    """The battery samples the probe makes when psutil reports `battery`, and no other sensor."""
    monkeypatch.setattr(psutil, "sensors_temperatures", dict, raising=False)
    monkeypatch.setattr(psutil, "sensors_fans", dict, raising=False)
    monkeypatch.setattr(psutil, "sensors_battery", lambda: battery, raising=False)
    samples = SensorsProbe("sensors", SensorsProbe.Options()).collect(NOW)
    assert all(s.labels == BATTERY and s.timestamp == NOW and s.error is None for s in samples)
    return {s.metric: s for s in samples}


def test_this_machines_battery_agrees_with_psutil() -> None:
    read: Callable[[], Any] | None = getattr(psutil, "sensors_battery", None)
    expected = read() if read is not None else None
    samples = SensorsProbe("sensors", SensorsProbe.Options()).collect(NOW)
    found = {s.metric: s.value for s in samples if s.labels == BATTERY}
    if expected is None:
        assert found == {}  # no battery: no samples, not an error
    else:
        assert found["battery_percent"] == pytest.approx(expected.percent, abs=1.0)
        assert 0.0 <= found["battery_percent"] <= 100.0


def test_a_discharging_battery_reports_its_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    found = battery_samples(monkeypatch, Battery(percent=41.5, secsleft=5400, power_plugged=False))
    assert {m: s.value for m, s in found.items()} == {
        "battery_percent": 41.5,
        "battery_plugged": 0.0,
        "battery_seconds_left": 5400.0,
    }


def test_on_mains_there_is_no_time_left_to_report(monkeypatch: pytest.MonkeyPatch) -> None:
    on_mains = Battery(percent=100, secsleft=psutil.POWER_TIME_UNLIMITED, power_plugged=True)
    found = battery_samples(monkeypatch, on_mains)
    assert {m: s.value for m, s in found.items()} == {
        "battery_percent": 100.0,
        "battery_plugged": 1.0,
    }


def test_an_unknown_time_left_or_power_source_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    unsure = Battery(percent=12, secsleft=psutil.POWER_TIME_UNKNOWN, power_plugged=None)
    assert set(battery_samples(monkeypatch, unsure)) == {"battery_percent"}


def test_no_battery_means_no_battery_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    assert battery_samples(monkeypatch, None) == {}
    monkeypatch.delattr(psutil, "sensors_battery")  # a platform psutil has no battery code for
    assert SensorsProbe("sensors", SensorsProbe.Options()).collect(NOW) == []
