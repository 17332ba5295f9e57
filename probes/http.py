"""An HTTP(S) check: did a response with an expected status arrive, and how long did it take.

Every check opens a fresh connection, so it measures the connect and TLS handshake too,
and a certificate replaced on the server is seen at once. The body is read to the end (to
time the full response) and dropped unread: it is untrusted and never reaches a label or
an error text.

`requests` is imported when a probe is built, not with this module: the probe registry is
imported by everything that uses `probes.base`, and requests alone takes tens of ms.
"""

import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from http.client import IncompleteRead, RemoteDisconnected
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from probes.base import Duration, Sample

if TYPE_CHECKING:
    import requests

UP = "http_up"
STATUS_CODE = "http_status_code"
DURATION = "http_duration_seconds"
DEFAULT_TIMEOUT = Duration(10)
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
CHUNK_BYTES = 64 * 1024
MAX_ERROR_CHARS = 200


class DeadlinePassed(Exception):
    """The whole exchange took longer than the timeout (a server trickling its body)."""


def parse_header(line: str) -> tuple[str, str]:
    name, colon, value = line.partition(":")
    if not colon or not HEADER_NAME.match(name.strip()):
        raise ValueError(f'header {line!r} is not of the form "Name: value"')
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name.strip()!r} has a line break in its value")
    return name.strip(), value.strip()


def _check_secret_header(line: str) -> None:
    try:
        parse_header(line)
    except ValueError:  # its own message would quote the secret
        raise ValueError('secret_header is not of the form "Name: value"') from None


def redacted_url(url: str) -> str:
    """The URL without its password: it becomes a label, shown in tickets and /metrics."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url must start with http:// or https:// and name a host")


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and all it wraps: requests and urllib3 nest the real reason deeply."""
    chain: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if any(current is seen for seen in chain):
            continue
        chain.append(current)
        inner = (current.__cause__, current.__context__, getattr(current, "reason", None))
        todo += [c for c in (*inner, *current.args) if isinstance(c, BaseException)]
    return chain


def _clean_ssl_message(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    # "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)" -> the readable part
    text = re.sub(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", str(exc))
    return text or type(exc).__name__


def _is_timeout(exc: BaseException) -> bool:
    import requests
    from urllib3.exceptions import ReadTimeoutError

    timeouts = (TimeoutError, requests.Timeout, ReadTimeoutError, DeadlinePassed)
    return isinstance(exc, timeouts)


def _short(text: str) -> str:
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return first_line[:MAX_ERROR_CHARS]


def _connection_reason(causes: list[BaseException]) -> str | None:
    for cause in reversed(causes):  # the innermost reason is the most specific
        if isinstance(cause, socket.gaierror):
            return f"DNS lookup failed: {cause.strerror}"
        if isinstance(cause, RemoteDisconnected):
            return "connection closed without a response"
        if isinstance(cause, IncompleteRead):
            return "connection closed before the end of the response"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
    return None


def describe_failure(exc: BaseException, timeout: float) -> str:
    """A short human reason for a failed request, never a traceback."""
    import requests

    causes = _causes(exc)
    for cause in causes:
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {_short(_clean_ssl_message(cause))}"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS error: {_short(_clean_ssl_message(causes[-1]))}"
    if any(_is_timeout(cause) for cause in causes):
        return f"timed out after {timeout:g}s"
    if isinstance(exc, requests.TooManyRedirects):
        return "too many redirects"
    reason = _connection_reason(causes)
    return reason or _short(f"{type(causes[-1]).__name__}: {causes[-1]}")


def _failures() -> tuple[type[BaseException], ...]:
    import requests
    import urllib3

    return (requests.RequestException, urllib3.exceptions.HTTPError, OSError, DeadlinePassed)


def _read_body(raw: Any, deadline: float) -> None:
    """Read the body to its end and drop it, within the deadline."""
    # read1 returns what has arrived (urllib3 >= 2.3); read(n) waits for n bytes, so a server
    # trickling its body is then stopped only by the per-read timeout.
    read = getattr(raw, "read1", None) or raw.read
    while read(CHUNK_BYTES, decode_content=False):
        if time.monotonic() > deadline:
            raise DeadlinePassed
    if time.monotonic() > deadline:
        raise DeadlinePassed


class HttpProbe:
    kind: ClassVar[str] = "http"

    @dataclass(frozen=True)
    class Options:
        """`expect_status` empty means any 2xx or 3xx. `timeout` bounds the whole exchange,
        connect to last body byte. `headers` are "Name: value" strings; `secret_header` is
        one more, such as a bearer token, that the config takes from `{ env = "NAME" }` or
        `{ file = "path" }` since secrets are never written in the file."""

        url: str
        method: str = "GET"
        expect_status: list[int] = field(default_factory=list)
        timeout: Duration = DEFAULT_TIMEOUT
        verify_tls: bool = True
        follow_redirects: bool = True
        headers: list[str] = field(default_factory=list, repr=False)
        secret_header: str | None = field(default=None, repr=False, metadata={"secret": True})

        def __post_init__(self) -> None:
            _check_url(self.url)
            if self.method.upper() not in METHODS:
                raise ValueError(f"method must be one of {', '.join(METHODS)}")
            bad = [code for code in self.expect_status if not 100 <= code <= 599]
            if bad:
                raise ValueError(f"expect_status has codes outside 100..599: {bad}")
            if self.timeout <= 0:
                raise ValueError("timeout must be more than 0s")
            for line in self.headers:
                parse_header(line)
            if self.secret_header is not None:
                _check_secret_header(self.secret_header)

    def __init__(self, name: str, options: Options) -> None:
        import requests
        import urllib3

        self.name = name
        self.options = options
        self.labels = {"url": redacted_url(options.url)}
        self._expected = set(options.expect_status) or set(range(200, 400))
        self._session: requests.Session = requests.Session()
        self._session.headers["User-Agent"] = "forewarn"
        if not options.verify_tls:
            # Chosen in the config: a warning on every check would only flood the log.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        lines = options.headers + ([options.secret_header] if options.secret_header else [])
        self._session.headers.update(dict(map(parse_header, lines)))

    def collect(self, now: float) -> list[Sample]:
        started = time.monotonic()
        status, error = self._exchange(started + self.options.timeout)
        if error is None and status not in self._expected:
            error = f"unexpected status {status}"
        elapsed = time.monotonic() - started
        return [
            Sample(UP, 0.0 if error else 1.0, now, self.labels, error),
            Sample(STATUS_CODE, float(status), now, self.labels, error),
            Sample(DURATION, elapsed, now, self.labels, error),
        ]

    def _exchange(self, deadline: float) -> tuple[int, str | None]:
        """(status code or 0, failure reason or None)."""
        status = 0
        try:
            with self._send() as response:
                status = response.status_code
                _read_body(response.raw, deadline)
        except _failures() as exc:
            return status, describe_failure(exc, self.options.timeout)
        finally:
            # The next check opens a fresh connection: it measures the connect and TLS
            # handshake again, and sees a certificate replaced on the server at once.
            self._session.close()
        return status, None

    def _send(self) -> "requests.Response":
        options = self.options
        return self._session.request(
            options.method.upper(),
            options.url,
            timeout=float(options.timeout),
            verify=options.verify_tls,
            allow_redirects=options.follow_redirects,
            stream=True,
        )
