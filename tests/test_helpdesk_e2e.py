"""End to end against real help desks: `forewarn run` as a subprocess probing a loopback HTTP
service, its tickets in a real Redmine 5 and a real Request Tracker 5 (tests/redmine_server.py,
tests/rt_server.py), everything checked through the help desk's own REST API.

What a person does at the help desk (take a ticket, reject it) is done through that API as the
user `agent`. The figures printed here (fault to ticket, ticket taken to acknowledged, ticket
rejected to silence) are the ones quoted in the notes; `pytest -s` shows them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cli_runner import forewarn
from daemon_process import DaemonProcess, daemon_head, http_probe, wait_until
from http_service import HttpService, free_port
from redmine_server import RedmineServer, redmine_server  # noqa: F401  (the fixture)
from rt_server import RtServer, rt_server  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

RULE = "intranet_failing"
SEVERITY_NOTE = "Severity changed from warning to critical"
REOPEN_NOTE = "The problem came back"
RESOLVED_NOTE = "the problem is gone"
ANSWER_HEADERS = ("content-type", "location")  # what the proxy passes back

CONFIG = """
[helpdesk]
kind = "{kind}"
contact = "the help desk, extension 1234"
sync_interval = "1s"
{helpdesk_options}
{probe}
# An error answer is a warning, no answer at all is critical: the test flips between them.
[[rule]]
name = "{rule}"
probe = "intranet"
metric = "http_status_code"
condition = "value != 200"
critical = "value == 0"
severity = "warning"
# The test breaks and mends the service faster than any real outage would.
flap_detection = false
service = "the intranet"
category = "web"
summary = "The intranet is failing"
"""


# --- the help desks, as their own REST APIs show them --------------------------------------------


class Desk:
    """One help desk seen from outside forewarn: its tickets, and what a person does there."""

    kind: str
    secret_env: str
    create_path: str  # the path of the call that creates a ticket (POST)
    new_status: str
    resolved_status: str
    reopened_status: str
    server: RedmineServer | RtServer

    def __init__(self, server: RedmineServer | RtServer) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def secret(self) -> str:
        raise NotImplementedError

    def helpdesk_options(self, url: str) -> str:
        """The backend's keys of the `[helpdesk]` table, the secret from `secret_env`."""
        raise NotImplementedError

    def ticket_ids(self, marker: str) -> list[str]:
        """Every ticket whose subject holds exactly `marker`, oldest first."""
        raise NotImplementedError

    def status(self, ticket: str) -> str:
        raise NotImplementedError

    def notes(self, ticket: str) -> list[str]:
        """The comments on the ticket, in order (not its description)."""
        raise NotImplementedError

    def related(self, ticket: str) -> list[str]:
        raise NotImplementedError

    @property
    def agent_name(self) -> str:
        """The agent as the help desk names a ticket's owner."""
        raise NotImplementedError

    def take(self, ticket: str) -> None:
        """The agent makes the ticket theirs."""
        raise NotImplementedError

    def reject(self, ticket: str) -> None:
        """The agent closes the ticket as won't fix."""
        raise NotImplementedError

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()


class RedmineDesk(Desk):
    kind = "redmine"
    secret_env = "FOREWARN_TEST_REDMINE_KEY"
    create_path = "/issues.json"
    new_status = "New"
    resolved_status = "Resolved"
    reopened_status = "New"  # the backend's default: a reopen is not a person at work
    server: RedmineServer

    @property
    def secret(self) -> str:
        return self.server.admin_key

    def helpdesk_options(self, url: str) -> str:
        return (
            f'url = "{url}"\napi_key = {{ env = "{self.secret_env}" }}\n'
            f'project = "{self.server.project}"\ntimeout = "5s"'
        )

    def ticket_ids(self, marker: str) -> list[str]:
        params = {
            "project_id": self.server.project,
            "status_id": "*",
            "subject": f"~{marker}",
            "sort": "id",
            "limit": 100,
        }
        issues = self.server.api("GET", "/issues.json", params=params).json()["issues"]
        return [str(issue["id"]) for issue in issues if marker in issue["subject"]]

    def _issue(self, ticket: str, include: str = "") -> dict[str, Any]:
        params = {"include": include} if include else {}
        issue: dict[str, Any] = self.server.api(
            "GET", f"/issues/{ticket}.json", params=params
        ).json()["issue"]
        return issue

    def status(self, ticket: str) -> str:
        return str(self._issue(ticket)["status"]["name"])

    def notes(self, ticket: str) -> list[str]:
        return [j["notes"] for j in self._issue(ticket, "journals")["journals"] if j["notes"]]

    def related(self, ticket: str) -> list[str]:
        relations = self._issue(ticket, "relations").get("relations", [])  # none: no key
        ends = [(str(r["issue_id"]), str(r["issue_to_id"])) for r in relations]
        return [other for pair in ends for other in pair if other != ticket]

    def _agent_change(self, ticket: str, **fields: Any) -> None:
        self.server.api(
            "PUT", f"/issues/{ticket}.json", self.server.agent_key, json={"issue": fields}
        )

    def _agent(self) -> dict[str, Any]:
        found = self.server.api("GET", "/users/current.json", self.server.agent_key).json()
        return dict(found["user"])

    @property
    def agent_name(self) -> str:
        agent = self._agent()
        return f"{agent['firstname']} {agent['lastname']}"

    def take(self, ticket: str) -> None:
        self._agent_change(ticket, assigned_to_id=self._agent()["id"])

    def reject(self, ticket: str) -> None:
        statuses = self.server.api("GET", "/issue_statuses.json").json()["issue_statuses"]
        [rejected] = [s["id"] for s in statuses if s["name"] == "Rejected"]
        self._agent_change(ticket, status_id=rejected)


class RtDesk(Desk):
    kind = "rt"
    secret_env = "FOREWARN_TEST_RT_TOKEN"
    create_path = "/REST/2.0/ticket"
    new_status = "new"
    resolved_status = "resolved"
    reopened_status = "open"
    server: RtServer

    @property
    def secret(self) -> str:
        return self.server.token

    def helpdesk_options(self, url: str) -> str:
        return (
            f'url = "{url}"\ntoken = {{ env = "{self.secret_env}" }}\n'
            f'queue = "{self.server.queue}"\ntimeout = "5s"'
        )

    def _get(self, path: str, **params: str) -> Any:
        answer = requests.get(
            self.server.api + path,
            params=params,
            headers={"Authorization": f"token {self.server.token}"},
            timeout=30,
        )
        answer.raise_for_status()
        return answer.json()

    def ticket_ids(self, marker: str) -> list[str]:
        found = self._get(
            "/tickets",
            query=f"Subject LIKE '{marker}'",
            fields="Subject",
            orderby="id",
            order="ASC",
            per_page="100",
        )
        return [str(item["id"]) for item in found["items"] if marker in item["Subject"]]

    def status(self, ticket: str) -> str:
        return str(self._get(f"/ticket/{ticket}")["Status"])

    def notes(self, ticket: str) -> list[str]:
        path = f"/ticket/{ticket}"
        attachments = self._get(
            path + "/attachments", fields="Content,TransactionId", per_page="100"
        )["items"]
        texts = {a["TransactionId"]: a["Content"] for a in attachments}
        history = self._get(path + "/history", fields="Type", per_page="100")["items"]
        return [texts.get(t["id"], "") for t in history if t["Type"] in ("Comment", "Correspond")]

    def related(self, ticket: str) -> list[str]:
        links = self._get(f"/ticket/{ticket}")["_hyperlinks"]
        return [str(link["id"]) for link in links if link["ref"] == "refers-to"]

    @property
    def agent_name(self) -> str:
        return self.server.agent

    def take(self, ticket: str) -> None:
        self.server.as_agent("PUT", f"/ticket/{ticket}", Owner=self.server.agent)

    def reject(self, ticket: str) -> None:
        self.server.as_agent("PUT", f"/ticket/{ticket}", Status="rejected")


@pytest.fixture(params=["redmine", "rt"])
def desk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Desk:
    server = request.getfixturevalue(f"{request.param}_server")
    found: Desk = RedmineDesk(server) if request.param == "redmine" else RtDesk(server)
    monkeypatch.setenv(found.secret_env, found.secret)  # the daemons inherit it
    return found


# --- the service and the daemons -----------------------------------------------------------------


class SwitchableService(HttpService):
    """The loopback service of http_service, answering `status` (200 healthy, 503 failing)."""

    def __init__(self) -> None:
        super().__init__()
        self.status = 200

    def start(self) -> None:
        super().start()
        assert self._server is not None
        self._server.RequestHandlerClass = _answering(self)


def _answering(service: SwitchableService) -> type[BaseHTTPRequestHandler]:
    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"ok\n" if service.status == 200 else b"unavailable\n"
            self.send_response(service.status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Answer


class Forewarn:
    """One `forewarn run` with its own state directory and config."""

    def __init__(
        self,
        home: Path,
        desk: Desk,
        service: SwitchableService,
        desk_url: str,
        reopen_within: str = "1h",
    ) -> None:
        home.mkdir()
        self.state = home / "state"
        self.config = home / "config.toml"
        metrics_port = free_port()
        self.config.write_text(
            daemon_head(self.state, metrics_port, reopen_within=reopen_within)
            + CONFIG.format(
                kind=desk.kind,
                helpdesk_options=desk.helpdesk_options(desk_url),
                probe=http_probe("intranet", service.url),
                rule=RULE,
            )
        )
        self.daemon = DaemonProcess(self.config, home / "daemon.log", metrics_port)

    def start_healthy(self) -> None:
        self.daemon.start()
        wait_until(
            lambda: 'forewarn_http_status_code{probe="intranet"' in (self.daemon.metrics() or ""),
            10,
            "a first probe run",
        )

    def rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        database = self.state / "forewarn.db"
        if not database.exists():
            return []
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, args).fetchall()

    def marker(self, incident: int = 1) -> str | None:
        found = self.rows("SELECT marker FROM incident WHERE id = ?", incident)
        return str(found[0]["marker"]) if found else None

    def ticket_id(self, incident: int = 1) -> str | None:
        found = self.rows("SELECT external_id FROM ticket WHERE incident_id = ?", incident)
        return str(found[0]["external_id"]) if found else None

    def outbox_depth(self) -> float:
        for line in (self.daemon.metrics() or "").splitlines():
            if line.startswith("forewarn_outbox_depth "):
                return float(line.split()[1])
        return 0.0

    def cli(self, *command: str) -> Any:
        done = forewarn(*command, "--json", "-c", str(self.config))
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def service() -> Iterator[SwitchableService]:
    service = SwitchableService()
    service.start()
    yield service
    service.stop()


@pytest.fixture
def daemons() -> Iterator[list[Forewarn]]:
    """Every daemon a test starts is stopped at its end, and must have exited cleanly. Their
    logs are printed: pytest shows them when the test failed."""
    started: list[Forewarn] = []
    yield started
    codes = [(fw.daemon.stop(), fw) for fw in started]
    for code, fw in codes:
        print(f"--- {fw.config.parent.name}'s log (exit code {code}):\n{fw.daemon.log()}")
    assert [code for code, _ in codes] == [0] * len(codes)


def _forewarn(
    tmp_path: Path,
    daemons: list[Forewarn],
    desk: Desk,
    service: SwitchableService,
    name: str = "forewarn",
    desk_url: str | None = None,
    reopen_within: str = "1h",
) -> Forewarn:
    fw = Forewarn(tmp_path / name, desk, service, desk_url or desk.url, reopen_within)
    daemons.append(fw)
    return fw


def _ticket_of(desk: Desk, fw: Forewarn, incident: int = 1, timeout: float = 20) -> str:
    """The one ticket carrying the incident's marker, once the help desk shows it."""

    def found() -> list[str] | None:
        marker = fw.marker(incident)
        return desk.ticket_ids(marker) if marker else None

    tickets = wait_until(found, timeout, f"a ticket for incident {incident}", interval=0.05)
    assert len(tickets) == 1, f"tickets {tickets} carry the marker {fw.marker(incident)}"
    return tickets[0]


def _wait_status(desk: Desk, ticket: str, status: str, timeout: float = 20) -> None:
    wait_until(
        lambda: desk.status(ticket) == status,
        timeout,
        f"ticket {ticket} in status {status}",
        interval=0.05,
    )


def _wait_note(desk: Desk, ticket: str, words: str, count: int = 1, timeout: float = 20) -> None:
    wait_until(
        lambda: sum(words in note for note in desk.notes(ticket)) >= count,
        timeout,
        f"note {count} saying {words!r} on ticket {ticket}",
        interval=0.05,
    )


def _story(notes: list[str]) -> list[str]:
    """What each of forewarn's comments on a ticket said, in order."""
    kinds = {SEVERITY_NOTE: "severity", REOPEN_NOTE: "reopened", RESOLVED_NOTE: "resolved"}
    return [
        next((kind for words, kind in kinds.items() if words in note), note[:60]) for note in notes
    ]


# --- 1. the life of one problem's ticket ---------------------------------------------------------


def test_outage_opens_updates_resolves_reopens_and_links_tickets(
    tmp_path: Path, desk: Desk, service: SwitchableService, daemons: list[Forewarn]
) -> None:
    reopen_within = 4.0
    fw = _forewarn(tmp_path, daemons, desk, service, reopen_within=f"{reopen_within:g}s")
    fw.start_healthy()

    fault = time.monotonic()
    service.status = 503  # a warning
    ticket = _ticket_of(desk, fw)
    print(f"\nfault_to_ticket_{desk.kind} {time.monotonic() - fault:.2f} s")
    assert desk.status(ticket) == desk.new_status

    service.stop()  # no answer at all: critical
    _wait_note(desk, ticket, SEVERITY_NOTE)

    service.status = 200
    service.start()
    _wait_status(desk, ticket, desk.resolved_status)

    service.stop()  # back inside the reopen window: the same ticket
    _wait_note(desk, ticket, REOPEN_NOTE)
    assert desk.status(ticket) == desk.reopened_status
    service.start()
    _wait_status(desk, ticket, desk.resolved_status)
    assert fw.rows("SELECT COUNT(*) AS n FROM incident")[0]["n"] == 1

    [resolved] = fw.rows("SELECT resolved_at FROM incident WHERE id = 1")
    time.sleep(max(0.0, resolved["resolved_at"] + reopen_within + 0.5 - time.time()))
    service.stop()  # after the window: a new incident, a new ticket linked to the old one
    recurrence = _ticket_of(desk, fw, incident=2)
    wait_until(lambda: desk.related(recurrence) == [ticket], 10, "the link to the old ticket")

    assert recurrence != ticket and fw.marker(2) != fw.marker(1)
    assert desk.ticket_ids(str(fw.marker(1))) == [ticket]  # still one ticket per marker
    assert desk.status(ticket) == desk.resolved_status
    assert _story(desk.notes(ticket)) == ["severity", "resolved", "reopened", "resolved"]


# --- 2. faults -----------------------------------------------------------------------------------


def test_help_desk_down_during_an_outage_the_outbox_waits(
    tmp_path: Path, desk: Desk, service: SwitchableService, daemons: list[Forewarn]
) -> None:
    fw = _forewarn(tmp_path, daemons, desk, service)
    fw.start_healthy()
    desk.stop()
    try:
        service.status = 503
        wait_until(lambda: fw.marker(), 10, "the incident")
        service.stop()  # critical: a comment waits behind the ticket's creation
        wait_until(lambda: fw.outbox_depth() >= 2, 10, "the create and the comment waiting")
        wait_until(
            lambda: fw.rows("SELECT 1 FROM outbox WHERE op = 'ticket.create' AND attempts >= 2"),
            15,
            "a retry of the create",
        )
    finally:
        desk.start()

    ticket = _ticket_of(desk, fw, timeout=30)
    _wait_note(desk, ticket, SEVERITY_NOTE, timeout=30)
    service.status = 200
    service.start()
    _wait_status(desk, ticket, desk.resolved_status)
    wait_until(lambda: fw.outbox_depth() == 0, 10, "an empty outbox")

    assert desk.ticket_ids(str(fw.marker())) == [ticket]
    assert _story(desk.notes(ticket)) == ["severity", "resolved"]


class HoldingProxy:
    """A loopback HTTP proxy to the help desk that, while `hold` is set, passes a create call
    on but keeps its answer back: the ticket exists, the daemon has not heard of it yet."""

    def __init__(self, target: str, create_path: str) -> None:
        self.target = target.rstrip("/")
        self.create_path = create_path
        self.hold = True
        self.created = threading.Event()
        self.release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _proxying(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            answer = requests.request(
                method,
                self.target + path,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=30,
            )
        except requests.RequestException as exc:
            print(f"proxy: {method} {path}: {exc}")
            return 502, {"Content-Type": "text/plain"}, b"bad gateway\n"
        if self.hold and method == "POST" and path.split("?")[0] == self.create_path:
            self.created.set()
            self.release.wait(30)
        kept = {k: v for k, v in answer.headers.items() if k.lower() in ANSWER_HEADERS}
        return answer.status_code, kept, answer.content

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


def _proxying(proxy: HoldingProxy) -> type[BaseHTTPRequestHandler]:
    class Forward(BaseHTTPRequestHandler):
        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("host", "content-length", "connection")
            }
            status, answer_headers, content = proxy.forward(self.command, self.path, headers, body)
            try:
                self.send_response(status)
                for name, value in answer_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)
            except OSError:
                pass  # the daemon was killed while waiting for this answer

        do_GET = do_POST = do_PUT = do_DELETE = _any

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Forward


@pytest.fixture
def proxy(desk: Desk) -> Iterator[HoldingProxy]:
    """Asked for before `daemons`, so it outlives them."""
    proxy = HoldingProxy(desk.url, desk.create_path)
    yield proxy
    proxy.close()


def test_kill_9_between_create_and_storing_the_id_finds_the_ticket(
    tmp_path: Path,
    desk: Desk,
    service: SwitchableService,
    proxy: HoldingProxy,
    daemons: list[Forewarn],
) -> None:
    fw = _forewarn(tmp_path, daemons, desk, service, desk_url=proxy.url)
    fw.start_healthy()
    service.status = 503
    assert proxy.created.wait(20), fw.daemon.log()

    # The window: the help desk has the ticket, the state has only the attempt.
    [ticket] = desk.ticket_ids(str(fw.marker()))
    [create] = fw.rows("SELECT status, attempts FROM outbox WHERE op = 'ticket.create'")
    assert (create["status"], create["attempts"]) == ("pending", 1)
    assert fw.ticket_id() is None
    fw.daemon.kill9()
    proxy.hold = False
    proxy.release.set()

    fw.daemon.start()
    wait_until(fw.ticket_id, 20, "the ticket id stored")
    assert fw.ticket_id() == ticket
    assert "found by its marker" in fw.daemon.log_path.read_text()
    service.status = 200
    _wait_status(desk, ticket, desk.resolved_status)
    assert desk.ticket_ids(str(fw.marker())) == [ticket]


def test_two_forewarns_share_one_ticket(
    tmp_path: Path, desk: Desk, service: SwitchableService, daemons: list[Forewarn]
) -> None:
    first = _forewarn(tmp_path, daemons, desk, service, name="first")
    second = _forewarn(tmp_path, daemons, desk, service, name="second")
    first.start_healthy()
    service.status = 503
    ticket = _ticket_of(desk, first)

    # The second sees the same outage a moment later: it must find the first's ticket.
    second.daemon.start()
    wait_until(second.ticket_id, 20, "the second's ticket")

    assert second.marker() == first.marker()
    assert second.ticket_id() == ticket
    assert desk.ticket_ids(str(first.marker())) == [ticket]
    service.status = 200
    _wait_status(desk, ticket, desk.resolved_status)
    assert desk.ticket_ids(str(first.marker())) == [ticket]


# --- 3. the human side ---------------------------------------------------------------------------


def test_ticket_taken_acknowledges_and_rejected_silences(
    tmp_path: Path, desk: Desk, service: SwitchableService, daemons: list[Forewarn]
) -> None:
    fw = _forewarn(tmp_path, daemons, desk, service)
    fw.start_healthy()
    service.status = 503
    ticket = _ticket_of(desk, fw)

    taken = time.monotonic()
    desk.take(ticket)
    [incident] = wait_until(
        lambda: [i for i in fw.cli("incidents") if i["acknowledged_by"]],
        15,
        "the incident acknowledged",
        interval=0.2,
    )
    print(f"\nticket_taken_to_acknowledged_{desk.kind} {time.monotonic() - taken:.2f} s")
    assert incident["acknowledged_by"] == f"{desk.agent_name} (help desk)"

    rejected = time.monotonic()
    desk.reject(ticket)
    [silence] = wait_until(lambda: fw.cli("silences"), 15, "a silence", interval=0.2)
    print(f"ticket_rejected_to_silence_{desk.kind} {time.monotonic() - rejected:.2f} s")
    assert f'rule="{RULE}"' in silence["matchers"]
    assert f'url="{service.url}"' in silence["matchers"]
    assert silence["author"] == desk.agent_name and silence["status"] == "active"
