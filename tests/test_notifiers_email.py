"""The SMTP channel against a real SMTP server on loopback."""

from __future__ import annotations

import base64
import logging
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from smtp_server import (
    SmtpTestServer,
    free_port,
    self_signed_server_context,
    unresponsive_port,
)

from notifiers import CHANNELS
from notifiers.base import DeliveryError, Message
from notifiers.email import SmtpChannel, SmtpSettings

# plain-text AUTH on loopback is what the login tests exercise on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

SENDER = "forewarn@example.com"
USER, PASSWORD = "forewarn", "s3cret-Pa55word"


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as smtp:
        yield smtp


def channel_for(server: SmtpTestServer, **overrides: object) -> SmtpChannel:
    settings: dict[str, object] = {
        "host": server.host, "port": server.port, "sender": SENDER, "timeout": 5.0,
    }
    settings.update(overrides)
    return SmtpChannel(SmtpSettings(**settings))  # type: ignore[arg-type]


def message(**overrides: object) -> Message:
    fields: dict[str, object] = {
        "to": ("agent@example.com",), "subject": "[#12] CRITICAL web_down on web01",
        "text": "Intranet is not answering.\n", "message_id": "<outbox-42@forewarn>",
    }
    fields.update(overrides)
    return Message(**fields)  # type: ignore[arg-type]


def test_registered_under_its_kind() -> None:
    assert CHANNELS["smtp"] is SmtpChannel
    assert SmtpChannel.kind == "smtp"


def test_delivers_text_and_html_alternatives_with_headers(server: SmtpTestServer) -> None:
    sent = message(
        to=("agent@example.com", "oncall@example.com"),
        html="<p>Intranet is <b>not</b> answering.</p>",
        headers={"X-Forewarn-Incident": "3", "Reply-To": "helpdesk@example.com"},
    )
    channel_for(server).send(sent)

    mail = server.wait_for()
    assert mail.mail_from == SENDER
    assert mail.rcpt_tos == ("agent@example.com", "oncall@example.com")
    headers = mail.message
    assert headers["From"] == SENDER
    assert headers["To"] == "agent@example.com, oncall@example.com"
    assert headers["Subject"] == "[#12] CRITICAL web_down on web01"
    assert headers["Message-ID"] == "<outbox-42@forewarn>"
    assert headers["X-Forewarn-Incident"] == "3"
    assert headers["Reply-To"] == "helpdesk@example.com"
    assert headers["Date"].datetime.timestamp() == pytest.approx(time.time(), abs=60)
    assert headers.get_content_type() == "multipart/alternative"
    assert mail.body("plain") == "Intranet is not answering.\n"
    assert mail.body("html").strip() == "<p>Intranet is <b>not</b> answering.</p>"


def test_text_only_message_is_a_single_part(server: SmtpTestServer) -> None:
    channel_for(server).send(message(html=None))
    mail = server.wait_for()
    assert mail.message.get_content_type() == "text/plain"
    assert not mail.message.is_multipart()


def test_non_ascii_subject_and_body_arrive_intact(server: SmtpTestServer) -> None:
    channel_for(server).send(message(subject="Störung: Intranet — 100 % down", text="Grüße ✓\n"))
    mail = server.wait_for()
    assert mail.message["Subject"] == "Störung: Intranet — 100 % down"
    assert mail.body() == "Grüße ✓\n"


@pytest.mark.parametrize(
    ("given", "expected"),
    [("outbox-7@forewarn", "<outbox-7@forewarn>"), ("<outbox-7@forewarn>", "<outbox-7@forewarn>")],
)
def test_message_id_is_kept_so_a_resend_can_be_deduplicated(
    server: SmtpTestServer, given: str, expected: str
) -> None:
    channel = channel_for(server)
    channel.send(message(message_id=given))
    channel.send(message(message_id=given))
    server.wait_for(lambda mail: len(server.received) == 2)
    assert [mail.message["Message-ID"] for mail in server.received] == [expected, expected]


def test_a_message_id_is_made_when_none_is_given(server: SmtpTestServer) -> None:
    channel_for(server).send(message(message_id=None))
    message_id = server.wait_for().message["Message-ID"]
    assert message_id.startswith("<") and message_id.endswith("@example.com>")


def test_caller_header_replaces_ours_instead_of_doubling(server: SmtpTestServer) -> None:
    channel_for(server).send(message(headers={"Message-ID": "<override@forewarn>"}))
    mail = server.wait_for()
    assert mail.message.get_all("Message-ID") == ["<override@forewarn>"]


def test_line_break_in_a_header_is_refused_before_connecting(server: SmtpTestServer) -> None:
    with pytest.raises(DeliveryError) as caught:
        channel_for(server).send(message(subject="hello\nBcc: victim@example.com"))
    assert caught.value.permanent
    assert server.received == []


def test_no_recipients_is_permanent(server: SmtpTestServer) -> None:
    with pytest.raises(DeliveryError) as caught:
        channel_for(server).send(message(to=()))
    assert caught.value.permanent


# --- recipients refused --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [("550 5.1.1 No such user", True), ("451 4.3.0 Try again later", False)],
)
def test_refused_recipient_5xx_is_permanent_4xx_is_not(
    server: SmtpTestServer, reply: str, permanent: bool
) -> None:
    server.set_rcpt_reply(reply)
    with pytest.raises(DeliveryError) as caught:
        channel_for(server).send(message())
    assert caught.value.permanent is permanent
    assert reply.split()[0] in str(caught.value)
    assert "agent@example.com" in str(caught.value)


def test_partly_refused_is_reported_not_retried(server: SmtpTestServer) -> None:
    server.set_rcpt_reply("550 5.1.1 No such user", address="gone@example.com")
    with pytest.raises(DeliveryError) as caught:
        channel_for(server).send(message(to=("agent@example.com", "gone@example.com")))
    # a retry would send the others a duplicate
    assert caught.value.permanent
    assert "delivered to 1 of 2" in str(caught.value)
    assert "gone@example.com" in str(caught.value)
    assert server.wait_for().rcpt_tos == ("agent@example.com",)


# --- the server is not there ---------------------------------------------------------------


def test_connection_refused_is_transient() -> None:
    port = free_port()
    channel = SmtpChannel(SmtpSettings(host="127.0.0.1", port=port, sender=SENDER, timeout=2))
    with pytest.raises(DeliveryError) as caught:
        channel.send(message())
    assert not caught.value.permanent
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_server_back_after_an_outage_accepts_the_retry(server: SmtpTestServer) -> None:
    channel = channel_for(server)
    server.stop()
    with pytest.raises(DeliveryError) as caught:
        channel.send(message())
    assert not caught.value.permanent

    server.start()
    channel.send(message())
    assert server.wait_for().message["Message-ID"] == "<outbox-42@forewarn>"


def test_timeout_is_honoured_on_a_silent_server() -> None:
    with unresponsive_port() as port:
        channel = SmtpChannel(SmtpSettings(host="127.0.0.1", port=port, sender=SENDER, timeout=0.3))
        started = time.monotonic()
        with pytest.raises(DeliveryError) as caught:
            channel.send(message())
        elapsed = time.monotonic() - started
    assert not caught.value.permanent
    assert 0.25 <= elapsed < 3


# --- login ---------------------------------------------------------------------------------


@pytest.fixture
def auth_server() -> Iterator[SmtpTestServer]:
    with SmtpTestServer(auth=(USER, PASSWORD)) as smtp:
        yield smtp


def test_login_with_the_right_password_delivers(auth_server: SmtpTestServer) -> None:
    channel_for(auth_server, username=USER, password=PASSWORD).send(message())
    assert auth_server.wait_for().authenticated_as == USER


def test_wrong_password_is_permanent_and_never_shows_the_password(
    auth_server: SmtpTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wr0ng-" + PASSWORD
    channel = channel_for(auth_server, username=USER, password=wrong)
    with caplog.at_level(logging.DEBUG), pytest.raises(DeliveryError) as caught:
        channel.send(message())
    assert caught.value.permanent
    assert "535" in str(caught.value)
    shown = str(caught.value) + repr(caught.value) + caplog.text + repr(channel.settings)
    for secret in (wrong, base64.b64encode(wrong.encode()).decode()):
        assert secret not in shown
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert auth_server.received == []


def test_missing_credentials_are_permanent(auth_server: SmtpTestServer) -> None:
    with pytest.raises(DeliveryError) as caught:
        channel_for(auth_server).send(message())
    assert caught.value.permanent
    assert "530" in str(caught.value)


def test_login_on_a_server_without_auth_is_permanent(server: SmtpTestServer) -> None:
    with pytest.raises(DeliveryError) as caught:
        channel_for(server, username=USER, password=PASSWORD).send(message())
    assert caught.value.permanent
    assert PASSWORD not in str(caught.value)


def test_password_is_redacted_even_if_the_server_echoes_it() -> None:
    channel = SmtpChannel(SmtpSettings(host="h", sender=SENDER, password=PASSWORD))
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    assert channel._redact(f"535 bad {PASSWORD} / {encoded}") == "535 bad *** / ***"


def test_settings_validate_security_and_hide_the_password() -> None:
    with pytest.raises(ValueError, match="security"):
        SmtpSettings(host="h", sender=SENDER, security="tls")
    assert PASSWORD not in repr(SmtpSettings(host="h", sender=SENDER, password=PASSWORD))


# --- TLS -----------------------------------------------------------------------------------


@pytest.fixture
def server_tls(tmp_path: Path) -> ssl.SSLContext:
    pytest.importorskip("cryptography", reason="self-signed test certificates need cryptography")
    return self_signed_server_context(tmp_path)


def test_starttls_with_login(server_tls: ssl.SSLContext) -> None:
    with SmtpTestServer(tls_context=server_tls, auth=(USER, PASSWORD)) as tls_server:
        channel = channel_for(tls_server, security="starttls", verify_tls=False,
                              username=USER, password=PASSWORD)
        channel.send(message())
        assert tls_server.wait_for().authenticated_as == USER


def test_starttls_rejects_an_unverifiable_certificate(server_tls: ssl.SSLContext) -> None:
    with SmtpTestServer(tls_context=server_tls) as tls_server:
        with pytest.raises(DeliveryError) as caught:
            channel_for(tls_server, security="starttls").send(message())
        assert caught.value.permanent
        assert "certificate" in str(caught.value).lower()
        assert tls_server.received == []


def test_implicit_tls(server_tls: ssl.SSLContext) -> None:
    with SmtpTestServer(implicit_tls=server_tls) as tls_server:
        channel_for(tls_server, security="ssl", verify_tls=False).send(message())
        assert tls_server.wait_for().message["Subject"].startswith("[#12]")


def test_starttls_on_a_server_without_it_is_permanent(server: SmtpTestServer) -> None:
    with pytest.raises(DeliveryError) as caught:
        channel_for(server, security="starttls").send(message())
    assert caught.value.permanent
    assert "STARTTLS" in str(caught.value)
