"""Fault -> ticket -> notice latency of `forewarn run`, beside Monit and Prometheus + Alertmanager.

    python bench/latency.py [--trials 7] [--default-trials 2] [--skip-default] [--quick]

One loopback HTTP service, watched at once by every pipeline, each started once for the run:
- forewarn: an http probe every 1 s, the built-in ticket store, a real SMTP server (aiosmtpd)
  for the help-desk mails and the user notice;
- Monit: a 1 s cycle, `if failed port` then `exec` a script that writes the time to a file;
- Prometheus + Alertmanager tuned: the service's `/` scraped every 1 s (it answers Prometheus
  text), rule `up == 0` evaluated every 1 s with `for: 0s`, group_wait 0 s, group_interval 1 s,
  a webhook with `send_resolved`;
- Prometheus + Alertmanager as Debian ships them (15 s scrape and evaluation, group_wait 30 s,
  group_interval 5 m), started only for its own, longer trials (`--default-trials`, about
  6 minutes each, most of it waiting for group_interval to send the resolution).

Each trial stops the service at a random phase (T0) and times, per pipeline, the first alert
after T0: forewarn's ticket (its creation time in the store) and user notice (its arrival at
the SMTP server), Monit's exec, Alertmanager's webhook. Then it starts the service again and
times the recovery: forewarn's resolution mail, Monit's `else if succeeded` exec, the resolved
webhook. A second series kills (SIGKILL) a sleeping child process watched by forewarn's
process probe (pidfile, 1 s interval, exits seen through a pidfd) and by Monit's
`check process ... with pidfile` (1 s cycle). Each outage starts at least REST (31 s) after
the previous one ended, so that Alertmanager has forgotten it; the kills run meanwhile.

Prints a table (median [min-max] in seconds, per pipeline, fire and resolve), then one
`name value unit` line per figure. A ratio is forewarn's median over the other pipeline's:
below 1 forewarn was faster. Progress goes to stderr. All times are wall clock (`time.time()`):
Monit's script can tell no other.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

# The project, and the loopback helpers of tests/, which import each other by their bare names
# (as under pytest, whose conftest puts tests/ on the path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from anchors import (
    ExecLog,
    ServerProcess,
    WebhookSink,
    down_rule,
    monit_host_check,
    monit_process_check,
    start_alertmanager,
    start_monit,
    start_prometheus,
)
from daemon_process import DaemonProcess, daemon_head
from http_service import PROMETHEUS_TEXT, HttpService, free_port, text_handler
from prometheus_servers import die_with_parent
from smtp_server import ReceivedMail, SmtpTestServer

from notifiers.builtin import BuiltinTickets

# No flap detection: the trials follow each other every few seconds, which would make the
# alerts flap and hold back their resolution; Monit and Prometheus have none.
CONFIG = """
[helpdesk]
kind = "builtin"
[notify]
helpdesk = ["helpdesk@example.com"]
users = ["staff@example.com"]
[[probe]]
name = "svc"
kind = "http"
interval = "1s"
jitter = "0s"
url = "{url}"
[[probe]]
name = "sleeper"
kind = "process"
interval = "1s"
jitter = "0s"
pidfile = "{pidfile}"
[[rule]]
name = "svc_down"
probe = "svc"
metric = "http_up"
condition = "value == 0"
service = "the service"
notify_users = true
flap_detection = false
[[rule]]
name = "sleeper_gone"
probe = "sleeper"
metric = "process_count"
condition = "value == 0"
flap_detection = false
"""

FAST_CYCLE = 1.0  # every fast pipeline polls once a second
DEFAULT_CYCLE = 15.0  # Debian's scrape and evaluation interval
FAST_TIMEOUT = 30.0
DEFAULT_FIRE_TIMEOUT = 120.0
DEFAULT_RESOLVE_TIMEOUT = 420.0  # group_interval 5 m after the firing notice, and some
# Alertmanager drops an aggregation group whose alerts have all resolved only at its
# maintenance, every 30 s; an outage before that joins the old group, which has flushed
# already, so its first notice waits for group_interval (1 s tuned, 5 m by default).
# Real outages are rarely that close, so each outage starts that long after the last one.
REST = 31.0
SETTLE = 1.5  # after a recovery, before the next fault: every pipeline back to normal
# How often the service's thread looks whether it should stop. The stock 0.5 s would leave
# connections waiting in the backlog, refused only at the close: half of the 1 s polls would
# land on the fault itself.
STOP_POLL = 0.005
POLL = 0.05  # how often the bench looks; the times come from the pipelines themselves

# pipeline names, in the order of the table
FOREWARN_TICKET = "forewarn_ticket"
FOREWARN_NOTICE = "forewarn_user_notice"
MONIT = "monit"
PROM_TUNED = "prom_tuned"
PROM_DEFAULT = "prom_default"


# Any GET answers Prometheus text, so that a scrape of `/` counts as up.
MetricsText = text_handler(lambda: b"# TYPE ok gauge\nok 1\n", PROMETHEUS_TEXT)


class TimedSmtp(SmtpTestServer):
    """The test SMTP server, keeping the wall-clock time each mail arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[tuple[float, ReceivedMail]] = []

    def record(self, mail: ReceivedMail) -> None:
        self.arrived.append((time.time(), mail))
        super().record(mail)

    def first(self, to: str, words: str, since: float) -> float | None:
        """When the first mail to `to` with `words` in its subject arrived after `since`."""
        return next(
            (
                at
                for at, mail in list(self.arrived)
                if at >= since
                and any(to in rcpt for rcpt in mail.rcpt_tos)
                and words in str(mail.message["Subject"])
            ),
            None,
        )


@dataclass
class Rig:
    """Everything running for the run, and where each pipeline leaves its traces."""

    service: HttpService
    smtp: TimedSmtp
    monit_log: ExecLog
    sink: WebhookSink
    pidfile: Path
    workdir: Path
    sleeper: subprocess.Popen[bytes] | None = None
    servers: list[ServerProcess] = field(default_factory=list)

    @cached_property
    def tickets(self) -> BuiltinTickets:
        """The daemon's store: opened once the daemon has created it."""
        return BuiltinTickets(str(self.workdir / "state" / "forewarn.db"))

    def first_ticket(self, rule: str, since: float) -> float | None:
        created = [
            t.created_at
            for t in self.tickets.list_tickets()
            if rule in t.subject and t.created_at >= since
        ]
        return min(created, default=None)


# --- the pipelines' traces -----------------------------------------------------------------------

Probe = Callable[[float], float | None]  # since -> when the pipeline reported, or None yet


def fire_probes(rig: Rig, default: bool) -> dict[str, Probe]:
    if default:
        return {PROM_DEFAULT: lambda t: rig.sink.first("/default", "firing", t)}
    return {
        FOREWARN_TICKET: lambda t: rig.first_ticket("svc_down", t),
        FOREWARN_NOTICE: lambda t: rig.smtp.first("staff@", "Problem with", t),
        MONIT: lambda t: rig.monit_log.first("svc_fired", t),
        PROM_TUNED: lambda t: rig.sink.first("/tuned", "firing", t),
    }


def resolve_probes(rig: Rig, default: bool) -> dict[str, Probe]:
    if default:
        return {PROM_DEFAULT: lambda t: rig.sink.first("/default", "resolved", t)}
    return {
        "forewarn_resolution_mail": lambda t: rig.smtp.first("helpdesk@", "RESOLVED svc_down", t),
        MONIT: lambda t: rig.monit_log.first("svc_resolved", t),
        PROM_TUNED: lambda t: rig.sink.first("/tuned", "resolved", t),
    }


def process_probes(rig: Rig) -> tuple[dict[str, Probe], dict[str, Probe]]:
    fired: dict[str, Probe] = {
        FOREWARN_TICKET: lambda t: rig.first_ticket("sleeper_gone", t),
        MONIT: lambda t: rig.monit_log.first("sleeper_fired", t),
    }
    resolved: dict[str, Probe] = {
        "forewarn_resolution_mail": lambda t: rig.smtp.first(
            "helpdesk@", "RESOLVED sleeper_gone", t
        ),
        MONIT: lambda t: rig.monit_log.first("sleeper_resolved", t),
    }
    return fired, resolved


def wait_for(probes: dict[str, Probe], since: float, timeout: float) -> dict[str, float | None]:
    """Seconds from `since` to each pipeline's report; None for those silent until `timeout`."""
    seen: dict[str, float | None] = dict.fromkeys(probes)
    deadline = time.time() + timeout
    while time.time() < deadline:
        for name, probe in probes.items():
            if seen[name] is None:
                at = probe(since)
                seen[name] = None if at is None else at - since
        if all(v is not None for v in seen.values()):
            break
        time.sleep(POLL)
    return seen


# --- trials --------------------------------------------------------------------------------------

Trial = dict[str, dict[str, float | None]]  # "fire"/"resolve" -> pipeline -> seconds


def outage_trial(rig: Rig, cycle: float, default: bool) -> Trial:
    """Stop the service at a random phase, wait for the alerts, start it, wait for the all-clear."""
    fire_timeout = DEFAULT_FIRE_TIMEOUT if default else FAST_TIMEOUT
    resolve_timeout = DEFAULT_RESOLVE_TIMEOUT if default else FAST_TIMEOUT
    time.sleep(random.uniform(0, cycle))
    rig.service.stop()
    fired = wait_for(fire_probes(rig, default), time.time(), fire_timeout)
    time.sleep(random.uniform(0, cycle))
    rig.service.start()
    resolved = wait_for(resolve_probes(rig, default), time.time(), resolve_timeout)
    time.sleep(SETTLE)
    return {"fire": fired, "resolve": resolved}


def process_trial(rig: Rig) -> Trial:
    """SIGKILL the watched sleeper at a random phase; later start another one."""
    fire, resolve = process_probes(rig)
    time.sleep(random.uniform(0, FAST_CYCLE))
    assert rig.sleeper is not None
    killed_at = time.time()
    rig.sleeper.send_signal(signal.SIGKILL)
    rig.sleeper.wait()
    fired = wait_for(fire, killed_at, FAST_TIMEOUT)
    time.sleep(random.uniform(0, FAST_CYCLE))
    restarted_at = start_sleeper(rig)
    resolved = wait_for(resolve, restarted_at, FAST_TIMEOUT)
    time.sleep(SETTLE)  # the process probe's watcher takes the new PID at its next look
    return {"fire": fired, "resolve": resolved}


def start_sleeper(rig: Rig) -> float:
    """A new watched process, its PID written atomically to the pidfile; when it was written."""
    rig.sleeper = subprocess.Popen(["sleep", "86400"], preexec_fn=die_with_parent)
    staged = rig.pidfile.with_suffix(".new")
    staged.write_text(f"{rig.sleeper.pid}\n")
    os.replace(staged, rig.pidfile)
    return time.time()


def describe(trial: Trial) -> str:
    return "; ".join(
        f"{phase} " + ", ".join(f"{name} {show(value)}" for name, value in seen.items())
        for phase, seen in trial.items()
    )


def show(value: float | None) -> str:
    return "missed" if value is None else f"{value:.2f}s"


# --- starting everything -------------------------------------------------------------------------


@contextmanager
def rig_running(workdir: Path) -> Iterator[Rig]:
    with ExitStack() as stack:
        smtp = TimedSmtp()
        smtp.start()
        stack.callback(smtp.stop)
        sink = stack.enter_context(WebhookSink())
        service = HttpService(handler=MetricsText, poll_interval=STOP_POLL)
        service.start()
        stack.callback(service.stop)
        rig = Rig(service, smtp, ExecLog(workdir), sink, workdir / "sleeper.pid", workdir)
        start_sleeper(rig)
        stack.callback(stop_sleeper, rig)
        stack.callback(stop_servers, rig)
        start_forewarn(rig, stack)
        start_monit_checks(rig)
        start_tuned_prometheus(rig)
        yield rig


def start_forewarn(rig: Rig, stack: ExitStack) -> None:
    metrics = free_port()
    config = rig.workdir / "forewarn.toml"
    # reopen_within 0 s: a new ticket for every trial, as the other pipelines alert anew
    head = daemon_head(rig.workdir / "state", metrics, smtp_port=rig.smtp.port,
                       reopen_within="0s")
    config.write_text(head + CONFIG.format(url=rig.service.url, pidfile=rig.pidfile))
    daemon = DaemonProcess(config, rig.workdir / "forewarn.log", metrics)
    daemon.start()
    stack.callback(daemon.stop)


def start_monit_checks(rig: Rig) -> None:
    log = rig.monit_log
    checks = [
        monit_host_check("svc", rig.service.port, log.command("svc_fired"),
                         log.command("svc_resolved")),
        monit_process_check("sleeper", rig.pidfile, log.command("sleeper_fired"),
                            log.command("sleeper_resolved")),
    ]
    rig.servers.append(start_monit(subdir(rig, "monit"), checks, cycle=1))


def start_tuned_prometheus(rig: Rig) -> None:
    start_prometheus_pipeline(rig, "tuned", "1s", "0s", "1s")


def start_default_prometheus(rig: Rig) -> None:
    start_prometheus_pipeline(rig, "default", "15s", "30s", "5m")


def start_prometheus_pipeline(
    rig: Rig, name: str, interval: str, group_wait: str, group_interval: str
) -> None:
    """An Alertmanager posting to the sink's `/<name>`, and a Prometheus alerting to it."""
    am = start_alertmanager(subdir(rig, f"am-{name}"), rig.sink.url(f"/{name}"), group_wait,
                            group_interval, repeat_interval="4h")
    rig.servers.append(am)
    rig.servers.append(
        start_prometheus(subdir(rig, f"prom-{name}"), {"svc": [rig.service.address]}, interval,
                         interval, [down_rule("ServiceDown", "svc")], alertmanager=am.address)
    )


def subdir(rig: Rig, name: str) -> Path:
    path = rig.workdir / name
    path.mkdir()
    return path


def stop_servers(rig: Rig) -> None:
    for server in reversed(rig.servers):
        server.stop()


def stop_sleeper(rig: Rig) -> None:
    if rig.sleeper is not None and rig.sleeper.poll() is None:
        rig.sleeper.kill()
        rig.sleeper.wait()


# --- figures -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    name: str  # e.g. "monit_fault_to_alert"
    label: str  # a row of the table
    values: list[float]
    missed: int

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


def figure(name: str, label: str, trials: list[Trial], phase: str, pipeline: str) -> Figure:
    seen = [t[phase].get(pipeline) for t in trials]
    values = [v for v in seen if v is not None]
    return Figure(name, label, values, len(seen) - len(values))


def figures(fast: list[Trial], default: list[Trial], process: list[Trial]) -> list[Figure]:
    rows = [
        ("forewarn_fault_to_ticket", "forewarn ticket", fast, "fire", FOREWARN_TICKET),
        ("forewarn_fault_to_user_notice", "forewarn user notice", fast, "fire", FOREWARN_NOTICE),
        ("monit_fault_to_alert", "Monit exec", fast, "fire", MONIT),
        ("prom_tuned_fault_to_alert", "P+AM tuned webhook", fast, "fire", PROM_TUNED),
        ("prom_default_fault_to_alert", "P+AM default webhook", default, "fire", PROM_DEFAULT),
        ("forewarn_recovery_to_resolution_mail", "forewarn resolution mail", fast, "resolve",
         "forewarn_resolution_mail"),
        ("monit_recovery_to_alert", "Monit exec", fast, "resolve", MONIT),
        ("prom_tuned_recovery_to_resolved", "P+AM tuned webhook", fast, "resolve", PROM_TUNED),
        ("prom_default_recovery_to_resolved", "P+AM default webhook", default, "resolve",
         PROM_DEFAULT),
        ("forewarn_process_exit_to_ticket", "forewarn ticket", process, "fire", FOREWARN_TICKET),
        ("monit_process_exit_to_alert", "Monit exec", process, "fire", MONIT),
        ("forewarn_process_restart_to_resolution_mail", "forewarn resolution mail", process,
         "resolve", "forewarn_resolution_mail"),
        ("monit_process_restart_to_alert", "Monit exec", process, "resolve", MONIT),
    ]
    return [figure(name, label, trials, phase, pipe) for name, label, trials, phase, pipe in rows
            if trials]


def print_table(found: list[Figure]) -> None:
    sections = [("fault", "_fault_to_"), ("recovery", "_recovery_to_"),
                ("process exit", "_process_exit_"), ("process restart", "_process_restart_")]
    for title, infix in sections:
        rows = [f for f in found if infix in f.name]
        if rows:
            print(f"\n{title} -> report    median [min-max] s, n")
        for f in rows:
            print(f"  {f.label:<26} {span(f)}")
    print()


def span(f: Figure) -> str:
    if not f.values:
        return f"missed in all {f.missed} trials"
    missed = f", {f.missed} missed" if f.missed else ""
    return f"{f.median:7.2f} [{min(f.values):.2f}-{max(f.values):.2f}]  n={len(f.values)}{missed}"


RATIOS = [
    ("ratio_forewarn_vs_monit", "forewarn_fault_to_ticket", "monit_fault_to_alert"),
    ("ratio_forewarn_vs_prom_tuned", "forewarn_fault_to_ticket", "prom_tuned_fault_to_alert"),
    ("ratio_forewarn_vs_prom_default", "forewarn_fault_to_ticket", "prom_default_fault_to_alert"),
    ("ratio_forewarn_notice_vs_monit", "forewarn_fault_to_user_notice", "monit_fault_to_alert"),
    ("ratio_forewarn_notice_vs_prom_tuned", "forewarn_fault_to_user_notice",
     "prom_tuned_fault_to_alert"),
    ("ratio_forewarn_resolve_vs_monit", "forewarn_recovery_to_resolution_mail",
     "monit_recovery_to_alert"),
    ("ratio_forewarn_resolve_vs_prom_tuned", "forewarn_recovery_to_resolution_mail",
     "prom_tuned_recovery_to_resolved"),
    ("ratio_forewarn_resolve_vs_prom_default", "forewarn_recovery_to_resolution_mail",
     "prom_default_recovery_to_resolved"),
    ("ratio_forewarn_process_vs_monit", "forewarn_process_exit_to_ticket",
     "monit_process_exit_to_alert"),
]


def print_lines(found: list[Figure]) -> None:
    for f in found:
        if f.values:
            print(f"{f.name}_median {f.median:.3f} s")
            print(f"{f.name}_min {min(f.values):.3f} s")
            print(f"{f.name}_max {max(f.values):.3f} s")
        print(f"{f.name}_trials {len(f.values)} count")
        if f.missed:
            print(f"{f.name}_missed {f.missed} count")
    medians = {f.name: f.median for f in found}
    for name, ours, theirs in RATIOS:
        a, b = medians.get(ours), medians.get(theirs)
        if a is not None and b:
            print(f"{name} {a / b:.4f} x")


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=7, help="fast outages and process kills")
    parser.add_argument("--default-trials", type=int, default=2,
                        help="outages for Prometheus + Alertmanager with Debian's defaults")
    parser.add_argument("--skip-default", action="store_true", help="no default P+AM trials")
    parser.add_argument("--quick", action="store_true", help="3 trials, no default P+AM")
    args = parser.parse_args()
    trials = 3 if args.quick else args.trials
    default_trials = 0 if args.quick or args.skip_default else args.default_trials
    # `kill` stops the run like Ctrl-C: every server and the daemon are stopped on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with tempfile.TemporaryDirectory(prefix="forewarn-latency-") as tmp:
        print("starting forewarn, Monit, Prometheus, Alertmanager ...", file=sys.stderr)
        with rig_running(Path(tmp)) as rig:
            time.sleep(2 * FAST_CYCLE)  # every poller has seen the service up
            fast, process = run_fast(rig, trials)
            default = run_default(rig, default_trials)
    found = figures(fast, default, process)
    print_table(found)
    print_lines(found)


def run_fast(rig: Rig, count: int) -> tuple[list[Trial], list[Trial]]:
    """Outages, each followed by a process kill while Alertmanager forgets the outage."""
    outages: list[Trial] = []
    kills: list[Trial] = []
    for n in range(1, count + 1):
        outages.append(outage_trial(rig, FAST_CYCLE, False))
        rest_from = time.time()
        progress("outage", n, count, outages[-1])
        kills.append(process_trial(rig))
        progress("process", n, count, kills[-1])
        if n < count:
            rest(rest_from)
    return outages, kills


def run_default(rig: Rig, count: int) -> list[Trial]:
    if count == 0:
        return []
    print("starting Prometheus + Alertmanager with Debian's defaults ...", file=sys.stderr)
    start_default_prometheus(rig)
    time.sleep(DEFAULT_CYCLE)  # the rule evaluated at least once with the service up
    results: list[Trial] = []
    for n in range(1, count + 1):
        results.append(outage_trial(rig, DEFAULT_CYCLE, True))
        progress("default P+AM outage", n, count, results[-1])
        if n < count:
            rest(time.time())
    return results


def rest(since: float) -> None:
    """Wait until Alertmanager has dropped the last outage's group (see REST)."""
    remaining = REST - (time.time() - since)
    if remaining > 0:
        print(f"  resting {remaining:.0f}s for Alertmanager", file=sys.stderr, flush=True)
        time.sleep(remaining)


def progress(label: str, n: int, count: int, trial: Trial) -> None:
    print(f"{label} trial {n}/{count}: {describe(trial)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
