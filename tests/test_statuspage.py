"""The status page: its view built from a real state store that the real engine filled, its
HTML, JSON and Atom forms, the HTTP server that serves them next to /metrics, and the page of
a real daemon in a real headless Chromium.

Time is passed as `now` everywhere except in the daemon test, which runs the real thing.
"""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import requests
from chromium import launched, watch_problems
from daemon_process import ServiceRig, http_down, wait_until
from http_service import text_handler

from monitor.comms_config import (
    CommsConfig,
    NoticesConfig,
    ServiceConfig,
    StatusConfig,
)
from monitor.config import Config, DaemonConfig, HelpdeskConfig, NotifyConfig
from monitor.engine import Engine, EngineSettings
from monitor.metrics import Metrics
from monitor.statuspage import atom_feed, build_view, iso, render_page
from monitor.store import Store, acknowledge
from monitor.web import CSP, WebServer, serve
from notifiers.render import Renderer
from probes.base import Duration, Sample
from rules import Rule, Severity, compile_condition
from rules.model import Text
from rules.silences import MaintenanceWindow, parse_matcher

T0 = 1_800_000_000.0  # Friday 2027-01-15 08:00 UTC
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
ATOM_NS = {"a": "http://www.w3.org/2005/Atom"}
PROBE_OUTPUT = "<script>window.__pwned=1</script>"


def rule(name: str, metric: str, **changes: Any) -> Rule:
    base = Rule(name=name, metric=metric, condition=compile_condition("value == 0"))
    return replace(base, **changes)


INTRANET = rule("intranet_down", "http_up", severity=Severity.CRITICAL, service="intranet")
MAIL = rule("mail_slow", "mail_up", service="mail", notify_users=True)
VPN = rule("vpn_down", "vpn_up", severity=Severity.CRITICAL, service="vpn")
DISK = rule("disk_full", "disk_ok", severity=Severity.CRITICAL)  # not user-facing
HOST = rule(
    "host_down",
    "host_up",
    severity=Severity.CRITICAL,
    notify_users=True,
    user_impact=Text((("en", "Everything on the web server is unreachable"),)),
    workaround=Text((("en", "Use the mirror at the branch office"),)),
)
WIKI = rule(
    "wiki_down", "wiki_up", severity=Severity.CRITICAL, service="wiki", depends_on=("host_down",)
)
FILES = rule("files_slow", "files_up", service="files")
ALL_RULES = (INTRANET, MAIL, VPN, DISK, HOST, WIKI, FILES)

# Nightly 02:00-04:00 UTC; the next one starts 18 h after T0.
BACKUP = MaintenanceWindow(
    name="backup",
    cron="0 2 * * *",
    duration=2 * HOUR,
    matchers=(parse_matcher('rule="files_slow"'),),
    services=("files",),
    title="Nightly backup",
    description="Shared drives are read-only meanwhile.",
    announce_before=HOUR,
)
QUIET = MaintenanceWindow(  # mutes without telling users: never on the page
    name="quiet", cron="0 3 * * *", duration=HOUR, matchers=(parse_matcher('rule="disk_full"'),)
)
PRINTING = ServiceConfig(
    "printing",
    title=Text((("en", "Printers"), ("it", "Stampanti"))),
    description=Text((("en", "Office printers"), ("it", "Stampanti d'ufficio"))),
)
INTRANET_SERVICE = ServiceConfig("intranet", title=Text((("", "Intranet"),)))


def make_config(
    rules: tuple[Rule, ...] = ALL_RULES,
    *,
    monitor_for: float = 0.0,
    language: str = "en",
    status: StatusConfig | None = None,
) -> Config:
    comms = CommsConfig(
        services=(PRINTING, INTRANET_SERVICE),
        notices=NoticesConfig(monitor_for=Duration(monitor_for), language=language),
        status=status or StatusConfig(title="ACME status"),
    )
    return Config(
        daemon=DaemonConfig(hostname="web01", state_dir="-"),
        helpdesk=HelpdeskConfig(),
        smtp=None,
        notify=NotifyConfig(),
        probes=(),
        rules=rules,
        source="test",
        maintenance=(BACKUP, QUIET),
        comms=comms,
    )


@dataclass
class Rig:
    store: Store
    engine: Engine
    config: Config = field(default_factory=make_config)

    def fail(self, metric: str, now: float, error: str | None = None, **labels: str) -> None:
        self.engine.process([Sample(metric, 0.0, now, labels, error)], now)

    def recover(self, metric: str, now: float, **labels: str) -> None:
        self.engine.process([Sample(metric, 1.0, now, labels)], now)

    def view(self, now: float) -> dict[str, Any]:
        return build_view(self.store, self.config, now)

    def incident_id(self, rule_name: str) -> int:
        rows = self.store.query("SELECT id FROM incident WHERE rule = ?", (rule_name,))
        return int(rows[0]["id"])

    def notice(self, incident_id: int, audience: str, kind: str, at: float, **times: float) -> None:
        """A row as the notice writer records a notice sent (this module only reads them)."""
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO notice (subject, incident_id, episode, audience, kind, seq, at,"
                " eta_at, next_update_at) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?)",
                (
                    f"incident:{incident_id}:1",
                    incident_id,
                    audience,
                    kind,
                    int(at),
                    at,
                    times.get("eta_at"),
                    times.get("next_update_at"),
                ),
            )


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    store = Store(tmp_path / "forewarn.db")
    settings = EngineSettings(
        hostname="web01", reopen_within=HOUR, backend="builtin", maintenance=(BACKUP, QUIET)
    )
    yield Rig(store, Engine(store, ALL_RULES, settings, Metrics(), snapshot=dict))
    store.close()


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


def titles(items: list[dict[str, Any]]) -> list[str]:
    return [item["title"] for item in items]


# --- components ----------------------------------------------------------------------------------


def test_with_nothing_wrong_every_service_is_operational(rig: Rig) -> None:
    view = rig.view(T0)

    assert view["overall"] == {
        "state": "operational",
        "label": "Operational",
        "sentence": "All systems are operational.",
    }
    # [[service]] in file order, then the services only rules or announced windows name.
    assert [c["name"] for c in view["components"]] == [
        "printing", "intranet", "mail", "vpn", "wiki", "files",
    ]
    assert {c["state"] for c in view["components"]} == {"operational"}
    assert by_name(view["components"])["printing"]["description"] == "Office printers"
    assert (view["incidents"], view["history"]) == ([], [])
    assert (view["title"], view["generated_at"]) == ("ACME status", "2027-01-15T08:00:00Z")


def test_a_component_takes_the_worst_state_of_its_open_incidents(rig: Rig) -> None:
    rig.fail("http_up", T0)  # critical
    rig.fail("mail_up", T0)  # warning
    flap(rig, "vpn_up", T0)  # critical, but it comes and goes

    components = by_name(rig.view(T0 + HOUR)["components"])

    assert components["intranet"]["state"] == "major_outage"
    assert components["intranet"]["state_label"] == "Major outage"
    assert components["mail"]["state"] == "degraded"
    assert components["vpn"]["state"] == "partial_outage"
    assert components["printing"]["state"] == "operational"
    assert rig.view(T0 + HOUR)["overall"]["sentence"] == "Intranet is unavailable."


def flap(rig: Rig, metric: str, start: float) -> None:
    """Down and up every minute until the engine tags the incident intermittent."""
    for step in range(40):
        now = start + step * MINUTE
        (rig.fail if step % 2 == 0 else rig.recover)(metric, now)
    [row] = rig.store.query("SELECT intermittent, status FROM incident WHERE rule = 'vpn_down'")
    assert (row["intermittent"], row["status"]) == (1, "open")


def test_the_overall_sentence_names_the_services_in_the_worst_state(rig: Rig) -> None:
    rig.fail("mail_up", T0)
    assert rig.view(T0)["overall"] == {
        "state": "degraded",
        "label": "Degraded performance",
        "sentence": "mail is slower or less reliable than usual.",
    }
    rig.fail("http_up", T0)
    rig.fail("vpn_up", T0)
    assert rig.view(T0)["overall"]["sentence"] == "Intranet and vpn are unavailable."


def test_titles_and_descriptions_are_in_the_page_language(rig: Rig) -> None:
    rig.config = make_config(language="it")
    printing = by_name(rig.view(T0)["components"])["printing"]
    assert (printing["title"], printing["description"]) == ("Stampanti", "Stampanti d'ufficio")
    # A title written without a language serves every language; no title: the name.
    assert by_name(rig.view(T0)["components"])["intranet"]["title"] == "Intranet"
    assert by_name(rig.view(T0)["components"])["mail"]["title"] == "mail"


# --- current incidents ---------------------------------------------------------------------------


def test_current_incidents_are_the_user_facing_root_causes(rig: Rig) -> None:
    rig.fail("disk_ok", T0)  # no service, no notify_users: for the help desk only
    rig.fail("host_up", T0 + MINUTE)
    rig.fail("wiki_up", T0 + 2 * MINUTE)  # a symptom of host_down
    rig.fail("http_up", T0 + 3 * MINUTE, f"body does not match; it begins {PROBE_OUTPUT}")

    view = rig.view(T0 + HOUR)

    assert titles(view["incidents"]) == [  # newest first
        "Intranet is unavailable",
        "Everything on the web server is unreachable",  # the rule's user_impact
    ]
    intranet, host = view["incidents"]
    assert intranet["service"] == {"name": "intranet", "title": "Intranet"}
    assert (intranet["impact"], intranet["phase"], intranet["notice"]) == (
        "major_outage", "investigating", None,
    )
    assert (intranet["started_at"], intranet["duration"]) == ("2027-01-15T08:03:00Z", 3420)
    assert PROBE_OUTPUT in intranet["summary"]  # kept as it is: escaping is the page's job
    assert (host["service"], host["workaround"]) == (None, "Use the mirror at the branch office")
    # The symptom is not listed, but the service it names is down all the same; the host's
    # own incident, without a service, weighs on the overall state.
    assert by_name(view["components"])["wiki"]["state"] == "major_outage"
    assert view["overall"]["state"] == "major_outage"


def test_the_phase_follows_the_acknowledgement_and_the_latest_notice_is_shown(rig: Rig) -> None:
    rig.fail("http_up", T0)
    incident = rig.incident_id("intranet_down")
    rig.notice(incident, "staff", "investigating", T0 + MINUTE, next_update_at=T0 + 4 * HOUR)
    assert acknowledge(rig.store, incident, "ana", "on it", T0 + 5 * MINUTE)
    rig.notice(
        incident, "staff", "identified", T0 + 6 * MINUTE, eta_at=T0 + 2 * HOUR,
        next_update_at=T0 + HOUR,
    )
    rig.notice(incident, "@ticket", "update", T0 + 30 * MINUTE)  # a ticket comment, not a notice

    [current] = rig.view(T0 + 40 * MINUTE)["incidents"]

    assert (current["phase"], current["phase_label"]) == ("identified", "Identified")
    assert current["notice"] == {
        "kind": "identified",
        "kind_label": "Identified",
        "at": "2027-01-15T08:06:00Z",
        "eta_at": "2027-01-15T10:00:00Z",
        "next_update_at": "2027-01-15T09:00:00Z",
    }
    assert current["updated_at"] == "2027-01-15T08:06:00Z"


# --- history -------------------------------------------------------------------------------------


def test_history_lists_what_was_resolved_within_its_window_newest_first(rig: Rig) -> None:
    rig.fail("http_up", T0)
    rig.recover("http_up", T0 + HOUR)
    rig.fail("mail_up", T0 + 2 * HOUR)
    rig.recover("mail_up", T0 + 2 * HOUR + 90)
    rig.fail("disk_ok", T0)  # not user-facing: not in history either
    rig.recover("disk_ok", T0 + HOUR)

    view = rig.view(T0 + 3 * HOUR)

    assert view["incidents"] == []
    assert [(i["title"], i["duration"]) for i in view["history"]] == [
        ("mail is having problems", 90),
        ("Intranet is unavailable", 3600),
    ]
    assert view["history"][1]["resolved_at"] == "2027-01-15T09:00:00Z"
    assert view["history"][1]["phase"] == "resolved"
    assert by_name(view["components"])["intranet"]["state"] == "operational"
    # [status] history is 7 days: at 7 days after the mail incident it has just gone.
    assert titles(rig.view(T0 + 7 * DAY + 2 * HOUR + 90)["history"]) == ["mail is having problems"]
    assert rig.view(T0 + 7 * DAY + 2 * HOUR + 91)["history"] == []


def test_a_recent_recovery_stays_current_while_it_is_monitored(rig: Rig) -> None:
    rig.config = make_config(monitor_for=10 * MINUTE)
    rig.fail("http_up", T0)
    rig.recover("http_up", T0 + HOUR)

    [monitored] = rig.view(T0 + HOUR + 5 * MINUTE)["incidents"]
    assert (monitored["phase"], monitored["resolved_at"]) == ("monitoring", "2027-01-15T09:00:00Z")
    assert rig.view(T0 + HOUR + 5 * MINUTE)["overall"]["state"] == "operational"

    later = rig.view(T0 + HOUR + 10 * MINUTE)
    assert (later["incidents"], titles(later["history"])) == ([], ["Intranet is unavailable"])


def test_a_recurrence_shows_only_its_latest_episode(rig: Rig) -> None:
    rig.fail("http_up", T0)
    rig.recover("http_up", T0 + 10 * MINUTE)
    rig.fail("http_up", T0 + 20 * MINUTE)  # inside reopen_within: episode 2, same incident

    view = rig.view(T0 + HOUR)

    assert view["history"] == []
    [current] = view["incidents"]
    assert (current["episode"], current["started_at"]) == (2, "2027-01-15T08:20:00Z")


# --- maintenance ---------------------------------------------------------------------------------


def test_announced_maintenance_is_listed_when_upcoming_and_in_progress(rig: Rig) -> None:
    [upcoming] = rig.view(T0)["maintenance"]  # QUIET, announced to nobody, is never listed
    assert upcoming == {
        "id": "backup/1800064800",
        "name": "backup",
        "title": "Nightly backup",
        "description": "Shared drives are read-only meanwhile.",
        "phase": "scheduled",
        "phase_label": "Scheduled",
        "start": "2027-01-16T02:00:00Z",
        "end": "2027-01-16T04:00:00Z",
        "services": [{"name": "files", "title": "files"}],
        "updated_at": "2027-01-02T02:00:00Z",  # when it came within [status] upcoming (14 d)
    }
    assert by_name(rig.view(T0)["components"])["files"]["state"] == "operational"

    during = rig.view(T0 + 18 * HOUR + 30 * MINUTE)
    in_progress, tomorrow = during["maintenance"]
    assert (in_progress["phase"], in_progress["start"]) == ("in_progress", "2027-01-16T02:00:00Z")
    assert (tomorrow["phase"], tomorrow["start"]) == ("scheduled", "2027-01-17T02:00:00Z")
    assert by_name(during["components"])["files"]["state"] == "maintenance"
    assert during["overall"] == {
        "state": "maintenance",
        "label": "Under maintenance",
        "sentence": "files is under scheduled maintenance.",
    }


def test_only_maintenance_within_the_upcoming_period_is_listed(rig: Rig) -> None:
    rig.config = make_config(status=StatusConfig(upcoming=Duration(12 * HOUR)))
    assert rig.view(T0)["maintenance"] == []  # it starts in 18 h
    assert [m["start"] for m in rig.view(T0 + 6 * HOUR)["maintenance"]] == [
        "2027-01-16T02:00:00Z"
    ]


def test_a_problem_muted_by_maintenance_is_not_an_incident_nor_history(rig: Rig) -> None:
    start = T0 + 18 * HOUR  # the backup window
    rig.fail("files_up", start + MINUTE)

    during = rig.view(start + 30 * MINUTE)
    assert during["incidents"] == []
    assert by_name(during["components"])["files"]["state"] == "maintenance"

    rig.recover("files_up", start + HOUR)
    assert rig.view(start + 3 * HOUR)["history"] == []  # users never heard of it


# --- JSON, Atom, HTML ----------------------------------------------------------------------------


def busy_view(rig: Rig, now: float) -> dict[str, Any]:
    rig.fail("mail_up", T0 - HOUR)
    rig.recover("mail_up", T0 - 30 * MINUTE)
    rig.fail("http_up", T0, f"body does not match; it begins {PROBE_OUTPUT}")
    return rig.view(now)


def test_the_view_is_json(rig: Rig) -> None:
    view = busy_view(rig, T0 + HOUR)
    assert json.loads(json.dumps(view)) == view


def test_the_atom_feed_has_one_entry_per_incident_and_maintenance(rig: Rig) -> None:
    view = busy_view(rig, T0 + HOUR)

    feed = ET.fromstring(atom_feed(view))

    entries = feed.findall("a:entry", ATOM_NS)
    assert [e.findtext("a:title", namespaces=ATOM_NS) for e in entries] == [
        "[Investigating] Intranet is unavailable",
        "[Resolved] mail is having problems",
        "[Scheduled] Nightly backup",
    ]
    ids = [e.findtext("a:id", namespaces=ATOM_NS) for e in entries]
    assert ids == [
        "tag:web01,2027-01-15:forewarn/incident/2/1",
        "tag:web01,2027-01-15:forewarn/incident/1/1",
        "tag:web01,2027-01-16:forewarn/maintenance/backup/1800064800",
    ]
    assert [e.findtext("a:updated", namespaces=ATOM_NS) for e in entries] == [
        "2027-01-15T08:00:00+00:00",
        "2027-01-15T07:30:00+00:00",
        "2027-01-02T02:00:00+00:00",
    ]
    assert feed.findtext("a:updated", namespaces=ATOM_NS) == "2027-01-15T08:00:00+00:00"
    assert feed.findtext("a:title", namespaces=ATOM_NS) == "ACME status"
    content = entries[0].findtext("a:content", namespaces=ATOM_NS) or ""
    assert PROBE_OUTPUT in content  # a text construct: the XML escapes it, readers show text
    assert entries[0].find("a:link", ATOM_NS).get("href") == "status#incident-2"  # type: ignore[union-attr]

    # Ids stay the same while the incident goes on; the maintenance keeps its id once begun.
    later = ET.fromstring(atom_feed(rig.view(T0 + 18 * HOUR + MINUTE)))
    later_ids = [e.findtext("a:id", namespaces=ATOM_NS) for e in later.findall("a:entry", ATOM_NS)]
    assert ids[0] in later_ids and ids[2] in later_ids


def test_the_page_escapes_probe_output_and_dates_every_time(rig: Rig) -> None:
    html = render_page(busy_view(rig, T0 + HOUR), Renderer())

    assert "<script" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    details = html.index("<details>")
    assert details < html.index("&lt;script&gt;") < html.index("</details>", details)
    assert '<time datetime="2027-01-15T08:00:00Z">2027-01-15 08:00&nbsp;UTC</time>' in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert '<link rel="alternate" type="application/atom+xml"' in html
    assert 'href="status.json"' in html
    assert "Major outage" in html and "Investigating" in html  # words, not colour alone
    assert "No incidents in the last" not in html


def test_an_empty_history_says_how_far_back_it_looked(rig: Rig) -> None:
    html = render_page(rig.view(T0), Renderer())
    assert "No incidents in the last 7 days." in html
    assert "All systems are operational." in html


def test_iso_times_are_utc_to_the_second() -> None:
    assert (iso(T0 + 0.9), iso(None)) == ("2027-01-15T08:00:00Z", None)


# --- the HTTP server -----------------------------------------------------------------------------


@pytest.fixture
def server(rig: Rig) -> Iterator[tuple[str, WebServer]]:
    busy_view(rig, T0)
    web = serve(
        Metrics(), "127.0.0.1:0", rig.view, Renderer(), clock=lambda: T0 + HOUR
    )
    assert web is not None
    host, port = web.address
    yield f"http://{host}:{port}", web
    web.shutdown()


def test_the_server_answers_health_and_metrics(server: tuple[str, WebServer]) -> None:
    base, _ = server
    health = requests.get(f"{base}/healthz", timeout=5)
    assert (health.status_code, health.text) == (200, "ok\n")

    metrics = requests.get(f"{base}/metrics", timeout=5)
    assert metrics.status_code == 200
    assert metrics.headers["Content-Type"].startswith("text/plain; version=")
    assert "forewarn_up 1.0" in metrics.text


def test_the_server_serves_the_status_page_in_three_forms(server: tuple[str, WebServer]) -> None:
    base, _ = server
    page = requests.get(f"{base}/status", timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Content-Security-Policy"] == CSP
    assert CSP == "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "Intranet is unavailable" in page.text

    as_json = requests.get(f"{base}/status.json?pretty=1", timeout=5)  # a query is ignored
    assert as_json.headers["Content-Type"] == "application/json"
    assert as_json.json()["generated_at"] == "2027-01-15T09:00:00Z"  # the server's clock

    atom = requests.get(f"{base}/status.atom", timeout=5)
    assert atom.headers["Content-Type"] == "application/atom+xml; charset=utf-8"
    assert len(ET.fromstring(atom.content).findall("a:entry", ATOM_NS)) == 3

    home = requests.get(f"{base}/", timeout=5, allow_redirects=False)
    assert (home.status_code, home.headers["Location"]) == (302, "/status")


def test_head_answers_the_headers_of_get_without_a_body(server: tuple[str, WebServer]) -> None:
    base, _ = server
    got = requests.get(f"{base}/status", timeout=5)
    head = requests.head(f"{base}/status", timeout=5)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["Content-Length"] == got.headers["Content-Length"] == str(len(got.content))


def test_unknown_paths_and_methods_are_json_errors(server: tuple[str, WebServer]) -> None:
    base, _ = server
    missing = requests.get(f"{base}/nope", timeout=5)
    assert (missing.status_code, missing.json()) == (404, {"error": "no such path: /nope"})

    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"):
        answer = requests.request(method, f"{base}/status", timeout=5)
        assert answer.status_code == 405, method
        assert answer.json() == {"error": "only GET and HEAD"}
        assert answer.headers["Allow"] == "GET, HEAD"


def test_a_malformed_request_is_a_json_error_too(server: tuple[str, WebServer]) -> None:
    _, web = server
    with socket.create_connection(web.address, timeout=5) as sock:
        sock.sendall(b"GET /" + b"x" * 70_000 + b" HTTP/1.1\r\n\r\n")
        answer = b"".join(iter(lambda: sock.recv(4096), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 414 ")
    assert b"Content-Type: application/json" in head
    assert json.loads(body) == {"error": "Request-URI Too Long"}


def test_a_failing_status_is_a_500_with_a_reason_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(now: float) -> dict[str, Any]:
        raise RuntimeError("database is locked at /secret/path")

    web = serve(Metrics(), "127.0.0.1:0", broken)
    assert web is not None
    base = "http://{}:{}".format(*web.address)
    try:
        answer = requests.get(f"{base}/status", timeout=5)
        assert answer.status_code == 500
        assert answer.json() == {
            "error": "internal error (RuntimeError); the daemon's log has the details"
        }
        assert "Traceback" not in answer.text and "/secret" not in answer.text
        assert "GET /status failed" in caplog.text
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    finally:
        web.shutdown()


def test_without_a_status_page_only_metrics_and_health_are_served() -> None:
    web = serve(Metrics(), "127.0.0.1:0", None)
    assert web is not None
    base = "http://{}:{}".format(*web.address)
    try:
        for path in ("/status", "/status.json", "/status.atom", "/"):
            answer = requests.get(f"{base}{path}", timeout=5, allow_redirects=False)
            assert answer.status_code == 404, path
            assert "disabled" in answer.json()["error"]
        assert requests.get(f"{base}/metrics", timeout=5).status_code == 200
    finally:
        web.shutdown()


def test_an_empty_listen_serves_nothing() -> None:
    assert serve(Metrics(), "", None) is None


def test_the_server_listens_on_ipv6_and_stops() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    web = serve(Metrics(), "[::1]:0", None)
    assert web is not None
    host, port = web.address
    assert host == "::1"
    assert requests.get(f"http://[::1]:{port}/healthz", timeout=5).text == "ok\n"
    web.shutdown()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://[::1]:{port}/healthz", timeout=5)


def test_requests_are_logged_at_debug_level_not_on_stderr(
    server: tuple[str, WebServer],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    base, _ = server
    with caplog.at_level("DEBUG", logger="monitor.web"):
        requests.get(f"{base}/healthz", timeout=5)
    assert any("GET /healthz" in r.getMessage() and r.levelname == "DEBUG" for r in caplog.records)
    assert "GET /healthz" not in capfd.readouterr().err


# --- the page of a real daemon, in a real browser ------------------------------------------------

# The keys of intranet_down beyond those of http_down, and of its probe: a word the page lacks.
INTRANET_DOWN = """severity = "critical"
service = "intranet"
notify_users = true
"""
WANTED = 'body_regex = "Welcome"\n'

DAEMON_CONFIG = """
[helpdesk]
kind = "builtin"
{intranet}
[[service]]
name = "intranet"
title = "Intranet"
description = "The company portal: news, forms and the phone book."

[status]
title = "ACME service status"
"""


# A service that answers, but not what the probe expects: a script instead.
HOSTILE_PAGE = f"<html><body>{PROBE_OUTPUT}</body></html>".encode()


def daemon_config(url: str) -> str:
    intranet = http_down("intranet", url, INTRANET_DOWN, probe_keys=WANTED)
    return DAEMON_CONFIG.format(intranet=intranet)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """The daemon's base URL; the service it watches answers HOSTILE_PAGE."""
    hostile = text_handler(lambda: HOSTILE_PAGE, "text/html; charset=utf-8")
    with ServiceRig(tmp_path, daemon_config, handler=hostile).running(start=True) as rig:
        yield f"http://127.0.0.1:{rig.daemon.metrics_port}"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_real_browser_shows_the_incident_and_runs_none_of_the_probe_output(
    daemon: str, tmp_path: Path
) -> None:
    def incident_listed() -> list[Any] | None:
        return requests.get(f"{daemon}/status.json", timeout=5).json()["incidents"] or None

    [incident] = wait_until(incident_listed, 20, "the incident on /status.json")
    assert PROBE_OUTPUT in incident["summary"]  # the hostile text did reach the page's data

    with launched() as browser:
        page = browser.new_page(viewport={"width": 375, "height": 812})
        problems = watch_problems(page)
        answer = page.goto(f"{daemon}/status")
        assert answer is not None and answer.status == 200

        assert page.get_by_role("heading", name="ACME service status").is_visible()
        assert page.get_by_role("heading", name="Intranet is unavailable").is_visible()
        assert page.get_by_text("Major outage").first.is_visible()
        page.get_by_text("Technical details").click()  # opens the <details>
        assert page.get_by_text(PROBE_OUTPUT).is_visible()  # shown as text
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.locator("script").count() == 0
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"horizontal scroll on a phone: {width}"
        page.screenshot(path=str(tmp_path / "status-375.png"), full_page=True)
        assert problems == []
