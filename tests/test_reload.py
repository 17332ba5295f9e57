"""SIGHUP reloads the config of a running daemon (a real subprocess); an invalid config is
refused with its errors logged and the running one kept; SIGTERM stops in order."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_process import DaemonProcess, daemon_head, http_probe, wait_until
from http_service import HttpService, free_port

pytestmark = pytest.mark.slow

RULE = """
[[rule]]
name = "site_down"
metric = "http_up"
condition = "value == 0"
"""


class Rig:
    def __init__(self, tmp: Path, service: HttpService) -> None:
        self.service = service
        self.state = tmp / "state"
        self.metrics_port = free_port()
        self.config = tmp / "config.toml"
        self.daemon = DaemonProcess(self.config, tmp / "daemon.log", self.metrics_port)

    def write(self, *probes: str, extra: str = "") -> None:
        head = daemon_head(self.state, self.metrics_port)
        blocks = [http_probe(name, self.service.url) for name in probes]
        self.config.write_text(head + extra + "".join(blocks) + RULE)

    def hangup(self) -> None:
        assert self.daemon.proc is not None
        self.daemon.proc.send_signal(signal.SIGHUP)

    def full_log(self) -> str:
        return self.daemon.log_path.read_text(errors="replace")

    def wait_log(self, text: str, count: int = 1) -> None:
        wait_until(
            lambda: self.full_log().count(text) >= count, 5, f"{text!r} in the log", interval=0.05
        )

    def up(self, probe: str) -> bool:
        return f'forewarn_http_up{{probe="{probe}",url="{self.service.url}"}} 1.0' in (
            self.daemon.metrics() or ""
        )

    def runs(self, probe: str) -> float:
        """How many runs of `probe` the daemon has counted (label order is the exporter's)."""
        for line in (self.daemon.metrics() or "").splitlines():
            if line.startswith("forewarn_probe_duration_seconds_count{") and (
                f'probe="{probe}"' in line
            ):
                return float(line.split()[-1])
        return 0.0


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    service = HttpService()
    service.start()
    rig = Rig(tmp_path, service)
    try:
        yield rig
    finally:
        rig.daemon.stop()
        service.stop()


def test_sighup_reloads_refuses_invalid_and_sigterm_stops_in_order(rig: Rig) -> None:
    rig.write("first")
    rig.daemon.start()
    wait_until(lambda: rig.up("first"), 10, "the first probe on /metrics")

    rig.write("first", "second")
    rig.hangup()
    wait_until(lambda: rig.up("second"), 5, f"the added probe on /metrics ({rig.daemon.log()})")
    rig.wait_log("configuration reloaded: 2 probes, 4 rules")

    # Invalid, and without the two running probes: a partial reload would drop them.
    rig.write(
        "third",
        extra='colour = "blue"\n[[probe]]\nname = "x"\nkind = "http"\n'
        'interval = "soon"\nurl = "http://127.0.0.1:1/"\n',
    )
    rig.hangup()
    rig.wait_log("reload refused, keeping the running config: 2 error(s)")
    log = rig.full_log()
    assert "daemon.colour: unknown key" in log
    assert 'probe[1] (x).interval: "soon" is not a duration' in log
    assert rig.daemon.proc is not None and rig.daemon.proc.poll() is None
    runs = {probe: rig.runs(probe) for probe in ("first", "second")}
    wait_until(lambda: all(rig.runs(p) > runs[p] for p in runs), 5, "both probes still running")
    metrics = rig.daemon.metrics() or ""
    assert 'probe="third"' not in metrics and 'probe="x"' not in metrics

    rig.write("first")  # a valid config is taken again after a refused one
    rig.hangup()
    rig.wait_log("configuration reloaded: 1 probes, 4 rules")
    wait_until(
        lambda: 'forewarn_http_up{probe="second"' not in (rig.daemon.metrics() or ""),
        5,
        "the removed probe's samples gone from /metrics",
    )
    assert rig.up("first")

    assert rig.daemon.stop() == 0, rig.daemon.log()
    lines = rig.full_log().splitlines()
    assert lines[-1].endswith("INFO monitor.daemon: stopped"), lines[-3:]
    stopping = [n for n, line in enumerate(lines) if line.endswith("monitor.daemon: shutting down")]
    assert len(stopping) == 1 and stopping[0] > _last(lines, "configuration reloaded"), lines[-8:]
    assert "Traceback" not in rig.full_log()


def _last(lines: list[str], text: str) -> int:
    return max(n for n, line in enumerate(lines) if text in line)
