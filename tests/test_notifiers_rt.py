"""The Request Tracker backend against a real RT 5 (tests/rt_server.py), plus a loopback stub
for the answers a healthy RT never gives (5xx, 429, redirects, HTML) and a port that never
answers.

Every test works on tickets of its own marker, so they share one RT and run in any order.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from rt_server import RtServer, rt_server  # noqa: F401  (the fixture)
from smtp_server import unresponsive_port

from monitor.schema import build_options
from notifiers.base import DeliveryError, TicketDraft, TicketInfo
from notifiers.rt import RtTickets

BODY = "Disk /var at 97 % (threshold 90 %) since 10:02 — grüße, 91 °C ✓"


@pytest.fixture
def server(rt_server: RtServer) -> RtServer:  # noqa: F811  (the shared RT of the session)
    return rt_server


def backend(rt: RtServer, **options: Any) -> RtTickets:
    settings: dict[str, Any] = {"url": rt.url, "token": rt.token, "requestor": "ops@example.org"}
    return RtTickets(RtTickets.Options(**{**settings, **options}))


def new_marker() -> str:
    return f"[forewarn:{secrets.token_hex(8)}]"


def draft(marker: str, **fields: Any) -> TicketDraft:
    values: dict[str, Any] = {"subject": "[CRITICAL] Disk full on db01", "body": BODY}
    return TicketDraft(marker=marker, priority="high", **{**values, **fields})


def rt_get(rt: RtServer, path: str, **params: str) -> Any:
    """What RT holds, read as root with plain requests (not through the backend)."""
    answer = requests.get(
        rt.api + path, params=params, headers={"Authorization": f"token {rt.token}"}, timeout=30
    )
    answer.raise_for_status()
    return answer.json()


def transcript(rt: RtServer, ticket: TicketInfo) -> list[str]:
    """The ticket's history in order: "Comment: text", "Status: new -> resolved", ..."""
    path = f"/ticket/{ticket.external_id}"
    texts = {
        a["TransactionId"]: a["Content"]
        for a in rt_get(rt, path + "/attachments", fields="Content,TransactionId",
                        per_page="100")["items"]
    }
    lines = []
    for txn in rt_get(rt, path + "/history", fields="Type,OldValue,NewValue",
                      per_page="100")["items"]:
        if txn["Type"] == "Status":
            lines.append(f"Status: {txn['OldValue']} -> {txn['NewValue']}")
        elif txn["Type"] in ("Create", "Comment", "Correspond"):
            lines.append(f"{txn['Type']}: {texts.get(txn['id'], '')}")
    return lines


# --- creating and finding -----------------------------------------------------------------------


def test_create_writes_marker_priority_requestor_and_body(server: RtServer) -> None:
    marker = new_marker()

    info = backend(server).create(draft(marker))

    assert info.number == f"#{info.external_id}" and info.status == "new"
    assert info.url == f"{server.url}/Ticket/Display.html?id={info.external_id}"
    ticket = rt_get(server, f"/ticket/{info.external_id}")
    assert ticket["Subject"] == f"[CRITICAL] Disk full on db01 {marker}"
    assert ticket["Queue"]["id"] == "1"  # General
    assert ticket["Priority"] in ("100", "High")  # High when RT shows priorities as names
    assert [r["id"] for r in ticket["Requestor"]] == ["ops@example.org"]
    assert transcript(server, info) == [f"Create: {BODY}"]


def test_a_long_subject_is_cut_before_the_marker(server: RtServer) -> None:
    marker = new_marker()

    info = backend(server).create(draft(marker, subject="x" * 300))

    subject = rt_get(server, f"/ticket/{info.external_id}")["Subject"]
    assert len(subject) == 200 and subject.endswith(f"x {marker}")


def test_another_forewarn_finds_the_newest_ticket_of_a_marker(server: RtServer) -> None:
    marker = new_marker()
    first = backend(server).create(draft(marker))
    newest = backend(server).create(draft(marker))

    found = backend(server).find_by_marker(marker)

    assert found is not None and found.external_id == newest.external_id != first.external_id
    assert found.status == "new" and found.owner is None and not found.human_touched
    assert backend(server).find_by_marker(new_marker()) is None


def test_markers_match_exactly_not_as_parts_or_without_case(server: RtServer) -> None:
    marker = new_marker()
    recurrence = marker.replace("]", ":2]")  # the marker of the incident's next ticket
    first = backend(server).create(draft(marker))
    second = backend(server).create(draft(recurrence))
    rt = backend(server)

    assert (rt.find_by_marker(marker) or first).external_id == first.external_id
    assert (rt.find_by_marker(recurrence) or first).external_id == second.external_id
    assert rt.find_by_marker(marker.upper()) is None
    assert rt.find_by_marker("it's [not] a \\ marker") is None  # quoted, not a broken query


def test_marker_in_a_custom_field(server: RtServer) -> None:
    marker = new_marker()
    in_field = backend(server, marker_field=server.marker_field)

    info = in_field.create(draft(marker))

    ticket = rt_get(server, f"/ticket/{info.external_id}")
    assert ticket["Subject"] == "[CRITICAL] Disk full on db01"
    values = {cf["name"]: cf["values"] for cf in ticket["CustomFields"]}
    assert values[server.marker_field] == [marker]
    found = backend(server, marker_field=server.marker_field).find_by_marker(marker)
    assert found is not None and found.external_id == info.external_id
    assert backend(server).find_by_marker(marker) is None  # not in the Subject


def test_a_marker_field_the_queue_lacks_is_permanent_before_creating(server: RtServer) -> None:
    subject = f"never created {secrets.token_hex(6)}"

    with pytest.raises(DeliveryError) as caught:
        backend(server, marker_field="No Such Field").create(
            draft(new_marker(), subject=subject)
        )

    assert caught.value.permanent and "No Such Field" in str(caught.value)
    search = rt_get(server, "/tickets", query=f"Subject LIKE '{subject}'")
    assert search["total"] == 0


def test_a_recurrence_refers_to_the_earlier_ticket(server: RtServer) -> None:
    rt = backend(server)
    old = rt.create(draft(new_marker()))

    new = rt.create(draft(new_marker(), related=(old.external_id,)))

    links = rt_get(server, f"/ticket/{new.external_id}")["_hyperlinks"]
    assert [link["id"] for link in links if link["ref"] == "refers-to"] == [old.external_id]


# --- updating -----------------------------------------------------------------------------------


def test_comments_arrive_in_order_with_their_text_and_leave_the_status(
    server: RtServer,
) -> None:
    rt = backend(server)
    info = rt.create(draft(new_marker()))

    rt.comment(info.external_id, "Severity is now critical — 99 %")
    rt.comment(info.external_id, "Still 99 %")
    rt.comment(info.external_id, "  ")  # nothing to say: RT would store an empty attachment

    assert transcript(server, info)[1:] == [
        "Comment: Severity is now critical — 99 %",
        "Comment: Still 99 %",
    ]
    assert (rt.get(info.external_id) or info).status == "new"


def test_resolve_and_reopen_are_forewarns_not_a_persons(server: RtServer) -> None:
    rt = backend(server)
    info = rt.create(draft(new_marker()))

    rt.resolve(info.external_id, "Recovered: /var at 60 %")
    resolved = rt.get(info.external_id)
    rt.resolve(info.external_id, "")  # a retry after an unknown outcome: no error
    rt.reopen(info.external_id, "It fires again")
    reopened = rt.get(info.external_id)

    assert resolved is not None and resolved.status == "resolved"
    assert reopened is not None and reopened.status == "open"
    assert not reopened.human_touched and reopened.last_human_update is None
    assert transcript(server, info)[1:] == [
        "Comment: Recovered: /var at 60 %",
        "Status: new -> resolved",
        "Comment: It fires again",
        "Status: resolved -> open",
    ]


def test_correspondence_reaches_the_requestor_and_resolving_still_closes(
    server: RtServer,
) -> None:
    rt = backend(server, comment_kind="correspond")
    info = rt.create(draft(new_marker()))

    rt.comment(info.external_id, "We are on it")
    opened = rt.get(info.external_id)
    # RT reopens a ticket that gets a correspondence: the text must not undo the resolve
    rt.resolve(info.external_id, "Fixed")

    assert opened is not None and opened.status == "open" and not opened.human_touched
    assert (rt.get(info.external_id) or info).status == "resolved"
    assert transcript(server, info)[1:] == [
        "Correspond: We are on it",
        "Status: new -> open",
        "Correspond: Fixed",
        "Status: open -> resolved",
    ]


def test_a_status_rt_refuses_is_a_permanent_error(server: RtServer) -> None:
    rt = backend(server, resolved_status="no-such-status")
    info = rt.create(draft(new_marker()))

    with pytest.raises(DeliveryError) as caught:
        rt.resolve(info.external_id, "")

    assert caught.value.permanent and "no-such-status" in str(caught.value)


# --- the human side -----------------------------------------------------------------------------


def test_a_person_taking_then_rejecting_the_ticket_is_seen(server: RtServer) -> None:
    rt = backend(server)
    info = rt.create(draft(new_marker()))
    untouched = rt.get(info.external_id)
    before = time.time()

    server.as_agent("PUT", f"/ticket/{info.external_id}", Owner=server.agent)
    taken = rt.get(info.external_id)
    server.as_agent("PUT", f"/ticket/{info.external_id}", Status="rejected")
    rejected = rt.get(info.external_id)

    assert untouched is not None and not untouched.human_touched and untouched.owner is None
    assert taken is not None and taken.owner == server.agent and taken.human_touched
    assert taken.status == "new" and taken.last_human_update is not None
    assert before - 1.5 <= taken.last_human_update <= time.time() + 1  # RT keeps seconds
    assert rejected is not None and rejected.status == "rejected"


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"Status": "stalled"}, "open"),
        ({"Status": "resolved"}, "resolved"),
        ({"Status": "deleted"}, "rejected"),
        ({"Priority": 10}, "new"),
    ],
)
def test_what_a_person_changes_maps_onto_the_four_statuses(
    server: RtServer, change: dict[str, Any], status: str
) -> None:
    rt = backend(server)
    info = rt.create(draft(new_marker()))

    server.as_agent("PUT", f"/ticket/{info.external_id}", **change)

    seen = rt.get(info.external_id)
    assert seen is not None and (seen.status, seen.human_touched) == (status, True)


def test_basic_auth_and_a_custom_rejected_status(server: RtServer) -> None:
    rt = backend(server, token=None, username=server.username,
                 password=server.root_password, rejected_statuses=("stalled",))
    info = rt.create(draft(new_marker()))

    server.as_agent("PUT", f"/ticket/{info.external_id}", Status="stalled")

    assert (rt.get(info.external_id) or info).status == "rejected"


def test_a_ticket_that_is_not_there(server: RtServer) -> None:
    rt = backend(server)

    assert rt.get("999999") is None and rt.get("#12") is None and rt.get("²") is None
    for call in (rt.comment, rt.resolve):
        with pytest.raises(DeliveryError) as caught:
            call("999999", "text")
        assert caught.value.permanent
    with pytest.raises(DeliveryError, match="not an RT ticket id"):
        rt.comment("../queue/1", "text")


# --- failures -----------------------------------------------------------------------------------


def test_a_wrong_token_is_permanent_and_never_shown(
    server: RtServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = f"1-99-{secrets.token_hex(16)}"
    rt = backend(server, token=wrong)

    for call in (lambda: rt.create(draft(new_marker())), lambda: rt.get("1")):
        with pytest.raises(DeliveryError) as caught:
            call()
        assert caught.value.permanent and "401" in str(caught.value)
        assert wrong not in str(caught.value) and wrong not in repr(rt.options)
    assert wrong not in caplog.text


def test_a_wrong_password_is_permanent_and_never_shown(server: RtServer) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    rt = backend(server, token=None, username=server.username, password=wrong)

    with pytest.raises(DeliveryError) as caught:
        rt.find_by_marker(new_marker())

    assert caught.value.permanent and wrong not in str(caught.value)


def test_an_unknown_queue_is_permanent(server: RtServer) -> None:
    with pytest.raises(DeliveryError) as caught:
        backend(server, queue="No Such Queue").create(draft(new_marker()))

    assert caught.value.permanent and "No Such Queue" in str(caught.value)


def test_rt_stopped_is_transient_and_work_goes_on_after_it_starts(server: RtServer) -> None:
    rt = backend(server)
    info = rt.create(draft(new_marker()))
    calls = {
        "create": lambda: rt.create(draft(new_marker())),
        "find": lambda: rt.find_by_marker(new_marker()),
        "comment": lambda: rt.comment(info.external_id, "during the outage"),
        "get": lambda: rt.get(info.external_id),
    }

    server.stop()
    try:
        for name, call in calls.items():
            with pytest.raises(DeliveryError) as caught:
                call()
            assert not caught.value.permanent, name
            assert "Connection refused" in str(caught.value), name
    finally:
        server.start()

    rt.comment(info.external_id, "after the outage")
    assert transcript(server, info)[1:] == ["Comment: after the outage"]


# --- answers a healthy RT never gives: a loopback stub ------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)


class Stub(ThreadingHTTPServer):
    """Answers every request with its `reply`."""

    daemon_threads = True
    reply = Reply()


class _StubHandler(BaseHTTPRequestHandler):
    server: Stub

    def _answer(self) -> None:
        reply = self.server.reply
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(reply.status)
        for name, value in {"Content-Length": str(len(reply.body)), **reply.headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub(("127.0.0.1", 0), _StubHandler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def stub_backend(server: Stub, token: str = "1-2-secret", **options: Any) -> RtTickets:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    return RtTickets(RtTickets.Options(url=url, token=token, **options))


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(500, False), (502, False), (503, False), (429, False), (408, False),
     (400, True), (403, True), (404, True), (422, True)],
)
def test_status_codes_sort_into_transient_and_permanent(
    stub: Stub, status: int, permanent: bool
) -> None:
    stub.reply = Reply(status, json.dumps({"message": "RT says no"}).encode())

    with pytest.raises(DeliveryError) as caught:
        stub_backend(stub).comment("7", "text")

    assert caught.value.permanent is permanent
    assert str(caught.value) == f"RT answered {status} to POST /ticket/7/comment: RT says no"


def test_a_redirect_is_a_wrong_url_not_followed(stub: Stub) -> None:
    stub.reply = Reply(302, headers={"Location": "https://rt.example.org/NoAuth/Login.html"})

    with pytest.raises(DeliveryError, match=r"redirected to https://rt\.example\.org/") as caught:
        stub_backend(stub).create(draft(new_marker()))

    assert caught.value.permanent


def test_html_where_json_belongs_is_permanent(stub: Stub) -> None:
    stub.reply = Reply(body=b"<html>" + b"x" * 5000 + b"</html>")

    with pytest.raises(DeliveryError, match="not JSON") as caught:
        stub_backend(stub).find_by_marker(new_marker())

    assert caught.value.permanent and len(str(caught.value)) <= 200


def test_long_error_bodies_are_cut_and_secrets_blanked(stub: Stub) -> None:
    token = f"1-2-{secrets.token_hex(16)}"
    stub.reply = Reply(400, f"bad token {token} ".encode() + b"y" * 5000)

    with pytest.raises(DeliveryError) as caught:
        stub_backend(stub, token=token).comment("7", "text")

    assert token not in str(caught.value) and "bad token ***" in str(caught.value)
    assert len(str(caught.value)) <= 200


def test_no_answer_in_time_is_transient() -> None:
    with unresponsive_port() as port:
        options = RtTickets.Options(url=f"http://127.0.0.1:{port}", token="t", timeout=0.2)
        with pytest.raises(DeliveryError, match=r"no answer within 0\.2s") as caught:
            RtTickets(options).get("7")

    assert not caught.value.permanent


# --- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "needs a token"),
        ({"username": "root"}, "needs a token"),
        ({"token": "t", "username": "root"}, "not both"),
        ({"token": "t", "comment_kind": "reply"}, "comment_kind"),
        ({"token": "t", "url": "ftp://rt.example.org"}, "http"),
        ({"token": "t", "url": "https://root:pw@rt.example.org"}, "credentials"),
        ({"token": "t", "timeout": 0}, "timeout"),
        ({"token": "t", "queue": ""}, "queue"),
    ],
)
def test_options_are_checked(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RtTickets.Options(**{"url": "https://rt.example.org", **options})


def test_options_build_from_a_helpdesk_table_with_a_secret_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FOREWARN_TEST_RT_TOKEN", "1-2-abc")
    table = {
        "url": "https://rt.example.org/rt",
        "queue": "Ops",
        "token": {"env": "FOREWARN_TEST_RT_TOKEN"},
        "rejected_statuses": ["rejected", "wontfix"],
        "comment_kind": "correspond",
        "timeout": "30s",
    }
    errors: list[str] = []

    options = build_options(RtTickets.Options, table, "helpdesk", errors)

    assert errors == [] and options is not None
    assert (options.token, options.rejected_statuses, options.timeout) == (
        "1-2-abc", ("rejected", "wontfix"), 30.0)
    assert "1-2-abc" not in repr(options)
    assert build_options(RtTickets.Options, {**table, "token": "1-2-abc"}, "helpdesk", errors) \
        is None and "never in the file" in errors[0]
