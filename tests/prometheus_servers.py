"""Real node_exporter, Prometheus and Alertmanager servers on loopback for tests (Debian's).

    from prometheus_servers import ServerProcess, node_exporter, prometheus  # fixtures

    def test_it(prometheus: ServerProcess) -> None:
        requests.get(f"{prometheus.url}/api/v1/query", params={"query": "up"})

The fixtures are session-scoped and shared: whichever test module asks first starts the
server, every later one gets the same, and the session's end stops it. (Listing this module
in `pytest_plugins` works as well as importing the fixtures.) `prometheus` scrapes the
`node_exporter` every second as job "node" and is handed out once that target is up.
`start_prometheus` builds another one scraping other targets (a daemon's /metrics), and
`start_alertmanager` an Alertmanager.

Each server listens on a free loopback port, keeps its data in a temporary directory and
writes its log to a file there, whose tail is shown when it does not start or dies. A
missing binary skips the tests outside CI and fails them with CI=true. The servers get
SIGTERM when the test process dies, even by SIGKILL (Linux's parent-death signal).
"""

from __future__ import annotations

import ctypes
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from http_service import free_port

HOST = "127.0.0.1"
START_SECONDS = 30.0  # Prometheus applies new scrape targets only every 5 s
STOP_SECONDS = 5.0
POLL_SECONDS = 0.05
PORT_ATTEMPTS = 3
NODE_EXPORTER_NAMES = ("prometheus-node-exporter", "node_exporter")
PROMETHEUS_NAMES = ("prometheus",)
ALERTMANAGER_NAMES = ("prometheus-alertmanager", "alertmanager")


class ServerFailed(Exception):
    """A server did not start; the message holds the tail of its log."""


@dataclass
class ServerProcess:
    name: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> ServerFailed:
        state = "running" if self.alive else f"exited with {self.process.returncode}"
        return ServerFailed(
            f"{self.name} {what} ({state}); log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()


# --- starting ------------------------------------------------------------------------------------


def find_binary(names: Sequence[str], package: str) -> str:
    """The path of the first of `names` on PATH, else skip (conftest fails a skip under CI)."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"{names[0]} is not installed (Debian package {package}; tests/run.sh installs it)")


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the forked child must not dlopen
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, however it dies."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(name: str, argv: list[str], workdir: Path, port: int) -> ServerProcess:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            preexec_fn=die_with_parent,
        )
    return ServerProcess(name, port, workdir, process, log_path)


def wait_until(
    server: ServerProcess, ready: Callable[[ServerProcess], bool], what: str, seconds: float
) -> None:
    """Poll `ready` until it holds; ServerFailed with the log when the server dies or time ends."""
    deadline = time.monotonic() + seconds
    while not ready(server):
        if not server.alive:
            raise server.failure(f"exited before {what}")
        if time.monotonic() > deadline:
            raise server.failure(f"not {what} after {seconds:g}s")
        time.sleep(POLL_SECONDS)


def answers(path: str) -> Callable[[ServerProcess], bool]:
    def check(server: ServerProcess) -> bool:
        try:
            return requests.get(server.url + path, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    return check


def start_server(
    name: str,
    argv_for: Callable[[int], list[str]],
    workdir: Path,
    ready: Callable[[ServerProcess], bool],
) -> ServerProcess:
    """Start on a free port and wait until ready; another port if the first was taken meanwhile."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        server = spawn(name, argv_for(port), workdir, port)
        try:
            wait_until(server, ready, "ready", START_SECONDS)
            return server
        except ServerFailed:
            server.stop()
            if attempt == PORT_ATTEMPTS or "address already in use" not in server.log_tail():
                raise
    raise AssertionError("unreachable")


def listening(binary: str, *flags: str) -> Callable[[int], list[str]]:
    """The command line of a server of the Prometheus family: `binary` with `flags`, listening
    on the loopback port it is given."""
    return lambda port: [binary, *flags, f"--web.listen-address={HOST}:{port}"]


def start_node_exporter(workdir: Path, extra_args: Sequence[str] = ()) -> ServerProcess:
    binary = find_binary(NODE_EXPORTER_NAMES, "prometheus-node-exporter")
    return start_server("node_exporter", listening(binary, *extra_args), workdir,
                        answers("/metrics"))


def write_prometheus_config(
    path: Path,
    jobs: Mapping[str, Sequence[str]],
    scrape_interval: str,
    more: Mapping[str, object] | None = None,
) -> None:
    """A prometheus.yml scraping each job's targets, with `more` top-level keys (rule_files,
    alerting); JSON is YAML, so no YAML library."""
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]}
            for job, targets in jobs.items()
        ],
        **(more or {}),
    }
    path.write_text(json.dumps(config, indent=2))


def start_prometheus(
    workdir: Path,
    jobs: Mapping[str, Sequence[str]],
    scrape_interval: str = "1s",
    wait_for_jobs: Sequence[str] = (),
    more: Mapping[str, object] | None = None,
) -> ServerProcess:
    """A Prometheus scraping `jobs` ({job: ["host:port", ...]}), `more` added to its config;
    returned once it answers queries and every job in `wait_for_jobs` has `up` 1."""
    binary = find_binary(PROMETHEUS_NAMES, "prometheus")
    config = workdir / "prometheus.yml"
    write_prometheus_config(config, jobs, scrape_interval, more)
    argv = listening(binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}")
    server = start_server("prometheus", argv, workdir, answers("/-/ready"))
    for job in wait_for_jobs:
        try:
            wait_until(server, job_is_up(job), f"scraping job {job}", START_SECONDS)
        except ServerFailed:
            server.stop()
            raise
    return server


def start_alertmanager(workdir: Path, config: Mapping[str, object]) -> ServerProcess:
    """An Alertmanager with `config` (alertmanager.yml's content), without clustering: each
    instance sends on its own, and opens no gossip port. Returned once ready."""
    binary = find_binary(ALERTMANAGER_NAMES, "prometheus-alertmanager")
    path = workdir / "alertmanager.yml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    argv = listening(
        binary,
        f"--config.file={path}",
        f"--storage.path={workdir / 'data'}",
        "--cluster.listen-address=",
    )
    return start_server("alertmanager", argv, workdir, answers("/-/ready"))


def query(server: ServerProcess, promql: str) -> list[dict[str, object]]:
    """The result of an instant query, for tests that compare with what a probe saw."""
    answer = requests.get(f"{server.url}/api/v1/query", params={"query": promql}, timeout=5)
    answer.raise_for_status()
    result: list[dict[str, object]] = answer.json()["data"]["result"]
    return result


def job_is_up(job: str) -> Callable[[ServerProcess], bool]:
    def check(server: ServerProcess) -> bool:
        try:
            result = query(server, f'up{{job="{job}"}} == 1')
        except requests.RequestException:
            return False
        return bool(result)

    return check


# --- shared fixtures -----------------------------------------------------------------------------

_running: dict[str, ServerProcess] = {}
_failed: dict[str, str] = {}


def shared(
    request: pytest.FixtureRequest, name: str, start: Callable[[], ServerProcess]
) -> ServerProcess:
    """One server per session under `name`, stopped at the session's end; a failed start is
    reported to every test that wants it without trying again."""
    if name in _failed:
        pytest.fail(_failed[name], pytrace=False)
    if name not in _running:
        try:
            _running[name] = start()
        except ServerFailed as exc:
            _failed[name] = str(exc)
            pytest.fail(str(exc), pytrace=False)
        request.session.addfinalizer(_running[name].stop)
    return _running[name]


def _shared_node_exporter(
    request: pytest.FixtureRequest, factory: pytest.TempPathFactory
) -> ServerProcess:
    return shared(request, "node_exporter", lambda: start_node_exporter(factory.mktemp("node")))


@pytest.fixture(scope="session")
def node_exporter(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ServerProcess:
    """The Debian prometheus-node-exporter, with its default collectors."""
    return _shared_node_exporter(request, tmp_path_factory)


@pytest.fixture(scope="session")
def prometheus(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ServerProcess:
    """The Debian prometheus, scraping `node_exporter` every second as job "node"."""
    exporter = _shared_node_exporter(request, tmp_path_factory)

    def start() -> ServerProcess:
        workdir = tmp_path_factory.mktemp("prometheus")
        return start_prometheus(workdir, {"node": [exporter.address]}, wait_for_jobs=["node"])

    return shared(request, "prometheus", start)
