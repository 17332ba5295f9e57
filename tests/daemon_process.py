"""Start `forewarn run` as a real subprocess with a config written for a test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests

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


def http_probe(name: str, url: str) -> str:
    """The TOML of an http probe `name` of `url`, run every second."""
    return HTTP_PROBE.format(name=name, url=url)


def http_down(name: str, url: str, rule_keys: str = "") -> str:
    """The TOML of `http_probe(name, url)` and a rule `{name}_down` that holds while the probe
    gets no answer, with `rule_keys` (TOML lines, e.g. a summary) added to the rule."""
    return http_probe(name, url) + DOWN_RULE.format(name=name) + rule_keys


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
