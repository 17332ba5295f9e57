"""The incident lifecycle as pure decisions: open, reopen, update severity, resolve.

One problem, one ticket: a re-fire inside `reopen_within` of the last resolution is a new
episode of the same incident (and ticket); a later one is a new incident.
"""

from __future__ import annotations

from rules.model import (
    AlertState,
    IncidentDecision,
    IncidentView,
    OpenIncident,
    ReopenIncident,
    ResolveIncident,
    Transition,
    TransitionKind,
    UpdateSeverity,
)


def decide(
    transition: Transition,
    open_incident: IncidentView | None,
    last_incident: IncidentView | None,
    reopen_within: float,
    now: float,
) -> list[IncidentDecision]:
    """What to do with the incidents of one fingerprint after an alert transition.

    `open_incident` is the open incident of the fingerprint, if any; `last_incident` the most
    recently resolved one. Returns [] when there is nothing to do, e.g. a FIRED replayed
    after a restart while its incident is still open.
    """
    alert = transition.alert
    if transition.kind is TransitionKind.FIRED:
        if open_incident is not None:
            return _align_severity(open_incident, alert, now)
        return [_open_or_reopen(alert, last_incident, reopen_within, now)]
    if open_incident is None:
        return []  # never opened (or already closed): nothing to update or resolve
    if transition.kind is TransitionKind.SEVERITY_CHANGED:
        return _align_severity(open_incident, alert, now)
    return [ResolveIncident(open_incident.id, now, max(0.0, now - open_incident.opened_at))]


def _open_or_reopen(
    alert: AlertState, last: IncidentView | None, reopen_within: float, now: float
) -> IncidentDecision:
    if last is None or last.resolved_at is None or reopen_within <= 0:
        return OpenIncident(alert.fingerprint, alert.severity, now)
    # A clock that stepped back must not push a recurrence out of the window.
    gone_for = max(0.0, now - last.resolved_at)
    if gone_for > reopen_within:
        return OpenIncident(alert.fingerprint, alert.severity, now)
    return ReopenIncident(last.id, last.episode + 1, alert.severity, now, gone_for)


def _align_severity(
    incident: IncidentView, alert: AlertState, now: float
) -> list[IncidentDecision]:
    # Compared with the stored incident rather than the transition, so a replay is a no-op.
    if incident.severity == alert.severity:
        return []
    return [UpdateSeverity(incident.id, alert.severity, incident.severity, now)]
