"""Fault injection on the real daemon: `kill -9` at random points of outages, the wall clock
jumping back and forth, and the state directory's disk filling up.

Each test runs `forewarn run` as a subprocess probing a loopback HTTP service, with the
built-in help desk and a real SMTP server (aiosmtpd) on loopback, and audits the state file
afterwards: every outage one ticket, resolved; every mail of the outbox delivered once (by
its Message-ID); nothing left pending or given up on. The kill test prints its seed;
`FOREWARN_CRASH_SEED=<seed>` replays a run.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from crash_helpers import RULE, Rig, audit_mails, fill, mount_tmpfs, resends
from daemon_process import wait_until
from smtp_server import SmtpTestServer

pytestmark = pytest.mark.slow

ITERATIONS = 15
KILL_WITHIN = 2.5  # seconds after the service went down
RESTORE_WITHIN = (0.2, 2.0)  # the service comes back this long after it went down (once seen)


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


@pytest.fixture
def rig(tmp_path: Path, smtp: SmtpTestServer) -> Iterator[Rig]:
    with Rig(tmp_path, smtp, tmp_path / "state", reopen_within="0s").running() as rig:
        yield rig


# --- 1. kill -9 at random points of outages ------------------------------------------------


@dataclass
class Outage:
    """One outage's plan (seconds after the service went down) and what the kill hit."""

    kill_at: float
    restore_at: float
    killed_during: str = ""


def _phase(rig: Rig, number: int, restored: bool) -> str:
    """Where the kill landed, read from the state it left."""
    incidents = rig.incidents()
    if len(incidents) < number:
        return "before detection"
    incident = incidents[number - 1]
    pending = {row.op for row in rig.pending() if row.incident_id == incident["id"]}
    if not restored:
        if "ticket.create" in pending:
            return "incident, no ticket"
        return "ticket, mails pending" if pending else "outage, all delivered"
    if incident["status"] == "open":
        return "recovered, not yet resolved"
    return "resolution, deliveries pending" if pending else "resolved, all delivered"


def _run_outage(rig: Rig, number: int, plan: Outage) -> None:
    """Service down; SIGKILL and restart at `kill_at`; service up at `restore_at` once the
    daemon has recorded the outage (else there was none to count); then wait for calm."""
    rig.service.stop()
    down, restored = time.monotonic(), False
    while not (restored and plan.killed_during):
        elapsed = time.monotonic() - down
        assert elapsed < 20, f"outage {number} never recorded ({rig.daemon.log()})"
        if not plan.killed_during and elapsed >= plan.kill_at:
            rig.daemon.kill9()
            plan.killed_during = _phase(rig, number, restored)
            rig.daemon.start()  # waits for /metrics
        if not restored and elapsed >= plan.restore_at and len(rig.incidents()) >= number:
            rig.service.start()
            restored = True
        time.sleep(0.01)
    wait_until(lambda: len(rig.incidents()) == number and rig.settled(), 15,
               f"outage {number} resolved and delivered ({rig.daemon.log()})")
    assert rig.metric_value("forewarn_outbox_dead") == 0.0


def test_kill_9_at_random_points_of_outages_loses_and_duplicates_nothing(rig: Rig) -> None:
    seed = int(os.environ.get("FOREWARN_CRASH_SEED") or random.randrange(1 << 32))
    print(f"\nseed {seed} (replay: FOREWARN_CRASH_SEED={seed})")
    chance = random.Random(seed)
    rig.daemon.start()
    wait_until(rig.probe_runs, 10, "a first probe run")
    plans = [
        Outage(chance.uniform(0, KILL_WITHIN), chance.uniform(*RESTORE_WITHIN))
        for _ in range(ITERATIONS)
    ]
    for number, plan in enumerate(plans, 1):
        _run_outage(rig, number, plan)
        print(f"outage {number}: kill at {plan.kill_at:.2f} s, service back at "
              f"{plan.restore_at:.2f} s, killed {plan.killed_during}")
    print("kills:", dict(Counter(plan.killed_during for plan in plans)))

    incidents = rig.incidents()
    tickets = rig.tickets()
    assert len(incidents) == ITERATIONS, "one incident per outage"
    assert [t["marker"] for t in tickets] == [i["marker"] for i in incidents], "one ticket each"
    assert {t["status"] for t in tickets} == {"resolved"}
    assert rig.pending() == []
    created = rig.rows("SELECT incident_id FROM event WHERE kind = 'ticket_created'")
    assert sorted(r["incident_id"] for r in created) == [i["id"] for i in incidents]
    wrong = {n: _said(rig, i["id"]) for n, i in enumerate(incidents, 1)}
    assert {n: said for n, said in wrong.items() if said not in _SAID} == {}, plans
    assert audit_mails(rig) == []
    print(f"mails {len(rig.smtp.received)}, resent in the admitted window: {resends(rig)}")
    _assert_one_resolution_per_ticket(rig)


# The help desk hears of every opening and resolution; the users hear "investigating" and
# "resolved" only when the incident was still open at the tick that plans notices (nobody is
# told of a fix to what they never heard of).
_SAID = [
    ("helpdesk_opened", "helpdesk_resolved"),
    ("helpdesk_opened", "helpdesk_resolved", "investigating", "resolved"),
]


def _said(rig: Rig, incident_id: int) -> tuple[str, ...]:
    """The mails of the incident's outbox, by template (help desk) or notice kind, sorted."""
    rows = rig.rows(
        "SELECT COALESCE(json_extract(payload, '$.kind'), json_extract(payload, '$.template'))"
        " AS what FROM outbox WHERE op = 'email.send' AND incident_id = ?",
        (incident_id,),
    )
    return tuple(sorted(row["what"] for row in rows))


def _assert_one_resolution_per_ticket(rig: Rig) -> None:
    """A resolution is said once on its ticket, unless the kill hit between the help desk's
    change and the outbox's record of it (then the resolve row shows a second attempt)."""
    retried = {row.incident_id for row in rig.outbox()
               if row.op == "ticket.resolve" and row.attempts > 1}
    for incident, ticket in zip(rig.incidents(), rig.tickets(), strict=True):
        said = rig.rows(
            "SELECT COUNT(*) AS n FROM bt_comment WHERE ticket_id = ? AND text LIKE ?",
            (ticket["id"], "Status changed to resolved%"),
        )[0]["n"]
        assert said == 1 or (said == 2 and incident["id"] in retried), (ticket["id"], said)



# --- 2. the wall clock jumps ----------------------------------------------------------------


def _faketime_env(offset_file: Path) -> dict[str, str]:
    """The environment that runs the daemon on libfaketime's clock, read from `offset_file`
    at every call (`+3600`: an hour ahead); the monotonic clock stays real. The preload path
    is the one the `faketime` wrapper itself uses."""
    if shutil.which("faketime") is None:
        pytest.skip("faketime (Debian package faketime) is not installed; tests/run.sh installs it")
    preload = subprocess.run(
        ["faketime", "-f", "+0", "sh", "-c", 'printf %s "$LD_PRELOAD"'],
        capture_output=True, text=True, check=True,
    ).stdout
    offset_file.write_text("+0\n")
    return {
        "LD_PRELOAD": preload,
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


@pytest.fixture
def clock_rig(tmp_path: Path, smtp: SmtpTestServer) -> Iterator[tuple[Rig, Path]]:
    offset = tmp_path / "faketime-offset"
    with Rig(tmp_path, smtp, tmp_path / "state", env=_faketime_env(offset)).running() as rig:
        yield rig, offset


def _uptime(rig: Rig) -> float:
    """The daemon's uptime by its wall clock (the API's health): shows the jump took."""
    response = requests.get(
        f"http://127.0.0.1:{rig.daemon.metrics_port}/api/v1/health", timeout=5
    )
    return float(response.json()["uptime_seconds"])


def _jump(rig: Rig, offset: Path, seconds: int) -> None:
    """Set the daemon's wall clock `seconds` from the real one, and see that it took."""
    offset.write_text(f"{seconds:+d}\n")
    wait_until(lambda: (_uptime(rig) > 3000) == (seconds > 0), 5, f"the clock at {seconds:+d} s")


def _keeps_probing(rig: Rig, runs: int = 3, within: float = 6.0) -> None:
    start = rig.probe_runs()
    wait_until(lambda: rig.probe_runs() >= start + runs, within,
               f"{runs} more probe runs ({rig.daemon.log()})")


def _other_incidents(rig: Rig) -> list[str]:
    return [r["rule"] for r in rig.rows("SELECT rule FROM incident WHERE rule != ?", (RULE,))]


def _outage_with_ticket(rig: Rig) -> None:
    rig.daemon.start()
    wait_until(rig.probe_runs, 10, "a first probe run")
    rig.service.stop()
    wait_until(lambda: rig.tickets() and not rig.pending(), 10, "the ticket and its mails")


def test_wall_clock_jumping_ahead_keeps_one_ticket_probing_and_serving(
    clock_rig: tuple[Rig, Path],
) -> None:
    """An hour ahead during the outage and back after it: the daemon probes and serves on,
    the problem keeps its one ticket, which resolves when the service recovers, and every
    mail goes once; what the jump must not do meanwhile is in the next two tests."""
    rig, offset = clock_rig
    _outage_with_ticket(rig)
    _jump(rig, offset, 3600)
    _keeps_probing(rig)
    wait_until(lambda: [i["status"] for i in rig.incidents()] == ["open"], 5, "the outage open")
    assert [t["marker"] for t in rig.tickets() if t["marker"] == rig.incidents()[0]["marker"]]

    rig.service.start()
    wait_until(lambda: rig.settled(), 10, "the resolution")
    [ticket] = [t for t in rig.tickets() if t["marker"] == rig.incidents()[0]["marker"]]
    assert ticket["status"] == "resolved"
    _jump(rig, offset, 0)  # back, with the service healthy
    assert rig.daemon.metrics()
    assert audit_mails(rig) == []
    assert rig.metric_value("forewarn_outbox_dead") == 0.0


def test_wall_clock_jumping_ahead_neither_resolves_nor_opens_anything(
    clock_rig: tuple[Rig, Path],
) -> None:
    rig, offset = clock_rig
    _outage_with_ticket(rig)
    _jump(rig, offset, 3600)
    _keeps_probing(rig)
    assert _other_incidents(rig) == [], "probe_stale fired on the jump"
    assert [t["status"] for t in rig.tickets()] == ["new"], "the outage's ticket changed"
    events = [r["kind"] for r in rig.rows("SELECT kind FROM event WHERE incident_id = 1")]
    assert "resolved" not in events, "the outage was resolved while the service was down"


def test_wall_clock_stepping_back_keeps_probing(clock_rig: tuple[Rig, Path]) -> None:
    rig, offset = clock_rig
    offset.write_text("+3600\n")  # the daemon starts an hour ahead; the clock then steps back
    _outage_with_ticket(rig)
    _jump(rig, offset, 0)
    _keeps_probing(rig)
    rig.service.start()
    wait_until(rig.settled, 10, "the resolution")
    assert [t["status"] for t in rig.tickets()] == ["resolved"]


# --- 3. the state directory's disk fills up -------------------------------------------------


@pytest.fixture
def small_state(tmp_path: Path) -> Iterator[Path]:
    """The state directory on a tmpfs of its own, small enough to fill in a moment."""
    mount = tmp_path / "state"
    why = mount_tmpfs(mount, STATE_DISK)
    if why is not None:
        pytest.skip(f"cannot mount a tmpfs for the state directory (needs root): {why}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


STATE_DISK = "8m"
FULL_FOR = 4.0  # seconds the daemon lives with a full disk, watched all along


def _open_incident_of(rig: Rig, rule: str) -> bool:
    return any(i["status"] == "open" for i in rig.incidents(rule))


def _serves_for(rig: Rig, seconds: float) -> None:
    """The same process answers /metrics all along (DaemonProcess fails if it exited)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        assert rig.daemon.metrics(), "no /metrics while the disk is full"
        time.sleep(0.2)


def test_full_state_disk_keeps_serving_and_delivers_once_freed(
    tmp_path: Path, smtp: SmtpTestServer, small_state: Path
) -> None:
    with Rig(tmp_path, smtp, small_state).running(start=True) as rig:
        wait_until(rig.probe_runs, 10, "a first probe run")
        disk = shutil.disk_usage(small_state)
        fill(small_state / "filler-1", leave=disk.total // 50)  # 2 % free: under the 5 % rule
        wait_until(lambda: _open_incident_of(rig, "state_dir_full"), 10, "state_dir_full")
        fill(small_state / "filler-2")  # nothing free
        pid = rig.daemon.proc.pid if rig.daemon.proc else None
        rig.service.stop()  # the outage begins on a full disk
        _serves_for(rig, FULL_FOR)
        assert rig.daemon.proc is not None and rig.daemon.proc.pid == pid
        assert rig.integrity() == "ok"

        (small_state / "filler-2").unlink()
        (small_state / "filler-1").unlink()
        wait_until(lambda: _open_incident_of(rig, RULE) and not rig.pending(), 15,
                   f"the outage's ticket and mails ({rig.daemon.log()})")
        rig.service.start()
        wait_until(rig.settled, 15, f"every incident resolved and told ({rig.daemon.log()})")
    assert rig.integrity() == "ok"
    incidents = rig.rows("SELECT * FROM incident ORDER BY id")
    assert [i["rule"] for i in incidents] == ["state_dir_full", RULE]
    assert [t["marker"] for t in rig.tickets()] == [i["marker"] for i in incidents]
    assert {t["status"] for t in rig.tickets()} == {"resolved"}
    assert audit_mails(rig) == []
    assert [row.key for row in rig.outbox() if row.status != "done"] == []
