"""forewarn's /metrics follows Prometheus' conventions: `promtool check metrics` says nothing.

The real daemon runs as a subprocess with probes whose metrics once broke the conventions (a
log's `*_total` match count, a process count, OOM kills since boot) and a loopback service
whose outage opens one ticket; its /metrics goes through Debian's promtool as a scrape would.
Probe metrics this machine cannot produce (SMART, a GPU, a link's speed, scraped histograms)
go through the same exporter from samples made here.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_process import ServiceRig, http_down, wait_until
from prometheus_client import generate_latest

from monitor.metrics import Metrics, metric_name
from notifiers.builtin import BuiltinTickets
from probes.base import Sample

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus)"
)

CONFIG = """
[helpdesk]
kind = "builtin"
{intranet}
[[probe]]
name = "applog"
kind = "logfile"
interval = "1s"
path = "{log}"
patterns = ["ERROR"]
from_start = true

[[probe]]
name = "python"
kind = "process"
interval = "1s"
match_cmdline = "monitor run"

[[probe]]
name = "system"
kind = "system"
interval = "1s"

[[probe]]
name = "plugin"
kind = "command"
interval = "1s"
command = ["{python}", "-c", "print('OK | time=0.5s;1;2;0 size=10KB')"]
"""

INTRANET_DOWN = 'summary = "The intranet is not answering"\n'


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    """`promtool check metrics < text`: exit code 0 and no output when all is clean."""
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )


def family_type(text: str, name: str) -> str | None:
    found = re.search(rf"^# TYPE {re.escape(name)} (\w+)$", text, re.MULTILINE)
    return found.group(1) if found else None


class Rig(ServiceRig):
    def __init__(self, tmp: Path) -> None:
        log = tmp / "app.log"
        log.write_text("INFO start\nERROR disk quota\n")

        def config(url: str) -> str:
            intranet = http_down("intranet", url, INTRANET_DOWN)
            return CONFIG.format(intranet=intranet, log=log, python=sys.executable)

        super().__init__(tmp, config)

    def tickets(self) -> list[object]:
        if not (self.state / "forewarn.db").exists():
            return []
        return list(BuiltinTickets(str(self.state / "forewarn.db")).list_tickets())

    def scrape(self) -> str:
        return self.daemon.metrics() or ""


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with Rig(tmp_path).running() as rig:
        yield rig


@pytest.mark.slow
@needs_promtool
def test_the_daemons_metrics_pass_promtool(rig: Rig) -> None:
    rig.daemon.start()
    wait_until(lambda: "forewarn_log_matches_total{" in rig.scrape(), 15, "a first log probe run")
    rig.service.stop()  # the intranet goes down: one ticket
    wait_until(rig.tickets, 15, f"the outage's ticket ({rig.daemon.log()})")
    counted = "forewarn_fault_to_ticket_seconds_count 1.0"
    wait_until(lambda: counted in rig.scrape(), 10, counted)
    text = rig.scrape()

    checked = promtool_check(text)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, ""), text
    # The probe metrics that used to draw complaints, as they are exported now.
    assert family_type(text, "forewarn_log_matches_total") == "counter"
    assert family_type(text, "forewarn_system_oom_kills_total") == "counter"
    assert family_type(text, "forewarn_processes") == "gauge"
    assert "forewarn_process_count" not in text
    assert len(rig.tickets()) == 1
    # One ticket, observed once, within the seconds the outage took to become it.
    [seconds] = re.findall(r"^forewarn_fault_to_ticket_seconds_sum (\S+)$", text, re.MULTILINE)
    assert 0 < float(seconds) < 15
    # The self-monitoring samples of every tick were taken, without an error.
    [free] = re.findall(r"^forewarn_state_dir_free_ratio (\S+)$", text, re.MULTILINE)
    assert 0 < float(free) <= 1
    assert "periodic evaluation failed" not in rig.daemon.log_path.read_text()


# --- the exporter, on samples of probes this machine cannot run -------------------------------


def exported(*samples: Sample) -> str:
    metrics = Metrics()
    metrics.samples.update("p", list(samples))
    return generate_latest(metrics.registry).decode()


def test_names_follow_base_units_without_renaming_what_rules_see() -> None:
    labels = {"probe": "p", "device": "/dev/sda"}
    text = exported(
        Sample("smart_power_on_hours", 2.0, 0.0, labels),
        Sample("net_speed_bits_per_second", 1e9, 0.0, {"interface": "eth0"}),
        Sample("gpu_count", 2.0, 0.0, {}),
    )
    assert 'forewarn_smart_power_on_seconds{device="/dev/sda",probe="p"} 7200.0' in text
    assert 'forewarn_net_speed_bytes_per_second{interface="eth0"} 1.25e+08' in text
    assert "forewarn_gpus 2.0" in text
    assert metric_name("smart_power_on_hours") == "forewarn_smart_power_on_seconds"
    assert metric_name("disk_used_percent") == "forewarn_disk_used_percent"


def test_counters_scraped_histograms_and_taken_names() -> None:
    text = exported(
        Sample("gpu_xid_errors_total", 3.0, 0.0, {"gpu": "0"}),
        Sample("diskio_errors_total", math.nan, 0.0, {"device": "sdb"}, "unreadable"),
        Sample("api_request_seconds_bucket", 4.0, 0.0, {"le": "0.5"}),
        Sample("api_request_seconds_count", 4.0, 0.0, {}),
        Sample("up", 1.0, 0.0, {"job": "node"}),  # a PromQL probe's metric named like our own
    )
    assert family_type(text, "forewarn_gpu_xid_errors_total") == "counter"
    assert 'forewarn_gpu_xid_errors_total{gpu="0"} 3.0' in text
    assert "forewarn_diskio_errors_total{" not in text  # not read: no count, rather than NaN
    assert family_type(text, "forewarn_api_request_seconds_bucket") == "untyped"
    assert family_type(text, "forewarn_api_request_seconds_count") == "untyped"
    assert text.count("# TYPE forewarn_up ") == 1 and 'forewarn_up{job="node"}' not in text


@needs_promtool
def test_the_exporter_passes_promtool_for_every_shape() -> None:
    text = exported(
        Sample("smart_power_on_hours", 2.0, 0.0, {"device": "/dev/sda"}),
        Sample("net_speed_bits_per_second", 1e9, 0.0, {"interface": "eth0"}),
        Sample("gpu_count", 2.0, 0.0, {}),
        Sample("process_count", 2.0, 0.0, {"process": "sshd"}),
        Sample("systemd_unit_restarts_total", 1.0, 0.0, {"unit": "cron.service"}),
        Sample("api_request_seconds_bucket", 4.0, 0.0, {"le": "0.5"}),
        Sample("api_request_seconds_sum", 1.5, 0.0, {}),
        Sample("rpc_latency_seconds", 0.2, 0.0, {"quantile": "0.99"}),
        Sample("up", 1.0, 0.0, {"job": "node"}),
    )
    checked = promtool_check(text)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, ""), text


def test_help_texts_say_what_and_in_which_unit() -> None:
    text = exported(
        Sample("disk_free_bytes", 1.0, 0.0, {}),
        Sample("cpu_usage_percent", 1.0, 0.0, {}),
        Sample("smart_power_on_hours", 1.0, 0.0, {}),
    )
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.MULTILINE))
    assert helps["forewarn_disk_free_bytes"].endswith("as last sampled, in bytes.")
    assert helps["forewarn_cpu_usage_percent"].endswith("in percent (0-100).")
    assert "exported as smart_power_on_seconds" in helps["forewarn_smart_power_on_seconds"]
    assert "in seconds" in helps["forewarn_probe_duration_seconds"]
    assert "in seconds" in helps["forewarn_fault_to_ticket_seconds"]
