"""The `forewarn` command line as a user runs it: `python -m monitor ...` in a subprocess.

Every run is checked for a Python traceback: whatever the user does wrong, the command line
answers with a message and an exit code (0 OK, 1 a problem found, 2 invalid config).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_runner import forewarn
from daemon_process import DaemonProcess, daemon_head, http_down, wait_until
from http_service import free_port

from monitor.cli import SYSTEM_CONFIG

CONFIGS = Path(__file__).resolve().parent / "data" / "configs"




def error_lines(stderr: str) -> list[str]:
    """The errors `validate` lists under its `FILE: N error(s)` header."""
    return [line.strip() for line in stderr.splitlines() if line.startswith("  ")]


# --- validate ------------------------------------------------------------------------------

# Each broken config and what its error must say, path first.
BROKEN = {
    "bad_toml.toml": ["invalid TOML: ", "(at line 3, column 16)"],
    "unknown_top_key.toml": ["probes: unknown key (did you mean probe?)"],
    "unknown_daemon_key.toml": ["daemon.state_directory: unknown key (did you mean state_dir?)"],
    "unknown_rule_key.toml": ["rule[1] (disk_full).severty: unknown key (did you mean severity?)"],
    "unknown_probe_option.toml": ["probe[2] (root).mountpoint: unknown key"],
    "unknown_kind.toml": ['probe[1] (web).kind: unknown kind "htp" (did you mean http?)'],
    "unknown_rule_probe.toml": ['rule[1] (busy).probe: no [[probe]] is named "cpu0"'],
    "bad_duration.toml": ['rule[2] (disk_full).for: "5 minutes" is not a duration', "(line 10)"],
    "bad_expression.toml": ["rule[1] (memory_low).condition: not a valid expression"],
    "bad_probe_options.toml": ["probe[1] (sshd): exactly one of match_name"],
    "duplicate_names.toml": ['probe[2] (cpu).name: duplicate name "cpu"'],
    "missing_secret_file.toml": ["smtp.password: secret file ", "no-such-secret does not exist"],
    "unset_env_secret.toml": ["smtp.password: environment variable FOREWARN_TEST_UNSET_PASSWORD"],
    "plain_secret.toml": ["smtp.password: write secrets as { env = ... } or { file = ... }"],
    "many_errors.toml": ["colour: unknown key"],
    "bad_rule_types.toml": ['rule[1] (disk_filling).priority: "urgent" is not one of'],
    "bad_rule_combinations.toml": ["rule[5] (more_times_than_checks).times: 5 is more than"],
    "bad_dependencies.toml": ["rule[3] (a).depends_on: dependency cycle a -> b -> c -> a"],
    "bad_maintenance.toml": ["maintenance[1] (backup).cron: '0 25 * * *' is not valid"],
    "bad_routes.toml": ['route[3] (default).name: "default" names the [helpdesk] itself'],
}
GOOD = {"good_secret_file.toml"}


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_validate_each_config_file(name: str) -> None:
    done = forewarn("validate", str(CONFIGS / name))
    if name in GOOD:
        assert done.returncode == 0, done.stderr
        assert re.search(r": OK, \d+ probes, \d+ rules", done.stdout), done.stdout
        return
    assert name in BROKEN, f"add the expected error of the new config {name} to BROKEN"
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith(f"{CONFIGS / name}: "), done.stderr
    errors = "\n".join(error_lines(done.stderr))
    for fragment in BROKEN[name]:
        assert fragment in errors, done.stderr


def test_validate_lists_every_error_of_a_config() -> None:
    done = forewarn("validate", str(CONFIGS / "many_errors.toml"))
    assert done.returncode == 2
    errors = error_lines(done.stderr)
    assert f"many_errors.toml: {len(errors)} error(s)" in done.stderr.splitlines()[0]
    paths = [line.split(":")[0] for line in errors]
    assert paths == [
        "colour",
        "daemon.log_level",
        "daemon.reopen_within",
        "probe[1] (disk).interval",
        "probe[1] (disk).mountpoints[2]",
        "rule[1] (disk_full).condition",
        "rule[1] (disk_full).for",
        "rule[1] (disk_full).severity",
        "rule[1] (disk_full).notify_users",
    ]
    assert all(re.search(r"\(line \d+\)$", line) for line in errors), errors


def test_validate_never_prints_a_secret_written_in_the_file() -> None:
    done = forewarn("validate", str(CONFIGS / "plain_secret.toml"))
    assert done.returncode == 2
    assert "hunter2" not in done.stdout + done.stderr


def test_validate_a_file_that_does_not_exist(tmp_path: Path) -> None:
    done = forewarn("validate", str(tmp_path / "missing.toml"))
    assert done.returncode == 2
    assert "cannot read the file" in done.stderr


def test_validate_without_a_file_checks_the_built_in_default() -> None:
    if Path(SYSTEM_CONFIG).exists():
        pytest.skip(f"{SYSTEM_CONFIG} exists here and would be validated instead")
    done = forewarn("validate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("built-in default: OK, 6 probes, ")


def test_validate_follows_forewarn_config() -> None:
    done = forewarn("validate", FOREWARN_CONFIG=str(CONFIGS / "bad_duration.toml"))
    assert done.returncode == 2
    assert "rule[2] (disk_full).for:" in done.stderr


# --- check ---------------------------------------------------------------------------------

HOST_METRICS = (
    "cpu_usage_percent",
    "load1",
    "memory_used_percent",
    "swap_used_percent",
    "disk_used_percent",
    "probe_up",
)


@pytest.fixture
def default_config(tmp_path: Path) -> Path:
    """The built-in default, with its state and /metrics kept away from this machine's."""
    text = importlib.resources.files("monitor").joinpath("default.toml").read_text("utf-8")
    text, found = re.subn(
        r"^\[daemon\]$",
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\nlisten = ""',
        text,
        flags=re.MULTILINE,
    )
    assert found == 1
    path = tmp_path / "default.toml"
    path.write_text(text)
    return path


def _mount_of(path: Path) -> str:
    while not os.path.ismount(path):
        path = path.parent
    return str(path)


def test_check_shows_every_host_probe_as_a_table(default_config: Path) -> None:
    done = forewarn("check", "-c", str(default_config))
    assert done.returncode in (0, 1), done.stderr  # 1: this machine may be busy right now
    header, *rows = done.stdout.split("\n\n")[0].splitlines()
    value_at, verdict_at = header.index("VALUE"), header.index("VERDICT")
    values: dict[str, list[str]] = {}
    for row in rows:
        metric = row.split()[1]
        values.setdefault(metric, []).append(row[value_at:verdict_at].strip())
    for metric in HOST_METRICS:
        assert metric in values, done.stdout
        assert all(float(v) >= 0 for v in values[metric]), (metric, values[metric])
    assert re.search(rf"\n{len(rows)} samples, \d+ with a rule condition that holds", done.stdout)
    assert not (default_config.parent / "state").exists(), "check must not write state"


def test_check_json_has_plausible_values(default_config: Path, tmp_path: Path) -> None:
    done = forewarn("check", "--json", "-c", str(default_config))
    assert done.returncode in (0, 1), done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_metric.setdefault(row["metric"], []).append(row)
    assert set(HOST_METRICS) <= set(by_metric), sorted(by_metric)
    for metric in HOST_METRICS:
        for row in by_metric[metric]:
            assert row["error"] is None and isinstance(row["value"], float), row
            if metric.endswith("_percent"):
                assert 0 <= row["value"] <= 100, row
    assert by_metric["load1"][0]["value"] >= 0
    mounts = {row["labels"]["mountpoint"] for row in by_metric["disk_used_percent"]}
    assert mounts & {"/", _mount_of(tmp_path)}, mounts
    up = {row["labels"]["probe"]: row["value"] for row in by_metric["probe_up"]}
    assert {"cpu", "load", "memory", "swap", "disk"} <= {p for p, v in up.items() if v == 1}, up
    cpu = by_metric["cpu_usage_percent"][0]
    assert cpu["verdicts"][0]["rule"] == "cpu_busy"
    assert cpu["verdicts"][0]["state"] in ("inactive", "pending", "firing")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\nlisten = ""\n{text}')
    return path


def test_check_exits_1_and_shows_a_rule_that_fires(tmp_path: Path) -> None:
    config = _write(
        tmp_path,
        '[[probe]]\nname = "cpu"\nkind = "cpu"\n\n'
        '[[rule]]\nname = "always"\nmetric = "cpu_usage_percent"\ncondition = "value >= 0"\n',
    )
    done = forewarn("check", "-c", str(config))
    assert done.returncode == 1, done.stdout + done.stderr
    [line] = [row for row in done.stdout.splitlines() if " cpu_usage_percent " in row]
    assert "FIRING always (warning)" in line
    assert "1 with a rule condition that holds" in done.stdout


def test_check_exits_0_when_no_condition_holds(tmp_path: Path) -> None:
    config = _write(
        tmp_path,
        '[[probe]]\nname = "memory"\nkind = "memory"\n\n'
        '[[rule]]\nname = "never"\nmetric = "memory_used_percent"\ncondition = "value > 100"\n',
    )
    done = forewarn("check", "-c", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok never" in done.stdout and "FIRING" not in done.stdout


def test_check_refuses_an_invalid_config() -> None:
    done = forewarn("check", "-c", str(CONFIGS / "bad_expression.toml"))
    assert done.returncode == 2
    assert "rule[1] (memory_low).condition:" in done.stderr


# --- tickets and incidents without state ---------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["tickets"],
        ["tickets", "list", "--json"],
        ["tickets", "show", "1"],
        ["tickets", "take", "1", "--owner", "bob"],
        ["incidents"],
        ["incidents", "show", "1"],
        ["incidents", "ack", "1", "--by", "alice"],
    ],
)
def test_no_state_yet_is_a_clear_message(tmp_path: Path, command: list[str]) -> None:
    config = _write(tmp_path, "")
    done = forewarn(*command, "-c", str(config))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"forewarn: no state yet at {tmp_path / 'state' / 'forewarn.db'}: has the daemon run?\n"
    )
    assert not (tmp_path / "state").exists(), "reading must not create the state"


def test_options_before_the_action_are_kept(tmp_path: Path) -> None:
    config = _write(tmp_path, "")
    done = forewarn("tickets", "-c", str(config), "show", "1")
    assert f"no state yet at {tmp_path / 'state'}" in done.stderr


# --- help ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ([], ["run", "check", "validate", "tickets", "incidents", "Exit codes"]),
        (["run"], ["SIGHUP", "SIGTERM", "--config"]),
        (["check"], ["every configured probe", "Exits 1", "--json"]),
        (["validate"], ["every error", "exit 2", "file"]),
        (["tickets"], ["list", "show", "take", "close", "--json"]),
        (["tickets", "close"], ["--as", "resolved", "rejected", "--comment"]),
        (["incidents"], ["list", "show", "ack", "--json"]),
        (["incidents", "ack"], ["--by", "--comment"]),
    ],
)
def test_help_explains_each_command(command: list[str], words: list[str]) -> None:
    done = forewarn(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: forewarn {' '.join(command)}".rstrip())
    help_text = " ".join(done.stdout.split())  # argparse wraps lines
    for word in words:
        assert word in help_text, (word, done.stdout)


def test_a_wrong_command_line_is_a_usage_error() -> None:
    done = forewarn("tickets", "close", "1", "--as", "fixed")
    assert done.returncode == 2
    assert "invalid choice: 'fixed'" in done.stderr


# --- against a running daemon ------------------------------------------------------------

# The keys of intranet_down beyond those of http_down.
INTRANET_DOWN = """severity = "critical"
summary = "The intranet is not answering"
"""


@dataclass(frozen=True)
class Running:
    config: Path
    daemon: DaemonProcess

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return forewarn(*args, "-c", str(self.config))

    def json(self, *args: str) -> Any:
        done = self.cli(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A daemon whose only probe points at a closed port: its rule fires on the first run."""
    tmp = tmp_path_factory.mktemp("daemon")
    metrics_port = free_port()
    config = tmp / "config.toml"
    closed = f"http://127.0.0.1:{free_port()}/"
    config.write_text(
        daemon_head(tmp / "state", metrics_port) + http_down("intranet", closed, INTRANET_DOWN)
    )
    daemon = DaemonProcess(config, tmp / "daemon.log", metrics_port)
    daemon.start()
    rig = Running(config, daemon)
    try:
        wait_until(lambda: _open_with_ticket(rig), 15, f"a ticket ({daemon.log()})", 0.2)
        yield rig
    finally:
        code = daemon.stop()
        assert code == 0, daemon.log()


def _open_with_ticket(rig: Running) -> list[dict[str, Any]] | None:
    done = rig.cli("incidents", "--json")
    if done.returncode != 0:  # the state file is not there yet
        return None
    found = [i for i in json.loads(done.stdout) if i["ticket"]]
    return found or None


@pytest.mark.slow
def test_tickets_lists_the_ticket_of_a_running_daemon(running: Running) -> None:
    [ticket] = running.json("tickets")
    assert ticket["number"] == "#1"
    assert ticket["subject"] == "[CRITICAL] The intranet is not answering on testhost"
    assert ticket["priority"] == "high"
    assert ticket["marker"].startswith("[forewarn:")
    table = running.cli("tickets").stdout
    assert table.splitlines()[0].split() == [
        "TICKET",
        "STATUS",
        "PRIORITY",
        "OWNER",
        "OPENED",
        "SUBJECT",
    ]
    assert table.splitlines()[1].startswith("#1 ")


@pytest.mark.slow
def test_tickets_show_prints_subject_body_and_marker(running: Running) -> None:
    done = running.cli("tickets", "show", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("#1  [CRITICAL] The intranet is not answering on testhost\n")
    assert "priority high" in done.stdout
    assert "Error:       connection refused" in done.stdout
    marker = running.json("tickets", "show", "#1")["marker"]
    assert marker in done.stdout


@pytest.mark.slow
def test_incidents_lists_the_open_incident_with_its_ticket(running: Running) -> None:
    [incident] = running.json("incidents")
    assert incident["status"] == "open"
    assert incident["rule"] == "intranet_down"
    assert incident["severity"] == "critical"
    assert incident["ticket"] == "#1"
    assert incident["labels"]["probe"] == "intranet"


@pytest.mark.slow
def test_incidents_show_prints_the_event_log(running: Running) -> None:
    [incident] = running.json("incidents")
    shown = running.json("incidents", "show", str(incident["id"]))
    kinds = [event["kind"] for event in shown["events"]]
    assert kinds[:2] == ["opened", "ticket_created"], kinds
    assert shown["events"][1]["detail"]["ticket"] == "#1"
    done = running.cli("incidents", "show", str(incident["id"]))
    assert done.returncode == 0
    assert re.search(r"^\s+ticket: #1$", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"\sopened\s.*\n.*\sticket_created\s", done.stdout), done.stdout


@pytest.mark.slow
def test_unknown_ticket_and_incident_are_clear_errors(running: Running) -> None:
    ticket = running.cli("tickets", "show", "99")
    assert ticket.returncode == 1 and ticket.stderr.startswith("forewarn: ")
    assert "99" in ticket.stderr
    incident = running.cli("incidents", "show", "99")
    assert (incident.returncode, incident.stderr) == (1, "forewarn: no incident 99\n")


@pytest.mark.slow
def test_ack_take_and_close_while_the_daemon_runs(running: Running) -> None:
    [incident] = running.json("incidents")
    number = str(incident["id"])

    ack = running.cli("incidents", "ack", number, "--by", "alice")
    assert (ack.returncode, ack.stdout) == (0, f"incident {number} acknowledged by alice\n")
    again = running.cli("incidents", "ack", number, "--by", "alice")
    assert again.returncode == 1
    assert "already acknowledged" in again.stderr
    assert running.json("incidents")[0]["acknowledged_by"] == "alice"

    def ack_comment() -> bool:  # the daemon's dispatcher delivers it to the ticket
        comments = running.json("tickets", "show", "1")["comments"]
        return any(c["text"].startswith("Acknowledged by alice") for c in comments)

    wait_until(ack_comment, 5, "the acknowledgement on the ticket", 0.2)

    take = running.cli("tickets", "take", "1", "--owner", "bob")
    assert take.returncode == 0, take.stderr
    assert "owner bob" in take.stdout
    close = running.cli("tickets", "close", "#1", "--as", "rejected", "--by", "bob")
    assert close.returncode == 0, close.stderr
    ticket = running.json("tickets", "show", "1")
    assert (ticket["status"], ticket["owner"]) == ("rejected", "bob")
    assert running.json("tickets", "list", "--status", "rejected")[0]["number"] == "#1"
