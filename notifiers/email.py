"""The SMTP e-mail channel: one `Message` becomes one e-mail, sent through one SMTP session.

Failures are sorted for the dispatcher: what a retry may fix (refused or timed-out connection,
4xx replies) is transient; what it cannot (5xx replies, failed login, a server that lacks
what the settings ask for, a certificate that does not verify) is permanent. The password
never appears in an error or a log line.
"""

from __future__ import annotations

import base64
import logging
import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import ClassVar

from notifiers.base import DeliveryError, Message

log = logging.getLogger(__name__)

SECURITY_MODES = ("none", "starttls", "ssl")


@dataclass(frozen=True, kw_only=True)
class SmtpSettings:
    host: str
    sender: str
    port: int = 25
    security: str = "none"  # none | starttls | ssl (implicit TLS, usually port 465)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0  # seconds, for the connection and for each reply
    verify_tls: bool = True  # False only for self-signed test servers

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {SECURITY_MODES}, not {self.security!r}")


class SmtpChannel:
    kind: ClassVar[str] = "smtp"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def send(self, message: Message) -> None:
        email = self._build(message)
        with self._translated_errors(), self._session() as smtp:
            refused = smtp.send_message(
                email, from_addr=self.settings.sender, to_addrs=list(message.to)
            )
        if refused:
            raise DeliveryError(_partial_refusal(refused, len(message.to)), permanent=True)
        log.info("mail %s sent to %d recipient(s)", email["Message-ID"], len(message.to))

    def _build(self, message: Message) -> EmailMessage:
        if not message.to:
            raise DeliveryError("message has no recipients", permanent=True)
        try:
            return build_email(message, self.settings.sender)
        except (ValueError, TypeError) as err:
            # e.g. a line break in a header: the same message will fail the same way again
            raise DeliveryError(f"cannot build the e-mail: {err}", permanent=True) from err

    @contextmanager
    def _session(self) -> Iterator[smtplib.SMTP]:
        smtp = self._connect()
        try:
            if self.settings.security == "starttls":
                smtp.starttls(context=self._tls_context())
            if self.settings.username:
                smtp.login(self.settings.username, self.settings.password or "")
            yield smtp
        finally:
            _close_quietly(smtp)

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.security == "ssl":
            return smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=self._tls_context())
        return smtplib.SMTP(s.host, s.port, timeout=s.timeout)

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.settings.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        target = f"{self.settings.host}:{self.settings.port}"
        try:
            yield
        except (smtplib.SMTPException, OSError) as err:
            text = self._redact(f"smtp {target}: {describe(err)}")
            # `from None`: the original is not redacted, so it must not ride along in tracebacks
            raise DeliveryError(text, permanent=is_permanent(err)) from None

    def _redact(self, text: str) -> str:
        """Servers may echo what they were sent; never let the password through."""
        password = self.settings.password
        if not password:
            return text
        encoded = base64.b64encode(password.encode()).decode()
        return text.replace(password, "***").replace(encoded, "***")


def build_email(message: Message, sender: str) -> EmailMessage:
    email = EmailMessage()
    email["From"] = sender
    email["To"] = ", ".join(message.to)
    email["Subject"] = message.subject
    email["Date"] = formatdate(usegmt=True)
    email["Message-ID"] = _message_id(message.message_id, sender)
    email.set_content(message.text)
    if message.html is not None:
        email.add_alternative(message.html, subtype="html")
    # After the content: setting it drops every Content-* header (Content-Language).
    for name, value in message.headers.items():
        del email[name]  # a caller's header replaces ours rather than doubling it
        email[name] = value
    return email


def _message_id(given: str | None, sender: str) -> str:
    if not given:
        return make_msgid(domain=sender.rpartition("@")[2] or None)
    return given if given.startswith("<") else f"<{given}>"


def is_permanent(err: BaseException) -> bool:
    if isinstance(err, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in err.recipients.values())
    if isinstance(err, smtplib.SMTPResponseException):
        return err.smtp_code >= 500
    if isinstance(err, smtplib.SMTPServerDisconnected):
        return False  # includes a timed-out reply
    # Other SMTP errors (no STARTTLS or AUTH on offer, no usable auth method) and a
    # certificate that does not verify need a change of settings or server, not a retry;
    # refused, unreachable or timed-out connections are worth another try.
    return isinstance(err, smtplib.SMTPException | ssl.SSLCertVerificationError)


def describe(err: BaseException) -> str:
    if isinstance(err, smtplib.SMTPRecipientsRefused):
        return "all recipients refused: " + _refusals(err.recipients)
    if isinstance(err, smtplib.SMTPResponseException):
        reply = err.smtp_error
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
        return f"{type(err).__name__} {err.smtp_code} {text}"
    if isinstance(err, TimeoutError):
        return "timed out"
    return f"{type(err).__name__}: {err}"


def _partial_refusal(refused: dict[str, tuple[int, bytes]], total: int) -> str:
    # the others already have it; resending would duplicate, so report instead of retrying
    delivered = total - len(refused)
    return f"delivered to {delivered} of {total}; refused: {_refusals(refused)}"


def _refusals(refused: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(
        f"{addr} ({code} {reply.decode(errors='replace')})"
        for addr, (code, reply) in sorted(refused.items())
    )


def _close_quietly(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()
