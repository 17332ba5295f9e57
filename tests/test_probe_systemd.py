"""The systemd probe: its parser on real captured `systemctl` outputs (tests/data/systemd), the
real `systemctl` of this machine, and the probe's calls replayed by a stand-in `systemctl`
that answers with those captured outputs."""

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from probe_helpers import values

import probes.systemd as systemd
from monitor.config import parse_config
from probes.base import Sample
from probes.systemd import SystemdProbe, describe, parse_show, parse_unit_list, unit_samples

NOW = 1_700_000_000.0
DATA = Path(__file__).parent / "data" / "systemd"
# ActiveEnterTimestampMonotonic of fw-ok in show-properties.txt, in seconds, plus 90.
FW_OK_ENTERED = 2610.537824
CLOCK = FW_OK_ENTERED + 90.0
NAN = math.nan


def read(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def captured() -> dict[str, dict[str, str]]:
    return {block["Id"]: block for block in parse_show(read("show-properties.txt"))}


def same(got: dict[str, float], expected: dict[str, float]) -> bool:
    return got.keys() == expected.keys() and all(
        (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)
        for a, b in ((got[k], expected[k]) for k in got)
    )


def expect(active: float, failed: float, state: float, restarts: float, seconds: float) -> Any:
    return {
        "systemd_unit_active": active,
        "systemd_unit_failed": failed,
        "systemd_unit_state": state,
        "systemd_unit_restarts_total": restarts,
        "systemd_unit_active_seconds": seconds,
    }


# --- the parser on captured outputs --------------------------------------------------------------


def test_show_output_splits_into_one_block_per_unit_in_order() -> None:
    ids = [block["Id"] for block in parse_show(read("show-properties.txt"))]
    assert ids == [
        "fw-ok.service", "fw-fail.service", "fw-loop.service", "fw-killed.service",
        "fw-stopped.service", "fw-tick.timer", "no-such-unit.service", "fw-masked.service",
        "fw-broken.service",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("unit", "metrics", "error"),
    [
        ("fw-ok.service", expect(1, 0, 0, 0, 90.0), None),
        (
            "fw-fail.service",
            expect(0, 1, 3, 0, NAN),
            "failed (failed): result exit-code, main process exited with status 3",
        ),
        (
            "fw-loop.service",
            expect(0, 0, 4, 2, NAN),
            "activating (auto-restart): result exit-code, main process exited with status 1",
        ),
        (
            "fw-killed.service",
            expect(0, 1, 3, 0, NAN),
            "failed (failed): result signal, main process killed by signal 9",
        ),
        ("fw-stopped.service", expect(0, 0, 2, 0, NAN), "inactive (dead): result success"),
        ("fw-tick.timer", expect(1, 0, 0, NAN, 90.016735), None),  # active a little earlier
        ("no-such-unit.service", expect(0, 0, 2, 0, NAN), "unit not found"),
        ("fw-masked.service", expect(0, 0, 2, 0, NAN), "unit is masked"),
        ("fw-broken.service", expect(0, 0, 2, 0, NAN), "unit not loaded (bad-setting)"),
    ],
)
def test_each_captured_state_becomes_its_samples(
    unit: str, metrics: dict[str, float], error: str | None
) -> None:
    samples = unit_samples(unit, captured()[unit], NOW, CLOCK)
    assert same(values(samples), metrics), values(samples)
    assert all(s.error == error for s in samples)
    assert all(s.labels == {"unit": unit} and s.timestamp == NOW for s in samples)


def test_a_full_dump_of_a_crash_looping_unit() -> None:
    [block] = parse_show(read("show-all-crash-loop.txt"))
    assert len(block) > 200 and block["Id"] == "fw-loop.service"
    samples = unit_samples("fw-loop.service", block, NOW, CLOCK)
    assert same(values(samples), expect(0, 0, 4, 2, NAN))


def test_a_full_dump_from_another_host() -> None:
    [block] = parse_show(read("show-all-nginx-check_systemd.txt"))
    assert block["ExecStart"].startswith("{ path=/usr/sbin/nginx ; argv[]=/usr/sbin/nginx -g")
    entered = 6.769079  # ActiveEnterTimestampMonotonic, seconds after that host booted
    samples = unit_samples("nginx", block, NOW, entered + 3600)
    assert same(values(samples), expect(1, 0, 0, 0, 3600.0))
    assert describe(block) is None


def test_the_unit_list_gives_the_first_column() -> None:
    assert parse_unit_list(read("list-units.txt")) == [
        "fw-fail.service", "fw-killed.service", "fw-loop.service", "fw-ok.service",
        "fw-tick.service", "fw-tick.timer",
    ]  # fmt: skip


def test_a_unit_running_after_its_file_went_is_up() -> None:
    running = {**captured()["fw-ok.service"], "LoadState": "not-found"}
    assert describe(running) is None


# --- the real systemctl of this machine ----------------------------------------------------------


def test_this_machines_systemctl() -> None:
    """Without systemd as PID 1 (as on the CI machine), an error sample for every name."""
    samples = SystemdProbe("services", SystemdProbe.Options(units=["-.slice", "ssh*"])).collect(NOW)
    if Path("/run/systemd/system").is_dir():  # booted with systemd: the root slice is active
        root = {s.metric: s for s in samples if s.labels["unit"] == "-.slice"}
        assert root["systemd_unit_active"].value == 1.0
        return
    assert {s.labels["unit"] for s in samples} == {"-.slice", "ssh*"}
    assert all(
        (s.error or "").startswith(
            "systemd is not running (System has not been booted with systemd as init system"
        )
        for s in samples
    )
    active = [s for s in samples if s.metric == "systemd_unit_active"]
    assert [s.value for s in active] == [0.0, 0.0]
    assert all(math.isnan(s.value) for s in samples if s.metric != "systemd_unit_active")


def test_without_systemctl_the_reason_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    samples = SystemdProbe("services", SystemdProbe.Options(units=["nginx"])).collect(NOW)
    assert samples[0].value == 0.0
    assert samples[0].error == "systemctl not found: systemd's tools are not installed"


# --- the probe's calls, answered by a stand-in with the captured outputs -------------------------

STAND_IN = """#!{python}
import json, os, sys, time
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps({{"args": args, "env": dict(os.environ)}}) + "\\n")
data = {data!r}
if any("hang" in arg for arg in args):
    time.sleep(30)
elif "list-units" in args:
    sys.stdout.write(open(os.path.join(data, "list-units.txt")).read())
elif "show" in args:
    text = open(os.path.join(data, "show-properties.txt")).read()
    blocks = {{b.split("Id=")[1].split("\\n")[0]: b.strip() for b in text.split("\\n\\n")}}
    units = args[args.index("--") + 1:]
    sys.stdout.write("\\n\\n".join(blocks[u] for u in units) + "\\n")
"""


class StandIn:
    """A `systemctl` first on PATH that logs its calls and answers with captured output."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log = directory / "calls.jsonl"
        script = directory / "systemctl"
        script.write_text(STAND_IN.format(python=sys.executable, log=str(self.log), data=str(DATA)))
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")

    def calls(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    return StandIn(tmp_path, monkeypatch)


def by_unit(samples: list[Sample]) -> dict[str, dict[str, Sample]]:
    units: dict[str, dict[str, Sample]] = {}
    for sample in samples:
        units.setdefault(sample.labels["unit"], {})[sample.metric] = sample
    return units


def test_one_show_call_as_an_argument_list_in_a_clean_environment(
    stand_in: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOREWARN_TEST_SECRET", "hunter2")
    units = ["fw-ok.service", "fw-fail.service"]
    samples = SystemdProbe("services", SystemdProbe.Options(units=units)).collect(NOW)
    [call] = stand_in.calls()
    assert call["args"] == [
        "--no-pager",
        "show",
        "--property=Id,LoadState,ActiveState,SubState,Result,NRestarts,ExecMainCode,"
        "ExecMainStatus,ActiveEnterTimestampMonotonic",
        "--",
        "fw-ok.service",
        "fw-fail.service",
    ]
    assert "FOREWARN_TEST_SECRET" not in call["env"] and call["env"]["LC_ALL"] == "C"
    found = by_unit(samples)
    assert found["fw-ok.service"]["systemd_unit_active"].value == 1.0
    assert found["fw-fail.service"]["systemd_unit_failed"].value == 1.0


def test_globs_are_expanded_from_the_loaded_units(stand_in: StandIn) -> None:
    options = SystemdProbe.Options(units=["fw-ok.service", "fw-*.timer", "fw-l*", "gone-*"])
    samples = SystemdProbe("services", options).collect(NOW)
    listing, show = stand_in.calls()
    assert listing["args"] == [
        "--no-pager", "list-units", "--all", "--plain", "--no-legend", "--full", "--",
        "fw-*.timer", "fw-l*", "gone-*",
    ]  # fmt: skip
    assert show["args"][-3:] == ["fw-ok.service", "fw-tick.timer", "fw-loop.service"]
    found = by_unit(samples)
    assert set(found) == {"fw-ok.service", "fw-tick.timer", "fw-loop.service", "gone-*"}
    assert found["fw-loop.service"]["systemd_unit_state"].value == 4.0
    assert found["gone-*"]["systemd_unit_active"].value == 0.0
    assert found["gone-*"]["systemd_unit_active"].error == "no loaded unit matches gone-*"


def test_a_hanging_systemctl_times_out(stand_in: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(systemd, "SYSTEMCTL_TIMEOUT", 0.3)
    monkeypatch.setattr(systemd, "PROPERTIES", ("hang",))  # the stand-in's cue to hang
    samples = SystemdProbe("services", SystemdProbe.Options(units=["nginx"])).collect(NOW)
    assert samples[0].value == 0.0 and samples[0].error == "systemctl timed out after 0.3s"


# --- configuration -------------------------------------------------------------------------------


def test_a_config_table_builds_the_probe() -> None:
    config = parse_config(
        """
        [[probe]]
        name = "services"
        kind = "systemd"
        units = ["nginx.service", "postgresql@*.service", "-.mount"]
        """,
        "config.toml",
    )
    [probe] = config.probes
    assert probe.options == SystemdProbe.Options(
        units=["nginx.service", "postgresql@*.service", "-.mount"]
    )


@pytest.mark.parametrize(
    ("units", "message"),
    [
        ([], "at least one unit"),
        (["nginx; reboot"], "is not a unit name"),
        (["my service"], "is not a unit name"),
        (["nginx", "nginx"], "duplicates"),
    ],
)
def test_options_are_validated(units: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SystemdProbe.Options(units=units)
