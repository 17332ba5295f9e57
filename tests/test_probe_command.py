"""The command probe running the real Debian monitoring plugins, and the perfdata parser."""

import math
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from http_service import HttpService

from monitor.config import ConfigError, parse_config
from probes._perfdata import Perfdata, parse_perfdata, split_output
from probes.base import Duration, Sample
from probes.command import MAX_OUTPUT_BYTES, PLUGIN_DIRS, CommandProbe, run_plugin

NOW = 1_700_000_000.0


@pytest.fixture(scope="module")
def plugins() -> None:
    """The Debian monitoring plugins: skipped without them (a failure with CI=true, as every
    skip is: see conftest.py)."""
    if not any(Path(d, "check_dummy").exists() for d in PLUGIN_DIRS):
        pytest.skip("monitoring-plugins-basic is not installed (tests/run.sh installs it)")


def collect(*command: str, **options: Any) -> list[Sample]:
    options = CommandProbe.Options(command=list(command), **options)
    return CommandProbe("check", options).collect(NOW)


def status(samples: list[Sample]) -> Sample:
    return next(s for s in samples if s.metric == "command_status")


def perf(samples: list[Sample], label: str, metric: str = "command_perfdata") -> Sample:
    return next(s for s in samples if s.metric == metric and s.labels["label"] == label)


def metrics_of(samples: list[Sample], label: str) -> set[str]:
    return {s.metric for s in samples if s.labels.get("label") == label}


def assert_state(samples: list[Sample], state: int, error: str | None) -> None:
    by_metric = {s.metric: s for s in samples if not s.labels}
    assert by_metric["command_status"].value == state
    assert by_metric["command_ok"].value == (1.0 if state == 0 else 0.0)
    assert all(s.error == error for s in by_metric.values())
    assert 0.0 <= by_metric["command_duration_seconds"].value < 5.0
    assert all(s.timestamp == NOW for s in samples)


def gone(pid: int) -> bool:
    """Dead, or a zombie nobody reaps (a container's init may not)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return gone(pid)


# --- the real plugins -----------------------------------------------------------------------------

uses_plugins = pytest.mark.usefixtures("plugins")


@uses_plugins
@pytest.mark.parametrize(
    ("state", "text"),
    [(0, None), (1, "WARNING: disk nearly full"), (2, "CRITICAL: disk nearly full"),
     (3, "UNKNOWN: disk nearly full")],
)  # fmt: skip
def test_check_dummy_exit_codes_are_the_states(state: int, text: str | None) -> None:
    assert_state(collect("check_dummy", str(state), "disk nearly full"), state, text)


@uses_plugins
def test_check_load_perfdata_are_samples_with_thresholds() -> None:
    samples = collect("check_load", "-w", "900,800,700", "-c", "1000,900,800")
    assert_state(samples, 0, None)
    load1 = perf(samples, "load1")
    assert load1.labels == {"label": "load1", "uom": ""}
    assert abs(load1.value - os.getloadavg()[0]) < 1.0
    assert perf(samples, "load1", "command_perfdata_warn").value == 900.0
    assert perf(samples, "load15", "command_perfdata_crit").value == 800.0
    assert perf(samples, "load5", "command_perfdata_min").value == 0.0
    assert "command_perfdata_max" not in metrics_of(samples, "load1")


@uses_plugins
def test_check_disk_reports_bytes_used_of_the_root_filesystem() -> None:
    samples = collect("check_disk", "-w", "20%", "-c", "10%", "-p", "/")
    state = status(samples).value
    assert state in (0.0, 1.0, 2.0)  # depends on this disk; the text says which when not OK
    assert (status(samples).error is None) == (state == 0.0)
    used = perf(samples, "/")
    assert used.labels == {"label": "/", "uom": "bytes"}
    usage = psutil.disk_usage("/")
    assert abs(used.value - usage.used) < max(0.02 * usage.total, 200e6)
    total = perf(samples, "/", "command_perfdata_max").value
    assert abs(total - usage.total) < 0.1 * usage.total
    warn = perf(samples, "/", "command_perfdata_warn").value
    crit = perf(samples, "/", "command_perfdata_crit").value
    assert 0.0 < warn < crit < total  # the % thresholds, printed by the plugin in bytes


@uses_plugins
def test_check_tcp_against_an_open_and_a_closed_loopback_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = str(listener.getsockname()[1])
        samples = collect("check_tcp", "-H", "127.0.0.1", "-p", port)
    assert_state(samples, 0, None)
    time_taken = perf(samples, "time")
    assert time_taken.labels["uom"] == "seconds" and 0.0 <= time_taken.value < 1.0
    assert perf(samples, "time", "command_perfdata_max").value == 10.0
    refused = collect("check_tcp", "-H", "127.0.0.1", "-p", port)
    assert_state(refused, 2, f"connect to address 127.0.0.1 and port {port}: Connection refused")


@pytest.fixture(scope="module")
def web() -> Iterator[HttpService]:
    service = HttpService()
    service.start()
    yield service
    service.stop()


@uses_plugins
def test_check_http_against_a_loopback_server(web: HttpService) -> None:
    samples = collect("check_http", "-H", "127.0.0.1", "-p", str(web.port), "-u", "/")
    assert_state(samples, 0, None)
    assert perf(samples, "size").labels["uom"] == "bytes" and perf(samples, "size").value > 0
    assert perf(samples, "time").labels["uom"] == "seconds"


@uses_plugins
def test_check_procs_counts_processes_and_range_thresholds_are_left_out() -> None:
    samples = collect("check_procs")
    assert_state(samples, 0, None)
    assert abs(perf(samples, "procs").value - len(psutil.pids())) < 50
    absent = collect("check_procs", "-w", "1:", "-c", "1:", "-C", "forewarn-no-such-process")
    error = "PROCS CRITICAL: 0 processes with command name 'forewarn-no-such-process'"
    assert_state(absent, 2, error)
    assert perf(absent, "procs").value == 0.0
    assert metrics_of(absent, "procs") == {"command_perfdata", "command_perfdata_min"}


# --- running: no shell, clean environment, timeouts, leftovers ------------------------------------


@uses_plugins
def test_nothing_in_the_arguments_is_interpreted(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"$(touch {marker}); `touch {marker}` ; touch {marker} && echo $HOME"
    samples = collect("check_dummy", "1", text)
    assert_state(samples, 1, f"WARNING: {text}"[:200])  # the text, cut at 200 characters
    assert not marker.exists()


def test_the_environment_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREWARN_SECRET_TOKEN", "hunter2")
    probe = CommandProbe("env", CommandProbe.Options(command=["env"], env={"EXTRA": "a b"}))
    environment = run_plugin(["env"], probe._env, 5.0).stdout.splitlines()
    assert sorted(environment) == ["EXTRA=a b", "LANG=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    assert status(probe.collect(NOW)).value == 0.0


def test_a_hanging_plugin_and_everything_it_forked_are_killed_on_time(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = 'sleep 60 & echo $! > "$1"; echo "OK: waiting"; wait'
    started = time.monotonic()
    samples = collect("sh", "-c", script, "sh", str(pidfile), timeout=Duration(0.3))
    assert time.monotonic() - started < 1.5
    assert_state(samples, 3, "timed out after 0.3s")
    assert wait_gone(int(pidfile.read_text()))


def test_a_plugin_that_exits_leaving_a_child_holding_its_output_returns_at_once(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "child.pid"
    script = 'sleep 60 & echo $! > "$1"; echo "OK: done | x=1"'
    started = time.monotonic()
    samples = collect("sh", "-c", script, "sh", str(pidfile), timeout=Duration(10))
    assert time.monotonic() - started < 1.0  # not the 10 s timeout: the child held stdout open
    assert_state(samples, 0, None)
    assert perf(samples, "x").value == 1.0
    assert wait_gone(int(pidfile.read_text()))


def test_output_is_capped_and_a_flood_does_not_block() -> None:
    run = run_plugin(["sh", "-c", "head -c 5000000 /dev/zero | tr '\\0' x; echo x >&2"], {}, 10.0)
    assert run.returncode == 0 and not run.timed_out
    assert len(run.stdout) == MAX_OUTPUT_BYTES and run.stderr == "x\n"


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (["sh", "-c", "echo 'DISK CRITICAL - / full' ; exit 2"], "DISK CRITICAL - / full"),
        (["sh", "-c", "echo 'no space left' >&2; exit 2"], "no space left"),
        (["sh", "-c", "exit 2"], "CRITICAL with no output"),
        (["sh", "-c", "echo 'odd state'; exit 7"], "exit code 7: odd state"),
        (["sh", "-c", "printf 'DOWN\\033[31m red\\tx|a=1\\n'; exit 2"], "DOWN [31m red x"),
        (["sh", "-c", "kill -SEGV $$"], "killed by signal SIGSEGV"),
        (["check_forewarn_missing"], "program not found: check_forewarn_missing"),
        (["/nonexistent/check_x"], "cannot run /nonexistent/check_x: No such file or directory"),
    ],
)
def test_failures_say_why(command: list[str], error: str) -> None:
    samples = collect(*command)
    assert status(samples).value == (2.0 if "exit 2" in command[-1] else 3.0)
    assert status(samples).error == error


def test_a_program_in_plugin_dir_is_found_first(tmp_path: Path) -> None:
    plugin = tmp_path / "check_dummy"
    plugin.write_text("#!/bin/sh\necho 'OWN WARNING: from plugin_dir'\nexit 1\n")
    plugin.chmod(0o755)
    samples = collect("check_dummy", "0", plugin_dir=str(tmp_path))
    assert_state(samples, 1, "OWN WARNING: from plugin_dir")
    assert status(collect(str(shutil.which("true")))).value == 0.0


def test_an_undetermined_value_is_nan_with_an_error() -> None:
    samples = collect("sh", "-c", "echo 'OK | rta=U;1;2 ok=1'")
    rta = perf(samples, "rta")
    assert math.isnan(rta.value) and rta.error == "value undetermined (U)"
    assert perf(samples, "rta", "command_perfdata_warn").value == 1.0
    assert perf(samples, "ok").error is None


# --- options and config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"command": "check_load -w 5"}, "must be a list, not a string"),
        ({"command": []}, "non-empty list"),
        ({"command": [""]}, "program name or an absolute path"),
        ({"command": ["plugins/check_x"]}, "program name or an absolute path"),
        ({"command": ["check_x", "a\0b"]}, "NUL"),
        ({"command": ["check_x"], "env": {"BAD NAME": "x"}}, "not an environment variable"),
        ({"command": ["check_x"], "timeout": Duration(0)}, "more than 0s"),
        ({"command": ["check_x"], "plugin_dir": "plugins"}, "absolute path"),
    ],
)
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CommandProbe.Options(**options)


def test_a_command_line_string_in_the_config_is_refused() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(
            '[[probe]]\nname = "load"\nkind = "command"\ncommand = "check_load -w 5,4,3"\n',
            "config.toml",
        )
    assert "command: expected a list" in str(error.value)


@uses_plugins
def test_the_config_builds_the_probe_and_shares_its_timeout() -> None:
    config = parse_config(
        """
        [[probe]]
        name = "load"
        kind = "command"
        command = ["check_load", "-w", "8,6,4", "-c", "16,12,8"]
        env = { LC_ALL = "C" }
        timeout = "3s"
        interval = "30s"
        """,
        "config.toml",
    )
    [probe] = config.probes
    assert probe.options.command == ["check_load", "-w", "8,6,4", "-c", "16,12,8"]
    assert probe.options.timeout == 3.0 and probe.timeout == 4.0  # the scheduler waits 1 s more
    assert status(CommandProbe("load", probe.options).collect(NOW)).value == 0.0


# --- the perfdata parser --------------------------------------------------------------------------

GIB = 1024.0**3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("time=0.002722s;;;0.000000", [Perfdata("time", 0.002722, "seconds", None, None, 0.0)]),
        ("rta=0.5ms;100;500;0", [Perfdata("rta", 0.0005, "seconds", 0.1, 0.5, 0.0)]),
        ("t=250us", [Perfdata("t", 0.00025, "seconds")]),
        ("'/'=23660068864B;216442024755;243497277849;0;270552530944",
         [Perfdata("/", 23660068864.0, "bytes", 216442024755.0, 243497277849.0, 0.0,
                   270552530944.0)]),
        ("'C:\\ used space'=5.5GiB;8;9;0;10",
         [Perfdata("C:\\ used space", 5.5 * GIB, "bytes", 8 * GIB, 9 * GIB, 0.0, 10 * GIB)]),
        ("size=10KB", [Perfdata("size", 10_000.0, "bytes")]),
        ("size=10KiB mem=2MB", [Perfdata("size", 10_240.0, "bytes"),
                                Perfdata("mem", 2e6, "bytes")]),
        ("'it''s here'=1", [Perfdata("it's here", 1.0, "")]),
        ("'='=3", [Perfdata("=", 3.0, "")]),
        ("pct=99.5%;80;90;0;100", [Perfdata("pct", 99.5, "percent", 80.0, 90.0, 0.0, 100.0)]),
        ("packets=12345c", [Perfdata("packets", 12345.0, "counter")]),
        ("temp=41C;70;80", [Perfdata("temp", 41.0, "celsius", 70.0, 80.0)]),
        ("power=120W", [Perfdata("power", 120.0, "W")]),
        ("load1=0.150;5.000;10.000;0; load5=0.640;;;",
         [Perfdata("load1", 0.15, "", 5.0, 10.0, 0.0), Perfdata("load5", 0.64, "")]),
        ("neg=-3.5;-1;-2", [Perfdata("neg", -3.5, "", -1.0, -2.0)]),
        ("big=1.5e3s", [Perfdata("big", 1500.0, "seconds")]),
        ("procs=75;10:20;@5:10;0", [Perfdata("procs", 75.0, "", None, None, 0.0)]),
        ("x=1;~:10;10:", [Perfdata("x", 1.0, "")]),
        ("noequals x=abc y=1,5 z==2 =5 ok=2", [Perfdata("ok", 2.0, "")]),
        ("bad=1%%%%%%%%%%%%%%%% ok=2", [Perfdata("ok", 2.0, "")]),
        ("dup=1 dup=2", [Perfdata("dup", 1.0, "")]),
        ("   spaced=1   ", [Perfdata("spaced", 1.0, "")]),
        ("'unterminated=1", []),
        ("", []),
    ],
)  # fmt: skip
def test_perfdata_items_per_the_plugin_guidelines(text: str, expected: list[Perfdata]) -> None:
    assert list(parse_perfdata(text)) == expected


def test_undetermined_values_are_nan() -> None:
    [item] = parse_perfdata("rta=U;100;200")
    assert math.isnan(item.value) and item.warn == 100.0 and item.unit == ""


def test_perfdata_on_following_lines_after_the_long_text() -> None:
    output = split_output(
        "DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n"
        "/ 15272 MB (77%);\n"
        "/boot 68 MB (69%);\n"
        "/home 69357 MB (27%); | /boot=68MB;88;93;0;98\n"
        "/home=69357MB;253404;253409;0;253414\n"
    )
    assert output.status_text == "DISK OK - free space: / 3326 MB (56%);"
    assert output.long_text == "/ 15272 MB (77%);\n/boot 68 MB (69%);\n/home 69357 MB (27%);"
    assert [item.label for item in output.perfdata] == ["/", "/boot", "/home"]
    assert output.perfdata[2].value == 69357e6


def test_output_without_perfdata() -> None:
    output = split_output("PING OK - Packet loss = 0%\n")
    assert (output.status_text, output.long_text, output.perfdata) == (
        "PING OK - Packet loss = 0%", "", ()
    )  # fmt: skip


def test_control_characters_and_floods_are_bounded() -> None:
    assert parse_perfdata("'bell\x07'=1 ok=1") == (Perfdata("ok", 1.0, ""),)
    many = " ".join(f"m{i}=1" for i in range(2000))
    assert len(parse_perfdata(many)) == 500
