"""The raid probe on real /proc/mdstat captures (tests/data/raid) and on this machine's /proc."""

import os
from pathlib import Path

import pytest

from probes.base import Sample
from probes.raid import DEFAULT_MDSTAT, RaidProbe

NOW = 1_700_000_000.0
DATA = Path(__file__).parent / "data" / "raid"
NODE_EXPORTER = DATA / "node_exporter-mdstat"
CHECKING = DATA / "telegraf-mdstat-check"


def collect(path: Path | str) -> list[Sample]:
    return RaidProbe("raid", RaidProbe.Options(mdstat_path=str(path))).collect(NOW)


def by_array(samples: list[Sample]) -> dict[str, dict[str, float]]:
    arrays: dict[str, dict[str, float]] = {}
    for sample in samples:
        if "array" in sample.labels:
            arrays.setdefault(sample.labels["array"], {})[sample.metric] = sample.value
    return arrays


@pytest.fixture(scope="module")
def node_arrays() -> dict[str, dict[str, float]]:
    return by_array(collect(NODE_EXPORTER))


def test_every_array_of_the_capture_is_reported_once_with_its_level() -> None:
    samples = collect(NODE_EXPORTER)
    arrays = {(s.labels["array"], s.labels["level"]) for s in samples if s.labels}
    assert len(arrays) == 16
    assert ("md120", "linear") in arrays and ("md10", "raid0") in arrays
    assert ("md219", "") in arrays  # inactive imsm container: the kernel names no level
    keys = [(s.metric, s.labels.get("array")) for s in samples]
    assert len(keys) == len(set(keys)), "two samples would share one alert fingerprint"
    assert all(s.timestamp == NOW and s.error is None for s in samples)
    [up] = [s for s in samples if s.metric == "raid_up"]
    assert up.value == 1.0 and up.labels == {}


def test_a_healthy_mirror_is_whole_and_idle(node_arrays: dict[str, dict[str, float]]) -> None:
    assert node_arrays["md0"] == {
        "raid_active": 1.0,
        "raid_degraded": 0.0,
        "raid_disks": 2.0,
        "raid_disks_active": 2.0,
        "raid_disks_failed": 0.0,
        "raid_disks_spare": 0.0,
        "raid_rebuilding": 0.0,
        "raid_checking": 0.0,
        "raid_sync_pending": 0.0,
    }


def test_a_degraded_raid6_with_a_failed_member(node_arrays: dict[str, dict[str, float]]) -> None:
    md7 = node_arrays["md7"]  # [4/3] [U_UU], sdc1[1](F)
    assert md7["raid_degraded"] == 1.0
    assert (md7["raid_disks"], md7["raid_disks_active"], md7["raid_disks_failed"]) == (4, 3, 1)
    assert md7["raid_rebuilding"] == 0.0 and "raid_sync_progress_percent" not in md7


def test_a_mirror_recovering_onto_a_new_disk(node_arrays: dict[str, dict[str, float]]) -> None:
    md6 = node_arrays["md6"]  # [2/1] [U_], recovery = 8.5% ... finish=17.0min
    assert md6["raid_degraded"] == 1.0 and md6["raid_rebuilding"] == 1.0
    assert md6["raid_disks_failed"] == 1.0 and md6["raid_disks_spare"] == 1.0
    assert md6["raid_sync_progress_percent"] == pytest.approx(8.5)
    assert md6["raid_sync_eta_seconds"] == pytest.approx(17.0 * 60)
    assert md6["raid_checking"] == 0.0


def test_a_resync_is_a_rebuild_of_a_whole_array(node_arrays: dict[str, dict[str, float]]) -> None:
    md8 = node_arrays["md8"]  # [2/2] [UU], resync = 8.5%, two spares
    assert md8["raid_degraded"] == 0.0 and md8["raid_rebuilding"] == 1.0
    assert md8["raid_disks_spare"] == 2.0
    assert md8["raid_sync_progress_percent"] == pytest.approx(8.5)


def test_waiting_resyncs_are_pending_not_running(node_arrays: dict[str, dict[str, float]]) -> None:
    for name in ("md9", "md11"):  # resync=DELAYED, resync=PENDING
        assert node_arrays[name]["raid_sync_pending"] == 1.0
        assert node_arrays[name]["raid_rebuilding"] == 0.0
        assert "raid_sync_progress_percent" not in node_arrays[name]
    assert (node_arrays["md9"]["raid_disks_failed"], node_arrays["md9"]["raid_disks_spare"]) == (
        2,
        1,
    )


def test_inactive_arrays_are_not_active(node_arrays: dict[str, dict[str, float]]) -> None:
    assert node_arrays["md4"]["raid_active"] == 0.0
    md219 = node_arrays["md219"]  # three spares, no [n/m]
    assert md219["raid_active"] == 0.0 and md219["raid_disks_spare"] == 3.0
    assert "raid_degraded" not in md219


def test_read_only_arrays_count_as_active(node_arrays: dict[str, dict[str, float]]) -> None:
    assert node_arrays["md11"]["raid_active"] == 1.0  # (auto-read-only)
    assert node_arrays["md101"]["raid_active"] == 1.0  # (read-only)


def test_arrays_without_redundancy_have_no_degraded_count(
    node_arrays: dict[str, dict[str, float]],
) -> None:
    for name in ("md10", "md120", "md101"):  # raid0, linear: the kernel prints no [n/m]
        assert "raid_degraded" not in node_arrays[name]
    assert (node_arrays["md101"]["raid_disks"], node_arrays["md101"]["raid_disks_active"]) == (3, 3)


def test_a_check_is_a_scrub_not_a_rebuild() -> None:
    arrays = by_array(collect(CHECKING))
    md2 = arrays["md2"]  # raid10 [12/12], check = 94.3% ... finish=101.6min
    assert md2["raid_checking"] == 1.0 and md2["raid_rebuilding"] == 0.0
    assert md2["raid_sync_progress_percent"] == pytest.approx(94.3)
    assert md2["raid_sync_eta_seconds"] == pytest.approx(101.6 * 60)
    assert md2["raid_degraded"] == 0.0 and md2["raid_disks"] == 12.0
    assert arrays["md0"]["raid_checking"] == 0.0


def test_this_machine_reports_its_real_arrays_or_none() -> None:
    samples = RaidProbe("raid", RaidProbe.Options()).collect(NOW)
    if not os.path.exists(DEFAULT_MDSTAT):
        assert samples == []  # no md driver loaded: no arrays, not an error
        return
    assert [s.value for s in samples if s.metric == "raid_up"] == [1.0]
    assert all(s.error is None for s in samples)


def test_a_configured_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    [sample] = collect(tmp_path / "mdstat")
    assert (sample.metric, sample.value, sample.labels) == ("raid_up", 0.0, {})
    assert sample.error == f"{tmp_path / 'mdstat'} does not exist"


def test_an_unreadable_file_is_an_error(tmp_path: Path) -> None:
    [sample] = collect(tmp_path)  # a directory: reading it fails with EISDIR
    assert sample.metric == "raid_up" and sample.value == 0.0
    assert sample.error == f"cannot read {tmp_path}: Is a directory"


def test_an_empty_path_is_refused() -> None:
    with pytest.raises(ValueError, match="mdstat_path"):
        RaidProbe.Options(mdstat_path="")
