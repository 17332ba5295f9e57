"""The help-desk figures on /metrics: each figure of each episode observed once, when known.

Events are written to a real state file as the lifecycle, the dispatcher and the commands
write them; the exporter reads them back and the figures are checked against hand-computed
values. The last test runs the real daemon through a real outage of a loopback service.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from daemon_process import DaemonProcess, daemon_head, http_down, wait_until
from http_service import HttpService, free_port
from prometheus_client import generate_latest
from test_metrics_conventions import needs_promtool, promtool_check

from monitor.figures_metrics import BATCH, POLL_EVERY, RETAIN, FigureExporter
from monitor.metrics import Metrics
from monitor.store import Store, add_event, connect

T0 = 1_700_000_000.0  # the moment the tests' outages start
RULE = "disk_full"
TIMES = (
    "time_to_detect",
    "time_to_ticket",
    "time_to_first_notice",
    "time_to_acknowledge",
    "time_to_resolve",
    "lead_time",
)


class StateLog:
    """A state file, its incidents and their events, and an exporter on it."""

    def __init__(self, tmp: Path) -> None:
        self.store = Store(tmp / "forewarn.db")
        self.metrics = Metrics()
        self.now = T0 + 3600  # the exporter's clock

    def exporter(self) -> FigureExporter:
        return FigureExporter(self.store, self.metrics, clock=lambda: self.now)

    def incident(self, opened_at: float, rule: str = RULE, parent: int | None = None) -> int:
        with self.store.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO incident (fingerprint, marker, rule, labels, status, severity,"
                " priority, first_opened_at, opened_at, parent_id)"
                " VALUES (?, ?, ?, '{}', 'open', 2, 'high', ?, ?, ?)",
                (f"fp-{opened_at}-{rule}", "[forewarn:x]", rule, opened_at, opened_at, parent),
            )
            return int(cur.lastrowid or 0)

    def event(self, incident_id: int, at: float, kind: str, **detail: Any) -> None:
        with self.store.transaction() as conn:
            add_event(conn, incident_id, at, kind, **detail)

    def opened(self, at: float, since: float, **detail: Any) -> int:
        incident_id = self.incident(at, parent=detail.get("parent"))
        self.event(incident_id, at, "opened", since=since, mute=None, **detail)
        return incident_id

    def ticket(self, incident_id: int, at: float, episode: int = 1) -> None:
        op = "ticket.create" if episode == 1 else "ticket.reopen"
        key = f"incident:{incident_id}:episode:{episode}:{op}"
        template = "ticket_body" if episode == 1 else "ticket_reopened"
        self.event(incident_id, at, "delivered", op=op, key=key, template=template)

    def value(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def times(self) -> dict[str, tuple[float, float]]:
        """(count, sum) of each duration histogram."""
        return {
            figure: (
                self.value(f"forewarn_incident_{figure}_seconds_count"),
                self.value(f"forewarn_incident_{figure}_seconds_sum"),
            )
            for figure in TIMES
        }

    def scrape(self) -> str:
        return generate_latest(self.metrics.registry).decode()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[StateLog]:
    state = StateLog(tmp_path)
    yield state
    state.store.close()


def write_escalated_outage(log: StateLog) -> int:
    """Failing from T0-10, opened at T0, ticket at +4, a notice at +12, escalated to step 2,
    acknowledged at +30, resolved by forewarn at +100; a user reported it at +5."""
    incident = log.opened(T0, since=T0 - 10)
    log.ticket(incident, T0 + 4)
    log.event(incident, T0 + 10, "notice", notice="outage", audience="users", seq=0)
    notice_key = f"notice:incident:{incident}:1:users:outage:0"
    log.event(incident, T0 + 12, "delivered", op="mail", key=notice_key, template="notice")
    log.event(incident, T0 + 20, "escalated", step=0, urgent=False, to=["oncall"])
    log.event(incident, T0 + 25, "escalated", step=1, urgent=False, to=["boss"])
    log.event(incident, T0 + 30, "acknowledged", by="alice")
    log.event(incident, T0 + 40, "user_report", by="bob", reported_at=T0 + 5, note="")
    log.event(incident, T0 + 100, "resolved", lasted=100.0, mute=None, silent=False)
    return incident


ESCALATED_OUTAGE_TIMES = {
    "time_to_detect": (1, 10.0),
    "time_to_ticket": (1, 4.0),
    "time_to_first_notice": (1, 12.0),
    "time_to_acknowledge": (1, 30.0),
    "time_to_resolve": (1, 100.0),
    "lead_time": (0, 0.0),
}


def test_an_outage_is_observed_once_per_figure(log: StateLog) -> None:
    exporter = log.exporter()
    write_escalated_outage(log)

    assert exporter.poll() == 9
    assert log.times() == ESCALATED_OUTAGE_TIMES
    r = {"rule": RULE}
    assert log.value("forewarn_incident_episodes_total", **r, recurrence="false") == 1
    assert log.value("forewarn_incidents_resolved_total", **r, by="forewarn") == 1
    assert log.value("forewarn_incidents_resolved_total", **r, by="person") == 0
    assert log.value("forewarn_incident_escalations_reached_total", **r, step="1") == 1
    assert log.value("forewarn_incident_escalations_reached_total", **r, step="2") == 1
    assert log.value("forewarn_incident_escalations_reached_total", **r, step="3") == 0
    assert log.value("forewarn_user_reports_total", **r, first="forewarn") == 1
    assert log.value("forewarn_incident_tier1_total", **r) == 0  # it was escalated
    assert log.value("forewarn_incident_blips_total", **r) == 0  # acknowledged, reported
    assert log.value("forewarn_predictions_total", **r, outcome="averted") == 0

    before = log.scrape()
    assert exporter.poll() == 0
    assert log.scrape() == before


def test_figures_arriving_over_several_polls_are_each_observed_once(log: StateLog) -> None:
    exporter = log.exporter()
    incident = log.opened(T0, since=T0 - 3)
    log.ticket(incident, T0 + 2)
    assert exporter.poll() == 2
    assert log.times()["time_to_ticket"] == (1, 2.0)
    assert log.times()["time_to_acknowledge"] == (0, 0.0)

    log.event(incident, T0 + 60, "acknowledged", by="alice")
    assert exporter.poll() == 1
    assert log.times()["time_to_acknowledge"] == (1, 60.0)
    assert log.times()["time_to_resolve"] == (0, 0.0)

    log.event(incident, T0 + 90, "resolved", lasted=90.0, by="alice", source="cli")
    assert exporter.poll() == 1
    assert log.times() == {
        "time_to_detect": (1, 3.0),
        "time_to_ticket": (1, 2.0),
        "time_to_first_notice": (0, 0.0),
        "time_to_acknowledge": (1, 60.0),
        "time_to_resolve": (1, 90.0),
        "lead_time": (0, 0.0),
    }
    assert log.value("forewarn_incident_episodes_total", rule=RULE, recurrence="false") == 1
    assert log.value("forewarn_incidents_resolved_total", rule=RULE, by="person") == 1
    assert log.value("forewarn_incident_tier1_total", rule=RULE) == 1
    assert log.value("forewarn_incident_blips_total", rule=RULE) == 0  # a person resolved it


def test_history_before_the_start_is_not_counted(log: StateLog) -> None:
    write_escalated_outage(log)  # over before the start
    still_open = log.opened(T0 + 200, since=T0 + 190)
    log.ticket(still_open, T0 + 205)

    exporter = log.exporter()
    assert exporter.poll() == 0
    assert all(count == 0 for count, _ in log.times().values())
    assert "forewarn_incident_episodes_total{" not in log.scrape()

    # The open one resolves after the start: that, and only that, is new.
    log.event(still_open, T0 + 500, "resolved", lasted=300.0, mute=None, silent=False)
    assert exporter.poll() == 1
    assert log.times()["time_to_resolve"] == (1, 300.0)
    assert log.times()["time_to_ticket"] == (0, 0.0)
    assert log.times()["time_to_detect"] == (0, 0.0)
    assert log.value("forewarn_incidents_resolved_total", rule=RULE, by="forewarn") == 1
    assert log.value("forewarn_incident_episodes_total", rule=RULE, recurrence="false") == 0


def test_predictions_recurrences_blips_and_symptoms(log: StateLog) -> None:
    exporter = log.exporter()
    # Predicted to fill at +600; it did at +400, after the warning: lead 400 s, warned.
    warned = log.opened(T0, since=T0 - 5, predicted_at=T0 + 600)
    log.event(warned, T0 + 400, "impact", value=100.0, fingerprint="fp")
    log.event(warned, T0 + 900, "resolved", lasted=900.0, mute=None, silent=False)
    # It came back on a prediction and went away by itself within a minute: averted, a blip.
    log.event(
        warned,
        T0 + 1000,
        "reopened",
        episode=2,
        resolved_for=100.0,
        since=T0 + 990,
        predicted_at=T0 + 1500,
        mute=None,
    )
    log.ticket(warned, T0 + 1001, episode=2)
    log.event(warned, T0 + 1050, "resolved", lasted=50.0, mute=None, silent=False)
    # The level was reached before the warning (a late prediction); a user reported it first.
    late = log.opened(T0 + 2000, since=T0 + 1990, predicted_at=T0 + 2100)
    log.event(late, T0 + 1995, "impact", value=100.0, fingerprint="fp2")
    log.event(late, T0 + 2010, "user_report", by="carol", reported_at=T0 + 1900, note="")
    # A symptom of the first: no figure of its own.
    log.opened(T0 + 20, since=T0 + 10, parent=warned)

    assert exporter.poll() == 10
    r = {"rule": RULE}
    assert log.value("forewarn_predictions_total", **r, outcome="warned") == 1
    assert log.value("forewarn_predictions_total", **r, outcome="averted") == 1
    assert log.value("forewarn_predictions_total", **r, outcome="late") == 1
    assert log.times()["lead_time"] == (2, 400.0 + 0.0)  # the late one observed as 0
    assert log.value("forewarn_incident_lead_time_seconds_bucket", le="1.0") == 1
    assert log.value("forewarn_incident_episodes_total", **r, recurrence="false") == 2
    assert log.value("forewarn_incident_episodes_total", **r, recurrence="true") == 1
    assert log.value("forewarn_incidents_resolved_total", **r, by="forewarn") == 2
    assert log.value("forewarn_incident_blips_total", **r) == 1
    assert log.value("forewarn_incident_tier1_total", **r) == 2
    assert log.value("forewarn_user_reports_total", **r, first="user") == 1
    assert log.times()["time_to_detect"] == (3, 5.0 + 10.0 + 10.0)
    assert log.times()["time_to_ticket"] == (1, 1.0)


def test_an_episode_resolved_a_day_ago_is_forgotten_not_counted_again(log: StateLog) -> None:
    exporter = log.exporter()
    incident = log.opened(T0, since=T0 - 1)
    log.event(incident, T0 + 30, "resolved", lasted=30.0, mute=None, silent=False)
    exporter.poll()
    before = log.scrape()

    log.now = T0 + 30 + RETAIN + 1
    log.event(incident, log.now, "user_report", by="dave", reported_at=T0 + 10, note="")
    assert exporter.poll() == 1
    assert log.scrape() == before


def test_a_backlog_is_read_in_batches(log: StateLog) -> None:
    exporter = log.exporter()
    incident = log.opened(T0, since=T0)
    with log.store.transaction() as conn:
        for seq in range(BATCH):
            add_event(conn, incident, T0 + 1, "notice", notice="update", seq=seq)
    assert exporter.poll() == BATCH
    assert exporter.poll() == 1
    assert exporter.poll() == 0
    assert log.value("forewarn_incident_episodes_total", rule=RULE, recurrence="false") == 1


def test_a_failed_poll_is_logged_counted_and_read_again(
    log: StateLog, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = log.exporter()
    incident = log.opened(T0, since=T0 - 2)
    with log.store.transaction() as conn:  # a row no reader can parse
        conn.execute("UPDATE event SET detail = '{broken' WHERE incident_id = ?", (incident,))

    with caplog.at_level(logging.ERROR, logger="monitor.figures_metrics"):
        exporter.tick(T0)
    assert "could not read the event log" in caplog.text
    assert log.value("forewarn_figure_errors_total") == 1

    with log.store.transaction() as conn:
        conn.execute("UPDATE event SET detail = ?", (json.dumps({"since": T0 - 2}),))
    exporter.tick(T0 + POLL_EVERY / 2)  # too soon: no read
    assert log.times()["time_to_detect"] == (0, 0.0)
    exporter.tick(T0 + POLL_EVERY)
    assert log.times()["time_to_detect"] == (1, 2.0)
    assert log.value("forewarn_figure_errors_total") == 1


@needs_promtool
def test_the_figures_pass_promtool(log: StateLog) -> None:
    exporter = log.exporter()
    write_escalated_outage(log)
    exporter.poll()
    text = log.scrape()
    checked = promtool_check(text)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, ""), text
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.MULTILINE))
    assert all("in seconds" in helps[f"forewarn_incident_{figure}_seconds"] for figure in TIMES)


# --- through the real daemon -------------------------------------------------------------------


def daemon_config(url: str) -> str:
    """The built-in help desk and a rule that fires while the intranet at `url` is down."""
    helpdesk = '\n[helpdesk]\nkind = "builtin"\n'
    return helpdesk + http_down("intranet", url, 'summary = "The intranet is not answering"\n')


def scraped_with(daemon: DaemonProcess, start: str) -> str | None:
    """The daemon's /metrics when a line of it starts with `start`."""
    text = daemon.metrics() or ""
    return text if any(line.startswith(start) for line in text.splitlines()) else None


def metric_value(text: str, series: str) -> float | None:
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


@pytest.mark.slow
def test_a_real_outage_shows_on_the_daemons_metrics(tmp_path: Path) -> None:
    service = HttpService()
    port, state = free_port(), tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(daemon_head(state, port) + daemon_config(service.url))
    daemon = DaemonProcess(config, tmp_path / "daemon.log", port)
    with daemon.running(service):
        wait_until(lambda: scraped_with(daemon, 'forewarn_http_up{probe="intranet"'), 15, "a probe")
        service.stop()
        ticketed = "forewarn_incident_time_to_ticket_seconds_count 1.0"
        text = wait_until(lambda: scraped_with(daemon, ticketed), 30, ticketed)
        with closing(connect(state / "forewarn.db", readonly=True)) as conn:
            [(opened_at, created_at)] = conn.execute(
                "SELECT i.opened_at, t.created_at FROM incident i JOIN ticket t"
                " ON t.incident_id = i.id"
            ).fetchall()
        seconds = metric_value(text, "forewarn_incident_time_to_ticket_seconds_sum")
        assert seconds == pytest.approx(created_at - opened_at, abs=1e-6)

        service.start()
        resolved = 'forewarn_incidents_resolved_total{by="forewarn",rule="intranet_down"} 1.0'
        wait_until(lambda: scraped_with(daemon, resolved), 30, resolved)
    assert "could not read the event log" not in daemon.log_path.read_text()
