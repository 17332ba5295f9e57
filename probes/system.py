"""The machine as a whole: uptime and reboots, a pending reboot, OOM kills, open files.

A reboot is recognised by the kernel's boot id (`/proc/sys/kernel/random/boot_id`, new at
every boot), or where there is none by the boot time moving by more than
`BOOT_TIME_TOLERANCE_SECONDS` (the boot time is derived from the wall clock, so a clock
step moves it a little). The daemon gives the probe a state directory: the last boot and
OOM kill count seen are kept there, so a reboot is reported even when forewarn itself was
down across it. Without one (`forewarn check`) they are kept in memory only.

Options:
- `reboot_required_file`: the file whose presence means an update wants a reboot; by
  default Debian's and Ubuntu's (written by update-notifier-common / unattended-upgrades).

Metrics, no labels:
- `system_uptime_seconds`, `system_boot_time_seconds` (Unix time of the boot)
- `system_rebooted`: 1 on the first collection after the machine rebooted since the last
  one the probe remembers, else 0 (also 0 when it remembers none).
- `system_reboot_required`: 1 when `reboot_required_file` exists, else 0.
- `system_oom_kills_total`: processes the kernel's OOM killer killed since boot
  (`oom_kill` in `/proc/vmstat`, Linux 4.13 and later; absent on older kernels).
- `system_oom_kills_new`: OOM kills since the previous collection (all since boot after a
  reboot; 0 on the first collection the probe remembers nothing before).
- `system_open_files`, `system_open_files_max`, `system_open_files_percent`: file handles
  allocated system-wide against the kernel's limit `fs.file-max` (`/proc/sys/fs/file-nr`).
A figure that cannot be read is an error sample (value NaN) of that metric; the others are
still reported.

Example:

    [[probe]]
    name = "system"
    kind = "system"
    interval = "1m"
"""

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import psutil

from probes.base import Sample

log = logging.getLogger(__name__)

UPTIME = "system_uptime_seconds"
BOOT_TIME = "system_boot_time_seconds"
REBOOTED = "system_rebooted"
REBOOT_REQUIRED = "system_reboot_required"
OOM_KILLS = "system_oom_kills_total"
OOM_KILLS_NEW = "system_oom_kills_new"
OPEN_FILES = "system_open_files"
OPEN_FILES_MAX = "system_open_files_max"
OPEN_FILES_PERCENT = "system_open_files_percent"

PROC = Path("/proc")
DEFAULT_REBOOT_REQUIRED_FILE = "/var/run/reboot-required"
BOOT_TIME_TOLERANCE_SECONDS = 60.0
STATE_FILE = "system.json"


class Unreadable(Exception):
    """A figure could not be read; the message says why, for the error sample."""


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise Unreadable(f"cannot read {path}: {exc.strerror or exc}") from None


def read_oom_kills(vmstat: Path) -> int | None:
    """The oom_kill counter, None on kernels that do not count it."""
    for line in _read_text(vmstat).splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            if not value.strip().isdigit():
                raise Unreadable(f"{vmstat}: oom_kill is not a number")
            return int(value)
    return None


def read_file_nr(file_nr: Path) -> tuple[int, int]:
    """(handles in use, limit). The middle field, free handles, is 0 since Linux 2.6."""
    fields = _read_text(file_nr).split()
    if len(fields) != 3 or not all(field.isdigit() for field in fields):
        raise Unreadable(f"{file_nr} is not three numbers")
    allocated, free, limit = map(int, fields)
    return allocated - free, limit


def read_uptime(uptime: Path) -> float:
    fields = _read_text(uptime).split()
    try:
        return float(fields[0])
    except (IndexError, ValueError):
        raise Unreadable(f"{uptime} holds no uptime") from None


def read_boot_id(boot_id: Path) -> str | None:
    try:
        return boot_id.read_text(encoding="ascii").strip() or None
    except OSError:
        return None  # not Linux: the boot time alone tells reboots apart


def reboot_required(path: Path) -> bool:
    try:
        path.stat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise Unreadable(f"cannot check {path}: {exc.strerror or exc}") from None
    return True


@dataclass(frozen=True)
class Boot:
    """What identifies one boot of the machine, and the OOM kill count seen during it."""

    boot_id: str | None
    boot_time: float
    oom_kills: int | None = None

    def same_boot(self, other: "Boot") -> bool:
        if self.boot_id and other.boot_id:
            return self.boot_id == other.boot_id
        return abs(self.boot_time - other.boot_time) <= BOOT_TIME_TOLERANCE_SECONDS


def new_oom_kills(previous: Boot | None, current: Boot) -> int | None:
    if current.oom_kills is None:
        return None
    if previous is None:
        return 0  # nothing to compare with: the first collection is the baseline
    if not previous.same_boot(current):
        return current.oom_kills  # the counter restarted at boot
    if previous.oom_kills is None:
        return 0
    return max(0, current.oom_kills - previous.oom_kills)


def load_boot(path: Path) -> Boot | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Boot(data.get("boot_id"), float(data["boot_time"]), data.get("oom_kills"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring the unreadable state file %s: %s", path, exc)
        return None


def save_boot(path: Path, boot: Boot) -> None:
    temporary = path.with_suffix(".tmp")
    try:
        temporary.write_text(json.dumps(asdict(boot)), encoding="utf-8")
        os.replace(temporary, path)  # atomic: a crash leaves the old state or the new
    except OSError as exc:
        log.warning("cannot save the probe state to %s: %s", path, exc.strerror or exc)


class SystemProbe:
    kind: ClassVar[str] = "system"

    @dataclass(frozen=True)
    class Options:
        reboot_required_file: str = DEFAULT_REBOOT_REQUIRED_FILE

        def __post_init__(self) -> None:
            if not os.path.isabs(self.reboot_required_file):
                raise ValueError("reboot_required_file must be an absolute path")

    def __init__(self, name: str, options: Options, proc: Path = PROC) -> None:
        self.name = name
        self.options = options
        self.proc = proc
        self._state_file: Path | None = None
        self._last: Boot | None = None

    def use_state_dir(self, directory: Path) -> None:
        self._state_file = directory / STATE_FILE
        self._last = load_boot(self._state_file)

    def collect(self, now: float) -> list[Sample]:
        samples: list[Sample] = []
        samples += self._measure(UPTIME, now, self._uptime)
        samples += self._boot_samples(now)
        samples += self._measure(REBOOT_REQUIRED, now, self._reboot_required)
        samples += self._open_file_samples(now)
        return samples

    def _uptime(self) -> float:
        try:
            return read_uptime(self.proc / "uptime")
        except Unreadable as exc:
            try:
                return time.time() - psutil.boot_time()  # not Linux
            except (OSError, RuntimeError):
                raise exc from None

    def _reboot_required(self) -> float:
        return 1.0 if reboot_required(Path(self.options.reboot_required_file)) else 0.0

    def _boot_samples(self, now: float) -> list[Sample]:
        oom_samples, oom_kills = self._oom_total(now)
        try:
            boot_time = psutil.boot_time()
        except (OSError, RuntimeError) as exc:
            return [Sample(BOOT_TIME, math.nan, now, error=f"no boot time: {exc}"), *oom_samples]
        current = Boot(read_boot_id(self.proc / "sys/kernel/random/boot_id"), boot_time, oom_kills)
        previous = self._last
        rebooted = previous is not None and not previous.same_boot(current)
        samples = [
            Sample(BOOT_TIME, boot_time, now),
            Sample(REBOOTED, 1.0 if rebooted else 0.0, now),
            *oom_samples,
        ]
        new = new_oom_kills(previous, current)
        if new is not None:
            samples.append(Sample(OOM_KILLS_NEW, float(new), now))
        self._remember(current)
        return samples

    def _oom_total(self, now: float) -> tuple[list[Sample], int | None]:
        try:
            count = read_oom_kills(self.proc / "vmstat")
        except Unreadable as exc:
            return [Sample(OOM_KILLS, math.nan, now, error=str(exc))], None
        if count is None:
            log.debug("this kernel does not count OOM kills in vmstat")
            return [], None
        return [Sample(OOM_KILLS, float(count), now)], count

    def _remember(self, current: Boot) -> None:
        changed = current != self._last
        self._last = current
        if changed and self._state_file is not None:
            save_boot(self._state_file, current)

    def _open_file_samples(self, now: float) -> list[Sample]:
        try:
            used, limit = read_file_nr(self.proc / "sys/fs/file-nr")
        except Unreadable as exc:
            return [Sample(OPEN_FILES, math.nan, now, error=str(exc))]
        percent = 100.0 * used / limit if limit > 0 else math.nan
        return [
            Sample(OPEN_FILES, float(used), now),
            Sample(OPEN_FILES_MAX, float(limit), now),
            Sample(OPEN_FILES_PERCENT, percent, now),
        ]

    @staticmethod
    def _measure(metric: str, now: float, read: Callable[[], float]) -> list[Sample]:
        try:
            return [Sample(metric, read(), now)]
        except Unreadable as exc:
            return [Sample(metric, math.nan, now, error=str(exc))]
