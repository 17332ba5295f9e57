"""The state of systemd units, read with `systemctl show`.

One `systemctl show --property=... -- UNIT...` per run covers every unit (an argument list,
no shell, a clean environment, a timeout). `units` names units as `systemctl` takes them
(`nginx` means `nginx.service`); a name with a glob (`*`, `?`, `[...]`) is expanded with
`systemctl list-units --all --plain --no-legend --full PATTERN` first, which lists the units
systemd has loaded (running, failed, or referenced by another unit), not every unit file
on disk. D-Bus is not used: `systemctl` is everywhere systemd is, and says the same.

Metrics, labels {"unit": the name as written in `units`, or as listed for a glob}:
- `systemd_unit_active`: 1 when ActiveState is `active` or `reloading` (up and serving),
  else 0.
- `systemd_unit_failed`: 1 when ActiveState is `failed`, else 0.
- `systemd_unit_state`: ActiveState as the number systemd itself gives it (its
  `UnitActiveState` enum): 0 active, 1 reloading, 2 inactive, 3 failed, 4 activating,
  5 deactivating, 6 maintenance, 7 refreshing. A service in a crash loop is `activating`
  (SubState `auto-restart`) between attempts, never `failed` until it gives up: 4.
- `systemd_unit_restarts_total`: NRestarts, the automatic restarts (Restart=) since the
  unit was last started by hand or loaded. NaN for unit types that have none (timers,
  sockets) and on systemd before 235.
- `systemd_unit_active_seconds`: how long the unit has been active
  (ActiveEnterTimestampMonotonic against this host's monotonic clock); NaN when not active.
  A small value means it was (re)started recently, by hand or by systemd.
When the unit is not active, `error` says what systemd says: the state and sub-state, the
result, and how the main process ended, e.g. `failed (failed): result exit-code, main
process exited with status 3`. A unit systemd does not know (`not-found`), a masked one
or one whose file has errors says so too. When `systemctl` itself fails, every configured
name gets `systemd_unit_active` 0 (and NaN for the rest) with the reason, such as
`systemd is not running (System has not been booted with systemd as init system (PID 1).
Can't operate.)` in a container without systemd.

Example:

    [[probe]]
    name = "services"
    kind = "systemd"
    units = ["nginx.service", "postgresql@*.service", "backup.timer"]
    interval = "30s"
"""

from __future__ import annotations

import fnmatch
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from probes._text import first_line
from probes.base import Sample

ACTIVE = "systemd_unit_active"
FAILED = "systemd_unit_failed"
STATE = "systemd_unit_state"
RESTARTS = "systemd_unit_restarts_total"
ACTIVE_SECONDS = "systemd_unit_active_seconds"

PROPERTIES = (
    "Id", "LoadState", "ActiveState", "SubState", "Result", "NRestarts",
    "ExecMainCode", "ExecMainStatus", "ActiveEnterTimestampMonotonic",
)  # fmt: skip
# systemd's UnitActiveState enum (src/basic/unit-def.h), in its order: the code is the index.
ACTIVE_STATES = (
    "active", "reloading", "inactive", "failed",
    "activating", "deactivating", "maintenance", "refreshing",
)  # fmt: skip
UP_STATES = ("active", "reloading")
SYSTEMCTL_TIMEOUT = 5.0  # seconds for all the run's systemctl calls together
# A clean environment: nothing of the daemon's reaches systemctl; C locale for stable text.
SYSTEMCTL_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "SYSTEMD_COLORS": "0"}
UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\@*?\[\]-]+$")
GLOB = re.compile(r"[*?\[]")
# ExecMainCode is a waitid() si_code: how the main process ended.
EXITED, KILLED, DUMPED = 1, 2, 3


class SystemctlError(Exception):
    """systemctl could not answer; the message is the reason, for the samples."""


# --- running systemctl ---------------------------------------------------------------------------


def run_systemctl(arguments: list[str], deadline: float) -> str:
    """systemctl's output; raises SystemctlError with a short reason when it fails."""
    binary = shutil.which("systemctl")
    if binary is None:
        raise SystemctlError("systemctl not found: systemd's tools are not installed")
    try:
        done = subprocess.run(
            [binary, "--no-pager", *arguments],
            capture_output=True, encoding="utf-8", errors="replace", env=SYSTEMCTL_ENV,
            stdin=subprocess.DEVNULL, timeout=max(0.1, deadline - time.monotonic()), check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise SystemctlError(f"systemctl timed out after {SYSTEMCTL_TIMEOUT:g}s") from None
    except OSError as exc:
        raise SystemctlError(f"systemctl could not run: {exc.strerror}") from None
    if done.returncode != 0:
        raise SystemctlError(failure_reason(done.stderr, done.returncode))
    return done.stdout


def failure_reason(stderr: str, returncode: int) -> str:
    first = first_line(stderr) or f"exit status {returncode}"
    if "not been booted with systemd" in stderr:
        return f"systemd is not running ({first})"
    return f"systemctl failed: {first}"


# --- parsing its output --------------------------------------------------------------------------


def parse_show(text: str) -> list[dict[str, str]]:
    """`systemctl show` output: one block of Key=Value lines per unit, blank-line separated."""
    blocks = []
    for chunk in re.split(r"\n\s*\n", text.strip()):
        pairs = (line.partition("=") for line in chunk.splitlines())
        blocks.append({key: value for key, sep, value in pairs if sep})
    return [block for block in blocks if block]


def parse_unit_list(text: str) -> list[str]:
    """Unit names from `systemctl list-units --plain --no-legend`: the first column."""
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def _number(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "", "[not set]") else math.nan
    except ValueError:
        return math.nan


def _how_it_ended(properties: Mapping[str, str]) -> str | None:
    code, status = properties.get("ExecMainCode"), properties.get("ExecMainStatus", "?")
    if code == str(EXITED):
        return f"main process exited with status {status}"
    if code in (str(KILLED), str(DUMPED)):
        dumped = ", dumped core" if code == str(DUMPED) else ""
        return f"main process killed by signal {status}{dumped}"
    return None


LOAD_PROBLEMS = {"not-found": "unit not found", "masked": "unit is masked"}


def describe(properties: Mapping[str, str]) -> str | None:
    """Why the unit is not up, in systemd's own words; None when it is up."""
    active = properties.get("ActiveState", "")
    if active in UP_STATES:  # even when its file has gone meanwhile: it runs
        return None
    load = properties.get("LoadState", "loaded")
    if load != "loaded":
        return LOAD_PROBLEMS.get(load, f"unit not loaded ({load})")
    state = f"{active or 'unknown'} ({properties.get('SubState', '?')})"
    result = properties.get("Result")
    how = [part for part in (result and f"result {result}", _how_it_ended(properties)) if part]
    return f"{state}: {', '.join(how)}" if how else state


def unit_samples(
    unit: str, properties: Mapping[str, str], now: float, monotonic_now: float
) -> list[Sample]:
    """The samples of one unit from its `systemctl show` properties."""
    active = properties.get("ActiveState", "")
    labels, error = {"unit": unit}, describe(properties)
    state = float(ACTIVE_STATES.index(active)) if active in ACTIVE_STATES else math.nan
    entered = _number(properties.get("ActiveEnterTimestampMonotonic"))
    up = active in UP_STATES
    since = monotonic_now - entered / 1e6 if up and entered > 0 else math.nan
    return [
        Sample(ACTIVE, 1.0 if up else 0.0, now, labels, error),
        Sample(FAILED, 1.0 if active == "failed" else 0.0, now, labels, error),
        Sample(STATE, state, now, labels, error),
        Sample(RESTARTS, _number(properties.get("NRestarts")), now, labels, error),
        Sample(ACTIVE_SECONDS, max(0.0, since) if up else math.nan, now, labels, error),
    ]


def failed_samples(unit: str, now: float, error: str) -> list[Sample]:
    """A unit nothing could be learned about: not active as far as anyone can tell."""
    labels = {"unit": unit}
    return [Sample(ACTIVE, 0.0, now, labels, error)] + [
        Sample(metric, math.nan, now, labels, error)
        for metric in (FAILED, STATE, RESTARTS, ACTIVE_SECONDS)
    ]


# --- the probe -----------------------------------------------------------------------------------


def _check_units(units: list[str]) -> None:
    if not units:
        raise ValueError("units must name at least one unit")
    for unit in units:  # "-.mount" is a unit: names go after "--", never read as options
        if not UNIT_NAME.match(unit):
            raise ValueError(
                f"{unit!r} is not a unit name (letters, digits, :_.\\@- and the globs *?[] only)"
            )
    if len(set(units)) != len(units):
        raise ValueError("units has duplicates")


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


class SystemdProbe:
    kind: ClassVar[str] = "systemd"

    @dataclass(frozen=True)
    class Options:
        """`units`: unit names as systemctl takes them; a name with `*`, `?` or `[...]`
        stands for every loaded unit it matches."""

        units: list[str]

        def __post_init__(self) -> None:
            _check_units(self.units)

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self._names = [unit for unit in options.units if not GLOB.search(unit)]
        self._globs = [unit for unit in options.units if GLOB.search(unit)]

    def collect(self, now: float) -> list[Sample]:
        deadline = time.monotonic() + SYSTEMCTL_TIMEOUT
        try:
            matched = self._expand(deadline)
            units = _unique([*self._names, *(u for names in matched.values() for u in names)])
            shown = self._show(units, deadline)
        except SystemctlError as exc:
            return [s for unit in self.options.units for s in failed_samples(unit, now, str(exc))]
        clock = time.monotonic()  # the clock of ActiveEnterTimestampMonotonic
        samples = [s for unit in units for s in unit_samples(unit, shown[unit], now, clock)]
        for pattern in (p for p, names in matched.items() if not names):
            samples += failed_samples(pattern, now, f"no loaded unit matches {pattern}")
        return samples

    def _expand(self, deadline: float) -> dict[str, list[str]]:
        """Each glob and the loaded units it matches."""
        if not self._globs:
            return {}
        listed = ["list-units", "--all", "--plain", "--no-legend", "--full", "--", *self._globs]
        names = parse_unit_list(run_systemctl(listed, deadline))
        return {glob: [n for n in names if fnmatch.fnmatchcase(n, glob)] for glob in self._globs}

    def _show(self, units: list[str], deadline: float) -> dict[str, dict[str, str]]:
        if not units:
            return {}
        shown = ["show", f"--property={','.join(PROPERTIES)}", "--", *units]
        blocks = parse_show(run_systemctl(shown, deadline))
        if len(blocks) != len(units):
            raise SystemctlError(f"systemctl show answered for {len(blocks)} of {len(units)} units")
        return dict(zip(units, blocks, strict=True))
