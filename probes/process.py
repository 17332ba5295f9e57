"""Whether a process runs, how much CPU and memory it uses, and how often it was started.

A process is found by exact name, by a regular expression searched in its command line,
or by a pidfile. The daemon's own process never matches a name or a command line: a config
that watches for `python` must not count forewarn itself.

CPU is measured with `psutil.Process.cpu_percent` on handles the probe keeps between calls
(their previous reading is the baseline), so the figure covers the time since the previous
collection, and may exceed 100 for a process busy on several cores. A process seen for the
first time has no baseline yet and counts 0 % on that call.

Exits are seen at once. Between scheduled runs the probe's watcher holds a pidfd
(`os.pidfd_open`, Linux 5.3 and later) on every matched process and polls them together;
the moment one becomes readable the process has exited (or turned zombie), and the watcher
reports a fresh collection, so `process_count` drops within milliseconds rather than at the
next run. The watcher matches again every few seconds (`RESCAN_SECONDS`), and takes every
scheduled run's matches too, so a process started since is watched as well. Where pidfds are
not available (an older kernel, another OS) the watcher does nothing and exits are seen at
the next scheduled run, as before.

Options (exactly one): `match_name` (exact process name), `match_cmdline` (a regular
expression searched in the command line joined by spaces), `pidfile`.

Metrics, labels {"process": probe name}:
- `process_count`: matching processes running now (0 with the reason in `error` when a
  pidfile names no running process).
- `process_cpu_percent`: their CPU use since the previous collection, summed.
- `process_memory_bytes`: their resident memory, summed.
- `process_starts_total`: processes that appeared since the probe started (a new PID, or the
  same PID with a new start time), counted whenever the probe looks: scheduled runs, the
  watcher's exits and rescans. The first look is the baseline and counts nothing. A crash
  loop shows as a rising counter (`rate` in a rule with a `window`); a process that starts
  and exits between two looks is not counted, so the figure is a lower bound. Resets when
  the daemon restarts, like any counter.

Example:

    [[probe]]
    name = "nginx"
    kind = "process"
    pidfile = "/run/nginx.pid"
    interval = "1m"
"""

import contextlib
import logging
import os
import re
import select
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import psutil

from probes.base import Emit, Sample

log = logging.getLogger(__name__)

COUNT = "process_count"
CPU_PERCENT = "process_cpu_percent"
MEMORY_BYTES = "process_memory_bytes"
STARTS = "process_starts_total"

POLL_SECONDS = 0.25  # the longest the watcher waits before it looks at `stop` again
RESCAN_SECONDS = 5.0  # how often the watcher matches again, for processes started since

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


def pidfd_supported() -> bool:
    """Whether this kernel and Python can give a pidfd (Linux >= 5.3, Python >= 3.9)."""
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # ENOSYS on an older kernel, EPERM under a strict seccomp filter
        return False
    return True


class ExitWatch:
    """pidfds of the watched processes, polled together: one turns readable when it exits."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._by_fd: dict[int, psutil.Process] = {}

    def watch_only(self, processes: Iterable[psutil.Process]) -> bool:
        """Watch exactly `processes`; True when one of them had already gone."""
        wanted = set(processes)
        for fd, proc in list(self._by_fd.items()):
            if proc not in wanted:
                self._forget(fd)
        watched = set(self._by_fd.values())
        opened = [self._open(proc) for proc in wanted - watched]
        return not all(opened)

    def pids(self) -> set[int]:
        return {proc.pid for proc in self._by_fd.values()}

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True when a watched process exited meanwhile."""
        ready = self._poll.poll(timeout * 1000)
        for fd, _event in ready:
            self._forget(fd)
        return bool(ready)

    def close(self) -> None:
        for fd in list(self._by_fd):
            self._forget(fd)

    def _open(self, proc: psutil.Process) -> bool:
        try:
            fd = os.pidfd_open(proc.pid)
        except ProcessLookupError:
            return False
        if not proc.is_running():  # the PID was reused between the match and the open
            os.close(fd)
            return False
        self._by_fd[fd] = proc
        self._poll.register(fd, select.POLLIN)
        return True

    def _forget(self, fd: int) -> None:
        self._poll.unregister(fd)
        del self._by_fd[fd]
        os.close(fd)


def _count_new(before: dict[int, psutil.Process], after: dict[int, psutil.Process]) -> int:
    """Handles in `after` that `before` did not have: processes started in between."""
    return sum(1 for pid, handle in after.items() if before.get(pid) is not handle)


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
        # Scheduled runs and the watcher both track handles: one at a time.
        self._lock = threading.Lock()
        self._tracked: dict[int, psutil.Process] = {}
        self._looked = False  # the first look is the baseline of process_starts_total
        self._starts = 0
        self._watched_pids: set[int] = set()

    def collect(self, now: float) -> list[Sample]:
        labels = {"process": self.name}
        with self._lock:
            found, error = self._match()
            measured = [m for m in map(usage, self._track(found)) if m is not None]
            starts = self._starts
        return [
            Sample(COUNT, float(len(measured)), now, labels, error),
            Sample(CPU_PERCENT, float(sum(cpu for cpu, _ in measured)), now, labels),
            Sample(MEMORY_BYTES, float(sum(rss for _, rss in measured)), now, labels),
            Sample(STARTS, float(starts), now, labels),
        ]

    def watch(self, emit: Emit, stop: threading.Event) -> None:
        """Report a fresh collection the moment a matched process exits (see the module)."""
        if not pidfd_supported():
            log.info("process %s: no pidfd here; exits are seen at scheduled runs", self.name)
            stop.wait()
            return
        with contextlib.closing(ExitWatch()) as exits:
            self._watch_exits(exits, emit, stop)

    def watched_pids(self) -> set[int]:
        """The PIDs the watcher holds a pidfd on now (empty when it is not running)."""
        return set(self._watched_pids)

    def _watch_exits(self, exits: ExitWatch, emit: Emit, stop: threading.Event) -> None:
        next_scan = 0.0
        while not stop.is_set():
            if time.monotonic() >= next_scan:
                self._rescan()
                next_scan = time.monotonic() + RESCAN_SECONDS
            with self._lock:
                already_gone = exits.watch_only(self._tracked.values())
            self._watched_pids = exits.pids()
            if exits.wait(POLL_SECONDS) or already_gone:
                emit(self.collect(time.time()))

    def _rescan(self) -> None:
        with self._lock:
            self._track(self._match()[0])

    def _match(self) -> tuple[list[psutil.Process], str | None]:
        try:
            return self.matching_processes(), None
        except PidfileError as exc:
            return [], str(exc)

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
        if self._looked:
            self._starts += _count_new(self._tracked, tracked)
        self._tracked, self._looked = tracked, True
        return list(tracked.values())
