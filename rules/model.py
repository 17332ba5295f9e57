"""Data types of the rule engine: rules, alert states, transitions and incident decisions.

Everything in `rules/` is pure: functions take the stored state and `now`, and return new
state and decisions. No I/O, no clock reads.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from rules.condition import Condition


class Severity(enum.IntEnum):
    INFO = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def priority(self) -> str:
        """The help-desk priority a ticket of this severity gets."""
        return {Severity.INFO: "low", Severity.WARNING: "medium", Severity.CRITICAL: "high"}[self]


class Phase(enum.StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Rule:
    """An alert rule, compiled once at config load.

    `condition` makes the alert pending, then firing once it has held for `for_seconds`.
    `clear` (hysteresis) must hold to resolve a firing alert; without it, the alert resolves
    as soon as `condition` is false. `critical`, when given, raises a pending or firing
    alert to critical severity while it holds.
    """

    name: str
    metric: str
    condition: Condition
    for_seconds: float = 0.0
    clear: Condition | None = None
    critical: Condition | None = None
    severity: Severity = Severity.WARNING
    probe: str | None = None  # only samples of this probe, when set
    summary: str = ""  # jinja2 template of the one-line title
    description: str = ""
    runbook: str = ""
    service: str = ""  # the service users know, for notices
    category: str = ""
    notify_users: bool = False


@dataclass(frozen=True)
class AlertState:
    """One alert (one rule on one label set), as stored between evaluations."""

    fingerprint: str
    rule: str
    labels: dict[str, str]
    phase: Phase
    severity: Severity
    changed_at: float  # when `phase` was entered
    active_since: float | None  # when the condition first held in this episode
    value: float
    error: str | None = None
    evaluated_at: float = 0.0


class TransitionKind(enum.StrEnum):
    FIRED = "fired"
    SEVERITY_CHANGED = "severity_changed"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Transition:
    kind: TransitionKind
    alert: AlertState  # the state after the transition
    previous_severity: Severity | None = None


@dataclass(frozen=True)
class IncidentView:
    """What the incident lifecycle needs to know of a stored incident."""

    id: int
    fingerprint: str
    episode: int
    status: str  # "open" | "resolved"
    severity: Severity
    opened_at: float
    resolved_at: float | None = None


@dataclass(frozen=True)
class OpenIncident:
    fingerprint: str
    severity: Severity
    at: float


@dataclass(frozen=True)
class ReopenIncident:
    incident_id: int
    episode: int  # the new episode number
    severity: Severity
    at: float
    resolved_for: float  # seconds the problem had been gone


@dataclass(frozen=True)
class UpdateSeverity:
    incident_id: int
    severity: Severity
    previous: Severity
    at: float


@dataclass(frozen=True)
class ResolveIncident:
    incident_id: int
    at: float
    lasted: float  # seconds from this episode's start to now


IncidentDecision = OpenIncident | ReopenIncident | UpdateSeverity | ResolveIncident


@dataclass(frozen=True)
class Evaluation:
    """Result of stepping one alert with one sample."""

    state: AlertState
    transition: Transition | None = None
    notes: tuple[str, ...] = field(default=())  # e.g. a condition that failed to evaluate
