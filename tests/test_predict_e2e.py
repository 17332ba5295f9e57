"""The disk-filling scenario through the real daemon: a file written at a steady rate into a
small tmpfs opens a "will be full" ticket before the disk passes the predicted level.

`forewarn run` runs as a subprocess with a disk probe on the tmpfs only (every second) and a
predictive rule; the test writes 1 MiB every 0.25 s, measures the disk usage itself after each
write, and compares when the ticket appeared in the built-in store with when the usage passed
the level the rule predicts. The printed `lead_time` is the figure quoted in the notes.

Needs root (or CAP_SYS_ADMIN) to mount the tmpfs: skipped with the reason otherwise, failed
under CI=true (see conftest.py).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon_process import DaemonProcess, daemon_head, wait_until
from http_service import free_port

from notifiers.builtin import BuiltinTickets, Ticket
from notifiers.render import format_datetime

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

SIZE_MIB = 64
CHUNK = 1 << 20
WRITE_EVERY = 0.25  # seconds: 4 MiB/s, about 6 % of the disk per second
LEVEL = 95.0  # the rule's `predict`: the level the ticket warns about
DEADLINE = 30.0  # seconds of writing at most; the disk is full after about 16

CONFIG = """
[helpdesk]
kind = "builtin"

[[probe]]
name = "scratch"
kind = "disk"
interval = "1s"
jitter = "0s"
mountpoints = ["{mount}"]
stat_timeout = "500ms"

[[rule]]
name = "disk_will_be_full"
probe = "scratch"
metric = "disk_used_percent"
condition = "value > 30 and eta < 60"
window = "20s"
predict = {level}
for = "2s"
category = "storage"
summary = "{{{{ labels.mountpoint }}}} will be full in {{{{ eta|int }}}} s"
"""


@dataclass
class Filling:
    """What the test saw while writing: monotonic and wall times of the two events."""

    ticket_at: float | None = None  # monotonic
    crossed_at: float | None = None  # monotonic
    crossed_wall: float | None = None  # epoch seconds, to compare with the prediction
    written_mib: int = 0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "scratch"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


@pytest.fixture
def daemon(tmp_path: Path, tmpfs: Path) -> Iterator[DaemonProcess]:
    port = free_port()
    config = tmp_path / "config.toml"
    state = tmp_path / "state"
    config.write_text(daemon_head(state, port) + CONFIG.format(mount=tmpfs, level=LEVEL))
    process = DaemonProcess(config, tmp_path / "daemon.log", port)
    process.start()
    try:
        yield process
    finally:
        code = process.stop()
        assert code == 0, process.log()


def used_percent(mount: Path) -> float:
    """As the disk probe computes it (as df does)."""
    fs = os.statvfs(mount)
    used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    free = fs.f_bavail * fs.f_frsize
    return 100.0 * used / (used + free)


def tickets(state: Path) -> list[Ticket]:
    db = state / "forewarn.db"
    return BuiltinTickets(str(db)).list_tickets() if db.exists() else []


def fill(mount: Path, state: Path) -> Filling:
    """Write at a steady rate until both the ticket and the crossing were seen, or time is up."""
    seen = Filling()
    chunk = b"\0" * CHUNK
    start = time.monotonic()
    next_write = start
    with open(mount / "growing.dat", "wb", buffering=0) as out:
        while time.monotonic() - start < DEADLINE:
            now = time.monotonic()
            if now >= next_write and seen.crossed_at is None:
                out.write(chunk)
                seen.written_mib += 1
                next_write += WRITE_EVERY
                if used_percent(mount) >= LEVEL:
                    seen.crossed_at, seen.crossed_wall = time.monotonic(), time.time()
            if seen.ticket_at is None and tickets(state):
                seen.ticket_at = time.monotonic()
            if seen.ticket_at is not None and seen.crossed_at is not None:
                return seen
            time.sleep(0.02)
    return seen


def predicted_at(state: Path) -> float | None:
    with sqlite3.connect(state / "forewarn.db") as conn:
        row = conn.execute("SELECT predicted_at FROM incident ORDER BY id LIMIT 1").fetchone()
    return row[0] if row else None


def test_steady_filling_opens_a_will_be_full_ticket_before_the_level(
    daemon: DaemonProcess, tmpfs: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    wait_until(lambda: "forewarn_disk_used_percent{" in (daemon.metrics() or ""), 10, "a probe run")

    seen = fill(tmpfs, state)

    assert seen.crossed_at is not None, f"only {seen.written_mib} MiB written before the deadline"
    assert seen.ticket_at is not None, f"no ticket by the deadline: {daemon.log()}"
    lead_time = seen.crossed_at - seen.ticket_at
    print(f"\nlead_time {lead_time:.2f} s")
    assert lead_time > 0, f"the ticket came {-lead_time:.2f} s after the disk passed {LEVEL} %"

    [ticket] = tickets(state)
    assert f"{tmpfs} will be full in" in ticket.subject
    predicted = predicted_at(state)
    assert predicted is not None, "the incident has no predicted time of impact"
    assert seen.crossed_wall is not None
    print(f"prediction_error {predicted - seen.crossed_wall:+.2f} s")
    # The least-squares line over 20 s at a steady rate: right within a few seconds.
    assert abs(predicted - seen.crossed_wall) < 10, (predicted, seen.crossed_wall)
    body = BuiltinTickets(str(state / "forewarn.db")).show(ticket.number).body
    [trend] = [line for line in body.splitlines() if line.strip().startswith("Trend:")]
    assert f"reaches {LEVEL:g} at {format_datetime(predicted)}" in trend, body
