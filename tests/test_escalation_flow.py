"""Escalation on the real engine, state store and command line, with time passed as `now`.

The config is parsed from TOML as a sysadmin writes it; samples go through the engine, which
opens incidents; the communicator decides the steps; an acknowledgement comes from the real
`forewarn incidents ack` command on the same state file.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cli_runner import forewarn
from comms_parts import HEAD, audience, escalation, step, web_down, wire

from monitor.config import parse_config
from probes.base import Sample

ROME = ZoneInfo("Europe/Rome")
WEB = {"url": "http://intranet/", "probe": "web"}
MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=ROME).timestamp()
FRIDAY_1650 = datetime(2026, 11, 20, 16, 50, tzinfo=ROME).timestamp()
MONDAY_09 = datetime(2026, 11, 23, 9, 0, tzinfo=ROME).timestamp()

CONFIG = (
    HEAD
    + web_down('service = "intranet"', 'escalation = "oncall"')
    + """
[[probe]]
name = "disk"
kind = "disk"

[[rule]]
name = "disk_filling"
probe = "disk"
metric = "disk_used_percent"
condition = "value > 80 and eta < 4 * 3600"
window = "2h"
predict = 100
service = "file shares"
escalation = "oncall"
"""
    + audience("tier2", "intranet", "tier2@example.com")
    + escalation("oncall", 'urgent_gap = "1m"')
    + """
[escalation.business_hours]
days = "mon-fri"
start = "09:00"
end = "17:00"
timezone = "Europe/Rome"
holidays = "IT"
"""
    + step("0s", "tier1@example.com")
    + step("30m", "tier2", "{limited}")
    + step("2h", "boss@example.com")
)


class Rig:
    def __init__(self, tmp: Path, business_hours_only: bool = False) -> None:
        self.state = tmp / "state"
        limited = "business_hours_only = true" if business_hours_only else ""
        self.config_path = tmp / "config.toml"
        self.config_path.write_text(CONFIG.format(state=self.state, limited=limited))
        parts = wire(parse_config(self.config_path.read_text(), str(self.config_path)))
        self.config, self.store, self.engine, self.comms, _ = parts

    def web_down(self, now: float) -> None:
        """The intranet does not answer (a probe run at `now`), and a tick of the daemon."""
        self.engine.process([Sample("http_up", 0.0, now, WEB)], now)
        self.tick(now)

    def tick(self, now: float) -> None:
        self.engine.tick(now)
        self.comms.tick(now)

    def fired(self) -> list[tuple[int, bool]]:
        rows = self.store.query("SELECT step, urgent FROM escalation_fired ORDER BY step")
        return [(r["step"], bool(r["urgent"])) for r in rows]

    def escalation_mails(self) -> list[str]:
        rows = self.store.query("SELECT payload FROM outbox WHERE op = 'email.send' ORDER BY id")
        payloads = [json.loads(r["payload"]) for r in rows]
        return [p["to"][0] for p in payloads if p["template"] == "escalation"]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    yield rig
    rig.store.close()


def test_unacknowledged_goes_to_step_2_at_its_delay(rig: Rig) -> None:
    rig.web_down(MONDAY_10)
    assert rig.fired() == [(0, False)]
    assert rig.escalation_mails() == ["tier1@example.com"]
    rig.web_down(MONDAY_10 + 29 * 60 + 59)
    assert rig.fired() == [(0, False)]
    rig.web_down(MONDAY_10 + 30 * 60)
    assert rig.fired() == [(0, False), (1, False)]
    assert rig.escalation_mails() == ["tier1@example.com", "tier2@example.com"]
    rig.web_down(MONDAY_10 + 30 * 60 + 1)  # once per episode
    assert rig.escalation_mails() == ["tier1@example.com", "tier2@example.com"]


def test_acknowledged_from_the_command_line_stops_further_steps(rig: Rig) -> None:
    rig.web_down(MONDAY_10)
    rig.web_down(MONDAY_10 + 30 * 60)
    done = forewarn("incidents", "ack", "1", "--by", "ana", "-c", str(rig.config_path))
    assert done.returncode == 0, done.stdout + done.stderr
    rig.web_down(MONDAY_10 + 3 * 3600)  # step 3 was due at 2 h
    assert rig.fired() == [(0, False), (1, False)]
    assert "boss@example.com" not in rig.escalation_mails()
    comments = rig.store.query("SELECT payload FROM outbox WHERE op = 'ticket.comment' ORDER BY id")
    texts = [json.loads(r["payload"]).get("text", "") for r in comments]
    assert any("Escalated (step 2) to tier2" in text for text in texts)
    assert any("Acknowledged by ana" in text for text in texts)


def test_resolution_stops_escalation(rig: Rig) -> None:
    rig.web_down(MONDAY_10)
    now = MONDAY_10 + 60
    rig.engine.process([Sample("http_up", 1.0, now, WEB)], now)
    rig.tick(MONDAY_10 + 3 * 3600)
    assert rig.fired() == [(0, False)]


def test_predicted_impact_before_the_next_step_escalates_at_once(rig: Rig) -> None:
    """The disk fills 1 % a minute from 60 %: full at minute 40. The incident opens once the
    trend is known (minute 30 here); step 2 is due 30 minutes later, after the disk is full,
    so it fires one urgent_gap after step 1 instead."""
    start = MONDAY_10
    for minute in range(0, 36):
        now = start + minute * 60
        value = 60.0 + minute  # full at minute 40
        disk = Sample("disk_used_percent", value, now, {"mountpoint": "/", "probe": "disk"})
        rig.engine.process([disk], now)
        rig.tick(now)
    rows = rig.store.query("SELECT * FROM incident WHERE rule = 'disk_filling'")
    assert rows, "the trend should have opened an incident"
    opened, predicted = rows[0]["opened_at"], rows[0]["predicted_at"]
    assert predicted is not None and predicted < opened + 30 * 60
    fired = rig.store.query(
        "SELECT step, urgent, fired_at FROM escalation_fired WHERE incident_id = ? ORDER BY step",
        (rows[0]["id"],),
    )
    assert [(r["step"], bool(r["urgent"])) for r in fired] == [(0, False), (1, True), (2, True)]
    # Step 2 went out one urgent_gap (1 min) after step 1, not 30 min later; step 3 (due at
    # 2 h) one more minute on: urgency moves one step at a time, all before the impact.
    times = [r["fired_at"] for r in fired]
    assert [b - a for a, b in itertools.pairwise(times)] == [60.0, 60.0]
    assert times[-1] < predicted


def test_outside_business_hours_a_limited_step_waits(tmp_path: Path) -> None:
    rig = Rig(tmp_path, business_hours_only=True)
    try:
        rig.web_down(FRIDAY_1650)  # step 2 nominally due at 17:20, after hours
        rig.web_down(FRIDAY_1650 + 30 * 60)
        rig.web_down(FRIDAY_1650 + 26 * 3600)  # Saturday
        assert rig.fired() == [(0, False), (2, False)]  # step 3 (any hour) did not wait
        rig.web_down(MONDAY_09 - 1)
        assert (1, False) not in rig.fired()
        rig.web_down(MONDAY_09)
        assert (1, False) in rig.fired()
    finally:
        rig.store.close()
