"""Stepping one alert with one sample: inactive → pending → firing → resolved.

`evaluate` is pure: it takes the stored state, the sample and `now`, and returns the new
state, the transition (fired, severity changed, resolved) if any, and notes about conditions
that failed to evaluate. It never raises on a bad condition: the daemon logs and counts notes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from jinja2 import Template, TemplateSyntaxError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from probes.base import Sample
from rules.condition import Condition, ConditionError
from rules.fingerprint import fingerprint
from rules.model import AlertState, Evaluation, Phase, Rule, Severity, Transition, TransitionKind

log = logging.getLogger(__name__)

# Labels come from probe output (process names, URLs): templates see them only through the sandbox.
_TEMPLATES = ImmutableSandboxedEnvironment(autoescape=False, undefined=Undefined)
_ACTIVE = (Phase.PENDING, Phase.FIRING)


def matches(rule: Rule, sample: Sample) -> bool:
    """Whether `rule` reads `sample`: same metric and, when the rule names a probe, that probe."""
    if sample.metric != rule.metric:
        return False
    return rule.probe is None or sample.labels.get("probe") == rule.probe


def evaluate(rule: Rule, previous: AlertState | None, sample: Sample, now: float) -> Evaluation:
    """Step the alert of `rule` on the labels of `sample` to `now`."""
    notes: list[str] = []
    variables = _variables(sample)
    prior = previous if previous is not None else _blank(rule, sample, now)
    phase, active_since = _next_phase(rule, prior, variables, now, notes)
    state = AlertState(
        fingerprint=fingerprint(rule.name, sample.labels),
        rule=rule.name,
        labels=dict(sample.labels),
        phase=phase,
        severity=_severity(rule, prior, phase, variables, notes),
        changed_at=prior.changed_at if phase is prior.phase else now,
        active_since=active_since,
        value=sample.value,
        error=sample.error,
        evaluated_at=now,
    )
    return Evaluation(state, _transition(prior, state), tuple(notes))


def _variables(sample: Sample) -> dict[str, Any]:
    return {
        "value": sample.value,
        "labels": dict(sample.labels),
        "metric": sample.metric,
        "error": sample.error,
    }


def _blank(rule: Rule, sample: Sample, now: float) -> AlertState:
    fp = fingerprint(rule.name, sample.labels)
    labels = dict(sample.labels)
    return AlertState(fp, rule.name, labels, Phase.INACTIVE, rule.severity, now, None, sample.value)


def _next_phase(
    rule: Rule, prior: AlertState, variables: Mapping[str, Any], now: float, notes: list[str]
) -> tuple[Phase, float | None]:
    """The new phase and when the current episode began."""
    if prior.phase is Phase.FIRING:
        resolved = _resolves(rule, variables, notes)
        return (Phase.RESOLVED if resolved else Phase.FIRING), prior.active_since
    if not _holds("condition", rule.condition, variables, notes):
        if prior.phase is Phase.PENDING:
            return Phase.INACTIVE, None
        # RESOLVED stays RESOLVED and keeps when its episode began, for resolution messages.
        return prior.phase, prior.active_since
    since = prior.active_since if prior.phase is Phase.PENDING else None
    since = now if since is None else since
    return (Phase.FIRING if now - since >= rule.for_seconds else Phase.PENDING), since


def _resolves(rule: Rule, variables: Mapping[str, Any], notes: list[str]) -> bool:
    if rule.clear is not None:
        return _holds("clear", rule.clear, variables, notes)
    return not _holds("condition", rule.condition, variables, notes)


def _severity(
    rule: Rule, prior: AlertState, phase: Phase, variables: Mapping[str, Any], notes: list[str]
) -> Severity:
    if phase is Phase.RESOLVED:
        return prior.severity  # a resolved alert remembers how bad it was
    if phase not in _ACTIVE or rule.critical is None:
        return rule.severity
    if _holds("critical", rule.critical, variables, notes):
        return Severity.CRITICAL
    return rule.severity


def _holds(role: str, condition: Condition, variables: Mapping[str, Any], notes: list[str]) -> bool:
    try:
        return condition(variables)
    except ConditionError as exc:
        notes.append(f"{role}: {exc}")  # the caller knows the rule and names it
        return False


def _transition(prior: AlertState, state: AlertState) -> Transition | None:
    was_firing = prior.phase is Phase.FIRING
    if state.phase is Phase.FIRING and not was_firing:
        return Transition(TransitionKind.FIRED, state)
    if state.phase is Phase.RESOLVED and was_firing:
        return Transition(TransitionKind.RESOLVED, state)
    if state.phase is Phase.FIRING and state.severity != prior.severity:
        return Transition(TransitionKind.SEVERITY_CHANGED, state, prior.severity)
    return None


def validate_template(source: str) -> None:
    """Raise ValueError with a readable reason when `source` is not a valid jinja2 template."""
    try:
        _TEMPLATES.from_string(source)
    except TemplateSyntaxError as exc:
        raise ValueError(f"not a valid template (line {exc.lineno}): {exc.message}") from exc


def render_summary(rule: Rule, state: AlertState) -> str:
    """The one-line title of an alert: `rule.summary` rendered, or a plain line as fallback."""
    template = _compiled(rule.summary) if rule.summary.strip() else None
    if template is None:
        return plain_summary(rule, state)
    try:
        text = template.render(_summary_variables(rule, state))
    except Exception as exc:  # the sandbox and filters raise many kinds; a title must not fail
        log.warning("rule %s: summary template failed (%s); using plain text", rule.name, exc)
        return plain_summary(rule, state)
    # One line: a label value with newlines must not add lines to a ticket title or subject.
    return " ".join(text.split()) or plain_summary(rule, state)


def plain_summary(rule: Rule, state: AlertState) -> str:
    """`disk_full: disk_used_percent = 93.5 {mountpoint="/"}`, plus the error when there is one."""
    labels = ", ".join(f"{key}={value!r}" for key, value in sorted(state.labels.items()))
    line = f"{rule.name}: {rule.metric} = {_number(state.value)} {{{labels}}}"
    return f"{line} ({state.error})" if state.error else line


def _number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def _summary_variables(rule: Rule, state: AlertState) -> dict[str, Any]:
    return {
        "rule": rule.name,
        "metric": rule.metric,
        "labels": dict(state.labels),
        "value": state.value,
        "error": state.error,
        "severity": state.severity.label,
        "phase": str(state.phase),
    }


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> Template | None:
    """Compile once per source; None (also cached) for a template that does not compile."""
    try:
        return _TEMPLATES.from_string(source)
    except TemplateSyntaxError as exc:
        log.warning("summary template does not compile (%s); using the plain summary", exc)
        return None
