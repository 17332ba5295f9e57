"""Linux software RAID (md) arrays, as the kernel describes them in /proc/mdstat.

For each array: whether it runs, how many members it misses, has lost or keeps as spares,
and whether it is rebuilding (resync, recovery, reshape) or checking (a scrub), with the
progress and the kernel's estimate of the time left.

A machine without the md driver has no /proc/mdstat: that is no arrays and no samples, not
an error. A file that exists and cannot be read, or a configured `mdstat_path` that does not
exist, is an error (`raid_up` 0).

Options:
    mdstat_path   the file to read (default /proc/mdstat; tests point it at captured files).

Metrics, labelled {array, level} (e.g. md0, raid1; level is "" for an inactive array that
does not say):
    raid_active                  1 active (also read-only), 0 inactive
    raid_degraded                members missing: n - m of the kernel's [n/m], 0 when whole
                                 (only for levels that print [n/m]; not raid0 or linear)
    raid_disks                   member slots (n of [n/m]; else the members listed)
    raid_disks_active            members in sync (m of [n/m]; else listed, not failed/spare)
    raid_disks_failed            members marked faulty (F)
    raid_disks_spare             spare members (S)
    raid_rebuilding              1 while a resync, recovery or reshape runs
    raid_checking                1 while a check (scrub) runs
    raid_sync_pending            1 when a resync waits (resync=DELAYED or resync=PENDING)
    raid_sync_progress_percent   progress of the running resync/recovery/reshape/check
    raid_sync_eta_seconds        the kernel's estimate of the time left (finish=...)
and, without labels:
    raid_up                      1 when the file was read, 0 (with the error) when not

Example:

    [[probe]]
    name = "raid"
    kind = "raid"
    interval = "1m"
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import ClassVar

from probes.base import Sample

DEFAULT_MDSTAT = "/proc/mdstat"
UP = "raid_up"

_ARRAY = re.compile(r"^(md[\w/-]*)\s+:\s+(\S.*)$")
_MEMBER = re.compile(r"^\S+?\[\d+\]((?:\([A-Z]\))*)$")
_SLOTS = re.compile(r"\[(\d+)/(\d+)\]\s+\[[U_]+\]")
_PROGRESS = re.compile(r"\b(resync|recovery|reshape|check|repair)\s*=\s*([\d.]+)%")
_FINISH = re.compile(r"\bfinish=([\d.]+)min\b")
_WAITING = re.compile(r"\bresync\s*=\s*(DELAYED|PENDING)\b")
_REBUILDS = ("resync", "recovery", "reshape")
_CHECKS = ("check", "repair")  # the kernel prints a requested repair as "resync"


@dataclass(frozen=True)
class Array:
    """One md array, as one block of /proc/mdstat tells it."""

    name: str
    active: bool
    level: str
    flags: tuple[str, ...]  # one string of (F), (S), (W)... letters per listed member
    slots: tuple[int, int] | None  # the kernel's [n/m]: member slots, members in sync
    action: str | None = None  # resync, recovery, reshape, check
    progress: float | None = None
    eta_seconds: float | None = None
    waiting: bool = False

    @property
    def failed(self) -> int:
        return sum("F" in member for member in self.flags)

    @property
    def spares(self) -> int:
        return sum("S" in member for member in self.flags)

    @property
    def disks(self) -> int:
        if self.slots is not None:
            return self.slots[0]
        return sum("S" not in member for member in self.flags)

    @property
    def in_sync(self) -> int:
        if self.slots is not None:
            return self.slots[1]
        return sum("S" not in member and "F" not in member for member in self.flags)


def _header(name: str, rest: str) -> Array:
    """`active (auto-read-only) raid1 sdb2[0] sdc2[1](F)` after `md11 : `."""
    words = rest.split()
    state, words = words[0], [w for w in words[1:] if not w.startswith("(")]
    level = words[0] if words and not _MEMBER.match(words[0]) else ""
    members = [_MEMBER.match(word) for word in words]
    flags = tuple(m.group(1) for m in members if m is not None)
    return Array(name, state == "active", level, flags, slots=None)


def _with_detail(array: Array, line: str) -> Array:
    """The array with what one of its indented lines adds."""
    if slots := _SLOTS.search(line):
        array = replace(array, slots=(int(slots.group(1)), int(slots.group(2))))
    if progress := _PROGRESS.search(line):
        array = replace(array, action=progress.group(1), progress=float(progress.group(2)))
    if finish := _FINISH.search(line):
        array = replace(array, eta_seconds=float(finish.group(1)) * 60)
    if _WAITING.search(line):
        array = replace(array, waiting=True)
    return array


def parse_mdstat(text: str) -> list[Array]:
    """Every array in the text of /proc/mdstat, in the kernel's order."""
    arrays: list[Array] = []
    for line in text.splitlines():
        header = _ARRAY.match(line)
        if header:
            arrays.append(_header(header.group(1), header.group(2)))
        elif arrays and line[:1].isspace():
            arrays[-1] = _with_detail(arrays[-1], line)
    return arrays


def _flag(value: bool) -> float:
    return 1.0 if value else 0.0


def array_samples(array: Array, now: float) -> Iterator[Sample]:
    labels = {"array": array.name, "level": array.level}
    values: dict[str, float] = {
        "raid_active": _flag(array.active),
        "raid_disks": float(array.disks),
        "raid_disks_active": float(array.in_sync),
        "raid_disks_failed": float(array.failed),
        "raid_disks_spare": float(array.spares),
        "raid_rebuilding": _flag(array.action in _REBUILDS),
        "raid_checking": _flag(array.action in _CHECKS),
        "raid_sync_pending": _flag(array.waiting),
    }
    if array.slots is not None:
        values["raid_degraded"] = float(max(0, array.slots[0] - array.slots[1]))
    if array.progress is not None:
        values["raid_sync_progress_percent"] = array.progress
    if array.eta_seconds is not None:
        values["raid_sync_eta_seconds"] = array.eta_seconds
    for metric, value in values.items():
        yield Sample(metric, value, now, labels)


class RaidProbe:
    kind: ClassVar[str] = "raid"

    @dataclass(frozen=True)
    class Options:
        mdstat_path: str = field(default=DEFAULT_MDSTAT)

        def __post_init__(self) -> None:
            if not self.mdstat_path:
                raise ValueError("mdstat_path must not be empty")

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options

    def collect(self, now: float) -> list[Sample]:
        path = self.options.mdstat_path
        try:
            with open(path, encoding="ascii", errors="replace") as file:
                text = file.read()
        except FileNotFoundError:
            if path == DEFAULT_MDSTAT:  # no md driver loaded: no arrays
                return []
            return [Sample(UP, 0.0, now, {}, f"{path} does not exist")]
        except OSError as exc:
            return [Sample(UP, 0.0, now, {}, f"cannot read {path}: {exc.strerror}")]
        samples = [Sample(UP, 1.0, now, {})]
        for array in parse_mdstat(text):
            samples.extend(array_samples(array, now))
        return samples
