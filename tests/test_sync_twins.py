"""Two replicas that opened a ticket for the same problem at the same instant converge on one,
in a real Redmine (see redmine_server).

The race is injected: replica B's marker search, made in the same instant as A's create, does
not see A's ticket (the one window the search before create cannot close). Everything else
is real: both replicas' engines, state stores, dispatchers and help-desk syncs, and Redmine.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from comms_parts import HEAD, Parts, web_down, wire
from redmine_server import RedmineServer, redmine_server  # noqa: F401

from monitor.config import parse_config
from monitor.dispatcher import Dispatcher
from monitor.sync import TWIN_WINDOW, HelpdeskSync
from notifiers.redmine import RedmineTickets
from notifiers.render import Renderer
from probes.base import Sample

T0 = 1_800_000_000.0
CONFIG = HEAD + web_down()


@dataclass
class Replica:
    parts: Parts
    backend: RedmineTickets
    dispatcher: Dispatcher
    sync: HelpdeskSync

    def ticket(self) -> tuple[str, str]:
        [row] = self.parts.store.query("SELECT external_id, number FROM ticket")
        return row["external_id"], row["number"]


def replica(state: Path, server: RedmineServer, url: str) -> Replica:
    parts = wire(parse_config(CONFIG.format(state=state), "c.toml"))
    options = RedmineTickets.Options(
        url=server.url, api_key=server.admin_key, project=server.project, timeout=10.0
    )
    backend = RedmineTickets(options)
    clock = lambda: T0  # noqa: E731
    dispatcher = Dispatcher(parts.store, backend, None, Renderer(), parts.metrics, clock=clock)
    sample = Sample("http_up", 0.0, T0, {"url": url, "probe": "web"})
    parts.engine.process([sample], T0)
    return Replica(parts, backend, dispatcher, HelpdeskSync(parts.store, backend, clock=clock))


@pytest.fixture
def twins(
    tmp_path: Path,
    redmine_server: RedmineServer,  # noqa: F811  (the imported fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Replica, Replica]]:
    url = f"http://intranet/{uuid.uuid4().hex}"  # a problem (a marker) of this test alone
    a = replica(tmp_path / "a", redmine_server, url)
    b = replica(tmp_path / "b", redmine_server, url)
    a.dispatcher.run_once()  # A opens its ticket...
    with monkeypatch.context() as race:  # ...while B's search, a moment earlier, saw nothing
        race.setattr(b.backend, "find_by_marker", lambda marker: None)
        b.dispatcher.run_once()
    assert a.ticket() != b.ticket(), "the injected race should have opened twin tickets"
    yield a, b
    a.parts.store.close()
    b.parts.store.close()


def test_twins_converge_on_the_newest_ticket(twins: tuple[Replica, Replica]) -> None:
    a, b = twins
    older, newer = a.ticket(), b.ticket()

    assert b.sync.run_once() == 0  # B holds the newest: it keeps it
    assert a.sync.run_once() == 1  # A closes its twin and adopts B's
    assert a.ticket() == b.ticket() == newer
    closed = a.backend.get(older[0])
    assert closed is not None and closed.status == "resolved"
    kept = a.backend.get(newer[0])
    assert kept is not None and kept.status == "new"
    events = [r["kind"] for r in a.parts.store.query("SELECT kind FROM event ORDER BY id")]
    assert "ticket_merged" in events
    assert a.sync.run_once() == 0 and b.sync.run_once() == 0  # converged


def test_old_tickets_are_not_searched_for_twins(twins: tuple[Replica, Replica]) -> None:
    a, _b = twins
    older = a.ticket()
    a.sync.clock = lambda: T0 + TWIN_WINDOW + 1
    a.sync.run_once()
    assert a.ticket() == older
