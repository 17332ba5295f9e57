"""The rule engine: pure decisions from samples, stored state and `now`."""

from rules.alerts import evaluate, matches, plain_summary, render_summary, validate_template
from rules.condition import Condition, ConditionError, compile_condition
from rules.fingerprint import fingerprint, marker
from rules.incidents import decide
from rules.model import (
    AlertState,
    Evaluation,
    IncidentDecision,
    IncidentView,
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
    "AlertState",
    "Condition",
    "ConditionError",
    "Evaluation",
    "IncidentDecision",
    "IncidentView",
    "OpenIncident",
    "Phase",
    "ReopenIncident",
    "ResolveIncident",
    "Rule",
    "Severity",
    "Transition",
    "TransitionKind",
    "UpdateSeverity",
    "compile_condition",
    "decide",
    "evaluate",
    "fingerprint",
    "marker",
    "matches",
    "plain_summary",
    "render_summary",
    "validate_template",
]
