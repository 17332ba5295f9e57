"""What the help desk's side of a ticket means for its incident (the two-way sync), as pure
decisions: a ticket a person took acknowledges the incident (escalation stops); a ticket closed
as rejected (won't fix) silences the rule for that target until someone re-arms it; a ticket a
person resolved while the problem still fires is reopened with a comment saying so.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TicketSide:
    """The human side of a ticket as the help desk reports it (normalised statuses)."""

    status: str  # new | open | resolved | rejected
    owner: str | None
    human_touched: bool


@dataclass(frozen=True)
class IncidentSide:
    """What forewarn knows of the incident behind the ticket."""

    id: int
    acknowledged: bool
    rejected: bool  # a rejection was already turned into a silence
    firing: bool  # the problem still goes on


@dataclass(frozen=True)
class Acknowledge:
    incident_id: int
    by: str


@dataclass(frozen=True)
class SilenceTarget:
    incident_id: int
    by: str


@dataclass(frozen=True)
class ReopenTicket:
    incident_id: int


SyncDecision = Acknowledge | SilenceTarget | ReopenTicket


def sync(incident: IncidentSide, ticket: TicketSide) -> list[SyncDecision]:
    """The decisions one look at the ticket calls for ([] when nothing changed)."""
    who = ticket.owner or "the help desk"
    if ticket.status == "rejected":
        return [] if incident.rejected else [SilenceTarget(incident.id, who)]
    decisions: list[SyncDecision] = []
    taken = ticket.owner is not None or (ticket.status == "open" and ticket.human_touched)
    if taken and not incident.acknowledged:
        decisions.append(Acknowledge(incident.id, who))
    if ticket.status == "resolved" and ticket.human_touched and incident.firing:
        decisions.append(ReopenTicket(incident.id))
    return decisions
