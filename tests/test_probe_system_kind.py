"""The system probe on this machine's real /proc, and on captured /proc files of other kernels
(tests/data/system/README.md says where each came from)."""

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from probes.base import PersistentProbe, Sample
from probes.system import (
    BOOT_TIME,
    OOM_KILLS,
    OOM_KILLS_NEW,
    OPEN_FILES,
    OPEN_FILES_MAX,
    OPEN_FILES_PERCENT,
    REBOOT_REQUIRED,
    REBOOTED,
    STATE_FILE,
    UPTIME,
    Boot,
    SystemProbe,
    new_oom_kills,
    read_file_nr,
    read_oom_kills,
)

NOW = 1_700_000_000.0
DATA = Path(__file__).parent / "data" / "system"
REAL_PROC = Path("/proc")


def values(samples: list[Sample]) -> dict[str, float]:
    assert len({s.metric for s in samples}) == len(samples), "a metric came twice"
    assert all(s.labels == {} and s.timestamp == NOW for s in samples)
    return {s.metric: s.value for s in samples}


def errors(samples: list[Sample]) -> dict[str, str]:
    return {s.metric: s.error for s in samples if s.error is not None}


def probe(proc: Path = REAL_PROC, **options: Any) -> SystemProbe:
    return SystemProbe("system", SystemProbe.Options(**options), proc)


def captured_proc(root: Path, vmstat: str | None, file_nr: str | None) -> Path:
    """A /proc of captured files; what is not given is missing."""
    for name, target in ((vmstat, "vmstat"), (file_nr, "sys/fs/file-nr"), ("uptime", "uptime")):
        if name is not None:
            (root / target).parent.mkdir(parents=True, exist_ok=True)
            source = "uptime-linux-6.18" if name == "uptime" else name
            shutil.copy(DATA / source, root / target)
    return root


def real_boot_id() -> str:
    return (REAL_PROC / "sys/kernel/random/boot_id").read_text().strip()


# --- the real /proc -------------------------------------------------------------------------


def test_the_real_machine_reports_every_figure() -> None:
    samples = probe().collect(NOW)
    assert errors(samples) == {}
    got = values(samples)
    assert got[UPTIME] == pytest.approx(time.time() - psutil.boot_time(), abs=2.0)
    assert got[BOOT_TIME] == psutil.boot_time()
    assert got[REBOOTED] == 0.0 and got[REBOOT_REQUIRED] in (0.0, 1.0)
    assert got[OOM_KILLS] >= 0 and got[OOM_KILLS] == int(got[OOM_KILLS])
    assert got[OOM_KILLS_NEW] == 0.0  # the first collection is the baseline
    assert 0 < got[OPEN_FILES] <= got[OPEN_FILES_MAX]
    assert got[OPEN_FILES_PERCENT] == pytest.approx(100 * got[OPEN_FILES] / got[OPEN_FILES_MAX])


def test_it_is_a_persistent_probe() -> None:
    assert isinstance(probe(), PersistentProbe)


def test_a_daemon_restart_without_reboot_is_not_a_reboot(tmp_path: Path) -> None:
    first = probe()
    first.use_state_dir(tmp_path)
    assert values(first.collect(NOW))[REBOOTED] == 0.0
    saved = json.loads((tmp_path / STATE_FILE).read_text())
    assert saved["boot_id"] == real_boot_id()
    restarted = probe()
    restarted.use_state_dir(tmp_path)
    assert values(restarted.collect(NOW))[REBOOTED] == 0.0


def test_a_reboot_while_the_daemon_was_down_is_reported_once(tmp_path: Path) -> None:
    oom_kills = read_oom_kills(REAL_PROC / "vmstat")
    earlier_boot = {"boot_id": "0d6c1b4e-earlier-boot", "boot_time": 1.0, "oom_kills": 99}
    (tmp_path / STATE_FILE).write_text(json.dumps(earlier_boot))
    after_reboot = probe()
    after_reboot.use_state_dir(tmp_path)
    first = values(after_reboot.collect(NOW))
    assert first[REBOOTED] == 1.0
    assert first[OOM_KILLS_NEW] == oom_kills  # all kills since boot are new
    assert values(after_reboot.collect(NOW))[REBOOTED] == 0.0
    assert json.loads((tmp_path / STATE_FILE).read_text())["boot_id"] == real_boot_id()


def test_without_a_state_directory_the_last_boot_is_remembered_in_memory() -> None:
    once = probe()
    assert values(once.collect(NOW))[REBOOTED] == 0.0
    assert once._last is not None and once._last.boot_id == real_boot_id()
    once._last = Boot("an-earlier-boot", 1.0, 0)
    assert values(once.collect(NOW))[REBOOTED] == 1.0


def test_an_unreadable_state_file_counts_as_no_memory(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    fresh = probe()
    fresh.use_state_dir(tmp_path)
    assert values(fresh.collect(NOW))[REBOOTED] == 0.0


def test_the_reboot_required_file_is_looked_for(tmp_path: Path) -> None:
    flag = tmp_path / "reboot-required"
    assert values(probe(reboot_required_file=str(flag)).collect(NOW))[REBOOT_REQUIRED] == 0.0
    flag.write_text("*** System restart required ***\n")
    assert values(probe(reboot_required_file=str(flag)).collect(NOW))[REBOOT_REQUIRED] == 1.0


def test_a_reboot_required_file_that_cannot_be_checked_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    samples = probe(reboot_required_file=str(tmp_path / "a-file" / "inside")).collect(NOW)
    assert math.isnan(values(samples)[REBOOT_REQUIRED])
    assert errors(samples)[REBOOT_REQUIRED].startswith("cannot check ")


def test_the_reboot_required_file_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="absolute"):
        SystemProbe.Options(reboot_required_file="reboot-required")


# --- captured /proc files -------------------------------------------------------------------


def test_a_kernel_without_oom_kill_gives_no_oom_samples(tmp_path: Path) -> None:
    proc = captured_proc(tmp_path, "vmstat-without-oom-kill", "file-nr-node-exporter")
    samples = probe(proc).collect(NOW)
    got = values(samples)
    assert OOM_KILLS not in got and OOM_KILLS_NEW not in got
    assert errors(samples) == {}
    assert got[UPTIME] == 1793.94  # from the captured /proc/uptime
    assert (got[OPEN_FILES], got[OPEN_FILES_MAX]) == (1024.0, 1631329.0)


def test_missing_proc_files_are_error_samples_not_exceptions(tmp_path: Path) -> None:
    samples = probe(tmp_path).collect(NOW)
    assert set(errors(samples)) == {OOM_KILLS, OPEN_FILES}
    assert "cannot read" in errors(samples)[OOM_KILLS]
    assert values(samples)[UPTIME] > 0  # from the boot time instead


def test_a_mangled_vmstat_is_an_error_sample(tmp_path: Path) -> None:
    (tmp_path / "vmstat").write_text("pgpgin 1\noom_kill many\n")
    samples = probe(tmp_path).collect(NOW)
    assert errors(samples)[OOM_KILLS] == f"{tmp_path / 'vmstat'}: oom_kill is not a number"
    assert OOM_KILLS_NEW not in values(samples)


def test_captured_files_of_a_current_kernel_parse() -> None:
    assert read_oom_kills(DATA / "vmstat-linux-6.18") == 0
    assert read_oom_kills(DATA / "vmstat-without-oom-kill") is None
    used, limit = read_file_nr(DATA / "file-nr-linux-6.18")
    assert 0 < used < limit


# --- reboots and OOM kills as figures -----------------------------------------------------------


def test_boots_are_told_apart_by_boot_id_or_else_by_boot_time() -> None:
    assert Boot("a", 100.0).same_boot(Boot("a", 160.5))  # a clock step moved the boot time
    assert not Boot("a", 100.0).same_boot(Boot("b", 100.0))
    assert Boot(None, 100.0).same_boot(Boot(None, 130.0))
    assert not Boot(None, 100.0).same_boot(Boot(None, 4000.0))


def test_new_oom_kills_since_the_last_collection() -> None:
    assert new_oom_kills(None, Boot("a", 1.0, 7)) == 0
    assert new_oom_kills(Boot("a", 1.0, 7), Boot("a", 1.0, 9)) == 2
    assert new_oom_kills(Boot("a", 1.0, 7), Boot("b", 500.0, 3)) == 3
    assert new_oom_kills(Boot("a", 1.0, None), Boot("a", 1.0, 3)) == 0
    assert new_oom_kills(Boot("a", 1.0, 7), Boot("a", 1.0, None)) is None
