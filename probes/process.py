"""Whether a process runs, and how much CPU and memory it uses.

A process is found by exact name, by a regular expression searched in its command line,
or by a pidfile. The daemon's own process never matches a name or a command line: a config
that watches for `python` must not count forewarn itself.

CPU is measured with `psutil.Process.cpu_percent` on handles the probe keeps between calls
(their previous reading is the baseline), so the figure covers the time since the previous
collection, and may exceed 100 for a process busy on several cores. A process seen for the
first time has no baseline yet and counts 0 % on that call.
"""

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import psutil

from probes.base import Sample

log = logging.getLogger(__name__)

COUNT = "process_count"
CPU_PERCENT = "process_cpu_percent"
MEMORY_BYTES = "process_memory_bytes"

MATCHERS = ("match_name", "match_cmdline", "pidfile")


class PidfileError(Exception):
    """The pidfile names no running process; the message says why, for the ticket."""


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def read_pidfile(path: str) -> psutil.Process:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            words = file.read(64).split()
    except FileNotFoundError:
        raise PidfileError(f"pidfile missing: {path}") from None
    except OSError as exc:
        raise PidfileError(f"cannot read pidfile {path}: {exc.strerror}") from None
    if not words or not words[0].isdigit() or int(words[0]) == 0:
        raise PidfileError(f"pidfile {path} holds no pid")
    pid = int(words[0])
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        proc = None
    if proc is None or not _alive(proc):
        raise PidfileError(f"process {pid} from pidfile {path} is not running")
    return proc


def _own_handle(found: psutil.Process) -> psutil.Process | None:
    """A handle of our own: psutil.process_iter shares its handles process-wide, and anyone
    calling cpu_percent on a shared one would move our baseline."""
    try:
        handle = psutil.Process(found.pid)
    except psutil.NoSuchProcess:
        return None
    return handle if handle == found else None  # equal means same pid and same start time


def usage(proc: psutil.Process) -> tuple[float, int] | None:
    """(cpu percent, resident bytes), or None when the process has gone."""
    try:
        with proc.oneshot():
            return proc.cpu_percent(interval=None), proc.memory_info().rss
    except psutil.NoSuchProcess:  # also a zombie: it has exited
        return None
    except psutil.AccessDenied:
        log.debug("no access to the usage of process %d; counted without it", proc.pid)
        return 0.0, 0


def _check_pattern(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"match_cmdline is not a valid regular expression: {exc}") from None


class ProcessProbe:
    kind: ClassVar[str] = "process"

    @dataclass(frozen=True)
    class Options:
        """Exactly one of: `match_name` (the exact process name), `match_cmdline` (a regular
        expression searched in the command line joined by spaces), `pidfile`."""

        match_name: str | None = None
        match_cmdline: str | None = None
        pidfile: str | None = None

        def __post_init__(self) -> None:
            given = [key for key in MATCHERS if getattr(self, key) is not None]
            if len(given) != 1:
                raise ValueError(
                    f"exactly one of {', '.join(MATCHERS)} is required, got {len(given)}"
                )
            if getattr(self, given[0]) == "":
                raise ValueError(f"{given[0]} must not be empty")
            if self.match_cmdline is not None:
                _check_pattern(self.match_cmdline)

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self._pattern = re.compile(options.match_cmdline) if options.match_cmdline else None
        self._tracked: dict[int, psutil.Process] = {}

    def collect(self, now: float) -> list[Sample]:
        labels = {"process": self.name}
        try:
            found = self.matching_processes()
            error = None
        except PidfileError as exc:
            found, error = [], str(exc)
        measured = [m for m in map(usage, self._track(found)) if m is not None]
        return [
            Sample(COUNT, float(len(measured)), now, labels, error),
            Sample(CPU_PERCENT, sum(cpu for cpu, _ in measured), now, labels),
            Sample(MEMORY_BYTES, float(sum(rss for _, rss in measured)), now, labels),
        ]

    def matching_processes(self) -> list[psutil.Process]:
        """The processes that match now. Raises PidfileError when a pidfile names none."""
        if self.options.pidfile is not None:
            return [read_pidfile(self.options.pidfile)]
        return list(self._scan())

    def _scan(self) -> Iterator[psutil.Process]:
        attribute = "name" if self.options.match_name is not None else "cmdline"
        own_pid = os.getpid()
        for proc in psutil.process_iter([attribute, "status"]):
            info = proc.info
            alive = info["status"] != psutil.STATUS_ZOMBIE
            if alive and proc.pid != own_pid and self._matches(info[attribute]):
                yield proc

    def _matches(self, value: str | list[str] | None) -> bool:
        if value is None:  # not allowed to read it
            return False
        if self._pattern is not None:
            return self._pattern.search(" ".join(value)) is not None
        return value == self.options.match_name

    def _track(self, found: list[psutil.Process]) -> list[psutil.Process]:
        """Reuse the handle kept from the previous call, so cpu_percent has its baseline."""
        tracked: dict[int, psutil.Process] = {}
        for proc in found:
            known = self._tracked.get(proc.pid)
            handle = known if known == proc else _own_handle(proc)
            if handle is not None:
                tracked[proc.pid] = handle
        self._tracked = tracked
        return list(tracked.values())
