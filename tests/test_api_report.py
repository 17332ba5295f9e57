"""The HTTP API's user reports (POST /api/v1/incidents/{id}/user-reports) and help-desk report
(GET /api/v1/report), on the daemon's real HTTP server over loopback, on a state store that the
real engine and dispatcher fill. Time is passed as `now`: the API's clock is the rig's."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from api_rig import AUTH, TOKEN, WEB_DOWN, ApiRig, error_of

from monitor.api_config import ApiConfig
from notifiers.builtin import BuiltinTickets
from probes.base import Sample

REPO = Path(__file__).parent.parent
T0 = 1_800_000_000.0  # Friday 2027-01-15 08:00 UTC
MINUTE, DAY = 60.0, 86_400.0
INTRANET = "http://intranet/"
WIKI = "http://wiki/"

# No escalation policy and no audience: an episode is tier-1 unless a person or a recurrence
# says otherwise, and the only deliveries are the ticket's.
CONFIG = (
    WEB_DOWN
    + """
[[probe]]
name = "flaky"
kind = "http"
url = "http://127.0.0.1:9/"

[[rule]]
name = "flaky_down"
probe = "flaky"
metric = "http_up"
condition = "value == 0"
for = "10s"
"""
)


class Rig(ApiRig):
    """The engine and dispatcher on one state store, and the API served on port 0."""

    def __init__(self, tmp: Path, settings: ApiConfig) -> None:
        super().__init__(tmp, CONFIG, settings, T0)

    def sample(self, probe: str, url: str, up: float, now: float) -> None:
        """The probe's sample at `now`, a tick of the daemon, and a delivery pass."""
        self.now = now
        labels = {"url": url, "probe": probe}
        self.engine.process([Sample("http_up", float(up), now, labels)], now)
        self.tick(now)

    def user_reports(self) -> list[dict[str, Any]]:
        rows = self.store.query(
            "SELECT id, incident_id, at, detail FROM event WHERE kind = ?", ("user_report",)
        )
        return [dict(row) | {"detail": json.loads(row["detail"])} for row in rows]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path, ApiConfig(token=TOKEN))
    yield rig
    rig.close()


@pytest.fixture(scope="module")
def one_incident(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A rig with incident 1 open (the intranet is down since T0) and its ticket created."""
    rig = Rig(tmp_path_factory.mktemp("one"), ApiConfig(token=TOKEN))
    rig.sample("web", INTRANET, 0, T0)
    assert [tuple(row) for row in rig.store.query("SELECT id, status FROM incident")] == [
        (1, "open")
    ]
    yield rig
    rig.close()


@pytest.fixture
def away_from_utc() -> Iterator[None]:
    """Local time five hours behind UTC: a time without a zone read as local would show."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "XST+05"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def schema_check(document_schema: str, value: Any) -> None:
    """`value` is what monitor/openapi.json says the answer is."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema")
    document = json.loads((REPO / "monitor" / "openapi.json").read_text())
    root = {"components": document["components"], "$ref": f"#/components/schemas/{document_schema}"}
    jsonschema.Draft202012Validator(root).validate(value)


# --- user reports --------------------------------------------------------------------------


def test_a_user_report_is_an_event_and_a_comment_on_the_ticket(rig: Rig) -> None:
    rig.sample("web", INTRANET, 0, T0)
    rig.now = T0 + 5 * MINUTE
    body = {"by": "ana (accounting)", "at": T0 + MINUTE, "note": "the intranet shows a 502"}
    answer = rig.post("/incidents/1/user-reports", body)

    assert answer.status_code == 201, answer.text
    recorded = answer.json()
    assert recorded == {"incident": 1, "event": recorded["event"], "reported_at": T0 + MINUTE}
    schema_check("UserReportRecorded", recorded)
    assert rig.user_reports() == [
        {
            "id": recorded["event"],
            "incident_id": 1,
            "at": T0 + 5 * MINUTE,
            "detail": {
                "by": "ana (accounting)",
                "reported_at": T0 + MINUTE,
                "note": "the intranet shows a 502",
                "source": "api",
            },
        }
    ]
    [comment] = rig.store.query(
        "SELECT key, payload FROM outbox WHERE incident_id = 1 AND op = 'ticket.comment'"
    )
    assert comment["key"] == f"incident:1:event:{recorded['event']}:ticket.comment"
    text = json.loads(comment["payload"])["text"]
    assert text.startswith("Reported by a user: ana (accounting), at ")
    assert text.endswith(".\n\nthe intranet shows a 502")
    assert rig.woken == 1  # the dispatcher is told: a comment waits in the outbox

    rig.dispatcher.run_once()
    assert BuiltinTickets(str(rig.store.path)).show("1").comments[-1].text == text
    shown = rig.get("/incidents/1").json()["events"]
    assert ("user_report", "ana (accounting)") in [
        (e["kind"], e["detail"].get("by")) for e in shown
    ]


@pytest.mark.parametrize(
    ("at", "reported_at"),
    [
        (T0 - 600, T0 - 600),
        (1_799_990_000, 1_799_990_000.0),
        ("2027-01-15T07:30:00Z", T0 - 30 * MINUTE),
        ("2027-01-15T09:45+02:00", T0 - 15 * MINUTE),
        ("2027-01-15T07:50", T0 - 10 * MINUTE),  # no zone: UTC, whatever the local time is
        ("2027-01-15 07:55:30", T0 - 270),
        (None, T0 + DAY),  # left out: now
    ],
)
def test_the_moment_of_a_report_is_epoch_seconds_or_iso_8601_utc_unless_it_says(
    one_incident: Rig, away_from_utc: None, at: Any, reported_at: float
) -> None:
    rig = one_incident
    rig.now = T0 + DAY
    body = {"by": "bob"} | ({} if at is None else {"at": at})
    answer = rig.post("/incidents/1/user-reports", body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["reported_at"] == reported_at
    [event] = [e for e in rig.user_reports() if e["id"] == answer.json()["event"]]
    assert event["detail"] == {"by": "bob", "reported_at": reported_at, "note": "", "source": "api"}


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """For the tests whose requests are all refused: they record nothing, wake nobody."""
    rig = Rig(tmp_path_factory.mktemp("refusing"), ApiConfig(token=TOKEN))
    rig.sample("web", INTRANET, 0, T0)
    rig.now = T0 + MINUTE
    yield rig
    assert rig.woken == 0
    assert rig.user_reports() == []
    rig.close()


@pytest.mark.parametrize(
    ("body", "status", "reason", "field"),
    [
        ([{"by": "ana"}], 422, "the body must be a JSON object", ""),
        ({"note": "slow"}, 422, "by: required", "by"),
        ({"by": " "}, 422, "by: must not be blank", "by"),
        ({"by": 7}, 422, "by: expected a string", "by"),
        ({"by": "x" * 201}, 422, "by: longer than 200 characters", "by"),
        ({"by": "a\x00b"}, 422, "by: holds control characters", "by"),
        ({"by": "ana", "note": "x" * 2001}, 422, "note: longer than 2000 characters", "note"),
        ({"by": "ana", "note": 3}, 422, "note: expected a string", "note"),
        ({"by": "ana", "at": T0 + 3600}, 422, "at: must not be in the future", "at"),
        ({"by": "ana", "at": "2027-01-15T10:00Z"}, 422, "at: must not be in the future", "at"),
        ({"by": "ana", "at": "2027-01-15T09:00+00:30"}, 422, "at: must not be in the future", "at"),
        ({"by": "ana", "at": "yesterday"}, 422, "at: 'yesterday' is not a time", "at"),
        ({"by": "ana", "at": True}, 422, "at: expected epoch seconds or an ISO 8601 time", "at"),
        ({"by": "ana", "at": 1e300}, 422, "at: expected epoch seconds or an ISO 8601 time", "at"),
        ({"by": "ana", "who": "x"}, 422, "who: unknown field; known fields: at, by, note", "who"),
    ],
)
def test_a_user_report_that_is_not_valid_is_refused_naming_the_field(
    refusing: Rig, body: Any, status: int, reason: str, field: str
) -> None:
    answer = refusing.post("/incidents/1/user-reports", body)
    assert error_of(answer, status).startswith(reason)
    assert answer.json()["field"] == field


def test_a_user_report_needs_the_token_json_and_an_incident(refusing: Rig) -> None:
    rig = refusing
    url = f"{rig.base}/incidents/1/user-reports"
    missing = requests.post(url, json={"by": "ana"}, timeout=5)
    assert "send Authorization: Bearer <token>" in error_of(missing, 401)
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = rig.post(
        "/incidents/1/user-reports", {"by": "ana"}, headers={"Authorization": "Bearer nope"}
    )
    assert error_of(wrong, 403) == "wrong token"

    headers = AUTH | {"Content-Type": "application/json"}
    broken = requests.post(url, data=b'{"by": "ana"', headers=headers, timeout=5)
    assert error_of(broken, 400).startswith("malformed JSON: Expecting ',' delimiter")
    as_text = requests.post(
        url, data=b"{}", headers=AUTH | {"Content-Type": "text/plain"}, timeout=5
    )
    assert "application/json" in error_of(as_text, 415)

    assert error_of(rig.post("/incidents/99/user-reports", {"by": "ana"}), 404) == "no incident 99"
    assert "whole numbers" in error_of(rig.post("/incidents/x/user-reports", {"by": "ana"}), 404)
    listing = rig.get("/incidents/1/user-reports")
    assert "GET is not allowed" in error_of(listing, 405)
    assert listing.headers["Allow"] == "POST"


def test_without_a_token_user_reports_are_disabled(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ApiConfig())
    try:
        refused = rig.post("/incidents/1/user-reports", {"by": "ana"})
        assert error_of(refused, 403) == "writes are disabled: no [api] token"
    finally:
        rig.close()


# --- the report ----------------------------------------------------------------------------


def outage_with_a_user_report(rig: Rig) -> None:
    """Incident 1: the wiki down 40 days ago for a minute. Incident 2: the intranet down at T0,
    its ticket made at +2 s, acknowledged at +30 s, reported by a user who saw it at +45 s,
    resolved by forewarn at +90 s."""
    rig.sample("web", WIKI, 0, T0 - 40 * DAY)
    rig.sample("web", WIKI, 1, T0 - 40 * DAY + MINUTE)
    rig.engine.process([Sample("http_up", 0.0, T0, {"url": INTRANET, "probe": "web"})], T0)
    rig.engine.tick(T0)
    rig.now = T0 + 2
    assert rig.dispatcher.run_once() == 1  # the ticket
    rig.now = T0 + 30
    assert rig.post("/incidents/2/ack", {"by": "ana"}).status_code == 200
    rig.now = T0 + 60
    answer = rig.post("/incidents/2/user-reports", {"by": "carl", "at": T0 + 45})
    assert answer.status_code == 201, answer.text
    rig.sample("web", INTRANET, 1, T0 + 90)
    rig.now = T0 + 100


def test_the_report_has_the_figures_of_the_window(rig: Rig) -> None:
    outage_with_a_user_report(rig)
    answer = rig.get("/report", params={"since": "30d"})

    assert answer.status_code == 200, answer.text
    report = answer.json()
    schema_check("Report", report)
    assert (report["since"], report["until"]) == (T0 + 100 - 30 * DAY, T0 + 100)
    rates, times = report["rates"], report["times"]
    assert (rates["incidents"], rates["resolved"], rates["auto_resolved"], rates["tier1"]) == (
        1,
        1,
        1,
        1,
    )
    assert (rates["escalated"], rates["open"], rates["recurrences"]) == (0, 0, 0)
    assert times["detect"]["median"] == 0
    assert times["ticket"]["median"] == 2
    assert times["acknowledge"]["median"] == 30
    assert times["resolve"]["median"] == 90
    assert times["first_notice"] == {
        "count": 0, "mean": None, "median": None, "p90": None, "min": None, "max": None, "total": 0
    }  # fmt: skip
    assert report["proactive"]["user_lead"]["median"] == 45
    headline = report["headline"]
    assert headline["tier-1 resolution"] == "1 of 1 (100 %)"
    assert headline["median time to acknowledge"] == "30 s"
    assert headline["median time to ticket"] == "2.00 s"
    assert headline["user-reported"] == "1"
    assert headline["detected before the user"] == "1 of 1 (100 %)"
    assert headline["median lead on users"] == "45 s"
    assert [(b["key"], b["rates"]["incidents"]) for b in report["by_rule"]] == [("web_down", 1)]
    assert [(b["key"], b["rates"]["incidents"]) for b in report["by_service"]] == [("intranet", 1)]
    assert [w["key"] for w in report["weeks"]][-1] == "2027-01-11"  # the Monday of T0's week
    assert report["suggestions"] == [] and "episodes" not in report
    assert rig.woken == 2  # the acknowledgement and the user report; reads wake nobody


def test_the_report_window_starts_at_a_date_and_can_list_its_episodes(rig: Rig) -> None:
    outage_with_a_user_report(rig)
    # 40 days before T0 is 2026-12-06 08:00 UTC: midnight includes the wiki's outage...
    both = rig.get("/report", params={"since": "2026-12-06", "episodes": "true"}).json()
    schema_check("Report", both)
    assert both["since"] == T0 - 40 * DAY - 8 * 3600
    assert both["rates"]["incidents"] == 2
    assert [
        (e["incident_id"], e["opened_at"], e["ticket_at"], e["acknowledged_by"], e["user_reports"])
        for e in both["episodes"]
    ] == [(1, T0 - 40 * DAY, T0 - 40 * DAY, None, []), (2, T0, T0 + 2, "ana", [T0 + 45])]
    assert both["times"]["resolve"]["median"] == (60 + 90) / 2
    # ...and 09:00 (UTC, as it names no zone) leaves it out.
    later = rig.get("/report", params={"since": "2026-12-06T09:00"}).json()
    assert later["rates"]["incidents"] == 1
    assert rig.get("/report").json()["since"] == T0 + 100 - 30 * DAY  # 30 days by default


def test_the_report_suggests_changes_from_the_running_rules(rig: Rig) -> None:
    # Three blips of flaky_down (for = 10s), gone 20, 40 and 100 s after they fired: held
    # with `for` that is 30, 50 and 110 s, whose 90th percentile (98 s) rounds up to 2 minutes.
    for number, (start, lasted) in enumerate([(T0, 20), (T0 + 600, 40), (T0 + 1200, 100)]):
        url = f"http://flaky-{number}/"
        rig.sample("flaky", url, 0, start)
        rig.sample("flaky", url, 0, start + 10)
        rig.sample("flaky", url, 1, start + 10 + lasted)
    rig.now = T0 + 2000
    report = rig.get("/report", params={"since": "1h"}).json()
    assert report["rates"]["incidents"] == 3
    [noise] = report["noise"]
    assert (noise["rule"], noise["blips"], noise["noise_share"]) == ("flaky_down", 3, 1.0)
    assert [(s["setting"], s["current"], s["value"]) for s in noise["suggestions"]] == [
        ("for", 10, 120)
    ]
    assert report["suggestions"] == [
        "flaky_down: raise `for` from 10s to 2m: 3 of 3 tickets were blips that ended sooner; "
        "real problems would be reported 1m50s later"
    ]


@pytest.mark.parametrize(
    ("query", "reason", "field"),
    [
        ({"since": "last month"}, "since: 'last month' is not a duration back from now", "since"),
        ({"since": ""}, "since: '' is not a duration back from now", "since"),
        ({"since": "-5d"}, "since: '-5d' is not a duration back from now", "since"),
        (
            {"since": "99999999999999999999d"},
            "since: '99999999999999999999d' reaches back before the calendar",
            "since",
        ),
        ({"since": "2027-02-01"}, "since: '2027-02-01' is in the future", "since"),
        ({"episodes": "yes"}, "episodes: 'yes' is not true or false", "episodes"),
        (
            {"from": "30d"},
            "from: unknown query parameter; this path takes: episodes, since",
            "from",
        ),
    ],
)
def test_a_report_query_that_is_not_valid_is_refused_naming_the_parameter(
    refusing: Rig, query: dict[str, str], reason: str, field: str
) -> None:
    answer = refusing.get("/report", params=query)
    assert error_of(answer, 422).startswith(reason)
    assert answer.json()["field"] == field


def test_the_report_needs_the_token_only_where_reads_do(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ApiConfig(token=TOKEN, read_requires_token=True))
    try:
        assert "Bearer" in error_of(rig.get("/report"), 401)
        assert rig.get("/report", headers=AUTH).json()["rates"]["incidents"] == 0
    finally:
        rig.close()
