"""The built-in ticket store: the help desk forewarn brings along when there is no other.

Tickets live in SQLite, in the daemon's own state file, in tables prefixed `bt_` so they never
collide with the daemon's tables. The dispatcher thread writes through the `TicketBackend`
methods while the CLI (another process) reads and acts as the human side, so every call opens
its own short-lived connection: safe across threads and processes, with WAL and a busy timeout
absorbing the brief write locks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import ClassVar

from notifiers.base import DeliveryError, TicketDraft, TicketInfo

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
STATUSES = ("new", "open", "resolved", "rejected")
CLOSED_STATUSES = ("resolved", "rejected")
SYSTEM_AUTHOR = "forewarn"

SCHEMA = """
CREATE TABLE IF NOT EXISTS bt_ticket (
    -- AUTOINCREMENT: a ticket number, once shown to people, is never given to another ticket
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    marker TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'new'
        CHECK (status IN ('new', 'open', 'resolved', 'rejected')),
    priority TEXT NOT NULL DEFAULT 'medium',
    category TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    owner TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    resolved_at REAL,
    human_touched INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS bt_comment (
    id INTEGER PRIMARY KEY,
    ticket_id INTEGER NOT NULL REFERENCES bt_ticket(id),
    at REAL NOT NULL,
    author TEXT NOT NULL,
    text TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('comment', 'status'))
);
CREATE INDEX IF NOT EXISTS bt_comment_by_ticket ON bt_comment (ticket_id, id);
CREATE INDEX IF NOT EXISTS bt_ticket_by_status ON bt_ticket (status, id);
"""


class TicketNotFound(LookupError):
    """No ticket has this number."""


@dataclass(frozen=True)
class Comment:
    at: float
    author: str  # "forewarn" or a person
    text: str
    kind: str  # comment | status


@dataclass(frozen=True)
class Ticket:
    number: int
    marker: str
    subject: str
    body: str
    status: str
    priority: str
    category: str
    tags: tuple[str, ...]
    owner: str | None
    created_at: float
    updated_at: float
    resolved_at: float | None
    human_touched: bool
    comments: tuple[Comment, ...] = ()  # filled by `show`, empty in `list_tickets`

    @property
    def label(self) -> str:
        return f"#{self.number}"

    def info(self) -> TicketInfo:
        return TicketInfo(
            external_id=str(self.number),
            number=self.label,
            status=self.status,
            owner=self.owner,
            human_touched=self.human_touched,
        )


def parse_number(value: int | str) -> int:
    """Accept what people type and what the daemon stores: 12, "12", "#12"."""
    text = str(value).strip().removeprefix("#")
    if not text.isdigit():
        raise TicketNotFound(f"{value!r} is not a ticket number")
    return int(text)


class BuiltinTickets:
    kind: ClassVar[str] = "builtin"

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        with closing(self._connect()) as conn:
            # WAL is a property of the file: setting it once lets the CLI read while we write
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)

    @classmethod
    def from_config(cls, options: object, state_path: str) -> BuiltinTickets:
        return cls(state_path)

    # --- TicketBackend: what the daemon calls -------------------------------------------

    def create(self, draft: TicketDraft) -> TicketInfo:
        # Look before inserting, under the write lock: an INSERT that hits the UNIQUE marker
        # would still use up an AUTOINCREMENT number and leave a gap people notice.
        with self._delivery(), self._write() as conn:
            ticket = _select_one(conn, "marker = ?", draft.marker) or _insert_ticket(conn, draft)
        return ticket.info()

    def find_by_marker(self, marker: str) -> TicketInfo | None:
        with self._delivery(), closing(self._connect()) as conn:
            ticket = _select_one(conn, "marker = ?", marker)
        return ticket.info() if ticket else None

    def get(self, external_id: str) -> TicketInfo | None:
        try:
            ticket_id = parse_number(external_id)
        except TicketNotFound:
            return None
        with self._delivery(), closing(self._connect()) as conn:
            ticket = _select_one(conn, "id = ?", ticket_id)
        return ticket.info() if ticket else None

    def comment(self, external_id: str, text: str) -> None:
        with self._delivery():
            self.add_comment(external_id, SYSTEM_AUTHOR, text)

    def resolve(self, external_id: str, text: str) -> None:
        with self._delivery():
            self._set_status(external_id, "resolved", SYSTEM_AUTHOR, text, human=False)

    def reopen(self, external_id: str, text: str) -> None:
        with self._delivery():
            self._set_status(external_id, "open", SYSTEM_AUTHOR, text, human=False)

    # --- the human side: CLI and status page --------------------------------------------

    def list_tickets(self, status: str | None = None) -> list[Ticket]:
        """Tickets, newest first; `status` filters (new | open | resolved | rejected)."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        where, args = ("status = ?", (status,)) if status else ("1", ())
        with closing(self._connect()) as conn:
            rows = conn.execute(f"SELECT * FROM bt_ticket WHERE {where} ORDER BY id DESC", args)
            return [_ticket_from_row(row) for row in rows]

    def show(self, number: int | str) -> Ticket:
        """One ticket with its comments in order; raises TicketNotFound."""
        ticket_id = parse_number(number)
        with closing(self._connect()) as conn:
            ticket = _select_one(conn, "id = ?", ticket_id)
            if ticket is None:
                raise TicketNotFound(f"no ticket #{ticket_id}")
            rows = conn.execute(
                "SELECT at, author, text, kind FROM bt_comment WHERE ticket_id = ? ORDER BY id",
                (ticket_id,),
            )
            comments = tuple(Comment(*row) for row in rows)
        return dataclasses.replace(ticket, comments=comments)

    def take(self, number: int | str, owner: str) -> Ticket:
        """A person owns the ticket: it becomes open, and forewarn only comments from now on."""
        ticket_id = parse_number(number)
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE bt_ticket SET owner = ?, human_touched = 1, updated_at = ?,"
                " status = CASE status WHEN 'new' THEN 'open' ELSE status END WHERE id = ?",
                (owner, time.time(), ticket_id),
            ).rowcount
            _require(changed, ticket_id)
            _insert_comment(conn, ticket_id, owner, f"Taken by {owner}.", "status")
        return self.show(ticket_id)

    def close(self, number: int | str, status: str, author: str, text: str) -> Ticket:
        """A person closes the ticket as `resolved` or `rejected` (won't fix)."""
        if status not in CLOSED_STATUSES:
            raise ValueError(f"close status must be one of {CLOSED_STATUSES}, not {status!r}")
        self._set_status(number, status, author, text, human=True)
        return self.show(number)

    def add_comment(self, number: int | str, author: str, text: str) -> None:
        ticket_id = parse_number(number)
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE bt_ticket SET updated_at = ? WHERE id = ?", (time.time(), ticket_id)
            ).rowcount
            _require(changed, ticket_id)
            _insert_comment(conn, ticket_id, author, text, "comment")

    # --- plumbing -----------------------------------------------------------------------

    def _set_status(
        self, number: int | str, status: str, author: str, text: str, *, human: bool
    ) -> None:
        ticket_id, now = parse_number(number), time.time()
        resolved_at = now if status in CLOSED_STATUSES else None
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE bt_ticket SET status = ?, resolved_at = ?, updated_at = ?,"
                " human_touched = MAX(human_touched, ?) WHERE id = ?",
                (status, resolved_at, now, int(human), ticket_id),
            ).rowcount
            _require(changed, ticket_id)
            note = f"Status changed to {status}." + (f"\n\n{text}" if text else "")
            _insert_comment(conn, ticket_id, author, note, "status")
        log.info("builtin ticket #%d is now %s (by %s)", ticket_id, status, author)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in `_write`)
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the write lock up front, so two writers
        wait on the busy timeout instead of failing on a lock upgrade."""
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _delivery(self) -> Iterator[None]:
        """Speak the dispatcher's language: a missing ticket cannot be fixed by retrying,
        a locked or unreadable database may be."""
        try:
            yield
        except TicketNotFound as err:
            raise DeliveryError(str(err), permanent=True) from err
        except sqlite3.Error as err:
            raise DeliveryError(f"builtin ticket store: {err}", permanent=False) from err


def _insert_ticket(conn: sqlite3.Connection, draft: TicketDraft) -> Ticket:
    now = time.time()
    ticket_id = conn.execute(
        "INSERT INTO bt_ticket (marker, subject, body, priority, category, tags,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (draft.marker, draft.subject, draft.body, draft.priority, draft.category,
         json.dumps(list(draft.tags)), now, now),
    ).lastrowid
    log.info("builtin ticket #%s opened for %s", ticket_id, draft.marker)
    ticket = _select_one(conn, "id = ?", ticket_id)
    assert ticket is not None  # inserted just now, in this transaction
    return ticket


def _require(rowcount: int, ticket_id: int) -> None:
    if rowcount == 0:
        raise TicketNotFound(f"no ticket #{ticket_id}")


def _insert_comment(
    conn: sqlite3.Connection, ticket_id: int, author: str, text: str, kind: str
) -> None:
    conn.execute(
        "INSERT INTO bt_comment (ticket_id, at, author, text, kind) VALUES (?, ?, ?, ?, ?)",
        (ticket_id, time.time(), author, text, kind),
    )


def _select_one(conn: sqlite3.Connection, where: str, arg: object) -> Ticket | None:
    row = conn.execute(f"SELECT * FROM bt_ticket WHERE {where}", (arg,)).fetchone()
    return _ticket_from_row(row) if row else None


def _ticket_from_row(row: sqlite3.Row) -> Ticket:
    return Ticket(
        number=row["id"],
        marker=row["marker"],
        subject=row["subject"],
        body=row["body"],
        status=row["status"],
        priority=row["priority"],
        category=row["category"],
        tags=tuple(json.loads(row["tags"])),
        owner=row["owner"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        resolved_at=row["resolved_at"],
        human_touched=bool(row["human_touched"]),
    )

