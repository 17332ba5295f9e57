"""A rig for fault-injection tests (tests/test_faults_crash.py): the real daemon probing a
loopback HTTP service, the built-in help desk and a real SMTP server, and read-only looks at
the state file to count what was promised (outbox) against what arrived (tickets, mails).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from daemon_process import ServiceRig, builtin_desk, http_down, metric_value
from smtp_server import SmtpTestServer

from monitor.dispatcher import _message_id

HOSTNAME = "testhost"
RULE = "intranet_down"

# The keys of intranet_down beyond those of http_down.
RULE_KEYS = """severity = "critical"
service = "the intranet"
summary = "The intranet is not answering"
notify_users = true
# every outage of the test is its own episode, however close the next one follows
flap_detection = false
"""


@dataclass(frozen=True)
class Delivery:
    """One outbox row as the test audits it."""

    key: str
    incident_id: int | None
    op: str
    status: str
    attempts: int


def daemon_config(url: str) -> str:
    """The built-in help desk and the intranet's probe and rule, for the intranet at `url`."""
    return builtin_desk() + http_down("intranet", url, RULE_KEYS)


class Rig(ServiceRig):
    """The daemon, its service, its mail server and its state directory, for one test."""

    def __init__(
        self,
        tmp: Path,
        smtp: SmtpTestServer,
        state: Path,
        *,
        env: dict[str, str] | None = None,
        **daemon_keys: str,
    ) -> None:
        super().__init__(tmp, daemon_config, state=state, env=env, hostname=HOSTNAME,
                         smtp_port=smtp.port, **daemon_keys)
        self.smtp = smtp

    def incidents(self, rule: str = RULE) -> list[sqlite3.Row]:
        return self.rows("SELECT * FROM incident WHERE rule = ? ORDER BY id", (rule,))

    def tickets(self) -> list[sqlite3.Row]:
        """The built-in help desk's tickets, oldest first."""
        return self.rows("SELECT * FROM bt_ticket ORDER BY id")

    def outbox(self) -> list[Delivery]:
        return [
            Delivery(r["key"], r["incident_id"], r["op"], r["status"], r["attempts"])
            for r in self.rows("SELECT * FROM outbox ORDER BY id")
        ]

    def pending(self) -> list[Delivery]:
        return [row for row in self.outbox() if row.status != "done"]

    def settled(self) -> bool:
        """The outage recorded, every incident (of any rule) resolved, its users told (the
        notices are planned once a tick, after the resolution) and nothing left to deliver."""
        incidents = self.rows("SELECT rule, status FROM incident")
        seen = any(i["rule"] == RULE for i in incidents)
        resolved = all(i["status"] == "resolved" for i in incidents)
        return seen and resolved and not self.untold_ends() and not self.pending()

    def untold_ends(self) -> list[sqlite3.Row]:
        """Notices of resolved incidents that their audience has not yet been told ended."""
        return self.rows(
            "SELECT n.* FROM notice n JOIN incident i ON i.id = n.incident_id"
            " AND i.episode = n.episode WHERE i.status = 'resolved' AND n.audience != '@ticket'"
            " AND NOT EXISTS"
            " (SELECT 1 FROM notice r WHERE r.subject = n.subject AND r.audience = n.audience"
            " AND r.kind = 'resolved')"
        )

    def metric_value(self, name: str) -> float | None:
        """The value of an unlabelled line of /metrics, e.g. `forewarn_outbox_dead`."""
        return metric_value(self.daemon.metrics() or "", name + " ")

    def probe_runs(self) -> float:
        """How many runs of the probe /metrics has counted (the duration histogram's count)."""
        prefix = 'forewarn_probe_duration_seconds_count{kind="http",probe="intranet"} '
        return metric_value(self.daemon.metrics() or "", prefix) or 0.0

    def integrity(self) -> str:
        return str(self.rows("PRAGMA integrity_check")[0][0])


def audit_mails(rig: Rig) -> list[str]:
    """What is wrong with the mails: every `email.send` row of the outbox arrived (its
    Message-ID is derived from its key), nothing else arrived, and nothing twice, except in
    the window the README admits (killed after the server took the mail, before the row was
    marked done: then the row shows a second attempt and the copy has the same Message-ID)."""
    expected = {
        _message_id(row.key, HOSTNAME): row for row in rig.outbox() if row.op == "email.send"
    }
    received = Counter(str(mail.message["Message-ID"]) for mail in rig.smtp.received)
    problems = [f"never arrived: {expected[mid].key}" for mid in expected if mid not in received]
    problems += [f"not in the outbox: {mid}" for mid in received if mid not in expected]
    problems += [
        f"arrived {count} times: {expected[mid].key} ({expected[mid].attempts} attempts)"
        for mid, count in received.items()
        if mid in expected and count > min(2, expected[mid].attempts)
    ]
    return problems


def resends(rig: Rig) -> int:
    """Mails that arrived twice (the admitted window), for the printed figures."""
    received = Counter(str(mail.message["Message-ID"]) for mail in rig.smtp.received)
    return sum(count - 1 for count in received.values())


def mount_tmpfs(mount: Path, size: str) -> str | None:
    """Mount a tmpfs of `size` on `mount`: None when done, else why not (needs root)."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    return None if done.returncode == 0 else done.stderr.strip() or "mount failed"


def fill(path: Path, leave: int = 0) -> int:
    """Write `path` until its file system has about `leave` bytes free (0: until ENOSPC);
    returns the bytes written."""
    written = 0
    with open(path, "ab", buffering=0) as out:
        while True:
            free = _free(path.parent)
            chunk = min(1 << 16, free - leave) if leave else 1 << 16
            if chunk <= 0:
                return written
            try:
                written += out.write(b"\0" * chunk)
            except OSError:  # ENOSPC: full
                return written


def _free(directory: Path) -> int:
    fs = os.statvfs(directory)
    return fs.f_bavail * fs.f_frsize
