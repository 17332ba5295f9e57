"""Whether the system clock is synchronised, and how far off it may be.

Sources, tried in this order by `source = "auto"` (the first that answers is reported):
- `adjtimex`: the kernel's own view, read with adjtimex(2) (modes 0: reads, changes
  nothing, needs no privilege). Whatever keeps the clock (chronyd, ntpd,
  systemd-timesyncd) reports its state to the kernel, so this works on any Linux host,
  in containers too. Synchronised means the kernel's clock state is not TIME_ERROR and
  STA_UNSYNC is clear, as node_exporter's `node_timex_sync_status` reads it.
- `chrony`: `chronyc -n -c tracking`, when chronyc is installed. Synchronised means a leap
  status other than "Not synchronised" and a reference other than chrony's `local`
  fallback (reference id 7F7F0101: the machine serving its own clock is not synchronised).
- `timedatectl`: `timedatectl show`, its `NTPSynchronized` (systemd hosts; no offset).
Commands run as argument lists, without a shell, with a clean environment and a timeout.

Options:
- `source`: `auto` (the default), `adjtimex`, `chrony` or `timedatectl`.
- `chrony_address`: where chronyc finds chronyd (`chronyc -h`): the path of its command
  socket, or a host whose chronyd allows monitoring (`cmdallow`); default chronyc's own.
- `command_timeout`: how long chronyc or timedatectl may take (default 5s).

Metrics, labels `{"source"}` (the source that answered: adjtimex, chrony, timedatectl):
- `clock_synchronized`: 1 or 0; 0 with an error when no source could be read (labelled
  with the source tried first, so the series is the same one when it recovers).
- `clock_offset_seconds`: the correction still to apply, in the NTP sense (reference
  time minus system time: positive means the clock is behind). adjtimex: the offset the
  kernel PLL is still slewing away (ntpd, systemd-timesyncd; chronyd does not use the
  PLL, so there it stays 0: use `source = "chrony"` for chrony's own offset); chrony:
  "System time". Not from timedatectl.
- `clock_maxerror_seconds`: an upper bound of the clock's error. adjtimex: the kernel's
  maximum error (it grows by 500 µs a second while nothing synchronises the clock, and
  the kernel caps it at 16 s); chrony: |offset| + root dispersion + root delay / 2, the
  bound chrony's documentation gives.
- `clock_esterror_seconds`: the kernel's estimated error (adjtimex only).

Example:

    [[probe]]
    name = "clock"
    kind = "clock"
    interval = "5m"
"""

import ctypes
import functools
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from probes._text import first_line
from probes.base import Duration, Sample

log = logging.getLogger(__name__)

SYNCHRONIZED = "clock_synchronized"
OFFSET = "clock_offset_seconds"
MAXERROR = "clock_maxerror_seconds"
ESTERROR = "clock_esterror_seconds"

SOURCES = ("auto", "adjtimex", "chrony", "timedatectl")
DEFAULT_COMMAND_TIMEOUT = Duration(5)
CLEAN_ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C"}

# <sys/timex.h>
STA_UNSYNC = 0x0040
STA_NANO = 0x2000
TIME_ERROR = 5

CHRONY_LOCAL_REFERENCE = "7F7F0101"
CHRONY_UNSYNCHRONISED = "Not synchronised"
CHRONY_FIELDS = 14
NO_SOURCE = "no clock source: no adjtimex here, and neither chronyc nor timedatectl installed"


class Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class Timex(ctypes.Structure):
    """glibc's `struct timex` (longs and ints, then eleven padding ints)."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("padding", ctypes.c_int * 11),
    )


class SourceFailed(Exception):
    """A source could not be read; the message says why, for the error sample."""


@dataclass(frozen=True)
class Reading:
    source: str
    synchronized: bool
    offset_seconds: float | None = None
    maxerror_seconds: float | None = None
    esterror_seconds: float | None = None

    def samples(self, now: float) -> list[Sample]:
        labels = {"source": self.source}
        samples = [Sample(SYNCHRONIZED, 1.0 if self.synchronized else 0.0, now, labels)]
        for metric, value in (
            (OFFSET, self.offset_seconds),
            (MAXERROR, self.maxerror_seconds),
            (ESTERROR, self.esterror_seconds),
        ):
            if value is not None:
                samples.append(Sample(metric, value, now, labels))
        return samples


# --- adjtimex --------------------------------------------------------------------------------


@functools.cache
def _adjtimex_function() -> Callable[[Any], int] | None:
    if not sys.platform.startswith("linux"):
        return None  # the BSDs and macOS lay out their struct timex differently
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter already uses
    except OSError:
        return None
    function = getattr(libc, "adjtimex", None)
    if function is not None:
        function.argtypes = (ctypes.POINTER(Timex),)
        function.restype = ctypes.c_int
    return function


def adjtimex_available() -> bool:
    return _adjtimex_function() is not None


def reading_from_timex(timex: Timex, state: int) -> Reading:
    offset_unit = 1e-9 if timex.status & STA_NANO else 1e-6
    synchronized = state != TIME_ERROR and not timex.status & STA_UNSYNC
    return Reading(
        "adjtimex",
        synchronized,
        offset_seconds=timex.offset * offset_unit,
        maxerror_seconds=timex.maxerror * 1e-6,  # always microseconds
        esterror_seconds=timex.esterror * 1e-6,
    )


def read_adjtimex() -> Reading:
    function = _adjtimex_function()
    if function is None:
        raise SourceFailed("adjtimex is not available on this platform")
    timex = Timex()  # modes 0: read only
    state = function(ctypes.byref(timex))
    if state == -1:
        raise SourceFailed(f"adjtimex failed: {os.strerror(ctypes.get_errno())}")
    return reading_from_timex(timex, state)


# --- commands --------------------------------------------------------------------------------


def run_command(argv: list[str], timeout: float) -> str:
    """The command's standard output. Raises SourceFailed with a short reason."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", timeout=timeout,
            env=CLEAN_ENVIRONMENT, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except FileNotFoundError:
        raise SourceFailed(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise SourceFailed(f"{argv[0]} timed out after {timeout:g}s") from None
    except OSError as exc:
        raise SourceFailed(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        said = first_line(done.stdout) or first_line(done.stderr) or "no output"
        raise SourceFailed(f"{argv[0]} failed (exit status {done.returncode}): {said}")
    return done.stdout


def parse_chrony_tracking(text: str) -> Reading:
    """`chronyc -c tracking`: reference id, name, stratum, reference time, system time,
    last offset, RMS offset, frequency, residual frequency, skew, root delay, root
    dispersion, update interval, leap status."""
    fields = first_line(text).split(",")
    if len(fields) != CHRONY_FIELDS:
        raise SourceFailed(f"chronyc printed {len(fields)} fields, not {CHRONY_FIELDS}")
    try:
        offset, root_delay, root_dispersion = (float(fields[i]) for i in (4, 10, 11))
    except ValueError:
        raise SourceFailed("chronyc printed a field that is not a number") from None
    leap, reference = fields[13].strip(), fields[0].strip().upper()
    synchronized = leap != CHRONY_UNSYNCHRONISED and reference != CHRONY_LOCAL_REFERENCE
    maxerror = abs(offset) + root_dispersion + root_delay / 2
    return Reading("chrony", synchronized, offset_seconds=offset, maxerror_seconds=maxerror)


def parse_timedatectl_show(text: str) -> Reading:
    properties = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    value = properties.get("NTPSynchronized")
    if value not in ("yes", "no"):
        raise SourceFailed("timedatectl printed no NTPSynchronized")
    return Reading("timedatectl", value == "yes")


# --- the probe -------------------------------------------------------------------------------


class ClockProbe:
    kind: ClassVar[str] = "clock"

    @dataclass(frozen=True)
    class Options:
        source: str = "auto"
        chrony_address: str | None = None
        command_timeout: Duration = DEFAULT_COMMAND_TIMEOUT

        def __post_init__(self) -> None:
            if self.source not in SOURCES:
                raise ValueError(f"source must be one of {', '.join(SOURCES)}")
            if self.command_timeout <= 0:
                raise ValueError("command_timeout must be more than 0s")
            if self.chrony_address is not None and (
                not self.chrony_address or self.chrony_address.startswith("-")
            ):
                raise ValueError("chrony_address must be a socket path or a host name")

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options

    def collect(self, now: float) -> list[Sample]:
        sources = self._sources()
        failures: list[str] = []
        for source in sources:
            try:
                return self._read(source).samples(now)
            except SourceFailed as exc:
                log.debug("clock source %s: %s", source, exc)
                failures.append(str(exc))
        # Labelled with the preferred source, so the series stays the same when it recovers.
        labels = {"source": sources[0] if sources else "none"}
        error = "; ".join(failures) or NO_SOURCE
        return [Sample(SYNCHRONIZED, 0.0, now, labels, error)]

    def _sources(self) -> list[str]:
        """The sources to try in order: the configured one, or all this host has."""
        if self.options.source != "auto":
            return [self.options.source]
        present = {
            "adjtimex": adjtimex_available(),
            "chrony": shutil.which("chronyc") is not None,
            "timedatectl": shutil.which("timedatectl") is not None,
        }
        return [source for source, here in present.items() if here]

    def _read(self, source: str) -> Reading:
        timeout = float(self.options.command_timeout)
        if source == "adjtimex":
            return read_adjtimex()
        if source == "chrony":
            return parse_chrony_tracking(run_command(self.chrony_command(), timeout))
        return parse_timedatectl_show(run_command(["timedatectl", "show"], timeout))

    def chrony_command(self) -> list[str]:
        address = self.options.chrony_address
        host = ["-h", address] if address else []
        return ["chronyc", "-n", *host, "-c", "tracking"]
