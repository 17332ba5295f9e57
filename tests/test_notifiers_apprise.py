"""Chat, push and SMS notices through Apprise, delivered for real to a loopback web hook.

Apprise's `json://host:port/path` service POSTs `{"title": ..., "message": ...}`; the hook
here records every request and answers with the status a test sets. Delivery goes through the
dispatcher over a real state file, with a clock the tests move: nothing sleeps.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from smtp_server import unresponsive_port

from monitor import store as st
from monitor.dispatcher import Dispatcher, RetryPolicy
from monitor.metrics import Metrics
from notifiers.apprise_channel import AppriseChannel, target_id
from notifiers.base import DeliveryError, Message
from notifiers.builtin import BuiltinTickets
from notifiers.render import Renderer

T0 = 1_800_000_000.0
RETRY = RetryPolicy(base=10.0, cap=1000.0, defer=1.0)
MAINTENANCE_CONTEXT: dict[str, Any] = {
    "language": "it",
    "timezone": "Europe/Rome",
    "kind": "scheduled",
    "now": T0,
    "audience": {"name": "accounting", "title": "Contabilità"},
    "service": {"name": "erp", "title": "Gestionale", "description": ""},
    "host": "web01",
    "maintenance": {"name": "backup", "title": "Backup notturno", "description": "",
                    "starts_at": T0 + 3600, "ends_at": T0 + 7200},
}
# Override templates: these tests check what the dispatcher chose and passed, not wording.
TEMPLATES = {
    "notices/it/scheduled.subject.j2": "[{{ kind }}/{{ language }}] {{ maintenance.title }}",
    "notices/it/scheduled.txt.j2": "{{ service.title }} in manutenzione; ticket: "
    "{{ ticket.number if ticket else 'nessuno' }}",
    "notices/it/scheduled.html.j2": "<p>{{ service.title }}</p>",
    "escalation.subject.j2": "Escalation step {{ step.position }}: {{ incident.marker }}",
    "escalation.txt.j2": "Nobody has acknowledged it. {{ acknowledge }}",
}


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Hook:
    """A loopback web hook: records each POST, answers `status`."""

    port: int = 0
    status: int = 200
    received: list[Received] = field(default_factory=list)

    def url(self, path: str = "/notify", userinfo: str = "", query: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"json://{at}127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")


def serve(hook: Hook) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            hook.received.append(Received(self.path, dict(self.headers), body))
            self.send_response(hook.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@pytest.fixture
def hook() -> Iterator[Hook]:
    recorder = Hook()
    server = serve(recorder)
    yield recorder
    server.shutdown()
    server.server_close()


@dataclass
class FakeClock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    store: st.Store
    dispatcher: Dispatcher
    metrics: Metrics
    clock: FakeClock

    def enqueue(self, url: str, payload: dict[str, Any], key: str = "notice:1") -> None:
        """An `apprise.send` row as the daemon writes it: the target by id, never by URL."""
        self.dispatcher.apprise_targets = {target_id(url): url}
        with self.store.transaction() as conn:
            st.enqueue(conn, key, "apprise.send", dict(payload, target=target_id(url)), T0)

    def row(self, key: str = "notice:1") -> Any:
        [row] = self.store.query("SELECT * FROM outbox WHERE key = ?", (key,))
        return row

    def state_text(self) -> str:
        """Everything the state file says about deliveries."""
        rows = [*self.store.query("SELECT * FROM outbox"), *self.store.query("SELECT * FROM event")]
        return json.dumps([list(r) for r in rows])

    def deliveries(self, result: str) -> float:
        labels = {"op": "apprise.send", "result": result}
        return self.metrics.registry.get_sample_value("forewarn_deliveries_total", labels) or 0.0


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    overrides = tmp_path / "templates"
    for name, source in TEMPLATES.items():
        (overrides / name).parent.mkdir(parents=True, exist_ok=True)
        (overrides / name).write_text(source)
    path = tmp_path / "forewarn.db"
    store, metrics, clock = st.Store(path), Metrics(), FakeClock()
    dispatcher = Dispatcher(
        store, BuiltinTickets(str(path)), None, Renderer(str(overrides)), metrics, RETRY,
        clock=clock, apprise=AppriseChannel(timeout=2.0),
    )
    yield Rig(store, dispatcher, metrics, clock)
    store.close()


NOTICE = {"template": "notice", "kind": "scheduled", "language": "it",
          "context": MAINTENANCE_CONTEXT}


# --- the channel ----------------------------------------------------------------------------


def test_title_and_body_arrive(hook: Hook) -> None:
    text = "Ci stiamo lavorando.\nTicket #12"
    message = Message(to=(hook.url(),), subject="Gestionale lento", text=text)
    AppriseChannel(timeout=2.0).send(message)
    [request] = hook.received
    assert request.path == "/notify"
    assert (request.body["title"], request.body["message"]) == ("Gestionale lento", text)


def test_a_message_goes_to_exactly_one_url(hook: Hook) -> None:
    with pytest.raises(DeliveryError, match="one URL, not 2") as failure:
        AppriseChannel().send(Message(to=(hook.url("/a"), hook.url("/b")), subject="s", text="t"))
    assert failure.value.permanent
    assert hook.received == []


def test_a_service_that_never_answers_fails_within_the_timeout() -> None:
    with unresponsive_port() as port:
        started = time.monotonic()
        with pytest.raises(DeliveryError) as failure:
            AppriseChannel(timeout=0.3).send(
                Message(to=(f"json://127.0.0.1:{port}/notify",), subject="s", text="t")
            )
    assert not failure.value.permanent
    assert time.monotonic() - started < 3.0  # Apprise alone would wait 4 s to read


def test_target_id_is_short_stable_and_does_not_reveal_the_url() -> None:
    url = "tgram://123456789:AAE-SeCrEt/987654"
    assert target_id(url) == target_id(url)
    assert target_id(url) != target_id(url + "1")
    assert len(target_id(url)) == 12 and int(target_id(url), 16) >= 0
    assert "SeCrEt" not in target_id(url)


# --- through the dispatcher -----------------------------------------------------------------


def test_a_maintenance_notice_arrives_rendered_in_its_language(hook: Hook, rig: Rig) -> None:
    rig.enqueue(hook.url(), NOTICE)
    assert rig.dispatcher.run_once() == 1
    [request] = hook.received
    assert request.body["title"] == "[scheduled/it] Backup notturno"
    assert request.body["message"] == "Gestionale in manutenzione; ticket: nessuno"
    assert rig.row()["status"] == "done"
    assert rig.dispatcher.run_once() == 0


def test_an_escalation_goes_out_with_the_staff_template(hook: Hook, rig: Rig) -> None:
    context = {"incident": {"marker": "[forewarn:1a2b3c4d5e6f7a8b]"},
               "step": {"position": 2}, "acknowledge": "forewarn incidents ack 3"}
    rig.enqueue(hook.url(), {"template": "escalation", "context": context})
    assert rig.dispatcher.run_once() == 1
    [request] = hook.received
    assert request.body["title"] == "Escalation step 2: [forewarn:1a2b3c4d5e6f7a8b]"
    assert request.body["message"] == "Nobody has acknowledged it. forewarn incidents ack 3"


def test_a_failing_service_is_retried_and_the_notice_arrives_once(hook: Hook, rig: Rig) -> None:
    hook.status = 500
    rig.enqueue(hook.url(), NOTICE)
    assert rig.dispatcher.run_once() == 0
    row = rig.row()
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["last_error"].startswith("apprise json:") and "500" in row["last_error"]
    assert rig.dispatcher.run_once() == 0  # not due yet: not tried
    assert len(hook.received) == 1

    hook.status = 200
    rig.clock.now += RETRY.base * 1.2
    assert rig.dispatcher.run_once() == 1
    rig.clock.now += RETRY.cap * 1.2
    assert rig.dispatcher.run_once() == 0
    assert len(hook.received) == 2  # the refused one, then the one that was accepted
    assert (rig.row()["status"], rig.row()["last_error"]) == ("done", None)
    assert (rig.deliveries("retry"), rig.deliveries("ok")) == (1, 1)


def test_a_url_apprise_cannot_parse_is_dead_and_its_token_is_kept_out(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rig.enqueue("discrod://123456789/SeCrEt-WeBhOoK-ToKeN", NOTICE)  # a typo of discord://
    assert rig.dispatcher.run_once() == 0
    row = rig.row()
    assert (row["status"], row["attempts"]) == ("dead", 1)
    assert row["last_error"] == "not a valid Apprise URL (scheme 'discrod')"
    assert rig.deliveries("dead") == 1
    assert "SeCrEt-WeBhOoK-ToKeN" not in caplog.text
    assert "SeCrEt-WeBhOoK-ToKeN" not in rig.state_text()


def test_a_target_no_longer_configured_is_dead(hook: Hook, rig: Rig) -> None:
    rig.enqueue(hook.url(), NOTICE)
    rig.dispatcher.apprise_targets = {}  # a reload removed the URL
    assert rig.dispatcher.run_once() == 0
    row = rig.row()
    assert row["status"] == "dead"
    assert f"Apprise target {target_id(hook.url())} is no longer configured" in row["last_error"]
    assert hook.received == []


def test_the_secrets_of_a_url_never_reach_logs_or_the_state_file(
    hook: Hook, rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # Apprise and urllib3 write URLs at DEBUG
    secrets = ("PaSsWoRd-77", "SeCrEt-PaTh-99", "HeAdEr-SeCrEt-55")
    url = hook.url("/hooks/SeCrEt-PaTh-99", "forewarn:PaSsWoRd-77", "+X-Api-Key=HeAdEr-SeCrEt-55")
    hook.status = 503
    rig.enqueue(url, NOTICE)
    rig.dispatcher.run_once()
    hook.status = 200
    rig.clock.now += RETRY.cap * 1.2
    assert rig.dispatcher.run_once() == 1

    # the secrets were used: they are in the URL that reached the service
    sent = hook.received[-1]
    assert sent.path == "/hooks/SeCrEt-PaTh-99"
    assert sent.headers["X-Api-Key"] == "HeAdEr-SeCrEt-55"
    assert base64.b64decode(sent.headers["Authorization"].split()[1]) == b"forewarn:PaSsWoRd-77"
    assert "503" in caplog.text  # the failure was logged, with its reason
    for secret in (*secrets, url):
        assert secret not in caplog.text
        assert secret not in rig.state_text()
