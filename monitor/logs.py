"""How the daemon logs: one line per event, as text (the default) or JSON for log shippers,
with every secret the config resolved replaced by "***".

An exception is one line too (`ValueError: ...`, the `exc` field in JSON); the whole
traceback only at log level debug. The redaction is a filter on the root handler, so it sees
what every library logs, and it runs before any formatter: the message and the exception text
are redacted once, whatever the format.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any

from monitor.comms_config import AudienceConfig
from monitor.config import Config
from notifiers.apprise_channel import url_secrets

FORMATS = ("text", "json")
REDACTED = "***"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# A piece of an Apprise URL shorter than this is a port, a flag or a word like "markdown"
# rather than a token; redacting it in every log line would garble the log.
_SHORTEST_URL_PIECE = 9
_DOMAIN = re.compile(r"(?:[a-z0-9-]+\.)+[a-z]{2,63}|localhost")


# --- which values are secret --------------------------------------------------------------


def config_secrets(config: Config) -> frozenset[str]:
    """Every secret in `config`: fields marked `secret` (SMTP, help desks, probes, anywhere)
    and the Apprise URLs of the audiences with the parts of them that may be tokens."""
    return frozenset(secret for secret in _secrets_in(config) if secret)


def _secrets_in(value: Any) -> Iterator[str]:
    if isinstance(value, tuple | list):
        for item in value:
            yield from _secrets_in(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for spec in dataclasses.fields(value):
            item = getattr(value, spec.name, None)
            if spec.metadata.get("secret"):
                yield from _strings(item)
            else:
                yield from _secrets_in(item)
        if isinstance(value, AudienceConfig):
            for url in value.apprise:
                yield from apprise_secrets(url)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, tuple | list):
        yield from (item for item in value if isinstance(item, str))


def apprise_secrets(url: str) -> Iterator[str]:
    """The URL, and those of its parts that may be a token (never a host name or a port)."""
    whole = {url, url.partition("://")[2]}
    for piece in url_secrets(url):
        if piece in whole or _may_be_token(piece):
            yield piece


def _may_be_token(piece: str) -> bool:
    # `format=markdown` is judged by its value; `c2VjcmV0=` (base64 padding) as a whole.
    _key, _, value = piece.partition("=")
    candidate = value or piece
    return len(candidate) >= _SHORTEST_URL_PIECE and not _is_public(candidate)


def _is_public(piece: str) -> bool:
    """An IP address or a DNS name: where a service lives, not a credential."""
    try:
        ipaddress.ip_address(piece.strip("[]"))
    except ValueError:
        return _DOMAIN.fullmatch(piece) is not None
    return True


# --- the filter and the formatters ----------------------------------------------------------


class SecretFilter(logging.Filter):
    """Replaces every secret in a record's final message and exception text with "***"."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        # Longest first: a secret containing a shorter one is replaced whole.
        found = {*self.secrets, *(s for s in secrets if s)}
        self.secrets = tuple(sorted(found, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad %-arguments: the handler reports them, with no values shown
            return True
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def exception_text(record: logging.LogRecord, traceback: bool) -> str:
    """The traceback, or (without `traceback`) its last part, `ValueError: why`, on one line."""
    text = record.exc_text or ""
    if traceback or not text:
        return text
    lines = text.splitlines()
    frames = [n for n, line in enumerate(lines) if line.startswith((" ", "\t"))]
    tail = lines[frames[-1] + 1 :] if frames else lines
    return " ".join(line.strip() for line in tail if line.strip())


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`; an exception on the same line unless `traceback`."""

    def __init__(self, traceback: bool) -> None:
        super().__init__(TEXT_FORMAT)
        self.traceback = traceback

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage().replace("\n", "\\n")
        line = self.formatMessage(_with_time(self, record))
        exc = exception_text(record, self.traceback)
        if exc and self.traceback:
            return f"{line}\n{exc}"
        return f"{line} ({exc})" if exc else line


def _with_time(formatter: logging.Formatter, record: logging.LogRecord) -> logging.LogRecord:
    record.asctime = formatter.formatTime(record)
    return record


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, and exc."""

    def __init__(self, traceback: bool) -> None:
        super().__init__()
        self.traceback = traceback

    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        exc = exception_text(record, self.traceback)
        if exc:
            event["exc"] = exc
        return json.dumps(event)


# --- set-up ----------------------------------------------------------------------------------


def setup_logging(
    level: str, log_format: str, secrets: Iterable[str] = (), stream: IO[str] | None = None
) -> logging.Handler:
    """The root logger's one handler (to stderr unless `stream`), filtered and formatted."""
    traceback = level.lower() == "debug"
    handler = logging.StreamHandler(stream)
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    handler.setFormatter(formatter(traceback))
    handler.addFilter(SecretFilter(secrets))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    return handler


def redact_also(secrets: Iterable[str]) -> None:
    """After a reload: the new config's secrets too (the old ones stay: a retry may still
    carry one)."""
    wanted = tuple(secrets)
    for handler in logging.getLogger().handlers:
        for found in handler.filters:
            if isinstance(found, SecretFilter):
                found.add(wanted)
