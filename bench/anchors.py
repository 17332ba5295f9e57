"""The tools forewarn is measured against, started for a benchmark: Monit, Prometheus,
Alertmanager and node_exporter (the Debian packages), plus a webhook sink and an exec log that
timestamp the alerts they receive.

    with tempfile.TemporaryDirectory() as tmp, WebhookSink() as sink:
        am = start_alertmanager(Path(tmp, "am"), sink.url("/tuned"), "0s", "1s")
        prom = start_prometheus(Path(tmp, "prom"), {"svc": [address]}, "1s", "1s",
                                [down_rule("SvcDown", "svc")], alertmanager=am.address)
        try:
            ...
            sink.arrivals("/tuned", "firing", since=t0)
        finally:
            prom.stop(), am.stop()

Every server listens on a free 127.0.0.1 port, keeps its files (config, data, log) in the
directory it is given, which must exist, and gets SIGTERM when the benchmark dies, however it
dies (the helpers of tests/prometheus_servers.py). Times are wall-clock seconds
(`time.time()`), because Monit's exec script can only tell the wall clock; compare them with
a `time.time()` taken at the fault.
"""

from __future__ import annotations

import json
import shlex
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

# The loopback helpers of tests/, which import each other by their bare names (as under
# pytest, whose conftest puts tests/ on the path), whoever runs a bench script from bench/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from http_service import HttpService, QuietHandler
from prometheus_servers import (
    HOST,
    ServerFailed,
    ServerProcess,
    find_binary,
    spawn,
    start_node_exporter,
    wait_until,
)
from prometheus_servers import start_alertmanager as start_alertmanager_configured
from prometheus_servers import start_prometheus as start_prometheus_scraping

__all__ = [
    "Arrival",
    "ExecLog",
    "ServerFailed",
    "ServerProcess",
    "WebhookSink",
    "down_rule",
    "monit_host_check",
    "monit_process_check",
    "rss_and_cpu",
    "start_alertmanager",
    "start_monit",
    "start_node_exporter",
    "start_prometheus",
]

MONIT_NAMES = ("monit",)
START_SECONDS = 30.0


@dataclass(frozen=True)
class Arrival:
    """One alert received: when (wall clock), where, and whether it fired or resolved."""

    at: float
    path: str
    status: str  # "firing" or "resolved"
    body: Mapping[str, Any]


# --- the webhook sink -----------------------------------------------------------------------------


class WebhookSink:
    """A loopback HTTP server that keeps every JSON POST with its arrival time; Alertmanager's
    webhook payload carries `status`, which `arrivals` filters on."""

    def __init__(self) -> None:
        self._arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        self._service = HttpService(handler=self._handler_class())

    def __enter__(self) -> WebhookSink:
        self._service.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._service.stop()

    def url(self, path: str = "/") -> str:
        return f"http://{self._service.address}{path}"

    def record(self, arrival: Arrival) -> None:
        with self._lock:
            self._arrivals.append(arrival)

    def arrivals(self, path: str, status: str, since: float = 0.0) -> list[Arrival]:
        """The POSTs to `path` with `status` that arrived at or after `since`, oldest first."""
        with self._lock:
            return [
                a for a in self._arrivals if a.path == path and a.status == status and a.at >= since
            ]

    def first(self, path: str, status: str, since: float) -> float | None:
        """When the first such POST arrived, or None."""
        found = self.arrivals(path, status, since)
        return found[0].at if found else None

    def _handler_class(self) -> type[QuietHandler]:
        sink = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                at = time.time()  # the whole request is in: the receiver has the alert
                payload = _json_object(body)
                sink.record(Arrival(at, self.path, str(payload.get("status", "")), payload))
                self.reply(200)

        return Handler


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


# --- Monit ----------------------------------------------------------------------------------------


class ExecLog:
    """A shell script for Monit's `exec` that appends `<wall-clock time> <tag>` to a file;
    `command(tag)` is what goes after `exec`. `date` costs a millisecond or two; a Python
    script would cost tens."""

    def __init__(self, directory: Path) -> None:
        self.script = directory / "record-alert.sh"
        self.log = directory / "alerts.log"
        target = shlex.quote(str(self.log))
        self.script.write_text(f'#!/bin/sh\necho "$(date +%s.%N) $1" >> {target}\n')
        self.script.chmod(0o700)

    def command(self, tag: str) -> str:
        return f'"{self.script} {tag}"'

    def times(self, tag: str, since: float = 0.0) -> list[float]:
        try:
            lines = self.log.read_text().splitlines()
        except FileNotFoundError:
            return []
        entries = (line.split() for line in lines)
        return [float(at) for at, *rest in entries if rest == [tag] and float(at) >= since]

    def first(self, tag: str, since: float) -> float | None:
        found = self.times(tag, since)
        return found[0] if found else None


def monit_host_check(name: str, port: int, fired: str, resolved: str) -> str:
    """An HTTP check of a loopback port: `fired` and `resolved` are exec commands
    (`ExecLog.command`), run once when the check fails and once when it succeeds again."""
    return (
        f"check host {name} with address {HOST}\n"
        f'  if failed port {port} protocol http request "/" with timeout 1 seconds\n'
        f"    then exec {fired}\n"
        f"    else if succeeded then exec {resolved}\n"
    )


def monit_process_check(name: str, pidfile: Path, fired: str, resolved: str) -> str:
    """A process found by its pidfile; no start program, so Monit only runs the exec."""
    return (
        f"check process {name} with pidfile {pidfile}\n"
        f"  if does not exist then exec {fired}\n"
        f"    else if succeeded then exec {resolved}\n"
    )


def start_monit(workdir: Path, checks: Sequence[str], cycle: int = 1) -> ServerProcess:
    """Monit in the foreground polling `checks` (stanzas such as `monit_host_check`'s) every
    `cycle` seconds, without its HTTP interface; returned once its first cycle has begun."""
    binary = find_binary(MONIT_NAMES, "monit")
    control = workdir / "monitrc"
    control.write_text(_monitrc(workdir, cycle) + "\n".join(checks))
    control.chmod(0o600)  # Monit refuses a control file others can read
    server = spawn("monit", [binary, "-I", "-c", str(control)], workdir, 0)
    try:
        wait_until(server, _monit_started, "checking", START_SECONDS)
    except ServerFailed:
        server.stop()
        raise
    return server


def _monitrc(workdir: Path, cycle: int) -> str:
    return (
        f"set daemon {cycle} with start delay 0\n"
        f"set logfile {workdir / 'monit-events.log'}\n"
        f"set pidfile {workdir / 'monit.pid'}\n"
        f"set idfile {workdir / 'monit.id'}\n"
        f"set statefile {workdir / 'monit.state'}\n"
    )


def _monit_started(server: ServerProcess) -> bool:
    events = server.workdir / "monit-events.log"
    return events.exists() and "started" in events.read_text(errors="replace")


# --- Prometheus and Alertmanager ------------------------------------------------------------------


def down_rule(alert: str, job: str, hold: str = "0s") -> dict[str, object]:
    """An alerting rule firing while `job`'s target does not answer its scrape."""
    return {"alert": alert, "expr": f'up{{job="{job}"}} == 0', "for": hold}


def start_prometheus(
    workdir: Path,
    targets: Mapping[str, Sequence[str]],
    scrape: str,
    evaluation: str,
    rules: Sequence[Mapping[str, object]] = (),
    alertmanager: str | None = None,
) -> ServerProcess:
    """Prometheus scraping `targets` ({job: ["host:port"]}) every `scrape`, evaluating `rules`
    every `evaluation` and sending alerts to the Alertmanager at `alertmanager` (host:port);
    returned once every job is up."""
    rule_file = workdir / "rules.yml"  # JSON is YAML
    rule_file.write_text(json.dumps({"groups": [{"name": "bench", "rules": list(rules)}]}))
    more: dict[str, object] = {
        "global": {"scrape_interval": scrape, "evaluation_interval": evaluation},
        "rule_files": [str(rule_file)],
    }
    if alertmanager is not None:
        more["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return start_prometheus_scraping(workdir, targets, scrape, list(targets), more)


def start_alertmanager(
    workdir: Path,
    webhook_url: str,
    group_wait: str,
    group_interval: str,
    repeat_interval: str = "24h",
    send_resolved: bool = True,
) -> ServerProcess:
    """An Alertmanager routing every alert to one webhook, without clustering."""
    config = _alertmanager_config(
        webhook_url, group_wait, group_interval, repeat_interval, send_resolved
    )
    return start_alertmanager_configured(workdir, config)


def _alertmanager_config(
    webhook_url: str, group_wait: str, group_interval: str, repeat_interval: str,
    send_resolved: bool,
) -> dict[str, object]:
    receiver = {"url": webhook_url, "send_resolved": send_resolved}
    return {
        "route": {
            "receiver": "sink",
            "group_by": ["alertname"],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [{"name": "sink", "webhook_configs": [receiver]}],
    }


# --- footprint ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    rss_bytes: int  # at the end of the window
    cpu_percent: float  # of one core, averaged over the window


def rss_and_cpu(pid: int, window: float = 60.0, children: bool = False) -> Usage:
    """A process's resident memory and CPU use over `window` seconds (sleeps that long); with
    `children`, its descendants alive at the end are added (their CPU since they started
    within the window, or over the whole window)."""
    processes = _family(pid, children)
    before = {p.pid: _cpu_seconds(p) for p in processes}
    time.sleep(window)
    processes = _family(pid, children)
    cpu = sum(_cpu_seconds(p) - before.get(p.pid, 0.0) for p in processes)
    rss = sum(_rss(p) for p in processes)
    return Usage(rss, 100.0 * cpu / window)


def _family(pid: int, children: bool) -> list[psutil.Process]:
    top = psutil.Process(pid)
    return [top, *top.children(recursive=True)] if children else [top]


def _cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


def _rss(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.NoSuchProcess:
        return 0
