"""Network interfaces: link up or down, link speed, traffic, errors and drops.

State and speed come from `psutil.net_if_stats()`, counters from
`psutil.net_io_counters(pernic=True)` (the kernel's `/proc/net/dev`). Rates cover the time
since the previous collection (see `probes._window`: the baseline is taken when the probe
is built, and a window too short to measure is waited out). An interface seen for the first
time, or whose counters went backwards (recreated), only gets its baseline on that call.

Options:
- `interfaces`: watch exactly these (loopback and administratively down ones included); an
  interface that does not exist is reported down with an error. Empty (the default)
  watches every interface that is administratively up, except loopback.
- `exclude_interfaces`: with `interfaces` empty, skip these too (fnmatch patterns such as
  `veth*` for the per-container interfaces of Docker).

Metrics, labels `{"interface"}`:
- `net_up`: 1 when the link is up and running (carrier present), else 0.
- `net_speed_bits_per_second`: negotiated link speed; absent when the driver reports none
  (virtual interfaces, Wi-Fi, virtio).
- `net_receive_bytes_per_second`, `net_transmit_bytes_per_second`
- `net_receive_errors_per_second`, `net_transmit_errors_per_second`
- `net_receive_drops_per_second`, `net_transmit_drops_per_second`

Example:

    [[probe]]
    name = "net"
    kind = "net"
    interval = "30s"
    exclude_interfaces = ["veth*", "docker*", "br-*"]
"""

import fnmatch
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import psutil

from probes._window import Baseline
from probes.base import Sample

log = logging.getLogger(__name__)

UP = "net_up"
SPEED = "net_speed_bits_per_second"
COUNTER_RATES = {
    "net_receive_bytes_per_second": "bytes_recv",
    "net_transmit_bytes_per_second": "bytes_sent",
    "net_receive_errors_per_second": "errin",
    "net_transmit_errors_per_second": "errout",
    "net_receive_drops_per_second": "dropin",
    "net_transmit_drops_per_second": "dropout",
}
BITS_PER_MEGABIT = 1_000_000

Counters = Any  # psutil's `snetio` named tuple
Stats = Any  # psutil's `snicstats` named tuple


def _flags(stats: Stats) -> set[str]:
    return set(getattr(stats, "flags", "").split(","))


def is_loopback(name: str, stats: Stats) -> bool:
    return "loopback" in _flags(stats) or name == "lo"


def is_admin_up(stats: Stats) -> bool:
    flags = _flags(stats)
    # Platforms without flags (psutil < 5.9.3 or no support) only say whether it runs.
    return "up" in flags if flags != {""} else bool(stats.isup)


def default_interfaces(all_stats: dict[str, Stats], exclude: list[str]) -> list[str]:
    return sorted(
        name
        for name, stats in all_stats.items()
        if is_admin_up(stats)
        and not is_loopback(name, stats)
        and not any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude)
    )


def rates(before: Counters, after: Counters, seconds: float) -> dict[str, float] | None:
    """Per-second figures over the window, None when a counter went backwards."""
    deltas = {metric: getattr(after, f) - getattr(before, f) for metric, f in COUNTER_RATES.items()}
    if any(delta < 0 for delta in deltas.values()):
        return None
    return {metric: delta / seconds for metric, delta in deltas.items()}


def state_samples(name: str, stats: Stats | None, now: float) -> list[Sample]:
    labels = {"interface": name}
    if stats is None:
        return [Sample(UP, 0.0, now, labels, "no such interface")]
    samples = [Sample(UP, 1.0 if stats.isup else 0.0, now, labels)]
    if stats.speed > 0:  # 0 is the driver saying it does not know
        samples.append(Sample(SPEED, float(stats.speed * BITS_PER_MEGABIT), now, labels))
    return samples


def _read_counters() -> dict[str, Counters]:
    # nowrap=False: psutil's wrap correction is shared by the whole process; a decrease here
    # means the interface was recreated, and starts a new baseline.
    return psutil.net_io_counters(pernic=True, nowrap=False) or {}


class NetProbe:
    kind: ClassVar[str] = "net"

    @dataclass(frozen=True)
    class Options:
        interfaces: list[str] = field(default_factory=list)
        exclude_interfaces: list[str] = field(default_factory=list)

        def __post_init__(self) -> None:
            if any(not name for name in self.interfaces):
                raise ValueError("interfaces must not hold an empty name")
            if self.interfaces and self.exclude_interfaces:
                raise ValueError("give interfaces or exclude_interfaces, not both")

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self._baseline = Baseline(self._safe_read())

    def collect(self, now: float) -> list[Sample]:
        self._baseline.wait_for_full_window()
        try:
            all_stats = psutil.net_if_stats()
            current = _read_counters()
        except OSError as exc:
            log.debug("interface statistics unreadable: %s", exc)
            return [Sample(UP, 0.0, now, {"interface": ""}, f"cannot read interfaces: {exc}")]
        previous, seconds = self._baseline.advance(current)
        samples: list[Sample] = []
        for name in self._watched(all_stats):
            samples += state_samples(name, all_stats.get(name), now)
            samples += self._rate_samples(name, previous.get(name), current.get(name), seconds, now)
        return samples

    def _safe_read(self) -> dict[str, Counters]:
        try:
            return _read_counters()
        except OSError:
            return {}  # collect reports it

    def _watched(self, all_stats: dict[str, Stats]) -> list[str]:
        if self.options.interfaces:
            return list(self.options.interfaces)
        return default_interfaces(all_stats, self.options.exclude_interfaces)

    @staticmethod
    def _rate_samples(
        name: str, before: Counters | None, after: Counters | None, seconds: float, now: float
    ) -> list[Sample]:
        if before is None or after is None or seconds <= 0:
            return []
        figures = rates(before, after, seconds)
        labels = {"interface": name}
        return [Sample(m, v, now, labels) for m, v in (figures or {}).items()]
