"""The Redmine backend against a real Redmine 5 (Debian package, on loopback; see redmine_server).

What a person does in the help desk is done through the REST API as the user `agent`; what
forewarn does goes through the backend with the administrator's key. Every backend call is
timed; the module's end prints the times (pytest -s shows them).
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest
from redmine_server import RedmineServer, redmine_server  # noqa: F401
from smtp_server import unresponsive_port

from monitor.schema import build_options
from notifiers.base import DeliveryError, TicketDraft
from notifiers.redmine import RedmineTickets, subject_with_marker

T = TypeVar("T")
CALL_TIMES: dict[str, list[float]] = defaultdict(list)


# --- fixtures and helpers ------------------------------------------------------------------------


def options(server: RedmineServer, **changes: Any) -> RedmineTickets.Options:
    settings: dict[str, Any] = {
        "url": server.url,
        "api_key": server.admin_key,
        "project": server.project,
        "timeout": 10.0,
    }
    return RedmineTickets.Options(**{**settings, **changes})


@pytest.fixture
def server(redmine_server: RedmineServer) -> RedmineServer:  # noqa: F811  (the imported fixture)
    for step, seconds in redmine_server.timings.items():
        CALL_TIMES.setdefault(f"(server {step})", [seconds])
    return redmine_server


@pytest.fixture
def backend(server: RedmineServer) -> RedmineTickets:
    return RedmineTickets(options(server))


@pytest.fixture(scope="module", autouse=True)
def report_call_times() -> Iterator[None]:
    yield
    for name, seconds in sorted(CALL_TIMES.items()):
        print(
            f"redmine {name}: {len(seconds)} calls, median {statistics.median(seconds):.3f}s,"
            f" max {max(seconds):.3f}s"
        )


def timed(name: str, call: Callable[[], T]) -> T:
    started = time.perf_counter()
    try:
        return call()
    finally:
        CALL_TIMES[name].append(time.perf_counter() - started)


def new_marker() -> str:
    return f"[forewarn:{uuid.uuid4().hex[:16]}]"


def draft(marker: str, **changes: Any) -> TicketDraft:
    fields: dict[str, Any] = {
        "marker": marker,
        "subject": "[CRITICAL] nginx down on web01 (shop)",
        "body": "nginx.service failed at 10:02.\nRunbook: https://wiki.example.org/nginx",
        "priority": "high",
    }
    return TicketDraft(**{**fields, **changes})


def create(backend: RedmineTickets, ticket: TicketDraft) -> str:
    return timed("create", lambda: backend.create(ticket)).external_id


def issue(server: RedmineServer, external_id: str, include: str = "journals") -> dict[str, Any]:
    issue: dict[str, Any] = server.api(
        "GET", f"/issues/{external_id}.json", params={"include": include}
    ).json()["issue"]
    return issue


def notes(server: RedmineServer, external_id: str) -> list[str]:
    return [j["notes"] for j in issue(server, external_id)["journals"] if j["notes"]]


def as_agent(server: RedmineServer, external_id: str, **fields: Any) -> None:
    server.api("PUT", f"/issues/{external_id}.json", server.agent_key, json={"issue": fields})


def status_id(server: RedmineServer, name: str) -> int:
    statuses = server.api("GET", "/issue_statuses.json").json()["issue_statuses"]
    return next(int(s["id"]) for s in statuses if s["name"] == name)


def user_id(server: RedmineServer, key: str) -> int:
    return int(server.api("GET", "/users/current.json", key).json()["user"]["id"])


# --- creating and finding ------------------------------------------------------------------------


def test_create_writes_the_marker_into_the_subject(
    backend: RedmineTickets, server: RedmineServer
) -> None:
    marker = new_marker()
    info = timed("create", lambda: backend.create(draft(marker)))

    created = issue(server, info.external_id)
    assert created["subject"] == f"[CRITICAL] nginx down on web01 (shop) {marker}"
    assert created["description"].startswith("nginx.service failed at 10:02.")
    assert created["priority"]["name"] == "High"
    assert created["project"]["name"] == "Help desk"
    assert created["tracker"]["name"] == "Bug"  # the project's first tracker
    assert info.number == f"#{info.external_id}"
    assert info.url == f"{server.url}/issues/{info.external_id}"
    assert (info.status, info.owner, info.human_touched) == ("new", None, False)


def test_priority_and_tracker_come_from_the_configured_names(
    server: RedmineServer,
) -> None:
    backend = RedmineTickets(
        options(server, tracker="Support", priority_names={"low": "Low", "high": "Urgent"})
    )
    low = create(backend, draft(new_marker(), priority="low"))
    high = create(backend, draft(new_marker(), priority="high"))
    medium = create(backend, draft(new_marker(), priority="medium"))  # not configured

    assert issue(server, low)["priority"]["name"] == "Low"
    assert issue(server, high)["priority"]["name"] == "Urgent"
    assert issue(server, medium)["priority"]["name"] == "Normal"  # Redmine's default
    assert issue(server, low)["tracker"]["name"] == "Support"


def test_find_by_marker_finds_the_newest_ticket_with_it_in_any_status(
    backend: RedmineTickets, server: RedmineServer
) -> None:
    marker, other = new_marker(), new_marker()
    older = create(backend, draft(marker))
    newer = create(backend, draft(marker, subject="(again) nginx down on web01"))
    create(backend, draft(other))
    server.api(
        "PUT",
        f"/issues/{newer}.json",
        json={"issue": {"status_id": status_id(server, "Closed")}},
    )

    found = timed("find_by_marker", lambda: backend.find_by_marker(marker))
    assert found is not None
    assert (found.external_id, found.status) == (newer, "resolved")
    assert older != newer
    assert timed("find_by_marker", lambda: backend.find_by_marker(new_marker())) is None


def test_find_by_marker_wants_the_whole_marker(
    backend: RedmineTickets, server: RedmineServer
) -> None:
    marker = new_marker()
    create(backend, draft(marker.replace("]", "0]")))  # the same prefix, a longer marker

    assert timed("find_by_marker", lambda: backend.find_by_marker(marker)) is None


def test_a_long_subject_is_shortened_and_keeps_its_marker(
    backend: RedmineTickets, server: RedmineServer
) -> None:
    marker = new_marker()
    external_id = create(backend, draft(marker, subject="disk full " * 40))

    subject = issue(server, external_id)["subject"]
    assert len(subject) <= 255 and subject.endswith(f"… {marker}")
    assert backend.find_by_marker(marker) is not None
    assert subject_with_marker("a\nb", marker) == f"a b {marker}"  # one line


def test_a_recurrence_is_linked_to_the_earlier_ticket(
    backend: RedmineTickets, server: RedmineServer, caplog: pytest.LogCaptureFixture
) -> None:
    marker = new_marker()
    old = create(backend, draft(marker))
    with caplog.at_level(logging.WARNING, logger="notifiers.redmine"):
        new = create(backend, draft(marker, related=(old, "#999999")))  # no issue #999999

    relations = issue(server, new, include="relations")["relations"]
    # Redmine stores "relates" from the lower id to the higher
    assert [(r["issue_id"], r["issue_to_id"], r["relation_type"]) for r in relations] == [
        (int(old), int(new), "relates")
    ]
    assert f"redmine issue #{new} not linked to #999999" in caplog.text


# --- updating ------------------------------------------------------------------------------------


def test_comment_adds_a_note_and_keeps_the_status(
    backend: RedmineTickets, server: RedmineServer
) -> None:
    external_id = create(backend, draft(new_marker()))
    timed("comment", lambda: backend.comment(external_id, "Severity is now critical."))
    timed("comment", lambda: backend.comment(f"#{external_id}", "Still failing at 10:12."))

    assert notes(server, external_id) == [
        "Severity is now critical.",
        "Still failing at 10:12.",
    ]
    info = timed("get", lambda: backend.get(external_id))
    assert info is not None and info.status == "new"


def test_resolve_and_reopen_set_the_configured_statuses_with_a_note(
    backend: RedmineTickets, server: RedmineServer
) -> None:
    external_id = create(backend, draft(new_marker()))

    timed("resolve", lambda: backend.resolve(external_id, "Recovered at 10:20."))
    assert issue(server, external_id)["status"]["name"] == "Resolved"
    resolved = backend.get(external_id)
    assert resolved is not None and resolved.status == "resolved"

    timed("reopen", lambda: backend.reopen(external_id, "Failing again at 10:25."))
    reopened = timed("get", lambda: backend.get(external_id))
    assert issue(server, external_id)["status"]["name"] == "New"
    assert reopened is not None and reopened.status == "new"
    assert notes(server, external_id) == ["Recovered at 10:20.", "Failing again at 10:25."]
    # forewarn's own changes are not a human's
    assert (reopened.human_touched, reopened.last_human_update) == (False, None)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("New", "new"),
        ("In Progress", "open"),
        ("Feedback", "open"),
        ("Resolved", "resolved"),
        ("Closed", "resolved"),
        ("Rejected", "rejected"),
    ],
)
def test_statuses_map_onto_new_open_resolved_rejected(
    backend: RedmineTickets, server: RedmineServer, status: str, expected: str
) -> None:
    external_id = create(backend, draft(new_marker()))
    server.api(
        "PUT",
        f"/issues/{external_id}.json",
        json={"issue": {"status_id": status_id(server, status)}},
    )

    info = backend.get(external_id)
    assert info is not None and info.status == expected


# --- the human side ------------------------------------------------------------------------------


def test_an_agent_taking_and_rejecting_the_ticket_is_seen(
    backend: RedmineTickets, server: RedmineServer
) -> None:
    external_id = create(backend, draft(new_marker()))
    backend.comment(external_id, "forewarn's own note")
    before = time.time()

    as_agent(
        server,
        external_id,
        assigned_to_id=user_id(server, server.agent_key),
    )
    taken = timed("get", lambda: backend.get(external_id))
    assert taken is not None
    assert (taken.owner, taken.status, taken.human_touched) == ("Alice Agent", "new", True)
    assert taken.last_human_update is not None and taken.last_human_update >= before - 1

    as_agent(
        server,
        external_id,
        status_id=status_id(server, "Rejected"),
        notes="Known issue, won't fix.",
    )
    rejected = timed("get", lambda: backend.get(external_id))
    assert rejected is not None
    assert (rejected.status, rejected.owner, rejected.human_touched) == (
        "rejected",
        "Alice Agent",
        True,
    )


def test_an_agents_note_alone_is_an_update_but_not_a_touch(
    backend: RedmineTickets, server: RedmineServer
) -> None:
    external_id = create(backend, draft(new_marker()))
    as_agent(server, external_id, notes="Looking into it.")

    info = backend.get(external_id)
    assert info is not None
    assert info.human_touched is False and info.last_human_update is not None


def test_an_agent_changing_the_priority_touches_the_ticket(
    backend: RedmineTickets, server: RedmineServer
) -> None:
    external_id = create(backend, draft(new_marker()))
    as_agent(server, external_id, priority_id=1)  # Low

    info = backend.get(external_id)
    assert info is not None and info.human_touched is True


def test_get_of_a_missing_issue_is_none(backend: RedmineTickets) -> None:
    assert timed("get", lambda: backend.get("999999")) is None


# --- failures ------------------------------------------------------------------------------------


def test_a_bad_api_key_is_permanent_and_not_in_the_error(server: RedmineServer) -> None:
    bad_key = "0123456789abcdef0123456789abcdef01234567"
    backend = RedmineTickets(options(server, api_key=bad_key))

    with pytest.raises(DeliveryError) as caught:
        backend.create(draft(new_marker()))
    assert caught.value.permanent
    assert "401" in str(caught.value) and bad_key not in str(caught.value)


def test_an_unknown_project_is_permanent(server: RedmineServer) -> None:
    backend = RedmineTickets(options(server, project="no-such-project"))

    with pytest.raises(DeliveryError) as caught:
        backend.create(draft(new_marker()))
    assert caught.value.permanent
    assert "project 'no-such-project' does not exist" in str(caught.value)

    with pytest.raises(DeliveryError) as caught:
        backend.find_by_marker(new_marker())
    assert caught.value.permanent and "HTTP 404" in str(caught.value)


def test_a_field_redmine_rejects_is_permanent_with_its_reason(
    server: RedmineServer,
) -> None:
    backend = RedmineTickets(options(server, priority_names={"high": "999"}))

    with pytest.raises(DeliveryError) as caught:
        backend.create(draft(new_marker()))
    assert caught.value.permanent
    assert "HTTP 422" in str(caught.value) and "Priority" in str(caught.value)


def test_an_unknown_status_name_is_permanent_and_names_the_known_ones(
    server: RedmineServer,
) -> None:
    backend = RedmineTickets(options(server, resolved_status="Done"))
    external_id = create(backend, draft(new_marker()))

    with pytest.raises(DeliveryError) as caught:
        backend.resolve(external_id, "Recovered.")
    assert caught.value.permanent
    assert "no status 'Done'" in str(caught.value) and "Rejected" in str(caught.value)


def test_a_status_the_workflow_forbids_is_permanent(server: RedmineServer) -> None:
    # A Reporter may not resolve; Redmine answers 204 all the same and drops the status.
    backend = RedmineTickets(options(server, api_key=server.keys["reporter"]))
    external_id = create(backend, draft(new_marker()))

    with pytest.raises(DeliveryError) as caught:
        backend.resolve(external_id, "Recovered.")
    assert caught.value.permanent
    assert "does not let the API key's user set 'Resolved'" in str(caught.value)
    assert issue(server, external_id)["status"]["name"] == "New"


def test_a_malformed_ticket_id_is_permanent(backend: RedmineTickets) -> None:
    with pytest.raises(DeliveryError) as caught:
        backend.comment("RT-12", "text")
    assert caught.value.permanent


def test_redmine_stopped_is_transient_and_works_again_when_started(
    backend: RedmineTickets, server: RedmineServer
) -> None:
    marker = new_marker()
    external_id = create(backend, draft(marker))
    server.stop()
    try:
        for call in (
            lambda: backend.create(draft(new_marker())),
            lambda: backend.comment(external_id, "while stopped"),
            lambda: backend.find_by_marker(marker),
        ):
            with pytest.raises(DeliveryError) as caught:
                call()
            assert not caught.value.permanent
            assert "refused" in str(caught.value).lower(), str(caught.value)
    finally:
        started = time.monotonic()
        server.start()
        CALL_TIMES["(server restart)"].append(time.monotonic() - started)

    backend.comment(external_id, "after the restart")
    assert notes(server, external_id) == ["after the restart"]


# --- failures a real Redmine will not produce on demand: a canned loopback server ----------------


class CannedServer(ThreadingHTTPServer):
    """Answers every request with one status and body; `{key}` in the body echoes the API key."""

    def __init__(self, status: int, body: str, content_type: str = "application/json") -> None:
        super().__init__(("127.0.0.1", 0), _CannedHandler)
        self.status, self.body, self.content_type = status, body, content_type

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _CannedHandler(BaseHTTPRequestHandler):
    server: CannedServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        key = self.headers.get("X-Redmine-API-Key", "")
        body = self.server.body.replace("{key}", key).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", self.server.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[Callable[..., RedmineTickets]]:
    servers: list[CannedServer] = []

    def start(status: int, body: str, content_type: str = "application/json") -> RedmineTickets:
        server = CannedServer(status, body, content_type)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        settings = RedmineTickets.Options(
            url=server.url, api_key="secret-key-42", project="helpdesk", timeout=2.0
        )
        return RedmineTickets(settings)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "body", "permanent"),
    [
        (503, "<h1>Service Unavailable</h1>", False),
        (500, "boom", False),
        (429, "slow down", False),
        (408, "", False),
        (403, '{"errors": ["not allowed"]}', True),
        (400, "bad request from {key}", True),
    ],
)
def test_http_statuses_are_sorted_into_transient_and_permanent(
    canned: Callable[..., RedmineTickets], status: int, body: str, permanent: bool
) -> None:
    backend = canned(status, body)

    with pytest.raises(DeliveryError) as caught:
        backend.comment("12", "text")
    assert caught.value.permanent is permanent
    assert f"HTTP {status}" in str(caught.value)
    assert "secret-key-42" not in str(caught.value)


def test_an_error_body_is_cut_short(canned: Callable[..., RedmineTickets]) -> None:
    backend = canned(422, '{"errors": ["' + "x" * 5000 + '"]}')

    with pytest.raises(DeliveryError) as caught:
        backend.comment("12", "text")
    assert len(str(caught.value)) < 300


def test_an_answer_that_is_not_json_is_transient(canned: Callable[..., RedmineTickets]) -> None:
    backend = canned(200, "<html>login</html>", "text/html")

    with pytest.raises(DeliveryError) as caught:
        backend.find_by_marker(new_marker())
    assert not caught.value.permanent and "not JSON" in str(caught.value)


def test_a_server_that_never_answers_times_out_as_transient() -> None:
    with unresponsive_port() as port:
        url = f"http://127.0.0.1:{port}"
        backend = RedmineTickets(
            RedmineTickets.Options(url=url, api_key="k", project="p", timeout=0.3)
        )
        started = time.monotonic()
        with pytest.raises(DeliveryError) as caught:
            backend.get("1")
    assert not caught.value.permanent and "timed out after 0.3s" in str(caught.value)
    assert time.monotonic() - started < 3


# --- configuration -------------------------------------------------------------------------------


def test_the_config_loader_builds_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDMINE_KEY", "k-123")
    table = {
        "url": "https://redmine.example.org/",
        "api_key": {"env": "REDMINE_KEY"},
        "project": "ops",
        "tracker": "Support",
        "priority_names": {"high": "Urgent"},
        "rejected_statuses": ["Rejected", "Won't fix"],
        "timeout": "5s",
    }
    errors: list[str] = []

    built = build_options(RedmineTickets.Options, table, "helpdesk", errors)

    assert errors == []
    assert built is not None
    assert (built.api_key, built.timeout, built.rejected_statuses) == (
        "k-123",
        5.0,
        ("Rejected", "Won't fix"),
    )
    assert "k-123" not in repr(built)


def test_the_config_loader_reports_bad_options() -> None:
    table = {"url": "redmine.example.org", "api_key": "plain", "project": "ops"}
    errors: list[str] = []

    assert build_options(RedmineTickets.Options, table, "helpdesk", errors) is None
    assert errors == [
        "helpdesk.api_key: write secrets as { env = ... } or { file = ... }, never in the file"
    ]

    errors = []
    table = {"url": "redmine.example.org", "api_key": {"env": "PATH"}, "project": "ops"}
    assert build_options(RedmineTickets.Options, table, "helpdesk", errors) is None
    assert len(errors) == 1 and "http://" in errors[0]

    errors = []
    table = {**table, "url": "http://r", "priority_names": {"urgent": "Urgent"}}
    assert build_options(RedmineTickets.Options, table, "helpdesk", errors) is None
    assert len(errors) == 1 and "urgent" in errors[0]
