"""The Alertmanager receiver: the webhook payload (version 4) validated and turned into samples
that go through forewarn's own pipeline, on a real state store with `now` passed in.
"""

from __future__ import annotations

import copy
import json
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest
import requests
from comms_parts import Parts, wire
from daemon_process import DaemonProcess, daemon_head, state_rows, wait_until
from http_service import PROMETHEUS_TEXT, HttpService, QuietHandler, text_handler
from prometheus_client.parser import text_string_to_metric_families
from prometheus_servers import (
    ALERTMANAGER_NAMES,
    PROMETHEUS_NAMES,
    ServerProcess,
    find_binary,
    free_port,
    start_alertmanager,
    start_prometheus,
)
from redmine_server import RedmineServer, redmine_server  # noqa: F401  (the fixture)

from monitor.alertmanager import (
    METRIC,
    PROBE,
    RULE,
    RULE_NAME,
    AlertmanagerConfig,
    Deadlines,
    receive,
)
from monitor.config import ConfigError, parse_config
from monitor.daemon import Daemon
from monitor.engine import DEFAULT_STALE_AFTER
from monitor.schema import config_fields
from rules import Phase, Severity, evaluate, fingerprint, marker, render_summary

REPO = Path(__file__).resolve().parent.parent
NOW = 1_800_000_000.0
ZERO_TIME = "0001-01-01T00:00:00Z"  # what Alertmanager sends as a firing alert's endsAt

LABELS = {"alertname": "TargetDown", "instance": "web01:9100", "job": "node"}


def alert(status: str = "firing", **changes: Any) -> dict[str, Any]:
    """One alert as Alertmanager 0.25 posts it."""
    item: dict[str, Any] = {
        "status": status,
        "labels": dict(LABELS),
        "annotations": {"summary": "web01 is down", "description": "No scrape for 1m."},
        "startsAt": "2027-01-15T08:00:00.123456789Z",
        "endsAt": ZERO_TIME if status == "firing" else "2027-01-15T08:05:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
        "fingerprint": "4d0c1f1a1c4f2b0e",
    }
    item.update(changes)
    return item


def payload(*alerts: dict[str, Any], **changes: Any) -> dict[str, Any]:
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    body: dict[str, Any] = {
        "version": "4",
        "groupKey": '{}:{alertname="TargetDown"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "forewarn",
        "groupLabels": {"alertname": "TargetDown"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }
    body.update(changes)
    return body


# --- validation ----------------------------------------------------------------------------------


def broken(change: Any) -> dict[str, Any]:
    body = payload(alert())
    change(body)
    return body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "expected a JSON object, got a list"),
        (broken(lambda b: b.update(version="3")), "version: '3' is not the webhook payload"),
        (broken(lambda b: b.update(version=4)), "version: 4 is not"),
        (broken(lambda b: b.pop("version")), "version: None is not"),
        (broken(lambda b: b.pop("alerts")), "alerts: expected a list of alerts, got nothing"),
        (broken(lambda b: b.update(alerts={})), "alerts: expected a list of alerts, got an object"),
        (broken(lambda b: b["alerts"].append("x")), "alerts[1]: expected an object"),
        (broken(lambda b: b["alerts"][0].update(status="pending")), "alerts[0].status: 'pending'"),
        (broken(lambda b: b["alerts"][0].pop("status")), "alerts[0].status: None is not one of"),
        (broken(lambda b: b["alerts"][0].pop("labels")), "alerts[0].labels: expected an object"),
        (broken(lambda b: b["alerts"][0].update(labels={})), "at least one label"),
        (broken(lambda b: b["alerts"][0].update(labels={"": "x"})), "a label name is empty"),
        (
            broken(lambda b: b["alerts"][0]["labels"].update(severity=5)),
            "alerts[0].labels.severity: expected a string, got 5",
        ),
        (
            broken(lambda b: b["alerts"][0]["labels"].update(team=None)),
            "alerts[0].labels.team: expected a string, got nothing",
        ),
        (
            broken(lambda b: b["alerts"][0]["annotations"].update(summary=["x"])),
            "alerts[0].annotations.summary: expected a string, got a list",
        ),
        (
            broken(lambda b: b["alerts"][0].update(endsAt="yesterday")),
            "alerts[0].endsAt: 'yesterday' is not an RFC 3339 time",
        ),
        (
            broken(lambda b: b["alerts"][0].update(startsAt="2027-01-15T08:00:00")),
            "alerts[0].startsAt: '2027-01-15T08:00:00' has no time zone",
        ),
        (broken(lambda b: b["alerts"][0].update(endsAt=17)), "alerts[0].endsAt: expected an RFC"),
    ],
)
def test_a_malformed_payload_is_refused_with_its_reason(body: Any, reason: str) -> None:
    with pytest.raises(ValueError) as refused:
        receive(body, NOW)
    assert reason in str(refused.value)


def test_nothing_of_a_payload_with_one_bad_alert_is_used() -> None:
    body = payload(alert(), alert(labels={"alertname": 1}))
    with pytest.raises(ValueError, match=r"alerts\[1\]\.labels\.alertname"):
        receive(body, NOW)


def test_an_empty_notification_is_valid() -> None:
    assert receive(payload(), NOW).summary == {"received": 0, "firing": 0, "resolved": 0}


# --- mapping -------------------------------------------------------------------------------------


def test_each_alert_becomes_a_sample_of_its_labels_plus_the_probe() -> None:
    other = alert("resolved", labels={"alertname": "DiskFull", "instance": "db01:9100"})
    received = receive(payload(alert(), other), NOW)
    firing, resolved = received.samples
    assert (firing.metric, firing.value, firing.timestamp) == (METRIC, 1.0, NOW)
    assert firing.labels == {**LABELS, "probe": PROBE}
    assert (resolved.value, resolved.labels["alertname"]) == (0.0, "DiskFull")
    assert received.summary == {"received": 2, "firing": 1, "resolved": 1}


def test_an_alerts_own_probe_label_is_kept_as_exported_probe() -> None:
    [sample] = receive(payload(alert(labels={"alertname": "X", "probe": "icmp"})), NOW).samples
    assert sample.labels == {"alertname": "X", "exported_probe": "icmp", "probe": PROBE}


def test_annotations_travel_as_text_not_labels() -> None:
    annotations = {"summary": "web01  is\ndown", "description": "No scrape\tfor 1m.", "x": "y"}
    [sample] = receive(payload(alert(annotations=annotations)), NOW).samples
    assert sample.error == "web01 is down\nNo scrape for 1m."
    assert "summary" not in sample.labels and "x" not in sample.labels


def test_a_description_alone_or_the_same_twice_is_said_once() -> None:
    only = receive(payload(alert(annotations={"description": "Gone."})), NOW).samples[0]
    same = receive(payload(alert(annotations={"summary": "Gone.", "description": "Gone."})), NOW)
    none = receive(payload(alert(annotations={})), NOW).samples[0]
    assert only.error == same.samples[0].error == "Gone."
    assert none.error is None


def test_the_same_alert_from_two_alertmanagers_is_the_same_series() -> None:
    """Annotations, times and Alertmanager's own fingerprint field may differ: the labels
    are the identity, as they are of Alertmanager's fingerprint."""
    first = receive(payload(alert()), NOW).samples[0]
    second = alert(annotations={"summary": "web01 down (value 0)"}, fingerprint="other")
    again = receive(payload(second, receiver="other-am"), NOW + 30).samples[0]
    assert fingerprint(RULE_NAME, first.labels) == fingerprint(RULE_NAME, again.labels)
    assert fingerprint(RULE_NAME, first.labels) != fingerprint(
        RULE_NAME, {**first.labels, "instance": "web02:9100"}
    )


def test_a_firing_alert_whose_ends_at_passed_counts_as_resolved() -> None:
    past = alert(endsAt="2027-01-15T07:59:59Z")
    ahead = alert(labels={"alertname": "Later"}, endsAt="2027-01-15T10:00:00+01:00")
    received = receive(payload(past, ahead), NOW)
    assert [s.value for s in received.samples] == [0.0, 1.0]
    [(sample, ends_at)] = received.ends
    assert sample.labels["alertname"] == "Later" and ends_at == NOW + 3600


def test_alertmanagers_zero_ends_at_means_no_deadline() -> None:
    received = receive(payload(alert(endsAt=ZERO_TIME), alert(labels={"a": "b"}, endsAt="")), NOW)
    assert received.ends == () and [s.value for s in received.samples] == [1.0, 1.0]


# --- the built-in rule ---------------------------------------------------------------------------


def evaluated(body: dict[str, Any]) -> Any:
    [sample] = receive(body, NOW).samples
    return evaluate(RULE, None, sample, NOW).state


def test_the_rule_fires_at_once_with_the_annotations_as_its_title() -> None:
    state = evaluated(payload(alert()))
    assert (state.phase, state.severity) == (Phase.FIRING, Severity.WARNING)
    assert render_summary(RULE, state) == "web01 is down"


def test_a_critical_severity_label_makes_it_critical() -> None:
    state = evaluated(payload(alert(labels={**LABELS, "severity": "critical"})))
    assert state.severity is Severity.CRITICAL


def test_without_annotations_the_title_is_the_alert_name_and_instance() -> None:
    state = evaluated(payload(alert(annotations={})))
    assert render_summary(RULE, state) == "TargetDown on web01:9100"


def test_annotations_are_data_never_a_template() -> None:
    hostile = "{{ ''.__class__.__mro__ }} {% for x in range(9) %}x{% endfor %}"
    state = evaluated(payload(alert(annotations={"summary": hostile})))
    assert render_summary(RULE, state) == hostile


def test_a_long_summary_is_cut_for_the_ticket_title() -> None:
    state = evaluated(payload(alert(annotations={"summary": "word " * 100})))
    assert len(render_summary(RULE, state)) <= 160


# --- through the engine: incidents and tickets ---------------------------------------------------

HEAD = """
[daemon]
state_dir = "{state}"
hostname = "central"
"""


@pytest.fixture
def parts(tmp_path: Path) -> Parts:
    return wire(parse_config(HEAD.format(state=tmp_path), "test.toml"))


def post(parts: Parts, body: dict[str, Any], at: float) -> int:
    return parts.engine.process(receive(body, at).samples, at)


def rows(parts: Parts, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in parts.store.query(sql)]


def test_a_firing_alert_opens_one_incident_with_a_ticket(parts: Parts) -> None:
    assert post(parts, payload(alert(labels={**LABELS, "severity": "critical"})), NOW) == 1
    [(rule, status, severity, summary)] = rows(
        parts, "SELECT rule, status, severity, summary FROM incident"
    )
    assert (rule, status, severity, summary) == (RULE_NAME, "open", 2, "web01 is down")
    assert rows(parts, "SELECT op FROM outbox") == [("ticket.create",)]


def test_repeats_change_nothing(parts: Parts) -> None:
    post(parts, payload(alert()), NOW)
    before = [rows(parts, f"SELECT * FROM {t}") for t in ("incident", "outbox", "event", "alert")]
    for repeat in range(1, 4):  # every repeat_interval, and a second Alertmanager
        assert post(parts, payload(alert(), receiver=f"am{repeat}"), NOW + 60 * repeat) == 0
    after = [rows(parts, f"SELECT * FROM {t}") for t in ("incident", "outbox", "event", "alert")]
    assert after == before


def test_resolved_resolves_and_a_repeated_resolved_changes_nothing(parts: Parts) -> None:
    post(parts, payload(alert()), NOW)
    assert post(parts, payload(alert("resolved")), NOW + 120) == 1
    assert rows(parts, "SELECT status FROM incident") == [("resolved",)]
    ops = rows(parts, "SELECT op FROM outbox ORDER BY id")
    assert ops == [("ticket.create",), ("ticket.resolve",)]
    assert post(parts, payload(alert("resolved")), NOW + 125) == 0
    assert rows(parts, "SELECT op FROM outbox ORDER BY id") == ops


def test_a_resolved_alert_never_seen_firing_leaves_no_trace(parts: Parts) -> None:
    assert post(parts, payload(alert("resolved")), NOW) == 0
    assert rows(parts, "SELECT COUNT(*) FROM alert") == [(0,)]


def test_two_alerts_in_one_notification_are_two_incidents(parts: Parts) -> None:
    second = alert(labels={**LABELS, "instance": "web02:9100"})
    assert post(parts, payload(alert(), second), NOW) == 2
    assert rows(parts, "SELECT COUNT(DISTINCT fingerprint) FROM incident") == [(2,)]


# --- alerts that stop being re-sent --------------------------------------------------------------


def test_a_firing_alert_not_resent_resolves_after_resolve_timeout_not_before(
    parts: Parts,
) -> None:
    """Alertmanager re-sends a firing alert only every repeat_interval (4h by default): the
    engine's usual staleness for unknown probes (5 min) would resolve it in between."""
    timeout = AlertmanagerConfig().resolve_timeout
    assert parts.engine.settings.stale_after[PROBE] == timeout > 4 * 3600
    post(parts, payload(alert()), NOW)
    parts.engine.tick(NOW)
    assert parts.engine.tick(NOW + DEFAULT_STALE_AFTER + 1) == 0
    assert parts.engine.tick(NOW + timeout - 1) == 0
    assert parts.engine.tick(NOW + timeout + 1) == 1
    assert rows(parts, "SELECT status FROM incident") == [("resolved",)]


def test_resolve_timeout_is_configured(tmp_path: Path) -> None:
    text = HEAD.format(state=tmp_path) + '[alertmanager]\nresolve_timeout = "13h"\n'
    parts = wire(parse_config(text, "test.toml"))
    assert parts.config.alertmanager.resolve_timeout == 13 * 3600
    assert parts.engine.settings.stale_after[PROBE] == 13 * 3600


def test_an_ends_at_that_passes_without_a_resend_resolves(parts: Parts) -> None:
    deadlines = Deadlines()
    firing = receive(payload(alert(endsAt="2027-01-15T08:10:00Z")), NOW)
    ends_at = firing.ends[0][1]
    deadlines.note(firing)
    parts.engine.process(firing.samples, NOW)
    assert deadlines.lapsed(ends_at - 1) == []
    [lapsed] = deadlines.lapsed(ends_at)
    assert (lapsed.value, lapsed.labels) == (0.0, firing.samples[0].labels)
    assert deadlines.lapsed(ends_at + 10) == []  # given once
    assert parts.engine.process([lapsed], ends_at) == 1
    assert rows(parts, "SELECT status FROM incident") == [("resolved",)]


def test_a_resend_moves_the_deadline_and_a_resolved_or_open_ended_one_drops_it() -> None:
    deadlines = Deadlines()
    deadlines.note(receive(payload(alert(endsAt="2027-01-15T08:10:00Z")), NOW))
    deadlines.note(receive(payload(alert(endsAt="2027-01-15T08:20:00Z")), NOW))
    assert deadlines.lapsed(NOW + 600) == [] and len(deadlines) == 1
    assert len(deadlines.lapsed(NOW + 1200)) == 1
    for ending in (alert("resolved"), alert(endsAt=ZERO_TIME)):
        deadlines.note(receive(payload(alert(endsAt="2027-01-15T08:10:00Z")), NOW))
        deadlines.note(receive(payload(ending), NOW))
        assert len(deadlines) == 0


# --- config --------------------------------------------------------------------------------------


def test_the_rule_is_built_in_and_a_config_overrides_it(tmp_path: Path) -> None:
    assert RULE in parse_config(HEAD.format(state=tmp_path), "t.toml").rules
    own = """
[[rule]]
name = "alertmanager"
metric = "alertmanager_alert"
probe = "alertmanager"
condition = "value == 1"
service = "payroll"
notify_users = true
"""
    config = parse_config(HEAD.format(state=tmp_path) + own, "t.toml")
    [rule] = [rule for rule in config.rules if rule.name == RULE_NAME]
    assert rule.service == "payroll" and rule.notify_users and rule is not RULE


def test_no_probe_may_take_the_alertmanager_name(tmp_path: Path) -> None:
    probe = '[[probe]]\nname = "alertmanager"\nkind = "memory"\n'
    with pytest.raises(ConfigError, match=r'probe\[1\].*name: "alertmanager" is reserved'):
        parse_config(HEAD.format(state=tmp_path) + probe, "t.toml")


def test_a_resolve_timeout_shorter_than_a_minute_is_refused(tmp_path: Path) -> None:
    text = HEAD.format(state=tmp_path) + '[alertmanager]\nresolve_timeout = "5s"\n'
    with pytest.raises(ConfigError, match=r"alertmanager\.resolve_timeout"):
        parse_config(text, "t.toml")


def test_the_example_config_documents_every_alertmanager_key() -> None:
    example = tomllib.loads((REPO / "config.toml").read_text(encoding="utf-8"))
    assert set(example["alertmanager"]) == set(config_fields(AlertmanagerConfig))


# --- the daemon's entry point --------------------------------------------------------------------


def test_the_daemon_takes_a_post_into_its_main_loop(tmp_path: Path) -> None:
    daemon = Daemon(parse_config(HEAD.format(state=tmp_path), "t.toml"), None)
    try:
        body = payload(alert(), alert("resolved", labels={"alertname": "Old"}))
        assert daemon.receive_alertmanager(copy.deepcopy(body)) == {
            "received": 2,
            "firing": 1,
            "resolved": 1,
        }
        with pytest.raises(ValueError, match="version"):
            daemon.receive_alertmanager({"alerts": []})
        daemon._process_pending(timeout=0)
        incidents = daemon.store.query("SELECT rule, status FROM incident")
        assert [tuple(row) for row in incidents] == [(RULE_NAME, "open")]
    finally:
        daemon.store.close()


def test_the_daemon_resolves_an_alert_whose_ends_at_passed(tmp_path: Path) -> None:
    daemon = Daemon(parse_config(HEAD.format(state=tmp_path), "t.toml"), None)
    ours = "SELECT status FROM incident WHERE rule = 'alertmanager'"
    try:
        ends_at = time.time() + 3600
        stamp = datetime.fromtimestamp(ends_at, UTC).isoformat()
        daemon.receive_alertmanager(payload(alert(endsAt=stamp)))
        daemon._process_pending(timeout=0)
        daemon._tick(ends_at - 5)
        assert [tuple(row) for row in daemon.store.query(ours)] == [("open",)]
        daemon._tick(ends_at + 1)
        assert [tuple(row) for row in daemon.store.query(ours)] == [("resolved",)]
    finally:
        daemon.store.close()


# --- for real: Prometheus, two Alertmanagers, two forewarn replicas, one help desk ---------------
#
# A loopback target is scraped by a real Prometheus whose rule `up == 0` (1 s evaluation) sends
# to two real, unclustered Alertmanagers. The first posts to both forewarn replicas (the second
# replica's route waits a little: see the README's fleet mode) and to a capture receiver of this
# test; the second Alertmanager posts to replica A as well. Both replicas keep their tickets in
# one real Redmine (tests/redmine_server.py), the shared record that makes them agree: the
# built-in store lives in each replica's own state file, and a webhook receiver written here
# would decide by itself whether a marker is found; Redmine searches as it does in production.

SCRAPE = "1s"
REPLICA_B_WAIT = "3s"  # the second replica's group_wait: the first has opened the ticket
FIRE_SECONDS = 30.0  # bounds, not expectations: the pipeline takes about 1-5 s
TOKEN = "test-token-" + "0123456789abcdef" * 2

REPLICA_CONFIG = """
[helpdesk]
kind = "redmine"
url = "{url}"
api_key = {{ file = "{key_file}" }}
project = "{project}"
timeout = "5s"
sync_interval = "1s"

[api]
token = {{ file = "{token_file}" }}
"""


METRICS_TEXT = b"# TYPE demo_requests_total counter\ndemo_requests_total 1\n"


class _CaptureHandler(QuietHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        server = cast(Capture, self.server)
        with server.lock:
            server.payloads.append(json.loads(body))
        self.reply(200)


class Capture(ThreadingHTTPServer):
    """A webhook receiver that keeps every payload Alertmanager posts, to replay them."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CaptureHandler)
        self.lock = threading.Lock()
        self.payloads: list[dict[str, Any]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def last(self, status: str) -> dict[str, Any] | None:
        with self.lock:
            found = [p for p in self.payloads if p["alerts"][0]["status"] == status]
        return copy.deepcopy(found[-1]) if found else None


def scraped_target() -> HttpService:
    """A scraped service that can go down (connection refused) and come back on its port."""
    return HttpService(handler=text_handler(lambda: METRICS_TEXT, PROMETHEUS_TEXT))


@dataclass
class Replica:
    name: str
    port: int
    state: Path
    process: DaemonProcess

    @property
    def webhook(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/alertmanager"

    def incidents(self) -> list[tuple[str, str, str | None]]:
        """(marker, status, ticket id) of each incident of the `alertmanager` rule."""
        rows = state_rows(
            self.state,
            "SELECT i.marker, i.status, t.external_id FROM incident i"
            " LEFT JOIN ticket t ON t.incident_id = i.id WHERE i.rule = ? ORDER BY i.id",
            (RULE_NAME,),
        )
        return [(row[0], row[1], row[2]) for row in rows]


@dataclass
class Fleet:
    target: HttpService
    capture: Capture
    desk: RedmineServer
    replicas: dict[str, Replica]
    alertmanagers: list[ServerProcess]
    prometheus: ServerProcess


def start_replica(name: str, workdir: Path, desk: RedmineServer, token_file: Path) -> Replica:
    workdir.mkdir()
    key_file = workdir / "redmine-key"
    key_file.write_text(desk.admin_key)
    port, state = free_port(), workdir / "state"
    config = workdir / "config.toml"
    config.write_text(
        daemon_head(state, port, hostname=f"central-{name}")
        + REPLICA_CONFIG.format(
            url=desk.url,
            key_file=key_file,
            project=desk.project,
            token_file=token_file,
        )
    )
    process = DaemonProcess(config, workdir / "forewarn.log", port)
    process.start()
    return Replica(name, port, state, process)


def webhook(url: str, token_file: Path) -> dict[str, Any]:
    # The token as Alertmanager reads it: from a file, sent as "Authorization: Bearer ...".
    http = {"authorization": {"credentials_file": str(token_file)}}
    return {"url": url, "send_resolved": True, "http_config": http}


def alertmanager_config(routes: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    """Every alert its own group (`...`), sent at once, resent every minute; each route
    (receiver, group_wait, webhook) gets the alert, in order."""
    return {
        "route": {
            "receiver": routes[0][0],
            "group_by": ["..."],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1m",
            "routes": [
                {"receiver": name, "group_wait": wait, "continue": True} for name, wait, _ in routes
            ],
        },
        "receivers": [{"name": name, "webhook_configs": [hook]} for name, _, hook in routes],
    }


def start_alerting_prometheus(
    workdir: Path, target: HttpService, alertmanagers: list[ServerProcess]
) -> ServerProcess:
    workdir.mkdir()
    rules = workdir / "rules.yml"
    rule = {
        "alert": "TargetDown",
        "expr": 'up{job="target"} == 0',
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": "Target {{ $labels.instance }} is down",
            "description": "Prometheus could not scrape {{ $labels.instance }}.",
        },
    }
    rules.write_text(json.dumps({"groups": [{"name": "fleet", "rules": [rule]}]}))
    targets = [am.address for am in alertmanagers]
    alerting = {"alertmanagers": [{"static_configs": [{"targets": targets}]}]}
    return start_prometheus(
        workdir,
        {"target": [target.address]},
        SCRAPE,
        wait_for_jobs=["target"],
        more={"rule_files": [str(rules)], "alerting": alerting},
    )


@pytest.fixture(scope="module")
def fleet(
    redmine_server: RedmineServer,  # noqa: F811  (the imported fixture)
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    # Binaries first, so that a missing one skips (fails in CI) before anything starts.
    find_binary(ALERTMANAGER_NAMES, "prometheus-alertmanager")
    find_binary(PROMETHEUS_NAMES, "prometheus")
    workdir = tmp_path_factory.mktemp("fleet")
    token_file = workdir / "api-token"
    token_file.write_text(TOKEN)
    with ExitStack() as stack:
        target, capture = scraped_target(), Capture()
        target.start()
        stack.callback(target.stop)
        stack.callback(capture.server_close)
        stack.callback(capture.shutdown)
        replicas = {}
        for name in ("a", "b"):
            replicas[name] = start_replica(name, workdir / name, redmine_server, token_file)
            stack.callback(replicas[name].process.stop)
        a, b = replicas["a"], replicas["b"]
        first = alertmanager_config(
            [
                ("capture", "0s", {"url": capture.url, "send_resolved": True}),
                ("forewarn-a", "0s", webhook(a.webhook, token_file)),
                ("forewarn-b", REPLICA_B_WAIT, webhook(b.webhook, token_file)),
            ]
        )
        second = alertmanager_config([("forewarn-a", "0s", webhook(a.webhook, token_file))])
        alertmanagers = []
        for number, config in enumerate((first, second), 1):
            am_dir = workdir / f"am{number}"
            am_dir.mkdir()
            alertmanagers.append(start_alertmanager(am_dir, config))
            stack.callback(alertmanagers[-1].stop)
        prometheus = start_alerting_prometheus(workdir / "prometheus", target, alertmanagers)
        stack.callback(prometheus.stop)
        yield Fleet(target, capture, redmine_server, replicas, alertmanagers, prometheus)


def issues(desk: RedmineServer, marker: str) -> list[dict[str, Any]]:
    """Every Redmine issue whose subject holds exactly `marker`, oldest first."""
    params = {"project_id": desk.project, "status_id": "*", "subject": f"~{marker}"}
    found = desk.api("GET", "/issues.json", params={**params, "sort": "id", "limit": 100})
    return [issue for issue in found.json()["issues"] if marker in issue["subject"]]


def notifications(alertmanager: ServerProcess) -> dict[str, float]:
    """Alertmanager's own count of webhook notifications: sent and failed."""
    text = requests.get(f"{alertmanager.url}/metrics", timeout=5).text
    counts = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("integration") == "webhook" and sample.name in (
                "alertmanager_notifications_total",
                "alertmanager_notifications_failed_total",
            ):
                counts[sample.name.split("_")[2]] = sample.value
    return counts


def replay(replica: Replica, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    answer = requests.post(replica.webhook, json=body, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@pytest.mark.slow
def test_an_outage_prometheus_sees_is_one_ticket_and_its_recovery_resolves_it(
    fleet: Fleet,
) -> None:
    a, b = fleet.replicas["a"], fleet.replicas["b"]
    fault = time.monotonic()
    fleet.target.stop()
    firing = wait_until(lambda: fleet.capture.last("firing"), FIRE_SECONDS, "a firing alert")
    # Alertmanager hides a firing alert's end: resolve_timeout, not endsAt, bounds it.
    assert firing["alerts"][0]["endsAt"] == ZERO_TIME
    [sample] = receive(firing, NOW).samples
    assert sample.labels == {
        "alertname": "TargetDown", "instance": fleet.target.address, "job": "target",
        "severity": "critical", "probe": PROBE,
    }  # fmt: skip
    mark = marker(fingerprint(RULE_NAME, sample.labels))
    wait_until(lambda: issues(fleet.desk, mark), FIRE_SECONDS, f"a Redmine issue {mark}")
    ticketed = time.monotonic()
    for replica in (a, b):  # B found A's ticket by its marker instead of opening one
        wait_until(lambda r=replica: r.incidents() and r.incidents()[0][2], FIRE_SECONDS, "ticket")
    [issue] = issues(fleet.desk, mark)
    assert issue["priority"]["name"] == "High"  # critical, from the alert's severity label
    assert a.incidents() == b.incidents() == [(mark, "open", str(issue["id"]))]

    # The same alert again: Alertmanager's payload replayed, to both replicas.
    for replica in (a, b):
        assert replay(replica, firing) == {"received": 1, "firing": 1, "resolved": 0}
    broken = copy.deepcopy(firing)
    broken["alerts"][0]["status"] = "gone"
    refused = requests.post(
        a.webhook, json=broken, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert refused.status_code == 422
    assert "alerts[0].status: 'gone' is not one of firing, resolved" in refused.json()["error"]
    # Both Alertmanagers posted to replica A, the second with its own notification.
    sent = [notifications(am) for am in fleet.alertmanagers]
    assert sent[0]["total"] >= 3 and sent[1]["total"] >= 1, sent
    assert sent[0]["failed"] == sent[1]["failed"] == 0, sent
    time.sleep(2)  # a few turns of the replicas' loops: nothing may come of the repeats
    assert len(issues(fleet.desk, mark)) == 1
    assert a.incidents() == b.incidents() == [(mark, "open", str(issue["id"]))]

    recovery = time.monotonic()
    fleet.target.start()
    wait_until(
        lambda: [i["status"]["name"] for i in issues(fleet.desk, mark)] == ["Resolved"],
        FIRE_SECONDS,
        f"issue {issue['id']} resolved (log: {a.process.log()})",
    )
    resolved = time.monotonic()
    for replica in (a, b):
        wait_until(lambda r=replica: r.incidents()[0][1] == "resolved", FIRE_SECONDS, "resolved")
    gone = wait_until(lambda: fleet.capture.last("resolved"), FIRE_SECONDS, "a resolved alert")
    assert replay(a, gone) == {"received": 1, "firing": 0, "resolved": 1}
    time.sleep(1)
    assert [i["status"]["name"] for i in issues(fleet.desk, mark)] == ["Resolved"]
    assert a.incidents() == b.incidents() == [(mark, "resolved", str(issue["id"]))]
    print(
        f"\nfault to ticket {ticketed - fault:.1f}s, recovery to resolved ticket "
        f"{resolved - recovery:.1f}s (Prometheus {SCRAPE} scrape and evaluation, "
        "Alertmanager group_wait 0s, group_interval 1s, Redmine)"
    )


# --- the README's fleet mode: its examples are valid to the tools that read them ----------------


def fleet_examples() -> dict[str, str]:
    """The code blocks of the README's "Fleet mode" section, by their first line."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Fleet mode\n", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```")[1::2]  # the insides of the fences
    return {block.split("\n")[1]: block.split("\n", 1)[1] for block in blocks}


def test_the_readme_prometheus_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = find_binary(("promtool",), "prometheus")
    rules = tmp_path / "fleet.rules.yml"
    rules.write_text(fleet_examples()["# fleet.rules.yml"])
    checked = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_readme_alertmanager_config_passes_amtool(tmp_path: Path) -> None:
    amtool = find_binary(("amtool",), "prometheus-alertmanager")
    text = fleet_examples()["# alertmanager.yml"]
    token = tmp_path / "forewarn-token"
    config = tmp_path / "alertmanager.yml"
    config.write_text(text.replace("/etc/alertmanager/forewarn-token", str(token)))
    checked = subprocess.run([amtool, "check-config", str(config)], capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Replica B waits; replica A does not; both carry the token and want "resolved".
    assert text.count("send_resolved: true") == 2 and text.count("credentials_file") == 2


def test_the_readme_central_config_is_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)  # secrets next to the file
    (tmp_path / "redmine-key").write_text("0123456789abcdef")
    (tmp_path / "api-token").write_text(TOKEN)
    text = fleet_examples()["# central forewarn (both replicas)"]
    text = text.replace("[daemon]\n", f'[daemon]\nstate_dir = "{tmp_path}"\n')
    config = parse_config(text, str(tmp_path / "config.toml"))
    [rule] = [rule for rule in config.rules if rule.name == RULE_NAME]
    assert (rule.category, config.alertmanager.resolve_timeout) == ("fleet", 5 * 3600)
    state = evaluate(rule, None, receive(payload(alert()), NOW).samples[0], NOW).state
    assert render_summary(rule, state) == "web01 is down"
