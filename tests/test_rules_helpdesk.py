"""The two-way sync's decisions, one ticket state at a time."""

from __future__ import annotations

import pytest

from rules.helpdesk import (
    Acknowledge,
    IncidentSide,
    ReopenTicket,
    SilenceTarget,
    TicketSide,
    sync,
)

OPEN = IncidentSide(id=4, acknowledged=False, rejected=False, firing=True)


@pytest.mark.parametrize(
    ("ticket", "incident", "expected"),
    [
        (TicketSide("new", None, False), OPEN, []),
        (TicketSide("new", "ana", True), OPEN, [Acknowledge(4, "ana")]),
        (TicketSide("open", None, True), OPEN, [Acknowledge(4, "the help desk")]),
        (TicketSide("open", "ana", True), IncidentSide(4, True, False, True), []),
        (TicketSide("rejected", "bo", True), OPEN, [SilenceTarget(4, "bo")]),
        (TicketSide("rejected", "bo", True), IncidentSide(4, True, True, True), []),
        (
            TicketSide("resolved", "ana", True),
            IncidentSide(4, True, False, True),
            [ReopenTicket(4)],
        ),
        (TicketSide("resolved", "ana", True), IncidentSide(4, True, False, False), []),
        # forewarn's own resolution is not a person's: nothing to undo
        (TicketSide("resolved", None, False), OPEN, []),
    ],
)
def test_sync(ticket: TicketSide, incident: IncidentSide, expected: list[object]) -> None:
    assert sync(incident, ticket) == expected
