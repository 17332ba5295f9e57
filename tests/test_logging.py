"""The daemon's log: one line per event as text or JSON, and no secret of the config in it.

The formatters and the redacting filter are driven through the real root logger; the secrets
come from a real config file whose secrets come from the environment. The end-to-end test runs
`forewarn run --log-format json` with deliveries that fail: a wrong SMTP password refused by a
real SMTP server, an Apprise URL whose token is in the path to a port nobody listens on. The
notifiers redact their own errors too; this test guards the whole pipeline, the one before it
the filter itself, against a careless logger.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from daemon_process import DaemonProcess, daemon_head, http_down, wait_until
from http_service import free_port
from smtp_server import SmtpTestServer

from monitor.config import load_config
from monitor.logs import config_secrets, redact_also, setup_logging

SMTP_PASSWORD = "Tr0ub4dor-smtp-secret"
TOKEN = "xoxb1234567890abcdefTOKEN"
REDMINE_KEY = "5f1e0c9a7b3d2e4f6a8b"
ENV = {
    "FOREWARN_TEST_SMTP_PASSWORD": SMTP_PASSWORD,
    "FOREWARN_TEST_REDMINE_KEY": REDMINE_KEY,
}

CONFIG = """
[smtp]
host = "127.0.0.1"
port = {smtp_port}
username = "forewarn"
password = {{ env = "FOREWARN_TEST_SMTP_PASSWORD" }}
from = "forewarn@example.com"
timeout = "2s"

[notify]
helpdesk = ["helpdesk@example.com"]

[[route]]
name = "web"
matchers = ['service="payroll"']
kind = "redmine"
url = "http://127.0.0.1:{closed_port}/"
api_key = {{ env = "FOREWARN_TEST_REDMINE_KEY" }}
project = "it"

[[audience]]
name = "staff"
services = ["intranet"]
apprise = [{{ env = "FOREWARN_TEST_APPRISE_URL" }}]
"""

# The keys of intranet_down beyond those of http_down.
INTRANET_DOWN = """severity = "critical"
service = "intranet"
notify_users = true
"""


def apprise_url(port: int) -> str:
    return f"json://127.0.0.1:{port}/hooks/{TOKEN}"


def write_config(tmp: Path, *, smtp_port: int, closed_port: int, level: str = "info") -> Path:
    path = tmp / "config.toml"
    head = daemon_head(tmp / "state", free_port(), log_level=level)
    intranet = http_down("intranet", f"http://127.0.0.1:{closed_port}/", INTRANET_DOWN)
    path.write_text(head + CONFIG.format(smtp_port=smtp_port, closed_port=closed_port) + intranet)
    return path


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, given back as it was (setup_logging replaces its handlers)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> int:
    """The secrets in the environment; returns a port nobody listens on."""
    closed = free_port()
    for name, value in {**ENV, "FOREWARN_TEST_APPRISE_URL": apprise_url(closed)}.items():
        monkeypatch.setenv(name, value)
    return closed


def emit(level: str, log_format: str, secrets: frozenset[str] = frozenset()) -> list[str]:
    """Log a fixed set of events; the lines written."""
    stream = io.StringIO()
    setup_logging(level, log_format, secrets, stream)
    log = logging.getLogger("notifiers.test")
    log.info("ticket %s created for %s", 42, "disk_full")
    log.warning("two\nlines")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("periodic evaluation failed")
    log.debug("only at debug")
    return stream.getvalue().splitlines()


# --- formats -------------------------------------------------------------------------------


def test_json_is_one_object_per_event(root_logger: logging.Logger) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    events = [json.loads(line) for line in emit("info", "json")]
    assert [(e["level"], e["logger"], e["message"]) for e in events] == [
        ("info", "notifiers.test", "ticket 42 created for disk_full"),
        ("warning", "notifiers.test", "two\nlines"),
        ("error", "notifiers.test", "periodic evaluation failed"),
    ]
    assert [e.get("exc") for e in events] == [None, None, "ZeroDivisionError: division by zero"]
    for event in events:
        assert event["time"].endswith("Z")
        assert datetime.fromisoformat(event["time"]) >= before


def test_json_at_debug_keeps_the_traceback_in_one_field(root_logger: logging.Logger) -> None:
    events = [json.loads(line) for line in emit("debug", "json")]
    assert len(events) == 4 and events[-1]["message"] == "only at debug"
    exc = events[2]["exc"]
    assert exc.startswith("Traceback (most recent call last):")
    assert "1 / 0" in exc and exc.endswith("ZeroDivisionError: division by zero")


def test_text_is_one_line_per_event_below_debug(root_logger: logging.Logger) -> None:
    lines = emit("info", "text")
    assert len(lines) == 3
    assert lines[0].endswith(" INFO notifiers.test: ticket 42 created for disk_full")
    assert lines[1].endswith(" WARNING notifiers.test: two\\nlines")
    assert lines[2].endswith(
        " ERROR notifiers.test: periodic evaluation failed (ZeroDivisionError: division by zero)"
    )


def test_text_at_debug_shows_the_traceback(root_logger: logging.Logger) -> None:
    lines = emit("debug", "text")
    assert lines[2].endswith("periodic evaluation failed")
    assert lines[3] == "Traceback (most recent call last):"
    assert "ZeroDivisionError: division by zero" in lines


# --- secrets --------------------------------------------------------------------------------


def test_every_secret_of_the_config_is_collected(tmp_path: Path, secret_env: int) -> None:
    config = load_config(str(write_config(tmp_path, smtp_port=25, closed_port=secret_env)))
    secrets = config_secrets(config)
    url = apprise_url(secret_env)
    assert {SMTP_PASSWORD, REDMINE_KEY, url, TOKEN} <= secrets
    # where the service lives is not secret: hiding it would garble every log line
    assert not {"127.0.0.1", str(secret_env), "hooks", "json"} & secrets


def test_secrets_are_redacted_in_messages_and_exceptions(
    tmp_path: Path, secret_env: int, root_logger: logging.Logger
) -> None:
    config = load_config(str(write_config(tmp_path, smtp_port=25, closed_port=secret_env)))
    stream = io.StringIO()
    setup_logging("info", "json", config_secrets(config), stream)
    log = logging.getLogger("notifiers.careless")
    log.error("AUTH LOGIN forewarn %s refused", SMTP_PASSWORD)
    try:
        raise ConnectionError(f"cannot reach {apprise_url(secret_env)}: refused")
    except ConnectionError:
        log.exception("apprise failed for token %s", TOKEN)
    out = stream.getvalue()
    assert SMTP_PASSWORD not in out and TOKEN not in out
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["message"] for e in events] == [
        "AUTH LOGIN forewarn *** refused",
        "apprise failed for token ***",
    ]
    assert events[1]["exc"] == "ConnectionError: cannot reach ***: refused"


def test_a_reload_adds_the_new_secrets(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    setup_logging("info", "text", {"old-secret-1"}, stream)
    redact_also({"new-secret-2"})
    logging.getLogger("x").warning("%s and %s", "old-secret-1", "new-secret-2")
    assert stream.getvalue().rstrip().endswith("x: *** and ***")


# --- the daemon -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_daemon_json_log_of_failing_deliveries_has_no_secret(
    tmp_path: Path, secret_env: int
) -> None:
    with SmtpTestServer(auth=("forewarn", "the-right-password")) as smtp:
        config = write_config(tmp_path, smtp_port=smtp.port, closed_port=secret_env, level="debug")
        port = int(load_config(str(config)).daemon.listen.rsplit(":", 1)[1])
        daemon = DaemonProcess(config, tmp_path / "daemon.log", port, args=("--log-format", "json"))
        daemon.start()
        try:
            wait_logged(daemon, "giving up on", "SMTPAuthenticationError 535")
            wait_logged(daemon, ":apprise:", "retrying")
        finally:
            assert daemon.stop() == 0
    out = daemon.log_path.read_text()
    for secret in (SMTP_PASSWORD, TOKEN, REDMINE_KEY):
        assert secret not in out
    assert len(events(daemon)) == len(out.splitlines())  # every line is one JSON event


def events(daemon: DaemonProcess) -> list[dict[str, str]]:
    return [json.loads(line) for line in daemon.log_path.read_text().splitlines()]


def wait_logged(daemon: DaemonProcess, *parts: str) -> None:
    """Until an event's message holds every one of `parts`."""
    wait_until(
        lambda: any(all(p in e["message"] for p in parts) for e in events(daemon)),
        20,
        f"{parts} in the log ({daemon.log()})",
        interval=0.1,
    )
