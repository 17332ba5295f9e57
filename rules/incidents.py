"""The incident lifecycle as pure decisions.

One problem, one ticket:
- a re-fire inside `reopen_within` of the last resolution is a new episode of the same incident
  (and ticket); a later one is a new incident;
- alerts of a group (`group_by`) share one incident: the first opens it, later ones join it,
  it resolves when the last one recovers;
- an alert whose rule depends on another rule that has an open incident becomes a symptom of
  that root cause instead of opening a ticket of its own (`root`);
- a flapping alert keeps its incident open, tagged intermittent, instead of resolving and
  reopening it at every flap.
"""

from __future__ import annotations

from dataclasses import dataclass

from rules.model import (
    AlertJoined,
    AlertLeft,
    AlertState,
    IncidentDecision,
    IncidentView,
    MarkIntermittent,
    OpenIncident,
    ReopenIncident,
    ResolveIncident,
    Transition,
    TransitionKind,
    UpdateSeverity,
)


@dataclass(frozen=True)
class Situation:
    """What the store knows around one transition, looked up by the incident's key."""

    open: IncidentView | None = None  # the open incident of the key
    last: IncidentView | None = None  # the most recent incident of the key (for reopening)
    others_firing: int = 0  # other alerts of the open incident still firing
    root: IncidentView | None = None  # an open root-cause incident this alert depends on


def decide(
    transition: Transition,
    situation: Situation,
    key: str,
    reopen_within: float,
    now: float,
) -> list[IncidentDecision]:
    """What to do with the incident of `key` after an alert transition ([] when nothing)."""
    alert, incident = transition.alert, situation.open
    if transition.kind is TransitionKind.FIRED:
        if incident is not None:
            return [AlertJoined(incident.id, now), *_kept(incident, alert, now)]
        if situation.root is not None:
            return [OpenIncident(key, alert.severity, now, parent_id=situation.root.id)]
        return [_open_or_reopen(key, alert, situation.last, reopen_within, now)]
    if incident is None:
        return []  # never opened (or already closed): nothing to update or resolve
    if transition.kind is TransitionKind.SEVERITY_CHANGED:
        return _align_severity(incident, alert, now)
    return _recovered(incident, alert, situation.others_firing, now)


def _recovered(
    incident: IncidentView, alert: AlertState, others_firing: int, now: float
) -> list[IncidentDecision]:
    if alert.flapping:
        return _intermittent(incident, alert, now)  # stays open until the flapping settles
    if others_firing > 0:
        return [AlertLeft(incident.id, now)]
    return [ResolveIncident(incident.id, now, max(0.0, now - incident.opened_at))]


def _kept(incident: IncidentView, alert: AlertState, now: float) -> list[IncidentDecision]:
    """An alert fires inside an incident that is already open (a group, a flap, a restart)."""
    return [*_intermittent(incident, alert, now), *_align_severity(incident, alert, now)]


def _intermittent(incident: IncidentView, alert: AlertState, now: float) -> list[IncidentDecision]:
    if not alert.flapping or incident.intermittent:
        return []
    return [MarkIntermittent(incident.id, alert.flap_changes, now)]


def _open_or_reopen(
    key: str, alert: AlertState, last: IncidentView | None, reopen_within: float, now: float
) -> IncidentDecision:
    if last is None or last.resolved_at is None or reopen_within <= 0:
        return OpenIncident(key, alert.severity, now)
    # A clock that stepped back must not push a recurrence out of the window.
    gone_for = max(0.0, now - last.resolved_at)
    if gone_for > reopen_within:
        return OpenIncident(key, alert.severity, now)
    return ReopenIncident(last.id, last.episode + 1, alert.severity, now, gone_for)


def _align_severity(
    incident: IncidentView, alert: AlertState, now: float
) -> list[IncidentDecision]:
    # Compared with the stored incident rather than the transition, so a replay is a no-op.
    if incident.severity == alert.severity:
        return []
    return [UpdateSeverity(incident.id, alert.severity, incident.severity, now)]
