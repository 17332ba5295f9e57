"""The diskio probe on this machine's real block devices (psutil on the real /proc/diskstats),
with real writes made to disk, and a sysfs tree of the kernel's layout for what this
machine lacks (partitions, SCSI error counters)."""

import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from probe_helpers import by_metric

from probes._window import MIN_WINDOW_SECONDS
from probes.diskio import (
    ERRORS,
    READ_AWAIT,
    READ_BYTES,
    READS,
    SYSFS,
    UTILIZATION,
    WRITE_AWAIT,
    WRITE_BYTES,
    WRITES,
    DiskioProbe,
    default_devices,
    rates,
    read_error_count,
    went_backwards,
)

NOW = 1_700_000_000.0
WRITTEN_BYTES = 8 * 1024 * 1024

Counters = type(next(iter(psutil.disk_io_counters(perdisk=True).values())))


def counters(**values: int) -> Any:
    return Counters(**{name: values.get(name, 0) for name in Counters._fields})


def probe(sysfs: Path = SYSFS, **options: Any) -> DiskioProbe:
    return DiskioProbe("diskio", DiskioProbe.Options(**options), sysfs)


def a_whole_disk() -> str:
    found = default_devices(sorted(psutil.disk_io_counters(perdisk=True)), False)
    assert found, "this machine has no block device that is a whole disk"
    return found[0]


@pytest.fixture
def disk_directory(tmp_path: Path) -> Iterator[Path]:
    """A directory on a real disk: tmp_path, unless /tmp is a RAM filesystem."""
    mounts = sorted(psutil.disk_partitions(all=True), key=lambda m: len(m.mountpoint))
    under = [m for m in mounts if str(tmp_path).startswith(m.mountpoint.rstrip("/") + "/")]
    if under and under[-1].fstype not in ("tmpfs", "ramfs"):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as directory:
        yield Path(directory)


# --- the real machine -----------------------------------------------------------------------


def test_fsynced_writes_are_counted_on_a_real_disk(disk_directory: Path) -> None:
    started = time.monotonic()
    watching = probe()
    with open(disk_directory / "data", "wb") as file:
        file.write(os.urandom(WRITTEN_BYTES))  # random: no filesystem compresses it away
        file.flush()
        os.fsync(file.fileno())
    samples = by_metric(watching.collect(NOW))
    elapsed = time.monotonic() - started
    # The probe's window lies inside `elapsed`, so the bytes it saw need at least this rate.
    total = sum(s.value for s in samples[WRITE_BYTES])
    assert total >= WRITTEN_BYTES / elapsed
    assert sum(s.value for s in samples[WRITES]) > 0


def test_every_figure_of_every_disk_is_in_range() -> None:
    samples = probe().collect(NOW)
    grouped = by_metric(samples)
    devices = {s.labels["device"] for s in samples}
    assert devices and all(s.timestamp == NOW and s.error is None for s in samples)
    assert all(0.0 <= s.value <= 100.0 for s in grouped[UTILIZATION])
    for metric in (READ_BYTES, WRITE_BYTES, READS, WRITES, READ_AWAIT, WRITE_AWAIT):
        assert {s.labels["device"] for s in grouped[metric]} == devices
        assert all(s.value >= 0.0 and math.isfinite(s.value) for s in grouped[metric])


def test_by_default_ram_loop_and_partition_devices_are_left_out() -> None:
    devices = {s.labels["device"] for s in probe().collect(NOW)}
    assert not {d for d in devices if d.startswith(("loop", "ram", "zram", "fd"))}
    assert not {d for d in devices if Path(f"/sys/class/block/{d}/partition").exists()}


def test_the_first_collection_right_after_building_waits_for_a_full_window() -> None:
    watching = probe()
    started = time.monotonic()
    assert by_metric(watching.collect(NOW))[WRITE_BYTES]
    assert time.monotonic() - started >= MIN_WINDOW_SECONDS * 0.9


def test_a_named_device_is_the_only_one_reported() -> None:
    disk = a_whole_disk()
    samples = probe(devices=[disk]).collect(NOW)
    assert {s.labels["device"] for s in samples} == {disk}
    assert by_metric(samples)[READ_BYTES]


def test_a_named_device_that_does_not_exist_is_an_error_sample() -> None:
    [sample] = probe(devices=["sdzz9"]).collect(NOW)
    assert sample.metric == UTILIZATION and math.isnan(sample.value)
    assert sample.labels == {"device": "sdzz9"}
    assert sample.error == "no such block device"


def test_devices_are_kernel_names_not_paths() -> None:
    with pytest.raises(ValueError, match="not paths"):
        DiskioProbe.Options(devices=["/dev/sda"])


def test_error_counters_of_this_machine_read_without_failing() -> None:
    for device in psutil.disk_io_counters(perdisk=True):
        count = read_error_count(device)  # None on virtio, NVMe, loop
        assert count is None or count >= 0


# --- the figures ----------------------------------------------------------------------------


def test_rates_are_deltas_over_the_window() -> None:
    before = counters(read_count=100, write_count=50, read_bytes=4096, write_bytes=8192,
                      read_time=1000, write_time=400, busy_time=2000)  # fmt: skip
    after = counters(read_count=300, write_count=60, read_bytes=4096 + 2_000_000,
                     write_bytes=8192 + 400_000, read_time=1000 + 1200, write_time=400 + 50,
                     busy_time=2000 + 1500)  # fmt: skip
    figures = rates(before, after, 2.0)
    assert figures[READ_BYTES] == pytest.approx(1_000_000)
    assert figures[WRITE_BYTES] == pytest.approx(200_000)
    assert figures[READS] == pytest.approx(100)
    assert figures[WRITES] == pytest.approx(5)
    assert figures[READ_AWAIT] == pytest.approx(0.006)  # 1200 ms over 200 reads
    assert figures[WRITE_AWAIT] == pytest.approx(0.005)  # 50 ms over 10 writes
    assert figures[UTILIZATION] == pytest.approx(75.0)  # 1.5 s busy of 2


def test_an_idle_device_waits_zero_and_utilisation_is_capped() -> None:
    before = counters(busy_time=0)
    after = counters(busy_time=1010)  # merged in-flight accounting can overshoot the window
    figures = rates(before, after, 1.0)
    assert figures[READ_AWAIT] == 0.0 and figures[WRITE_AWAIT] == 0.0
    assert figures[UTILIZATION] == 100.0


def test_counters_that_went_backwards_start_a_new_baseline() -> None:
    assert went_backwards(counters(read_count=10), counters(read_count=3))
    assert not went_backwards(counters(read_count=3), counters(read_count=10))


# --- sysfs of the kernel's layout -------------------------------------------------------------


def fake_sysfs(root: Path, partitions: list[str], error_counts: dict[str, str]) -> Path:
    for name in partitions:
        (root / "class/block" / name).mkdir(parents=True)
        (root / "class/block" / name / "partition").write_text("1\n")
    for device, text in error_counts.items():
        (root / "block" / device / "device").mkdir(parents=True)
        (root / "block" / device / "device" / "ioerr_cnt").write_text(text)
    return root


def test_partitions_are_told_by_their_partition_attribute(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path, ["sda1", "nvme0n1p2"], {})
    names = ["sda", "sda1", "nvme0n1", "nvme0n1p2", "dm-0", "loop0", "zram0", "ram1", "fd0"]
    assert default_devices(names, False, sysfs) == ["sda", "nvme0n1", "dm-0"]
    assert default_devices(names, True, sysfs) == ["sda", "sda1", "nvme0n1", "nvme0n1p2", "dm-0"]


def test_the_scsi_error_counter_is_read_as_the_kernel_prints_it(tmp_path: Path) -> None:
    # drivers/scsi/scsi_sysfs.c prints ioerr_cnt with "0x%x\n".
    sysfs = fake_sysfs(tmp_path, [], {"sda": "0x1f\n", "sdb": "garbage\n"})
    assert read_error_count("sda", sysfs) == 31
    assert read_error_count("vda", sysfs) is None
    with pytest.raises(ValueError):
        read_error_count("sdb", sysfs)


def test_a_real_disk_reports_its_error_counter_where_there_is_one(tmp_path: Path) -> None:
    disk = a_whole_disk()
    sysfs = fake_sysfs(tmp_path, [], {disk: "0x2\n"})
    [errors] = by_metric(probe(sysfs, devices=[disk]).collect(NOW))[ERRORS]
    assert errors.value == 2.0 and errors.labels == {"device": disk}


def test_an_unreadable_error_counter_is_an_error_sample(tmp_path: Path) -> None:
    disk = a_whole_disk()
    sysfs = fake_sysfs(tmp_path, [], {disk: "0xZZ\n"})
    samples = by_metric(probe(sysfs, devices=[disk]).collect(NOW))
    [failed] = samples[ERRORS]
    assert math.isnan(failed.value) and failed.labels == {"device": disk}
    assert failed.error is not None and failed.error.startswith("cannot read the error counter")
    assert all(s.error is None for s in samples[UTILIZATION])
