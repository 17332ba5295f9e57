"""The e-mail-to-ticket backend against a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterator

import pytest
from smtp_server import ReceivedMail, SmtpTestServer, free_port

from monitor.schema import build_options
from notifiers.base import DeliveryError, TicketDraft
from notifiers.email_tickets import EmailTickets, first_message_id
from probes.base import Duration

# plain-text AUTH on loopback is what the login test exercises on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

INTAKE = "support@helpdesk.example.org"
SENDER = "forewarn@web01.example.org"
MARKER = "[forewarn:1a2b3c4d5e6f7a8b]"
PASSWORD = "s3cret-Pa55word"


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as smtp:
        yield smtp


def backend_for(server: SmtpTestServer, **overrides: object) -> EmailTickets:
    fields: dict[str, object] = {
        "to": INTAKE, "sender": SENDER, "smtp_host": server.host, "smtp_port": server.port,
        "timeout": Duration(5),
    }
    fields.update(overrides)
    options = EmailTickets.Options(**fields)  # type: ignore[arg-type]
    return EmailTickets.from_config(options, "state.sqlite")


def draft(**overrides: object) -> TicketDraft:
    fields: dict[str, object] = {
        "marker": MARKER,
        "subject": "[CRITICAL] Intranet is not answering on web01",
        "body": f"Intranet is not answering on web01.\n\n{MARKER}\n",
        "priority": "high",
        "category": "web",
        "tags": ("forewarn", "web", "intranet"),
    }
    fields.update(overrides)
    return TicketDraft(**fields)  # type: ignore[arg-type]


def subject(mail: ReceivedMail) -> str:
    # A subject longer than a line is folded onto the next one; Python's parser keeps the
    # fold's space in front (RFC 5322 unfolding does), where mail clients and help desks trim.
    return str(mail.message["Subject"]).strip()


def headers_of(mail: ReceivedMail, *names: str) -> dict[str, str | None]:
    return {name: mail.message[name] for name in names}


def test_create_mails_the_ticket_with_the_marker_in_the_subject(server: SmtpTestServer) -> None:
    info = backend_for(server).create(draft())

    mail = server.wait_for()
    assert (mail.mail_from, mail.rcpt_tos) == (SENDER, (INTAKE,))
    assert subject(mail) == f"[CRITICAL] Intranet is not answering on web01 {MARKER}"
    assert mail.message["To"] == INTAKE
    assert mail.body() == draft().body
    assert headers_of(
        mail, "X-Forewarn-Marker", "X-Forewarn-Event", "X-Priority", "X-Forewarn-Priority",
        "X-Forewarn-Category", "X-Forewarn-Tags", "In-Reply-To",
    ) == {
        "X-Forewarn-Marker": MARKER, "X-Forewarn-Event": "create", "X-Priority": "1 (Highest)",
        "X-Forewarn-Priority": "high", "X-Forewarn-Category": "web",
        "X-Forewarn-Tags": "forewarn, web, intranet", "In-Reply-To": None,
    }
    assert (info.external_id, info.number, info.status) == (MARKER, MARKER, "new")


def test_the_first_message_id_comes_from_the_marker_alone(server: SmtpTestServer) -> None:
    # A repeated create (after an unknown outcome, or from a second forewarn) is the same
    # mail to the help desk: the same Message-ID lets it drop the copy.
    backend_for(server).create(draft())
    backend_for(server).create(draft(subject="(again) reworded", body="other words\n"))

    first, second = server.received
    assert first.message["Message-ID"] == second.message["Message-ID"] == first_message_id(MARKER)
    assert re.fullmatch(r"<[0-9a-f]{32}@forewarn>", first_message_id(MARKER))
    assert first_message_id(MARKER) != first_message_id("[forewarn:1a2b3c4d5e6f7a8b:2]")


def test_follow_ups_thread_onto_the_first_mail(server: SmtpTestServer) -> None:
    backend = backend_for(server)
    info = backend.create(draft())
    backend.comment(info.external_id, "Severity changed from warning to critical.\n\nMore.\n")
    backend.resolve(info.external_id, "Resolved at 10:42: the problem is gone.\n")
    backend.reopen(info.external_id, "\n  The problem is back.\n")

    first, *follow_ups = server.received
    assert [subject(mail) for mail in follow_ups] == [
        f"Re: Severity changed from warning to critical. {MARKER}",
        f"Re: Resolved at 10:42: the problem is gone. {MARKER}",
        f"Re: The problem is back. {MARKER}",
    ]
    assert [mail.message["X-Forewarn-Event"] for mail in follow_ups] == [
        "comment", "resolve", "reopen",
    ]
    assert follow_ups[1].body() == "Resolved at 10:42: the problem is gone.\n"
    first_id = first.message["Message-ID"]
    for mail in follow_ups:
        assert mail.message["In-Reply-To"] == mail.message["References"] == first_id
        assert mail.message["X-Forewarn-Marker"] == MARKER
        assert mail.rcpt_tos == (INTAKE,)
    ids = {mail.message["Message-ID"] for mail in server.received}
    assert len(ids) == 4  # a follow-up with the same words is still a new message


def test_follow_up_subjects_stay_short(server: SmtpTestServer) -> None:
    backend = backend_for(server)
    backend.comment(MARKER, "x" * 300)
    backend.resolve(MARKER, "")

    long, empty = server.received
    assert subject(long) == f"Re: {'x' * 79}… {MARKER}"
    assert subject(empty) == f"Re: Resolved {MARKER}"


def test_related_tickets_are_mentioned_once(server: SmtpTestServer) -> None:
    older, oldest = "[forewarn:1a2b3c4d5e6f7a8b:2]", MARKER
    backend = backend_for(server)
    backend.create(draft(marker="[forewarn:1a2b3c4d5e6f7a8b:3]", related=(older, oldest)))

    body = server.wait_for().body()
    assert body.endswith(f"\n\nEarlier tickets of the same problem: {older}\n")
    assert body.count(oldest) == 1  # the body already named it


def test_a_subject_that_has_the_marker_keeps_one(server: SmtpTestServer) -> None:
    backend_for(server).create(draft(subject=f"{MARKER} disk full", priority="low", tags=()))

    mail = server.wait_for()
    assert subject(mail) == f"{MARKER} disk full"
    assert mail.message["X-Priority"] == "5 (Lowest)"
    assert mail.message["X-Forewarn-Tags"] is None


def test_mail_cannot_be_searched_or_read_back(server: SmtpTestServer) -> None:
    backend = backend_for(server)
    backend.create(draft())

    assert backend.find_by_marker(MARKER) is None
    assert backend.get(MARKER) is None
    assert len(server.received) == 1


def test_a_server_that_is_down_is_worth_a_retry() -> None:
    port = free_port()
    options = EmailTickets.Options(to=INTAKE, sender=SENDER, smtp_host="127.0.0.1",
                                   smtp_port=port, timeout=Duration(2))
    with pytest.raises(DeliveryError) as caught:
        EmailTickets(options).create(draft())

    assert not caught.value.permanent
    assert f"127.0.0.1:{port}" in str(caught.value)


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [("550 5.1.1 no such mailbox", True), ("451 4.3.0 try again later", False)],
)
def test_refusals_are_sorted_by_their_code(
    server: SmtpTestServer, reply: str, permanent: bool
) -> None:
    server.set_rcpt_reply(reply)
    backend = backend_for(server)

    with pytest.raises(DeliveryError) as caught:
        backend.comment(MARKER, "Still failing.\n")

    assert caught.value.permanent is permanent
    assert reply.split()[0] in str(caught.value)


def test_the_password_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with SmtpTestServer(auth=("forewarn", "the-right-one")) as server:
        backend = backend_for(server, smtp_username="forewarn", smtp_password=PASSWORD)
        with pytest.raises(DeliveryError) as caught:
            backend.create(draft())

    text = f"{caught.value}\n{caught.value!r}\n{backend.options!r}\n{caplog.text}"
    assert caught.value.permanent  # a wrong password stays wrong
    assert "535" in str(caught.value)
    assert PASSWORD not in text
    assert base64.b64encode(PASSWORD.encode()).decode() not in text


def test_login_and_delivery_with_the_right_password() -> None:
    with SmtpTestServer(auth=("forewarn", PASSWORD)) as server:
        backend_for(server, smtp_username="forewarn", smtp_password=PASSWORD).create(draft())
        assert server.wait_for().authenticated_as == "forewarn"


# --- the [helpdesk] keys, read as the config loader reads them ---------------------------


def load(table: dict[str, object]) -> tuple[EmailTickets.Options | None, list[str]]:
    errors: list[str] = []
    return build_options(EmailTickets.Options, table, "helpdesk", errors), errors


def test_options_from_the_config_with_the_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HELPDESK_SMTP_PASSWORD", PASSWORD)
    options, errors = load({
        "to": INTAKE, "from": SENDER, "smtp_host": "mail.example.org",
        "smtp_security": "ssl", "smtp_username": "forewarn",
        "smtp_password": {"env": "HELPDESK_SMTP_PASSWORD"}, "timeout": "30s",
    })

    assert errors == []
    assert options is not None
    settings = options.smtp_settings()
    assert (settings.host, settings.port, settings.security) == ("mail.example.org", 465, "ssl")
    assert (settings.sender, settings.password, settings.timeout) == (SENDER, PASSWORD, 30.0)
    assert PASSWORD not in repr(options)


def test_options_defaults() -> None:
    options, errors = load({"to": INTAKE, "from": SENDER})

    assert errors == [] and options is not None
    settings = options.smtp_settings()
    assert (settings.host, settings.port, settings.security) == ("localhost", 25, "none")
    assert (settings.username, settings.timeout, settings.verify_tls) == (None, 10.0, True)


REQUIRED = {"to": INTAKE, "from": SENDER}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"from": SENDER}, "helpdesk.to: missing required key"),
        (REQUIRED | {"to": "desk"}, "helpdesk.to: 'desk' is not an e-mail address"),
        (REQUIRED | {"smtp_security": "tls"}, "smtp_security must be one of none, starttls, ssl"),
        (REQUIRED | {"smtp_port": 0}, "smtp_port 0 is not a TCP port"),
        (REQUIRED | {"smtp_username": "forewarn"}, "smtp_username and smtp_password go together"),
        (REQUIRED | {"smtp_password": PASSWORD}, "{ env = ... } or { file = ... }"),
        (REQUIRED | {"sender": SENDER}, "helpdesk.sender: unknown key"),
        (REQUIRED | {"timeout": "soon"}, "helpdesk.timeout: \"soon\" is not a duration"),
    ],
)
def test_options_errors(table: dict[str, object], message: str) -> None:
    options, errors = load(table)

    assert options is None
    assert any(message in error for error in errors), errors
    assert PASSWORD not in "\n".join(errors)
