"""The daemon's state: one SQLite file (WAL) holding alerts, incidents, tickets, the outbox and
the append-only event log.

A state change and the outbox rows it causes are written in one transaction, so a crash at any
point leaves either both or neither. The outbox's unique idempotency key makes writing the same
side effect twice a no-op.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rules.model import AlertState, IncidentView, Phase, Severity
from rules.silences import Silence, parse_matcher

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert (
    fingerprint TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    labels TEXT NOT NULL,
    phase TEXT NOT NULL,
    severity INTEGER NOT NULL,
    changed_at REAL NOT NULL,
    active_since REAL,
    value REAL,
    error TEXT,
    evaluated_at REAL NOT NULL,
    cleared_since REAL,
    predicted_at REAL,
    flapping INTEGER NOT NULL DEFAULT 0,
    flap_changes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS incident (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    marker TEXT NOT NULL,
    rule TEXT NOT NULL,
    labels TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    episode INTEGER NOT NULL DEFAULT 1,
    severity INTEGER NOT NULL,
    priority TEXT NOT NULL,
    category TEXT NOT NULL DEFAULT '',
    service TEXT NOT NULL DEFAULT '',
    summary TEXT NOT NULL DEFAULT '',
    first_opened_at REAL NOT NULL,
    opened_at REAL NOT NULL,
    resolved_at REAL,
    acknowledged_at REAL,
    acknowledged_by TEXT,
    parent_id INTEGER REFERENCES incident(id),
    intermittent INTEGER NOT NULL DEFAULT 0,
    flap_changes INTEGER NOT NULL DEFAULT 0,
    -- 1 while a silence or maintenance window holds back this episode's ticket and messages
    muted INTEGER NOT NULL DEFAULT 0,
    predicted_at REAL,
    route TEXT NOT NULL DEFAULT ''  -- the [[route]] whose help desk has the ticket ('' default)
);
CREATE UNIQUE INDEX IF NOT EXISTS incident_one_open
    ON incident(fingerprint) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS incident_by_fingerprint ON incident(fingerprint, id);
CREATE INDEX IF NOT EXISTS incident_by_parent ON incident(parent_id) WHERE parent_id IS NOT NULL;
-- The alerts of an incident: one for a plain rule, several for a group or a root cause.
CREATE TABLE IF NOT EXISTS incident_alert (
    incident_id INTEGER NOT NULL REFERENCES incident(id),
    fingerprint TEXT NOT NULL,
    rule TEXT NOT NULL,
    labels TEXT NOT NULL,
    summary TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
    since REAL NOT NULL,
    until REAL,
    PRIMARY KEY (incident_id, fingerprint)
);
CREATE INDEX IF NOT EXISTS incident_alert_by_fingerprint ON incident_alert(fingerprint);
CREATE TABLE IF NOT EXISTS silence (
    id INTEGER PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    author TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ticket (
    incident_id INTEGER PRIMARY KEY REFERENCES incident(id),
    backend TEXT NOT NULL,
    external_id TEXT NOT NULL,
    number TEXT NOT NULL,
    url TEXT,
    marker TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    incident_id INTEGER REFERENCES incident(id),
    op TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(status, next_attempt_at);
-- Done rows are kept: finding an incident's ticket operations must not scan them all.
CREATE INDEX IF NOT EXISTS outbox_by_incident ON outbox(incident_id, op);
CREATE TABLE IF NOT EXISTS event (
    id INTEGER PRIMARY KEY,
    incident_id INTEGER REFERENCES incident(id),
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS event_by_incident ON event(incident_id, id);
-- Which audience got which user notice: each step once (the unique key). `subject` is
-- 'incident:<id>:<episode>' or 'maintenance:<window>:<start>'; audience '@ticket' records the
-- ticket's still-open comments.
CREATE TABLE IF NOT EXISTS notice (
    id INTEGER PRIMARY KEY,
    subject TEXT NOT NULL,
    incident_id INTEGER REFERENCES incident(id),
    episode INTEGER,
    audience TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL,
    eta_at REAL,
    next_update_at REAL,
    UNIQUE (subject, audience, kind, seq)
);
CREATE INDEX IF NOT EXISTS notice_by_incident ON notice(incident_id, episode);
-- An escalation step fires once per episode.
CREATE TABLE IF NOT EXISTS escalation_fired (
    incident_id INTEGER NOT NULL REFERENCES incident(id),
    episode INTEGER NOT NULL,
    step INTEGER NOT NULL,
    policy TEXT NOT NULL,
    fired_at REAL NOT NULL,
    urgent INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (incident_id, episode, step)
);
"""


@dataclass(frozen=True)
class OutboxRow:
    id: int
    key: str
    incident_id: int | None
    op: str
    payload: dict[str, Any]
    attempts: int
    created_at: float


@dataclass(frozen=True)
class TicketRef:
    incident_id: int
    backend: str
    external_id: str
    number: str
    url: str | None
    marker: str


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection tuned for a small, durable, concurrently read state file."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    else:
        # Shared by the main loop, the dispatcher and scrapes; `Store` serialises use with a lock.
        conn = sqlite3.connect(str(path), timeout=10, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed outbox row survives a power cut, not only a kill -9.
        conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.row_factory = sqlite3.Row
    return conn


class Store:
    """All reads and writes of the daemon's own tables. Thread-safe: one connection, one lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect(self.path)
        self._lock = threading.RLock()
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params))

    # --- alerts -------------------------------------------------------------------------

    def load_alerts(self) -> dict[str, AlertState]:
        return {
            row["fingerprint"]: _alert_from_row(row) for row in self.query("SELECT * FROM alert")
        }

    # --- incidents ----------------------------------------------------------------------

    def open_incident(self, fingerprint: str) -> IncidentView | None:
        rows = self.query(
            "SELECT * FROM incident WHERE fingerprint = ? AND status = 'open'", (fingerprint,)
        )
        return incident_view(rows[0]) if rows else None

    def last_incident(self, fingerprint: str) -> IncidentView | None:
        rows = self.query(
            "SELECT * FROM incident WHERE fingerprint = ? ORDER BY id DESC LIMIT 1", (fingerprint,)
        )
        return incident_view(rows[0]) if rows else None

    def incident(self, incident_id: int) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM incident WHERE id = ?", (incident_id,))
        return rows[0] if rows else None

    def route_of(self, incident_id: int) -> str:
        rows = self.query("SELECT route FROM incident WHERE id = ?", (incident_id,))
        return str(rows[0]["route"]) if rows else ""

    def firing_members(self, incident_id: int, besides: str) -> int:
        """How many alerts of the incident, other than `besides`, still fire."""
        rows = self.query(
            "SELECT COUNT(*) FROM incident_alert WHERE incident_id = ? AND fingerprint != ?"
            " AND status = 'firing'",
            (incident_id, besides),
        )
        return int(rows[0][0])

    def open_roots(self, rules: tuple[str, ...]) -> list[sqlite3.Row]:
        """Open incidents of these rules that are root causes themselves (no parent)."""
        marks = ",".join("?" * len(rules))
        return self.query(
            f"SELECT * FROM incident WHERE status = 'open' AND parent_id IS NULL"
            f" AND rule IN ({marks}) ORDER BY id",
            rules,
        )

    def members(self, incident_id: int) -> list[dict[str, Any]]:
        """The alerts of an incident, oldest first, as templates see them."""
        rows = self.query(
            "SELECT * FROM incident_alert WHERE incident_id = ? ORDER BY since", (incident_id,)
        )
        return [
            {
                "summary": r["summary"],
                "labels": json.loads(r["labels"]),
                "status": r["status"],
                "since": r["since"],
                "until": r["until"],
                "rule": r["rule"],
            }
            for r in rows
        ]

    def orphaned_symptoms(self, resolved_before: float) -> list[sqlite3.Row]:
        """Open symptoms whose root cause resolved before the given time."""
        return self.query(
            "SELECT child.* FROM incident child JOIN incident root ON child.parent_id = root.id"
            " WHERE child.status = 'open' AND root.status = 'resolved'"
            " AND root.resolved_at <= ? ORDER BY child.id",
            (resolved_before,),
        )

    def muted_incidents(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM incident WHERE status = 'open' AND muted = 1")

    def silences(self, now: float) -> list[sqlite3.Row]:
        """Silences that have not ended yet (active or scheduled)."""
        return self.query("SELECT * FROM silence WHERE ends_at > ? ORDER BY id", (now,))

    # --- tickets ------------------------------------------------------------------------

    def ticket_for(self, incident_id: int) -> TicketRef | None:
        rows = self.query("SELECT * FROM ticket WHERE incident_id = ?", (incident_id,))
        if not rows:
            return None
        return _ticket_ref(rows[0])

    # --- outbox -------------------------------------------------------------------------

    def earlier_tickets(self, incident_id: int) -> list[TicketRef]:
        """Tickets of earlier incidents of the same problem (recurrences after the window)."""
        rows = self.query(
            "SELECT t.* FROM ticket t JOIN incident old ON old.id = t.incident_id"
            " JOIN incident new ON new.fingerprint = old.fingerprint"
            " WHERE new.id = ? AND old.id < new.id ORDER BY old.id",
            (incident_id,),
        )
        return [_ticket_ref(r) for r in rows]

    def due_outbox(self, now: float, limit: int = 50) -> list[OutboxRow]:
        rows = self.query(
            "SELECT * FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?"
            " ORDER BY id LIMIT ?",
            (now, limit),
        )
        return [_outbox_from_row(r) for r in rows]

    def pending_create(self, incident_id: int) -> sqlite3.Row | None:
        """The incident's ticket.create row, when it has not been delivered yet."""
        rows = self.query(
            "SELECT * FROM outbox WHERE incident_id = ? AND op = 'ticket.create'"
            " AND status != 'done'",
            (incident_id,),
        )
        return rows[0] if rows else None

    def failed_deliveries_since(self, since: float) -> int:
        """Deliveries given up on (a permanent error) after `since`."""
        rows = self.query(
            "SELECT COUNT(*) FROM event WHERE kind = 'delivery_failed' AND at > ?", (since,)
        )
        return int(rows[0][0])

    def outbox_stats(self, now: float) -> tuple[int, float, int]:
        """(pending rows, age in seconds of the oldest pending row, dead rows)."""
        row = self.query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE status = 'pending'"
        )[0]
        dead = self.query("SELECT COUNT(*) AS n FROM outbox WHERE status = 'dead'")[0]["n"]
        oldest = now - row["oldest"] if row["oldest"] is not None else 0.0
        return int(row["n"]), float(oldest), int(dead)


# --- writes inside a transaction (take the connection the transaction yielded) --------------


def save_alert(conn: sqlite3.Connection, state: AlertState) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO alert VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            state.fingerprint,
            state.rule,
            json.dumps(state.labels, sort_keys=True),
            state.phase.value,
            int(state.severity),
            state.changed_at,
            state.active_since,
            state.value,
            state.error,
            state.evaluated_at,
            state.cleared_since,
            state.predicted_at,
            int(state.flapping),
            state.flap_changes,
        ),
    )


def delete_alert(conn: sqlite3.Connection, fingerprint: str) -> None:
    conn.execute("DELETE FROM alert WHERE fingerprint = ?", (fingerprint,))


def add_event(
    conn: sqlite3.Connection, incident_id: int | None, at: float, kind: str, **detail: Any
) -> int:
    cur = conn.execute(
        "INSERT INTO event (incident_id, at, kind, detail) VALUES (?,?,?,?)",
        (incident_id, at, kind, json.dumps(detail, sort_keys=True)),
    )
    return int(cur.lastrowid or 0)


def enqueue(
    conn: sqlite3.Connection,
    key: str,
    op: str,
    payload: dict[str, Any],
    now: float,
    incident_id: int | None = None,
    not_before: float | None = None,
) -> None:
    """Add a side effect to the outbox; the same key twice is the same side effect."""
    conn.execute(
        "INSERT OR IGNORE INTO outbox (key, incident_id, op, payload, next_attempt_at, created_at)"
        " VALUES (?,?,?,?,?,?)",
        (key, incident_id, op, json.dumps(payload, sort_keys=True), not_before or now, now),
    )


def _alert_from_row(row: sqlite3.Row) -> AlertState:
    return AlertState(
        fingerprint=row["fingerprint"],
        rule=row["rule"],
        labels=json.loads(row["labels"]),
        phase=Phase(row["phase"]),
        severity=Severity(row["severity"]),
        changed_at=row["changed_at"],
        active_since=row["active_since"],
        value=row["value"] if row["value"] is not None else float("nan"),
        error=row["error"],
        evaluated_at=row["evaluated_at"],
        cleared_since=row["cleared_since"],
        predicted_at=row["predicted_at"],
        flapping=bool(row["flapping"]),
        flap_changes=row["flap_changes"],
    )


def incident_view(row: sqlite3.Row) -> IncidentView:
    return IncidentView(
        id=row["id"],
        fingerprint=row["fingerprint"],
        episode=row["episode"],
        status=row["status"],
        severity=Severity(row["severity"]),
        opened_at=row["opened_at"],
        resolved_at=row["resolved_at"],
        intermittent=bool(row["intermittent"]),
        rule=row["rule"],
    )


def silence_from_row(row: sqlite3.Row) -> Silence:
    """A stored silence as the rule engine matches it (raises ValueError for a bad row)."""
    return Silence(
        id=str(row["id"]),
        matchers=tuple(parse_matcher(m) for m in json.loads(row["matchers"])),
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        author=row["author"],
        comment=row["comment"],
    )


def _ticket_ref(r: sqlite3.Row) -> TicketRef:
    return TicketRef(
        r["incident_id"], r["backend"], r["external_id"], r["number"], r["url"], r["marker"]
    )


def _outbox_from_row(row: sqlite3.Row) -> OutboxRow:
    return OutboxRow(
        id=row["id"],
        key=row["key"],
        incident_id=row["incident_id"],
        op=row["op"],
        payload=json.loads(row["payload"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
    )


def mark_acknowledged(
    conn: sqlite3.Connection, incident_id: int, owner: str, now: float, **detail: Any
) -> int | None:
    """Record that `owner` owns the open incident (escalation stops): the event's id, or None
    when it is not open or someone acknowledged it already. `detail` goes into the event."""
    changed = conn.execute(
        "UPDATE incident SET acknowledged_at = ?, acknowledged_by = ?"
        " WHERE id = ? AND status = 'open' AND acknowledged_at IS NULL",
        (now, owner, incident_id),
    ).rowcount
    if not changed:
        return None
    return add_event(conn, incident_id, now, "acknowledged", **({"by": owner} | detail))


def mark_resolved(conn: sqlite3.Connection, incident_id: int, now: float) -> bool:
    """The incident and its firing alerts resolved at `now`; False when it was not open."""
    changed = conn.execute(
        "UPDATE incident SET status = 'resolved', resolved_at = ?, muted = 0"
        " WHERE id = ? AND status = 'open'",
        (now, incident_id),
    ).rowcount
    conn.execute(
        "UPDATE incident_alert SET status = 'resolved', until = ? WHERE incident_id = ?"
        " AND status = 'firing'",
        (now, incident_id),
    )
    return bool(changed)


def acknowledge(store: Store, incident_id: int, who: str, comment: str, now: float) -> bool:
    """A human owns the incident: record it, and say so on the ticket. False if not open."""
    with store.transaction() as conn:
        event_id = mark_acknowledged(conn, incident_id, who, now, comment=comment)
        if event_id is None:
            return False
        text = f"Acknowledged by {who}." + (f"\n\n{comment}" if comment else "")
        enqueue(
            conn,
            f"incident:{incident_id}:event:{event_id}:ticket.comment",
            "ticket.comment",
            {"text": text},
            now,
            incident_id,
        )
    return True


def shift_pending(store: Store, jump: float) -> int:
    """The wall clock stepped by `jump`: pending deliveries stay due as far ahead as they were
    (a retry due in 10 s is still due in 10 s). The number of rows moved."""
    with store.transaction() as conn:
        return conn.execute(
            "UPDATE outbox SET next_attempt_at = next_attempt_at + ? WHERE status = 'pending'",
            (jump,),
        ).rowcount


def record_user_report(
    store: Store,
    incident_id: int,
    who: str,
    reported_at: float,
    note: str,
    now: float,
    source: str,
) -> int | None:
    """A user reported the incident's problem at `reported_at` (to the help desk, by phone):
    a `user_report` event, from which "detected before a user reported it" is measured, and
    a comment on the ticket. The event's id, or None when there is no such incident."""
    with store.transaction() as conn:
        row = conn.execute(
            "SELECT parent_id, muted FROM incident WHERE id = ?", (incident_id,)
        ).fetchone()
        if row is None:
            return None
        event_id = add_event(
            conn,
            incident_id,
            now,
            "user_report",
            by=who,
            reported_at=reported_at,
            note=note,
            source=source,
        )
        # A symptom's or a muted episode's ticket is not the one people work on.
        if row["parent_id"] is None and not row["muted"]:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(reported_at))
            text = f"Reported by a user: {who}, at {stamp}." + (f"\n\n{note}" if note else "")
            key = f"incident:{incident_id}:event:{event_id}:ticket.comment"
            enqueue(conn, key, "ticket.comment", {"text": text}, now, incident_id)
    return event_id
