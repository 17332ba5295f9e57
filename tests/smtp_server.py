"""A real SMTP server on loopback for tests (aiosmtpd), and a few helpers around it.

    with SmtpTestServer() as server:
        channel = SmtpChannel(SmtpSettings(host=server.host, port=server.port, sender=...))
        channel.send(message)
        mail = server.wait_for(lambda m: "[#12]" in m.message["Subject"])

The server binds port 0 and keeps the port it got, so `stop()` then `start()` makes it refuse
connections for a while and accept them again on the same address (outbox retry tests).
`set_rcpt_reply` makes it answer RCPT TO with a chosen reply (4xx/5xx). `auth=(user, password)`
requires AUTH LOGIN; `tls_context` offers STARTTLS, `implicit_tls` speaks TLS from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage  # parsed with email.policy.default: headers are str, get_body() works
    authenticated_as: str | None = None

    def body(self, subtype: str = "plain") -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        return "" if part is None else part.get_content()


class _Handler:
    """aiosmtpd event handler; runs on the controller's event loop thread."""

    def __init__(self, server: SmtpTestServer) -> None:
        self.server = server

    async def handle_RCPT(
        self, smtp: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.server.rcpt_reply_for(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: Any, session: Session, envelope: Envelope) -> str:
        # SMTP speaks CRLF; tests compare with the "\n" text that was sent
        raw = (envelope.original_content or b"").replace(b"\r\n", b"\n")
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        login = session.auth_data.login.decode() if session.auth_data else None
        self.server.record(
            ReceivedMail(str(envelope.mail_from), tuple(envelope.rcpt_tos), parsed, login)
        )
        return "250 Message accepted for delivery"


class _Controller(Controller):
    def _trigger_server(self) -> None:
        # With port 0 the kernel picked the port; learn it before the readiness probe uses it.
        if self.port == 0 and self.server is not None:
            self.port = cast(asyncio.Server, self.server).sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpTestServer:
    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = HOST
        self.port = 0
        self.auth = auth
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self._controller: _Controller | None = None
        self._received: list[ReceivedMail] = []
        self._rcpt_replies: dict[str, str] = {}
        self._changed = threading.Condition()

    def __enter__(self) -> SmtpTestServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.running:
            self.stop()

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        """Listen (again): on a fresh port first, on the same port after a `stop()`."""
        assert self._controller is None, "already running"
        controller = _Controller(_Handler(self), hostname=HOST, port=self.port,
                                 ssl_context=self.implicit_tls, **self._smtp_options())
        controller.start()
        self.port = controller.port
        self._controller = controller

    def stop(self) -> None:
        """Stop listening: connections are refused until `start()`."""
        assert self._controller is not None, "not running"
        self._controller.stop()
        self._controller = None

    def _smtp_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"server_hostname": "smtp.test"}
        if self.tls_context is not None:
            options.update(tls_context=self.tls_context, require_starttls=True)
        if self.auth is not None:
            options.update(
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=self.tls_context is not None,
                auth_exclude_mechanism=["PLAIN"],  # smtplib would prefer PLAIN; test LOGIN
            )
        return options

    def _authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.auth is not None
        user, password = self.auth
        ok = isinstance(data, LoginPassword) and data == (user.encode(), password.encode())
        # handled=False: let aiosmtpd send the standard 535 reply on failure
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    # --- replies and received mail ------------------------------------------------------

    def set_rcpt_reply(self, reply: str | None, address: str = "*") -> None:
        """Answer RCPT TO for `address` ("*": everyone) with `reply`, e.g. "550 5.1.1 no such
        user" or "451 4.3.0 try again later"; None accepts again."""
        with self._changed:
            if reply is None:
                self._rcpt_replies.pop(address, None)
            else:
                self._rcpt_replies[address] = reply

    def rcpt_reply_for(self, address: str) -> str | None:
        with self._changed:
            return self._rcpt_replies.get(address) or self._rcpt_replies.get("*")

    def record(self, mail: ReceivedMail) -> None:
        with self._changed:
            self._received.append(mail)
            self._changed.notify_all()

    @property
    def received(self) -> list[ReceivedMail]:
        with self._changed:
            return list(self._received)

    def wait_for(
        self, predicate: Callable[[ReceivedMail], bool] = lambda mail: True, timeout: float = 5.0
    ) -> ReceivedMail:
        """The first received mail matching `predicate`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = next((mail for mail in self._received if predicate(mail)), None)
                remaining = deadline - time.monotonic()
                if match is not None or remaining <= 0:
                    break
                self._changed.wait(remaining)
        if match is None:
            raise AssertionError(f"no matching mail within {timeout}s; got {self._subjects()}")
        return match

    def _subjects(self) -> list[str]:
        return [str(mail.message["Subject"]) for mail in self.received]


@contextlib.contextmanager
def unresponsive_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections (the kernel's backlog) but never says a
    word: an SMTP client waits for the greeting until its timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((HOST, 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def free_port() -> int:
    """A loopback port nobody listens on (for a moment): connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def self_signed_server_context(directory: Path, hostname: str = "localhost") -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for `hostname` and 127.0.0.1.
    Needs the `cryptography` package; callers skip when it is not installed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt_names = x509.SubjectAlternativeName(
        [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address(HOST))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(alt_names, critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context
