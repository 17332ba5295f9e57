"""The incident lifecycle: open, reopen inside the window, resolve, and replays after restart."""

from __future__ import annotations

from dataclasses import replace

import pytest

from probes.base import Sample
from rules import (
    AlertJoined,
    AlertState,
    IncidentDecision,
    IncidentView,
    OpenIncident,
    Phase,
    ReopenIncident,
    ResolveIncident,
    Rule,
    Severity,
    Situation,
    Transition,
    TransitionKind,
    UpdateSeverity,
    compile_condition,
    decide,
    evaluate,
)

FP = "2499738ca858d2c0"
HOUR = 3600.0


def alert(severity: Severity = Severity.WARNING, phase: Phase = Phase.FIRING) -> AlertState:
    return AlertState(FP, "disk_full", {"mountpoint": "/"}, phase, severity, 0.0, 0.0, 95.0)


def fired(severity: Severity = Severity.WARNING) -> Transition:
    return Transition(TransitionKind.FIRED, alert(severity))


def incident(**changes: object) -> IncidentView:
    base = IncidentView(
        id=7, fingerprint=FP, episode=1, status="open", severity=Severity.WARNING, opened_at=1000.0
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def resolved_at(at: float, episode: int = 1) -> IncidentView:
    return incident(status="resolved", resolved_at=at, episode=episode)


def decide_at(
    transition: Transition,
    open_incident: IncidentView | None,
    last: IncidentView | None,
    reopen_within: float,
    now: float,
) -> list[IncidentDecision]:
    """The decisions for an ungrouped alert (its incident key is its fingerprint)."""
    situation = Situation(open=open_incident, last=last)
    return decide(transition, situation, transition.alert.fingerprint, reopen_within, now)


def test_fired_without_any_incident_opens_one() -> None:
    decisions = decide_at(fired(Severity.CRITICAL), None, None, HOUR, 5000.0)
    assert decisions == [OpenIncident(FP, Severity.CRITICAL, 5000.0)]


def test_fired_inside_the_window_reopens_as_the_next_episode() -> None:
    decisions = decide_at(fired(), None, resolved_at(4900.0), HOUR, 5000.0)
    assert decisions == [ReopenIncident(7, 2, Severity.WARNING, 5000.0, resolved_for=100.0)]


def test_third_episode_counts_on() -> None:
    decisions = decide_at(fired(), None, resolved_at(4900.0, episode=2), HOUR, 5000.0)
    assert decisions == [ReopenIncident(7, 3, Severity.WARNING, 5000.0, resolved_for=100.0)]


@pytest.mark.parametrize(
    ("now", "reopens"),
    [(4900.0 + HOUR - 1, True), (4900.0 + HOUR, True), (4900.0 + HOUR + 1, False)],
)
def test_window_edge_to_the_second(now: float, reopens: bool) -> None:
    (decision,) = decide_at(fired(), None, resolved_at(4900.0), HOUR, now)
    assert isinstance(decision, ReopenIncident if reopens else OpenIncident)


def test_fired_outside_the_window_opens_a_new_incident() -> None:
    decisions = decide_at(fired(), None, resolved_at(1000.0), HOUR, 1000.0 + 2 * HOUR)
    assert decisions == [OpenIncident(FP, Severity.WARNING, 1000.0 + 2 * HOUR)]


def test_zero_window_never_reopens() -> None:
    decisions = decide_at(fired(), None, resolved_at(5000.0), 0.0, 5000.0)
    assert decisions == [OpenIncident(FP, Severity.WARNING, 5000.0)]


def test_clock_stepped_back_still_reopens() -> None:
    decisions = decide_at(fired(), None, resolved_at(5010.0), HOUR, 5000.0)
    assert decisions == [ReopenIncident(7, 2, Severity.WARNING, 5000.0, resolved_for=0.0)]


def test_fired_while_open_only_rejoins_after_restart() -> None:
    # Joining is idempotent in the store: the same alert again adds no comment, no ticket.
    assert decide_at(fired(), incident(), resolved_at(900.0), HOUR, 5000.0) == [
        AlertJoined(7, 5000.0)
    ]


def test_fired_while_open_with_another_severity_aligns_the_incident() -> None:
    decisions = decide_at(fired(Severity.CRITICAL), incident(), None, HOUR, 5000.0)
    assert decisions == [
        AlertJoined(7, 5000.0),
        UpdateSeverity(7, Severity.CRITICAL, Severity.WARNING, 5000.0),
    ]


def severity_changed(new: Severity, old: Severity) -> Transition:
    return Transition(TransitionKind.SEVERITY_CHANGED, alert(new), previous_severity=old)


def test_severity_change_updates_the_open_incident() -> None:
    transition = severity_changed(Severity.CRITICAL, Severity.WARNING)
    decisions = decide_at(transition, incident(), None, HOUR, 5000.0)
    assert decisions == [UpdateSeverity(7, Severity.CRITICAL, Severity.WARNING, 5000.0)]


def test_severity_change_replayed_is_a_no_op() -> None:
    transition = severity_changed(Severity.CRITICAL, Severity.WARNING)
    assert decide_at(transition, incident(severity=Severity.CRITICAL), None, HOUR, 5000.0) == []


def test_severity_change_without_incident_does_nothing() -> None:
    transition = severity_changed(Severity.CRITICAL, Severity.WARNING)
    assert decide_at(transition, None, resolved_at(4900.0), HOUR, 5000.0) == []


def resolved() -> Transition:
    return Transition(TransitionKind.RESOLVED, alert(phase=Phase.RESOLVED))


def test_resolve_reports_how_long_this_episode_lasted() -> None:
    episode_two = incident(episode=2, opened_at=4000.0)
    assert decide_at(resolved(), episode_two, None, HOUR, 4125.0) == [
        ResolveIncident(7, 4125.0, lasted=125.0)
    ]


def test_resolve_without_open_incident_does_nothing() -> None:
    assert decide_at(resolved(), None, resolved_at(4000.0), HOUR, 4125.0) == []


# --- both halves together -----------------------------------------------------------------


class IncidentBook:
    """The smallest store that applies decisions, standing in for the daemon's SQLite."""

    def __init__(self) -> None:
        self.incidents: list[IncidentView] = []
        self.applied: list[IncidentDecision] = []

    def open_one(self) -> IncidentView | None:
        return next((i for i in self.incidents if i.status == "open"), None)

    def last_resolved(self) -> IncidentView | None:
        done = [i for i in self.incidents if i.status == "resolved"]
        return max(done, key=lambda i: i.resolved_at or 0.0, default=None)

    def apply(self, decision: IncidentDecision) -> None:
        self.applied.append(decision)
        if isinstance(decision, OpenIncident):
            new = IncidentView(
                len(self.incidents) + 1,
                decision.fingerprint,
                1,
                "open",
                decision.severity,
                decision.at,
            )
            self.incidents.append(new)
        elif isinstance(decision, ReopenIncident):
            self._swap(
                decision.incident_id,
                episode=decision.episode,
                status="open",
                opened_at=decision.at,
                resolved_at=None,
                severity=decision.severity,
            )
        elif isinstance(decision, UpdateSeverity):
            self._swap(decision.incident_id, severity=decision.severity)
        else:
            self._swap(decision.incident_id, status="resolved", resolved_at=decision.at)

    def _swap(self, incident_id: int, **changes: object) -> None:
        index = next(n for n, i in enumerate(self.incidents) if i.id == incident_id)
        self.incidents[index] = replace(self.incidents[index], **changes)  # type: ignore[arg-type]


def test_alert_series_drives_one_ticket_through_two_episodes_then_a_new_one() -> None:
    rule = Rule(
        "disk_full",
        "disk_used_percent",
        compile_condition("value > 90"),
        30.0,
        critical=compile_condition("value > 98"),
    )
    book = IncidentBook()
    state: AlertState | None = None
    series = [
        (0, 95),
        (30, 95),
        (40, 99),
        (100, 50),
        (400, 95),
        (430, 95),
        (460, 50),
        (460 + HOUR + 1, 95),
        (460 + HOUR + 31, 95),
    ]
    for now, value in series:
        step = evaluate(
            rule, state, Sample("disk_used_percent", value, now, {"probe": "disk"}), float(now)
        )
        state = step.state
        if step.transition is not None:
            for decision in decide_at(
                step.transition, book.open_one(), book.last_resolved(), HOUR, float(now)
            ):
                book.apply(decision)
    fp = state.fingerprint if state else ""
    assert book.applied == [
        OpenIncident(fp, Severity.WARNING, 30.0),
        UpdateSeverity(1, Severity.CRITICAL, Severity.WARNING, 40.0),
        ResolveIncident(1, 100.0, lasted=70.0),
        ReopenIncident(1, 2, Severity.WARNING, 430.0, resolved_for=330.0),
        ResolveIncident(1, 460.0, lasted=30.0),
        OpenIncident(fp, Severity.WARNING, 460 + HOUR + 31),
    ]
