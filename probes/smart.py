"""Disk health as the disks themselves report it (SMART), read with smartctl (smartmontools 7+).

Runs `smartctl --json=c --all [EXTRA_ARGS] [-d TYPE] DEVICE` for each device, all devices in
parallel, as an argument list without a shell, with a clean environment (PATH and LC_ALL=C)
and one deadline for the whole run. Without `devices`, the disks are found with
`smartctl --json=c --scan-open` at every run, so a disk added later is seen; discovery opens
every disk, so list `devices` where disks must be left asleep. smartctl needs root (or
CAP_SYS_RAWIO and read access to the device nodes) to open disks.

smartctl's exit status is a bit mask (`man smartctl`, EXIT STATUS): bit 0 (command line did
not parse) or bit 1 (device open failed) mean nothing was read: `smart_up` is 0 and the
error says why. Bit 2 (some SMART command failed) still reads what it can: `smart_up` is 1
with the error. Bit 3 (SMART status check returned "DISK FAILING") comes with the full
report: it is parsed, and `smart_healthy` is 0. Fields that a smartctl version, a device
type or a USB bridge does not report are left out, never guessed.

Options:
    devices           list of "DEVICE" or "DEVICE -d TYPE" (as in smartd.conf and the output
                      of `smartctl --scan-open`, e.g. "/dev/bus/0 -d megaraid,1");
                      empty (default): every device `smartctl --scan-open` finds.
    smartctl          the smartctl program (default "smartctl", looked up in PATH and in the
                      sbin directories, where distributions install it)
    extra_args        more arguments for every device read, e.g. ["-n", "standby"] not to
                      wake sleeping disks, or ["-d", "sat"] for a USB bridge
    smartctl_timeout  how long one run may take, all devices together (default 8s); keep the
                      probe's `timeout` (10s by default) above it

Metrics, labelled {device, type, model, serial} (type is the "-d" type, "" when smartctl
detects it; model and serial as the disk reports them, "" when it does not). The serial is
in the labels because it is what a technician finds printed on the disk to replace; device
names like /dev/sdb can change at the next boot. A device that fails after having been read
keeps the model and serial of its last reading, so its alerts keep their fingerprint.
    smart_up                           1 when smartctl read the device, 0 when not (see above)
    smart_healthy                      SMART overall health: 1 passed, 0 failing
    smart_temperature_celsius          current temperature
    smart_power_on_hours               hours powered on
  ATA/SATA disks (raw values of the attributes):
    smart_reallocated_sectors          attribute 5, Reallocated_Sector_Ct
    smart_pending_sectors              attribute 197, Current_Pending_Sector
    smart_offline_uncorrectable        attribute 198, Offline_Uncorrectable
    smart_crc_errors                   attribute 199, UDMA_CRC_Error_Count (cabling)
  NVMe disks (the SMART / Health Information log):
    smart_nvme_percentage_used         wear: percentage of the rated endurance used
    smart_nvme_media_errors            unrecovered data integrity errors
    smart_nvme_available_spare_percent remaining spare capacity
    smart_nvme_critical_warning        critical warning bits (0 is none)
and, without labels, only when `smartctl --scan-open` itself fails:
    smart_up                           0, with the error

A device skipped because it sleeps and `extra_args` has "-n standby" reports only
`smart_up` 1: it was asked not to be woken, and nothing is wrong with it.

Example:

    [[probe]]
    name = "disks"
    kind = "smart"
    interval = "10m"
    # devices = ["/dev/sda", "/dev/nvme0", "/dev/bus/0 -d megaraid,1"]
    # extra_args = ["-n", "standby"]
"""

import json
import logging
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

from probes._text import MAX_ERROR_CHARS
from probes.base import Duration, Sample

log = logging.getLogger(__name__)

UP = "smart_up"
HEALTHY = "smart_healthy"
TEMPERATURE = "smart_temperature_celsius"
POWER_ON_HOURS = "smart_power_on_hours"
ATA_ATTRIBUTES = {
    5: "smart_reallocated_sectors",
    197: "smart_pending_sectors",
    198: "smart_offline_uncorrectable",
    199: "smart_crc_errors",
}
NVME_HEALTH = {
    "percentage_used": "smart_nvme_percentage_used",
    "media_errors": "smart_nvme_media_errors",
    "available_spare": "smart_nvme_available_spare_percent",
    "critical_warning": "smart_nvme_critical_warning",
}

# Bits of smartctl's exit status (man smartctl, EXIT STATUS).
COMMAND_LINE_ERROR = 1 << 0
DEVICE_OPEN_FAILED = 1 << 1
SMART_COMMAND_FAILED = 1 << 2
DISK_FAILING = 1 << 3
NOTHING_READ = COMMAND_LINE_ERROR | DEVICE_OPEN_FAILED

DEFAULT_TIMEOUT = Duration(8)
MAX_PARALLEL = 8
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
# smartctl -n: "Device is in STANDBY mode, exit(2)", also "STANDBY (OS)", "SLEEP", "IDLE".
_ASLEEP = re.compile(r"\bDevice is in [A-Z_]+(?: \([A-Z]+\))? mode\b")


@dataclass(frozen=True)
class Target:
    """One device as smartctl names it: the device and, when given, its `-d` type."""

    device: str
    type: str = ""

    def arguments(self) -> list[str]:
        return (["-d", self.type] if self.type else []) + [self.device]


def parse_target(entry: str) -> Target:
    """A `devices` entry: "DEVICE" or "DEVICE -d TYPE"."""
    words = entry.split()
    if any(word.startswith("-") for word in words[::2]):
        words = []  # a device or type that smartctl would take for an option
    if len(words) == 1:
        return Target(words[0])
    if len(words) == 3 and words[1] == "-d":
        return Target(words[0], words[2])
    raise ValueError(f'devices: {entry!r} is not of the form "DEVICE" or "DEVICE -d TYPE"')


@dataclass(frozen=True)
class Reading:
    """What one smartctl run gave: its JSON report (if any), exit status and failure."""

    report: dict[str, Any] | None
    exit_status: int
    error: str | None = None

    @property
    def read_nothing(self) -> bool:
        return self.report is None or self.exit_status < 0 or bool(self.exit_status & NOTHING_READ)


def _short(text: str) -> str:
    return " ".join(text.split())[:MAX_ERROR_CHARS]


def _messages(report: dict[str, Any] | None) -> str:
    """smartctl's own error messages from its JSON report, joined."""
    entries = dig(report, "smartctl", "messages")
    texts = [
        text
        for m in entries or []
        if isinstance(text := dig(m, "string"), str) and dig(m, "severity") != "information"
    ]
    return _short("; ".join(texts))


def _no_json_error(stdout: bytes, stderr: bytes, status: int) -> str:
    said = (stdout or stderr).decode("utf-8", "replace").strip().splitlines()
    detail = f": {_short(said[0])}" if said else ""
    needed = "smartmontools 7.0 or later is needed"
    return f"smartctl printed no JSON (exit status {status}; {needed}){detail}"


def interpret(stdout: bytes, stderr: bytes, status: int) -> Reading:
    """A finished smartctl run: its report, and the failure its exit status tells of."""
    try:
        report = json.loads(stdout)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        return Reading(None, status, _no_json_error(stdout, stderr, status))
    if status < 0:
        return Reading(report, status, f"smartctl was killed by signal {-status}")
    if status & NOTHING_READ:
        what = "command line not accepted" if status & COMMAND_LINE_ERROR else "device open failed"
        return Reading(report, status, _messages(report) or f"{what} (exit status {status})")
    if status & SMART_COMMAND_FAILED:
        return Reading(report, status, _messages(report) or "some SMART commands failed")
    return Reading(report, status)


def _abandon(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    try:
        process.communicate(timeout=1)
    except subprocess.TimeoutExpired:
        # Stuck in the kernel on a dying disk: it dies when its I/O returns, and
        # subprocess reaps it then. Waiting here would hang the probe with it.
        log.warning("smartctl (pid %d) did not exit when killed; left behind", process.pid)


def run_smartctl(argv: list[str], deadline: float, environment: dict[str, str]) -> Reading:
    """Run smartctl until the monotonic `deadline`; never raises."""
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
        )
    except OSError as exc:
        return Reading(None, -1, f"cannot run {argv[0]}: {exc.strerror}")
    try:
        stdout, stderr = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _abandon(process)
        return Reading(None, -1, "smartctl did not answer in time")
    return interpret(stdout, stderr, process.returncode)


def dig(data: Any, *keys: str) -> Any:
    """data[k1][k2]... or None where a level is missing or not a table."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def number(value: Any) -> float | None:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if is_number else None


def first(*values: float | None) -> float | None:
    return next((value for value in values if value is not None), None)


def _text(*values: Any) -> str:
    return " ".join(v.strip() for v in values if isinstance(v, str) and v.strip())


def identity(report: dict[str, Any]) -> tuple[str, str]:
    """(model, serial) as the device reports them; SCSI devices name vendor and product."""
    model = (
        _text(report.get("model_name"))
        or _text(report.get("scsi_model_name"))
        or _text(report.get("scsi_vendor"), report.get("scsi_product"))
        or _text(report.get("vendor"), report.get("product"))
    )
    return model, _text(report.get("serial_number"))


def health(report: dict[str, Any], status: int) -> float | None:
    """1 passed, 0 failing, None when the device gave no verdict."""
    passed = dig(report, "smart_status", "passed")
    if status & DISK_FAILING or passed is False:
        return 0.0
    return 1.0 if passed is True else None


def attribute_values(report: dict[str, Any]) -> dict[str, float | None]:
    table = dig(report, "ata_smart_attributes", "table")
    raw = {e.get("id"): dig(e, "raw", "value") for e in table or [] if isinstance(e, dict)}
    return {metric: number(raw.get(id_)) for id_, metric in ATA_ATTRIBUTES.items()}


def nvme_values(report: dict[str, Any]) -> dict[str, float | None]:
    log_page = report.get("nvme_smart_health_information_log")
    return {metric: number(dig(log_page, key)) for key, metric in NVME_HEALTH.items()}


def report_values(report: dict[str, Any], status: int) -> dict[str, float]:
    """Every metric the report holds a value for."""
    nvme_log = report.get("nvme_smart_health_information_log")
    values: dict[str, float | None] = {
        HEALTHY: health(report, status),
        TEMPERATURE: first(
            number(dig(report, "temperature", "current")), number(dig(nvme_log, "temperature"))
        ),
        POWER_ON_HOURS: number(dig(report, "power_on_time", "hours")),
        **attribute_values(report),
        **nvme_values(report),
    }
    return {metric: value for metric, value in values.items() if value is not None}


def asleep(report: dict[str, Any] | None) -> bool:
    """smartctl -n skipped the device because it sleeps ("Device is in STANDBY mode")."""
    entries = dig(report, "smartctl", "messages") or []
    return any(_ASLEEP.search(str(dig(m, "string") or "")) for m in entries)


def _environment() -> dict[str, str]:
    """A clean environment: PATH with the sbin directories, and untranslated messages."""
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN_DIRS])
    return {"PATH": path, "LC_ALL": "C"}


class SmartProbe:
    kind: ClassVar[str] = "smart"

    @dataclass(frozen=True)
    class Options:
        devices: list[str] = field(default_factory=list)
        smartctl: str = "smartctl"
        extra_args: list[str] = field(default_factory=list)
        smartctl_timeout: Duration = DEFAULT_TIMEOUT

        def __post_init__(self) -> None:
            targets = [parse_target(entry) for entry in self.devices]
            if len(set(targets)) != len(targets):
                raise ValueError("devices: a device is listed twice")
            if not self.smartctl.strip():
                raise ValueError("smartctl must name the smartctl program")
            if any(not arg.strip() for arg in self.extra_args):
                raise ValueError("extra_args must not hold empty arguments")
            if self.smartctl_timeout <= 0:
                raise ValueError("smartctl_timeout must be more than 0s")

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self._targets = [parse_target(entry) for entry in options.devices]
        self._identities: dict[Target, tuple[str, str]] = {}

    def collect(self, now: float) -> list[Sample]:
        deadline = time.monotonic() + self.options.smartctl_timeout
        environment = _environment()
        program = self._program(environment)
        found, error = self._devices(program, deadline, environment)
        if error is not None:
            return [Sample(UP, 0.0, now, {}, f"scanning for devices: {error}")]
        samples: list[Sample] = []
        for target, reading in self._read_all(program, found, deadline, environment):
            samples.extend(self.device_samples(target, reading, now))
        return samples

    def _devices(
        self, program: str, deadline: float, environment: dict[str, str]
    ) -> tuple[list[tuple[Target, str | None]], str | None]:
        """The devices to read, each with the error of opening it if discovery had one;
        or the error of discovery itself."""
        if self._targets:
            return [(target, None) for target in self._targets], None
        scan = run_smartctl([program, "--json=c", "--scan-open"], deadline, environment)
        return discovered(scan.report), scan.error if scan.read_nothing else None

    def _program(self, environment: dict[str, str]) -> str:
        program = self.options.smartctl
        if os.sep in program:
            return program
        return shutil.which(program, path=environment["PATH"]) or program

    def _read_all(
        self,
        program: str,
        found: list[tuple[Target, str | None]],
        deadline: float,
        environment: dict[str, str],
    ) -> list[tuple[Target, Reading]]:
        """Read every device at once: one slow disk must not delay the others."""
        base = [program, "--json=c", "--all", *self.options.extra_args]

        def read(item: tuple[Target, str | None]) -> tuple[Target, Reading]:
            target, open_error = item
            if open_error is not None:
                return target, Reading(None, DEVICE_OPEN_FAILED, _short(open_error))
            return target, run_smartctl(base + target.arguments(), deadline, environment)

        if not found:
            return []
        workers = min(MAX_PARALLEL, len(found))
        with ThreadPoolExecutor(workers, thread_name_prefix="smartctl") as pool:
            return list(pool.map(read, found))

    def device_samples(self, target: Target, reading: Reading, now: float) -> list[Sample]:
        """The samples of one device, from one smartctl reading of it."""
        labels = self._labels(target, reading.report)
        report = reading.report
        if report is None or reading.read_nothing:
            if asleep(report):
                return [Sample(UP, 1.0, now, labels)]
            return [Sample(UP, 0.0, now, labels, reading.error)]
        values = report_values(report, reading.exit_status)
        samples = [Sample(UP, 1.0, now, labels, reading.error)]
        return samples + [Sample(metric, value, now, labels) for metric, value in values.items()]

    def _labels(self, target: Target, report: dict[str, Any] | None) -> dict[str, str]:
        """Labels with the model and serial of the device's latest report that had them."""
        model, serial = identity(report) if report is not None else ("", "")
        if model or serial:
            self._identities[target] = (model, serial)
        model, serial = self._identities.get(target, ("", ""))
        return {"device": target.device, "type": target.type, "model": model, "serial": serial}


def discovered(report: dict[str, Any] | None) -> list[tuple[Target, str | None]]:
    """The devices of a `--scan-open` report, each with the error of opening it, if any."""
    found: list[tuple[Target, str | None]] = []
    for entry in dig(report, "devices") or []:
        name, type_ = dig(entry, "name"), dig(entry, "type")
        if isinstance(name, str) and name:
            open_error = dig(entry, "open_error")
            target = Target(name, type_ if isinstance(type_, str) else "")
            found.append((target, str(open_error) if open_error else None))
    return found
