"""`forewarn report` and `forewarn incidents report-by-user`, run as a user runs them.

The state file is a real `Store` in a temporary directory; its incidents and events are
written as the daemon writes them (`monitor.store.add_event`), some days back from now, since
the report's window ends at the moment it runs. Every figure checked is worked out by hand in
the comments.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_runner import forewarn

from monitor import store as st
from monitor.report import (
    build_summary,
    fmt_duration,
    fmt_part,
    fmt_share,
    headline,
    incident_episodes,
)
from rules.figures import Episode, summarize, week_start

DAY = 86_400.0
CONFIG = """[daemon]
state_dir = "{state}"
listen = ""

[[rule]]
name = "disk_full"
metric = "disk_used_percent"
condition = "value > 90"
for = "1m"
"""


@dataclass(frozen=True)
class Rig:
    config: Path
    state: Path  # the state file
    now: float  # the events are placed back from this moment

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return forewarn(*args, "-c", str(self.config))

    def report(self, *args: str) -> str:
        done = self.cli("report", *args)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        return done.stdout

    def rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        conn = st.connect(self.state, readonly=True)
        try:
            return list(conn.execute(sql, params))
        finally:
            conn.close()


def write_config(tmp: Path) -> Path:
    path = tmp / "config.toml"
    path.write_text(CONFIG.format(state=tmp / "state"))
    return path


def add_incident(
    conn: sqlite3.Connection,
    rule: str,
    mountpoint: str,
    opened_at: float,
    *,
    service: str = "",
    episode: int = 1,
    parent: int | None = None,
    predicted_at: float | None = None,
) -> int:
    """The incident row as the lifecycle inserts it (resolved: the report reads history)."""
    labels = json.dumps({"mountpoint": mountpoint})
    cur = conn.execute(
        "INSERT INTO incident (fingerprint, marker, rule, labels, status, episode, severity,"
        " priority, service, summary, first_opened_at, opened_at, resolved_at, parent_id,"
        " predicted_at) VALUES (?,?,?,?,'resolved',?,1,'medium',?,?,?,?,?,?,?)",
        (
            f"{rule}{mountpoint}",
            f"[fw:{rule}{mountpoint}]",
            rule,
            labels,
            episode,
            service,
            f"{rule} on {mountpoint}",
            opened_at,
            opened_at,
            opened_at + 600,
            parent,
            predicted_at,
        ),
    )
    return int(cur.lastrowid or 0)


class Log:
    """Events of one incident, at offsets from its opening, as the daemon writes them."""

    def __init__(
        self, conn: sqlite3.Connection, start: float, rule: str, mountpoint: str, **row: Any
    ) -> None:
        self.conn, self.start = conn, start
        self.incident = add_incident(conn, rule, mountpoint, start, **row)

    def add(self, offset: float, kind: str, **detail: Any) -> int:
        return st.add_event(self.conn, self.incident, self.start + offset, kind, **detail)

    def opened(
        self, since: float, predicted: float | None = None, parent: int | None = None
    ) -> None:
        predicted_at = None if predicted is None else self.start + predicted
        self.add(
            0,
            "opened",
            severity="warning",
            value=95.0,
            mute=None,
            parent=parent,
            since=self.start + since,
            predicted_at=predicted_at,
        )

    def reopened(self, offset: float, since: float, resolved_for: float) -> None:
        self.add(
            offset,
            "reopened",
            episode=2,
            resolved_for=resolved_for,
            mute=None,
            since=self.start + since,
            predicted_at=None,
        )

    def ticket(self, offset: float, episode: int = 1) -> None:
        op = "ticket.create" if episode == 1 else "ticket.reopen"
        key = f"incident:{self.incident}:episode:{episode}:{op}"
        template = "ticket_body" if episode == 1 else "ticket_reopened"
        self.add(offset, "delivered", op=op, key=key, template=template)

    def resolved(self, offset: float) -> None:
        self.add(offset, "resolved", lasted=offset, mute=None, silent=False)


def disk_root(conn: sqlite3.Connection, start: float) -> None:
    """Detected after 60 s, ticket after 5 s, two notices (the first delivered after 30 s),
    escalated once, acknowledged after 2 min, resolved after 30 min."""
    log = Log(conn, start, "disk_full", "/", service="file shares")
    log.opened(since=-60)
    log.ticket(5)
    log.add(5, "ticket_created", ticket="#1", backend="builtin")
    log.add(20, "notice", notice="investigating", audience="staff", seq=1, reason="opened")
    log.add(25, "notice", notice="investigating", audience="office", seq=1, reason="opened")
    key = f"notice:incident:{log.incident}:1:staff:investigating:1:email:ana@example.com"
    log.add(30, "delivered", op="email.send", key=key, template="notice")
    log.add(100, "escalated", step=0, urgent=False, to=["oncall"])
    log.add(120, "acknowledged", by="alice", source="cli")
    log.resolved(1800)


def disk_srv(conn: sqlite3.Connection, start: float) -> None:
    """A blip of 200 s (detected after 30 s, ticket after 10 s) that came back 200 s later
    as a blip of 100 s (detected after 20 s, ticket after 2 s)."""
    log = Log(conn, start, "disk_full", "/srv", service="file shares", episode=2)
    log.opened(since=-30)
    log.ticket(10)
    log.resolved(200)
    log.reopened(400, since=380, resolved_for=200.0)
    log.ticket(402, episode=2)
    log.resolved(500)


def queue(conn: sqlite3.Connection, start: float) -> None:
    """Predicted an hour ahead: detected after 130 s, ticket after 5 s, escalated to step 2,
    acknowledged by bob after 1000 s, the level reached after 25 min, a user reported it at
    1900 s (recorded at 2000 s), bob resolved it after 4000 s."""
    log = Log(conn, start, "queue_growing", "/var", service="mail", predicted_at=start + 3600)
    log.opened(since=-130, predicted=3600)
    log.ticket(5)
    log.add(300, "escalated", step=0, urgent=False, to=["oncall"])
    log.add(900, "escalated", step=1, urgent=True, to=["boss"])
    log.add(1000, "acknowledged", by="bob", source="api")
    log.add(1500, "impact", value=95.5, fingerprint="q")
    log.add(2000, "user_report", by="carla", reported_at=start + 1900, note="", source="cli")
    log.add(4000, "resolved", lasted=4000.0, by="bob", comment="ok", source="api", forced=False)


def fill(conn: sqlite3.Connection, now: float) -> None:
    """Five incidents and a symptom; the figures of the last 7 days are in the tests."""
    disk_root(conn, now - 3 * DAY)  # incident 1
    disk_srv(conn, now - 2 * DAY)  # 2
    queue(conn, now - DAY)  # 3
    symptom = Log(conn, now - 3 * DAY + 10, "web_down", "/", parent=1)  # 4: of 1, left out
    symptom.opened(since=0, parent=1)
    symptom.resolved(1000)
    home = Log(conn, now - 10 * DAY, "disk_full", "/home", service="file shares")  # 5
    home.opened(since=-60)  # in the default 30 days, not in the last 7
    home.ticket(5)
    home.resolved(600)
    Log(conn, now - 40 * DAY, "disk_full", "/old").opened(since=0)  # 6: out of every window


def filled(tmp: Path) -> Rig:
    """A config in `tmp` and its state file, filled as of now."""
    state, now = tmp / "state" / "forewarn.db", time.time()
    store = st.Store(state)
    with store.transaction() as conn:
        fill(conn, now)
    store.close()
    return Rig(write_config(tmp), state, now)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Rig:
    """One state file for the read-only report tests."""
    return filled(tmp_path_factory.mktemp("report"))


@pytest.fixture
def fresh(tmp_path: Path) -> Rig:
    """A state file of its own, for the commands that write."""
    return filled(tmp_path)


# --- forewarn report ----------------------------------------------------------------------

# The last 7 days: episodes 1, 2, 2' and 3 (4 is a symptom; 5 and 6 are older).
HEADLINE_7D = {
    "incidents": "4",
    "new incidents": "3",
    "recurrences": "1",
    "still open": "0",
    "resolution rate": "4 of 4 (100 %)",
    "auto-resolved": "3 of 4 (75 %)",  # all but bob's
    "reopen rate": "25 % (1 of 4 resolved)",
    "escalated": "2 of 4 (50 %)",  # 1 and 3
    "reached step 2+": "1 of 4 (25 %)",  # 3
    "tier-1 resolution": "1 of 4 (25 %)",  # 2' only: 2 recurred, 1 and 3 escalated
    "notices per incident": "0.5",  # two notices in four episodes
    "predicted": "1",
    "averted": "0",
    "warned before impact": "1 of 1 (100 %)",
    "median lead time": "25 min",  # 1500 s
    "user-reported": "1",
    "detected before the user": "1 of 1 (100 %)",
    "median lead on users": "31 min 40 s",  # 1900 s
    "caught before users": "1 of 1 (100 %)",
    # detect 20 30 60 130 · ticket 2 5 5 10 · notice 30 · ack 120 1000 · resolve 100 200 1800 4000
    "median time to detect": "45 s",
    "mean time to detect": "1 min",
    "median time to ticket": "5.00 s",
    "mean time to ticket": "5.50 s",
    "median time to first notice": "30 s",
    "median time to acknowledge": "9 min 20 s",
    "median time to resolve": "16 min 40 s",
    "mean time to resolve": "25 min 25 s",
}
# (label, count, median, mean, p90, max): p90 by rank 2.7 of four values
TIMES_7D = [
    ("time to detect", 4, "45 s", "1 min", "1 min 49 s", "2 min 10 s"),  # 60 + 0.7·70
    ("time to ticket", 4, "5.00 s", "5.50 s", "8.50 s", "10 s"),
    ("time to first notice", 1, "30 s", "30 s", "30 s", "30 s"),
    ("time to acknowledge", 2, "9 min 20 s", "9 min 20 s", "15 min 12 s", "16 min 40 s"),
    ("time to resolve", 4, "16 min 40 s", "25 min 25 s", "55 min 40 s", "1 h 6 min"),
]
# disk_full: blips of 200 and 100 s under for = 1m were seen 260 and 160 s: p90 250 → 5m.
SUGGESTION = (
    "disk_full: raise `for` from 1m to 5m: 2 of 3 tickets were blips that ended sooner; "
    "real problems would be reported 4m later"
)


def figure_line(label: str, value: str) -> str:
    return rf"^  {re.escape(label)} +{re.escape(value)}$"


def test_report_prints_each_section_with_the_figures_by_hand(rig: Rig) -> None:
    text = rig.report("--since", "7d")

    assert text.startswith("forewarn report: ")
    assert "(7 d)" in text.splitlines()[0]
    assert "(1 symptom(s) of other incidents left out)" in text
    for section in (
        "Incidents",
        "Response times",
        "Ahead of users",
        "Weekly trend (weeks from Monday, UTC)",
        "Top rules",
        "By service",
        "Noise budget (noisiest first)",
    ):
        assert f"\n{section}\n" in text, section
    for label, value in HEADLINE_7D.items():
        if not label.startswith(("median time", "mean time")):
            assert re.search(figure_line(label, value), text, re.MULTILINE), (label, text)
    for label, count, *durations in TIMES_7D:
        row = rf"^  {label} +{count} +" + " +".join(map(re.escape, durations)) + "$"
        assert re.search(row, text, re.MULTILINE), (label, text)
    assert re.search(r"^  disk_full +3 ", text, re.MULTILINE)
    assert re.search(r"^  file shares +3 ", text, re.MULTILINE)
    assert re.search(r"^  mail +1 ", text, re.MULTILINE)
    # The noise budget: episodes, alerts, tickets, blips, flapping, reopens, no-action, share.
    assert re.search(r"^  disk_full +3 +3 +3 +2 +0 +1 +0 +67 %$", text, re.MULTILINE), text
    assert f"  - {SUGGESTION}\n" in text


def test_report_json_agrees_with_the_text(rig: Rig) -> None:
    data = json.loads(rig.report("--since", "7d", "--json"))
    text = rig.report("--since", "7d")

    assert data["headline"] == {**data["headline"], **HEADLINE_7D}
    for label, value in data["headline"].items():
        if not label.startswith(("median time", "mean time")):
            assert re.search(figure_line(label, value), text, re.MULTILINE), label
    rates = data["rates"]
    assert (rates["incidents"], rates["recurrences"], rates["tier1"]) == (4, 1, 1)
    assert rates["reopen_rate"] == 0.25 and rates["escalated_share"] == 0.5
    assert data["symptoms"] == 1
    for (label, count, median, mean, p90, top), key in zip(
        TIMES_7D, ("detect", "ticket", "first_notice", "acknowledge", "resolve"), strict=True
    ):
        stat = data["times"][key]
        assert stat["count"] == count, label
        shown = [fmt_duration(stat[k]) for k in ("median", "mean", "p90", "max")]
        assert shown == [median, mean, p90, top], label
    assert data["times"]["detect"]["p90"] == pytest.approx(109.0)
    assert data["proactive"]["lead_time"]["median"] == 1500.0
    assert data["suggestions"] == [SUGGESTION]
    [disk, queue] = data["noise"]
    assert (disk["rule"], disk["blips"], queue["rule"], queue["noisy"]) == (
        "disk_full",
        2,
        "queue_growing",
        0,
    )
    assert disk["suggestions"] == [
        {"setting": "for", "value": 300.0, "spared": 2, "out_of": 3, "current": 60.0}
    ]
    assert "episodes" not in data


def test_report_json_weeks_are_every_monday_of_the_window(rig: Rig) -> None:
    data = json.loads(rig.report("--since", "7d", "--json"))
    assert data["until"] - data["since"] == pytest.approx(7 * DAY)
    first = week_start(data["since"])
    expected = []
    monday = first
    while monday < data["until"]:
        expected.append(datetime.fromtimestamp(monday, UTC).strftime("%Y-%m-%d"))
        monday += 7 * DAY
    assert [w["key"] for w in data["weeks"]] == expected
    assert sum(w["rates"]["incidents"] for w in data["weeks"]) == 4


def test_the_default_window_is_30_days(rig: Rig) -> None:
    data = json.loads(rig.report("--json"))
    assert data["until"] - data["since"] == pytest.approx(30 * DAY)
    assert data["rates"]["incidents"] == 5  # and incident 5, ten days back
    assert data["headline"]["incidents"] == "5"


def test_since_7d_leaves_out_older_incidents(rig: Rig) -> None:
    older = json.loads(rig.report("--since", "11d", "--json"))
    recent = json.loads(rig.report("--since", "7d", "--json"))
    assert (older["rates"]["incidents"], recent["rates"]["incidents"]) == (5, 4)
    assert [b["key"] for b in recent["by_rule"]] == ["disk_full", "queue_growing"]
    assert [b["rates"]["incidents"] for b in older["by_rule"]] == [4, 1]


def test_since_a_date_starts_at_its_midnight_utc(rig: Rig) -> None:
    day = datetime.fromtimestamp(rig.now - 5 * DAY, UTC).date()
    data = json.loads(rig.report("--since", day.isoformat(), "--json"))
    assert data["since"] == datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    assert data["rates"]["incidents"] == 4
    text = rig.report("--since", day.isoformat())
    assert text.startswith(f"forewarn report: {day.isoformat()} 00:00 UTC to ")


def test_a_window_without_incidents_says_so(rig: Rig) -> None:
    text = rig.report("--since", "1h")
    assert "No incidents in this window." in text
    assert "Response times" not in text


@pytest.mark.parametrize(
    ("since", "message"),
    [
        ("30 days", "--since '30 days' is not a duration back from now (30d, 12h) or a date"),
        ("yesterday", "--since 'yesterday' is not a duration back from now"),
        ("2999-01-01", "--since '2999-01-01' is in the future"),
        ("99999999w", "--since '99999999w' reaches back before the calendar"),
    ],
)
def test_a_bad_since_is_a_clear_error(rig: Rig, since: str, message: str) -> None:
    done = rig.cli("report", "--since", since)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(f"forewarn: {message}"), done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_report_without_state_is_a_clear_message(tmp_path: Path) -> None:
    done = forewarn("report", "-c", str(write_config(tmp_path)))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        f"forewarn: no state yet at {tmp_path / 'state' / 'forewarn.db'}: has the daemon run?\n"
    )
    assert not (tmp_path / "state").exists()


def test_a_recurrence_counts_in_its_window_though_the_incident_opened_before(
    tmp_path: Path,
) -> None:
    """The loader reads every incident with an opening in the window, the summary keeps the
    episodes opened in it: here the recurrence, not the first episode a week before."""
    path, now = tmp_path / "forewarn.db", 1_800_000_000.0
    store = st.Store(path)
    with store.transaction() as conn:
        start = now - 7 * DAY - 600
        log = Log(conn, start, "disk_full", "/", episode=2)
        log.opened(since=0)
        log.resolved(600)
        log.reopened(1200, since=1200, resolved_for=600.0)
        log.resolved(5000)
    store.close()
    conn = st.connect(path, readonly=True)
    try:
        assert [e.episode for e in incident_episodes(conn, 1)] == [1, 2]
        assert incident_episodes(conn, 99) == []
        summary = build_summary(conn, now - 7 * DAY, now)
    finally:
        conn.close()
    r = summary.rates
    assert (r.incidents, r.new, r.recurrences, r.resolved) == (1, 0, 1, 1)
    assert summary.times.resolve.median == 3800.0


def test_warned_before_impact_counts_only_the_predictions_that_reached_their_level() -> None:
    """Of three predictions, one reached its level after the warning, one was averted and one
    is still open short of it: the one that reached it tells, the open one not yet."""
    now = 1_800_000_000.0

    def predicted(number: int, **fields: Any) -> Episode:
        return Episode(number, 1, "r", "", "", now + number, predicted_at=now + 3600, **fields)

    eps = [
        predicted(1, impact_at=now + 600, resolved_at=now + 900),
        predicted(2, resolved_at=now + 300),
        predicted(3),
    ]
    figures = dict(headline(summarize(eps, now, now + DAY)))
    assert (figures["predicted"], figures["averted"]) == ("3", "1")
    assert figures["warned before impact"] == "1 of 1 (100 %)"
    assert figures["caught before users"] == "2 of 2 (100 %)"


# --- forewarn incidents report-by-user ------------------------------------------------------


def user_reports(rig: Rig) -> list[dict[str, Any]]:
    rows = rig.rows(
        "SELECT incident_id, at, detail FROM event WHERE kind = 'user_report' ORDER BY id"
    )
    return [{"incident": r[0], "at": r[1], **json.loads(r[2])} for r in rows]


def test_report_by_user_records_the_event_and_a_ticket_comment(fresh: Rig) -> None:
    before = time.time()
    done = fresh.cli(
        "incidents",
        "report-by-user",
        "3",
        "--by",
        "Carla (sales)",
        "--at",
        "15m",
        "--note",
        "mail is slow",
    )
    after = time.time()
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"incident 3: report by Carla \(sales\) at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d recorded\n",
        done.stdout,
    ), done.stdout

    [_, report] = user_reports(fresh)  # the first is the daemon's, from the fixture
    assert report["incident"] == 3 and before <= report["at"] <= after
    assert before - 900 <= report["reported_at"] <= after - 900
    assert (report["by"], report["note"], report["source"]) == (
        "Carla (sales)",
        "mail is slow",
        "cli",
    )
    [event_id] = [
        r[0]
        for r in fresh.rows(
            "SELECT id FROM event WHERE kind = 'user_report' ORDER BY id DESC LIMIT 1"
        )
    ]
    [comment] = fresh.rows("SELECT key, op, incident_id, payload FROM outbox")
    assert (comment["key"], comment["op"], comment["incident_id"]) == (
        f"incident:3:event:{event_id}:ticket.comment",
        "ticket.comment",
        3,
    )
    text = json.loads(comment["payload"])["text"]
    assert text.startswith("Reported by a user: Carla (sales), at ")
    assert text.endswith("\n\nmail is slow")


def test_report_by_user_defaults_to_now_and_a_user(fresh: Rig) -> None:
    before = time.time()
    done = fresh.cli("incidents", "report-by-user", "1")
    assert done.returncode == 0, done.stderr
    report = user_reports(fresh)[-1]
    assert report["by"] == "a user" and report["note"] == ""
    assert before <= report["reported_at"] <= report["at"]


def test_report_by_user_at_an_iso_time(fresh: Rig) -> None:
    moment = datetime.fromtimestamp(fresh.now - 2 * 3600, UTC).replace(microsecond=0)
    zoned = moment.isoformat()  # names its zone: +00:00
    assert fresh.cli("incidents", "report-by-user", "1", "--at", zoned).returncode == 0
    assert user_reports(fresh)[-1]["reported_at"] == moment.timestamp()

    naive = (moment - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")  # local time
    assert fresh.cli("incidents", "report-by-user", "1", "--at", naive).returncode == 0
    assert user_reports(fresh)[-1]["reported_at"] == datetime.fromisoformat(naive).timestamp()


def test_the_report_counts_a_recorded_user_report(fresh: Rig) -> None:
    """Incident 5 (ten days back) was reported by a user 5 minutes before forewarn opened it."""
    opened = fresh.now - 10 * DAY
    at = datetime.fromtimestamp(opened - 300, UTC).isoformat()
    assert fresh.cli("incidents", "report-by-user", "5", "--at", at).returncode == 0
    data = json.loads(fresh.report("--json"))
    p = data["proactive"]
    assert (p["user_reported"], p["detected_before_user"]) == (2, 1)  # 3: forewarn first, 5: not
    assert p["user_lead"]["min"] == pytest.approx(-300.0)
    assert data["headline"]["caught before users"] == fmt_part(1, 2)


def test_a_symptom_gets_the_event_but_no_comment_of_its_own(fresh: Rig) -> None:
    assert fresh.cli("incidents", "report-by-user", "4", "--by", "dan").returncode == 0
    assert user_reports(fresh)[-1]["incident"] == 4
    assert fresh.rows("SELECT * FROM outbox") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["99"], "forewarn: no incident 99\n"),
        (["1", "--at", "2999-01-01T10:00"], "forewarn: --at '2999-01-01T10:00' is in the future\n"),
        (["1", "--at", "yesterday"], "forewarn: --at 'yesterday': give a time ("),
    ],
)
def test_report_by_user_refuses_clearly(fresh: Rig, args: list[str], message: str) -> None:
    done = fresh.cli("incidents", "report-by-user", *args)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(message), done.stderr
    assert len(user_reports(fresh)) == 1  # only the fixture's
    assert fresh.rows("SELECT * FROM outbox") == []


def test_report_by_user_without_state_is_a_clear_message(tmp_path: Path) -> None:
    done = forewarn("incidents", "report-by-user", "1", "-c", str(write_config(tmp_path)))
    assert done.returncode == 1
    assert "no state yet at" in done.stderr
    assert not (tmp_path / "state").exists()


# --- help -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (["report"], ["--since", "30d", "a date", "--json", "--html", "noise", "ahead of users"]),
        (["incidents", "report-by-user"], ["--by", "--at", "15m", "--note", "forewarn report"]),
        (["incidents"], ["report-by-user"]),
        ([], ["report"]),
    ],
)
def test_help_explains_the_commands(command: list[str], words: list[str]) -> None:
    done = forewarn(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: forewarn {' '.join(command)}".rstrip())
    help_text = " ".join(done.stdout.split())
    for word in words:
        assert word in help_text, (word, done.stdout)


# --- formatting -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "–"),
        (float("nan"), "–"),
        (float("inf"), "–"),
        (0.0, "0 s"),
        (0.001, "0 s"),
        (-0.001, "0 s"),  # no "-0.00 s"
        (0.84, "0.84 s"),
        (9.99, "9.99 s"),
        (9.996, "10 s"),  # not "10.00 s"
        (10.0, "10 s"),
        (41.0, "41 s"),
        (41.4, "41 s"),
        (59.6, "1 min"),  # not "60 s"
        (60.0, "1 min"),
        (61.0, "1 min 1 s"),
        (190.0, "3 min 10 s"),
        (3599.6, "1 h"),
        (3600.0, "1 h"),
        (3630.0, "1 h"),  # two units at most: the seconds of an hour do not matter
        (3660.0, "1 h 1 min"),
        (7500.0, "2 h 5 min"),
        (86_400.0, "1 d"),
        (3 * 86_400.0 + 4 * 3600.0, "3 d 4 h"),
        (-0.84, "-0.84 s"),
        (-41.0, "-41 s"),
        (-190.0, "-3 min 10 s"),
        (-7500.0, "-2 h 5 min"),
    ],
)
def test_fmt_duration_reads_as_people_write_it(seconds: float | None, text: str) -> None:
    assert fmt_duration(seconds) == text


def test_fmt_share_and_part() -> None:
    assert (fmt_share(None), fmt_share(0.0), fmt_share(2 / 3), fmt_share(1.0)) == (
        "–",
        "0 %",
        "67 %",
        "100 %",
    )
    assert fmt_part(3, 4) == "3 of 4 (75 %)"
    assert fmt_part(0, 0) == "0 of 0"
