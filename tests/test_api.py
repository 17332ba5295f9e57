"""The HTTP API (/api/v1) on the daemon's real HTTP server, over loopback, on a real state store
that the real engine, communicator and dispatcher fill. Time is passed as `now` (the API's
clock is the rig's); one test runs the whole daemon to see the API wired into it.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from api_rig import AUTH, TOKEN, ApiRig, error_of
from comms_parts import HEAD, audience, escalation, step, web_down
from daemon_process import DaemonProcess, daemon_head
from http_service import free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor import api as api_module
from monitor.alertmanager import receive
from monitor.api import ENDPOINTS
from monitor.api_config import ApiConfig
from monitor.config import ConfigError, parse_config
from notifiers.builtin import BuiltinTickets
from probes.base import Sample

REPO = Path(__file__).parent.parent
T0 = 1_800_000_000.0  # Friday 2027-01-15 08:00 UTC
MINUTE = 60.0
INTRANET = "http://intranet/"
WIKI = "http://wiki/"

CONFIG = (
    HEAD
    + web_down('service = "intranet"', "notify_users = true", 'escalation = "oncall"')
    + audience("office", "intranet", "office@example.com")
    + escalation("oncall")
    + step("0s", "tier1@example.com")
    + step("30m", "tier2@example.com")
)


class Rig(ApiRig):
    """The daemon's deciding parts on one state store, and the API served on port 0."""

    def __init__(self, tmp: Path, api: ApiConfig) -> None:
        super().__init__(tmp, CONFIG, api, T0)

    def web(self, up: float, url: str, now: float, *more_urls: str) -> None:
        """The probe's samples at `now`, then a tick of the daemon and a delivery pass."""
        self.now = now
        labels = [{"url": one, "probe": "web"} for one in (url, *more_urls)]
        self.engine.process([Sample("http_up", float(up), now, each) for each in labels], now)
        self.tick(now)

    def events(self, incident_id: int) -> list[tuple[str, dict[str, Any]]]:
        rows = self.store.query(
            "SELECT kind, detail FROM event WHERE incident_id = ? ORDER BY id", (incident_id,)
        )
        return [(r["kind"], json.loads(r["detail"])) for r in rows]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path, ApiConfig(token=TOKEN))
    yield rig
    rig.close()


@pytest.fixture(scope="module")
def unchanged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """One rig for the tests whose requests are all refused: they change nothing."""
    rig = Rig(tmp_path_factory.mktemp("unchanged"), ApiConfig(token=TOKEN))
    yield rig
    assert rig.woken == 0
    rig.close()


# --- reads ---------------------------------------------------------------------------------


def test_every_read_shows_what_the_daemon_recorded(rig: Rig) -> None:
    health = rig.get("/health").json()
    assert health["ok"] is True and health["probes_stale"] == []
    assert health["version"] and health["uptime_seconds"] >= 0
    assert health["outbox"] == {
        "pending": 0, "oldest_pending_seconds": 0, "dead": 0, "failed_last_24h": 0
    }  # fmt: skip
    rig.web(0, INTRANET, T0)
    rig.web(0, WIKI, T0 + MINUTE)
    silence = rig.post(
        "/silences",
        {"matchers": ['url="http://other/"'], "duration": "1h", "author": "ana", "comment": "x"},
    )
    assert silence.status_code == 201

    # This rig has no mail server: the notices and escalation mails failed for good.
    health = rig.get("/health").json()
    assert health["ok"] is False
    assert (health["outbox"]["dead"], health["outbox"]["failed_last_24h"]) == (4, 4)

    alerts = rig.get("/alerts").json()["alerts"]
    assert sorted((a["rule"], a["labels"]["url"], a["state"]) for a in alerts) == [
        ("web_down", INTRANET, "firing"),
        ("web_down", WIKI, "firing"),
    ]
    assert rig.get("/alerts", params={"state": "pending"}).json() == {"alerts": []}

    incidents = rig.get("/incidents").json()["incidents"]
    assert [(i["id"], i["status"], i["severity"]) for i in incidents] == [
        (2, "open", "warning"),
        (1, "open", "warning"),
    ]
    assert incidents[1]["ticket"] == "#1" and incidents[1]["labels"]["url"] == INTRANET
    assert rig.get("/incidents", params={"status": "resolved"}).json() == {"incidents": []}
    assert (
        len(rig.get("/incidents", params={"limit": "1", "status": "all"}).json()["incidents"]) == 1
    )

    one = rig.get("/incidents/1").json()
    assert one["summary"] == incidents[1]["summary"]
    assert one["events"][0]["kind"] == "opened"
    assert [(a["rule"], a["status"]) for a in one["alerts"]] == [("web_down", "firing")]
    assert [(n["audience"], n["kind"]) for n in one["notices"]] == [("office", "investigating")]
    assert [(s["step"], s["policy"], s["urgent"]) for s in one["escalations"]] == [
        (0, "oncall", False)
    ]

    tickets = rig.get("/tickets").json()["tickets"]
    assert [(t["incident_id"], t["backend"], t["incident_status"]) for t in tickets] == [
        (2, "builtin", "open"),
        (1, "builtin", "open"),
    ]
    assert tickets[1]["number"] == "#1" and tickets[1]["marker"].startswith("[forewarn:")

    [listed] = rig.get("/silences").json()["silences"]
    assert listed == silence.json() and listed["status"] == "active"
    assert rig.get(f"/silences/{listed['id']}").json() == listed

    document = rig.get("/openapi.json")
    assert document.json() == json.loads((REPO / "monitor" / "openapi.json").read_text())
    assert rig.woken == 1  # the one write


def test_unknown_paths_methods_and_parameters_are_json_errors(unchanged: Rig) -> None:
    rig = unchanged
    assert "no such path" in error_of(rig.get("/nothing"), 404)
    assert "no incident 9" in error_of(rig.get("/incidents/9"), 404)
    assert "whole numbers" in error_of(rig.get("/incidents/abc"), 404)
    assert error_of(rig.get(f"/incidents/{2**70}"), 404) == f"no incident {2**70}"
    wrong = requests.put(f"{rig.base}/silences", timeout=5)
    assert "PUT is not allowed" in error_of(wrong, 405)
    assert wrong.headers["Allow"] == "GET, HEAD, POST"
    assert requests.head(f"{rig.base}/health", timeout=5).status_code == 200
    problem = rig.get("/incidents", params={"status": "closed"})
    assert error_of(problem, 422).startswith("status: 'closed' is not one of open, resolved")
    assert problem.json()["field"] == "status"
    assert error_of(rig.get("/alerts", params={"stat": "x"}), 422).startswith("stat: unknown")
    assert error_of(rig.get("/incidents", params={"limit": "0"}), 422).startswith("limit:")
    assert error_of(rig.get("/silences", params={"all": "maybe"}), 422).startswith("all:")


def test_an_unexpected_error_is_a_500_naming_only_its_type(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ApiConfig(token=TOKEN))

    def broken(now: float) -> list[str]:
        raise RuntimeError("secret internals /etc/forewarn")

    rig.api.stale_probes = broken
    try:
        answer = rig.get("/health")
    finally:
        rig.close()
    reason = error_of(answer, 500)
    assert "RuntimeError" in reason and "secret internals" not in answer.text
    assert "Traceback" not in answer.text


# --- the token -----------------------------------------------------------------------------


def test_writes_need_the_right_token(rig: Rig) -> None:
    ack = {"by": "ana"}
    missing = requests.post(f"{rig.base}/incidents/1/ack", json=ack, timeout=5)
    assert "Bearer" in error_of(missing, 401)
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    basic = rig.post("/incidents/1/ack", ack, headers={"Authorization": "Basic YW5hOnB3"})
    assert "Bearer <token>" in error_of(basic, 401)
    wrong = rig.post("/incidents/1/ack", ack, headers={"Authorization": f"Bearer {TOKEN}x"})
    assert error_of(wrong, 403) == "wrong token"
    assert rig.woken == 0
    # The right token gets as far as the incident, which does not exist.
    assert error_of(rig.post("/incidents/1/ack", ack), 404) == "no incident 1"
    # Reads are open by default.
    assert rig.get("/incidents").status_code == 200


def test_without_a_token_writes_are_disabled(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ApiConfig())
    try:
        refused = rig.post("/silences", {"matchers": ['rule="x"']})
        assert error_of(refused, 403) == "writes are disabled: no [api] token"
        assert error_of(rig.delete("/silences/1"), 403) == "writes are disabled: no [api] token"
        assert rig.get("/silences").status_code == 200
    finally:
        rig.close()


def test_reads_can_require_the_token_too(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ApiConfig(token=TOKEN, read_requires_token=True))
    try:
        assert error_of(rig.get("/health"), 401)
        assert error_of(rig.get("/health", headers={"Authorization": "Bearer nope"}), 403)
        assert rig.get("/health", headers=AUTH).status_code == 200
    finally:
        rig.close()


# --- bodies --------------------------------------------------------------------------------


def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send exactly these bytes (headers that need not tell the truth) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    header_text, _, content = rest.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in header_text.decode().split("\r\n"))
    return int(status_line.split()[1]), headers, content


def test_a_body_trickling_in_is_cut_off(unchanged: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_module, "BODY_SECONDS", 0.2)
    head = (
        "POST /api/v1/silences HTTP/1.0\nContent-Type: application/json\nContent-Length: 10\n"
        f"Authorization: Bearer {TOKEN}\n\n"
    )
    with socket.create_connection(("127.0.0.1", unchanged.server.address[1]), timeout=5) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b'{"a"')
        time.sleep(0.3)  # a slow client, for real: longer than the time a body may take
        sock.sendall(b": 1")
        answer = sock.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.0 408 ")
    assert b'{"error": "the body did not arrive in time"}' in answer


def test_an_oversized_body_is_refused_before_it_is_read(rig: Rig) -> None:
    port = rig.server.address[1]
    head = (
        "POST /api/v1/silences HTTP/1.1\nHost: x\nContent-Type: application/json\n"
        f"Authorization: Bearer {TOKEN}\nContent-Length: {1024 * 1024 + 1}\n"
    )
    status, headers, content = raw_request(port, head)  # no body sent at all: none is awaited
    assert status == 413 and headers["Content-Type"] == "application/json"
    assert "at most 1048576" in json.loads(content)["error"]
    # A client that does send the whole body still gets the answer, not a reset connection.
    big = b'{"comment": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    sent = requests.post(
        f"{rig.base}/silences",
        data=big,
        headers=AUTH | {"Content-Type": "application/json"},
        timeout=10,
    )
    assert "[api] max_body" in error_of(sent, 413)


def test_a_body_must_be_json_of_the_right_shape(unchanged: Rig) -> None:
    rig = unchanged
    port = rig.server.address[1]
    headers = AUTH | {"Content-Type": "application/json"}
    broken = requests.post(f"{rig.base}/silences", data=b'{"by": ', headers=headers, timeout=5)
    assert error_of(broken, 400).startswith("malformed JSON: Expecting value: line 1 column 8")
    not_utf8 = requests.post(f"{rig.base}/silences", data=b'"\xff"', headers=headers, timeout=5)
    assert "not UTF-8" in error_of(not_utf8, 400)
    nan = requests.post(f"{rig.base}/silences", data=b"[NaN]", headers=headers, timeout=5)
    assert "NaN is not a JSON number" in error_of(nan, 400)
    deep = requests.post(f"{rig.base}/silences", data=b"[" * 100_000, headers=headers, timeout=5)
    assert error_of(deep, 400).startswith("malformed JSON")
    text = requests.post(
        f"{rig.base}/silences", data=b"{}", headers=AUTH | {"Content-Type": "text/plain"}, timeout=5
    )
    assert "application/json" in error_of(text, 415)
    head = "POST /api/v1/silences HTTP/1.0\nContent-Type: application/json\n"
    head += f"Authorization: Bearer {TOKEN}\n"
    status, _, content = raw_request(port, head)
    assert status == 411 and "Content-Length" in json.loads(content)["error"]

    head = "POST /api/v1/silences HTTP/1.0\nContent-Type: application/json\nContent-Length: 10\n"
    status, _, content = raw_request(port, head + f"Authorization: Bearer {TOKEN}\n", b'{"a"')
    assert (status, json.loads(content)["error"]) == (400, "the body ended after 4 of 10 bytes")

    assert error_of(rig.post("/incidents/1/ack", ["ana"]), 422) == "the body must be a JSON object"
    unknown = rig.post("/incidents/1/ack", {"by": "ana", "who": "ana"})
    assert error_of(unknown, 422).startswith("who: unknown field")
    assert unknown.json()["field"] == "who"
    missing = rig.post("/incidents/1/ack", {"comment": "mine"})
    assert (error_of(missing, 422), missing.json()["field"]) == ("by: required", "by")
    assert error_of(rig.post("/incidents/1/ack", {"by": 7}), 422) == "by: expected a string"
    assert error_of(rig.post("/incidents/1/ack", {"by": "a\x00b"}), 422).startswith("by: holds")


# --- writes --------------------------------------------------------------------------------


def test_an_acknowledgement_stops_the_escalation(rig: Rig) -> None:
    rig.web(0, INTRANET, T0)
    rig.web(0, WIKI, T0)
    answer = rig.post("/incidents/1/ack", {"by": "ana", "comment": "on it, rebooting"})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["acknowledged_at"], answer.json()["acknowledged_by"]) == (T0, "ana")
    assert ("acknowledged", {"by": "ana", "comment": "on it, rebooting"}) in rig.events(1)
    comments = rig.store.query(
        "SELECT payload FROM outbox WHERE incident_id = 1 AND op = 'ticket.comment'"
    )
    texts = [json.loads(row["payload"]).get("text", "") for row in comments]
    assert "Acknowledged by ana.\n\non it, rebooting" in texts
    assert rig.woken == 1

    rig.web(0, INTRANET, T0 + 31 * MINUTE, WIKI)  # the second step is due for both incidents
    fired = rig.store.query("SELECT incident_id, step FROM escalation_fired ORDER BY 1, 2")
    assert [tuple(r) for r in fired] == [(1, 0), (2, 0), (2, 1)]  # none for the acknowledged one
    again = rig.post("/incidents/1/ack", {"by": "bob"})
    assert error_of(again, 409) == "incident 1 was already acknowledged by ana"


def test_a_silence_added_mutes_and_expired_ends(rig: Rig) -> None:
    body = {
        "matchers": ['rule="web_down"', f'url="{WIKI}"'],
        "duration": "2h",
        "author": "ana",
        "comment": "wiki migration",
    }
    added = rig.post("/silences", body)
    assert added.status_code == 201, added.text
    silence = added.json()
    assert added.headers["Location"] == f"/api/v1/silences/{silence['id']}"
    assert (silence["starts_at"], silence["ends_at"], silence["status"]) == (
        T0,
        T0 + 7200,
        "active",
    )

    rig.tick(T0 + 1)  # the daemon reads the silences at every tick
    rig.web(0, WIKI, T0 + MINUTE)
    [incident] = rig.store.query("SELECT muted FROM incident")
    assert incident["muted"] == 1

    rig.now = T0 + 3 * MINUTE
    expired = rig.delete(f"/silences/{silence['id']}", json={"by": "bob"})
    assert expired.status_code == 200, expired.text
    assert (expired.json()["status"], expired.json()["ends_at"]) == ("expired", rig.now)
    assert "already ended" in error_of(rig.delete(f"/silences/{silence['id']}"), 409)
    assert rig.get("/silences").json() == {"silences": []}
    assert [s["id"] for s in rig.get("/silences", params={"all": "true"}).json()["silences"]] == [
        silence["id"]
    ]
    kinds = rig.store.query("SELECT kind, detail FROM event WHERE incident_id IS NULL")
    assert [(k["kind"], json.loads(k["detail"]).get("by")) for k in kinds] == [
        ("silence_added", None),
        ("silence_expired", "bob"),
    ]
    assert error_of(rig.delete("/silences/99"), 404) == "no silence 99"


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"ends_at": T0 + 60}, "duration", "give either duration or ends_at"),
        ({"duration": None}, "duration", "give either duration or ends_at"),
        ({"duration": True}, "duration", "expected a duration"),
        ({"duration": "2 hours"}, "duration", "is not a duration"),
        ({"duration": "0s"}, "duration", "must last some time"),
        ({"duration": None, "ends_at": T0 - 60}, "ends_at", "would end in the past"),
        ({"duration": None, "ends_at": "tomorrow"}, "ends_at", "is not a time"),
        ({"starts_at": 1e300}, "starts_at", "expected epoch seconds"),
        ({"matchers": ['rule=~".*"']}, "matchers", "every alert"),
        ({"matchers": ["rule"]}, "matchers", "expected name, operator"),
        ({"matchers": []}, "matchers", "expected a list of matchers"),
        ({"matchers": ["x=~" + "(" * 2000 + ")" * 2000]}, "matchers", "nested too deeply"),
        ({"matchers": ["x" * 5000]}, "matchers[0]", "longer than 4096 characters"),
        ({"comment": " "}, "comment", "must not be blank"),
    ],
)
def test_a_silence_that_would_not_work_is_refused(
    unchanged: Rig, change: dict[str, Any], field: str, says: str
) -> None:
    rig = unchanged
    body = {"matchers": ['rule="web_down"'], "duration": "1h", "author": "ana", "comment": "c"}
    body = {key: value for key, value in (body | change).items() if value is not None}
    refused = rig.post("/silences", body)
    assert says in error_of(refused, 422)
    assert refused.json()["field"] == field
    assert rig.store.query("SELECT COUNT(*) FROM silence")[0][0] == 0


def test_resolving_by_hand_resolves_the_incident_and_its_ticket(rig: Rig) -> None:
    rig.web(0, INTRANET, T0)
    tickets = BuiltinTickets(str(rig.store.path))
    assert tickets.show("1").status == "new"

    rig.now = T0 + 10 * MINUTE
    refused = rig.post("/incidents/1/resolve", {"by": "ana"})
    assert '"force": true' in error_of(refused, 409)  # its alert still fires
    body = {"by": "ana", "comment": "replaced the switch", "force": True}
    resolved = rig.post("/incidents/1/resolve", body)
    assert resolved.status_code == 200, resolved.text
    incident = resolved.json()
    assert (incident["status"], incident["resolved_at"]) == ("resolved", rig.now)
    assert incident["acknowledged_by"] == "ana"  # a person took it: escalation is over too
    assert [a["status"] for a in incident["alerts"]] == ["resolved"]
    kinds = [(kind, detail.get("by")) for kind, detail in rig.events(1)]
    assert kinds[-2:] == [("acknowledged", "ana"), ("resolved", "ana")]
    assert rig.events(1)[-1][1]["lasted"] == 10 * MINUTE

    rig.tick(rig.now)  # the dispatcher resolves the ticket from the outbox
    ticket = tickets.show("1")
    assert ticket.status == "resolved"
    assert "replaced the switch" in ticket.comments[-1].text
    assert error_of(rig.post("/incidents/1/resolve", body), 409) == "incident 1 is resolved already"
    assert error_of(rig.post("/incidents/7/resolve", body), 404) == "no incident 7"


def test_the_alertmanager_webhook_goes_to_the_receiver_the_daemon_registers(rig: Rig) -> None:
    payload = {"version": "4", "status": "firing", "alerts": []}
    assert "receiver is not running" in error_of(rig.post("/alertmanager", payload), 503)

    got: list[dict[str, Any]] = []

    def sink(body: dict[str, Any]) -> dict[str, int]:
        got.append(body)
        if body.get("version") != "4":
            raise ValueError("version: expected 4")
        return {"firing": 0, "resolved": 0}

    rig.api.alertmanager_sink = sink
    assert rig.post("/alertmanager", payload).json() == {"firing": 0, "resolved": 0}
    refused = rig.post("/alertmanager", {"version": "3"})
    assert error_of(refused, 422) == "version: expected 4"
    assert got == [payload, {"version": "3"}]


# --- the OpenAPI document ------------------------------------------------------------------


def test_the_openapi_document_describes_every_route_and_no_other() -> None:
    document = json.loads((REPO / "monitor" / "openapi.json").read_text())
    described = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in ("get", "post", "put", "delete", "patch")
    }
    assert described == {(e.method, e.template) for e in ENDPOINTS}
    for endpoint in ENDPOINTS:
        operation = document["paths"][endpoint.template][endpoint.method.lower()]
        parameters = {p.get("name") or p["$ref"].rsplit("/", 1)[1] for p in operation["parameters"]}
        assert parameters - {"id"} == set(endpoint.query), endpoint.template
    validator = pytest.importorskip("openapi_spec_validator", reason="openapi-spec-validator")
    validator.validate(document)


# --- configuration -------------------------------------------------------------------------


def test_the_api_section_reads_the_token_from_a_credentials_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "api-token").write_text(TOKEN + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    text = '[api]\ntoken = { file = "api-token" }\nmax_body = 4096\n'
    config = parse_config(text, str(tmp_path / "config.toml"))
    assert (config.api.token, config.api.max_body) == (TOKEN, 4096)
    assert TOKEN not in repr(config.api)
    assert parse_config("", str(tmp_path / "c.toml")).api == ApiConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[api]\ntoken = "in-the-file-0123456789"', "api.token: write secrets as"),
        ('[api]\ntoken = { env = "FOREWARN_TEST_API_TOKEN" }', "api.token: shorter than 16"),
        ("[api]\nread_requires_token = true", "api: read_requires_token = true needs a token"),
        ("[api]\nmax_body = 10", "api.max_body: 10 is out of range"),
        ("[api]\ntokn = 1", "api.tokn: unknown key (did you mean token?)"),
    ],
)
def test_a_bad_api_section_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    monkeypatch.setenv("FOREWARN_TEST_API_TOKEN", "s3cr3t")
    with pytest.raises(ConfigError) as raised:
        parse_config(text, str(tmp_path / "config.toml"))
    assert any(error.startswith(message) for error in raised.value.errors), raised.value.errors
    assert "s3cr3t" not in str(raised.value.errors)


def test_the_example_config_documents_every_api_key() -> None:
    text = (REPO / "config.toml").read_text()
    section = text[text.index("\n[api]\n") :].split("\n[", 2)[1]
    written = set(tomllib.loads("[" + section)["api"])
    commented = set(re.findall(r"^# ?(\w+) = ", section, re.MULTILINE))
    assert written | commented == {"token", "read_requires_token", "max_body"}


# --- the daemon ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_the_daemon_serves_the_api_with_its_token_from_systemd_credentials(
    tmp_path: Path,
) -> None:
    port = free_port()
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "api-token").write_text(TOKEN)
    config = tmp_path / "config.toml"
    config.write_text(
        daemon_head(tmp_path / "state", port) + '[api]\ntoken = { file = "api-token" }\n'
    )
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path / "credentials")}
    process = DaemonProcess(config, tmp_path / "daemon.log", port, env=env)
    process.start()
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        assert requests.get(f"{base}/health", timeout=5).json()["version"]
        body = {"matchers": ['rule="disk_full"'], "duration": "1h", "author": "a", "comment": "c"}
        refused = requests.post(f"{base}/silences", json=body, timeout=5)
        assert refused.status_code == 401
        added = requests.post(f"{base}/silences", json=body, headers=AUTH, timeout=5)
        assert added.status_code == 201, added.text
        answer = requests.post(f"{base}/alertmanager", json={"alerts": 3}, headers=AUTH, timeout=5)
        assert answer.status_code == 422, answer.text  # the daemon's receiver judged it
    finally:
        assert process.stop() == 0, process.log()
    assert TOKEN not in process.log()


# --- fuzzing -------------------------------------------------------------------------------
#
# Requests built from the OpenAPI document: mostly a described method on a described path with
# an id that exists, the right token and JSON carrying the fields the API knows (good values
# and bad); now and then any method, path, header or body at all.

DOCUMENT = json.loads((REPO / "monitor" / "openapi.json").read_text())
OPERATIONS = sorted(
    (method.upper(), path) for path, methods in DOCUMENT["paths"].items() for method in methods
)
URL_SAFE = "abcdefghijklmnopqrstuvwxyz0123456789-._~%/:+"


def mostly(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` four times in five."""
    return st.integers(0, 4).flatmap(lambda n: usual if n else rare)


def described(method: str, template: str) -> tuple[list[str], dict[str, Any]]:
    """The query parameters and the body's schema the document gives an operation."""
    operation = DOCUMENT["paths"][template][method.lower()]
    parameters = [
        DOCUMENT["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
        for p in operation["parameters"]
    ]
    query = [p["name"] for p in parameters if p["in"] == "query"]
    schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    ref = schema.get("schema", {}).get("$ref", "/")
    return query, DOCUMENT["components"]["schemas"].get(ref.rsplit("/", 1)[1], {})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
names = st.sampled_from(["ana", "bob", "", " ", "a\x00b", "ünïcode"]) | st.text(max_size=12)
instants = (
    st.sampled_from(
        [T0 + 3600, T0 - 60, "2027-01-15T10:00Z", "2027-01-15 09:00", "tomorrow", 1e300, -1, True]
    )
    | st.floats()
)
alert_items = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "status": st.sampled_from(["firing", "resolved", "x"]),
            "labels": st.dictionaries(st.sampled_from(["alertname", "job", ""]), names)
            | json_values,
            "annotations": st.dictionaries(st.text(max_size=6), names),
            "startsAt": st.sampled_from(["2027-01-15T08:00:00Z", "0001-01-01T00:00:00Z", "x"]),
            "endsAt": st.sampled_from(["0001-01-01T00:00:00Z", "2027-01-15T09:00:00Z", ""]),
            "fingerprint": st.text(max_size=16),
        },
    ),
    max_size=3,
)
MATCHERS = ['rule="web_down"', f'url="{WIKI}"', 'rule=~".*"', "x", "", 'a=~"("', "x=~" + "(" * 999]
FIRING = {
    "status": "firing",
    "labels": {"alertname": "NodeDown", "instance": "db1:9100"},
    "annotations": {"summary": "db1 is down"},
    "startsAt": "2027-01-15T07:55:00Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "fingerprint": "5f1c2e9a0b7d3c41",
}
GOOD: dict[str, st.SearchStrategy[Any]] = {
    "by": st.sampled_from(["ana", "bob"]),
    "author": st.sampled_from(["ana", "bob"]),
    "comment": st.sampled_from(["rebooted", "switch replaced"]),
    "force": st.booleans(),
    "matchers": st.sampled_from([['rule="web_down"'], [f'url="{WIKI}"', 'rule="web_down"']]),
    "duration": st.sampled_from(["1h", 600]),
    "ends_at": st.sampled_from([T0 + 3600, "2027-01-15T10:00Z"]),
    "starts_at": st.sampled_from([T0, T0 + 60]),
    "version": st.just("4"),
    "status": st.sampled_from(["firing", "resolved"]),
    "alerts": st.lists(st.just(FIRING), max_size=2),
    "receiver": st.just("forewarn"),
}
BAD: dict[str, st.SearchStrategy[Any]] = {
    "by": names,
    "author": names,
    "comment": names,
    "matchers": st.lists(st.sampled_from(MATCHERS) | st.text(max_size=10), max_size=3),
    "duration": st.sampled_from(["0s", "2 hours", -5, 1e300, True]),
    "ends_at": instants,
    "starts_at": instants,
    "version": st.sampled_from([4, "3"]),
    "alerts": alert_items,
}


def body_of(schema: dict[str, Any]) -> st.SearchStrategy[bytes | None]:
    """Mostly JSON of the schema's fields, good values mostly, else anything at all."""
    fields = schema.get("properties", {})
    value = {
        name: mostly(GOOD.get(name, json_values), BAD.get(name, json_values)) for name in fields
    }
    core = [name for name in (*schema.get("required", ()), "duration") if name in fields]
    shaped = st.builds(
        lambda required, optional, extra: json.dumps(required | optional | extra).encode(),
        st.fixed_dictionaries({name: value[name] for name in core}),
        st.fixed_dictionaries({}, optional={n: v for n, v in value.items() if n not in core}),
        mostly(st.just({}), st.dictionaries(st.sampled_from(["x", "by", "id"]), json_values)),
    )
    return mostly(
        shaped,
        st.one_of(
            st.none(),
            json_values.map(lambda anything: json.dumps(anything).encode()),
            st.binary(max_size=64),
            st.sampled_from([b"", b"{", b"[NaN]", b'"\xff"', b"[" * 5000, b"1" * 5000]),
        ),
    )


def query_of(names: list[str]) -> st.SearchStrategy[dict[str, str]]:
    """Mostly the operation's own parameters, with good values and bad."""
    values = st.sampled_from(["open", "resolved", "all", "firing", "true", "1", "0", "5", ""])
    return st.dictionaries(
        mostly(st.sampled_from(names or ["x"]), st.sampled_from(["x", "by", "limit"])),
        mostly(values, st.text(URL_SAFE, max_size=8)),
        max_size=2,
    )


def described_request(operation: tuple[str, str]) -> st.SearchStrategy[tuple[Any, ...]]:
    method, template = operation
    query, schema = described(method, template)
    ident = mostly(
        st.sampled_from(["1", "2", "3"]),
        st.integers(min_value=-5, max_value=2**70).map(str) | st.text(URL_SAFE, max_size=12),
    )
    tail = mostly(st.just(""), st.sampled_from(["/", "/x", "/1/ack", "%00"]))
    path = st.builds(lambda i, t: template.replace("{id}", i) + t, ident, tail)
    queries = mostly(st.just({}), query_of(query))
    return st.tuples(st.just(method), path, queries, body_of(schema))


any_request = st.tuples(
    st.sampled_from(["GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"]),
    st.one_of(
        st.sampled_from(sorted(DOCUMENT["paths"])),
        st.text(URL_SAFE, max_size=20).map(lambda tail: f"/api/v1/{tail}"),
    ),
    query_of(["state", "status", "limit", "all"]),
    body_of(DOCUMENT["components"]["schemas"]["NewSilence"]),
)
fuzzed_requests = mostly(st.sampled_from(OPERATIONS).flatmap(described_request), any_request)
usual_headers = st.fixed_dictionaries(
    {
        "Authorization": mostly(
            st.just(f"Bearer {TOKEN}"),
            st.sampled_from(["Bearer nope", "Basic eA==", "Bearer", None]),
        ),
        "Content-Type": mostly(
            st.just("application/json"),
            st.sampled_from(["application/json; charset=utf-8", "text/plain", "", None]),
        ),
    }
)
odd_headers = st.fixed_dictionaries(
    {},
    optional={
        "Content-Length": st.sampled_from(["abc", "-1", "²", "99999999999", "0"]),
        "Transfer-Encoding": st.just("chunked"),
        "X-Noise": st.text(URL_SAFE, max_size=10),
    },
)
header_sets = st.builds(
    lambda usual, odd: {name: value for name, value in (usual | odd).items() if value is not None},
    usual_headers,
    mostly(st.just({}), odd_headers),
)


@dataclass(frozen=True)
class FuzzServer:
    rig: Rig
    port: int


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    rig = Rig(tmp_path_factory.mktemp("fuzz"), ApiConfig(token=TOKEN, max_body=4096))
    rig.web(0, INTRANET, T0, WIKI)
    rig.api.alertmanager_sink = lambda payload: receive(payload, rig.now).summary
    yield FuzzServer(rig, rig.server.address[1])
    rig.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=fuzzed_requests, headers=header_sets)
def test_fuzzed_requests_get_a_json_answer_and_never_a_5xx(
    fuzz_server: FuzzServer, request: tuple[Any, ...], headers: dict[str, str]
) -> None:
    method, path, query, body = request
    target = path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    connection = http.client.HTTPConnection("127.0.0.1", fuzz_server.port, timeout=10)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if body is not None and "Content-Length" not in headers:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        answer = connection.getresponse()
        content = answer.read()
    finally:
        connection.close()
    assert answer.status < 500, (answer.status, content)
    assert answer.getheader("Content-Type") == "application/json"
    if method != "HEAD":
        assert isinstance(json.loads(content), dict)
