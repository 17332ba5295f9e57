"""The status page: what end users see of forewarn's incidents and maintenance, as one view.

`build_view` reads the state store and the config once and returns a JSON-serialisable dict;
the HTML page (`notifiers/templates/status/page.html.j2`), `/status.json` and the Atom feed
are all made from that one dict, so they always agree.

What it shows:
- components: the services of `[[service]]`, then every other `service` a rule or an
  announced maintenance window names, each in one state. A component's state is the worst of
  its open, unmuted incidents (root causes and symptoms alike: a symptom's service is
  affected all the same): critical -> major_outage, but partial_outage while that problem is
  intermittent (it comes and goes, so the service works part of the time); any other
  severity -> degraded. With no such incident, an announced maintenance window naming the
  service and in progress -> maintenance; else operational.
- incidents: the open, unmuted root causes (not symptoms) of user-facing rules (a `service`
  or `notify_users`), and those resolved so recently that they are still in "monitoring".
- history: the ones resolved within `[status] history`, newest first, except episodes that
  were muted all along (their users were never told).
- maintenance: windows announced to users (`announce_before` > 0 or `services`), in progress
  or starting within `[status] upcoming` (the next occurrence of each).

Only an incident's latest episode is shown: a recurrence inside `reopen_within` replaces the
earlier episode on the page, as it reuses the ticket. Times are ISO 8601 in UTC
("2026-11-22T07:30:00Z"), durations whole seconds. Sentences and labels are in English; a
sysadmin translates the page by overriding its template. `incident.summary` is the technical
one-liner of the ticket and quotes probe output: untrusted, so only ever rendered escaped.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from monitor.config import Config
from monitor.store import Store
from notifiers.render import Renderer
from rules.model import Rule, Severity
from rules.notices import Cadence, IncidentFacts, NoticeKind, current_phase
from rules.silences import MaintenanceWindow, covering, next_start

log = logging.getLogger(__name__)

__all__ = ["STATES", "atom_feed", "build_view", "iso", "render_page"]

# Component and page states, best to worst: the page shows the worst.
STATES = ("operational", "maintenance", "degraded", "partial_outage", "major_outage")
STATE_LABELS = {
    "operational": "Operational",
    "maintenance": "Under maintenance",
    "degraded": "Degraded performance",
    "partial_outage": "Partial outage",
    "major_outage": "Major outage",
}
PHASE_LABELS = {
    NoticeKind.INVESTIGATING: "Investigating",
    NoticeKind.IDENTIFIED: "Identified",
    NoticeKind.UPDATE: "Update",
    NoticeKind.MONITORING: "Monitoring",
    NoticeKind.RESOLVED: "Resolved",
    NoticeKind.SCHEDULED: "Scheduled",
    NoticeKind.IN_PROGRESS: "In progress",
    NoticeKind.COMPLETED: "Completed",
}
PAGE_TEMPLATE = "status/page.html.j2"
DAY = 86400.0
LINKS = {"json": "status.json", "atom": "status.atom"}  # relative: right behind a proxy prefix


def build_view(store: Store, config: Config, now: float) -> dict[str, Any]:
    """Everything the status page shows at `now` (see the module docstring)."""
    language = config.comms.notices.language
    windows = _announced(config.maintenance)
    services = _service_names(config, windows)
    titles = {name: config.comms.service(name).title_in(language) for name in services}
    shown, history = _incidents(store, config, titles, now)
    maintenance = _maintenance(windows, titles, float(config.comms.status.upcoming), now)
    components = _components(store, config, services, windows, now)
    return {
        "title": config.comms.status.title,
        "host": config.daemon.hostname,
        "language": language,
        "generated_at": iso(now),
        "overall": _overall(components, shown),
        "components": components,
        "incidents": shown,
        "history": history,
        "history_period": _period(float(config.comms.status.history)),
        "maintenance": maintenance,
        "links": {"page": config.comms.notices.status_url or "status", **LINKS},
    }


def _period(seconds: float) -> str:
    """How far back the history looks, as people say it: "7 days", "1 day", "12 hours"."""
    unit, size = ("day", DAY) if seconds >= DAY else ("hour", 3600.0)
    count = max(round(seconds / size), 1)
    return f"{count} {unit}" + ("" if count == 1 else "s")


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC to the second: "2026-11-22T07:30:00Z"."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- components ----------------------------------------------------------------------------------


def _announced(windows: Iterable[MaintenanceWindow]) -> list[MaintenanceWindow]:
    return [w for w in windows if w.announce_before > 0 or w.services]


def _service_names(config: Config, windows: list[MaintenanceWindow]) -> list[str]:
    """[[service]] in file order, then services only rules or windows name (deduplicated)."""
    named = [s.name for s in config.comms.services]
    named += [rule.service for rule in config.rules]
    named += [service for window in windows for service in window.services]
    return list(dict.fromkeys(name for name in named if name))


def _components(
    store: Store, config: Config, names: list[str], windows: list[MaintenanceWindow], now: float
) -> list[dict[str, Any]]:
    language = config.comms.notices.language
    troubled = _service_states(store)
    in_maintenance = {s for w in windows if covering(w, now) is not None for s in w.services}
    components = []
    for name in names:
        service = config.comms.service(name)
        state = troubled.get(name) or ("maintenance" if name in in_maintenance else "operational")
        components.append(
            {
                "name": name,
                "title": service.title_in(language),
                "description": service.description.get(language),
                "state": state,
                "state_label": STATE_LABELS[state],
            }
        )
    return components


def _service_states(store: Store) -> dict[str, str]:
    """The worst state of each service that has open, unmuted incidents."""
    rows = store.query(
        "SELECT service, severity, intermittent FROM incident"
        " WHERE status = 'open' AND muted = 0 AND service != ''"
    )
    states: dict[str, str] = {}
    for row in rows:
        state = _impact(row["severity"], bool(row["intermittent"]))
        states[row["service"]] = _worst([states.get(row["service"], "operational"), state])
    return states


def _impact(severity: int, intermittent: bool) -> str:
    if severity < Severity.CRITICAL:
        return "degraded"
    return "partial_outage" if intermittent else "major_outage"


def _worst(states: Iterable[str]) -> str:
    return max(states, key=STATES.index, default="operational")


def _overall(components: list[dict[str, Any]], incidents: list[dict[str, Any]]) -> dict[str, Any]:
    # An open incident without a service (a notify_users rule) weighs on the page as well.
    loose = [i["impact"] for i in incidents if i["service"] is None and i["resolved_at"] is None]
    state = _worst([c["state"] for c in components] + loose)
    affected = [c["title"] for c in components if c["state"] == state]
    return {"state": state, "label": STATE_LABELS[state], "sentence": _sentence(state, affected)}


def _sentence(state: str, affected: list[str]) -> str:
    if state == "operational":
        return "All systems are operational."
    who = _join(affected) if affected else "Some services"
    verb = "is" if len(affected) == 1 else "are"
    return {
        "maintenance": f"{who} {verb} under scheduled maintenance.",
        "degraded": f"{who} {verb} slower or less reliable than usual.",
        "partial_outage": f"{who} {verb} partly unavailable.",
        "major_outage": f"{who} {verb} unavailable.",
    }[state]


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# --- incidents -----------------------------------------------------------------------------------


def _incidents(
    store: Store, config: Config, titles: dict[str, str], now: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(current, history): what is open or still monitored, and what was resolved since."""
    rules = {rule.name: rule for rule in config.rules}
    since = now - float(config.comms.status.history)
    current: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    for row in _candidates(store, since):
        rule = rules.get(row["rule"])
        if not (row["service"] or (rule is not None and rule.notify_users)):
            continue  # not user-facing: it stays between the machine and the help desk
        item = _incident(store, config, row, rule, titles, now)
        (history if item["phase"] == NoticeKind.RESOLVED else current).append(item)
    current.sort(key=lambda item: item["started_at"], reverse=True)
    history.sort(key=lambda item: item["resolved_at"], reverse=True)
    return current, history


def _candidates(store: Store, since: float) -> list[sqlite3.Row]:
    """Root causes open and unmuted, or resolved after `since` from an episode users saw."""
    return store.query(
        "SELECT * FROM incident i WHERE parent_id IS NULL AND ("
        " (status = 'open' AND muted = 0) OR (status = 'resolved' AND resolved_at >= ?"
        "  AND NOT EXISTS (SELECT 1 FROM event e WHERE e.incident_id = i.id"
        "   AND e.kind = 'resolved' AND e.at = i.resolved_at"
        "   AND json_extract(e.detail, '$.silent'))))",
        (since,),
    )


def _incident(
    store: Store,
    config: Config,
    row: sqlite3.Row,
    rule: Rule | None,
    titles: dict[str, str],
    now: float,
) -> dict[str, Any]:
    language = config.comms.notices.language
    notice = _latest_notice(store, row["id"], row["episode"])
    phase = _phase(row, rule, notice, config.comms.notices.cadence, now)
    service, impact = row["service"], _impact(row["severity"], bool(row["intermittent"]))
    end = row["resolved_at"] if row["resolved_at"] is not None else now
    return {
        "id": row["id"],
        "episode": row["episode"],
        "title": _title(row, rule, titles, language),
        "service": {"name": service, "title": titles.get(service, service)} if service else None,
        "impact": impact,
        "impact_label": STATE_LABELS[impact],
        "phase": str(phase),
        "phase_label": PHASE_LABELS[phase],
        "started_at": iso(row["opened_at"]),
        "resolved_at": iso(row["resolved_at"]),
        "duration": round(max(0.0, end - row["opened_at"])),
        "updated_at": iso(_last_change(row, notice)),
        "workaround": rule.workaround.get(language) if rule is not None else "",
        "notice": _notice_view(notice),
        "summary": row["summary"],
    }


def _title(row: sqlite3.Row, rule: Rule | None, titles: dict[str, str], language: str) -> str:
    impact = rule.user_impact.get(language) if rule is not None else ""
    if impact:
        return impact
    service = titles.get(row["service"], row["service"]) or "A service some users need"
    return service + {
        "major_outage": " is unavailable",
        "partial_outage": " is partly unavailable",
        "degraded": " is having problems",
    }[_impact(row["severity"], bool(row["intermittent"]))]


def _latest_notice(store: Store, incident_id: int, episode: int) -> sqlite3.Row | None:
    """The latest notice users got of this episode ('@ticket' records ticket comments)."""
    rows = store.query(
        "SELECT kind, at, eta_at, next_update_at FROM notice WHERE incident_id = ?"
        " AND episode = ? AND audience != '@ticket' ORDER BY at DESC, id DESC LIMIT 1",
        (incident_id, episode),
    )
    return rows[0] if rows else None


def _phase(
    row: sqlite3.Row, rule: Rule | None, notice: sqlite3.Row | None, cadence: Cadence, now: float
) -> NoticeKind:
    facts = IncidentFacts(
        open=row["status"] == "open",
        opened_at=row["opened_at"],
        speaks_at=row["opened_at"] + (rule.group_wait if rule is not None else 0.0),
        resolved_at=row["resolved_at"],
        acknowledged=row["acknowledged_at"] is not None,
        eta_at=notice["eta_at"] if notice is not None else None,
    )
    return current_phase(facts, cadence, now)


def _last_change(row: sqlite3.Row, notice: sqlite3.Row | None) -> float:
    times = [row["opened_at"], row["resolved_at"], row["acknowledged_at"]]
    times.append(notice["at"] if notice is not None else None)
    return max(t for t in times if t is not None)


def _notice_view(notice: sqlite3.Row | None) -> dict[str, Any] | None:
    if notice is None:
        return None
    kind = NoticeKind(notice["kind"])
    return {
        "kind": str(kind),
        "kind_label": PHASE_LABELS[kind],
        "at": iso(notice["at"]),
        "eta_at": iso(notice["eta_at"]),
        "next_update_at": iso(notice["next_update_at"]),
    }


# --- maintenance ---------------------------------------------------------------------------------


def _maintenance(
    windows: list[MaintenanceWindow], titles: dict[str, str], upcoming: float, now: float
) -> list[dict[str, Any]]:
    """In progress first, then upcoming, each by start time."""
    items = []
    for window in windows:
        occurrence = covering(window, now)
        if occurrence is not None:
            items.append(_occurrence(window, occurrence, NoticeKind.IN_PROGRESS, titles))
        start = next_start(window, now)
        if start is not None and start <= now + upcoming:
            announced = max(start - upcoming, 0.0)  # when it first appeared on the page
            end = start + window.duration
            item = _occurrence(window, (start, end), NoticeKind.SCHEDULED, titles, announced)
            items.append(item)
    items.sort(key=lambda item: (item["phase"] != NoticeKind.IN_PROGRESS, item["start"]))
    return items


def _occurrence(
    window: MaintenanceWindow,
    span: tuple[float, float],
    phase: NoticeKind,
    titles: dict[str, str],
    announced: float | None = None,
) -> dict[str, Any]:
    services = [{"name": name, "title": titles.get(name, name)} for name in window.services]
    fallback = "Maintenance of " + _join([s["title"] for s in services]) if services else ""
    return {
        "id": f"{window.name}/{int(span[0])}",
        "name": window.name,
        "title": window.title or fallback or "Scheduled maintenance",
        "description": window.description,
        "phase": str(phase),
        "phase_label": PHASE_LABELS[phase],
        "start": iso(span[0]),
        "end": iso(span[1]),
        "services": services,
        "updated_at": iso(span[0] if announced is None else announced),
    }


# --- the page and the feed -----------------------------------------------------------------------


def render_page(view: dict[str, Any], renderer: Renderer) -> str:
    """The HTML page of a view, through a `notifiers.render.Renderer` (sandboxed, escaped)."""
    return renderer.render_text(PAGE_TEMPLATE, view)


def atom_feed(view: dict[str, Any]) -> bytes:
    """The Atom feed of a view: one entry per incident (current and history) and per
    maintenance occurrence. Entry ids are tag: URIs that stay the same for the same incident
    episode or occurrence, so feed readers see updates, not new entries."""
    from feedgen.feed import FeedGenerator  # only when asked: it loads lxml

    feed = FeedGenerator()
    host = view["host"]
    feed.id(f"tag:{host},2025:forewarn/status")
    feed.title(view["title"])
    feed.author({"name": view["title"]})
    feed.link(href=view["links"]["page"], rel="alternate", type="text/html")
    feed.language(view["language"])
    feed.generator("forewarn")
    entries = [_incident_entry(i, view) for i in view["incidents"] + view["history"]]
    entries += [_maintenance_entry(m, view) for m in view["maintenance"]]
    for entry in entries:
        _add_entry(feed, entry)
    feed.updated(max([e["updated"] for e in entries], default=view["generated_at"]))
    return bytes(feed.atom_str(pretty=True))


def _add_entry(feed: Any, entry: dict[str, Any]) -> None:
    item = feed.add_entry(order="append")
    item.id(entry["id"])
    item.title(entry["title"])
    item.updated(entry["updated"])
    item.published(entry["published"])
    item.link(href=entry["link"], rel="alternate", type="text/html")
    item.content(entry["content"], type="text")


def _incident_entry(incident: dict[str, Any], view: dict[str, Any]) -> dict[str, Any]:
    day = incident["started_at"][:10]
    lines = [f"{incident['phase_label']}: {incident['title']}."]
    lines.append(f"Started {_readable(incident['started_at'])}.")
    if incident["resolved_at"]:
        lines.append(f"Resolved {_readable(incident['resolved_at'])}.")
    notice = incident["notice"] or {}
    if notice.get("eta_at") and not incident["resolved_at"]:
        lines.append(f"Expected fix: {_readable(notice['eta_at'])}.")
    if incident["workaround"]:
        lines.append(f"Workaround: {incident['workaround']}")
    lines.append(f"Technical detail: {incident['summary']}")
    return {
        "id": f"tag:{view['host']},{day}:forewarn/incident/{incident['id']}/{incident['episode']}",
        "title": f"[{incident['phase_label']}] {incident['title']}",
        "updated": incident["updated_at"],
        "published": incident["started_at"],
        "link": f"{view['links']['page']}#incident-{incident['id']}",
        "content": "\n".join(lines),
    }


def _maintenance_entry(item: dict[str, Any], view: dict[str, Any]) -> dict[str, Any]:
    span = f"From {_readable(item['start'])} to {_readable(item['end'])}."
    return {
        "id": f"tag:{view['host']},{item['start'][:10]}:forewarn/maintenance/{item['id']}",
        "title": f"[{item['phase_label']}] {item['title']}",
        "updated": item["updated_at"],
        "published": item["updated_at"],
        "link": f"{view['links']['page']}#maintenance-{item['name']}",
        "content": "\n".join(filter(None, [span, item["description"]])),
    }


def _readable(stamp: str) -> str:
    """ "2026-11-22T07:30:00Z" -> "2026-11-22 07:30 UTC", as notices write times."""
    return f"{stamp[:10]} {stamp[11:16]} UTC"
