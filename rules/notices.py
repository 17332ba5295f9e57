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
    raise NotImplementedError


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
    raise NotImplementedError


def current_phase(facts: IncidentFacts, cadence: Cadence, now: float) -> NoticeKind:
    """Where the incident stands for a status page: investigating, identified (acknowledged),
    monitoring (recovered less than `monitor_for` ago) or resolved."""
    raise NotImplementedError


@dataclass(frozen=True)
class Audience:
    """People who depend on services or machines (from a config [[audience]])."""

    name: str
    services: tuple[str, ...] = ()  # service names; "*" is every service
    hosts: tuple[str, ...] = ()  # machine names, shell patterns ("web-*")


def affected(audience: Audience, service: str, host: str) -> bool:
    """Whether a problem of `service` (may be "") on machine `host` concerns the audience:
    it depends on the service (or on every service, "*"), or uses the machine."""
    raise NotImplementedError
