"""`forewarn silences` as a user runs it: `python -m monitor silences ...` in a subprocess,
against a state file in a temporary directory, read back the way the daemon reads it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cli_runner import forewarn

from monitor.store import Store, silence_from_row
from rules.silences import Silence, muted, parse_matcher

FUTURE = datetime(2099, 11, 23, 6, 0, tzinfo=UTC).timestamp()




def _write_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\nlisten = ""\n')
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config whose state file exists, as after the daemon's first run."""
    Store(tmp_path / "state" / "forewarn.db").close()
    return _write_config(tmp_path)


def state(config: Path) -> Path:
    return config.parent / "state" / "forewarn.db"


def silences(config: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return forewarn("silences", *args, "-c", str(config), **env)


def add(config: Path, *args: str, **env: str) -> int:
    """Add a silence that must be accepted; its id, as printed."""
    done = silences(config, "add", *args, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().isdigit(), done.stdout
    return int(done.stdout)


def daemon_view(config: Path, now: float) -> list[Silence]:
    """What the daemon's engine reads each tick: `Store.silences(now)` parsed into Silences."""
    store = Store(state(config))
    try:
        rows = store.silences(now)
    finally:
        store.close()
    return [silence_from_row(row) for row in rows]


def table_rows(config: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(state(config))
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute("SELECT * FROM silence ORDER BY id"))
    finally:
        conn.close()


def events(config: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(state(config))
    try:
        rows = conn.execute("SELECT incident_id, at, kind, detail FROM event ORDER BY id")
        return [
            {"incident_id": i, "at": at, "kind": kind, "detail": json.loads(detail)}
            for i, at, kind, detail in rows
        ]
    finally:
        conn.close()


# --- add ----------------------------------------------------------------------------------


def test_an_added_silence_is_what_the_daemon_reads(config: Path) -> None:
    before = time.time()
    done = silences(
        config,
        "add",
        'rule="disk_full"',
        'mountpoint=~"/srv/(a|b)\\d+"',
        'note="say \\"hi\\""',
        "--duration",
        "2h",
        "--comment",
        "disk swap on the file server",
        "--by",
        "ana",
    )
    after = time.time()
    assert done.returncode == 0, done.stderr
    silence_id = done.stdout.strip()
    assert silence_id == "1", done.stdout
    assert "silence 1 mutes " in done.stderr and "(2h)" in done.stderr, done.stderr

    [silence] = daemon_view(config, after)
    assert silence.id == silence_id
    assert silence.matchers == (
        parse_matcher('rule="disk_full"'),
        parse_matcher('mountpoint=~"/srv/(a|b)\\d+"'),
        parse_matcher('note="say \\"hi\\""'),
    )
    assert silence.matchers[2].value == 'say "hi"'
    assert before <= silence.starts_at <= after
    assert silence.ends_at - silence.starts_at == pytest.approx(7200)
    assert (silence.author, silence.comment) == ("ana", "disk swap on the file server")

    labels = {"rule": "disk_full", "mountpoint": "/srv/b12", "note": 'say "hi"'}
    assert muted(labels, [silence], [], after) is silence
    assert muted({**labels, "mountpoint": "/mnt/srv/b12"}, [silence], [], after) is None


def test_until_and_start_are_utc_unless_they_carry_an_offset(config: Path) -> None:
    # The machine's own zone must not matter: run the command far from UTC.
    zone = {"TZ": "America/New_York"}
    who = ["--comment", "c", "--by", "x"]
    first = add(config, "rule=a", "--until", "2099-11-23 06:00", *who, **zone)
    second = add(
        config,
        "rule=b",
        "--start",
        "2099-11-23T06:00+01:00",
        "--until",
        "2099-11-23T08:30Z",
        *who,
        **zone,
    )
    third = add(config, "rule=c", "--start", "2099-11-23", "--duration", "1h30m", *who, **zone)
    rows = {row["id"]: row for row in table_rows(config)}
    assert rows[first]["ends_at"] == FUTURE
    assert rows[second]["starts_at"] == FUTURE - 3600
    assert rows[second]["ends_at"] == FUTURE + 2.5 * 3600
    assert rows[third]["starts_at"] == FUTURE - 6 * 3600
    assert rows[third]["ends_at"] == FUTURE - 4.5 * 3600
    assert [s.id for s in daemon_view(config, time.time())] == ["1", "2", "3"]


def test_add_as_json_and_the_default_author(config: Path) -> None:
    done = silences(
        config,
        "add",
        "host=db1",
        "--duration",
        "30m",
        "--comment",
        "  reboot  ",
        "--json",
        LOGNAME="ana",
        USER="ana",
    )
    assert done.returncode == 0, done.stderr
    added = json.loads(done.stdout)
    assert added["id"] == 1
    assert added["matchers"] == ['host="db1"']
    assert added["status"] == "active"
    assert (added["author"], added["comment"]) == ("ana", "reboot")
    assert added["ends_at"] - added["starts_at"] == pytest.approx(1800)


def test_adding_records_an_event_outside_any_incident(config: Path) -> None:
    silence_id = add(config, "rule=x", "--duration", "1h", "--comment", "why", "--by", "ana")
    [event] = events(config)
    [row] = table_rows(config)
    assert event["incident_id"] is None
    assert event["kind"] == "silence_added"
    assert event["at"] == row["created_at"]
    assert event["detail"] == {
        "silence": silence_id,
        "matchers": ['rule="x"'],
        "starts_at": row["starts_at"],
        "ends_at": row["ends_at"],
        "author": "ana",
        "comment": "why",
    }


REFUSED = {
    "mutes everything": (['rule=~".*"', "--duration", "1h"], "at least one matcher must not"),
    "only a negative": (["rule!=x", "--duration", "1h"], "at least one matcher must not"),
    "not a matcher": (["disk_full", "--duration", "1h"], "expected name, operator"),
    "bad regex": (['rule=~"("', "--duration", "1h"], "not a valid regular expression"),
    "bad duration": (["rule=x", "--duration", "2 hours"], '"2 hours" is not a duration'),
    "zero duration": (["rule=x", "--duration", "0s"], "must last some time"),
    "no end": (["rule=x"], "either --duration or --until"),
    "two ends": (["rule=x", "--duration", "1h", "--until", "2099-01-01"], "either --duration"),
    "endless": (["rule=x", "--duration", "999999999d"], "after the year 9999"),
    "bad time": (["rule=x", "--until", "tomorrow"], "--until 'tomorrow' is not a time"),
    "off the calendar": (["rule=x", "--until", "0001-01-01T00:00+01:00"], "is not a time"),
    "ended already": (["rule=x", "--until", "2001-01-01 00:00"], "would end in the past"),
    "ends first": (
        ["rule=x", "--start", "2099-01-02", "--until", "2099-01-01"],
        "would end (2099-01-01 00:00:00 UTC) before it starts (2099-01-02 00:00:00 UTC)",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_wrong_silence_is_refused_with_a_message(config: Path, case: str) -> None:
    args, message = REFUSED[case]
    done = silences(config, "add", *args, "--comment", "why", "--by", "ana")
    assert done.returncode == 1, done
    assert done.stdout == ""
    assert done.stderr.startswith("forewarn: ") and message in done.stderr, done.stderr
    assert table_rows(config) == [] and events(config) == []


@pytest.mark.parametrize("comment", [None, "   "])
def test_a_silence_needs_a_comment(config: Path, comment: str | None) -> None:
    given = [] if comment is None else ["--comment", comment]
    done = silences(config, "add", "rule=x", "--duration", "1h", *given)
    assert done.returncode == 1
    assert "say why with --comment" in done.stderr
    assert table_rows(config) == []


# --- list ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config whose state holds an active, a scheduled and an expired silence (read only)."""
    tmp_path = tmp_path_factory.mktemp("three")
    Store(tmp_path / "state" / "forewarn.db").close()
    config = _write_config(tmp_path)
    add(config, "rule=now", "--duration", "1h", "--comment", "active one", "--by", "ana")
    later = ["--start", "2099-11-23 06:00", "--duration", "1h"]
    add(config, "rule=later", *later, "--comment", "x", "--by", "bo")
    add(config, "rule=gone", "--duration", "1h", "--comment", "expired one", "--by", "bo")
    assert silences(config, "expire", "3").returncode == 0
    return config


def test_list_shows_active_and_scheduled_and_all_adds_expired(three: Path) -> None:
    done = silences(three)
    assert done.returncode == 0, done.stderr
    header, *lines = done.stdout.splitlines()
    columns = ["ID", "STATUS", "STARTS", "(UTC)", "ENDS", "(UTC)", "BY", "MATCHERS", "COMMENT"]
    assert header.split() == columns
    assert [line.split()[:2] for line in lines] == [["1", "active"], ["2", "scheduled"]]
    assert 'rule="now"' in lines[0] and "active one" in lines[0] and "ana" in lines[0]
    assert "2099-11-23 06:00:00  2099-11-23 07:00:00" in lines[1]

    everything = silences(three, "list", "--all")
    assert [line.split()[:2] for line in everything.stdout.splitlines()[1:]] == [
        ["1", "active"],
        ["2", "scheduled"],
        ["3", "expired"],
    ]


def test_list_as_json(three: Path) -> None:
    listed = json.loads(silences(three, "list", "--json").stdout)
    assert [(s["id"], s["status"], s["matchers"]) for s in listed] == [
        (1, "active", ['rule="now"']),
        (2, "scheduled", ['rule="later"']),
    ]
    assert listed[1]["starts_at"] == FUTURE and listed[1]["ends_at"] == FUTURE + 3600
    everything = json.loads(silences(three, "--json", "list", "--all").stdout)
    assert [s["status"] for s in everything] == ["active", "scheduled", "expired"]


def test_an_empty_list_says_so(config: Path) -> None:
    assert silences(config).stdout == "no active or scheduled silences\n"
    assert silences(config, "list", "--all").stdout == "no silences\n"
    assert json.loads(silences(config, "list", "--json").stdout) == []


def test_a_state_file_from_before_silences_lists_none(tmp_path: Path) -> None:
    config = _write_config(tmp_path)
    (tmp_path / "state").mkdir()
    sqlite3.connect(tmp_path / "state" / "forewarn.db").execute("CREATE TABLE alert (x)").close()
    done = silences(config)
    assert (done.returncode, done.stdout) == (0, "no active or scheduled silences\n")


# --- expire -------------------------------------------------------------------------------


def test_expire_ends_a_silence_now(config: Path) -> None:
    silence_id = add(config, "rule=x", "--duration", "1h", "--comment", "c", "--by", "ana")
    before = time.time()
    done = silences(config, "expire", str(silence_id), "--by", "bo")
    after = time.time()
    assert (done.returncode, done.stdout) == (0, f"silence {silence_id} expired\n"), done.stderr
    [row] = table_rows(config)
    assert before <= row["ends_at"] <= after
    assert daemon_view(config, after) == []

    [_, event] = events(config)
    assert (event["incident_id"], event["kind"], event["at"]) == (
        None,
        "silence_expired",
        row["ends_at"],
    )
    assert event["detail"]["by"] == "bo"
    assert event["detail"]["was"]["silence"] == silence_id
    assert event["detail"]["was"]["ends_at"] == pytest.approx(row["starts_at"] + 3600)


def test_an_expired_scheduled_silence_never_begins_and_stays_readable(config: Path) -> None:
    silence_id = add(
        config, "rule=x", "--start", "2099-01-01", "--duration", "1h", "--comment", "c"
    )
    done = silences(config, "expire", str(silence_id), "--json")
    assert done.returncode == 0, done.stderr
    expired = json.loads(done.stdout)
    assert expired["status"] == "expired"
    assert expired["starts_at"] < expired["ends_at"] <= time.time()
    # Even a daemon whose `now` lags the command's reads a valid silence, over by then.
    lagging = daemon_view(config, expired["ends_at"] - 0.0005)
    assert [s.id for s in lagging] == [str(silence_id)]
    assert daemon_view(config, expired["ends_at"]) == []


@pytest.mark.parametrize(
    ("target", "message"),
    [("99", "no silence 99"), ("x1", "'x1' is not a silence id"), ("1", "silence 1 already ended")],
)
def test_expire_refuses_what_cannot_be_expired(config: Path, target: str, message: str) -> None:
    add(config, "rule=x", "--duration", "1h", "--comment", "c")
    assert silences(config, "expire", "1").returncode == 0
    ends_at = table_rows(config)[0]["ends_at"]
    done = silences(config, "expire", target)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("forewarn: ") and message in done.stderr, done.stderr
    assert table_rows(config)[0]["ends_at"] == ends_at
    assert len(events(config)) == 2


# --- config, state and help -----------------------------------------------------------------


def test_no_state_yet_is_a_clear_message_and_creates_nothing(tmp_path: Path) -> None:
    config = _write_config(tmp_path)
    for args in (["list"], ["add", "rule=x", "--duration", "1h", "--comment", "c"]):
        done = silences(config, *args)
        assert done.returncode == 1
        assert done.stderr == (
            f"forewarn: no state yet at {tmp_path / 'state' / 'forewarn.db'}: has the daemon run?\n"
        )
    assert not (tmp_path / "state").exists()


def test_a_bad_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[daemon]\nstate_directory = "x"\n')
    done = silences(config, "add", "rule=x", "--duration", "1h", "--comment", "c")
    assert done.returncode == 2
    assert "state_directory: unknown key" in done.stderr


def test_help_explains_add() -> None:
    done = forewarn("silences", "add", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for word in ("MATCHER", "--duration", "--until", "--start", "--comment", "--by", "UTC"):
        assert word in text, (word, done.stdout)
