"""A TLS check of any port: certificate expiry, chain and hostname validity, handshake time.

Each check connects afresh (so a replaced certificate is seen at once) and verifies the chain
the way clients do, against the system's trust store plus `ca_file`. When that fails the
certificate is fetched again without verification, so its expiry is still reported for a
self-signed, expired or unknown-CA certificate. The host name is checked against the leaf's
subject alternative names (DNS names with a single leftmost `*` label, IP addresses), as
browsers do, without falling back to the common name; it is checked even when the chain is
not valid, so the two failures are told apart. The leaf's subject and issuer appear only in
the error text of a failed check, never in labels.

Options:
    host            where to connect (a name or an address)
    port            default 443, or 25 with `starttls = "smtp"`
    server_name     the name sent in SNI and checked against the certificate (default: host;
                    an IP address is checked against the IP names and sends no SNI)
    ca_file         PEM file of extra trust anchors (a private CA), added to the system's
    starttls        "smtp": greet, EHLO and STARTTLS before the handshake (mail servers on 25
                    or 587); default none, TLS from the first byte
    timeout         the whole check, both handshakes included (default 10s)

Metrics, labelled {"target": "host:port", "server_name": ...}:
    tls_up                      1 when a TLS handshake completed (trusted or not); else 0
                                with the reason in `error`, and the others below are NaN
    tls_cert_expiry_seconds     the leaf's notAfter minus now; negative once expired
    tls_cert_not_after_seconds  the leaf's notAfter, seconds since the epoch
    tls_chain_valid             1 when the chain verifies (this includes the dates); 0 with
                                the reason, subject and issuer in `error`
    tls_hostname_valid          1 when the leaf is valid for server_name; 0 with its names in
                                `error`
    tls_handshake_seconds       the TLS handshake alone (after connect and STARTTLS)
    tls_protocol_version        the negotiated version as a number: 1.2, 1.3

Example:
    [[probe]]
    name = "intranet-cert"
    kind = "tls"
    host = "intranet.example.org"
    interval = "1h"

`cryptography` parses the certificate; it is imported when the first check needs it.
"""

import ipaddress
import logging
import math
import re
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, ClassVar

from probes.base import Duration, Sample
from probes.tcp import (
    CheckFailed,
    check_endpoint,
    client_context,
    connect,
    failing_as,
    remaining,
    ssl_reason,
    target_label,
)

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger(__name__)

UP = "tls_up"
EXPIRY_SECONDS = "tls_cert_expiry_seconds"
NOT_AFTER_SECONDS = "tls_cert_not_after_seconds"
CHAIN_VALID = "tls_chain_valid"
HOSTNAME_VALID = "tls_hostname_valid"
HANDSHAKE_SECONDS = "tls_handshake_seconds"
PROTOCOL_VERSION = "tls_protocol_version"
DEFAULT_TIMEOUT = Duration(10)
DEFAULT_PORTS = {None: 443, "smtp": 25}
PROTOCOL_NUMBERS = {"TLSv1": 1.0, "TLSv1.1": 1.1, "TLSv1.2": 1.2, "TLSv1.3": 1.3}
MAX_SMTP_LINE = 1024
MAX_SMTP_LINES = 100
MAX_NAMES_SHOWN = 5
NAN = math.nan


# --- what a certificate says ---------------------------------------------------------------------


def _printable(text: str, limit: int = 120) -> str:
    """Certificate text is the server's: no control characters, bounded length."""
    clean = re.sub(r"[\x00-\x1f\x7f]", "?", text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def describe(cert: "x509.Certificate") -> str:
    """`subject ..., issuer ...` for an error text."""
    subject = _printable(cert.subject.rfc4514_string())
    issuer = _printable(cert.issuer.rfc4514_string())
    return f"subject {subject or '(empty)'}, issuer {issuer or '(empty)'}"


def _alt_names(cert: "x509.Certificate") -> "x509.SubjectAlternativeName | None":
    from cryptography import x509

    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def names_of(cert: "x509.Certificate") -> list[str]:
    """The DNS names and IP addresses the certificate is valid for."""
    from cryptography import x509

    alt = _alt_names(cert)
    if alt is None:
        return []
    ips = [str(ip) for ip in alt.get_values_for_type(x509.IPAddress)]
    return [*alt.get_values_for_type(x509.DNSName), *ips]


def _dns_name_matches(pattern: str, hostname: str) -> bool:
    pattern, hostname = pattern.lower().rstrip("."), hostname.lower().rstrip(".")
    if pattern.startswith("*."):
        first, dot, rest = hostname.partition(".")
        # A wildcard stands for exactly one whole label, never for a public suffix's parent.
        return bool(first) and bool(dot) and rest == pattern[2:] and "." in rest
    return "*" not in pattern and pattern == hostname


def _ascii_hostname(hostname: str) -> str:
    try:
        return hostname.encode("idna").decode("ascii")
    except UnicodeError:
        return hostname


def hostname_matches(cert: "x509.Certificate", hostname: str) -> bool:
    """Whether the certificate is valid for `hostname` (a DNS name or an IP address)."""
    from cryptography import x509

    alt = _alt_names(cert)
    if alt is None:
        return False
    try:
        address = ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        ascii_name = _ascii_hostname(hostname)
        return any(_dns_name_matches(p, ascii_name) for p in alt.get_values_for_type(x509.DNSName))
    return address in alt.get_values_for_type(x509.IPAddress)


def _parse(der: bytes | None) -> "x509.Certificate":
    from cryptography import x509

    if not der:
        raise CheckFailed("the server sent no certificate")
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise CheckFailed("the server's certificate could not be parsed") from None


# --- STARTTLS ------------------------------------------------------------------------------------


def _smtp_reply(replies: BinaryIO, command: str, wanted: int) -> list[bytes]:
    """One (multi-line) SMTP reply's lines; CheckFailed unless its code is `wanted`."""
    lines: list[bytes] = []
    while len(lines) < MAX_SMTP_LINES:
        line = replies.readline(MAX_SMTP_LINE)
        if not line:
            raise CheckFailed(f"the SMTP server closed the connection after {command}")
        lines.append(line.rstrip(b"\r\n"))
        if line[3:4] != b"-":  # "250-..." continues, "250 ..." ends the reply
            break
    code = lines[-1][:3]
    if code != str(wanted).encode():
        shown = code.decode("ascii", "replace") if code.isdigit() else "something else"
        raise CheckFailed(f"the SMTP server answered {command} with {shown}, not {wanted}")
    return lines


def _ehlo_name(sock: socket.socket) -> bytes:
    """Our address as an SMTP address literal: the name the server sees anyway."""
    address = sock.getsockname()[0]
    literal = f"[IPv6:{address}]" if ":" in address else f"[{address}]"
    return literal.encode("ascii")


def smtp_starttls(sock: socket.socket) -> None:
    """Greeting, EHLO and STARTTLS: afterwards the socket is ready for the TLS handshake."""
    with sock.makefile("rb") as replies:
        _smtp_reply(replies, "the connection", 220)
        sock.sendall(b"EHLO " + _ehlo_name(sock) + b"\r\n")
        extensions = _smtp_reply(replies, "EHLO", 250)[1:]
        if not any(line[4:].strip().upper() == b"STARTTLS" for line in extensions):
            raise CheckFailed("the SMTP server does not offer STARTTLS")
        sock.sendall(b"STARTTLS\r\n")
        _smtp_reply(replies, "STARTTLS", 220)


# --- the tls kind --------------------------------------------------------------------------------


class _Untrusted(Exception):
    """The chain did not verify; the message says why. Not an OSError: it passes
    `failing_as`, so that the certificate can be fetched again without verification."""


@dataclass(frozen=True)
class Handshake:
    der: bytes | None
    version: str | None
    seconds: float


@dataclass(frozen=True)
class Inspection:
    cert: "x509.Certificate"
    chain_error: str | None  # None: the chain verified
    handshake: Handshake


def _check_ca_file(path: str) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise ValueError(f"ca_file {path!r} holds no PEM certificate: {ssl_reason(exc)}") from None
    except OSError as exc:
        raise ValueError(f"ca_file {path!r} cannot be read: {exc.strerror}") from None


class TlsProbe:
    kind: ClassVar[str] = "tls"

    @dataclass(frozen=True)
    class Options:
        host: str
        port: int | None = None
        server_name: str | None = None
        ca_file: str | None = None
        starttls: str | None = None
        timeout: Duration = DEFAULT_TIMEOUT

        def __post_init__(self) -> None:
            if self.starttls not in DEFAULT_PORTS:
                raise ValueError(f'starttls {self.starttls!r} is not supported; use "smtp"')
            check_endpoint(self.host, self.port_or_default, self.timeout)
            if self.server_name is not None and not self.server_name.strip():
                raise ValueError("server_name must not be empty; leave it out to use host")
            if self.ca_file is not None:
                _check_ca_file(self.ca_file)

        @property
        def port_or_default(self) -> int:
            return DEFAULT_PORTS[self.starttls] if self.port is None else self.port

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self.port = options.port_or_default
        self.server_name = options.server_name or options.host
        self.labels = {
            "target": target_label(options.host, self.port),
            "server_name": self.server_name,
        }
        self._verifying = self._verifying_context()
        self._trusting = client_context(verify=False)  # fetches what verify refused

    def _verifying_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()  # the system's trust store
        if self.options.ca_file is not None:
            context.load_verify_locations(cafile=self.options.ca_file)
        # The name is checked by this probe, so that a wrong name and a bad chain are told apart.
        context.check_hostname = False
        return context

    def collect(self, now: float) -> list[Sample]:
        try:
            inspection = self._inspect(time.monotonic() + self.options.timeout)
        except CheckFailed as exc:
            return self._failed(now, str(exc))
        return self._samples(now, inspection)

    def _failed(self, now: float, error: str) -> list[Sample]:
        unmeasured = (EXPIRY_SECONDS, NOT_AFTER_SECONDS, CHAIN_VALID, HOSTNAME_VALID)
        metrics = (*unmeasured, HANDSHAKE_SECONDS, PROTOCOL_VERSION)
        return [
            Sample(UP, 0.0, now, self.labels, error),
            *(Sample(metric, NAN, now, self.labels, error) for metric in metrics),
        ]

    def _samples(self, now: float, inspection: Inspection) -> list[Sample]:
        cert, handshake = inspection.cert, inspection.handshake
        not_after = cert.not_valid_after_utc.timestamp()
        hostname_error = self._hostname_error(cert)
        version = PROTOCOL_NUMBERS.get(handshake.version or "", NAN)
        chain_error, labels = inspection.chain_error, self.labels
        return [
            Sample(UP, 1.0, now, labels),
            Sample(EXPIRY_SECONDS, not_after - now, now, labels),
            Sample(NOT_AFTER_SECONDS, not_after, now, labels),
            Sample(CHAIN_VALID, 0.0 if chain_error else 1.0, now, labels, chain_error),
            Sample(HOSTNAME_VALID, 0.0 if hostname_error else 1.0, now, labels, hostname_error),
            Sample(HANDSHAKE_SECONDS, handshake.seconds, now, labels),
            Sample(PROTOCOL_VERSION, version, now, labels),
        ]

    def _hostname_error(self, cert: "x509.Certificate") -> str | None:
        if hostname_matches(cert, self.server_name):
            return None
        names = names_of(cert)
        shown = ", ".join(_printable(n, 60) for n in names[:MAX_NAMES_SHOWN]) or "no names"
        more = f" and {len(names) - MAX_NAMES_SHOWN} more" if len(names) > MAX_NAMES_SHOWN else ""
        return (
            f"certificate is not valid for {_printable(self.server_name)}: "
            f"it names {shown}{more} ({describe(cert)})"
        )

    def _inspect(self, deadline: float) -> Inspection:
        """The leaf certificate, and why its chain did not verify (None when it did)."""
        try:
            handshake = self._handshake(self._verifying, deadline)
            return Inspection(_parse(handshake.der), None, handshake)
        except _Untrusted as untrusted:
            reason = str(untrusted)
        handshake = self._handshake(self._trusting, deadline)
        cert = _parse(handshake.der)
        return Inspection(cert, f"{reason} ({describe(cert)})", handshake)

    def _handshake(self, context: ssl.SSLContext, deadline: float) -> Handshake:
        """Connect, STARTTLS where configured, and shake hands; _Untrusted when `context`
        verifies and the chain is not valid."""
        timeout = self.options.timeout
        with connect(self.options.host, self.port, deadline, timeout) as sock:
            if self.options.starttls == "smtp":
                with failing_as("during the SMTP STARTTLS exchange", timeout):
                    sock.settimeout(remaining(deadline))
                    smtp_starttls(sock)
            with failing_as("during the TLS handshake", timeout):
                return self._shake_hands(context, sock, deadline)

    def _shake_hands(
        self, context: ssl.SSLContext, sock: socket.socket, deadline: float
    ) -> Handshake:
        sock.settimeout(remaining(deadline))
        started = time.monotonic()
        try:
            tls = context.wrap_socket(sock, server_hostname=self.server_name)
        except ssl.SSLCertVerificationError as exc:
            raise _Untrusted(ssl_reason(exc)) from None
        seconds = time.monotonic() - started
        with tls:
            return Handshake(tls.getpeercert(binary_form=True), tls.version(), seconds)
