"""A real Request Tracker 5 on loopback for tests (Debian: request-tracker5, rt5-db-sqlite,
rt5-standalone).

    from rt_server import RtServer, rt_server  # noqa: F401  (rt_server is the fixture)

    def test_it(rt_server: RtServer) -> None:
        requests.get(rt_server.api + "/rt", headers={"Authorization": f"token {rt_server.token}"})

The fixture is session-scoped and shared: the first test that asks builds a fresh SQLite
database in a temporary directory, starts RT's standalone server (Starlet) on a free
127.0.0.1 port and hands it out once REST2 answers; the session's end stops it. RT reads its
configuration from that directory (RT_SITE_CONFIG, RT_SITE_CONFIG_DIR), so nothing under /etc
changes, and its outgoing mail is dropped, so no MTA is needed.

Inside: `root` (a superuser: forewarn's API user, `token` or `root_password`), `agent` (a
privileged superuser standing for a person at the help desk: `agent_token`, `agent_password`,
and `as_agent` to act as them), the queue General and the ticket custom field `marker_field`
on it. `stop()` and `start()` take RT down and bring it back on the same port with the same
data, for fault-injection tests. Missing packages skip the tests outside CI and fail them with
CI=true; tests/run.sh installs them. The server gets SIGTERM when the test process dies.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_servers import HOST, ServerFailed, ServerProcess, free_port, spawn, wait_until

PACKAGES = "request-tracker5 rt5-db-sqlite rt5-standalone"
RT_SERVER = Path("/usr/share/request-tracker5/libexec/rt-server")
RT_SETUP_DATABASE = Path("/usr/sbin/rt-setup-database-5")
RT_LIB = "/usr/share/request-tracker5/lib"
MARKER_FIELD = "Forewarn Marker"
AGENT = "agent"
SETUP_SECONDS = 120.0
START_SECONDS = 60.0
PORT_ATTEMPTS = 3

SITE_CONFIG = """\
Set($DatabaseType, 'SQLite');
Set($DatabaseName, '{dir}/rt.sqlite');
Set($rtname, 'rt.localhost');
Set($Organization, 'localhost');
Set($CorrespondAddress, 'rt@localhost');
Set($CommentAddress, 'rt-comment@localhost');
Set($WebPath, '');
Set($WebDomain, '{host}');
Set($WebPort, {port});
Set($WebBaseURL, 'http://{host}:{port}');
Set($Timezone, 'UTC');
Set($BcryptCost, 4);  # the lowest: each REST call checks a token, 12 rounds cost ~0.2 s
Set($LogToSyslog, undef);
Set($LogToFile, undef);
Set($LogToSTDERR, 'warning');
Set($MailCommand, sub {{ 1 }});  # autoreplies and notifications go nowhere
$RT::MasonDataDir = '{dir}/mason_data';
$RT::MasonSessionDir = '{dir}/session_data';
1;
"""

# One RT::Init for everything the tests need beyond the initial data (each start costs ~1.5 s).
SETUP_SCRIPT = f"""\
use strict; use warnings;
use lib '{RT_LIB}';
use RT; RT::LoadConfig(); RT::Init();
my ($agent_password) = @ARGV;
sub check {{ my ($what, $ok, $msg) = @_; die "$what: $msg\\n" unless $ok; }}
sub token_for {{
    my ($user) = @_;
    my ($id, $msg, $auth) = RT::AuthToken->new(RT->SystemUser)
        ->Create(Owner => $user->Id, Description => 'forewarn tests');
    check('token for ' . $user->Name, $id, $msg);
    return $auth;
}}
my $root = RT::User->new(RT->SystemUser);
$root->Load('root');
my $agent = RT::User->new(RT->SystemUser);
check('user {AGENT}', $agent->Create(Name => '{AGENT}', RealName => 'Help Desk Agent',
    EmailAddress => '{AGENT}@localhost', Password => $agent_password, Privileged => 1));
check('rights of {AGENT}',
    $agent->PrincipalObj->GrantRight(Right => 'SuperUser', Object => RT->System));
my $queue = RT::Queue->new(RT->SystemUser);
$queue->Load('General');
my $cf = RT::CustomField->new(RT->SystemUser);
check('custom field', $cf->Create(Name => '{MARKER_FIELD}', Type => 'FreeformSingle',
    LookupType => 'RT::Queue-RT::Ticket'));
check('custom field on General', $cf->AddToObject($queue));
print 'token=', token_for($root), "\\n";
print 'agent_token=', token_for($agent), "\\n";
"""


@dataclass
class RtServer:
    workdir: Path
    port: int
    root_password: str
    agent_password: str
    token: str = field(default="", repr=False)
    agent_token: str = field(default="", repr=False)
    username: str = "root"
    agent: str = AGENT
    queue: str = "General"
    marker_field: str = MARKER_FIELD
    timings: dict[str, float] = field(default_factory=dict)  # seconds per setup step
    process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/REST/2.0"

    @property
    def config_env(self) -> dict[str, str]:
        """What points RT at this instance's configuration instead of /etc's."""
        return {
            "RT_SITE_CONFIG": str(self.workdir / "RT_SiteConfig.pm"),
            "RT_SITE_CONFIG_DIR": str(self.workdir / "RT_SiteConfig.d"),  # empty
        }

    def start(self) -> None:
        """Start on `port` and wait until REST2 answers the root token."""
        began = time.monotonic()
        # `env` execs RT's server: the process we hold is the server itself
        settings = [f"{name}={value}" for name, value in self.config_env.items()]
        argv = ["env", *settings, str(RT_SERVER),
                "--host", HOST, "--port", str(self.port), "--max-workers", "2"]
        self.process = spawn("rt-server", argv, self.workdir, self.port)
        try:
            wait_until(self.process, self._ready, "answering REST2", START_SECONDS)
        except ServerFailed:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - began

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log_tail(self) -> str:
        return self.process.log_tail() if self.process else "(never started)"

    def as_agent(self, method: str, path: str, **json: Any) -> requests.Response:
        """What a person does in RT: `path` below /REST/2.0, fields as JSON."""
        response = requests.request(
            method, self.api + path, json=json or None, timeout=30,
            headers={"Authorization": f"token {self.agent_token}"},
        )
        response.raise_for_status()
        return response

    def _ready(self, server: ServerProcess) -> bool:
        try:
            answer = requests.get(
                self.api + "/rt", headers={"Authorization": f"token {self.token}"}, timeout=2
            )
        except requests.RequestException:
            return False
        return answer.status_code == 200


# --- building one ---------------------------------------------------------------------------


def require_packages() -> None:
    """Skip when RT or what it runs on is not installed (conftest fails the skip under CI)."""
    missing = not (RT_SERVER.exists() and RT_SETUP_DATABASE.exists())
    if not missing:
        probe = subprocess.run(["perl", "-MDBD::SQLite", "-MStarlet", "-e", "1"],
                               capture_output=True, check=False)
        missing = probe.returncode != 0
    if missing:
        pytest.skip(f"Request Tracker 5 is not installed (Debian: {PACKAGES}; tests/run.sh)")


def build(workdir: Path) -> RtServer:
    """A fresh RT in `workdir`, started; ServerFailed with the output when a step fails."""
    rt = RtServer(workdir, free_port(), secrets.token_urlsafe(12), secrets.token_urlsafe(12))
    for name in ("RT_SiteConfig.d", "mason_data", "session_data"):
        (workdir / name).mkdir()
    _write_config(rt)
    password_file = workdir / "root-password"
    password_file.write_text(rt.root_password + "\n")
    password_file.chmod(0o600)
    _step(rt, "database", [str(RT_SETUP_DATABASE), "--action", "init",
                           "--root-password-file", str(password_file)])
    (workdir / "setup.pl").write_text(SETUP_SCRIPT)
    output = _step(rt, "users", ["perl", str(workdir / "setup.pl"), rt.agent_password])
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    rt.token, rt.agent_token = values["token"], values["agent_token"]
    _start_on_a_free_port(rt)
    return rt


def _write_config(rt: RtServer) -> None:
    text = SITE_CONFIG.format(dir=rt.workdir, host=HOST, port=rt.port)
    (rt.workdir / "RT_SiteConfig.pm").write_text(text)


def _start_on_a_free_port(rt: RtServer) -> None:
    """Another port when the free one was taken before RT bound it."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            rt.start()
            return
        except ServerFailed as exc:
            if attempt == PORT_ATTEMPTS or "already in use" not in str(exc):
                raise
        rt.port = free_port()
        _write_config(rt)  # RT's own URLs name the port


def _step(rt: RtServer, name: str, argv: list[str]) -> str:
    began = time.monotonic()
    try:
        done = subprocess.run(argv, env={**os.environ, **rt.config_env}, cwd=rt.workdir,
                              capture_output=True, text=True, timeout=SETUP_SECONDS, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ServerFailed(f"RT setup step {name} took over {SETUP_SECONDS:g}s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise ServerFailed(f"RT setup step {name} failed ({done.returncode}):\n{tail}")
    rt.timings[name] = time.monotonic() - began
    return done.stdout


# --- the fixture ----------------------------------------------------------------------------

# Each test module that imports the fixture gets its own copy of it, so the RT (or the reason
# it could not start) is kept here: one per session, built by whichever module asks first.
_built: list[RtServer | str] = []


@pytest.fixture(scope="session")
def rt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtServer]:
    """One Request Tracker 5 for the whole session (see the module's doc)."""
    require_packages()
    if not _built:
        _built.append(_build_or_reason(tmp_path_factory.mktemp("rt")))
    rt = _built[0]
    if isinstance(rt, str):
        pytest.fail(rt, pytrace=False)
    yield rt
    rt.stop()  # every copy stops it at the session's end; stopping twice is harmless


def _build_or_reason(workdir: Path) -> RtServer | str:
    try:
        return build(workdir)
    except ServerFailed as exc:
        return str(exc)
