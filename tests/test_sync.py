"""The two-way sync against the built-in help desk: a person taking, rejecting or resolving
a ticket changes what forewarn does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from smtp_server import SmtpTestServer
from test_dispatcher import ROOT, T0, Rig, build_rig

from monitor.sync import HelpdeskSync
from rules.silences import Silence, muted, parse_matcher


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with SmtpTestServer() as smtp:
        yield build_rig(tmp_path, smtp)


def opened(rig: Rig) -> HelpdeskSync:
    rig.feed(95.0)
    rig.dispatcher.run_once()
    assert rig.tickets.show(1).status == "new"
    return HelpdeskSync(rig.store, rig.backend, clock=lambda: T0 + 60)


def incident(rig: Rig) -> dict[str, object]:
    return dict(rig.store.query("SELECT * FROM incident")[0])


def test_an_untouched_ticket_changes_nothing(rig: Rig) -> None:
    sync = opened(rig)
    assert sync.run_once() == 0
    assert incident(rig)["acknowledged_at"] is None


def test_a_ticket_taken_by_a_person_acknowledges_the_incident(rig: Rig) -> None:
    sync = opened(rig)
    rig.tickets.take(1, "ana")
    assert sync.run_once() == 1
    row = incident(rig)
    assert (row["acknowledged_at"], row["acknowledged_by"]) == (T0 + 60, "ana (help desk)")
    assert rig.events("acknowledged") == [{"by": "ana", "source": "helpdesk"}]
    assert sync.run_once() == 0  # once


def test_a_rejected_ticket_silences_the_rule_for_that_target(rig: Rig) -> None:
    sync = opened(rig)
    rig.tickets.close(1, "rejected", "bo", "works as intended")
    assert sync.run_once() == 1
    [row] = rig.store.silences(T0 + 60)
    matchers = tuple(parse_matcher(m) for m in json.loads(row["matchers"]))
    silence = Silence(
        str(row["id"]), matchers, row["starts_at"], row["ends_at"], row["author"], row["comment"]
    )
    labels = {"rule": "disk_full", **ROOT}
    assert muted(labels, [silence], [], T0 + 86400 * 365) is silence
    assert muted({**labels, "mountpoint": "/srv"}, [silence], [], T0 + 60) is None
    assert sync.run_once() == 0  # one silence, not one per look


def test_a_ticket_resolved_by_a_person_while_it_still_fails_is_reopened(rig: Rig) -> None:
    sync = opened(rig)
    rig.tickets.close(1, "resolved", "ana", "rebooted")
    assert sync.run_once() == 1
    rig.clock.advance(60)
    rig.dispatcher.run_once()
    ticket = rig.tickets.show(1)
    assert ticket.status == "open"
    assert "the problem is still there" in ticket.comments[-1].text
