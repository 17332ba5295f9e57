"""Block device activity: how busy each disk is, how fast it moves data, how long it makes
requests wait, and the I/O errors the kernel counted for it.

Figures come from `psutil.disk_io_counters(perdisk=True)` (the kernel's `/proc/diskstats`)
and cover the time since the previous collection. The baseline is taken when the probe is
built, so the first `collect` already reports; a window shorter than
`probes._window.MIN_WINDOW_SECONDS` (a check right after the probe was built) is waited
out, because busy time is counted in whole milliseconds. A device seen for the first time,
or whose counters went backwards (it was removed and added again), only gets its baseline
on that call: no rates until the next.

Options:
- `devices`: watch exactly these kernel names (`sda`, `nvme0n1`, `dm-0`, also a partition
  or a loop device); one that does not exist yields an error sample. Empty (the default)
  watches every whole disk except RAM, zram, loop and floppy devices.
- `include_partitions`: with `devices` empty, watch partitions too (default false: a
  partition's traffic is already counted in its disk).

Metrics, labels `{"device"}`:
- `diskio_utilization_percent`: share of the window the device had I/O in flight (as
  iostat's %util; near 100 means saturated for a single-queue disk, not for SSDs/NVMe that
  serve many requests at once). Absent where the platform counts no busy time.
- `diskio_read_bytes_per_second`, `diskio_write_bytes_per_second`
- `diskio_reads_per_second`, `diskio_writes_per_second` (IOPS)
- `diskio_read_await_seconds`, `diskio_write_await_seconds`: average time a read (write)
  completed in the window took, queueing included (iostat's r_await/w_await); 0 when the
  device did no reads (writes) in the window, as iostat prints.
- `diskio_errors_total`: commands the SCSI layer saw fail (`/sys/block/<dev>/device/
  ioerr_cnt`, SATA/SAS/USB disks); a counter since boot. Absent for disks without one
  (virtio, NVMe, device mapper): those report errors through `smart` and the kernel log.
A named device that does not exist, or counters that cannot be read at all, are an error
sample (NaN) of `diskio_utilization_percent`; an error counter that cannot be read is an
error sample of `diskio_errors_total`.

Example:

    [[probe]]
    name = "diskio"
    kind = "diskio"
    interval = "30s"
    # devices = ["sda", "nvme0n1"]
"""

import fnmatch
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psutil

from probes._window import Baseline
from probes.base import Sample

log = logging.getLogger(__name__)

UTILIZATION = "diskio_utilization_percent"
READ_BYTES = "diskio_read_bytes_per_second"
WRITE_BYTES = "diskio_write_bytes_per_second"
READS = "diskio_reads_per_second"
WRITES = "diskio_writes_per_second"
READ_AWAIT = "diskio_read_await_seconds"
WRITE_AWAIT = "diskio_write_await_seconds"
ERRORS = "diskio_errors_total"

SYSFS = Path("/sys")
# After node_exporter's default: RAM disks, compressed RAM swap, loop images, floppies.
NOT_DISKS = ("ram*", "zram*", "loop*", "fd*")

Counters = Any  # psutil's platform-specific `sdiskio` named tuple


def is_partition(device: str, sysfs: Path = SYSFS) -> bool:
    # The kernel gives every partition, and only partitions, a `partition` attribute.
    return (sysfs / "class/block" / device / "partition").exists()


def default_devices(names: list[str], include_partitions: bool, sysfs: Path = SYSFS) -> list[str]:
    disks = [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in NOT_DISKS)]
    if include_partitions:
        return disks
    return [n for n in disks if not is_partition(n, sysfs)]


def read_error_count(device: str, sysfs: Path = SYSFS) -> int | None:
    """The SCSI error counter of a disk, None where the disk has none. Raises OSError
    (or ValueError) when it exists and cannot be read."""
    path = sysfs / "block" / device / "device" / "ioerr_cnt"
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    return int(text.strip(), 16)  # the kernel prints "0x%x"


def went_backwards(before: Counters, after: Counters) -> bool:
    return any(new < old for old, new in zip(before, after, strict=True))


def _per_op_seconds(milliseconds: float, operations: int) -> float:
    return milliseconds / 1000.0 / operations if operations > 0 else 0.0


def rates(before: Counters, after: Counters, seconds: float) -> dict[str, float]:
    """The window's figures from two readings taken `seconds` apart."""
    reads = after.read_count - before.read_count
    writes = after.write_count - before.write_count
    figures = {
        READ_BYTES: (after.read_bytes - before.read_bytes) / seconds,
        WRITE_BYTES: (after.write_bytes - before.write_bytes) / seconds,
        READS: reads / seconds,
        WRITES: writes / seconds,
        READ_AWAIT: _per_op_seconds(after.read_time - before.read_time, reads),
        WRITE_AWAIT: _per_op_seconds(after.write_time - before.write_time, writes),
    }
    if hasattr(after, "busy_time"):  # Linux and FreeBSD count it, in milliseconds
        busy = (after.busy_time - before.busy_time) / 1000.0
        figures[UTILIZATION] = min(100.0, max(0.0, 100.0 * busy / seconds))
    return figures


def rate_samples(
    device: str, before: Counters | None, after: Counters, seconds: float, now: float
) -> list[Sample]:
    """The window's samples; none without a baseline or when the counters restarted."""
    if before is None or seconds <= 0 or went_backwards(before, after):
        return []
    labels = {"device": device}
    return [Sample(m, v, now, labels) for m, v in rates(before, after, seconds).items()]


def _read_counters() -> dict[str, Counters]:
    # nowrap=False: psutil's wrap correction is one cache for the whole process, and a
    # device removed and added again would look wrapped; a decrease here is a new baseline.
    counters = psutil.disk_io_counters(perdisk=True, nowrap=False)
    return counters or {}


class DiskioProbe:
    kind: ClassVar[str] = "diskio"

    @dataclass(frozen=True)
    class Options:
        devices: list[str] = field(default_factory=list)
        include_partitions: bool = False

        def __post_init__(self) -> None:
            bad = [name for name in self.devices if not name or "/" in name]
            if bad:
                raise ValueError(
                    f"devices are kernel names such as sda or nvme0n1, not paths: {bad}"
                )

    def __init__(self, name: str, options: Options, sysfs: Path = SYSFS) -> None:
        self.name = name
        self.options = options
        self.sysfs = sysfs
        self._baseline = Baseline(self._safe_read())

    def collect(self, now: float) -> list[Sample]:
        self._baseline.wait_for_full_window()
        try:
            current = _read_counters()
        except (OSError, RuntimeError, NotImplementedError) as exc:
            log.debug("disk counters unreadable: %s", exc)
            return [self._error("", f"cannot read disk counters: {exc}", now)]
        previous, seconds = self._baseline.advance(current)
        samples: list[Sample] = []
        for device in self._watched(current):
            if device not in current:
                samples.append(self._error(device, "no such block device", now))
                continue
            samples += rate_samples(device, previous.get(device), current[device], seconds, now)
            samples += self._error_count_samples(device, now)
        return samples

    def _safe_read(self) -> dict[str, Counters]:
        try:
            return _read_counters()
        except (OSError, RuntimeError, NotImplementedError):
            return {}  # collect reports it

    def _watched(self, current: dict[str, Counters]) -> list[str]:
        if self.options.devices:
            return list(self.options.devices)
        return default_devices(sorted(current), self.options.include_partitions, self.sysfs)

    def _error_count_samples(self, device: str, now: float) -> list[Sample]:
        try:
            count = read_error_count(device, self.sysfs)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            error = f"cannot read the error counter: {reason}"
            return [Sample(ERRORS, math.nan, now, {"device": device}, error)]
        return [] if count is None else [Sample(ERRORS, float(count), now, {"device": device})]

    @staticmethod
    def _error(device: str, error: str, now: float) -> Sample:
        return Sample(UTILIZATION, math.nan, now, {"device": device}, error)
