"""A real Redmine 5 on loopback for tests (the Debian package `redmine`, SQLite, WEBrick).

    from redmine_server import redmine_server  # noqa: F401  (the fixture)

    def test_it(redmine_server: RedmineServer) -> None:
        requests.get(f"{redmine_server.url}/issues.json",
                     headers={"X-Redmine-API-Key": redmine_server.admin_key})

The fixture is session-scoped: the first test that asks starts Redmine, the session's end
stops it. The database holds Redmine's default data (trackers, statuses New .. Rejected,
priorities Low .. Immediate, roles), the REST API switched on, login required (so a bad key
gets 401), the administrator `admin`, and in the private project `helpdesk` the Manager
`agent` (every workflow transition) and the Reporter `reporter` (who may add issues and
notes, but whose status changes Redmine drops without an error), each with an API key.

Building that database takes a Rails boot, every migration and the default data (about 7 s),
so it is built once per installed Redmine version (and version of the set-up script below)
as a template in the temporary directory; each session copies the template into its own
temporary directory, so every session starts from a fresh database, and starts the server
on a free loopback port (about 3 s). `stop()` and `start()` take it down and bring it back
on the same port with the same data (fault injection). It runs as www-data, as Debian asks,
so the fixture needs root; without Redmine or root it skips the tests, with CI=true it
fails them. Install (as root, see the apt steps in tests/run.sh):
`redmine redmine-sqlite` with debconf `redmine/instances/default/dbconfig-install=false`
and `database-type=sqlite3`; the database.yml that leaves behind names the sqlite3 adapter,
which is what makes Debian's Gemfile load the sqlite3 gem, and DATABASE_URL points Rails at
the fixture's own file.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_servers import ServerFailed, ServerProcess, die_with_parent, free_port, wait_until

REDMINE_ROOT = Path("/usr/share/redmine")  # where the Debian package installs Redmine
INSTANCE_DATABASE_YML = Path("/etc/redmine/default/database.yml")
RUN_AS = "www-data"
PROJECT = "helpdesk"
PREPARE_SECONDS = 180.0
START_SECONDS = 60.0
PORT_ATTEMPTS = 3

# Runs inside `rails runner` against an empty database named by DATABASE_URL; writes the
# API keys as JSON to $CREDENTIALS_OUT (stdout carries Rails' own chatter).
SETUP_SCRIPT = """
require 'json'
require 'securerandom'
ActiveRecord::Migration.verbose = false
ActiveRecord::Tasks::DatabaseTasks.migrate
# the migrations loaded some models with the columns of their time
ActiveRecord::Base.descendants.each(&:reset_column_information)
Redmine::DefaultData::Loader.load('en')
Setting.rest_api_enabled = '1'
Setting.login_required = '1'  # a wrong API key then gets 401, not an anonymous view
admin = User.find_by_login('admin')
admin.must_change_passwd = false
admin.save!
project = Project.new(name: 'Help desk', identifier: ENV.fetch('PROJECT'), is_public: false)
project.trackers = Tracker.all
project.enabled_module_names = %w(issue_tracking)
project.save!
keys = {admin: admin.api_key}
{agent: ['Alice', 'Agent', 'Manager'], reporter: ['Rita', 'Reporter', 'Reporter']}
  .each do |login, (first, last, role)|
  user = User.new(firstname: first, lastname: last, mail: "#{login}@example.org", language: 'en')
  user.login = login.to_s
  user.password = user.password_confirmation = SecureRandom.hex(16)
  user.save!
  Member.create!(project: project, principal: user, role_ids: [Role.find_by_name(role).id])
  keys[login] = user.api_key
end
File.write(ENV.fetch('CREDENTIALS_OUT'), JSON.generate(keys))
"""


@dataclass
class RedmineServer:
    process: ServerProcess
    database: Path
    keys: dict[str, str]  # login -> API key: admin, agent, reporter
    version: str  # of the Debian package
    project: str = PROJECT
    timings: dict[str, float] = field(default_factory=dict)  # seconds, for the report

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def admin_key(self) -> str:
        return self.keys["admin"]

    @property
    def agent_key(self) -> str:
        return self.keys["agent"]

    def stop(self) -> None:
        """Stop the server (SIGTERM); its port then refuses connections until `start`."""
        self.process.stop()

    def start(self) -> None:
        """Start again after `stop`: the same port, the same database, ready when it returns."""
        if not self.process.alive:
            self.process = _run(
                self.process.workdir, self.database, self.process.port, self.admin_key
            )

    def api(
        self, method: str, path: str, key: str | None = None, **kwargs: Any
    ) -> requests.Response:
        """One REST call as `key`'s user (admin by default), failing on any error status."""
        headers = {"X-Redmine-API-Key": key or self.admin_key}
        response = requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)
        response.raise_for_status()
        return response


@pytest.fixture(scope="session")
def redmine_server() -> Iterator[RedmineServer]:
    version = _installed_version()
    _require(os.geteuid() == 0, f"Redmine runs as {RUN_AS}: the fixture must run as root")
    _require_sqlite_adapter()
    workdir = Path(tempfile.mkdtemp(prefix="forewarn-redmine-"))
    timings: dict[str, float] = {}
    try:
        started = time.monotonic()
        template = _template(version)
        timings["template"] = time.monotonic() - started
        server = _start(workdir, template, version)
        server.timings.update(timings, start=time.monotonic() - started - timings["template"])
        try:
            yield server
        finally:
            server.process.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- requirements --------------------------------------------------------------------------------


def _require(condition: bool, message: str) -> None:
    """Skip when `condition` fails (conftest turns the skip into a failure under CI=true)."""
    if not condition:
        pytest.skip(message)


def _installed_version() -> str:
    """The redmine package's version; skips (fails in CI) when it is not installed."""
    found = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}|${Version}", "redmine"],
        capture_output=True,
        text=True,
        check=False,
    )
    status, _, version = found.stdout.partition("|")
    _require(
        found.returncode == 0 and status.endswith(" installed") and REDMINE_ROOT.is_dir(),
        "Redmine is not installed (Debian packages redmine redmine-sqlite; tests/run.sh)",
    )
    return version


def _require_sqlite_adapter() -> None:
    """Debian's Gemfile loads the sqlite3 gem only when the instance's database.yml names it."""
    try:
        text = INSTANCE_DATABASE_YML.read_text()
    except OSError as exc:
        text = f"({exc})"
    _require(
        "sqlite3" in text,
        f"{INSTANCE_DATABASE_YML} does not name the sqlite3 adapter: install redmine with the"
        " debconf answer redmine/instances/default/database-type=sqlite3 (tests/run.sh)",
    )


# --- the database template -----------------------------------------------------------------------


def _template(version: str) -> Path:
    """The directory of a prepared database for this version, built when missing.

    Two sessions may build it at once: each builds its own and renames it into place; the
    loser's rename fails and it uses the winner's.
    """
    digest = hashlib.sha256(SETUP_SCRIPT.encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"forewarn-redmine-template-{version}-{digest}"
    if (target / "credentials.json").is_file():
        return target
    building = Path(tempfile.mkdtemp(prefix="forewarn-redmine-build-"))
    try:
        _prepare(building)
        os.rename(building, target)
    except OSError:
        if not (target / "credentials.json").is_file():
            raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def _prepare(workdir: Path) -> None:
    _give_to_runner(workdir)
    script = workdir / "setup.rb"
    script.write_text(SETUP_SCRIPT)
    env = _rails_env(workdir / "redmine.sqlite3", workdir)
    env.update(PROJECT=PROJECT, CREDENTIALS_OUT=str(workdir / "credentials.json"))
    env.update(SCHEMA="/dev/null", VERBOSE="false")  # no schema dump into the read-only tree
    log_path = workdir / "setup.log"
    with log_path.open("wb") as log:
        done = subprocess.run(
            ["bin/rails", "runner", str(script)],
            cwd=REDMINE_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=PREPARE_SECONDS,
            check=False,
            user=RUN_AS,
            group=RUN_AS,
            extra_groups=[],
        )
    if done.returncode != 0 or not (workdir / "credentials.json").is_file():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise ServerFailed(f"Redmine database set-up failed ({done.returncode}):\n{tail}")


# --- the server ----------------------------------------------------------------------------------


def _start(workdir: Path, template: Path, version: str) -> RedmineServer:
    _give_to_runner(workdir)
    database = workdir / "redmine.sqlite3"
    shutil.copyfile(template / "redmine.sqlite3", database)
    _give_to_runner(database)
    keys = json.loads((template / "credentials.json").read_text())
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            process = _run(workdir, database, free_port(), keys["admin"])
            return RedmineServer(process, database, keys, version)
        except ServerFailed as failure:
            if attempt == PORT_ATTEMPTS or "address already in use" not in str(failure).lower():
                raise
    raise AssertionError("unreachable")


def _run(workdir: Path, database: Path, port: int, admin_key: str) -> ServerProcess:
    """The server on `port`, once it answers an authenticated /issues.json."""
    process = _spawn(workdir, database, port)
    try:
        wait_until(process, _answers(admin_key), "ready", START_SECONDS)
    except ServerFailed:
        process.stop()
        raise
    return process


def _spawn(workdir: Path, database: Path, port: int) -> ServerProcess:
    # Ruby 3.1 no longer bundles webrick and Bundler hides the Debian gem: preload it.
    argv = ["ruby", "-rwebrick", "/usr/bin/rackup", "-E", "production"]
    argv += ["-o", "127.0.0.1", "-p", str(port), "-P", str(workdir / "server.pid")]
    env = dict(_rails_env(database, workdir), RAILS_LOG_TO_STDOUT="1")
    log_path = workdir / "redmine.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=REDMINE_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # runs after the switch to www-data, so it sticks
            user=RUN_AS,
            group=RUN_AS,
            extra_groups=[],
        )
    return ServerProcess("redmine", port, workdir, process, log_path)


def _answers(key: str) -> Callable[[ServerProcess], bool]:
    def check(server: ServerProcess) -> bool:
        try:
            response = requests.get(
                f"{server.url}/issues.json", headers={"X-Redmine-API-Key": key}, timeout=5
            )
        except requests.RequestException:
            return False
        return response.status_code == 200

    return check


# --- running as www-data -------------------------------------------------------------------------


def _rails_env(database: Path, home: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "RAILS_ENV": "production",
        "REDMINE_INSTANCE": "default",
        "DATABASE_URL": f"sqlite3:{database}",  # wins over the instance's database.yml
    }


def _give_to_runner(path: Path) -> None:
    account = pwd.getpwnam(RUN_AS)
    os.chown(path, account.pw_uid, account.pw_gid)
