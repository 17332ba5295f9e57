"""The built-in ticket store, on a real SQLite file shared the way the daemon shares it."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from notifiers import TICKET_BACKENDS, builtin
from notifiers.base import DeliveryError, TicketDraft
from notifiers.builtin import BuiltinTickets, TicketNotFound

MARKER = "[forewarn:1a2b3c4d5e6f7a8b]"


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "forewarn.db")


@pytest.fixture
def store(db_path: str) -> BuiltinTickets:
    return BuiltinTickets(db_path)


SUBJECT = "[CRITICAL] Intranet is not answering"


def draft(marker: str = MARKER, subject: str = SUBJECT) -> TicketDraft:
    return TicketDraft(
        marker=marker, subject=subject, body=f"Intranet is down.\n{marker}\n",
        priority="high", category="web", tags=("intranet", "priority:high"),
    )


def test_registered_under_its_kind() -> None:
    assert TICKET_BACKENDS["builtin"] is BuiltinTickets
    assert BuiltinTickets.kind == "builtin"


def test_create_opens_a_new_ticket_that_can_be_found_again(store: BuiltinTickets) -> None:
    before = time.time()
    info = store.create(draft())

    assert (info.external_id, info.number, info.status) == ("1", "#1", "new")
    assert info.owner is None and not info.human_touched
    assert store.find_by_marker(MARKER) == info
    assert store.get("1") == info
    ticket = store.show(1)
    assert (ticket.subject, ticket.priority, ticket.category) == (SUBJECT, "high", "web")
    assert ticket.tags == ("intranet", "priority:high")
    assert MARKER in ticket.body
    assert before <= ticket.created_at == ticket.updated_at <= time.time()
    assert ticket.resolved_at is None and ticket.comments == ()


def test_create_is_idempotent_by_marker(store: BuiltinTickets) -> None:
    first = store.create(draft())
    again = store.create(draft(subject="a retry after an unknown outcome"))
    other = store.create(draft(marker="[forewarn:ffff]"))

    assert again == first
    assert other.number == "#2"
    assert store.show(first.number).subject == SUBJECT
    assert len(store.list_tickets()) == 2


def test_marker_uniqueness_is_enforced_by_the_database(store: BuiltinTickets, db_path: str) -> None:
    store.create(draft())
    with sqlite3.connect(db_path) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO bt_ticket (marker, subject, body, created_at, updated_at)"
            " VALUES (?, 's', 'b', 0, 0)", (MARKER,),
        )


def test_unknown_tickets_are_none(store: BuiltinTickets) -> None:
    assert store.find_by_marker(MARKER) is None
    assert store.get("7") is None
    assert store.get("not a number") is None


def test_comment_resolve_and_reopen_keep_every_update_in_order(store: BuiltinTickets) -> None:
    number = store.create(draft()).external_id
    store.comment(number, "Severity is now critical.")
    store.resolve(number, "Recovered after 3 min 10 s.")
    resolved = store.show(number)
    assert resolved.status == "resolved"
    assert resolved.resolved_at is not None

    store.reopen(number, "The problem came back (episode 2).")
    reopened = store.show(number)
    assert reopened.status == "open"
    assert reopened.resolved_at is None
    assert [(c.author, c.kind) for c in reopened.comments] == [
        ("forewarn", "comment"), ("forewarn", "status"), ("forewarn", "status")]
    texts = [c.text for c in reopened.comments]
    assert texts[0] == "Severity is now critical."
    assert "resolved" in texts[1] and "Recovered after 3 min 10 s." in texts[1]
    assert "open" in texts[2] and "episode 2" in texts[2]
    assert [c.at for c in reopened.comments] == sorted(c.at for c in reopened.comments)
    assert not reopened.human_touched  # forewarn's own changes are not a human's


@pytest.mark.parametrize("operation", ["comment", "resolve", "reopen"])
def test_a_missing_ticket_is_a_permanent_delivery_error(
    store: BuiltinTickets, operation: str
) -> None:
    with pytest.raises(DeliveryError) as caught:
        getattr(store, operation)("42", "text")
    assert caught.value.permanent
    assert "#42" in str(caught.value)


def test_list_is_newest_first_and_filters_by_status(store: BuiltinTickets) -> None:
    for n in range(3):
        store.create(draft(marker=f"[forewarn:{n}]"))
    store.resolve("2", "gone")

    assert [t.number for t in store.list_tickets()] == [3, 2, 1]
    assert [t.number for t in store.list_tickets("new")] == [3, 1]
    assert [t.label for t in store.list_tickets("resolved")] == ["#2"]
    assert store.list_tickets("rejected") == []
    with pytest.raises(ValueError, match="status"):
        store.list_tickets("closed")


def test_take_gives_an_owner_and_marks_the_ticket_as_touched(store: BuiltinTickets) -> None:
    store.create(draft())
    taken = store.take("#1", "alice")

    assert (taken.owner, taken.status, taken.human_touched) == ("alice", "open", True)
    assert taken.comments[-1].author == "alice"
    assert taken.comments[-1].kind == "status"
    info = store.get("1")
    assert info is not None
    assert (info.owner, info.status, info.human_touched) == ("alice", "open", True)


def test_take_keeps_a_closed_status(store: BuiltinTickets) -> None:
    store.create(draft())
    store.resolve("1", "gone")
    assert store.take(1, "bob").status == "resolved"


def test_close_by_a_human(store: BuiltinTickets) -> None:
    store.create(draft())
    closed = store.close(1, "rejected", "alice", "Won't fix: the test server is retired.")

    assert closed.status == "rejected"
    assert closed.human_touched
    assert closed.resolved_at is not None
    last = closed.comments[-1]
    assert (last.author, last.kind) == ("alice", "status")
    assert "Won't fix" in last.text


def test_close_refuses_a_status_that_does_not_close(store: BuiltinTickets) -> None:
    store.create(draft())
    with pytest.raises(ValueError, match="close status"):
        store.close(1, "open", "alice", "")
    assert store.show(1).status == "new"


def test_human_comment_does_not_count_as_touching(store: BuiltinTickets) -> None:
    store.create(draft())
    store.add_comment("#1", "alice", "Looking into it.")
    ticket = store.show(1)
    assert not ticket.human_touched
    assert (ticket.comments[-1].author, ticket.comments[-1].kind) == ("alice", "comment")


@pytest.mark.parametrize("number", [99, "#99", "junk"])
def test_human_operations_on_a_missing_ticket(store: BuiltinTickets, number: int | str) -> None:
    with pytest.raises(TicketNotFound):
        store.show(number)
    with pytest.raises(TicketNotFound):
        store.take(number, "alice")
    with pytest.raises(TicketNotFound):
        store.close(number, "resolved", "alice", "")


def test_numbers_are_never_reused(store: BuiltinTickets, db_path: str) -> None:
    store.create(draft(marker="[forewarn:a]"))
    store.create(draft(marker="[forewarn:b]"))
    with sqlite3.connect(db_path) as conn:
        conn.execute("DELETE FROM bt_ticket WHERE id = 2")
    assert store.create(draft(marker="[forewarn:c]")).number == "#3"


def test_lives_in_the_daemon_state_file_beside_its_tables(db_path: str) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE incident (id INTEGER PRIMARY KEY, fingerprint TEXT)")
    BuiltinTickets(db_path).create(draft())
    BuiltinTickets(db_path)  # a second start finds its tables in place

    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        tables = {name for (name,) in rows}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"incident", "bt_ticket", "bt_comment"} <= tables


def test_another_instance_sees_the_same_tickets(store: BuiltinTickets, db_path: str) -> None:
    # the CLI opens its own BuiltinTickets on the daemon's file
    store.create(draft())
    cli = BuiltinTickets(db_path)
    cli.take(1, "alice")
    info = store.get("1")
    assert info is not None and info.owner == "alice"


def test_two_threads_creating_at_once_make_one_ticket_per_marker(store: BuiltinTickets) -> None:
    shared = [f"[forewarn:shared{n}]" for n in range(20)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []
    numbers: dict[str, set[str]] = {marker: set() for marker in shared}

    def worker(name: str) -> None:
        try:
            start.wait()
            for n, marker in enumerate(shared):
                numbers[marker].add(store.create(draft(marker=marker)).number)
                store.create(draft(marker=f"[forewarn:{name}{n}]"))
                store.comment("1", f"{name} {n}")
        except BaseException as err:  # surfaced below: a thread's failure must fail the test
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert all(len(seen) == 1 for seen in numbers.values())  # both threads got the same ticket
    assert len(store.list_tickets()) == 20 + 2 * 20
    assert len(store.show(1).comments) == 2 * 20


@pytest.fixture
def write_lock(db_path: str, store: BuiltinTickets) -> Iterator[sqlite3.Connection]:
    """Another connection holding the write lock, as the daemon does mid-transaction."""
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    yield conn
    conn.close()


def test_a_writer_waits_for_the_lock_instead_of_failing(
    store: BuiltinTickets, write_lock: sqlite3.Connection
) -> None:
    release = threading.Timer(0.2, write_lock.execute, args=("COMMIT",))
    release.start()
    info = store.create(draft())  # blocks on the busy timeout until the commit
    release.join()
    assert info.number == "#1"


def test_a_lock_held_too_long_is_a_transient_error(
    store: BuiltinTickets, write_lock: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(builtin, "BUSY_TIMEOUT_MS", 50)
    with pytest.raises(DeliveryError) as caught:
        store.create(draft())
    assert not caught.value.permanent
    assert "locked" in str(caught.value)


def test_every_backend_is_registered_under_its_own_kind() -> None:
    assert set(TICKET_BACKENDS) == {"builtin", "email", "redmine", "rt", "webhook"}
    for kind in TICKET_BACKENDS:
        assert TICKET_BACKENDS[kind].kind == kind
