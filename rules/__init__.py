"""The rule engine: pure decisions from samples, stored state and `now`."""

from rules.alerts import (
    evaluate,
    expire,
    matches,
    plain_summary,
    render_summary,
    validate_template,
)
from rules.condition import Condition, ConditionError, compile_condition
from rules.fingerprint import fingerprint, incident_key, marker
from rules.incidents import Situation, decide
from rules.model import (
    AlertJoined,
    AlertLeft,
    AlertState,
    Evaluation,
    IncidentDecision,
    IncidentView,
    MarkIntermittent,
    OpenIncident,
    Phase,
    ReopenIncident,
    ResolveIncident,
    Rule,
    Severity,
    Transition,
    TransitionKind,
    UpdateSeverity,
)

__all__ = [
    "AlertJoined",
    "AlertLeft",
    "AlertState",
    "Condition",
    "ConditionError",
    "Evaluation",
    "IncidentDecision",
    "IncidentView",
    "MarkIntermittent",
    "OpenIncident",
    "Phase",
    "ReopenIncident",
    "ResolveIncident",
    "Rule",
    "Severity",
    "Situation",
    "Transition",
    "TransitionKind",
    "UpdateSeverity",
    "compile_condition",
    "decide",
    "evaluate",
    "expire",
    "fingerprint",
    "incident_key",
    "marker",
    "matches",
    "plain_summary",
    "render_summary",
    "validate_template",
]
