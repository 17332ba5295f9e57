"""A TCP check: does a port accept connections, and does the service there say what it should.

Each check opens a fresh connection (through TLS when `tls = true`), optionally sends `send`,
and, when `expect` is set, reads until that regular expression is found in what the server
said (the banner, or the answer to `send`), `read_bytes` have arrived, or the server closes.
`timeout` bounds the whole check, connect to match; the scheduler waits a little longer.
What the server said is untrusted: only a short, escaped excerpt reaches the error text, never
a label.

Options:
    host, port      where to connect (a name or an address)
    send            text sent once connected (TOML escapes such as "\\r\\n" work), optional
    expect          regular expression searched in the response, optional
    read_bytes      most bytes read while looking for `expect` (default 4096)
    tls             speak TLS once connected (default false); `verify_tls` (default true)
                    checks the server's certificate and name like any client would
    timeout         the whole check (default 10s)

Metrics, labelled {"target": "host:port"}:
    tcp_up                  1 when it connected and, where configured, sent, got a response
                            and `expect` matched; else 0, with the reason in `error`
    tcp_connect_seconds     until the connection was ready (TCP connect, and TLS handshake
                            with `tls`); NaN when it failed
    tcp_response_seconds    (with `send` or `expect`) from ready/sent to the match, or to the
                            first bytes when there is no `expect`
    tcp_expect_matched      (with `expect`) 1 or 0; NaN when it never got that far

Example:
    [[probe]]
    name = "ssh"
    kind = "tcp"
    host = "127.0.0.1"
    port = 22
    expect = "^SSH-2\\.0-"
    timeout = "5s"

This module also holds the small socket helpers the other network kinds (tls) share.
"""

import json
import logging
import math
import re
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

from probes.base import Duration, Sample

log = logging.getLogger(__name__)

UP = "tcp_up"
CONNECT_SECONDS = "tcp_connect_seconds"
RESPONSE_SECONDS = "tcp_response_seconds"
EXPECT_MATCHED = "tcp_expect_matched"
DEFAULT_TIMEOUT = Duration(10)
MAX_READ_BYTES = 1024 * 1024
EXCERPT_CHARS = 64
NAN = math.nan


# --- socket helpers shared by the network probe kinds --------------------------------------------


class CheckFailed(Exception):
    """Why a check could not complete, as the short text for the sample's `error`."""


def target_label(host: str, port: int) -> str:
    """host:port, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_endpoint(host: str, port: int, timeout: float) -> None:
    """The checks every network kind makes on its `host`, `port` and `timeout` options."""
    if not host.strip():
        raise ValueError("host must not be empty")
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not a TCP port (1..65535)")
    if timeout <= 0:
        raise ValueError("timeout must be more than 0s")


def remaining(deadline: float) -> float:
    """Seconds left until `deadline` (time.monotonic); TimeoutError when none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def ssl_reason(exc: BaseException) -> str:
    """The readable part of an OpenSSL error (or what wraps one), never a traceback."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    # "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)" -> the readable part
    text = re.sub(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", str(exc))
    return (text or type(exc).__name__).splitlines()[0][:200]


def os_reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed: {exc.strerror}"
    return exc.strerror.lower() if exc.strerror else type(exc).__name__


@contextmanager
def failing_as(doing: str, timeout: float) -> Iterator[None]:
    """Turns a socket or TLS failure while `doing` something into a CheckFailed saying so."""
    try:
        yield
    except TimeoutError:
        raise CheckFailed(f"timed out after {timeout:g}s {doing}") from None
    except ssl.SSLError as exc:
        raise CheckFailed(f"TLS error {doing}: {ssl_reason(exc)}") from None
    except OSError as exc:
        raise CheckFailed(os_reason(exc)) from None


def connect(host: str, port: int, deadline: float, timeout: float) -> socket.socket:
    """A connected socket, or CheckFailed naming why not."""
    with failing_as("while connecting", timeout):
        return socket.create_connection((host, port), timeout=remaining(deadline))


def excerpt(data: bytes) -> str:
    """A short, quoted and escaped excerpt of untrusted bytes, safe for an error text."""
    text = data[:EXCERPT_CHARS].decode("utf-8", "replace")
    return json.dumps(text) + ("…" if len(data) > EXCERPT_CHARS else "")


def client_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# --- the tcp kind --------------------------------------------------------------------------------


@dataclass
class _Run:
    """What one check found out so far; a failure keeps what was measured before it."""

    connect_seconds: float = NAN
    response_seconds: float = NAN
    matched: float = NAN
    error: str | None = None


@dataclass(frozen=True)
class _Response:
    data: bytes
    closed: bool  # the server closed the connection before a match or the byte limit


class TcpProbe:
    kind: ClassVar[str] = "tcp"

    @dataclass(frozen=True)
    class Options:
        """`expect` is a regular expression searched in the response decoded as UTF-8."""

        host: str
        port: int
        send: str | None = None
        expect: str | None = None
        read_bytes: int = 4096
        tls: bool = False
        verify_tls: bool = True
        timeout: Duration = DEFAULT_TIMEOUT

        def __post_init__(self) -> None:
            check_endpoint(self.host, self.port, self.timeout)
            if not 0 < self.read_bytes <= MAX_READ_BYTES:
                raise ValueError(f"read_bytes must be between 1 and {MAX_READ_BYTES}")
            if self.send == "":
                raise ValueError("send must not be empty; leave it out to send nothing")
            if self.expect is not None:
                try:
                    re.compile(self.expect)
                except re.error as exc:
                    raise ValueError(f"expect is not a regular expression: {exc}") from None

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self.labels = {"target": target_label(options.host, options.port)}
        self._expect = re.compile(options.expect) if options.expect is not None else None
        self._tls = client_context(options.verify_tls) if options.tls else None
        self._converses = options.send is not None or options.expect is not None

    def collect(self, now: float) -> list[Sample]:
        run = _Run()
        try:
            self._check(run, time.monotonic())
        except CheckFailed as exc:
            run.error = str(exc)
        return self._samples(now, run)

    def _samples(self, now: float, run: _Run) -> list[Sample]:
        values = {UP: 0.0 if run.error else 1.0, CONNECT_SECONDS: run.connect_seconds}
        if self._converses:
            values[RESPONSE_SECONDS] = run.response_seconds
        if self._expect is not None:
            values[EXPECT_MATCHED] = run.matched
        return [Sample(metric, v, now, self.labels, run.error) for metric, v in values.items()]

    def _check(self, run: _Run, started: float) -> None:
        deadline = started + self.options.timeout
        with self._open(deadline) as sock:
            run.connect_seconds = time.monotonic() - started
            if self._converses:
                self._converse(sock, deadline, run)

    def _converse(self, sock: socket.socket, deadline: float, run: _Run) -> None:
        """Send, then read the response and look for `expect` in it."""
        if self.options.send is not None:
            with failing_as("while sending", self.options.timeout):
                sock.settimeout(remaining(deadline))
                sock.sendall(self.options.send.encode())
        if self._expect is not None:
            run.matched = 0.0  # from here on, a failure is a failure to match
        asked = time.monotonic()
        response = self._read(sock, deadline)
        run.response_seconds = time.monotonic() - asked
        if self._expect is not None and not self._matches(response.data):
            raise CheckFailed(self._mismatch(response))
        run.matched = 1.0 if self._expect is not None else NAN

    def _open(self, deadline: float) -> socket.socket:
        options = self.options
        sock = connect(options.host, options.port, deadline, options.timeout)
        if self._tls is None:
            return sock
        with sock, failing_as("during the TLS handshake", options.timeout):
            sock.settimeout(remaining(deadline))
            return self._tls.wrap_socket(sock, server_hostname=options.host)

    def _read(self, sock: socket.socket, deadline: float) -> _Response:
        """Until `expect` matches (without it: the first bytes), the byte limit, or the end."""
        data = b""
        limit = self.options.read_bytes
        while len(data) < limit:
            chunk = self._receive(sock, deadline, limit - len(data), data)
            if not chunk:
                return _Response(data, closed=True)
            data += chunk
            if self._expect is None or self._matches(data):
                break
        return _Response(data, closed=False)

    def _receive(self, sock: socket.socket, deadline: float, size: int, so_far: bytes) -> bytes:
        with failing_as("while reading", self.options.timeout):
            try:
                sock.settimeout(remaining(deadline))
                return sock.recv(size)
            except TimeoutError:  # says more than failing_as can: what it waited for
                got = f" (received {excerpt(so_far)})" if so_far else ""
                waited = "a response" if self.options.send is not None else "the banner"
                raise CheckFailed(
                    f"timed out after {self.options.timeout:g}s while waiting for {waited}{got}"
                ) from None

    def _matches(self, data: bytes) -> bool:
        assert self._expect is not None
        return self._expect.search(data.decode("utf-8", "replace")) is not None

    def _mismatch(self, response: _Response) -> str:
        pattern = json.dumps(self.options.expect)
        if response.closed and not response.data:
            return f"connection closed by the server before anything matched {pattern}"
        if response.closed:
            return f"connection closed before a match for {pattern}; got {excerpt(response.data)}"
        return (
            f"no match for {pattern} in the first {len(response.data)} bytes: "
            f"{excerpt(response.data)}"
        )
