"""Help-desk figures as Prometheus metrics, observed as the event log grows.

`forewarn report` computes its figures from the event log (`rules.figures`); this exporter
rebuilds the episodes of each incident the new events touch with the same code and observes
each figure of each episode once, when it first becomes known: time to ticket when the ticket
is created, the resolution counters when it resolves, and so on. A dashboard's `rate()` and
`histogram_quantile()` then tell what the report tells, without reading the state file.

Episodes of symptoms (of another incident) are left out, as in the report. Counters start from
0 at each start of the daemon, as Prometheus counters do; what the log held before is not
observed again, and neither is what became known while the daemon was down.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from monitor import store as st
from monitor.metrics import INCIDENT_TIMES, Metrics
from monitor.report import incident_episodes
from rules.figures import Episode

log = logging.getLogger(__name__)

POLL_EVERY = 2.0  # seconds between reads of the log: one indexed query when nothing happened
BATCH = 5_000  # events per read: a backlog is worked off over several polls
# Memory of what was observed is bounded by time, not by count (an LRU could forget an open
# episode and count it again): an episode is forgotten, and no longer observed, once it has
# been resolved this long. A figure known only a day after the fix (a late user report) is
# left to the report.
RETAIN = 86_400.0
_DURATIONS = tuple(figure for figure in INCIDENT_TIMES if figure != "lead_time")
_STEP = "step:"

EpisodeKey = tuple[int, int]  # (incident id, episode number)


@dataclass(frozen=True)
class _Seen:
    """What was observed of one episode, and when it resolved (to forget it a day later)."""

    marks: frozenset[str]
    resolved_at: float | None


class FigureExporter:
    """Observes the help-desk figures of new events on `metrics`; call `poll` (or `tick`)."""

    def __init__(
        self, store: st.Store, metrics: Metrics, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self._seen: dict[EpisodeKey, _Seen] = {}
        self._polled_at = float("-inf")
        with self._reading() as conn:
            self.cursor = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM event").fetchone()[0])
            self._remember_known(conn)

    def tick(self, now: float) -> None:
        """From the daemon's loop: a poll every POLL_EVERY; a failure is logged and counted,
        and the same events are read again at the next poll."""
        if 0 <= now - self._polled_at < POLL_EVERY:  # a wall clock stepped back polls at once
            return
        self._polled_at = now
        try:
            self.poll()
        except Exception:
            log.exception("could not read the event log for the help-desk figures")
            self.metrics.figure_errors.inc()

    def poll(self) -> int:
        """Observe what the events after the cursor made known; the number of events read."""
        now = self.clock()
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT id, incident_id FROM event WHERE id > ? ORDER BY id LIMIT ?",
                (self.cursor, BATCH),
            ).fetchall()
            for incident_id in sorted({row[1] for row in rows if row[1] is not None}):
                self._observe_all(incident_episodes(conn, incident_id), now)
        if rows:
            self.cursor = int(rows[-1][0])
        self._forget(now)
        return len(rows)

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection in one snapshot, so the daemon's writes never wait on it."""
        conn = st.connect(self.store.path, readonly=True)
        try:
            conn.execute("BEGIN")
            yield conn
        finally:
            conn.close()

    def _remember_known(self, conn: sqlite3.Connection) -> None:
        """At start: what open and recent episodes already show counts as observed."""
        since = self.clock() - RETAIN
        ids = conn.execute(
            "SELECT id FROM incident WHERE status = 'open' OR resolved_at >= ?", (since,)
        ).fetchall()
        for (incident_id,) in ids:
            for ep in _counted(incident_episodes(conn, incident_id), since):
                self._seen[(ep.incident_id, ep.episode)] = _Seen(marks(ep), ep.resolved_at)

    def _observe_all(self, episodes: Iterable[Episode], now: float) -> None:
        for ep in _counted(episodes, now - RETAIN):
            key = (ep.incident_id, ep.episode)
            seen = self._seen.get(key, _Seen(frozenset(), None))
            known = marks(ep)
            for mark in sorted(known - seen.marks):
                self._observe(ep, mark)
            self._seen[key] = _Seen(seen.marks | known, ep.resolved_at)

    def _forget(self, now: float) -> None:
        horizon = now - RETAIN
        self._seen = {
            key: seen
            for key, seen in self._seen.items()
            if seen.resolved_at is None or seen.resolved_at >= horizon
        }

    # --- one figure ------------------------------------------------------------------------

    def _observe(self, ep: Episode, mark: str) -> None:
        m, rule = self.metrics, ep.rule
        if mark in _DURATIONS:
            m.incident_times[mark].observe(getattr(ep, mark))
        elif mark == "episode":
            m.incident_episodes.labels(rule=rule, recurrence=_flag(ep.recurrence)).inc()
        elif mark == "resolved":
            self._resolved(ep)
        elif mark.startswith(_STEP):
            m.escalations_reached.labels(rule=rule, step=mark.removeprefix(_STEP)).inc()
        elif mark == "prediction":
            self._prediction(ep)
        elif mark == "user_report":
            first = "forewarn" if (ep.user_lead or 0.0) > 0 else "user"
            m.user_reports.labels(rule=rule, first=first).inc()

    def _resolved(self, ep: Episode) -> None:
        m = self.metrics
        by = "forewarn" if ep.auto_resolved else "person"
        m.incidents_resolved.labels(rule=ep.rule, by=by).inc()
        # At resolution, as the counter's help says: a later recurrence does not take it back.
        if ep.escalation_step == 0:
            m.incident_tier1.labels(rule=ep.rule).inc()
        if ep.blip:
            m.incident_blips.labels(rule=ep.rule).inc()

    def _prediction(self, ep: Episode) -> None:
        lead = ep.lead_time
        if lead is None:
            outcome = "averted"
        else:
            self.metrics.incident_times["lead_time"].observe(max(0.0, lead))
            outcome = "warned" if lead > 0 else "late"
        self.metrics.predictions.labels(rule=ep.rule, outcome=outcome).inc()


def marks(ep: Episode) -> frozenset[str]:
    """The figures `ep` makes known by now, each named once (an escalation step is `step:N`)."""
    known = {"episode"} | {f for f in _DURATIONS if getattr(ep, f) is not None}
    known |= {f"{_STEP}{step}" for step in range(1, ep.escalation_step + 1)}
    if ep.resolved:
        known.add("resolved")
    if ep.averted or ep.lead_time is not None:
        known.add("prediction")
    if ep.user_reports:
        known.add("user_report")
    return frozenset(known)


def _counted(episodes: Iterable[Episode], horizon: float) -> Iterator[Episode]:
    """The episodes whose figures count: no symptom, none resolved before `horizon`."""
    for ep in episodes:
        if not ep.symptom and (ep.resolved_at is None or ep.resolved_at >= horizon):
            yield ep


def _flag(value: bool) -> str:
    return "true" if value else "false"
