"""Runs a Nagios/Icinga plugin (any `check_*` program) and turns its result into samples.

The exit code is the state: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; any other code, a death
by signal, a program that cannot be started and a timeout are UNKNOWN (3), as in Icinga 2.
The plugin's performance data (after `|`) becomes samples in base units; see
`probes._perfdata` for the format, the units and which thresholds are kept.

Safety: the command is the argument list written in the config, run as is without a shell,
so nothing (no probe output, no label, no `$MACRO`) is ever interpolated into it. It starts
in `/` with stdin closed, in a session of its own, with a clean environment: only
`PATH=/usr/sbin:/usr/bin:/sbin:/bin` and `LANG=C`, plus what `env` adds. On timeout the whole
process group is killed; when the plugin exits, anything it left running in its group is
killed too, so a plugin that forks can neither outlive its check nor hold its output open.
At most 64 KiB of standard output (and of standard error) is kept; the rest is read and dropped.

Options:
- `command` (required): the program and its arguments, a list: `["check_load", "-w", "5,4,3"]`.
  A program name without `/` is looked up in `plugin_dir`, else in the usual plugin
  directories (`/usr/lib/nagios/plugins` on Debian, `/usr/lib64/nagios/plugins` on RHEL,
  `/usr/lib/monitoring-plugins`, `/usr/local/nagios/libexec`), then in the clean `PATH`.
- `env`: environment variables to add, a table of strings (can override `PATH` and `LANG`).
- `timeout` (default 10s): how long the plugin may run.
- `plugin_dir`: the directory where bare program names are looked up first.

Metrics (the scheduler adds the `probe` label):
- `command_status`: the state, 0-3. When it is not 0, `error` holds the first line of the
  plugin's output (its status text; or of its standard error when it printed nothing), or why it
  could not run.
- `command_ok`: 1 when the state is OK, else 0 (with the same `error`).
- `command_duration_seconds`: how long the plugin ran.
- `command_perfdata{label, uom}`: each perfdata value, in seconds, bytes, percent... (`uom` says
  which: `seconds`, `bytes`, `percent`, `counter`, `celsius`, "" or the unit as written);
  NaN with an `error` when the plugin wrote `U`.
- `command_perfdata_warn`, `_crit`, `_min`, `_max` `{label, uom}`: the thresholds and bounds the
  plugin gave as plain numbers, in the same base unit. Range thresholds (`10:`, `@10:20`) are
  not emitted.

Example:

    [[probe]]
    name = "load"
    kind = "command"
    command = ["check_load", "-w", "8,6,4", "-c", "16,12,8"]
    timeout = "10s"
"""

import logging
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import ClassVar

from probes._perfdata import Perfdata, PluginOutput, split_output
from probes._text import MAX_ERROR_CHARS
from probes.base import Duration, Sample

log = logging.getLogger(__name__)

STATUS = "command_status"
OK = "command_ok"
DURATION = "command_duration_seconds"
PERFDATA = "command_perfdata"
DEFAULT_TIMEOUT = Duration(10)
UNKNOWN = 3
STATE_NAMES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
CLEAN_ENVIRONMENT = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
PLUGIN_DIRS = (
    "/usr/lib/nagios/plugins",
    "/usr/lib64/nagios/plugins",
    "/usr/lib/monitoring-plugins",
    "/usr/local/nagios/libexec",
)
MAX_OUTPUT_BYTES = 64 * 1024
POLL_SECONDS = 0.05  # how often to look for the plugin's exit where pidfds are missing
REAP_SECONDS = 0.5  # a killed process in uninterruptible sleep is left to the kernel after this
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
LIST_HINT = 'write it as a list of arguments, e.g. ["check_load", "-w", "8,6,4"]'


def _check_command(command: list[str]) -> None:
    if isinstance(command, str):
        raise ValueError(f"command must be a list, not a string (no shell runs it); {LIST_HINT}")
    if not command or not all(isinstance(arg, str) for arg in command):
        raise ValueError(f"command must be a non-empty list of strings; {LIST_HINT}")
    program = command[0]
    if not program or ("/" in program and not program.startswith("/")):
        raise ValueError("command's first item must be a program name or an absolute path")
    if any("\0" in arg for arg in command):
        raise ValueError("command must not contain a NUL character")


def _check_env(env: dict[str, str]) -> None:
    for name, value in env.items():
        if not ENV_NAME.fullmatch(name):
            raise ValueError(f"env: {name!r} is not an environment variable name")
        if "\0" in value:
            raise ValueError(f"env: {name} must not contain a NUL character")


def _short(text: str) -> str:
    """The first line, without control characters (a terminal escape), at most 200 chars."""
    lines = text.strip().splitlines()
    return CONTROL.sub(" ", lines[0]).strip()[:MAX_ERROR_CHARS] if lines else ""


@dataclass(frozen=True)
class PluginRun:
    """What happened to one run: its exit code (negative: the signal that killed it)."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool


def run_plugin(
    argv: list[str], env: dict[str, str], timeout: float, limit: int = MAX_OUTPUT_BYTES
) -> PluginRun:
    """Run `argv` without a shell, within `timeout`; raises OSError when it cannot start."""
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd="/",
        start_new_session=True,  # its own process group, to kill whatever it forks
        close_fds=True,
    )
    watch = _PluginWatch(process, limit)
    try:
        finished = watch.wait(time.monotonic() + timeout)
    finally:
        _kill_group(process.pid)  # the leader is not reaped yet, so its group id is still ours
        _reap(process)
    returncode = -signal.SIGKILL if process.returncode is None else process.returncode
    stdout, stderr = (bytes(data).decode("utf-8", "replace") for data in (watch.out, watch.err))
    return PluginRun(returncode, stdout, stderr, timed_out=not finished)


class _PluginWatch:
    """The plugin's two pipes and its exit, waited on together."""

    def __init__(self, process: subprocess.Popen[bytes], limit: int) -> None:
        assert process.stdout is not None and process.stderr is not None
        self.process = process
        self.limit = limit
        self.out, self.err = bytearray(), bytearray()
        self.open = {process.stdout.fileno(): self.out, process.stderr.fileno(): self.err}
        self.exited = False
        self.selector = selectors.DefaultSelector()
        for fd in self.open:
            self.selector.register(fd, selectors.EVENT_READ)
        self.exit_fd = _pidfd(process.pid)
        if self.exit_fd is not None:
            self.selector.register(self.exit_fd, selectors.EVENT_READ)

    def wait(self, deadline: float) -> bool:
        """True when the plugin exited and its output closed before the deadline."""
        try:
            while self.open or not self.exited:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._step(remaining)
            return True
        finally:
            self.selector.close()
            if self.exit_fd is not None:
                os.close(self.exit_fd)

    def _step(self, remaining: float) -> None:
        wait = remaining if self.exit_fd is not None else min(remaining, POLL_SECONDS)
        for key, _ in self.selector.select(wait):
            if key.fd in self.open:
                self._read(key.fd)
        if not self.exited and _has_exited(self.process.pid):
            self.exited = True
            _kill_group(self.process.pid)  # leftovers must not hold the pipes open
            if self.exit_fd is not None:
                self.selector.unregister(self.exit_fd)

    def _read(self, fd: int) -> None:
        chunk = os.read(fd, 65536)
        if not chunk:
            self.selector.unregister(fd)
            del self.open[fd]
            return
        buffer = self.open[fd]
        buffer += chunk[: max(0, self.limit - len(buffer))]  # read on past it: never blocks


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when `pid` exits (Linux 5.3+), else None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _has_exited(pid: int) -> bool:
    # WNOWAIT leaves the zombie in place: its pid, and so its process group, stay ours to kill.
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:  # all of it has exited
        return
    except PermissionError:  # a set-user-ID plugin that changed its real user id
        log.warning("cannot kill the processes of plugin %d: permission denied", pgid)


def _reap(process: subprocess.Popen[bytes]) -> None:
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    try:
        process.wait(REAP_SECONDS)
    except subprocess.TimeoutExpired:
        log.warning("plugin %d did not die after SIGKILL; left to the kernel", process.pid)


def find_program(program: str, plugin_dir: str | None, path: str) -> str | None:
    """The program's path: itself when absolute, else looked up in the plugin dirs and PATH."""
    if program.startswith("/"):
        return program
    directories = [plugin_dir] if plugin_dir else list(PLUGIN_DIRS)
    return shutil.which(program, path=os.pathsep.join([*directories, path]))


@dataclass(frozen=True)
class Outcome:
    status: int
    error: str | None
    output: PluginOutput | None = None


def outcome_of(run: PluginRun, timeout: float) -> Outcome:
    """The state of a finished run and, when it is not OK, the reason shown in the ticket."""
    if run.timed_out:
        return Outcome(UNKNOWN, f"timed out after {timeout:g}s")
    if run.returncode < 0:
        return Outcome(UNKNOWN, f"killed by signal {_signal_name(-run.returncode)}")
    output = split_output(run.stdout)
    status = run.returncode if 0 <= run.returncode <= UNKNOWN else UNKNOWN
    if status == 0:
        return Outcome(status, None, output)
    text = _short(output.status_text) or _short(run.stderr)
    text = text or f"{STATE_NAMES[status]} with no output"
    if status != run.returncode:
        text = f"exit code {run.returncode}: {text}"
    return Outcome(status, text, output)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def perfdata_samples(items: tuple[Perfdata, ...], now: float) -> list[Sample]:
    samples = []
    for item in items:
        labels = {"label": item.label, "uom": item.unit}
        undetermined = "value undetermined (U)" if math.isnan(item.value) else None
        samples.append(Sample(PERFDATA, item.value, now, labels, undetermined))
        bounds = {"warn": item.warn, "crit": item.crit, "min": item.min, "max": item.max}
        samples += [
            Sample(f"{PERFDATA}_{name}", value, now, labels)
            for name, value in bounds.items()
            if value is not None
        ]
    return samples


class CommandProbe:
    kind: ClassVar[str] = "command"

    @dataclass(frozen=True)
    class Options:
        """`command` is an argument list, never a shell line; `env` adds to a clean
        environment; `plugin_dir` is searched first for a bare program name."""

        command: list[str]
        env: dict[str, str] = field(default_factory=dict)
        timeout: Duration = DEFAULT_TIMEOUT
        plugin_dir: str | None = None

        def __post_init__(self) -> None:
            _check_command(self.command)
            _check_env(self.env)
            if self.timeout <= 0:
                raise ValueError("timeout must be more than 0s")
            if self.plugin_dir is not None and not self.plugin_dir.startswith("/"):
                raise ValueError("plugin_dir must be an absolute path")

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self._env = {**CLEAN_ENVIRONMENT, **options.env}

    def collect(self, now: float) -> list[Sample]:
        started = time.monotonic()
        outcome = self._check()
        elapsed = time.monotonic() - started
        ok = 1.0 if outcome.status == 0 else 0.0
        samples = [
            Sample(STATUS, float(outcome.status), now, {}, outcome.error),
            Sample(OK, ok, now, {}, outcome.error),
            Sample(DURATION, elapsed, now, {}, outcome.error),
        ]
        perfdata = outcome.output.perfdata if outcome.output else ()
        return samples + perfdata_samples(perfdata, now)

    def _check(self) -> Outcome:
        program, *arguments = self.options.command
        found = find_program(program, self.options.plugin_dir, self._env["PATH"])
        if found is None:
            return Outcome(UNKNOWN, f"program not found: {program}")
        try:
            run = run_plugin([found, *arguments], self._env, self.options.timeout)
        except OSError as exc:
            return Outcome(UNKNOWN, f"cannot run {found}: {exc.strerror or exc}")
        return outcome_of(run, self.options.timeout)
