"""End to end, on real parts: `forewarn run` as a subprocess probing a loopback HTTP service,
the built-in ticket store, and a real SMTP server on loopback.

The figures printed here (fault to ticket, fault to e-mail) are the ones quoted in the notes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_process import HELPDESK, USERS, ServiceRig, builtin_desk, http_down, wait_until
from smtp_server import ReceivedMail, SmtpTestServer

from notifiers.builtin import BuiltinTickets

pytestmark = pytest.mark.slow

# The keys of intranet_down beyond those of http_down.
INTRANET_DOWN = """severity = "critical"
service = "the intranet"
category = "web"
summary = "The intranet at {{ labels.url }} is not answering"
notify_users = true
"""


def daemon_config(url: str) -> str:
    """The built-in help desk and the intranet's probe and rule, for the intranet at `url`."""
    return builtin_desk() + http_down("intranet", url, INTRANET_DOWN)


class Rig(ServiceRig):
    """The daemon, its service, its mail server and its state, for one test."""

    def __init__(self, tmp: Path, smtp: SmtpTestServer) -> None:
        super().__init__(tmp, daemon_config, smtp_port=smtp.port, reopen_within="1h")
        self.smtp = smtp

    def tickets(self) -> BuiltinTickets:
        return BuiltinTickets(str(self.state / "forewarn.db"))

    def wait_ticket(self, status: str, timeout: float = 15) -> float:
        def found() -> bool:
            if not (self.state / "forewarn.db").exists():
                return False
            return any(t.status == status for t in self.tickets().list_tickets())
        wait_until(found, timeout, f"a ticket in status {status} ({self.daemon.log()})")
        return time.monotonic()

    def wait_mail(self, to: str, words: str, timeout: float = 15) -> float:
        self.smtp.wait_for(lambda m: _is(m, to, words), timeout)
        return time.monotonic()

    def mails(self, to: str, words: str) -> list[ReceivedMail]:
        return [m for m in self.smtp.received if _is(m, to, words)]

    def metric(self, line_start: str) -> bool:
        text = self.daemon.metrics() or ""
        return any(line.startswith(line_start) for line in text.splitlines())


def _is(mail: ReceivedMail, to: str, words: str) -> bool:
    return to in mail.rcpt_tos and words in str(mail.message["Subject"])


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with SmtpTestServer() as smtp, Rig(tmp_path, smtp).running() as rig:
        yield rig


def _healthy(rig: Rig) -> None:
    rig.daemon.start()
    wait_until(lambda: rig.metric('forewarn_http_up{probe="intranet"'), 10, "a first probe run")
    wait_until(lambda: rig.metric("forewarn_http_up{") and
               'forewarn_http_up{probe="intranet",url="' in (rig.daemon.metrics() or ""),
               10, "the http_up gauge")


def test_outage_opens_resolves_and_reopens_one_ticket(rig: Rig) -> None:
    _healthy(rig)

    fault = time.monotonic()
    rig.service.stop()
    ticket_at = rig.wait_ticket("new")
    helpdesk_at = rig.wait_mail(HELPDESK, "[#1] CRITICAL intranet_down on testhost")
    user_at = rig.wait_mail(USERS, "Problem with the intranet")
    print(f"\nfault_to_ticket {ticket_at - fault:.2f} s")
    print(f"fault_to_helpdesk_mail {helpdesk_at - fault:.2f} s")
    print(f"fault_to_user_notice {user_at - fault:.2f} s")

    [ticket] = rig.tickets().list_tickets()
    assert ticket.priority == "high" and ticket.category == "web"
    assert "[forewarn:" in ticket.marker and "is not answering" in ticket.subject
    body = rig.tickets().show(ticket.number).body
    assert "connection refused" in body.lower()

    recovery = time.monotonic()
    rig.service.start()
    rig.wait_ticket("resolved")
    resolved_mail_at = rig.wait_mail(HELPDESK, "[#1] RESOLVED intranet_down")
    rig.wait_mail(USERS, "Fixed: the intranet is working normally again")
    print(f"recovery_to_resolution_mail {resolved_mail_at - recovery:.2f} s")

    rig.service.stop()
    rig.wait_ticket("open")  # reopened: same ticket, back to open
    rig.wait_mail(HELPDESK, "[#1] REOPENED CRITICAL intranet_down")
    rig.wait_mail(USERS, "Problem with the intranet again")

    tickets = rig.tickets().list_tickets()
    assert [t.number for t in tickets] == [1], "a recurrence must reopen, not duplicate"
    comments = [c.text for c in rig.tickets().show(1).comments]
    assert any("Status changed to resolved" in c for c in comments)
    assert any("Status changed to open" in c for c in comments)
    time.sleep(1.5)  # let any stray duplicate arrive before counting
    assert len(rig.mails(HELPDESK, "CRITICAL intranet_down on testhost")) == 2  # open + reopen
    assert len(rig.mails(HELPDESK, "RESOLVED")) == 1
    assert len(rig.mails(USERS, "Problem with the intranet")) == 2
    assert len(rig.mails(USERS, "Fixed")) == 1
    assert rig.metric('forewarn_tickets_total{action="reopened"} 1.0')


def test_kill_9_after_detection_loses_and_duplicates_nothing(rig: Rig) -> None:
    _healthy(rig)

    rig.service.stop()
    wait_until(lambda: rig.rows("SELECT id FROM incident"), 15, "the incident row")
    rig.daemon.kill9()  # right after detection: the outbox holds the ticket and the mails
    rig.daemon.start()

    rig.wait_ticket("new")
    rig.wait_mail(HELPDESK, "[#1] CRITICAL intranet_down")
    rig.wait_mail(USERS, "Problem with the intranet")

    rig.service.start()
    rig.wait_ticket("resolved")
    rig.wait_mail(HELPDESK, "RESOLVED intranet_down")
    rig.wait_mail(USERS, "Fixed")
    # Once more after recovery, when the outbox is drained. (Killed in the instant between the
    # mail server accepting a mail and the row being marked done, the mail would be resent with
    # the same Message-ID: SMTP has no way to ask whether a mail arrived.)
    wait_until(lambda: rig.metric("forewarn_outbox_depth 0.0"), 10, "an empty outbox")
    rig.daemon.kill9()
    rig.daemon.start()
    time.sleep(2.5)  # a few probe cycles: nothing new may be sent

    assert [t.number for t in rig.tickets().list_tickets()] == [1]
    for to, words in [(HELPDESK, "CRITICAL"), (USERS, "Problem with"), (HELPDESK, "RESOLVED"),
                      (USERS, "Fixed")]:
        assert len(rig.mails(to, words)) == 1, (to, words, [
            str(m.message["Subject"]) for m in rig.smtp.received
        ])
    ids = [m.message["Message-ID"] for m in rig.smtp.received]
    assert len(ids) == len(set(ids)) == 4


def test_mail_server_down_waits_in_the_outbox(rig: Rig) -> None:
    _healthy(rig)
    rig.smtp.stop()
    rig.service.stop()
    rig.wait_ticket("new")
    wait_until(lambda: rig.metric("forewarn_outbox_depth 2.0"), 15, "two mails waiting")
    rig.smtp.start()  # same port: the retry with backoff delivers them
    rig.wait_mail(HELPDESK, "[#1] CRITICAL", timeout=20)
    rig.wait_mail(USERS, "Problem with the intranet", timeout=20)
    wait_until(lambda: rig.metric("forewarn_outbox_depth 0.0"), 10, "an empty outbox")
