"""The help-desk figures of a real daemon run, against values computed by hand.

`forewarn run` runs as a subprocess with four loopback HTTP services, a loopback exporter of two
queue depths, the built-in help desk, a real SMTP server and the HTTP API. The test scripts
outages, all at once so the run stays short:

- web: goes down; a user's call from a minute before forewarn saw it is recorded through the
  API; a person acknowledges it (CLI) before the first escalation step; it recovers;
- mail: goes down and is not acknowledged: escalation steps 1 and 2 fire; it recovers;
- wiki: goes down, recovers, goes down again within `reopen_within` (a recurrence), recovers;
- files: goes down; users get notices; a user's report after forewarn's ticket is recorded
  (CLI); it recovers;
- queue a: rises towards the predicted level, forewarn warns, the level is reached (impact);
- queue b: rises, forewarn warns, it turns back before the level (averted).

The expected figures are worked out here from the daemon's raw tables (incident, ticket,
outbox, notice, escalation) and the script itself, not from the event log the report reads;
`forewarn report --json`, its text and the HTML report must show exactly those.
"""

from __future__ import annotations

import json
import re
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests
from cli_runner import forewarn
from daemon_process import DaemonProcess, daemon_head, http_down, state_rows, wait_until
from http_service import PROMETHEUS_TEXT, HttpService, QuietHandler, free_port
from smtp_server import SmtpTestServer

from monitor.report import fmt_duration, fmt_part

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

TOKEN = "report-e2e-token-0123456789"
SERVICES = ("web", "mail", "wiki", "files")
LEVEL = 100.0
DETECT_FOR = 2.0  # the http rules' `for`: the time to detect is at least this

CONFIG = """
[helpdesk]
kind = "builtin"
contact = "helpdesk@example.com"

[api]
token = {{ file = "{token_file}" }}

[notices]
update_every = "1h"

[[service]]
name = "files"
title = "the file shares"

[[audience]]
name = "staff"
services = ["files"]
email = ["staff@example.com"]

[[escalation]]
name = "oncall"

[[escalation.step]]
after = "4s"
notify = ["tier1@example.com"]

[[escalation.step]]
after = "7s"
notify = ["tier2@example.com"]

[[probe]]
name = "queues"
kind = "scrape"
interval = "1s"
jitter = "0s"
url = "{queues_url}"

[[rule]]
name = "queue_full_soon"
probe = "queues"
metric = "queue_depth"
condition = "value > 20 and eta < 30"
window = "10s"
predict = {level}
summary = "queue {{{{ labels.queue }}}} will be full"
{services}
"""

# The keys each service's `{name}_down` rule has beyond those of http_down, then its EXTRA.
DOWN_KEYS = """for = "{detect_for}s"
summary = "{name} is not answering"
{extra}
"""

EXTRA = {
    "web": 'escalation = "oncall"',
    "mail": 'escalation = "oncall"',
    "files": 'service = "files"\nnotify_users = true',
    "wiki": "",
}


class Queues(QuietHandler):
    """A Prometheus text endpoint with the queue depths the test sets."""

    depth: ClassVar[dict[str, float]] = {"a": 0.0, "b": 0.0}
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            lines = [f'queue_depth{{queue="{q}"}} {v}' for q, v in self.depth.items()]
        self.reply(200, ("\n".join(lines) + "\n").encode(), PROMETHEUS_TEXT)

    @classmethod
    def set(cls, queue: str, value: float) -> None:
        with cls.lock:
            cls.depth[queue] = value


@dataclass
class Script:
    """What the test did, on its own clock (epoch seconds)."""

    reported: dict[str, float] = field(default_factory=dict)  # user report moments
    level_reached: float | None = None  # when queue a was set past the level


class Rig:
    def __init__(self, tmp: Path, smtp: SmtpTestServer) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.services = {name: HttpService() for name in SERVICES}
        Queues.depth = {"a": 0.0, "b": 0.0}
        self.queues = HttpService(handler=Queues)
        self.port = free_port()
        (tmp / "api-token").write_text(TOKEN + "\n")
        services = "".join(
            http_down(n, s.url, DOWN_KEYS.format(name=n, detect_for=DETECT_FOR, extra=EXTRA[n]))
            for n, s in self.services.items()
        )
        self.config = tmp / "config.toml"
        head = daemon_head(self.state, self.port, smtp_port=smtp.port, reopen_within="30s")
        self.config.write_text(
            head
            + CONFIG.format(
                token_file=tmp / "api-token",
                queues_url=self.queues.url,
                level=LEVEL,
                services=services,
            )
        )
        self.daemon = DaemonProcess(self.config, tmp / "daemon.log", self.port)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return state_rows(self.state, sql, params)

    def incident(self, rule: str) -> sqlite3.Row | None:
        found = self.rows("SELECT * FROM incident WHERE rule = ? ORDER BY id", (rule,))
        return found[-1] if found else None

    def queue_incident(self, queue: str) -> sqlite3.Row | None:
        for row in self.rows("SELECT * FROM incident WHERE rule = 'queue_full_soon'"):
            if json.loads(row["labels"]).get("queue") == queue:
                return row
        return None

    def wait_incident(self, rule: str, status: str = "open", episode: int = 1) -> sqlite3.Row:
        def found() -> sqlite3.Row | None:
            row = self.incident(rule)
            ok = row is not None and row["status"] == status and row["episode"] == episode
            return row if ok else None

        return wait_until(found, 25, f"{rule} {status} (episode {episode}): {self.daemon.log()}")

    def wait_ticket(self, incident_id: int) -> None:
        wait_until(
            lambda: self.rows("SELECT 1 FROM ticket WHERE incident_id = ?", (incident_id,)),
            15,
            f"the ticket of incident {incident_id}",
        )

    def cli(self, *args: str) -> str:
        done = forewarn(*args, "-c", str(self.config))
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with SmtpTestServer() as smtp:
        rig = Rig(tmp_path, smtp)
        with rig.daemon.running(*rig.services.values(), rig.queues):
            yield rig


# --- the script ---------------------------------------------------------------------------


def ramp(queue: str, start: float, step: float, until: float, every: float = 0.5) -> float | None:
    """Raise the queue step by step; the moment it was first set at or past LEVEL, if it was."""
    value, crossed = start, None
    while value < until:
        Queues.set(queue, value)
        if value >= LEVEL and crossed is None:
            crossed = time.time()
        value += step
        time.sleep(every)
    Queues.set(queue, until)
    return crossed


def run_queues(rig: Rig, script: Script) -> None:
    """Queue a climbs past the level; queue b climbs, then drains before reaching it."""
    b = threading.Thread(target=_averted, args=(rig,), daemon=True)
    b.start()
    ramp("a", 30, 2.5, 90)
    warned = wait_until(lambda: rig.queue_incident("a"), 20, "the warning about queue a")
    assert warned["predicted_at"] is not None
    script.level_reached = ramp("a", 90, 2.5, LEVEL + 10)
    time.sleep(2.5)  # the daemon sees it past the level
    Queues.set("a", 0)
    b.join(40)


def _averted(rig: Rig) -> None:
    ramp("b", 30, 2.5, 70)
    wait_until(lambda: rig.queue_incident("b"), 20, "the warning about queue b")
    Queues.set("b", 0)


def run_web(rig: Rig, script: Script) -> None:
    rig.services["web"].stop()
    row = rig.wait_incident("web_down")
    rig.wait_ticket(row["id"])
    # A user called a minute before forewarn opened the incident.
    script.reported["web"] = row["opened_at"] - 60
    body = {"by": "carol", "at": script.reported["web"], "note": "the shop page is blank"}
    sent = requests.post(
        f"http://127.0.0.1:{rig.port}/api/v1/incidents/{row['id']}/user-reports",
        json=body,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert sent.status_code == 201, sent.text
    rig.cli("incidents", "ack", str(row["id"]), "--by", "alice")
    rig.services["web"].start()
    rig.wait_incident("web_down", "resolved")


def run_mail(rig: Rig, script: Script) -> None:
    rig.services["mail"].stop()
    row = rig.wait_incident("mail_down")
    wait_until(
        lambda: rig.rows(
            "SELECT 1 FROM escalation_fired WHERE incident_id=? AND step=1", (row["id"],)
        ),
        20,
        "escalation step 2 of mail",
    )
    rig.services["mail"].start()
    rig.wait_incident("mail_down", "resolved")


def run_wiki(rig: Rig, script: Script) -> None:
    rig.services["wiki"].stop()
    row = rig.wait_incident("wiki_down")
    rig.wait_ticket(row["id"])
    rig.services["wiki"].start()
    rig.wait_incident("wiki_down", "resolved")
    rig.services["wiki"].stop()
    rig.wait_incident("wiki_down", "open", episode=2)
    rig.services["wiki"].start()
    rig.wait_incident("wiki_down", "resolved", episode=2)


def run_files(rig: Rig, script: Script) -> None:
    rig.services["files"].stop()
    row = rig.wait_incident("files_down")
    rig.wait_ticket(row["id"])
    script.reported["files"] = time.time()
    at = datetime.fromtimestamp(script.reported["files"], UTC).isoformat()
    rig.cli("incidents", "report-by-user", str(row["id"]), "--by", "dave", "--at", at)
    time.sleep(1)
    rig.services["files"].start()
    rig.wait_incident("files_down", "resolved")


def run_script(rig: Rig) -> Script:
    script = Script()
    errors: list[BaseException] = []

    def guarded(part: Any) -> None:
        try:
            part(rig, script)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    parts = (run_queues, run_web, run_mail, run_wiki, run_files)
    threads = [threading.Thread(target=guarded, args=(part,)) for part in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if errors:
        raise errors[0]
    wait_until(
        lambda: not rig.rows("SELECT 1 FROM incident WHERE status = 'open'"), 20, "all resolved"
    )
    wait_until(
        lambda: not rig.rows("SELECT 1 FROM outbox WHERE status = 'pending'"), 20, "all delivered"
    )
    return script


# --- the figures, by hand -----------------------------------------------------------------


@dataclass(frozen=True)
class Outage:
    """One episode as the raw tables tell it."""

    incident: int
    rule: str
    episode: int
    opened: float
    ticket: float
    resolved: float


def outages(rig: Rig) -> list[Outage]:
    """Each episode from its ticket operations in the outbox: created (or reopened) when it
    opened, delivered when the help desk had it, resolved when it ended."""
    found = []
    for row in rig.rows("SELECT id, rule, episode FROM incident ORDER BY id"):
        for episode in range(1, row["episode"] + 1):
            prefix = f"incident:{row['id']}:episode:{episode}:"
            ops = {
                r["op"]: r
                for r in rig.rows(
                    "SELECT op, created_at, done_at FROM outbox WHERE key LIKE ?",
                    (prefix + "ticket.%",),
                )
            }
            start = ops["ticket.create"] if episode == 1 else ops["ticket.reopen"]
            found.append(
                Outage(
                    row["id"],
                    row["rule"],
                    episode,
                    start["created_at"],
                    start["done_at"],
                    ops["ticket.resolve"]["created_at"],
                )
            )
    return found


def first_notice(rig: Rig, outage: Outage) -> float | None:
    key = f"notice:incident:{outage.incident}:{outage.episode}:%"
    [row] = rig.rows("SELECT MIN(done_at) AS at FROM outbox WHERE key LIKE ?", (key,))
    return None if row["at"] is None else row["at"] - outage.opened


def opening_detail(rig: Rig, incident: int, kind: str) -> dict[str, Any]:
    [row] = rig.rows(
        "SELECT detail FROM event WHERE incident_id = ? AND kind = ? ORDER BY id LIMIT 1",
        (incident, kind),
    )
    return dict(json.loads(row["detail"]))


def close(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) < 1e-6


# --- the test ------------------------------------------------------------------------------


def test_the_report_of_a_scripted_run_matches_the_figures_worked_out_by_hand(
    rig: Rig, tmp_path: Path
) -> None:
    wait_until(lambda: "forewarn_http_up{" in (rig.daemon.metrics() or ""), 15, "a probe run")
    script = run_script(rig)
    eps = outages(rig)
    by_rule = {(o.rule, o.episode): o for o in eps}
    queue_a, queue_b = rig.queue_incident("a"), rig.queue_incident("b")
    assert queue_a is not None and queue_b is not None
    web, files = rig.incident("web_down"), rig.incident("files_down")
    assert web is not None and files is not None

    # The script, as the raw tables tell it: 6 incidents, one of them twice.
    assert sorted((o.rule, o.episode) for o in eps) == sorted(
        [
            ("web_down", 1),
            ("mail_down", 1),
            ("wiki_down", 1),
            ("wiki_down", 2),
            ("files_down", 1),
            ("queue_full_soon", 1),
            ("queue_full_soon", 1),
        ]
    )
    mail = by_rule[("mail_down", 1)]
    steps = [
        r["step"]
        for r in rig.rows(
            "SELECT step FROM escalation_fired WHERE incident_id = ? ORDER BY step",
            (mail.incident,),
        )
    ]
    assert steps == [0, 1], "mail escalated through both steps"
    assert not rig.rows(
        "SELECT 1 FROM escalation_fired WHERE incident_id != ?", (mail.incident,)
    ), "web was acknowledged before its first step; the others have no policy"

    resolve = [o.resolved - o.opened for o in eps]
    ticket = [o.ticket - o.opened for o in eps]
    acknowledge = web["acknowledged_at"] - web["opened_at"]
    notice_times = [t for t in (first_notice(rig, o) for o in eps) if t is not None]
    notices = rig.rows("SELECT COUNT(*) AS n FROM notice WHERE audience != '@ticket'")[0]["n"]
    impact = [
        r["at"]
        for r in rig.rows(
            "SELECT at FROM event WHERE kind = 'impact' AND incident_id = ?", (queue_a["id"],)
        )
    ]
    assert len(impact) == 1 and not rig.rows(
        "SELECT 1 FROM event WHERE kind = 'impact' AND incident_id != ?", (queue_a["id"],)
    ), "only queue a reached the level"
    assert script.level_reached is not None
    # The daemon saw the level within a scrape of the test setting it.
    assert script.level_reached - 0.1 <= impact[0] <= script.level_reached + 2.0
    lead = impact[0] - queue_a["opened_at"]
    assert lead > 0, "the warning came before the level was reached"
    detects = []
    for o in eps:
        kind = "opened" if o.episode == 1 else "reopened"
        detail = (
            opening_detail(rig, o.incident, kind)
            if o.episode == 1
            else [
                json.loads(r["detail"])
                for r in rig.rows(
                    "SELECT detail FROM event WHERE incident_id=? AND kind='reopened'",
                    (o.incident,),
                )
            ][o.episode - 2]
        )
        detect = o.opened - detail["since"]
        floor = 0.0 if o.rule == "queue_full_soon" else DETECT_FOR
        assert floor <= detect <= floor + 1.6, (o, detect)
        detects.append(detect)

    report = json.loads(rig.cli("report", "--since", "1h", "--json"))
    r, t, p = report["rates"], report["times"], report["proactive"]
    assert (r["incidents"], r["new"], r["recurrences"], r["open"]) == (7, 6, 1, 0)
    assert (r["resolved"], r["auto_resolved"]) == (7, 7)
    assert (r["escalated"], r["step2"]) == (1, 1)
    # Tier 1: all but mail (escalated) and wiki's first episode (it came back).
    assert r["tier1"] == 5
    assert r["reopen_rate"] == pytest.approx(1 / 7)
    assert r["notices"] == notices and r["notices_per_incident"] == pytest.approx(notices / 7)
    assert close(t["resolve"]["median"], statistics.median(resolve))
    assert close(t["resolve"]["mean"], statistics.fmean(resolve))
    assert close(t["ticket"]["median"], statistics.median(ticket))
    assert close(t["ticket"]["max"], max(ticket))
    assert t["acknowledge"]["count"] == 1 and close(t["acknowledge"]["mean"], acknowledge)
    assert t["first_notice"]["count"] == len(notice_times) == 1
    assert close(t["first_notice"]["mean"], notice_times[0])
    assert t["detect"]["count"] == 7 and close(t["detect"]["median"], statistics.median(detects))
    assert (p["predicted"], p["averted"], p["warned_before_impact"]) == (2, 1, 1)
    assert p["lead_time"]["count"] == 1 and close(p["lead_time"]["median"], lead)
    assert (p["user_reported"], p["detected_before_user"]) == (2, 1)
    user_leads = sorted(
        [script.reported["web"] - web["opened_at"], script.reported["files"] - files["opened_at"]]
    )
    assert close(p["user_lead"]["min"], user_leads[0])  # web's caller was 60 s ahead
    assert close(p["user_lead"]["max"], user_leads[1])
    assert (p["caught_first"], p["judged"]) == (3, 4)  # a, b (averted), files; not web

    headline = report["headline"]
    assert headline["tier-1 resolution"] == fmt_part(5, 7)
    assert headline["escalated"] == fmt_part(1, 7)
    assert headline["caught before users"] == fmt_part(3, 4)
    assert headline["median lead time"] == fmt_duration(lead)
    assert headline["mean time to acknowledge"] == fmt_duration(acknowledge)

    # /metrics counted the same figures as they happened.
    def sample(name: str) -> float | None:
        found = re.search(rf"^{re.escape(name)} (\S+)$", rig.daemon.metrics() or "", re.M)
        return float(found.group(1)) if found else None

    wait_until(
        lambda: sample("forewarn_incident_time_to_resolve_seconds_count") == 7, 10, "metrics"
    )
    assert abs((sample("forewarn_incident_time_to_resolve_seconds_sum") or 0) - sum(resolve)) < 1e-6
    assert sample("forewarn_incident_time_to_acknowledge_seconds_count") == 1
    assert sample('forewarn_predictions_total{outcome="averted",rule="queue_full_soon"}') == 1
    assert sample('forewarn_incident_escalations_reached_total{rule="mail_down",step="2"}') == 1
    assert sample('forewarn_user_reports_total{first="user",rule="web_down"}') == 1

    # The terminal summary and the HTML report show the same figures as the JSON.
    html = tmp_path / "report.html"
    text = rig.cli("report", "--since", "1h", "--html", str(html))
    page = html.read_text()
    for label, value in headline.items():
        assert re.search(rf"^  {re.escape(label)} +{re.escape(value)}$", text, re.M) or (
            label.startswith(("median ", "mean "))
        ), (label, value, text)
        assert _figure(page, label) == value, label
    print("\n" + text)


def _figure(page: str, label: str) -> str | None:
    """The value the HTML report shows for `label` (its `.figure` element)."""
    import html as markup

    found = re.search(
        rf'data-label="{re.escape(markup.escape(label))}".*?class="value">(.*?)</span>',
        page,
        re.S,
    )
    return markup.unescape(found.group(1)).strip() if found else None
