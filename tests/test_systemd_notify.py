"""The systemd notify protocol: the sender against real AF_UNIX datagram sockets (a path and an
abstract name), and `forewarn run` as a subprocess talking to a NOTIFY_SOCKET bound here, as
systemd would give it with Type=notify and WatchdogSec=. And the unit that asks for it: every
exposure `systemd-analyze security` still finds in it is explained in the README."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from daemon_process import DaemonProcess, daemon_head
from http_service import free_port

from monitor.config import load_config
from monitor.sd_notify import Watchdog, monotonic_usec, notify, socket_address

ROOT = Path(__file__).parent.parent
UNIT = ROOT / "systemd" / "forewarn.service"
RULE = """
[[rule]]
name = "load_high"
metric = "load_1"
condition = "value > 100"
"""


class NotifySocket:
    """What systemd listens on: every datagram, parsed into its KEY=value fields."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.seen: list[tuple[float, dict[str, str]]] = []  # (monotonic time, fields)

    def receive(self, timeout: float) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        fields = dict(line.split("=", 1) for line in data.split("\n") if line)
        self.seen.append((time.monotonic(), fields))
        return fields

    def wait_for(self, key: str, value: str = "1", timeout: float = 20) -> dict[str, str]:
        """The next message with `key`=`value` (those before it are kept in `seen`)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                fields = self.receive(left)
            except TimeoutError:
                break
            if fields.get(key) == value:
                return fields
        raise AssertionError(f"no {key}={value} within {timeout}s; got {self.seen}")

    def arrival(self, key: str, timeout: float) -> float:
        """When the next message with `key`=1 arrived (monotonic)."""
        self.wait_for(key, timeout=timeout)
        return self.seen[-1][0]

    def close(self) -> None:
        self.sock.close()


# --- the sender --------------------------------------------------------------------------


def test_a_message_reaches_a_socket_bound_to_a_path(tmp_path: Path) -> None:
    listener = NotifySocket(str(tmp_path / "notify"))
    try:
        assert notify("READY=1", "STATUS=up", environ={"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert listener.receive(2) == {"READY": "1", "STATUS": "up"}
    finally:
        listener.close()


def test_an_at_sign_names_an_abstract_socket() -> None:
    name = f"forewarn-test-{uuid.uuid4().hex}"
    listener = NotifySocket(f"\0{name}")
    try:
        assert notify("STOPPING=1", environ={"NOTIFY_SOCKET": f"@{name}"})
        assert listener.receive(2) == {"STOPPING": "1"}
    finally:
        listener.close()
    assert socket_address(f"@{name}") == f"\0{name}"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


def test_without_notify_socket_nothing_is_sent() -> None:
    assert notify("READY=1", environ={}) is False
    assert notify("READY=1", environ={"NOTIFY_SOCKET": ""}) is False


def test_a_socket_nobody_listens_on_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    assert "cannot notify systemd" in caplog.text


def test_monotonic_usec_is_the_monotonic_clock_in_microseconds() -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    key, _, value = monotonic_usec().partition("=")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),  # half of WatchdogSec
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),  # meant for us
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_from_the_environment(
    environ: dict[str, str], interval: float | None
) -> None:
    assert Watchdog.from_environment(environ, pid=4242).interval == interval


def test_watchdog_pings_once_per_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listener = NotifySocket(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    watchdog = Watchdog(interval=15.0)
    try:
        for now in (100.0, 101.0, 114.9, 115.0, 116.0, 130.0):
            watchdog.ping(now)
        pings = []
        while True:
            try:
                pings.append(listener.receive(0.2))
            except TimeoutError:
                break
    finally:
        listener.close()
    assert pings == [{"WATCHDOG": "1"}] * 3  # at 100, 115 and 130


# --- the daemon --------------------------------------------------------------------------


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(str(tmp_path / "notify"))
    yield listener
    listener.close()


@pytest.mark.slow
def test_daemon_speaks_the_notify_protocol(tmp_path: Path, listener: NotifySocket) -> None:
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(daemon_head(tmp_path / "state", port))
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"}
    daemon = DaemonProcess(config, tmp_path / "daemon.log", port, env=dict(env, WATCHDOG_PID=""))
    daemon.start()
    try:
        ready = listener.wait_for("READY")
        builtin = len(load_config(str(config)).rules)  # the self-monitoring rules
        assert ready["STATUS"] == f"running: 0 probes, {builtin} rules", daemon.log()
        pings = [listener.arrival("WATCHDOG", timeout=3) for _ in range(3)]
        # every half second (WATCHDOG_USEC / 2), not on every turn of the loop
        assert all(b - a > 0.3 for a, b in pairwise(pings)), pings

        assert daemon.proc is not None
        config.write_text(config.read_text() + RULE)
        daemon.proc.send_signal(signal.SIGHUP)
        reloading = listener.wait_for("RELOADING")
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 < now - int(reloading["MONOTONIC_USEC"]) < 10_000_000
        assert listener.wait_for("READY")["STATUS"] == f"running: 0 probes, {builtin + 1} rules"

        config.write_text(config.read_text() + "colour = 1\n")  # invalid: refused
        daemon.proc.send_signal(signal.SIGHUP)
        listener.wait_for("RELOADING")
        refused = listener.wait_for("READY")["STATUS"]
        assert refused.startswith("reload refused: 1 config error(s)"), refused
        assert refused.endswith(f"still running: 0 probes, {builtin + 1} rules")

        daemon.proc.send_signal(signal.SIGTERM)
        assert listener.wait_for("STOPPING")["STATUS"] == "shutting down"
    finally:
        assert daemon.stop() == 0, daemon.log()


# --- the unit --------------------------------------------------------------------------------


def test_the_unit_asks_for_notify_watchdog_and_a_validated_reload() -> None:
    lines = UNIT.read_text().splitlines()
    for wanted in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30s"):
        assert wanted in lines
    reload = [line for line in lines if line.startswith("ExecReload=")]
    assert reload == [
        "ExecReload=/usr/local/bin/forewarn validate",  # a failing command ends the reload
        "ExecReload=/bin/kill -HUP $MAINPID",
    ]


def test_every_exposure_left_is_explained_in_the_readme() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing")
    result = subprocess.run(
        [analyze, "security", "--offline=yes", str(UNIT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    # A marked line ends in its share of the exposure; its second field is the setting.
    marked = [
        line.split()[1] for line in result.stdout.splitlines() if re.search(r" \d\.\d$", line)
    ]
    score = re.search(r"Overall exposure level for forewarn.service: (\d+\.\d)", result.stdout)
    readme = (ROOT / "README.md").read_text().replace("\\|", "|")
    section = readme.split("### The sandbox and its exposure score")[1].split("\n## ")[0]
    assert marked and score is not None, result.stdout
    assert f"**{score[1]} OK**" in section
    assert [name for name in marked if f"`{name}`" not in section] == []
