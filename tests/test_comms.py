"""The communicator on the real engine and state store, time passed as `now`: who hears what.

The config is parsed from TOML; samples go through the engine; tickets are created by the
real dispatcher in the built-in help desk, so notices wait for and name a real ticket.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from comms_parts import HEAD, DaemonRig, audience, web_down

from monitor.store import acknowledge
from notifiers.apprise_channel import target_id
from notifiers.render import Renderer
from probes.base import Sample

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Europe/Rome")).timestamp()
HOUR = 3600.0
CHAT = "json://127.0.0.1:9/hook?token=s3cret"

CONFIG = (
    HEAD
    + """
[notices]
update_every = "1h"
ticket_update_every = "6h"
"""
    + web_down('service = "intranet"', "notify_users = true")
    + """
[[rule]]
name = "web_slow"
probe = "web"
metric = "http_duration_seconds"
condition = "value > 2"
service = "intranet"
"""
    + audience(
        "office", "intranet", "office@example.com", 'apprise = ["{chat}"]', 'language = "it"'
    )
    + audience("mail-users", "mail", "mail-users@example.com")
    + """
[[service]]
name = "mail"

[[maintenance]]
name = "upgrade"
cron = "0 22 25 11 *"
duration = "2h"
matchers = ['rule="web_down"']
timezone = "Europe/Rome"
services = ["intranet"]
title = "Intranet upgrade"
announce_before = "1d"
"""
)

WEB = {"url": "http://intranet/", "probe": "web"}


class Rig(DaemonRig):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, CONFIG, T0, chat=CHAT)

    def web(self, up: float, now: float) -> None:
        self.now = now
        self.engine.process([Sample("http_up", float(up), now, WEB)], now)
        self.tick(now)  # creates the ticket (mails fail: no [smtp] channel here)

    def notices(self, audience: str = "office") -> list[tuple[str, int, str]]:
        rows = self.store.query(
            "SELECT kind, seq, reason FROM notice WHERE audience = ? ORDER BY id", (audience,)
        )
        return [(r["kind"], r["seq"], r["reason"]) for r in rows]

    def outbox(self, op: str) -> list[dict[str, Any]]:
        rows = self.store.query("SELECT payload FROM outbox WHERE op = ? ORDER BY id", (op,))
        return [json.loads(r["payload"]) for r in rows]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    yield rig
    rig.close()


def test_an_outage_told_step_by_step_to_its_audience_only(rig: Rig) -> None:
    rig.web(0, T0)
    assert rig.notices() == [("investigating", 0, "investigating")]
    rig.web(0, T0 + 600)
    assert acknowledge(rig.store, 1, "ana", "", T0 + 600)
    rig.web(0, T0 + 601)
    rig.web(0, T0 + 601 + HOUR)  # the cadence
    rig.web(1, T0 + 2 * HOUR)
    assert rig.notices() == [
        ("investigating", 0, "investigating"),
        ("identified", 0, "identified"),
        ("update", 1, "cadence"),
        ("resolved", 0, "resolved"),
    ]
    assert rig.notices("mail-users") == []
    mails = [p for p in rig.outbox("email.send") if p.get("template") == "notice"]
    assert {p["to"][0] for p in mails} == {"office@example.com"}
    assert {p["language"] for p in mails} == {"it"}


def test_one_row_per_target_and_no_token_in_the_state_file(rig: Rig) -> None:
    rig.web(0, T0)
    [chat] = rig.outbox("apprise.send")
    assert chat["target"] == target_id(CHAT) and chat["kind"] == "investigating"
    [mail] = [p for p in rig.outbox("email.send") if p.get("template") == "notice"]
    assert mail["to"] == ["office@example.com"]
    dump = "".join(str(tuple(r)) for r in rig.store.query("SELECT * FROM outbox"))
    assert "s3cret" not in dump


def test_rules_that_do_not_notify_users_stay_quiet(rig: Rig) -> None:
    rig.now = T0
    slow = Sample("http_duration_seconds", 5.0, T0, WEB)
    rig.engine.process([slow], T0)
    rig.comms.tick(T0)
    assert rig.store.query("SELECT COUNT(*) FROM incident")[0][0] == 1
    assert rig.notices() == []


def test_an_incident_muted_by_maintenance_tells_users_nothing(rig: Rig) -> None:
    during = datetime(2026, 11, 25, 22, 30, tzinfo=ZoneInfo("Europe/Rome")).timestamp()
    rig.web(0, during)
    assert [r["muted"] for r in rig.store.query("SELECT muted FROM incident")] == [1]
    assert ("investigating", 0, "investigating") not in rig.notices()


def test_maintenance_is_announced_ahead_then_in_progress_then_completed(rig: Rig) -> None:
    start = datetime(2026, 11, 25, 22, 0, tzinfo=ZoneInfo("Europe/Rome")).timestamp()
    rig.comms.tick(start - 25 * HOUR)
    assert rig.notices() == []
    rig.comms.tick(start - 24 * HOUR)
    rig.comms.tick(start - 12 * HOUR)
    rig.comms.tick(start + 60)
    rig.comms.tick(start + 2 * HOUR)
    assert [kind for kind, _, _ in rig.notices()] == ["scheduled", "in_progress", "completed"]
    assert rig.notices("mail-users") == []
    [scheduled, *_] = [p for p in rig.outbox("email.send") if p.get("kind") == "scheduled"]
    maintenance = scheduled["context"]["maintenance"]
    assert (maintenance["starts_at"], maintenance["ends_at"]) == (start, start + 2 * HOUR)
    assert maintenance["title"] == "Intranet upgrade"


def test_the_ticket_hears_the_incident_is_still_open(rig: Rig) -> None:
    rig.web(0, T0)
    assert rig.store.query("SELECT COUNT(*) FROM ticket")[0][0] == 1
    rig.web(0, T0 + 6 * HOUR - 1)
    rig.web(0, T0 + 6 * HOUR)
    rig.web(0, T0 + 12 * HOUR)
    comments = [p for p in rig.outbox("ticket.comment") if p.get("template") == "ticket_still_open"]
    assert [round(p["context"]["open_for"]) for p in comments] == [6 * 3600, 12 * 3600]
    text = Renderer().render_text("ticket_still_open.txt.j2", comments[0]["context"])
    assert "6 h" in text or "6 hours" in text
