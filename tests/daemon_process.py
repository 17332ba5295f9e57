"""Start `forewarn run` as a real subprocess with a config written for a test, and look at
what it keeps: its /metrics and, read-only, its state file."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import requests
from http_service import HttpService, free_port

T = TypeVar("T")

DAEMON_HEAD = """
[daemon]
state_dir = "{state}"
listen = "127.0.0.1:{metrics_port}"
hostname = "{hostname}"
"""

SMTP_HEAD = """
[smtp]
host = "127.0.0.1"
port = {smtp_port}
from = "forewarn@example.com"
timeout = "5s"
"""


def daemon_head(
    state: Path,
    metrics_port: int,
    *,
    hostname: str = "testhost",
    smtp_port: int | None = None,
    **daemon_keys: str,
) -> str:
    """The head of a test's daemon config: `[daemon]` with its state directory, /metrics on a
    loopback port, a fixed hostname and `daemon_keys` (string values, e.g. reopen_within="1h");
    with `smtp_port`, an `[smtp]` section to the loopback mail server on that port. The test
    appends its own tables."""
    head = DAEMON_HEAD.format(state=state, metrics_port=metrics_port, hostname=hostname)
    head += "".join(f'{key} = "{value}"\n' for key, value in daemon_keys.items())
    return head + ("" if smtp_port is None else SMTP_HEAD.format(smtp_port=smtp_port))


# Every second, answering within a second, without jitter: the daemon sees a change within
# about a second, as a test that breaks and mends a service wants.
HTTP_PROBE = """
[[probe]]
name = "{name}"
kind = "http"
interval = "1s"
timeout = "1s"
jitter = "0s"
url = "{url}"
"""

DOWN_RULE = """
[[rule]]
name = "{name}_down"
probe = "{name}"
metric = "http_up"
condition = "value == 0"
"""


HELPDESK = "helpdesk@example.com"
USERS = "staff@example.com"

BUILTIN_DESK = """
[helpdesk]
kind = "builtin"
contact = "{helpdesk}"

[notify]
helpdesk = ["{helpdesk}"]
users = ["{users}"]
"""


def builtin_desk(helpdesk: str = HELPDESK, users: str = USERS) -> str:
    """The TOML of the built-in help desk reached at `helpdesk`, with the help desk's and the
    users' mail addresses (the mails need `daemon_head(smtp_port=...)`)."""
    return BUILTIN_DESK.format(helpdesk=helpdesk, users=users)


def http_probe(name: str, url: str) -> str:
    """The TOML of an http probe `name` of `url`, run every second."""
    return HTTP_PROBE.format(name=name, url=url)


def http_down(name: str, url: str, rule_keys: str = "", probe_keys: str = "") -> str:
    """The TOML of `http_probe(name, url)` with `probe_keys` added, and a rule `{name}_down`
    that holds while the probe gets no answer, with `rule_keys` added (TOML lines, e.g. a
    `body_regex` for the probe, a summary for the rule)."""
    return http_probe(name, url) + probe_keys + DOWN_RULE.format(name=name) + rule_keys


def state_rows(state: Path, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
    """Read the state file of the daemon whose state directory is `state`, read-only (WAL:
    safe while it writes); [] before the daemon has made it."""
    db = state / "forewarn.db"
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        return list(conn.execute(sql, params))


def metric_value(text: str, line_start: str) -> float | None:
    """The value of the first line of the /metrics `text` that starts with `line_start`
    (`name ` for an unlabelled series, `name{label="..."` for a labelled one)."""
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.split()[-1])
    return None


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.02
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Service(Protocol):
    """A loopback service a test starts and stops (HttpService, SmtpTestServer, ...)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class DaemonProcess:
    def __init__(
        self,
        config_path: Path,
        log_path: Path,
        metrics_port: int,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.metrics_port = metrics_port
        self.env = env or {}  # added to (or replacing) the test's own environment
        self.args = args  # more `forewarn run` arguments, e.g. ("--log-format", "json")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "-c", str(self.config_path), *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_until(self.metrics, 20, f"the daemon's /metrics (log: {self.log()})")

    def metrics(self) -> str | None:
        self._check_alive()
        try:
            response = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2)
        except requests.RequestException:
            return None
        return response.text if response.ok else None

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.log()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> int:
        """SIGTERM and wait: returns the exit code."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    @contextlib.contextmanager
    def running(self, *services: Service, start: bool = True) -> Iterator[DaemonProcess]:
        """Start `services`, then the daemon (with `start=False` the test starts it); on the
        way out stop the daemon, then the services, and, when the body went well, fail unless
        the daemon exited with 0 (a failed body's own error says more)."""
        for service in services:
            service.start()
        try:
            if start:
                self.start()
            yield self
        finally:
            code = self.stop()
            for service in services:
                service.stop()
        assert code == 0, self.log()


class ServiceRig:
    """For one test: the daemon watching one loopback HTTP service (`service`, answering with
    `handler`, by default "ok").

    Its config is `daemon_head` with `head` (smtp_port, hostname, daemon keys), then
    `config(url)` for the service's URL. Its files are in `tmp`: config.toml, daemon.log and
    the state directory `state` (tmp/state unless given)."""

    def __init__(
        self,
        tmp: Path,
        config: Callable[[str], str],
        *,
        state: Path | None = None,
        env: dict[str, str] | None = None,
        handler: type[BaseHTTPRequestHandler] | None = None,
        **head: Any,
    ) -> None:
        self.service = HttpService() if handler is None else HttpService(handler=handler)
        self.state = state or tmp / "state"
        port = free_port()
        path = tmp / "config.toml"
        path.write_text(daemon_head(self.state, port, **head) + config(self.service.url))
        self.daemon = DaemonProcess(path, tmp / "daemon.log", port, env=env)

    def rows(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        return state_rows(self.state, sql, params)

    @contextlib.contextmanager
    def running(self, start: bool = False) -> Iterator[Self]:
        """The service up, and with `start` the daemon too (else the test starts it); the
        daemon's exit checked on the way out, as `DaemonProcess.running` does."""
        with self.daemon.running(self.service, start=start):
            yield self
