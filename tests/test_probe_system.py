"""The machine probes (cpu, load, memory, swap, disk, sensors) against this very machine."""

import math
import os
import threading
import time
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from probe_helpers import by_metric, only

from probes import disk
from probes.cpu import CpuProbe, iowait_percent, usage_percent
from probes.disk import DiskProbe, Mount, StatvfsCall, is_pseudo, one_per_filesystem
from probes.load import LoadProbe
from probes.memory import MemoryProbe
from probes.sensors import SensorsProbe
from probes.swap import SwapProbe

NOW = 1_700_000_000.0
TESTS_DIR = Path(__file__).parent


# --- cpu ---------------------------------------------------------------------------------------

CpuTimes = type(psutil.cpu_times())


def cpu_times(**values: float) -> Any:
    return CpuTimes(**{name: values.get(name, 0.0) for name in CpuTimes._fields})


def test_cpu_usage_is_busy_share_of_elapsed_cpu_time() -> None:
    before = cpu_times(user=100, system=50, idle=800)
    after = cpu_times(user=130, system=60, idle=860)  # 40 busy of 100
    assert usage_percent(before, after) == pytest.approx(40.0)


def test_cpu_iowait_counts_as_neither_busy_nor_idle_time() -> None:
    if "iowait" not in CpuTimes._fields:
        pytest.skip("this platform reports no I/O wait")
    before = cpu_times(user=10, idle=80, iowait=10)
    after = cpu_times(user=20, idle=150, iowait=30)  # 10 busy, 70 idle, 20 waiting
    assert usage_percent(before, after) == pytest.approx(10.0)
    assert iowait_percent(before, after) == pytest.approx(20.0)


def test_cpu_without_elapsed_time_reports_the_average_since_boot() -> None:
    now = cpu_times(user=25, idle=75)
    assert usage_percent(now, now) == pytest.approx(25.0)
    assert usage_percent(None, now) == pytest.approx(25.0)


def test_cpu_probe_sees_this_process_burning_cpu() -> None:
    probe = CpuProbe("cpu", CpuProbe.Options())
    probe.collect(NOW)  # start a fresh window
    spin_until = time.process_time() + 0.3
    while time.process_time() < spin_until:
        pass
    samples = probe.collect(NOW)
    usage = only(samples, "cpu_usage_percent")
    assert usage.labels == {} and usage.timestamp == NOW
    # One busy core of N makes at least 100/N percent, less the accounting's jitter.
    assert usage.value >= 50.0 / (psutil.cpu_count() or 1)
    assert usage.value <= 100.0
    if "iowait" in CpuTimes._fields:
        assert 0.0 <= only(samples, "cpu_iowait_percent").value <= 100.0


def test_cpu_per_cpu_samples_are_labelled_by_cpu_number() -> None:
    probe = CpuProbe("cpu", CpuProbe.Options(per_cpu=True))
    per_cpu = [s for s in probe.collect(NOW) if s.metric == "cpu_usage_percent" and s.labels]
    expected = {str(i) for i in range(len(psutil.cpu_times(percpu=True)))}
    assert {s.labels["cpu"] for s in per_cpu} == expected
    assert all(0.0 <= s.value <= 100.0 for s in per_cpu)


def test_cpu_without_per_cpu_option_reports_only_the_total() -> None:
    samples = CpuProbe("cpu", CpuProbe.Options()).collect(NOW)
    assert all(s.labels == {} for s in samples)


# --- load, memory, swap ------------------------------------------------------------------------


def test_load_reports_raw_and_per_core_averages() -> None:
    samples = {s.metric: s.value for s in LoadProbe("load", LoadProbe.Options()).collect(NOW)}
    cores = psutil.cpu_count(logical=True) or 1
    for window in ("load1", "load5", "load15"):
        assert samples[window] >= 0.0
        assert samples[f"{window}_per_core"] == pytest.approx(samples[window] / cores)


def test_memory_used_percent_counts_available_memory_as_free() -> None:
    samples = {s.metric: s.value for s in MemoryProbe("mem", MemoryProbe.Options()).collect(NOW)}
    total, available = samples["memory_total_bytes"], samples["memory_available_bytes"]
    assert total > 0 and 0 < available <= total
    assert 0.0 < samples["memory_used_percent"] < 100.0
    # Taken in one reading, so the three agree exactly.
    assert samples["memory_used_percent"] == pytest.approx(100 * (total - available) / total)


def test_swap_reports_zero_percent_without_swap() -> None:
    samples = {s.metric: s.value for s in SwapProbe("swap", SwapProbe.Options()).collect(NOW)}
    assert samples["swap_total_bytes"] >= 0
    assert 0.0 <= samples["swap_used_percent"] <= 100.0
    assert samples["swap_used_bytes"] <= samples["swap_total_bytes"]
    if samples["swap_total_bytes"] == 0:
        assert samples["swap_used_percent"] == 0.0


# --- disk --------------------------------------------------------------------------------------


def mount_of(path: Path) -> Mount:
    """The mount of the filesystem holding `path` (the longest prefix wins)."""
    real = os.path.realpath(path)
    entries = [p for p in psutil.disk_partitions(all=True) if _contains(p.mountpoint, real)]
    entry = max(entries, key=lambda p: len(p.mountpoint))
    return Mount(entry.mountpoint, entry.device, entry.fstype)


def _contains(mountpoint: str, path: str) -> bool:
    return path == mountpoint or path.startswith(mountpoint.rstrip("/") + "/")


def test_disk_reports_the_filesystem_holding_the_tests() -> None:
    samples = DiskProbe("disk", DiskProbe.Options()).collect(NOW)
    tests_device = os.stat(TESTS_DIR).st_dev
    used = by_metric(samples)["disk_used_percent"]
    # Bind mounts of one filesystem are reported once, under any of its mount points.
    assert any(os.stat(s.labels["mountpoint"]).st_dev == tests_device for s in used)


def test_disk_samples_are_plausible_and_labelled() -> None:
    samples = DiskProbe("disk", DiskProbe.Options()).collect(NOW)
    assert samples, "no real filesystem found"
    for sample in samples:
        assert set(sample.labels) == {"mountpoint", "device", "fstype"}
        assert not is_pseudo(Mount(**sample.labels), [])
        assert sample.error is None
    groups = by_metric(samples)
    assert all(0.0 <= s.value <= 100.0 for s in groups["disk_used_percent"])
    assert all(0.0 <= s.value <= 100.0 for s in groups.get("disk_inodes_used_percent", []))
    totals = {s.labels["mountpoint"]: s.value for s in groups["disk_total_bytes"]}
    assert all(0 <= s.value <= totals[s.labels["mountpoint"]] for s in groups["disk_free_bytes"])


def test_disk_agrees_with_statvfs() -> None:
    entry = mount_of(TESTS_DIR)
    samples = DiskProbe("disk", DiskProbe.Options(mountpoints=[entry.mountpoint])).collect(NOW)
    stat = os.statvfs(entry.mountpoint)
    assert only(samples, "disk_total_bytes").value == stat.f_blocks * stat.f_frsize
    assert only(samples, "disk_total_bytes").labels == entry.labels
    inode_samples = by_metric(samples).get("disk_inodes_used_percent", [])
    assert len(inode_samples) == (1 if stat.f_files > 0 else 0)


def test_disk_named_mount_point_that_is_not_mounted_is_an_error_sample(tmp_path: Path) -> None:
    missing = str(tmp_path / "not-a-mount")
    samples = DiskProbe("disk", DiskProbe.Options(mountpoints=[missing])).collect(NOW)
    [sample] = samples
    assert sample.metric == "disk_used_percent" and math.isnan(sample.value)
    assert sample.labels["mountpoint"] == missing and sample.error == "not mounted"


def test_disk_excluded_fstype_is_not_reported() -> None:
    fstype = mount_of(TESTS_DIR).fstype
    options = DiskProbe.Options(exclude_fstypes=[fstype])
    samples = DiskProbe("disk", options).collect(NOW)
    assert all(s.labels["fstype"] != fstype for s in samples)
    assert DiskProbe("disk", DiskProbe.Options(exclude_fstypes=["*"])).collect(NOW) == []


@pytest.mark.parametrize(
    ("mountpoint", "fstype", "pseudo"),
    [
        ("/", "ext4", False),
        ("/", "overlay", False),  # the root of a container
        ("/mnt/share", "nfs4", False),
        ("/mnt/remote", "fuse.sshfs", False),
        ("/proc", "proc", True),
        ("/run", "tmpfs", True),
        ("/sys/fs/cgroup/cpu", "cgroup", True),
        ("/snap/core/1", "squashfs", True),
        ("/var/lib/lxcfs", "fuse.lxcfs", True),
        ("/var/lib/docker/overlay2/abc/merged", "overlay", True),
        ("/run/user/1000/gvfs", "fuse.gvfsd-fuse", True),
    ],
)
def test_pseudo_filesystems_are_told_apart(mountpoint: str, fstype: str, pseudo: bool) -> None:
    assert is_pseudo(Mount(mountpoint, "dev", fstype), []) is pseudo


def answered(mount: Mount) -> StatvfsCall:
    call = StatvfsCall(mount)
    assert call.done.wait(10)
    return call


def test_bind_mounts_of_one_filesystem_are_reported_once(tmp_path: Path) -> None:
    (tmp_path / "inner").mkdir()
    outer = answered(Mount(str(tmp_path), "/dev/same", "ext4"))
    inner = answered(Mount(str(tmp_path / "inner"), "/dev/same", "ext4"))
    other = answered(Mount(str(tmp_path / "inner"), "overlay", "overlay"))
    assert one_per_filesystem([inner, outer, other]) == [outer, other]


def test_a_file_bind_mount_is_not_a_filesystem(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    call = answered(Mount(str(tmp_path / "hosts"), "/dev/vdz", "ext4"))
    assert not call.is_directory


def test_a_mount_that_fails_is_an_error_not_a_crash(tmp_path: Path) -> None:
    call = answered(Mount(str(tmp_path / "vanished"), "server:/export", "nfs"))
    assert call.outcome_error() == "statvfs failed: No such file or directory"


@pytest.fixture
def hung_statvfs(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, threading.Event]]:
    """Make statvfs of the tests' mount point block, as on a hard NFS mount whose server
    is gone (which cannot be set up here), until the event is set."""
    target = mount_of(TESTS_DIR).mountpoint
    release = threading.Event()
    real_statvfs = os.statvfs

    def statvfs(path: Any) -> os.statvfs_result:
        if path == target:
            release.wait(30)
        return real_statvfs(path)

    monkeypatch.setattr(disk.os, "statvfs", statvfs)
    yield target, release
    release.set()


def statvfs_threads(path: str) -> int:
    return sum(t.name == f"statvfs {path}" for t in threading.enumerate())


def test_a_hung_mount_is_reported_and_not_asked_again(
    hung_statvfs: tuple[str, threading.Event],
) -> None:
    target, release = hung_statvfs
    options = DiskProbe.Options(mountpoints=[target], stat_timeout=disk.Duration(0.2))
    probe = DiskProbe("disk", options)
    [first] = probe.collect(NOW)
    assert math.isnan(first.value)
    assert (first.error or "").startswith("no answer from the filesystem for")
    started = time.monotonic()
    [second] = probe.collect(NOW)
    assert time.monotonic() - started < 0.2, "waited again for a mount known to hang"
    assert second.error and statvfs_threads(target) == 1
    release.set()
    deadline = time.monotonic() + 10
    while statvfs_threads(target) and time.monotonic() < deadline:
        time.sleep(0.01)  # the stuck thread's own exit, not the probe's timing
    recovered = probe.collect(NOW)
    assert all(s.error is None for s in recovered)
    assert 0.0 <= only(recovered, "disk_used_percent").value <= 100.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mountpoints": ["relative/path"]}, "absolute"),
        ({"stat_timeout": disk.Duration(0)}, "stat_timeout"),
    ],
)
def test_disk_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DiskProbe.Options(**options)


# --- sensors -----------------------------------------------------------------------------------

# The shape of psutil's (private) shwtemp and sfan tuples.
Temperature = namedtuple("Temperature", "label current high critical")
Fan = namedtuple("Fan", "label current")

SENSOR_METRICS = {
    "temperature_celsius",
    "temperature_high_celsius",
    "temperature_critical_celsius",
    "fan_rpm",
    "battery_percent",
    "battery_plugged",
    "battery_seconds_left",
}


def test_sensors_samples_have_their_labels_whatever_the_machine_has() -> None:
    samples = SensorsProbe("sensors", SensorsProbe.Options()).collect(NOW)
    for sample in samples:  # most VMs and containers have none: an empty list is fine
        assert sample.metric in SENSOR_METRICS
        assert set(sample.labels) == {"sensor", "label"} and all(sample.labels.values())
        assert sample.error is None and sample.timestamp == NOW
    keys = [(s.metric, tuple(sorted(s.labels.items()))) for s in samples]
    assert len(keys) == len(set(keys)), "two samples would share one alert fingerprint"


def test_sensors_name_unlabelled_and_repeated_entries_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # psutil groups sensors by driver name: two NVMe drives bring two "Composite" entries.
    temps = {
        "nvme": [Temperature("Composite", 41.0, 80.0, 85.0)] * 2,
        "acpitz": [Temperature("", 27.8, None, 0.0)],
    }
    fans = {"thinkpad": [Fan("", 2900)]}
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: temps, raising=False)
    monkeypatch.setattr(psutil, "sensors_fans", lambda: fans, raising=False)
    samples = SensorsProbe("sensors", SensorsProbe.Options()).collect(NOW)
    seen = {(s.metric, s.labels["sensor"], s.labels["label"]): s.value for s in samples}
    assert seen == {
        ("temperature_celsius", "nvme", "Composite"): 41.0,
        ("temperature_high_celsius", "nvme", "Composite"): 80.0,
        ("temperature_critical_celsius", "nvme", "Composite"): 85.0,
        ("temperature_celsius", "nvme", "Composite #2"): 41.0,
        ("temperature_high_celsius", "nvme", "Composite #2"): 80.0,
        ("temperature_critical_celsius", "nvme", "Composite #2"): 85.0,
        ("temperature_celsius", "acpitz", "temp1"): 27.8,  # a critical of 0 is no limit
        ("fan_rpm", "thinkpad", "fan1"): 2900.0,
    }


def test_sensors_on_a_platform_without_them_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(psutil, "sensors_temperatures", raising=False)
    monkeypatch.delattr(psutil, "sensors_fans", raising=False)
    monkeypatch.delattr(psutil, "sensors_battery", raising=False)
    assert SensorsProbe("sensors", SensorsProbe.Options()).collect(NOW) == []
