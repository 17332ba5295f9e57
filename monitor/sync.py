"""The two-way sync: reads the human side of every open incident's ticket back from the help
desk, on a schedule, and acts on it (decisions in `rules.helpdesk`).

It runs in a thread of its own because it talks to the help desk; what it changes goes to the
state store in short transactions, and what it says on tickets goes through the outbox.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping

from monitor import store as st
from notifiers.base import DeliveryError, TicketBackend, TicketInfo
from rules.helpdesk import (
    Acknowledge,
    IncidentSide,
    ReopenTicket,
    SilenceTarget,
    SyncDecision,
    TicketSide,
    sync,
)
from rules.silences import Matcher, MatchOp

log = logging.getLogger(__name__)

# Twins appear only when two replicas open a ticket at the same moment: look for one while the
# ticket is young, not for ever (a marker search per open incident and pass).
TWIN_WINDOW = 3600.0
SILENCE_YEARS = 10  # "until someone re-arms it": `forewarn silences expire ID`


class HelpdeskSync:
    def __init__(
        self,
        store: st.Store,
        backend: TicketBackend,
        clock: Callable[[], float] = time.time,
        routes: Mapping[str, TicketBackend] | None = None,
    ) -> None:
        self.store = store
        self.backend = backend  # the [helpdesk] one; `routes` by [[route]] name
        self.routes = dict(routes or {})
        self.clock = clock

    def run_once(self) -> int:
        """Look at every open incident's ticket once; return how many decisions were taken."""
        taken = 0
        for row in self.store.query(
            "SELECT i.*, t.external_id, t.number, t.created_at AS ticket_created_at FROM"
            " incident i JOIN ticket t ON t.incident_id = i.id WHERE i.status = 'open'"
        ):
            backend = self.routes.get(row["route"], self.backend)
            if self._merge_twin(backend, row):
                taken += 1
                continue  # the row changed: read the adopted ticket at the next pass
            info = self._read(backend, row["external_id"])
            if info is None:
                continue
            for decision in sync(self._incident(row), _side(info)):
                self._apply(row, decision, info)
                taken += 1
        return taken

    def _merge_twin(self, backend: TicketBackend, row: sqlite3.Row) -> bool:
        """Two replicas that looked for the marker at the same instant both found nothing and
        both opened a ticket. The help desk answers a marker search with the newest ticket:
        the replica whose ticket is not that one closes its own as a duplicate and adopts
        the newest, so both converge on one ticket within a sync interval."""
        if self.clock() - row["ticket_created_at"] > TWIN_WINDOW:
            return False
        try:
            newest = backend.find_by_marker(row["marker"])
        except DeliveryError as exc:
            log.warning("cannot look for a twin of ticket %s: %s", row["number"], exc)
            return False
        if not _is_twin(newest, row["external_id"]):
            return False
        assert newest is not None
        text = (
            f"Duplicate of ticket {newest.number}, opened at the same moment by another"
            " forewarn replica for the same problem; the work goes on there."
        )
        try:
            backend.resolve(row["external_id"], text)
        except DeliveryError as exc:
            log.warning("cannot close duplicate ticket %s: %s", row["number"], exc)
            return False
        self._adopt(row, newest)
        return True

    def _adopt(self, row: sqlite3.Row, newest: TicketInfo) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE ticket SET external_id = ?, number = ?, url = ? WHERE incident_id = ?",
                (newest.external_id, newest.number, newest.url, row["id"]),
            )
            st.add_event(
                conn,
                row["id"],
                self.clock(),
                "ticket_merged",
                closed=row["number"],
                into=newest.number,
            )
        log.info(
            "ticket %s was a twin of %s: closed it, %s is the incident's ticket now",
            row["number"],
            newest.number,
            newest.number,
        )

    def _read(self, backend: TicketBackend, external_id: str) -> TicketInfo | None:
        try:
            return backend.get(external_id)
        except DeliveryError as exc:  # the help desk is down: look again next time
            log.warning("cannot read ticket %s back: %s", external_id, exc)
            return None

    def _incident(self, row: sqlite3.Row) -> IncidentSide:
        firing = self.store.firing_members(row["id"], besides="")
        rejected = self.store.query(
            "SELECT 1 FROM event WHERE incident_id = ? AND kind = 'rejected' AND at >= ?",
            (row["id"], row["opened_at"]),
        )
        return IncidentSide(
            row["id"], row["acknowledged_at"] is not None, bool(rejected), firing > 0
        )

    def _apply(self, row: sqlite3.Row, decision: SyncDecision, info: TicketInfo) -> None:
        now = self.clock()
        with self.store.transaction() as conn:
            if isinstance(decision, Acknowledge | SilenceTarget):
                owner = f"{decision.by} (help desk)"
                st.mark_acknowledged(conn, row["id"], owner, now, by=decision.by, source="helpdesk")
            if isinstance(decision, SilenceTarget):
                _silence_target(conn, row, decision.by, now)
            elif isinstance(decision, ReopenTicket):
                _reopen(conn, row, info, now)
        log.info("ticket %s: %s", row["number"], type(decision).__name__)


def _is_twin(newest: TicketInfo | None, ours: str) -> bool:
    """Another, still open ticket carries our marker and is the newest."""
    return (
        newest is not None
        and newest.external_id != ours
        and newest.status not in ("resolved", "rejected")
    )


def _side(info: TicketInfo) -> TicketSide:
    return TicketSide(info.status, info.owner, info.human_touched)


def _silence_target(conn: sqlite3.Connection, row: sqlite3.Row, by: str, now: float) -> None:
    """Won't fix: this rule on this target says nothing more until someone re-arms it."""
    labels = {"rule": row["rule"], **json.loads(row["labels"])}
    matchers = [str(Matcher(name, MatchOp.EQUAL, value)) for name, value in sorted(labels.items())]
    comment = f"ticket {row['number']} closed as rejected; re-arm with: forewarn silences expire"
    cur = conn.execute(
        "INSERT INTO silence (matchers, starts_at, ends_at, author, comment, created_at)"
        " VALUES (?,?,?,?,?,?)",
        (json.dumps(matchers), now, now + SILENCE_YEARS * 365 * 86400, by, comment, now),
    )
    st.add_event(conn, row["id"], now, "rejected", by=by, silence=cur.lastrowid)


def _reopen(conn: sqlite3.Connection, row: sqlite3.Row, info: TicketInfo, now: float) -> None:
    """A person resolved the ticket, but the problem goes on: say so, and reopen it."""
    event_id = st.add_event(conn, row["id"], now, "reopened_ticket", resolved_by=info.owner)
    text = (
        f"This ticket was resolved, but the problem is still there: {row['summary']}.\n"
        "forewarn reopens it; it will resolve it itself once the problem is gone."
    )
    st.enqueue(
        conn,
        f"incident:{row['id']}:event:{event_id}:ticket.reopen",
        "ticket.reopen",
        {"text": text, "force": True},
        now,
        row["id"],
    )


class SyncLoop:
    """Runs `HelpdeskSync.run_once` every `interval` seconds in a thread of its own."""

    def __init__(self, sync_: HelpdeskSync, interval: float, wake: Callable[[], None]) -> None:
        self.sync = sync_
        self.interval = interval
        self.wake = wake  # the dispatcher, when there is something to deliver
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="helpdesk-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.sync.run_once():
                    self.wake()
            except Exception:  # one bad look must not end the sync
                log.exception("help-desk sync failed")
