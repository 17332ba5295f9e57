"""The webhook ticket backend against a loopback HTTP receiver started by the test."""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from smtp_server import free_port, self_signed_server_context, unresponsive_port

from monitor.schema import build_options
from notifiers.base import DeliveryError, TicketDraft
from notifiers.webhook import WebhookTickets
from probes.base import Duration

MARKER = "[forewarn:1a2b3c4d5e6f7a8b]"
TOKEN = "Zm9yZXdhcm4tdG9rZW4tNDI"
SECRET_HEADER = f"Authorization: Bearer {TOKEN}"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 201
    body: Any = field(default_factory=lambda: {"id": 42})  # JSON, or bytes as they are
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


class Receiver:
    """Records every request; answers each method with the Reply set for it."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Request] = []
        self.replies: dict[str, Reply] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.scheme = "https" if tls else "http"
        serve = lambda: self._server.serve_forever(poll_interval=0.05)  # noqa: E731
        threading.Thread(target=serve, daemon=True).start()

    def url(self, path: str = "/hooks/forewarn") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def answer(self, method: str, status: int, body: Any = b"", **headers: str) -> None:
        self.replies[method] = Reply(status, body, headers)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def handle_any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            headers = {name.lower(): value for name, value in self.headers.items()}
            receiver.requests.append(
                Request(self.command, self.path, headers, self.rfile.read(length))
            )
            reply = receiver.replies.get(self.command, Reply())
            body = reply.encoded()
            self.send_response(reply.status)
            for name, value in {"Content-Length": str(len(body)), **reply.headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = handle_any

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def backend_for(url: str, **overrides: Any) -> WebhookTickets:
    fields: dict[str, Any] = {"url": url, "timeout": Duration(5)}
    fields.update(overrides)
    return WebhookTickets.from_config(WebhookTickets.Options(**fields), "state.sqlite")


def draft(**overrides: Any) -> TicketDraft:
    fields: dict[str, Any] = {
        "marker": MARKER,
        "subject": "[CRITICAL] Intranet is not answering on web01 (intranet)",
        "body": "Intranet is not answering on web01.\n\nSeit 10:02 — 0 of 3 checks pass.\n",
        "priority": "high",
        "category": "web",
        "tags": ("forewarn", "web", "intranet"),
        "related": ("17 [forewarn:1a2b3c4d5e6f7a8b:1]",),
    }
    fields.update(overrides)
    return TicketDraft(**fields)


# --- the documented payload --------------------------------------------------------------


def test_create_posts_the_documented_payload_and_reads_the_id(receiver: Receiver) -> None:
    backend = backend_for(
        receiver.url(), id_path="id", headers=["X-Team: infra"], secret_header=SECRET_HEADER
    )

    info = backend.create(draft())

    (request,) = receiver.requests
    assert (request.method, request.path) == ("POST", "/hooks/forewarn")
    assert request.json() == {
        "version": 1,
        "event": "create",
        "marker": MARKER,
        "external_id": None,
        "subject": "[CRITICAL] Intranet is not answering on web01 (intranet)",
        "body": "Intranet is not answering on web01.\n\nSeit 10:02 — 0 of 3 checks pass.\n",
        "priority": "high",
        "category": "web",
        "tags": ["forewarn", "web", "intranet"],
        "related": ["17"],
    }
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == MARKER
    assert request.headers["x-team"] == "infra"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert (info.number, info.status) == ("42", "new")


def test_updates_carry_the_receivers_id_and_the_marker(receiver: Receiver) -> None:
    backend = backend_for(receiver.url(), id_path="id", method="PUT")
    receiver.answer("PUT", 201, {"id": "INC-42"})
    info = backend.create(draft())
    receiver.answer("PUT", 204)

    backend.comment(info.external_id, "Severity changed from warning to critical.\n")
    backend.resolve(info.external_id, "Resolved: the problem is gone.\n")
    backend.reopen(info.external_id, "The problem is back.\n")

    updates = [request.json() for request in receiver.requests[1:]]
    assert updates == [
        {"version": 1, "event": event, "marker": MARKER, "external_id": "INC-42", "text": text}
        for event, text in [
            ("comment", "Severity changed from warning to critical.\n"),
            ("resolve", "Resolved: the problem is gone.\n"),
            ("reopen", "The problem is back.\n"),
        ]
    ]
    assert {request.method for request in receiver.requests} == {"PUT"}
    assert "idempotency-key" not in receiver.requests[1].headers


def test_without_id_path_the_marker_is_the_id(receiver: Receiver) -> None:
    backend = backend_for(receiver.url())
    receiver.answer("POST", 202, b"queued")

    info = backend.create(draft())
    backend.comment(info.external_id, "still down\n")

    assert (info.external_id, info.number) == (MARKER, MARKER)
    comment = receiver.requests[1].json()
    assert (comment["external_id"], comment["marker"]) == (MARKER, MARKER)


@pytest.mark.parametrize(
    ("id_path", "answer", "number"),
    [
        ("ticket.number", {"ticket": {"number": "INC 7", "id": 3}}, "INC 7"),
        ("tickets.0.id", {"tickets": [{"id": 7}, {"id": 8}]}, "7"),
    ],
)
def test_id_paths_reach_into_the_answer(
    receiver: Receiver, id_path: str, answer: Any, number: str
) -> None:
    backend = backend_for(receiver.url(), id_path=id_path)
    receiver.answer("POST", 200, answer)

    info = backend.create(draft())
    backend.resolve(info.external_id, "fixed\n")

    assert info.number == number
    assert receiver.requests[1].json()["external_id"] == number  # a space in the id is kept


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"ticket": {}}, "the answer has no 'id'"),
        ({"id": True}, "is not a string or a whole number"),
        (b"<html>created</html>", "the answer is not JSON"),
    ],
)
def test_a_create_answer_without_the_id_is_permanent(
    receiver: Receiver, answer: Any, reason: str
) -> None:
    # The ticket probably exists: a retry would duplicate it, so the row must stop here.
    backend = backend_for(receiver.url(), id_path="id")
    receiver.answer("POST", 201, answer)

    with pytest.raises(DeliveryError) as caught:
        backend.create(draft())

    assert caught.value.permanent
    assert reason in str(caught.value)


# --- failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(500, False), (503, False), (429, False), (408, False), (400, True), (404, True),
     (401, True), (302, True)],
)
def test_statuses_are_sorted_for_the_dispatcher(
    receiver: Receiver, status: int, permanent: bool
) -> None:
    receiver.answer("POST", status, {"error": "nope"}, Location=receiver.url("/elsewhere"))

    with pytest.raises(DeliveryError) as caught:
        backend_for(receiver.url()).comment(MARKER, "text\n")

    assert caught.value.permanent is permanent
    assert f"webhook comment POST http://127.0.0.1:{receiver.port}: {status}" in str(caught.value)
    assert len(receiver.requests) == 1  # a redirect is not followed


def test_an_error_quotes_a_short_redacted_excerpt(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {"error": "invalid field 'subject'", "you_sent": SECRET_HEADER, "pad": "x" * 5000}
    receiver.answer("POST", 400, echo)
    backend = backend_for(receiver.url(), secret_header=SECRET_HEADER)

    with pytest.raises(DeliveryError) as caught:
        backend.create(draft())

    message = str(caught.value)
    assert "invalid field 'subject'" in message
    assert len(message) < 250
    assert TOKEN not in message + repr(backend.options) + caplog.text


def test_the_urls_path_and_query_stay_out_of_errors() -> None:
    # Incoming-webhook URLs often carry their secret in the path.
    port = free_port()
    backend = backend_for(f"http://127.0.0.1:{port}/hooks/{TOKEN}?key={TOKEN}")

    with pytest.raises(DeliveryError) as caught:
        backend.create(draft())

    assert not caught.value.permanent  # nobody listens: the receiver may come back
    assert str(caught.value) == (
        f"webhook create POST http://127.0.0.1:{port}: connection refused"
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_receiver_that_never_answers_times_out() -> None:
    with unresponsive_port() as port:
        backend = backend_for(f"http://127.0.0.1:{port}/hook", timeout=Duration(0.2))
        with pytest.raises(DeliveryError) as caught:
            backend.create(draft())

    assert not caught.value.permanent  # outcome unknown: the dispatcher searches, then retries
    assert "timed out after 0.2s" in str(caught.value)


def test_a_certificate_that_does_not_verify_is_permanent(tmp_path: Path) -> None:
    tls = Receiver(self_signed_server_context(tmp_path))
    try:
        with pytest.raises(DeliveryError) as caught:
            backend_for(tls.url()).create(draft())
        backend_for(tls.url(), verify_tls=False).create(draft())
    finally:
        tls.close()

    assert caught.value.permanent
    assert "TLS certificate not trusted" in str(caught.value)
    assert len(tls.requests) == 1  # only the one that skipped verification


# --- body template -----------------------------------------------------------------------


def write_template(tmp_path: Path, text: str) -> str:
    path = tmp_path / "body.json.j2"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_body_template_shapes_the_request(receiver: Receiver, tmp_path: Path) -> None:
    template = write_template(tmp_path, (
        '{% if event == "create" %}{"title": {{ subject|tojson }}, "description": '
        '{{ body|tojson }}, "labels": {{ tags|tojson }}}'
        '{% else %}{"issue": {{ external_id|tojson }}, "note": {{ text|tojson }},'
        ' "all": {{ payload|tojson }}}{% endif %}\n'
    ))
    backend = backend_for(receiver.url(), body_template=template, id_path="id")

    info = backend.create(draft(subject='Quote " and <tag> & more'))
    backend.comment(info.external_id, "line 1\nline 2 \"quoted\"\n")

    create, comment = (request.json() for request in receiver.requests)
    assert create == {
        "title": 'Quote " and <tag> & more',
        "description": draft().body,
        "labels": ["forewarn", "web", "intranet"],
    }
    assert comment["issue"] == "42"
    assert comment["note"] == "line 1\nline 2 \"quoted\"\n"
    assert comment["all"]["event"] == "comment"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"title": {{ subject }}}', "body_template rendered no JSON"),
        ("{{ tags.append('x') }}", "body_template failed"),  # the sandbox is read-only
        ('{"x": {{ nothing.there }}}', "body_template failed"),
    ],
)
def test_a_body_template_that_goes_wrong_is_permanent(
    receiver: Receiver, tmp_path: Path, text: str, reason: str
) -> None:
    backend = backend_for(receiver.url(), body_template=write_template(tmp_path, text))

    with pytest.raises(DeliveryError) as caught:
        backend.create(draft())

    assert caught.value.permanent
    assert reason in str(caught.value)
    assert receiver.requests == []


# --- find_url ----------------------------------------------------------------------------


def test_find_by_marker_asks_the_find_url(receiver: Receiver) -> None:
    backend = backend_for(
        receiver.url(), id_path="id", find_url=receiver.url("/search?marker={marker}")
    )
    receiver.answer("GET", 200, {"id": 42, "status": "open"})

    info = backend.find_by_marker(MARKER)

    assert info is not None and info.number == "42"
    (request,) = receiver.requests
    assert request.method == "GET"
    assert request.path == "/search?marker=%5Bforewarn%3A1a2b3c4d5e6f7a8b%5D"
    backend.comment(info.external_id, "found again\n")
    assert receiver.requests[1].json()["external_id"] == "42"


@pytest.mark.parametrize(
    ("status", "answer", "id_path"),
    [
        (404, {"error": "not found"}, "id"),
        (200, [], "id"),
        (200, b"", None),
        (200, {"tickets": []}, "tickets.0.id"),
    ],
)
def test_find_by_marker_understands_no_such_ticket(
    receiver: Receiver, status: int, answer: Any, id_path: str | None
) -> None:
    backend = backend_for(receiver.url(), id_path=id_path, find_url=receiver.url("/t/{marker}"))
    receiver.answer("GET", status, answer)

    assert backend.find_by_marker(MARKER) is None
    assert len(receiver.requests) == 1


def test_find_without_id_path_finds_the_marker(receiver: Receiver) -> None:
    backend = backend_for(receiver.url(), find_url=receiver.url("/t/{marker}"))
    receiver.answer("GET", 200, {"anything": True})

    info = backend.find_by_marker(MARKER)

    assert info is not None and info.external_id == MARKER


@pytest.mark.parametrize(("status", "permanent"), [(500, False), (401, True)])
def test_find_failures_are_not_a_missing_ticket(
    receiver: Receiver, status: int, permanent: bool
) -> None:
    # "Not found" here would make the dispatcher create a duplicate.
    backend = backend_for(receiver.url(), id_path="id", find_url=receiver.url("/t/{marker}"))
    receiver.answer("GET", status, {"error": "nope"})

    with pytest.raises(DeliveryError) as caught:
        backend.find_by_marker(MARKER)

    assert caught.value.permanent is permanent
    assert "webhook find GET" in str(caught.value)


def test_without_find_url_nothing_is_asked_and_nothing_read_back(receiver: Receiver) -> None:
    backend = backend_for(receiver.url())

    assert backend.find_by_marker(MARKER) is None
    assert backend.get(MARKER) is None
    assert receiver.requests == []


# --- the [helpdesk] keys, read as the config loader reads them ---------------------------


def load(table: dict[str, Any]) -> tuple[WebhookTickets.Options | None, list[str]]:
    errors: list[str] = []
    return build_options(WebhookTickets.Options, table, "helpdesk", errors), errors


def test_options_from_the_config_with_the_secret_header_from_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook-auth"
    secret_file.write_text(SECRET_HEADER + "\n", encoding="utf-8")
    template = write_template(tmp_path, "{{ payload|tojson }}")
    options, errors = load({
        "url": "https://tickets.example.org/api", "method": "PATCH",
        "headers": ["X-Team: infra"], "secret_header": {"file": str(secret_file)},
        "body_template": template, "id_path": "ticket.id",
        "find_url": "https://tickets.example.org/api?marker={marker}",
        "verify_tls": False, "timeout": "30s",
    })

    assert errors == [] and options is not None
    assert (options.method, options.secret_header, options.timeout) == (
        "PATCH", SECRET_HEADER, 30.0,
    )
    assert TOKEN not in repr(options)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "helpdesk.url: missing required key"),
        ({"url": "ftp://example.org/"}, "url must be an http:// or https:// URL"),
        ({"method": "GET"}, "method must be one of POST, PUT, PATCH"),
        ({"headers": ["X-Team infra"]}, "is not of the form"),
        ({"secret_header": "Authorization: Bearer x"}, "{ env = ... } or { file = ... }"),
        ({"find_url": "https://example.org/search"}, "find_url must contain {marker}"),
        ({"id_path": "ticket..id"}, "must be keys joined by dots"),
        ({"body_template": "body.json.j2"}, "must be an absolute path"),
        ({"body_template": "/nonexistent/body.json.j2"}, "cannot read body_template"),
        ({"timeout": 0}, "timeout must be more than 0s"),
    ],
)
def test_options_errors(table: dict[str, Any], message: str) -> None:
    options, errors = load({"url": "https://tickets.example.org/api", **table}
                           if table else {})

    assert options is None
    assert any(message in error for error in errors), errors


def test_a_malformed_secret_header_is_not_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_AUTH", f"Bearer {TOKEN}")  # the name is missing
    options, errors = load(
        {"url": "https://x.example.org/", "secret_header": {"env": "WEBHOOK_AUTH"}}
    )

    assert options is None
    assert errors == ['helpdesk: secret_header is not of the form "Name: value"']


def test_a_body_template_with_a_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    template = write_template(tmp_path, '{"title": {{ subject|tojson }\n')
    options, errors = load({"url": "https://x.example.org/", "body_template": template})

    assert options is None
    assert len(errors) == 1 and f"body_template {template}, line 1:" in errors[0]
