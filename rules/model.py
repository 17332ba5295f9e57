"""Data types of the rule engine: rules, alert states, transitions and incident decisions.

Everything in `rules/` is pure: functions take the stored state and `now`, and return new
state and decisions. No I/O, no clock reads.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from rules.condition import Condition
from rules.flapping import FlapState
from rules.series import History, Recent


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


@dataclass(frozen=True)
class Text:
    """Plain-language text for users, in one or more languages: `("", text)` is the text
    written without a language, used when the asked language has none of its own."""

    by_language: tuple[tuple[str, str], ...] = ()

    def get(self, language: str) -> str:
        texts = dict(self.by_language)
        return texts.get(language) or texts.get("") or texts.get("en") or ""

    def __bool__(self) -> bool:
        return any(text for _, text in self.by_language)


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
    priority: str = ""  # high | medium | low; default from the severity
    notify_users: bool = False
    # Hold-down: a firing alert resolves only once its clear has held this long.
    keep_firing_for: float = 0.0
    # History kept per series for `slope`, `rate` and `eta` in conditions (0: none).
    window: float = 0.0
    predict: float | None = None  # the level `eta` counts down to
    predict_falling: bool = False  # the breach is below `predict` (free bytes, say)
    # X-within-Y: active when the condition held `times` times in the last `checks` checks.
    times: int = 0
    checks: int = 0
    flap_detection: bool = True
    # Dependencies: while an incident of one of these rules is open (on the same values of
    # `depends_match` labels), this rule's alerts attach to it instead of opening tickets.
    depends_on: tuple[str, ...] = ()
    depends_match: tuple[str, ...] = ()
    # Grouping: alerts of this rule with equal values of these labels share one incident.
    group_by: tuple[str, ...] | None = None
    group_wait: float = 0.0  # delay before the ticket, so simultaneous alerts share it
    # What users read in notices (plain language, per language): what they may notice, what
    # still works, a workaround, and a self-help link.
    user_impact: Text = field(default_factory=Text)
    still_works: Text = field(default_factory=Text)
    workaround: Text = field(default_factory=Text)
    help_url: str = ""
    escalation: str = ""  # the [[escalation]] policy; "" means the one named "default", if any

    @property
    def ticket_priority(self) -> str:
        return self.priority or self.severity.priority


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
    cleared_since: float | None = None  # when the clear began to hold while firing
    predicted_at: float | None = None  # when the trend reaches `rule.predict`
    flapping: bool = False
    flap_changes: int = 0
    # Kept in memory only: after a restart, history and flap detection start afresh.
    memory: SeriesMemory = field(default_factory=lambda: SeriesMemory(), compare=False, repr=False)


@dataclass(frozen=True)
class SeriesMemory:
    """What an alert remembers of its series between evaluations, beyond its phase."""

    history: History = field(default_factory=History)
    recent: Recent = field(default_factory=Recent)
    flap: FlapState = field(default_factory=FlapState)


class TransitionKind(enum.StrEnum):
    FIRED = "fired"
    SEVERITY_CHANGED = "severity_changed"
    RESOLVED = "resolved"  # also: a flapping alert settled while not firing


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
    intermittent: bool = False
    rule: str = ""


@dataclass(frozen=True)
class OpenIncident:
    fingerprint: str  # the incident's key: the alert's, or its group's
    severity: Severity
    at: float
    parent_id: int | None = None  # the root-cause incident this one is a symptom of


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


@dataclass(frozen=True)
class AlertJoined:
    """The alert fires again, or a further alert of the group fires, inside an open incident."""

    incident_id: int
    at: float


@dataclass(frozen=True)
class AlertLeft:
    """One alert of a group recovered while others still fire."""

    incident_id: int
    at: float


@dataclass(frozen=True)
class MarkIntermittent:
    """The alert flaps: keep one open incident, tagged intermittent, instead of a storm."""

    incident_id: int
    flap_changes: int
    at: float


IncidentDecision = (
    OpenIncident
    | ReopenIncident
    | UpdateSeverity
    | ResolveIncident
    | AlertJoined
    | AlertLeft
    | MarkIntermittent
)


@dataclass(frozen=True)
class Evaluation:
    """Result of stepping one alert with one sample."""

    state: AlertState
    transition: Transition | None = None
    notes: tuple[str, ...] = field(default=())  # e.g. a condition that failed to evaluate
