"""A human resolution: a person says an incident is over (the API's `resolve`).

It follows the help-desk sync's rules for a ticket a person resolved (`rules.helpdesk.sync`):
the person owns the incident now (it is acknowledged, if nobody had), and while the problem
goes on the resolution does not hold (the sync would reopen the ticket), so it is refused
unless forced. What it writes is what the engine writes when a problem recovers: the incident
and its alerts resolved, a `resolved` event (whose `lasted` feeds the estimates of the next
time), and the ticket resolved through the outbox, all in one transaction.
"""

from __future__ import annotations

import sqlite3

from monitor import store as st
from rules.helpdesk import Acknowledge, IncidentSide, ReopenTicket, TicketSide, sync

__all__ = ["Refused", "resolve_by_hand"]


class Refused(Exception):
    """The incident cannot be resolved: `missing` when there is no such incident."""

    def __init__(self, reason: str, missing: bool = False) -> None:
        super().__init__(reason)
        self.missing = missing


def resolve_by_hand(
    store: st.Store,
    incident_id: int,
    who: str,
    comment: str,
    now: float,
    *,
    force: bool = False,
    source: str = "api",
) -> None:
    """Resolve the open incident as `who` did; Refused says why not.

    With `force` an incident whose alerts still fire is resolved too: its alerts count as
    resolved, and the problem opens an incident again only once it recovers and fires anew.
    """
    row = _open_incident(store, incident_id)
    firing = store.firing_members(incident_id, besides="")
    side = IncidentSide(incident_id, row["acknowledged_at"] is not None, False, firing > 0)
    decisions = sync(side, TicketSide("resolved", who, human_touched=True))
    if any(isinstance(d, ReopenTicket) for d in decisions) and not force:
        raise Refused(
            f"incident {incident_id} still has {firing} firing alert(s): forewarn resolves it "
            'when they recover; acknowledge it to stop escalation, or send "force": true'
        )
    with store.transaction() as conn:
        if any(isinstance(d, Acknowledge) for d in decisions):
            st.mark_acknowledged(conn, incident_id, who, now, source=source)
        if not st.mark_resolved(conn, incident_id, now):
            raise Refused(f"incident {incident_id} is not open any more")
        detail = {"by": who, "comment": comment, "source": source, "forced": firing > 0}
        lasted = max(0.0, now - row["opened_at"])
        event_id = st.add_event(conn, incident_id, now, "resolved", lasted=lasted, **detail)
        _tell_ticket(store, conn, row, _ticket_text(who, comment, firing), now, event_id)


def _open_incident(store: st.Store, incident_id: int) -> sqlite3.Row:
    row = store.incident(incident_id)
    if row is None:
        raise Refused(f"no incident {incident_id}", missing=True)
    if row["status"] != "open":
        raise Refused(f"incident {incident_id} is {row['status']} already")
    return row


def _ticket_text(who: str, comment: str, firing: int) -> str:
    text = f"Resolved by {who}." + (f"\n\n{comment}" if comment else "")
    if firing:
        text += (
            f"\n\n{firing} of its alerts still fired: forewarn opens an incident again "
            "once they recover and fire anew."
        )
    return text


def _tell_ticket(
    store: st.Store,
    conn: sqlite3.Connection,
    row: sqlite3.Row,
    text: str,
    now: float,
    event_id: int,
) -> None:
    """Resolve the incident's ticket, or tell its root cause's ticket: as the engine does."""
    if row["muted"]:
        return  # a muted episode opened no ticket: nothing to close
    if row["parent_id"] is None:
        # The key of the engine's own resolution of this episode: one resolution at most.
        key = f"incident:{row['id']}:episode:{row['episode']}:ticket.resolve"
        # Forced: a person decided, so a ticket in human hands is resolved, not commented.
        st.enqueue(conn, key, "ticket.resolve", {"text": text, "force": True}, now, row["id"])
        return
    root = row["parent_id"]
    if store.ticket_for(root) is None and store.pending_create(root) is None:
        return
    note = f"Incident {row['id']} ({row['summary']}), a symptom of this one:\n\n{text}"
    key = f"incident:{root}:event:{event_id}:ticket.comment"
    st.enqueue(conn, key, "ticket.comment", {"text": note}, now, root)
