"""User notices: which audience hears what, and when (pure; `now` is passed in).

The vocabulary is a status page's. An incident's notices go investigating → identified →
monitoring → resolved, and never back; `update` notices repeat while it is open (at the
cadence, or at once when the estimate moves). Scheduled maintenance goes scheduled →
in_progress → completed. Each audience gets each step once per episode; the monitor
records what was sent, and `plan` is asked again at every tick.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from fnmatch import fnmatchcase

from rules.eta import changed_materially


class NoticeKind(enum.StrEnum):
    INVESTIGATING = "investigating"
    IDENTIFIED = "identified"
    UPDATE = "update"
    MONITORING = "monitoring"
    RESOLVED = "resolved"
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


# The forward order of the phases; `update` is not a phase and may repeat.
PHASE_ORDER = {
    NoticeKind.INVESTIGATING: 1,
    NoticeKind.IDENTIFIED: 2,
    NoticeKind.MONITORING: 3,
    NoticeKind.RESOLVED: 4,
    NoticeKind.SCHEDULED: 1,
    NoticeKind.IN_PROGRESS: 2,
    NoticeKind.COMPLETED: 3,
}


@dataclass(frozen=True)
class Cadence:
    update_every: float = 4 * 3600.0  # a follow-up while the incident stays open
    # > 0: on recovery, say "monitoring" first and "resolved" once it held this long.
    monitor_for: float = 0.0


@dataclass(frozen=True)
class IncidentFacts:
    """One episode of an incident, as notices see it."""

    open: bool
    opened_at: float  # this episode's start
    speaks_at: float  # when the first notice may go (opened_at + the rule's group_wait)
    resolved_at: float | None
    acknowledged: bool
    eta_at: float | None  # the current estimate of the fix (rules.eta), None if unknown
    # The previous episode's notices stopped at "monitoring": this episode continues them
    # (an update saying the problem is back) instead of starting over at "investigating".
    relapse: bool = False


@dataclass(frozen=True)
class Sent:
    """What one audience already got for this episode."""

    last_phase: NoticeKind | None = None  # the furthest phase (never `update`)
    last_at: float | None = None  # the latest notice of any kind
    updates: int = 0  # `update` notices so far
    eta_at: float | None = None  # the estimate the latest notice announced


@dataclass(frozen=True)
class NoticeDue:
    kind: NoticeKind
    seq: int  # 0 for a phase; n for the n-th update of the episode
    reason: str  # the phase's name, or for an update "cadence" | "eta" | "relapse"
    next_update_at: float | None  # when the audience will hear again, if still open


def plan(facts: IncidentFacts, sent: Sent, cadence: Cadence, now: float) -> list[NoticeDue]:
    """The notices due now for one audience (usually none, at most one phase per call).

    - never told and open, at or after `speaks_at`: investigating (identified when already
      acknowledged); with `relapse`, an update (reason "relapse") instead;
    - never told and resolved: nothing (nobody is told of a fix to what they never heard of);
    - open: identified once acknowledged; otherwise an update when `update_every` passed
      since `last_at` (reason "cadence") or the estimate changed materially (reason "eta");
    - resolved: monitoring when `monitor_for` > 0 and not sent; resolved at
      resolved_at + monitor_for.
    """
    told = _phase_told(facts, sent)
    if not facts.open:
        return _plan_resolved(facts, told, cadence, now)
    if now < facts.speaks_at:
        return []
    if told is None:
        first = NoticeKind.IDENTIFIED if facts.acknowledged else NoticeKind.INVESTIGATING
        return [_phase_notice(first, facts, cadence, now)]
    if facts.acknowledged and _order(told) < _order(NoticeKind.IDENTIFIED):
        return [_phase_notice(NoticeKind.IDENTIFIED, facts, cadence, now)]
    reason = _update_reason(facts, sent, told, cadence, now)
    if reason is None:
        return []
    return [NoticeDue(NoticeKind.UPDATE, sent.updates + 1, reason, _next_update(cadence, now))]


def _phase_told(facts: IncidentFacts, sent: Sent) -> NoticeKind | None:
    """The furthest phase this audience knows of.

    A relapse continues the previous episode, which stopped at monitoring: until the users
    hear the problem is back they stand there (so a relapse gone before anyone was told ends
    with "resolved"); once told, the problem is known and identified again.
    """
    if sent.last_phase is not None or not facts.relapse:
        return sent.last_phase
    return NoticeKind.MONITORING if sent.last_at is None else NoticeKind.IDENTIFIED


def _update_reason(
    facts: IncidentFacts, sent: Sent, told: NoticeKind, cadence: Cadence, now: float
) -> str | None:
    if _order(told) >= _order(NoticeKind.RESOLVED):
        return None
    if sent.last_at is None:
        # A relapse nobody heard of yet: the problem is back, say so at once.
        return "relapse" if facts.relapse else None
    # An estimate that moved is news in itself; say that rather than "still working on it".
    if changed_materially(sent.eta_at, facts.eta_at, now):
        return "eta"
    if cadence.update_every > 0 and now >= sent.last_at + cadence.update_every:
        return "cadence"
    return None


def _plan_resolved(
    facts: IncidentFacts, told: NoticeKind | None, cadence: Cadence, now: float
) -> list[NoticeDue]:
    if told is None or _order(told) >= _order(NoticeKind.RESOLVED):
        return []  # never told of the problem, or already told it is over
    phase = current_phase(facts, cadence, now)
    if phase is NoticeKind.MONITORING and _order(told) >= _order(NoticeKind.MONITORING):
        return []  # monitoring said; resolved waits for the end of the period
    return [_phase_notice(phase, facts, cadence, now)]


def _phase_notice(
    kind: NoticeKind, facts: IncidentFacts, cadence: Cadence, now: float
) -> NoticeDue:
    return NoticeDue(kind, 0, kind.value, _next_update(cadence, now) if facts.open else None)


def _next_update(cadence: Cadence, now: float) -> float | None:
    # No cadence (0): users hear again only when something changes.
    return now + cadence.update_every if cadence.update_every > 0 else None


def _order(phase: NoticeKind) -> int:
    return PHASE_ORDER.get(phase, 0)


@dataclass(frozen=True)
class Occurrence:
    """One occurrence of a scheduled maintenance window."""

    starts_at: float
    ends_at: float
    announce_at: float  # starts_at - the window's announce_before


def plan_maintenance(occurrence: Occurrence, last_phase: NoticeKind | None, now: float) -> (
    NoticeKind | None
):
    """The maintenance notice due now for one audience, if any: scheduled from announce_at
    until the start, in_progress during it (skipping scheduled if it was never sent),
    completed after it (only when scheduled or in_progress was sent)."""
    told = 0 if last_phase is None else _order(last_phase)
    if now >= occurrence.ends_at:
        # Nobody is told a window they never heard of is over.
        return NoticeKind.COMPLETED if 0 < told < _order(NoticeKind.COMPLETED) else None
    if now >= occurrence.starts_at:
        return NoticeKind.IN_PROGRESS if told < _order(NoticeKind.IN_PROGRESS) else None
    if now >= occurrence.announce_at and told < _order(NoticeKind.SCHEDULED):
        return NoticeKind.SCHEDULED
    return None


def current_phase(facts: IncidentFacts, cadence: Cadence, now: float) -> NoticeKind:
    """Where the incident stands for a status page: investigating, identified (acknowledged),
    monitoring (recovered less than `monitor_for` ago) or resolved."""
    if facts.open:
        return NoticeKind.IDENTIFIED if facts.acknowledged else NoticeKind.INVESTIGATING
    # A recovery of unknown time is taken as long past: there is nothing left to watch.
    if facts.resolved_at is not None and now < facts.resolved_at + cadence.monitor_for:
        return NoticeKind.MONITORING
    return NoticeKind.RESOLVED


@dataclass(frozen=True)
class Audience:
    """People who depend on services or machines (from a config [[audience]])."""

    name: str
    services: tuple[str, ...] = ()  # service names; "*" is every service
    hosts: tuple[str, ...] = ()  # machine names, shell patterns ("web-*")


def affected(audience: Audience, service: str, host: str) -> bool:
    """Whether a problem of `service` (may be "") on machine `host` concerns the audience:
    it depends on the service (or on every service, "*"), or uses the machine."""
    by_service = bool(service) and (service in audience.services or "*" in audience.services)
    by_host = bool(host) and any(fnmatchcase(host, pattern) for pattern in audience.hosts)
    return by_service or by_host
