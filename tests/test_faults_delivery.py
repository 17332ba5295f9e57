"""Fault injection, part 1: `forewarn run` as a real subprocess while the things around it
break (the help desk refuses or answers 503, the mail server refuses or never answers, a probe
hangs for ever, a reload brings a broken config). Each test checks that nothing is lost (every
ticket operation and mail that should exist arrives), nothing is duplicated (exactly once, by
marker and event or by Message-ID) and the daemon keeps serving (/metrics and /api/v1/health
answer throughout).

The dispatcher's retry backoff (2 s doubling, `monitor.dispatcher.RetryPolicy`) is not a
config setting, so the outages here last a few retries of it: long enough that several
attempts fail, short enough for the file to run in about a minute.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import requests
from daemon_process import (
    HELPDESK,
    USERS,
    DaemonProcess,
    builtin_desk,
    daemon_head,
    http_down,
    metric_value,
    wait_until,
)
from faults import Hook, NotifyListener, WebhookDesk, silent_listener
from http_service import HttpService, free_port
from smtp_server import ReceivedMail, SmtpTestServer

from notifiers.builtin import BuiltinTickets

pytestmark = pytest.mark.slow

WEBHOOK_DESK = """
[helpdesk]
kind = "webhook"
url = "{url}"
id_path = "id"
timeout = "2s"
"""

SMTP = """
[smtp]
host = "127.0.0.1"
port = {port}
from = "forewarn@example.com"
timeout = "1s"
"""

RULE_KEYS = """severity = "critical"
service = "the {name} site"
summary = "{name} is not answering"
notify_users = true
"""


class Rig:
    """One daemon, the loopback services it probes, and what it talks to."""

    def __init__(self, tmp: Path, *sites: str) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.metrics_port = free_port()
        self.config = tmp / "config.toml"
        self.sites = {name: HttpService() for name in sites}
        self.daemon = DaemonProcess(self.config, tmp / "daemon.log", self.metrics_port)
        self.depths: list[float] = []  # forewarn_outbox_depth at every poll
        self.probed: tuple[str, ...] = ()

    def write(self, desk: str, *, extra: str = "", sites: tuple[str, ...] | None = None) -> None:
        self.probed = tuple(self.sites) if sites is None else sites
        probes = "".join(
            http_down(name, self.sites[name].url, RULE_KEYS.format(name=name))
            for name in self.probed
        )
        self.config.write_text(daemon_head(self.state, self.metrics_port) + desk + extra + probes)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The sites and the daemon running, every site seen up; stopped on the way out."""
        with self.daemon.running(*self.sites.values()):
            self.wait(lambda: all(self.up(name) for name in self.probed), 10, "every site seen up")
            yield

    def up(self, site: str) -> bool:
        return self.value(f'forewarn_http_up{{probe="{site}"') == 1.0

    def serving(self) -> str:
        """/metrics, after checking that /api/v1/health answers too: the daemon serves."""
        health = requests.get(f"http://127.0.0.1:{self.metrics_port}/api/v1/health", timeout=2)
        assert health.status_code == 200 and "outbox" in health.json(), health.text
        text = self.daemon.metrics()
        assert text is not None, f"/metrics did not answer: {self.daemon.log()}"
        self.depths.append(metric_value(text, "forewarn_outbox_depth") or 0.0)
        return text

    def depth(self) -> float | None:
        return self.depths[-1] if self.serving() else None

    def value(self, line_start: str) -> float | None:
        return metric_value(self.serving(), line_start)

    def full_log(self) -> str:
        return self.daemon.log_path.read_text(errors="replace")

    def wait(self, probe: Callable[[], object], timeout: float, what: str) -> None:
        """`wait_until` that checks the daemon serves at every poll and shows its log's end
        as it is when the wait fails."""
        try:
            wait_until(lambda: self.serving() and probe(), timeout, what, interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the daemon's log ends:\n{self.daemon.log()}") from None

    def wait_log(self, text: str, timeout: float = 10) -> None:
        self.wait(lambda: text in self.full_log(), timeout, f"{text!r} in the log")

    def hangup(self) -> None:
        assert self.daemon.proc is not None
        self.daemon.proc.send_signal(signal.SIGHUP)


@pytest.fixture
def desk() -> Iterator[WebhookDesk]:
    desk = WebhookDesk()
    yield desk
    desk.stop()


def _by_marker(hooks: list[Hook]) -> dict[str, list[Hook]]:
    grouped: dict[str, list[Hook]] = {}
    for hook in hooks:
        grouped.setdefault(hook.marker, []).append(hook)
    return grouped


def _assert_once_each(desk: WebhookDesk, expected: list[list[str]]) -> None:
    """The accepted events, per ticket, are exactly `expected` (each in order); every update
    names the id the desk gave that ticket's create."""
    accepted = desk.accepted()
    tickets = _by_marker(accepted)
    assert sorted([h.event for h in hooks] for hooks in tickets.values()) == sorted(expected), (
        desk.hooks
    )
    creates = [h.marker for h in accepted if h.event == "create"]
    for marker, hooks in tickets.items():
        number = str(creates.index(marker) + 1)  # the desk numbers its creates from 1
        assert all(h.external_id == number for h in hooks[1:]), hooks


def _markers(desk: WebhookDesk, status: int) -> set[str]:
    return {hook.marker for hook in desk.hooks if hook.status == status}


# --- 1. the help desk down, then failing, then back ---------------------------------------


def test_helpdesk_refusing_then_503_loses_and_duplicates_no_ticket_operation(
    tmp_path: Path, desk: WebhookDesk
) -> None:
    rig = Rig(tmp_path, "alpha", "beta")
    rig.write(WEBHOOK_DESK.format(url=desk.url))
    with rig.running():  # the desk is not started: connections to it are refused
        rig.sites["alpha"].stop()
        rig.wait_log("webhook create POST http://127.0.0.1", timeout=10)
        assert "connection refused" in rig.full_log()
        rig.sites["alpha"].start()  # alpha's outage ends before its ticket exists
        rig.wait(lambda: rig.depth() == 2, 10, "alpha's create and resolve waiting")

        desk.failing = 503
        desk.start()
        rig.sites["beta"].stop()
        rig.wait(lambda: rig.depth() == 3, 10, "beta's create waiting too")
        rig.wait(lambda: len(_markers(desk, 503)) == 2, 15, "both creates answered 503")
        assert not desk.accepted()
        rig.wait(lambda: rig.full_log().count("503 Service Unavailable") >= 2, 5, "both logged")

        desk.failing = None  # back after several retries of each row
        rig.wait(lambda: rig.depth() == 0, 25, "the outbox drained")
        rig.sites["beta"].start()
        rig.wait(lambda: len(desk.accepted()) >= 4, 10, "beta's ticket resolved")
        time.sleep(1.5)  # a few more dispatcher passes: nothing may be sent again
        _assert_once_each(desk, [["create", "resolve"], ["create", "resolve"]])
        assert max(rig.depths) == 3.0 and rig.depths[-1] == 0.0
        retried = rig.value('forewarn_deliveries_total{op="ticket.create",result="retry"}')
        assert retried is not None and retried >= 3, retried
        assert rig.value('forewarn_outbox_dead') == 0.0


# --- 2. the mail server down, then silent, then back --------------------------------------


def _mails(smtp: SmtpTestServer, to: str, words: str) -> list[ReceivedMail]:
    return [m for m in smtp.received if to in m.rcpt_tos and words in str(m.message["Subject"])]


def test_mail_server_refusing_then_silent_delivers_each_mail_once(tmp_path: Path) -> None:
    with SmtpTestServer() as smtp:
        rig = Rig(tmp_path, "alpha")
        rig.write(builtin_desk() + SMTP.format(port=smtp.port))
        with rig.running():
            tickets = BuiltinTickets(str(rig.state / "forewarn.db"))
            smtp.stop()
            rig.sites["alpha"].stop()

            def statuses() -> list[str]:
                return [t.status for t in tickets.list_tickets()]

            rig.wait(lambda: statuses() == ["new"], 10, "the ticket, with the mail server down")
            rig.wait_log("Connection refused")
            with silent_listener(smtp.port):  # accepts, never greets: each try times out
                rig.sites["alpha"].start()
                rig.wait(lambda: statuses() == ["resolved"], 15, "the ticket resolved meanwhile")
                rig.wait_log("Connection unexpectedly closed: timed out", timeout=15)
                rig.wait(lambda: rig.depth() == 4, 5, "the four mails waiting")
                assert smtp.received == []
            smtp.start()  # the same port: the retries deliver
            rig.wait(lambda: len(smtp.received) >= 4, 25, "the four mails")
            rig.wait(lambda: rig.depth() == 0, 5, "an empty outbox")
            time.sleep(1.5)  # a few more dispatcher passes: nothing may be sent again
        ids = [m.message["Message-ID"] for m in smtp.received]
        assert len(ids) == len(set(ids)) == 4, [str(m.message["Subject"]) for m in smtp.received]
        for to, words in [(HELPDESK, "CRITICAL alpha_down"), (HELPDESK, "RESOLVED alpha_down"),
                          (USERS, "Problem with the alpha site"), (USERS, "Fixed")]:
            assert len(_mails(smtp, to, words)) == 1, (to, words)
        assert [t.number for t in tickets.list_tickets()] == [1]


# --- 3. a probe hung for ever --------------------------------------------------------------


HUNG_PROBES = """
[[probe]]
name = "stuck_plugin"
kind = "command"
command = ["sleep", "3600"]
interval = "2s"
timeout = "1s"
jitter = "0s"

[[probe]]
name = "silent_site"
kind = "http"
interval = "2s"
timeout = "1s"
jitter = "0s"
url = "http://127.0.0.1:{silent_port}/"
"""


def _sleeps(daemon: psutil.Process) -> set[int]:
    """The daemon's descendants running `sleep` (the plugin; each run starts one)."""
    sleeping = set()
    for child in daemon.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.name() == "sleep" and child.status() != psutil.STATUS_ZOMBIE:
                sleeping.add(child.pid)
    return sleeping


def test_a_hung_probe_times_out_and_holds_up_nothing(tmp_path: Path) -> None:
    silent_port = free_port()
    with silent_listener(silent_port):
        rig = Rig(tmp_path, "alpha")
        rig.write('[helpdesk]\nkind = "builtin"\n',
                  extra=HUNG_PROBES.format(silent_port=silent_port))
        with rig.running():
            assert rig.daemon.proc is not None
            daemon = psutil.Process(rig.daemon.proc.pid)
            rig.wait(lambda: rig.value('forewarn_command_status{probe="stuck_plugin"') == 3.0,
                     5, "the plugin's timeout as UNKNOWN")
            assert rig.value('forewarn_http_up{probe="silent_site"') == 0.0
            threads, runs = daemon.num_threads(), rig.value(_runs("alpha")) or 0.0
            seen: list[set[int]] = []
            started = time.monotonic()
            while time.monotonic() - started < 6:  # three runs of each hung probe
                seen.append(_sleeps(daemon))
                rig.serving()
                time.sleep(0.1)
            every = set().union(*seen)
            assert len(every) >= 3, seen  # a new plugin each run, and so the test saw them
            assert max(len(pids) for pids in seen) <= 1, seen  # killed before the next starts
            assert (rig.value(_runs("alpha")) or 0.0) - runs >= 5  # every second, as scheduled
            for probe in ("stuck_plugin", "silent_site"):
                count = rig.value(_runs(probe)) or 0.0
                mean = (rig.value(_runs(probe).replace("_count", "_sum")) or 0.0) / count
                assert count >= 3 and 0.9 <= mean < 2.0, (probe, count, mean)
            assert daemon.num_threads() <= threads + 2, (threads, daemon.num_threads())
            assert "still hung" not in rig.full_log()  # the probes bound their own runs
        assert not [pid for pid in every if psutil.pid_exists(pid)], every


def _runs(probe: str) -> str:
    return f'forewarn_probe_duration_seconds_count{{kind="{_KINDS[probe]}",probe="{probe}"}}'


_KINDS = {"alpha": "http", "silent_site": "http", "stuck_plugin": "command"}


# --- 4. a reload with errors during an open outage ----------------------------------------


def test_refused_reload_during_an_outage_loses_and_duplicates_nothing(
    tmp_path: Path, desk: WebhookDesk
) -> None:
    listener = NotifyListener(str(tmp_path / "notify"))
    rig = Rig(tmp_path, "alpha", "beta", "gamma")
    rig.daemon.env = {"NOTIFY_SOCKET": listener.path}
    rig.write(WEBHOOK_DESK.format(url=desk.url), sites=("alpha", "beta"))
    desk.start()
    with contextlib.closing(listener), rig.running():
        rig.sites["alpha"].stop()
        rig.wait(lambda: [h.event for h in desk.accepted()] == ["create"], 10, "alpha's ticket")
        desk.stop()  # from here the outbox keeps what is due

        # Broken, and without beta: a partial reload would forget beta's probe and rule.
        rig.write(WEBHOOK_DESK.format(url=desk.url) + 'colour = "blue"\n', sites=("alpha",),
                  extra='[[rule]]\nname = "odd"\nmetric = "http_up"\ncondition = "value =="\n')
        rig.hangup()
        rig.wait_log("reload refused, keeping the running config: 2 error(s)")
        log = rig.full_log()
        assert "helpdesk.colour: unknown key" in log and "rule[1] (odd).condition" in log, log
        rig.wait(lambda: _refusals(listener), 5, "systemd told of the refusal")
        assert _refusals(listener) == [
            "reload refused: 2 config error(s), see the log; still running: 2 probes, 5 rules"
        ], listener.statuses()

        rig.sites["beta"].stop()  # the running config still probes and opens incidents
        rig.sites["alpha"].start()
        rig.wait(lambda: rig.depth() == 2, 10, "beta's create and alpha's resolve waiting")

        rig.write(WEBHOOK_DESK.format(url=desk.url), sites=("alpha", "beta", "gamma"))
        rig.hangup()  # valid, while beta's incident is open and its ticket not yet created
        rig.wait_log("configuration reloaded: 3 probes")
        rig.wait(lambda: rig.up("gamma"), 5, "gamma probed")
        assert listener.statuses()[-1].startswith("running: 3 probes"), listener.statuses()

        desk.start()
        rig.wait(lambda: rig.depth() == 0, 20, "the outbox drained")
        rig.sites["beta"].start()
        rig.wait(lambda: len(desk.accepted()) >= 4, 10, "beta's ticket resolved")
        time.sleep(1.5)  # a few more dispatcher passes: nothing may be sent again
        _assert_once_each(desk, [["create", "resolve"], ["create", "resolve"]])
        assert rig.value("forewarn_incidents_open") == 0.0


def _refusals(listener: NotifyListener) -> list[str]:
    return [status for status in listener.statuses() if status.startswith("reload refused")]
