"""The `tickets` and `incidents` commands: readable tables, `--json` for scripts.

They read the state file of a running daemon safely: SQLite in WAL mode lets readers work
beside the daemon's writer, and the few writes here (acknowledge, take, close) are short
transactions that wait for the daemon's lock.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from monitor import store as st
from monitor.config import Config
from monitor.daemon import state_path
from monitor.durations import parse_duration
from notifiers.builtin import BuiltinTickets, Ticket, TicketNotFound

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A problem the user can fix, printed without a traceback."""


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


# --- tickets ------------------------------------------------------------------------------


def add_ticket_commands(
    sub: Any,
    parents: list[argparse.ArgumentParser],
    action_parents: list[argparse.ArgumentParser],
    handler: Handler,
) -> None:
    tickets = sub.add_parser(
        "tickets",
        parents=parents,
        help="list and show tickets of the built-in help desk",
        description="The built-in ticket store: list tickets (default), show one with its "
        "comments, take one as an agent, or close one.",
    )
    tickets.set_defaults(func=handler, action="list")
    tsub = tickets.add_subparsers(dest="action", metavar="ACTION")
    listing = tsub.add_parser("list", parents=action_parents, help="list tickets (the default)")
    listing.add_argument("--status", choices=["new", "open", "resolved", "rejected"])
    show = tsub.add_parser("show", parents=action_parents, help="show one ticket and its comments")
    show.add_argument("number", help="ticket number, e.g. 12 or #12")
    take = tsub.add_parser("take", parents=action_parents, help="take a ticket as its owner")
    take.add_argument("number")
    take.add_argument("--owner", required=True, help="who takes it")
    close = tsub.add_parser("close", parents=action_parents, help="close a ticket as a person")
    close.add_argument("number")
    close.add_argument(
        "--as",
        dest="close_status",
        choices=["resolved", "rejected"],
        default="resolved",
        help="rejected means won't fix",
    )
    close.add_argument("--by", default="agent", help="who closes it")
    close.add_argument("--comment", default="", help="a closing comment")
    tickets.set_defaults(status=None, action="list")  # after add_subparsers, or it stays None


def tickets(config: Config, args: argparse.Namespace) -> int:
    if config.helpdesk.kind != "builtin":
        raise CliError(f"tickets live in the {config.helpdesk.kind} help desk, not here")
    if not state_path(config).exists():
        raise CliError(f"no state yet at {state_path(config)}: has the daemon run?")
    store = BuiltinTickets(str(state_path(config)))
    try:
        return _ticket_action(store, args)
    except TicketNotFound as exc:
        raise CliError(str(exc)) from exc


def _ticket_action(store: BuiltinTickets, args: argparse.Namespace) -> int:
    if args.action == "list":
        found = store.list_tickets(getattr(args, "status", None))
        if args.json:
            _print_json([_ticket_dict(t) for t in found])
        else:
            print(
                table(
                    ["TICKET", "STATUS", "PRIORITY", "OWNER", "OPENED", "SUBJECT"],
                    [
                        [
                            t.label,
                            t.status,
                            t.priority,
                            t.owner or "-",
                            when(t.created_at),
                            t.subject,
                        ]
                        for t in found
                    ],
                )
                if found
                else "no tickets"
            )
        return 0
    if args.action == "take":
        ticket = store.take(args.number, args.owner)
    elif args.action == "close":
        ticket = store.close(args.number, args.close_status, args.by, args.comment)
    else:
        ticket = store.show(args.number)
    _print_ticket(ticket, args.json)
    return 0


def _ticket_dict(ticket: Ticket) -> dict[str, Any]:
    data = {k: v for k, v in vars(ticket).items() if k != "comments"}
    data["number"] = ticket.label
    data["comments"] = [vars(c) for c in ticket.comments]
    return data


def _print_ticket(ticket: Ticket, as_json: bool) -> None:
    if as_json:
        _print_json(_ticket_dict(ticket))
        return
    print(f"{ticket.label}  {ticket.subject}")
    print(
        f"status {ticket.status}, priority {ticket.priority}, owner {ticket.owner or '-'}, "
        f"opened {when(ticket.created_at)}, updated {when(ticket.updated_at)}"
    )
    print()
    print(ticket.body)
    for comment in ticket.comments:
        print(f"\n--- {when(comment.at)} {comment.author} ({comment.kind})")
        print(comment.text)


# --- incidents ----------------------------------------------------------------------------


def add_incident_commands(
    sub: Any,
    parents: list[argparse.ArgumentParser],
    action_parents: list[argparse.ArgumentParser],
    handler: Handler,
) -> None:
    incidents = sub.add_parser(
        "incidents",
        parents=parents,
        help="list, show and acknowledge incidents",
        description="Incidents forewarn opened: list open ones (default; --all for every "
        "one), show one with its event log, or acknowledge one (stops escalation).",
    )
    incidents.set_defaults(func=handler, action="list", all=False)
    isub = incidents.add_subparsers(dest="action", metavar="ACTION")
    listing = isub.add_parser("list", parents=action_parents, help="list incidents (the default)")
    listing.add_argument("--all", action="store_true", help="also resolved incidents")
    show = isub.add_parser("show", parents=action_parents, help="one incident and its event log")
    show.add_argument("id", type=int)
    ack = isub.add_parser("ack", parents=action_parents, help="acknowledge: a human owns it")
    ack.add_argument("id", type=int)
    ack.add_argument("--by", default="", help="who acknowledges (default: $USER)")
    ack.add_argument("--comment", default="", help="added to the ticket")
    report = isub.add_parser(
        "report-by-user",
        parents=action_parents,
        help="record that a user reported this problem (for `forewarn report`)",
        description="Record that a user reported the incident's problem (a call, a mail to "
        "the help desk), and when: `forewarn report` measures whether forewarn was first.",
    )
    report.add_argument("id", type=int)
    report.add_argument("--by", default="", help="who reported it (default: a user)")
    report.add_argument(
        "--at",
        default="",
        help="when: a time today (10:02), a date and time (2026-11-22T10:02; local time "
        "unless it names a zone) or how long ago (15m); default now",
    )
    report.add_argument("--note", default="", help="what the user said (added to the ticket)")


def incidents(config: Config, args: argparse.Namespace) -> int:
    path = state_path(config)
    if not path.exists():
        raise CliError(f"no state yet at {path}: has the daemon run?")
    if args.action == "ack":
        return _acknowledge(path, args)
    if args.action == "report-by-user":
        return _user_report(path, args)
    conn = st.connect(path, readonly=True)
    try:
        if args.action == "show":
            return _show_incident(conn, args.id, args.json)
        return _list_incidents(conn, args.all, args.json)
    finally:
        conn.close()


_INCIDENT_SQL = (
    "SELECT i.*, t.number AS ticket FROM incident i LEFT JOIN ticket t ON t.incident_id = i.id"
)


def _incident_dict(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    data["labels"] = json.loads(data["labels"])
    data["severity"] = ["info", "warning", "critical"][data["severity"]]
    return data


def incident_rows(
    conn: sqlite3.Connection, status: str | None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Incidents, newest first: those of `status` ("open", "resolved"), or all with None."""
    sql = _INCIDENT_SQL
    params: list[str | int] = []
    if status is not None:
        sql, params = f"{sql} WHERE i.status = ?", [status]
    sql += " ORDER BY i.id DESC"
    if limit is not None:
        sql, params = f"{sql} LIMIT ?", [*params, limit]
    return [_incident_dict(r) for r in conn.execute(sql, params)]


def incident_detail(conn: sqlite3.Connection, incident_id: int) -> dict[str, Any] | None:
    """One incident with its ticket number and its event log, oldest event first."""
    row = conn.execute(f"{_INCIDENT_SQL} WHERE i.id = ?", (incident_id,)).fetchone()
    if row is None:
        return None
    events = [
        dict(e) | {"detail": json.loads(e["detail"])}
        for e in conn.execute(
            "SELECT at, kind, detail FROM event WHERE incident_id = ? ORDER BY id", (incident_id,)
        )
    ]
    return _incident_dict(row) | {"events": events}


def _list_incidents(conn: sqlite3.Connection, everything: bool, as_json: bool) -> int:
    rows = incident_rows(conn, None if everything else "open")
    if as_json:
        _print_json(rows)
        return 0
    if not rows:
        print("no open incidents" if not everything else "no incidents")
        return 0
    print(
        table(
            ["ID", "STATUS", "SEVERITY", "TICKET", "OPENED", "ACK", "SUMMARY"],
            [
                [
                    str(r["id"]),
                    r["status"],
                    r["severity"],
                    r["ticket"] or "-",
                    when(r["opened_at"]),
                    r["acknowledged_by"] or "-",
                    r["summary"],
                ]
                for r in rows
            ],
        )
    )
    return 0


def _show_incident(conn: sqlite3.Connection, incident_id: int, as_json: bool) -> int:
    data = incident_detail(conn, incident_id)
    if data is None:
        raise CliError(f"no incident {incident_id}")
    events = data["events"]
    if as_json:
        _print_json(data)
        return 0
    for key in (
        "id",
        "status",
        "severity",
        "priority",
        "rule",
        "summary",
        "episode",
        "ticket",
        "acknowledged_by",
    ):
        print(f"{key:>16}: {data[key] if data[key] is not None else '-'}")
    print(f"{'labels':>16}: {data['labels']}")
    print("\nevents:")
    for event in events:
        print(f"  {when(event['at'])}  {event['kind']:<16} {json.dumps(event['detail'])}")
    return 0


def _acknowledge(path: Any, args: argparse.Namespace) -> int:
    import getpass

    who = args.by or getpass.getuser()
    store = st.Store(path)
    try:
        acknowledged = st.acknowledge(store, args.id, who, args.comment, time.time())
    finally:
        store.close()
    if not acknowledged:
        raise CliError(f"incident {args.id} does not exist, is not open or is already acknowledged")
    print(f"incident {args.id} acknowledged by {who}", file=sys.stdout)
    return 0


def reported_moment(text: str, now: float) -> float:
    """`--at`: empty is now, a duration is that long ago, else an ISO time (local unless it
    names a zone); ValueError with a hint, also for a time in the future."""
    if not text:
        return now
    try:
        moment = now - parse_duration(text)
    except ValueError:
        try:
            moment = _clock_or_iso(text, now)
        except ValueError:
            raise ValueError(
                f"--at {text!r}: give a time (10:02, 2026-11-22T10:02) or how long ago (15m)"
            ) from None
    if moment > now + 1:
        raise ValueError(f"--at {text!r} is in the future")
    return moment


def _clock_or_iso(text: str, now: float) -> float:
    """`10:02` is today at that local time; anything else is an ISO time (naive: local)."""
    if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", text):
        hour, rest = text.split(":", 1)
        today = datetime.fromtimestamp(now).date().isoformat()
        return datetime.fromisoformat(f"{today}T{int(hour):02d}:{rest}").timestamp()
    return datetime.fromisoformat(text).timestamp()


def _user_report(path: Any, args: argparse.Namespace) -> int:
    now = time.time()
    try:
        moment = reported_moment(args.at, now)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    who = args.by or "a user"
    store = st.Store(path)
    try:
        recorded = st.record_user_report(store, args.id, who, moment, args.note, now, "cli")
    finally:
        store.close()
    if recorded is None:
        raise CliError(f"no incident {args.id}")
    print(f"incident {args.id}: report by {who} at {when(moment)} recorded")
    return 0
