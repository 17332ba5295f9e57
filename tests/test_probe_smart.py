"""The smart probe: the real smartctl on what this machine has, and real captured outputs of
disks it lacks (tests/data/smart) replayed by a stand-in smartctl script."""

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from probes.base import Duration, Sample
from probes.smart import SmartProbe, Target, parse_target

NOW = 1_700_000_000.0
DATA = Path(__file__).parent / "data" / "smart"
SMARTCTL = shutil.which("smartctl", path=os.pathsep.join([os.defpath, "/usr/sbin", "/sbin"]))
needs_smartctl = pytest.mark.skipif(SMARTCTL is None, reason="smartmontools is not installed")


def values(samples: list[Sample]) -> dict[str, float]:
    """metric -> value for the samples of one device."""
    assert len({tuple(sorted(s.labels.items())) for s in samples}) == 1, "one device expected"
    return {s.metric: s.value for s in samples}


def only_up(samples: list[Sample]) -> Sample:
    [sample] = samples
    assert sample.metric == "smart_up"
    return sample


class StandIn:
    """An executable `smartctl` that records its arguments and environment, then runs `body`."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "smartctl"
        self.calls = directory / "calls"
        self.environment = directory / "environment"

    def script(self, body: str) -> str:
        record = f'printf "%s\\n" "$@" "--" >> "{self.calls}"\nenv > "{self.environment}"\n'
        self.path.write_text(f"#!/bin/sh\n{record}{body}\n")
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)
        return str(self.path)

    def replay(self, capture: str) -> str:
        """Print a captured output and exit with the exit status smartctl recorded in it."""
        status = json.loads((DATA / capture).read_text())["smartctl"]["exit_status"]
        return self.script(f'cat "{DATA / capture}"\nexit {status}')

    def argument_lists(self) -> list[list[str]]:
        words = self.calls.read_text().splitlines()
        calls, current = [], []
        for word in words:
            if word == "--":
                calls.append(current)
                current = []
            else:
                current.append(word)
        return calls


@pytest.fixture
def stand_in(tmp_path: Path) -> StandIn:
    return StandIn(tmp_path)


def collect(program: str, *devices: str, **options: Any) -> list[Sample]:
    probe = SmartProbe("disks", SmartProbe.Options(list(devices), program, **options))
    return probe.collect(NOW)


# --- real captured outputs -----------------------------------------------------------------


def test_a_healthy_sata_disk(stand_in: StandIn) -> None:
    samples = collect(stand_in.replay("ata-wdc-smartctl-7.0.json"), "/dev/sdb")
    assert samples[0].labels == {
        "device": "/dev/sdb",
        "type": "",
        "model": "WDC WD140EDFZ-11A0VA0",
        "serial": "9RK1XXXX",
    }
    assert values(samples) == {
        "smart_up": 1.0,
        "smart_healthy": 1.0,
        "smart_temperature_celsius": 32.0,
        "smart_power_on_hours": 1730.0,
        "smart_reallocated_sectors": 0.0,
        "smart_pending_sectors": 0.0,
        "smart_offline_uncorrectable": 0.0,
        "smart_crc_errors": 0.0,
    }
    assert all(s.error is None and s.timestamp == NOW for s in samples)


def test_attributes_are_found_by_number_and_missing_ones_left_out(stand_in: StandIn) -> None:
    # An Intel SSD names attribute 199 CRC_Error_Count and has no attribute 198 at all.
    found = values(collect(stand_in.replay("ata-intel-ssd-smartctl-7.3.json"), "/dev/sdf"))
    assert found["smart_reallocated_sectors"] == 2.0
    assert found["smart_crc_errors"] == 0.0
    assert "smart_offline_uncorrectable" not in found
    assert found["smart_temperature_celsius"] == 23.0 and found["smart_healthy"] == 1.0


def test_a_failing_disk_is_read_in_full_and_reported_unhealthy(stand_in: StandIn) -> None:
    # Exit status 216: bit 3 (DISK FAILING) and 4, 6, 7; smartctl still printed everything.
    samples = collect(stand_in.replay("failing-hitachi-smartctl-7.1.json"), "/dev/sdc")
    found = values(samples)
    assert found["smart_up"] == 1.0 and found["smart_healthy"] == 0.0
    assert found["smart_reallocated_sectors"] == 1975.0
    assert found["smart_pending_sectors"] == 8.0
    assert found["smart_power_on_hours"] == 65592.0
    assert all(s.error is None for s in samples), "a failing disk is a reading, not an error"
    assert samples[0].labels["serial"] == "MSK423Y20S3HBC"


def test_an_nvme_disk_reports_wear_and_media_errors(stand_in: StandIn) -> None:
    found = values(collect(stand_in.replay("nvme-kioxia-smartctl-7.4.json"), "/dev/nvme0"))
    assert found == {
        "smart_up": 1.0,
        "smart_healthy": 1.0,
        "smart_temperature_celsius": 30.0,
        "smart_power_on_hours": 395.0,
        "smart_nvme_percentage_used": 0.0,
        "smart_nvme_media_errors": 0.0,
        "smart_nvme_available_spare_percent": 100.0,
        "smart_nvme_critical_warning": 0.0,
    }


@pytest.mark.parametrize(
    ("capture", "error"),
    [
        (
            "open-failed-windows-smartctl-7.0.json",
            r"Smartctl open device: /dev/sda failed: \\.\PhysicalDrive0: Open failed, Error=5",
        ),
        ("nonexistent-device-smartctl-7.5.json", "/dev/nonexistent: Unable to detect device type"),
    ],
)
def test_a_device_that_cannot_be_read_is_down_with_smartctls_reason(
    stand_in: StandIn, capture: str, error: str
) -> None:
    sample = only_up(collect(stand_in.replay(capture), "/dev/sda"))
    assert sample.value == 0.0 and sample.error == error
    assert sample.labels == {"device": "/dev/sda", "type": "", "model": "", "serial": ""}


def test_a_device_keeps_its_model_and_serial_when_it_stops_answering(stand_in: StandIn) -> None:
    program = stand_in.replay("nvme-kioxia-smartctl-7.4.json")
    probe = SmartProbe("disks", SmartProbe.Options(["/dev/nvme0"], program))
    healthy = probe.collect(NOW)
    stand_in.replay("open-failed-windows-smartctl-7.0.json")
    failed = only_up(probe.collect(NOW))
    assert failed.value == 0.0 and failed.labels == healthy[0].labels
    assert failed.labels["serial"] == "6FCPSEXQZ2B9"


def test_some_commands_failing_still_reports_what_was_read(stand_in: StandIn) -> None:
    # Failure injection: the healthy disk's real output, with exit status bit 2 set (a
    # SMART command failed), as USB bridges often cause.
    capture = DATA / "ata-wdc-smartctl-7.0.json"
    samples = collect(stand_in.script(f'cat "{capture}"\nexit 4'), "/dev/sdb")
    up = next(s for s in samples if s.metric == "smart_up")
    assert up.value == 1.0 and up.error == "some SMART commands failed"
    assert values(samples)["smart_reallocated_sectors"] == 0.0


def test_discovered_devices_are_read_with_their_type(stand_in: StandIn) -> None:
    scan = DATA / "scan-open-nvme-smartctl-7.4.json"
    report = DATA / "nvme-kioxia-smartctl-7.4.json"
    program = stand_in.script(f'case "$2" in --scan-open) cat "{scan}";; *) cat "{report}";; esac')
    samples = collect(program, extra_args=["-n", "standby"])
    assert samples[0].labels["device"] == "/dev/nvme0" and samples[0].labels["type"] == "nvme"
    assert values(samples)["smart_nvme_available_spare_percent"] == 100.0
    assert stand_in.argument_lists() == [
        ["--json=c", "--scan-open"],
        ["--json=c", "--all", "-n", "standby", "-d", "nvme", "/dev/nvme0"],
    ]


def test_arguments_stay_arguments_and_the_environment_is_clean(
    stand_in: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOREWARN_TEST_SECRET", "do-not-pass")
    program = stand_in.replay("nvme-kioxia-smartctl-7.4.json")
    collect(program, "/dev/sda;reboot", "$(reboot) -d sat")
    assert sorted(stand_in.argument_lists()) == [
        ["--json=c", "--all", "-d", "sat", "$(reboot)"],
        ["--json=c", "--all", "/dev/sda;reboot"],
    ]
    lines = stand_in.environment.read_text().splitlines()
    environment = dict(line.split("=", 1) for line in lines if "=" in line)
    assert environment["LC_ALL"] == "C"
    assert "FOREWARN_TEST_SECRET" not in environment


def test_a_hung_smartctl_is_killed_at_the_deadline(stand_in: StandIn, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    program = stand_in.script(f'echo $$ > "{pid_file}"\nexec sleep 30')
    started = time.monotonic()
    sample = only_up(collect(program, "/dev/sda", smartctl_timeout=Duration(0.3)))
    assert time.monotonic() - started < 3
    assert sample.value == 0.0 and sample.error == "smartctl did not answer in time"
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # killed and reaped


def test_devices_are_read_in_parallel(stand_in: StandIn) -> None:
    capture = DATA / "nvme-kioxia-smartctl-7.4.json"
    program = stand_in.script(f'sleep 0.5\ncat "{capture}"')
    started = time.monotonic()
    samples = collect(program, "/dev/a", "/dev/b", "/dev/c", "/dev/d")
    assert time.monotonic() - started < 1.5  # one after the other would take 2 s
    assert [s.labels["device"] for s in samples if s.metric == "smart_up"] == [
        "/dev/a",
        "/dev/b",
        "/dev/c",
        "/dev/d",
    ]


# --- the real smartctl on this machine -------------------------------------------------------


@needs_smartctl
def test_real_smartctl_finds_and_reads_what_this_machine_has() -> None:
    scan = json.loads(
        subprocess.run([str(SMARTCTL), "--json=c", "--scan-open"], capture_output=True).stdout
    )
    expected = {(d["name"], d.get("type", "")) for d in scan.get("devices", [])}
    samples = collect("smartctl")  # looked up in PATH and the sbin directories
    ups = [s for s in samples if s.metric == "smart_up"]
    assert {(s.labels["device"], s.labels["type"]) for s in ups} == expected  # none in a VM
    assert all(set(s.labels) == {"device", "type", "model", "serial"} for s in samples)


@needs_smartctl
@pytest.mark.parametrize(
    ("device", "error"),
    [
        ("/dev/null", "/dev/null: Unable to detect device type"),  # exit status 1
        ("/dev/null -d sat", "device open failed (exit status 2)"),
        (
            "/dev/null -d nvme",
            "Read NVMe Identify Controller failed: NVME_IOCTL_ADMIN_CMD: "
            "Inappropriate ioctl for device",
        ),
    ],
)
def test_real_smartctl_failing_to_read_a_device(device: str, error: str) -> None:
    sample = only_up(collect(str(SMARTCTL), device))
    assert sample.value == 0.0 and sample.error == error
    assert sample.labels["device"] == "/dev/null"
    assert sample.labels["type"] == parse_target(device).type


@needs_smartctl
def test_real_smartctl_skipping_a_sleeping_device_is_not_a_failure() -> None:
    # With -n standby, smartctl asks the drive for its power mode first. /dev/null answers
    # nothing, which smartctl reports as "Device is in SLEEP mode, exit(2)": the same path,
    # message and exit status as a spun-down disk.
    sample = only_up(collect(str(SMARTCTL), "/dev/null -d sat", extra_args=["-n", "standby"]))
    assert sample.value == 1.0 and sample.error is None


def test_a_missing_smartctl_is_reported_not_raised(tmp_path: Path) -> None:
    missing = str(tmp_path / "smartctl")
    [scan] = collect(missing)
    assert (scan.metric, scan.value, scan.labels) == ("smart_up", 0.0, {})
    assert scan.error == f"scanning for devices: cannot run {missing}: No such file or directory"
    sample = only_up(collect(missing, "/dev/sda"))
    assert sample.error == f"cannot run {missing}: No such file or directory"


def test_a_program_that_prints_no_json_is_reported() -> None:
    echo = shutil.which("echo")
    assert echo is not None
    sample = only_up(collect(echo, "/dev/sda"))
    assert sample.value == 0.0
    assert sample.error == (
        "smartctl printed no JSON (exit status 0; smartmontools 7.0 or later is needed): "
        "--json=c --all /dev/sda"
    )


# --- options ---------------------------------------------------------------------------------


def test_device_entries_take_an_optional_type() -> None:
    assert parse_target("/dev/sda") == Target("/dev/sda")
    assert parse_target(" /dev/bus/0  -d megaraid,1 ") == Target("/dev/bus/0", "megaraid,1")
    assert Target("/dev/bus/0", "megaraid,1").arguments() == ["-d", "megaraid,1", "/dev/bus/0"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"devices": ["-a"]}, "is not of the form"),
        ({"devices": ["/dev/sda -d"]}, "is not of the form"),
        ({"devices": ["/dev/sda -d -x"]}, "is not of the form"),
        ({"devices": ["/dev/sda --all /dev/sdb"]}, "is not of the form"),
        ({"devices": [""]}, "is not of the form"),
        ({"devices": ["/dev/sda", " /dev/sda"]}, "listed twice"),
        ({"smartctl": " "}, "smartctl"),
        ({"extra_args": ["-n", ""]}, "extra_args"),
        ({"smartctl_timeout": Duration(0)}, "smartctl_timeout"),
    ],
)
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SmartProbe.Options(**options)
