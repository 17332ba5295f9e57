"""forewarn alerts on itself, through a channel that does not depend on the failing part.

The deciding parts (engine, communicator, dispatcher, the self-monitor's samples) run in the
test's process on a real state store, with time passed as `now`. The help desk that fails is
a webhook pointed at a closed loopback port (connections are refused: the real failure), the
mail server a real SMTP server on loopback; only a nearly full disk is faked (`disk_usage`).
"""

from __future__ import annotations

import json
import sqlite3
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path

import pytest
from comms_parts import HEAD, dispatcher, escalation, step, web_down, wire
from smtp_server import ReceivedMail, SmtpTestServer, free_port

from monitor.comms import comms_settings
from monitor.config import (
    DELIVERY_FAILED_RULE,
    PROBE_STALE_RULE,
    ConfigError,
    parse_config,
)
from monitor.daemon import build_channel
from monitor.selfmon import (
    SELF_POLICY,
    SelfMonitor,
    with_self_rules,
)
from notifiers.builtin import BuiltinTickets
from probes.base import Sample

ADMIN = "ops@example.com"
T0 = 1_790_000_000.0
MINUTE = 60.0
WEB = {"url": "http://intranet/", "probe": "web"}
Usage = namedtuple("Usage", "total used free")


def config_text(state: Path, smtp_port: int, helpdesk: str, extra: str = "") -> str:
    head = HEAD.format(state=state).replace("port = 2525", f"port = {smtp_port}")
    head = head.replace('hostname = "web01"', f'hostname = "web01"\nadmins = ["{ADMIN}"]')
    return head + helpdesk + web_down() + extra


DOWN_HELPDESK = """
[helpdesk]
kind = "webhook"
url = "http://127.0.0.1:{port}/tickets"
timeout = "2s"
"""


class Rig:
    """forewarn's deciding parts on one state store, the clock in the test's hands."""

    def __init__(self, text: str, disk_free: float = 0.5) -> None:
        # As the daemon wires them: with the built-in self rules, mail through [smtp].
        config = parse_config(text, "selfmon.toml")
        parts = wire(config, with_self_rules(config))
        _, self.store, self.engine, self.comms, self.metrics = parts
        self.now = T0
        self.disk_free = disk_free  # the share of the state directory's disk still free
        self.web_is_down = False
        self.selfmon = SelfMonitor(
            self.store, config.daemon.state_dir, self.metrics, self._disk_usage
        )
        self.dispatcher = dispatcher(parts, lambda: self.now, build_channel(config))

    def _disk_usage(self, path: str) -> Usage:
        total = 100 * 2**30
        free = int(total * self.disk_free)
        return Usage(total, total - free, free)

    def web_down(self) -> None:
        """The intranet stops answering: its probe says so now and at every later tick."""
        self.web_is_down = True
        self.engine.process([Sample("http_up", 0.0, self.now, WEB)], self.now)
        self.dispatcher.run_once()

    def tick(self, at: float) -> None:
        """One tick of the daemon at `at`: self samples, time passing, messages, delivery."""
        self.now = at
        web = [Sample("http_up", 0.0, at, WEB)] if self.web_is_down else []
        self.engine.process([*web, *self.selfmon.samples(at)], at)
        self.engine.tick(at)
        self.comms.tick(at)
        self.dispatcher.run_once()

    def incident(self, rule: str) -> sqlite3.Row | None:
        rows = self.store.query(
            "SELECT * FROM incident WHERE rule = ? AND status = 'open'", (rule,)
        )
        return rows[0] if rows else None

    def ticket_create(self, incident: sqlite3.Row) -> sqlite3.Row:
        rows = self.store.query(
            "SELECT status, attempts, last_error FROM outbox WHERE incident_id = ?"
            " AND op = 'ticket.create'",
            (incident["id"],),
        )
        return rows[0]


def to_admin(mail: ReceivedMail, words: str) -> bool:
    return ADMIN in mail.rcpt_tos and words in str(mail.message["Subject"])


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


def test_help_desk_down_the_admin_hears_by_mail_without_a_ticket(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    helpdesk = DOWN_HELPDESK.format(port=free_port())
    rig = Rig(config_text(tmp_path / "state", smtp.port, helpdesk))
    rig.web_down()  # its ticket cannot be created: the help desk refuses connections
    web = rig.incident("web_down")
    assert web is not None and rig.ticket_create(web)["status"] == "pending"

    rig.tick(T0 + 14 * MINUTE)  # within [daemon] outbox_age_limit (15m by default)
    assert rig.incident("outbox_stuck") is None

    rig.tick(T0 + 16 * MINUTE)
    stuck = rig.incident("outbox_stuck")
    assert stuck is not None and stuck["category"] == "monitoring"
    mail = smtp.wait_for(lambda m: to_admin(m, "outbox_stuck"))
    assert "outbox has waited 16 minutes" in mail.body()
    # Sent while the help desk still fails: no ticket exists, its creation is being retried.
    assert rig.store.ticket_for(stuck["id"]) is None
    create = rig.ticket_create(stuck)
    assert create["status"] == "pending" and "connection refused" in create["last_error"]
    assert not str(mail.message["Subject"]).startswith("[")  # no ticket number to name
    assert len([m for m in smtp.received if to_admin(m, "outbox_stuck")]) == 1


def test_a_help_desk_that_keeps_failing_is_named(tmp_path: Path, smtp: SmtpTestServer) -> None:
    helpdesk = DOWN_HELPDESK.format(port=free_port())
    text = config_text(tmp_path / "state", smtp.port, helpdesk)
    # The outbox's limit far away: only the count of failed attempts can fire here.
    rig = Rig(text.replace("[daemon]\n", '[daemon]\noutbox_age_limit = "1d"\n'))
    rig.web_down()
    for minutes in (7, 14, 21, 28, 35):  # each past the backoff's wait: every pass retries
        rig.tick(T0 + minutes * MINUTE)
    web = rig.incident("web_down")
    assert web is not None and rig.ticket_create(web)["attempts"] == 6
    assert rig.incident("delivery_retrying") is None  # 5 failures seen, not yet for 5 minutes
    rig.tick(T0 + 42 * MINUTE)
    assert rig.incident("delivery_retrying") is not None
    mail = smtp.wait_for(lambda m: to_admin(m, "delivery_retrying"))
    assert "channel = helpdesk" in mail.body()
    assert rig.incident("outbox_stuck") is None


def test_when_mail_fails_the_ticket_says_so(tmp_path: Path) -> None:
    """The other way round: the help desk works, the mail server is down; a ticket reports it."""
    helpdesk = '\n[helpdesk]\nkind = "builtin"\n\n[notify]\nhelpdesk = ["helpdesk@example.com"]\n'
    rig = Rig(config_text(tmp_path / "state", free_port(), helpdesk))
    rig.web_down()  # its ticket is created; its e-mail to the help desk cannot be sent
    for minutes in (7, 14, 21, 28, 35, 42):
        rig.tick(T0 + minutes * MINUTE)
    retrying = rig.incident("delivery_retrying")
    assert retrying is not None and json.loads(retrying["labels"]) == {"channel": "email"}
    tickets = BuiltinTickets(str(tmp_path / "state" / "forewarn.db")).list_tickets()
    subjects = [ticket.subject for ticket in tickets]
    assert any("Deliveries through email keep failing" in s for s in subjects), subjects


def test_a_nearly_full_state_directory_alerts_the_admin(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    text = config_text(tmp_path / "state", smtp.port, '\n[helpdesk]\nkind = "builtin"\n')
    rig = Rig(text, disk_free=0.06)
    rig.tick(T0)
    assert rig.incident("state_dir_full") is None
    free = rig.metrics.registry.get_sample_value("forewarn_state_dir_free_ratio")
    assert free == pytest.approx(0.06)

    rig.disk_free = 0.03
    rig.tick(T0 + 10)
    incident = rig.incident("state_dir_full")
    assert incident is not None
    assert json.loads(incident["labels"]) == {"path": str(tmp_path / "state")}
    mail = smtp.wait_for(lambda m: to_admin(m, "state_dir_full"))
    assert "almost full (3.0% free)" in mail.body()

    rig.disk_free = 0.2
    rig.tick(T0 + 20)
    assert rig.incident("state_dir_full") is None  # space freed: resolved


def test_other_escalations_wait_for_the_ticket_only_a_while(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    extra = escalation("default") + step("0s", "tier1@example.com")
    helpdesk = DOWN_HELPDESK.format(port=free_port())
    rig = Rig(config_text(tmp_path / "state", smtp.port, helpdesk, extra))
    rig.web_down()
    rig.tick(T0 + 1)
    rig.tick(T0 + 4 * MINUTE)
    assert not [m for m in smtp.received if "tier1@example.com" in m.rcpt_tos]  # waits...
    rig.tick(T0 + 6 * MINUTE)
    mail = smtp.wait_for(lambda m: "tier1@example.com" in m.rcpt_tos)  # ...then goes anyway
    assert "web_down" in str(mail.message["Subject"])


# --- configuration ---------------------------------------------------------------------------


def test_admins_and_the_outbox_limit_are_daemon_keys(tmp_path: Path) -> None:
    text = config_text(tmp_path, 25, "").replace(
        "[daemon]\n", '[daemon]\noutbox_age_limit = "1h"\n'
    )
    config = parse_config(text, "c.toml")
    assert (config.daemon.admins, config.daemon.outbox_age_limit) == ((ADMIN,), 3600)
    stuck = {rule.name: rule for rule in with_self_rules(config)}["outbox_stuck"]
    assert stuck.condition({"value": 3601.0}) and not stuck.condition({"value": 3599.0})
    assert parse_config("", "empty.toml").daemon.outbox_age_limit == 900


def test_admins_must_be_reachable() -> None:
    text = '[daemon]\nadmins = ["ops@example.com", "oncall"]\n'
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "c.toml")
    assert raised.value.errors == [
        "daemon.admins[1]: an address, but there is no [smtp] section (line 2)",
        'daemon.admins[2]: "oncall" is neither an [[audience]] nor an e-mail address;'
        " audiences: (none) (line 2)",
    ]


def test_self_rules_go_to_the_admins_and_yield_to_the_config(tmp_path: Path) -> None:
    text = (
        config_text(tmp_path, 25, "")
        + """
[[rule]]
name = "state_dir_full"
metric = "state_dir_free_ratio"
condition = "value < 0.2"
"""
    )
    config = parse_config(text, "c.toml")
    rules = {rule.name: rule for rule in with_self_rules(config)}
    assert rules["state_dir_full"].condition.source == "value < 0.2"  # the config's own
    assert rules["state_dir_full"].escalation == ""
    for name in ("probe_stale", "delivery_failed", "outbox_stuck", "delivery_retrying"):
        assert rules[name].escalation == SELF_POLICY, name
    assert rules["web_down"].escalation == ""
    [policy] = comms_settings(config).comms.escalations
    [step] = policy.steps
    assert (policy.name, step.after, step.targets) == (SELF_POLICY, 0, (ADMIN,))


def test_without_admins_the_built_in_rules_stay_as_they_are() -> None:
    config = parse_config("", "empty.toml")
    rules = with_self_rules(config)
    assert PROBE_STALE_RULE in rules and DELIVERY_FAILED_RULE in rules
    assert {rule.escalation for rule in rules} == {""}
    assert comms_settings(config).comms.escalations == ()
