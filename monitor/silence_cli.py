"""The `silences` command: list, add and expire silences in the daemon's state file.

A silence mutes the messages and escalation of the alerts its matchers select, from its start
to its end; it never holds back a ticket's resolution. The daemon reads the `silence` table on
every tick (about once a second), so a silence added here takes effect without a reload.

Every row written here is one the daemon can read back as a `rules.silences.Silence`: matchers
in their canonical text, ending after it starts, and selective (a silence that would mute every
alert is refused, as `rules.silences` refuses it). Writes are short transactions beside the
running daemon (SQLite WAL), each with an event row (incident NULL) for the audit trail.

Times are read as ISO 8601: `2026-11-23 06:00` is UTC, `2026-11-23T06:00+01:00` says its offset.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from monitor import store as st
from monitor.config import Config
from monitor.daemon import state_path
from monitor.durations import (
    DURATION_HINT,
    LAST_INSTANT,
    format_duration,
    parse_duration,
    parse_instant,
)
from monitor.views import CliError, Handler, table, when
from rules.silences import Silence, parse_matcher

TIME_HINT = "write 2026-11-23 06:00 (UTC) or 2026-11-23T06:00+01:00"
# A silence that had not begun yet is expired by cutting it to this sliver ending now: the
# daemon refuses a row that does not end after it starts, and may read it with an earlier `now`.
_SLIVER = 0.001


# --- the parser ----------------------------------------------------------------------------


def add_commands(
    sub: Any,
    parents: list[argparse.ArgumentParser],
    action_parents: list[argparse.ArgumentParser],
    handler: Handler,
) -> None:
    silences = sub.add_parser(
        "silences",
        parents=parents,
        help="list, add and expire silences (mute messages for a while)",
        description="Silences mute the messages and escalation of matching alerts for a "
        "while; tickets are still resolved. List active and scheduled ones (default; --all "
        "adds expired ones), add one, or expire one now. Times without an offset are UTC.",
    )
    ssub = silences.add_subparsers(dest="action", metavar="ACTION")
    listing = ssub.add_parser("list", parents=action_parents, help="list silences (the default)")
    listing.add_argument("--all", action="store_true", help="also expired silences")
    _add_parser(ssub, action_parents)
    expire = ssub.add_parser("expire", parents=action_parents, help="end a silence now")
    expire.add_argument("id", help="the silence's id, as `silences` lists it")
    expire.add_argument("--by", default="", help="who expires it (default: $USER)")
    # After add_subparsers, which would otherwise leave `action` None.
    silences.set_defaults(func=handler, action="list", all=False)


def _add_parser(ssub: Any, action_parents: list[argparse.ArgumentParser]) -> None:
    add = ssub.add_parser(
        "add",
        parents=action_parents,
        help="add a silence; prints its id",
        description='Mute alerts matching every MATCHER (Alertmanager syntax: rule="disk_full", '
        'mountpoint=~"/srv/.*", severity!=info) from --start (default now) for --duration or '
        "until --until. Times are ISO 8601, UTC unless they carry an offset "
        "(2026-11-23 06:00, 2026-11-23T06:00+01:00). Prints the new silence's id.",
    )
    add.add_argument("matchers", nargs="+", metavar="MATCHER", help='e.g. rule="disk_full"')
    add.add_argument("--duration", help=f"how long it lasts ({DURATION_HINT})")
    add.add_argument("--until", help="when it ends")
    add.add_argument("--start", help="when it begins (default: now)")
    add.add_argument("--comment", help="why (required): shown on tickets and in the list")
    add.add_argument("--by", default="", help="who adds it (default: $USER)")


# --- the command ---------------------------------------------------------------------------


def silences(config: Config, args: argparse.Namespace) -> int:
    path = state_path(config)
    if not path.exists():
        raise CliError(f"no state yet at {path}: has the daemon run?")
    try:
        return _action(path, args, time.time())
    except (sqlite3.Error, OSError) as exc:  # locked for too long, not readable, ...
        raise CliError(f"cannot use the state at {path}: {exc}") from exc


def _action(path: Path, args: argparse.Namespace, now: float) -> int:
    if args.action == "add":
        silence = build_silence(
            args.matchers, *_interval(args, now), _author(args.by), args.comment or ""
        )
        row = _write(path, lambda store: add_silence(store, silence, now))
        _report_added(silence_dict(row, now), args.json)
    elif args.action == "expire":
        row = _write(path, lambda store: expire_silence(store, _id(args.id), _author(args.by), now))
        _print(silence_dict(row, now), args.json, f"silence {row['id']} expired")
    else:
        _list(path, args.all, args.json, now)
    return 0


def _write(path: Path, change: Callable[[st.Store], sqlite3.Row]) -> sqlite3.Row:
    store = st.Store(path)
    try:
        return change(store)
    finally:
        store.close()


def _author(given: str) -> str:
    if given.strip():
        return given.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry, e.g. in a container
        raise CliError("cannot tell who you are: say it with --by NAME") from None


def _id(text: str) -> int:
    if not text.strip().isdigit():
        raise CliError(f"{text!r} is not a silence id; `forewarn silences` lists them")
    return int(text)


# --- building a silence --------------------------------------------------------------------


def parse_time(text: str, option: str) -> float:
    """Epoch seconds of an ISO 8601 time; one without an offset is UTC."""
    try:
        return parse_instant(text)
    except ValueError:
        raise CliError(f"{option} {text!r} is not a time; {TIME_HINT}") from None


def _interval(args: argparse.Namespace, now: float) -> tuple[float, float]:
    """(start, end) from --start and exactly one of --duration and --until."""
    if (args.duration is None) == (args.until is None):
        raise CliError("say how long the silence lasts: give either --duration or --until")
    start = now if args.start is None else parse_time(args.start, "--start")
    if args.until is not None:
        end = parse_time(args.until, "--until")
    else:
        end = start + positive_duration(args.duration, "--duration")
    check_interval(start, end, now)
    return start, end


def check_interval(start: float, end: float, now: float) -> None:
    """CliError unless a silence from `start` to `end` would mute something, on the calendar."""
    if end >= LAST_INSTANT:
        raise CliError("the silence would end after the year 9999: give a nearer end")
    if end <= now:
        raise CliError(
            f"the silence would end in the past ({when(end)} UTC): it would mute nothing"
        )
    if end <= start:
        raise CliError(
            f"the silence would end ({when(end)} UTC) before it starts ({when(start)} UTC)"
        )


def positive_duration(text: str | float, option: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise CliError(f"{option}: {exc}") from None
    if seconds <= 0:
        raise CliError(f"{option} {text!r}: a silence must last some time")
    return seconds


def build_silence(
    matchers: Sequence[str], starts_at: float, ends_at: float, author: str, comment: str
) -> Silence:
    """The silence to add, checked as the daemon will check it; CliError says what is wrong."""
    if not comment.strip():
        raise CliError("say why with --comment: it explains every alert the silence mutes")
    try:
        parsed = tuple(parse_matcher(text) for text in matchers)
        return Silence("new", parsed, starts_at, ends_at, author, comment.strip())
    except ValueError as exc:
        raise CliError(str(exc)) from None


# --- the table -----------------------------------------------------------------------------


def add_silence(store: st.Store, silence: Silence, now: float) -> sqlite3.Row:
    """Insert `silence` (its id is assigned here) and log it; the stored row."""
    texts = [str(matcher) for matcher in silence.matchers]
    with store.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO silence (matchers, starts_at, ends_at, author, comment, created_at)"
            " VALUES (?,?,?,?,?,?)",
            (
                json.dumps(texts),
                silence.starts_at,
                silence.ends_at,
                silence.author,
                silence.comment,
                now,
            ),
        )
        row = conn.execute("SELECT * FROM silence WHERE id = ?", (cur.lastrowid,)).fetchone()
        st.add_event(conn, None, now, "silence_added", **_event_detail(row))
    return row


def expire_silence(store: st.Store, silence_id: int, who: str, now: float) -> sqlite3.Row:
    """End the silence now (one not begun yet never begins); CliError if it has ended."""
    with store.transaction() as conn:
        row = conn.execute("SELECT * FROM silence WHERE id = ?", (silence_id,)).fetchone()
        if row is None:
            raise CliError(f"no silence {silence_id}")
        if row["ends_at"] <= now:
            raise CliError(f"silence {silence_id} already ended at {when(row['ends_at'])} UTC")
        conn.execute(
            "UPDATE silence SET starts_at = ?, ends_at = ? WHERE id = ?",
            (min(row["starts_at"], now - _SLIVER), now, silence_id),
        )
        st.add_event(conn, None, now, "silence_expired", by=who, was=_event_detail(row))
        row = conn.execute("SELECT * FROM silence WHERE id = ?", (silence_id,)).fetchone()
    return row


def _event_detail(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "silence": row["id"],
        "matchers": json.loads(row["matchers"]),
        "starts_at": row["starts_at"],
        "ends_at": row["ends_at"],
        "author": row["author"],
        "comment": row["comment"],
    }


def status(row: sqlite3.Row, now: float) -> str:
    if row["ends_at"] <= now:
        return "expired"
    return "scheduled" if row["starts_at"] > now else "active"


def silence_dict(row: sqlite3.Row, now: float) -> dict[str, Any]:
    return dict(row) | {"matchers": json.loads(row["matchers"]), "status": status(row, now)}


# --- output --------------------------------------------------------------------------------


def _list(path: Path, everything: bool, as_json: bool, now: float) -> None:
    rows = [silence_dict(row, now) for row in _read(path, everything, now)]
    if as_json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no silences" if everything else "no active or scheduled silences")
    else:
        print(
            table(
                ["ID", "STATUS", "STARTS (UTC)", "ENDS (UTC)", "BY", "MATCHERS", "COMMENT"],
                [_cells(row) for row in rows],
            )
        )


def _read(path: Path, everything: bool, now: float) -> list[sqlite3.Row]:
    conn = st.connect(path, readonly=True)
    try:
        return read_silences(conn, everything, now)
    finally:
        conn.close()


def read_silences(conn: sqlite3.Connection, everything: bool, now: float) -> list[sqlite3.Row]:
    """Silences that have not ended at `now`, or (`everything`) all of them, by id."""
    if not _has_silence_table(conn):  # a state file from before silences
        return []
    if everything:
        return list(conn.execute("SELECT * FROM silence ORDER BY id"))
    # The daemon's own choice (Store.silences): every silence that has not ended yet.
    return list(conn.execute("SELECT * FROM silence WHERE ends_at > ? ORDER BY id", (now,)))


def _has_silence_table(conn: sqlite3.Connection) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'silence'"
    ).fetchone()
    return found is not None


def _cells(row: dict[str, Any]) -> list[str]:
    return [
        str(row["id"]),
        row["status"],
        when(row["starts_at"]),
        when(row["ends_at"]),
        row["author"],
        ", ".join(row["matchers"]),
        row["comment"],
    ]


def _report_added(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row, indent=2))
        return
    print(row["id"])  # alone on stdout, for scripts: `id=$(forewarn silences add ...)`
    print(
        f"silence {row['id']} mutes {', '.join(row['matchers'])} from {when(row['starts_at'])} "
        f"to {when(row['ends_at'])} UTC "
        f"({format_duration(round(row['ends_at'] - row['starts_at']))})",
        file=sys.stderr,
    )


def _print(row: dict[str, Any], as_json: bool, text: str) -> None:
    print(json.dumps(row, indent=2) if as_json else text)
