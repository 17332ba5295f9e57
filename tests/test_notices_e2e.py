"""User notices end to end: `forewarn run` as a subprocess, a loopback HTTP service that goes
down and comes back, the built-in ticket store, and a real SMTP server on loopback.

Four audiences depend on the intranet, one per shipped language; a fifth depends only on the
mail service and must hear nothing. The estimate of the fix comes from history the daemon
made itself: a first real outage, then a second one whose notices carry the estimate.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_process import ServiceRig, http_down, wait_until
from smtp_server import ReceivedMail, SmtpTestServer

pytestmark = pytest.mark.slow

LANGUAGES = {"en": "en@example.com", "it": "it@example.com", "ru": "ru@example.com",
             "hu": "hu@example.com"}
OTHERS = "mail-users@example.com"

CONFIG = """
[helpdesk]
kind = "builtin"
contact = "helpdesk@example.com"

[notices]
update_every = "4s"
timezone = "Europe/Rome"

[[service]]
name = "intranet"
title = { en = "the intranet", it = "la intranet", ru = "интранет", hu = "az intranet" }

[[service]]
name = "mail"
title = "e-mail"
"""

# The keys of intranet_down beyond those of http_down.
INTRANET_DOWN = """severity = "critical"
service = "intranet"
notify_users = true
summary = "The intranet at {{ labels.url }} is not answering"
user_impact.en = "Pages of the intranet may not open."
user_impact.it = "Le pagine della intranet potrebbero non aprirsi."
workaround = "Documents are also on the shared drive S:."
"""

AUDIENCE = """
[[audience]]
name = "{name}"
title = "{title}"
services = ["{service}"]
email = ["{email}"]
language = "{language}"
"""


def audiences() -> str:
    own = [
        AUDIENCE.format(name=f"staff-{lang}", title=f"Staff {lang}", service="intranet",
                        email=email, language=lang)
        for lang, email in LANGUAGES.items()
    ]
    other = AUDIENCE.format(name="mail-users", title="Mail users", service="mail",
                            email=OTHERS, language="en")
    return "".join([*own, other])


def daemon_config(url: str) -> str:
    """The notices, the intranet's probe and rule for the intranet at `url`, the audiences."""
    return CONFIG + http_down("intranet", url, INTRANET_DOWN) + audiences()


class Rig(ServiceRig):
    def __init__(self, tmp: Path, smtp: SmtpTestServer) -> None:
        super().__init__(tmp, daemon_config, smtp_port=smtp.port, reopen_within="1s")
        self.smtp = smtp

    def notices(self, to: str, kind: str) -> list[ReceivedMail]:
        return [m for m in self.smtp.received if to in m.rcpt_tos and _kind(m) == kind]

    def wait_notice(self, to: str, kind: str, count: int = 1, timeout: float = 20) -> ReceivedMail:
        found = wait_until(
            lambda: len(self.notices(to, kind)) >= count and self.notices(to, kind),
            timeout,
            f"{count} {kind} notice(s) to {to} ({self.daemon.log()})",
        )
        return found[count - 1]


def _kind(mail: ReceivedMail) -> str:
    return str(mail.message["X-Forewarn-Notice"] or "")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with SmtpTestServer() as smtp, Rig(tmp_path, smtp).running() as rig:
        yield rig


# Words each language's notices use, and English would not.
NATIVE = {"it": "intranet", "ru": "интранет", "hu": "intranet"}


def test_outage_notices_reach_the_affected_audiences_in_their_languages(rig: Rig) -> None:
    rig.daemon.start()
    rig.service.stop()  # outage 1

    first = {lang: rig.wait_notice(email, "investigating") for lang, email in LANGUAGES.items()}
    for lang, mail in first.items():
        assert mail.message["Content-Language"] == lang
        text = mail.body()
        assert "#1" in text, f"{lang}: the ticket number\n{text}"
        assert "helpdesk@example.com" in text
        assert "[forewarn:" not in text and "http_up" not in text  # technical fields stay out
    assert "Le pagine della intranet potrebbero non aprirsi." in first["it"].body()
    assert "Pages of the intranet may not open." in first["en"].body()
    assert "интранет" in first["ru"].body()
    assert "shared drive S:" in first["hu"].body()  # written once, for every language

    # A follow-up at the cadence (4 s) while it stays down.
    update = rig.wait_notice(LANGUAGES["en"], "update", timeout=15)
    assert "#1" in update.body()

    rig.service.start()  # recovery
    resolved = {lang: rig.wait_notice(email, "resolved") for lang, email in LANGUAGES.items()}
    [incident] = rig.rows("SELECT * FROM incident")
    lasted = incident["resolved_at"] - incident["opened_at"]
    assert lasted > 4
    assert "second" in resolved["en"].body() or "minute" in resolved["en"].body()

    # Nobody who depends only on e-mail heard of any of it.
    assert not [m for m in rig.smtp.received if OTHERS in m.rcpt_tos]
    # Each audience got each step once.
    for email in LANGUAGES.values():
        assert len(rig.notices(email, "investigating")) == 1
        assert len(rig.notices(email, "resolved")) == 1

    # No estimate without history; after one real outage there is one.
    [eta_1] = rig.rows(
        "SELECT eta_at FROM notice WHERE kind = 'investigating' AND audience = 'staff-en'"
    )
    assert eta_1["eta_at"] is None

    time.sleep(1.5)  # past reopen_within: a new incident of the same problem
    rig.service.stop()  # outage 2
    second = rig.wait_notice(LANGUAGES["en"], "investigating", count=2)
    rows = rig.rows(
        "SELECT n.eta_at, i.opened_at FROM notice n JOIN incident i ON i.id = n.incident_id"
        " WHERE n.kind = 'investigating' AND n.audience = 'staff-en' ORDER BY n.id"
    )
    assert rows[1]["eta_at"] == pytest.approx(rows[1]["opened_at"] + lasted, abs=0.01)
    assert first["en"].body() != second.body()
    assert "#2" in second.body()
