"""Two replicas that opened a ticket for the same problem at the same instant converge on one.

The race itself is injected: a help desk in memory (answering a marker search with the newest
ticket, as Redmine and RT do here) receives a second ticket with our marker, as the other
replica would have opened it. Everything else is real: engine, state store, dispatcher, sync.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from comms_parts import HEAD, wire

from monitor.config import parse_config
from monitor.dispatcher import Dispatcher
from monitor.sync import TWIN_WINDOW, HelpdeskSync
from notifiers.base import TicketDraft, TicketInfo
from notifiers.render import Renderer
from probes.base import Sample

T0 = 1_800_000_000.0
CONFIG = (
    HEAD
    + """
[[probe]]
name = "web"
kind = "http"
url = "http://127.0.0.1:9/"

[[rule]]
name = "web_down"
probe = "web"
metric = "http_up"
condition = "value == 0"
"""
)


class SharedHelpdesk:
    """Tickets in memory; `find_by_marker` returns the newest, like the real backends."""

    kind = "shared"

    def __init__(self) -> None:
        self.tickets: dict[str, TicketInfo] = {}
        self.markers: dict[str, str] = {}
        self.comments: dict[str, list[str]] = {}

    def create(self, draft: TicketDraft) -> TicketInfo:
        external_id = str(len(self.tickets) + 1)
        info = TicketInfo(external_id, f"#{external_id}", "new")
        self.tickets[external_id], self.markers[external_id] = info, draft.marker
        return info

    def find_by_marker(self, marker: str) -> TicketInfo | None:
        ids = [i for i, m in self.markers.items() if m == marker]
        return self.tickets[max(ids, key=int)] if ids else None

    def comment(self, external_id: str, text: str) -> None:
        self.comments.setdefault(external_id, []).append(text)

    def resolve(self, external_id: str, text: str) -> None:
        self.comment(external_id, text)
        self.tickets[external_id] = dataclasses.replace(
            self.tickets[external_id], status="resolved"
        )

    def reopen(self, external_id: str, text: str) -> None:
        self.comment(external_id, text)

    def get(self, external_id: str) -> TicketInfo | None:
        return self.tickets.get(external_id)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[SharedHelpdesk, HelpdeskSync, object]]:
    parts = wire(parse_config(CONFIG.format(state=tmp_path / "state"), "c.toml"))
    helpdesk = SharedHelpdesk()
    clock = [T0]
    dispatcher = Dispatcher(
        parts.store, helpdesk, None, Renderer(), parts.metrics, clock=lambda: clock[0]
    )
    sample = Sample("http_up", 0.0, T0, {"url": "http://intranet/", "probe": "web"})
    parts.engine.process([sample], T0)
    dispatcher.run_once()  # our ticket, #1
    yield helpdesk, HelpdeskSync(parts.store, helpdesk, clock=lambda: clock[0]), parts.store
    parts.store.close()


def test_the_older_twin_is_closed_and_the_newest_adopted(setup: tuple) -> None:
    helpdesk, sync, store = setup
    [marker] = set(helpdesk.markers.values())
    helpdesk.create(TicketDraft(marker=marker, subject="twin", body=""))  # the other replica's

    assert sync.run_once() == 1
    [ticket] = store.query("SELECT number, external_id FROM ticket")
    assert (ticket["number"], ticket["external_id"]) == ("#2", "2")
    assert helpdesk.tickets["1"].status == "resolved"
    assert "Duplicate of ticket #2" in helpdesk.comments["1"][0]
    assert helpdesk.tickets["2"].status == "new"
    events = [r["kind"] for r in store.query("SELECT kind FROM event ORDER BY id")]
    assert "ticket_merged" in events
    assert sync.run_once() == 0  # converged: the newest is ours now


def test_the_newest_twin_keeps_its_ticket(setup: tuple) -> None:
    helpdesk, sync, store = setup
    [marker] = set(helpdesk.markers.values())
    # The other replica's twin is older: it will adopt ours; we change nothing.
    helpdesk.markers["0"] = marker
    helpdesk.tickets["0"] = TicketInfo("0", "#0", "new")
    assert sync.run_once() == 0
    [ticket] = store.query("SELECT number FROM ticket")
    assert ticket["number"] == "#1" and helpdesk.tickets["1"].status == "new"


def test_old_tickets_are_not_searched_again(setup: tuple) -> None:
    helpdesk, sync, store = setup
    [marker] = set(helpdesk.markers.values())
    helpdesk.create(TicketDraft(marker=marker, subject="twin", body=""))
    sync.clock = lambda: T0 + TWIN_WINDOW + 1
    sync.run_once()
    [ticket] = store.query("SELECT number FROM ticket")
    assert ticket["number"] == "#1"
