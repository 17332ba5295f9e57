"""Chat, push and SMS notices through Apprise: one `Message` goes to one Apprise URL.

`Message.to` holds exactly that URL; the notice arrives as `title=subject`, `body=text` (plain
text; Apprise converts it for services that want Markdown or HTML). A URL Apprise cannot parse
is a permanent failure; a service that refuses or cannot be reached is transient, and the
dispatcher retries.

Secrets: an Apprise URL usually is the credential (a bot token in the host, a webhook token in
the path, a password). It never appears in an error, nor in a log line Apprise or urllib3 write
while sending: both are redacted while the send runs. Errors name the URL by its scheme, and
the daemon's state names it by `target_id(url)`, a hash that does not reveal it.

Timeouts: Apprise's URL arguments `cto` (connect) and `rto` (read), in seconds, 4 each unless
a service says otherwise; `AppriseChannel(timeout=...)` sets both for URLs that name neither.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import unquote, urlsplit

from notifiers.base import DeliveryError, Message

if TYPE_CHECKING:
    import apprise

log = logging.getLogger(__name__)

# Loggers that write parts of the URL while Apprise sends (the plugin's, the HTTP pool's).
_CHATTY_LOGGERS = ("apprise", "urllib3.connectionpool")
# Shorter pieces of a URL (ports, "to", "cto") are not tokens; hiding them would garble text.
_SHORTEST_SECRET = 4
_REASON_LIMIT = 500
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}")


def target_id(url: str) -> str:
    """A short stable name for an Apprise URL, safe to store and show (the URL is not)."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def scheme_of(url: str) -> str:
    """The URL's scheme (`tgram`, `json`): all an error may say about it."""
    scheme, separator, _ = url.partition("://")
    return scheme if separator and _SCHEME.fullmatch(scheme) else "?"


class AppriseChannel:
    kind: ClassVar[str] = "apprise"

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout  # seconds to connect and per read; None: Apprise's own

    def send(self, message: Message) -> None:
        # Imported here, not with the module: the daemon's other parts want only `target_id`
        # and `url_secrets`, and a daemon without Apprise targets never loads its 100+ plugins.
        import apprise

        url = _single_url(message)
        scheme = scheme_of(url)
        secrets = url_secrets(url)
        with (
            _redacting(secrets),
            apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured,
        ):
            delivered = self._notify(url, scheme, message, secrets)
            reason = captured.getvalue()
        if not delivered:
            detail = _reason(reason) or "the service did not accept it"
            raise DeliveryError(f"apprise {scheme}: {detail}", permanent=False)
        log.info("apprise %s notice sent (target %s)", scheme, target_id(url))

    def _notify(self, url: str, scheme: str, message: Message, secrets: tuple[str, ...]) -> bool:
        import apprise

        service = apprise.Apprise.instantiate(url)  # one URL, one service: `add` would split
        if service is None:
            raise DeliveryError(f"not a valid Apprise URL (scheme {scheme!r})", permanent=True)
        self._apply_timeout(service, url)
        notifier = apprise.Apprise()
        notifier.add(service)
        try:
            result = notifier.notify(
                title=message.subject, body=message.text, body_format=apprise.NotifyFormat.TEXT
            )
        except Exception as err:  # Apprise catches its plugins' errors; its own may quote the URL
            text = redact(f"{type(err).__name__}: {err}", secrets)
            raise DeliveryError(f"apprise {scheme}: {text}", permanent=False) from None
        return bool(result)

    def _apply_timeout(self, service: apprise.NotifyBase, url: str) -> None:
        if self.timeout is None:
            return
        if not re.search(r"[?&]cto=", url):
            service.socket_connect_timeout = self.timeout
        if not re.search(r"[?&]rto=", url):
            service.socket_read_timeout = self.timeout


def _single_url(message: Message) -> str:
    if len(message.to) != 1:
        raise DeliveryError(
            f"an Apprise message goes to one URL, not {len(message.to)}", permanent=True
        )
    return message.to[0]


def url_secrets(url: str) -> tuple[str, ...]:
    """The parts of `url` that may be a credential, longest first, as written and decoded."""
    _, _, rest = url.partition("://")
    parts = re.split(r"[/:@?&#,;]", rest)
    # a query's value alone, and the whole part too: a token may end in "=" padding
    pieces = {*parts, *(part.partition("=")[2] for part in parts)}
    found = {p for p in pieces if len(p) >= _SHORTEST_SECRET} | {url, rest}
    password = _password(url)
    if password:
        found.add(password)
    found |= {unquote(p) for p in found}
    return tuple(sorted((s for s in found if s), key=len, reverse=True))


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:  # e.g. a malformed IPv6 host: the pieces still cover it
        return None


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _reason(captured: str) -> str:
    """What Apprise said went wrong, already redacted on its way through the logger."""
    lines = [line.strip() for line in captured.splitlines() if line.strip()]
    return "; ".join(lines)[:_REASON_LIMIT]


class _Redactor(logging.Filter):
    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = redact(text, self.secrets)
        if clean != text:
            record.msg, record.args = clean, ()
        if record.exc_info:  # a formatter prints the cached text instead of the exception
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(formatted, self.secrets)
        return True


@contextmanager
def _redacting(secrets: tuple[str, ...]) -> Iterator[None]:
    """Redact the URL's secrets from what Apprise and urllib3 log while this block runs."""
    redactor = _Redactor(secrets)
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    for logger in loggers:
        logger.addFilter(redactor)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(redactor)
