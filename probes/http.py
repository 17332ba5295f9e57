"""An HTTP(S) check: did a response with an expected status (and body) arrive, how long did it
take, and how many redirects led there.

Every check opens a fresh connection, so it measures the connect and TLS handshake too,
and a certificate replaced on the server is seen at once. The body is read to the end (to
time the full response); only its first `max_body_bytes` are kept, and only when a body
check asks for them. The body is untrusted: it never reaches a label, and an error quotes
at most a short excerpt with control characters replaced.

Options (besides `url`, `method`, `expect_status`, `timeout`, `verify_tls`,
`follow_redirects`, `headers`, `secret_header`, documented on `Options`):
- `body_regex`: a regular expression searched in the body (decoded with the charset the
  response declares, else UTF-8); no match makes the check fail.
- `json_path` and `json_expect`: the body is parsed as JSON and the value at `json_path`
  must exist and, when `json_expect` is given, equal it. The path is a small syntax of its
  own: keys joined by dots, list positions in brackets, `status`, `checks[0].state`,
  `[0].name` for a body that is a list; `[-1]` is the last item; a key cannot contain `.`,
  `[` or `]`. It is a subset of JMESPath, so a later switch to a full query language keeps
  these paths valid; no dependency is needed for it. Strings compare as they are, other
  values as their JSON text (`true`, `42`, `null`).
- `max_body_bytes` (default 1 MiB): how much of the body the checks look at; a JSON body
  longer than that does not parse.
- `proxy`: an `http://` or `https://` proxy URL for this check (CONNECT for https URLs);
  the environment's proxy settings are then ignored. Without it, the usual `HTTPS_PROXY`
  and `NO_PROXY` of the daemon's environment apply. A proxy needing a password is not
  supported: secrets are never written in the config.
- `client_cert` (PEM certificate, or certificate and key in one file) and `client_key`
  (unencrypted PEM key): a client certificate for servers that require one (mutual TLS).
- `ca_file`: PEM file of the CAs trusted for this check instead of the default store.
- `max_redirects` (default 10): more is a failure, "too many redirects".

Metrics, labels {"url": the URL without its password}:
- `http_up`: 1 when the exchange completed with an expected status and every body check
  passed, else 0 with the first reason in `error`.
- `http_status_code`: the final status (0 without a response).
- `http_duration_seconds`: connect to last body byte, redirects included.
- `http_redirects`: redirects followed (NaN without a final response).
- `http_body_matched`: 1/0, only with `body_regex`.
- `http_json_matched`: 1/0, only with `json_path`.
- `http_json_value`: the value at `json_path` when it is a number (true/false as 1/0),
  else NaN; only with `json_path`. Lets a rule threshold a health endpoint's figure.

Example:

    [[probe]]
    name = "api-health"
    kind = "http"
    url = "https://api.example.org/health"
    json_path = "checks[0].state"
    json_expect = "ok"
    ca_file = "/etc/ssl/internal-ca.pem"
    interval = "30s"

`requests` is imported when a probe is built, not with this module: the probe registry is
imported by everything that uses `probes.base`, and requests alone takes tens of ms.
"""

import json
import math
import os
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from email.message import Message
from http.client import IncompleteRead, RemoteDisconnected
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from probes._text import UNPRINTABLE, first_line
from probes.base import Duration, Sample
from probes.tcp import ssl_reason

if TYPE_CHECKING:
    import requests

UP = "http_up"
STATUS_CODE = "http_status_code"
DURATION = "http_duration_seconds"
REDIRECTS = "http_redirects"
BODY_MATCHED = "http_body_matched"
JSON_MATCHED = "http_json_matched"
JSON_VALUE = "http_json_value"
DEFAULT_TIMEOUT = Duration(10)
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
CHUNK_BYTES = 64 * 1024
MAX_EXCERPT_CHARS = 60  # of an untrusted body, quoted in an error
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_REDIRECTS = 10
_JSON_PATH_PART = re.compile(r"([^\[\]]*)((?:\[-?\d+\])*)")


class DeadlinePassed(Exception):
    """The whole exchange took longer than the timeout (a server trickling its body)."""


class MissingFile(Exception):
    """A certificate or key file named in the options cannot be read."""


def parse_header(line: str) -> tuple[str, str]:
    name, colon, value = line.partition(":")
    if not colon or not HEADER_NAME.match(name.strip()):
        raise ValueError(f'header {line!r} is not of the form "Name: value"')
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name.strip()!r} has a line break in its value")
    return name.strip(), value.strip()


def check_secret_header(line: str) -> None:
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


def check_url(url: str) -> None:
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


def _is_timeout(exc: BaseException) -> bool:
    import requests
    from urllib3.exceptions import ReadTimeoutError

    timeouts = (TimeoutError, requests.Timeout, ReadTimeoutError, DeadlinePassed)
    return isinstance(exc, timeouts)


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

    if isinstance(exc, MissingFile):
        return str(exc)
    causes = _causes(exc)
    for cause in causes:
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {first_line(ssl_reason(cause))}"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS error: {first_line(ssl_reason(causes[-1]))}"
    if isinstance(exc, requests.exceptions.ProxyError):
        return f"proxy error: {_connection_reason(causes) or first_line(str(causes[-1]))}"
    if any(_is_timeout(cause) for cause in causes):
        return f"timed out after {timeout:g}s"
    if isinstance(exc, requests.TooManyRedirects):
        return "too many redirects"
    reason = _connection_reason(causes)
    return reason or first_line(f"{type(causes[-1]).__name__}: {causes[-1]}")


def request_failures() -> tuple[type[BaseException], ...]:
    """What a request through `requests` may raise that `describe_failure` explains."""
    import requests
    import urllib3

    return (
        requests.RequestException, urllib3.exceptions.HTTPError, OSError, DeadlinePassed,
        MissingFile,
    )  # fmt: skip


def new_session(bearer_token: str | None = None) -> "requests.Session":
    import requests

    session = requests.Session()
    session.headers["User-Agent"] = "forewarn"
    if bearer_token:
        session.headers["Authorization"] = f"Bearer {bearer_token}"
    return session


def _read_body(raw: Any, deadline: float, keep: int) -> tuple[bytes, bool]:
    """Read the body to its end within the deadline; (its first `keep` bytes, whether it
    was longer). Kept bytes are decoded (gzip); with nothing to keep they are not even that."""
    # read1 returns what has arrived (urllib3 >= 2.3); read(n) waits for n bytes, so a server
    # trickling its body is then stopped only by the per-read timeout.
    read = getattr(raw, "read1", None) or raw.read
    kept, longer = bytearray(), False
    while chunk := read(CHUNK_BYTES, decode_content=keep > 0):
        longer = longer or len(kept) + len(chunk) > keep
        kept += chunk[: max(0, keep - len(kept))]
        if time.monotonic() > deadline:
            raise DeadlinePassed
    if time.monotonic() > deadline:
        raise DeadlinePassed
    return bytes(kept), longer


# --- body checks ---------------------------------------------------------------------------------


JsonPath = tuple[str | int, ...]


def parse_json_path(path: str) -> JsonPath:
    """`checks[0].state` -> ("checks", 0, "state"); ValueError when it is not that syntax."""
    steps: list[str | int] = []
    for number, part in enumerate(path.split(".")):
        match = _JSON_PATH_PART.fullmatch(part)
        key_needed = number > 0 or (match is not None and not match[2])
        if match is None or not part or (key_needed and not match[1]):
            raise ValueError(f"json_path {path!r} is not of the form key.key[0].key")
        if match[1]:
            steps.append(match[1])
        steps += [int(index) for index in re.findall(r"-?\d+", match[2])]
    return tuple(steps)


def json_lookup(document: Any, path: JsonPath) -> tuple[bool, Any]:
    """(found, value) at `path` in a parsed JSON document."""
    current = document
    for step in path:
        if isinstance(step, int):
            if not isinstance(current, list) or not -len(current) <= step < len(current):
                return False, None
        elif not isinstance(current, dict) or step not in current:
            return False, None
        current = current[step]
    return True, current


def json_text(value: Any) -> str:
    """How a JSON value compares with `json_expect`: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def json_number(value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return float(value) if isinstance(value, int | float) else math.nan


def excerpt(text: str) -> str:
    """Untrusted text made safe to quote: printable, one line, short, in quotes."""
    flat = UNPRINTABLE.sub("\ufffd", " ".join(text.split()))  # whitespace first: one line
    if len(flat) > MAX_EXCERPT_CHARS:
        flat = flat[: MAX_EXCERPT_CHARS - 1] + "…"
    return json.dumps(flat, ensure_ascii=False)


def body_text(body: bytes, content_type: str | None) -> str:
    message = Message()
    message["content-type"] = content_type or ""
    charset = message.get_content_charset() or "utf-8"
    try:
        return body.decode(charset, "replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", "replace")


@dataclass(frozen=True)
class JsonCheck:
    """What `json_path` found: matched, the numeric value, and why it did not match."""

    matched: bool
    value: float = math.nan
    error: str | None = None


def check_json(body: bytes, longer: bool, path: str, expect: str | None) -> JsonCheck:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        cut = f" (only its first {len(body)} bytes are read)" if longer else ""
        return JsonCheck(False, error=f"body is not JSON{cut}: {first_line(str(exc))}")
    found, value = json_lookup(document, parse_json_path(path))
    if not found:
        return JsonCheck(False, error=f"json_path {path} not found in the body")
    number = json_number(value)
    if expect is not None and json_text(value) != expect:
        shown = excerpt(json_text(value))
        return JsonCheck(False, number, f"json_path {path} is {shown}, expected {expect!r}")
    return JsonCheck(True, number)


# --- options -------------------------------------------------------------------------------------


def _check_proxy(proxy: str) -> None:
    parts = urlsplit(proxy)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("proxy must start with http:// or https:// and name a host")
    if parts.password is not None:
        raise ValueError("proxy must not hold a password: secrets are never written in the file")


def _check_regex(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"body_regex is not a valid regular expression: {exc}") from None


def _check_body_options(options: "HttpProbe.Options") -> None:
    if options.body_regex is not None:
        _check_regex(options.body_regex)
    if options.json_path is not None:
        parse_json_path(options.json_path)
    elif options.json_expect is not None:
        raise ValueError("json_expect needs json_path")
    wants_body = options.body_regex is not None or options.json_path is not None
    if wants_body and options.method.upper() == "HEAD":
        raise ValueError("body_regex and json_path need a body: not with method HEAD")
    if not 1 <= options.max_body_bytes <= 64 * 1024 * 1024:
        raise ValueError("max_body_bytes must be between 1 and 64 MiB")


def _check_tls_options(options: "HttpProbe.Options") -> None:
    if options.client_key is not None and options.client_cert is None:
        raise ValueError("client_key needs client_cert")
    if options.ca_file is not None and not options.verify_tls:
        raise ValueError("ca_file has no effect with verify_tls = false")
    if options.proxy is not None:
        _check_proxy(options.proxy)
    if not 0 <= options.max_redirects <= 100:
        raise ValueError("max_redirects must be between 0 and 100")


@dataclass(frozen=True)
class Exchange:
    """What one request brought back."""

    status: int = 0
    redirects: float = math.nan
    body: bytes = b""
    longer: bool = False  # the body went on past what was kept
    content_type: str | None = None
    error: str | None = None


class HttpProbe:
    kind: ClassVar[str] = "http"

    @dataclass(frozen=True)
    class Options:
        """`expect_status` empty means any 2xx or 3xx. `timeout` bounds the whole exchange,
        connect to last body byte. `headers` are "Name: value" strings; `secret_header` is
        one more, such as a bearer token, that the config takes from `{ env = "NAME" }` or
        `{ file = "path" }` since secrets are never written in the file. The body checks,
        proxy, client certificate, CA file and redirect limit are in the module's doc."""

        url: str
        method: str = "GET"
        expect_status: list[int] = field(default_factory=list)
        timeout: Duration = DEFAULT_TIMEOUT
        verify_tls: bool = True
        follow_redirects: bool = True
        headers: list[str] = field(default_factory=list, repr=False)
        secret_header: str | None = field(default=None, repr=False, metadata={"secret": True})
        body_regex: str | None = None
        json_path: str | None = None
        json_expect: str | None = None
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
        proxy: str | None = field(default=None, repr=False)
        client_cert: str | None = None
        client_key: str | None = None
        ca_file: str | None = None
        max_redirects: int = DEFAULT_MAX_REDIRECTS

        def __post_init__(self) -> None:
            check_url(self.url)
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
                check_secret_header(self.secret_header)
            _check_body_options(self)
            _check_tls_options(self)

    def __init__(self, name: str, options: Options) -> None:
        import urllib3

        self.name = name
        self.options = options
        self.labels = {"url": redacted_url(options.url)}
        self._expected = set(options.expect_status) or set(range(200, 400))
        self._body_regex = re.compile(options.body_regex) if options.body_regex else None
        self._keep = options.max_body_bytes if self._checks_body else 0
        self._session = new_session()
        self._session.max_redirects = options.max_redirects
        if options.proxy is not None:
            # The config chose the proxy: the environment's HTTPS_PROXY / NO_PROXY must not.
            self._session.trust_env = False
        if not options.verify_tls:
            # Chosen in the config: a warning on every check would only flood the log.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        lines = options.headers + ([options.secret_header] if options.secret_header else [])
        self._session.headers.update(dict(map(parse_header, lines)))

    @property
    def _checks_body(self) -> bool:
        return self.options.body_regex is not None or self.options.json_path is not None

    def collect(self, now: float) -> list[Sample]:
        started = time.monotonic()
        exchange = self._exchange(started + self.options.timeout)
        elapsed = time.monotonic() - started
        extra, body_error = self._body_samples(exchange, now)
        error = exchange.error or self._status_error(exchange) or body_error
        labels = self.labels
        return [
            Sample(UP, 0.0 if error else 1.0, now, labels, error),
            Sample(STATUS_CODE, float(exchange.status), now, labels, error),
            Sample(DURATION, elapsed, now, labels, error),
            Sample(REDIRECTS, exchange.redirects, now, labels, error),
            *extra,
        ]

    def _status_error(self, exchange: Exchange) -> str | None:
        if exchange.status in self._expected:
            return None
        return f"unexpected status {exchange.status}"

    def _body_samples(self, exchange: Exchange, now: float) -> tuple[list[Sample], str | None]:
        """The body checks' samples, and the first reason one failed."""
        failed = exchange.error or self._status_error(exchange)  # no body worth checking
        samples: list[Sample] = []
        if self._body_regex is not None:
            matched, error = (False, failed) if failed else self._regex_check(exchange)
            samples.append(Sample(BODY_MATCHED, float(matched), now, self.labels, error))
        if self.options.json_path is not None:
            check = JsonCheck(False, error=failed) if failed else self._json_check(exchange)
            samples += [
                Sample(JSON_MATCHED, float(check.matched), now, self.labels, check.error),
                Sample(JSON_VALUE, check.value, now, self.labels, check.error),
            ]
        return samples, next((s.error for s in samples if s.error), None)

    def _regex_check(self, exchange: Exchange) -> tuple[bool, str | None]:
        assert self._body_regex is not None
        text = body_text(exchange.body, exchange.content_type)
        if self._body_regex.search(text):
            return True, None
        return False, f"body does not match body_regex; it begins {excerpt(text)}"

    def _json_check(self, exchange: Exchange) -> JsonCheck:
        assert self.options.json_path is not None
        path, expect = self.options.json_path, self.options.json_expect
        return check_json(exchange.body, exchange.longer, path, expect)

    def _exchange(self, deadline: float) -> Exchange:
        status, redirects = 0, math.nan
        try:
            self._check_files()
            with self._send() as response:
                status, redirects = response.status_code, float(len(response.history))
                content_type = response.headers.get("Content-Type")
                body, longer = _read_body(response.raw, deadline, self._keep)
        except request_failures() as exc:
            error = describe_failure(exc, self.options.timeout)
            return Exchange(status, redirects, error=error)
        finally:
            # The next check opens a fresh connection: it measures the connect and TLS
            # handshake again, and sees a certificate replaced on the server at once.
            self._session.close()
        return Exchange(status, redirects, body, longer, content_type)

    def _check_files(self) -> None:
        """A missing certificate file says so, rather than as a deep TLS library error."""
        options = self.options
        named = {"client_cert": options.client_cert, "client_key": options.client_key,
                 "ca_file": options.ca_file}  # fmt: skip
        for key, path in named.items():
            if path is not None and not os.access(path, os.R_OK):
                raise MissingFile(f"cannot read {key} {path}")

    def _send(self) -> "requests.Response":
        options = self.options
        proxies = {"http": options.proxy, "https": options.proxy} if options.proxy else None
        cert: str | tuple[str, str] | None = options.client_cert
        if options.client_cert is not None and options.client_key is not None:
            cert = (options.client_cert, options.client_key)
        return self._session.request(
            options.method.upper(),
            options.url,
            timeout=float(options.timeout),
            verify=options.ca_file or options.verify_tls,
            allow_redirects=options.follow_redirects,
            stream=True,
            proxies=proxies,
            cert=cert,
        )
