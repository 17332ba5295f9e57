"""Stepping one alert with one sample: inactive → pending → firing → resolved.

`evaluate` is pure: it takes the stored state, the sample and `now`, and returns the new
state, the transition (fired, severity changed, resolved) if any, and notes about conditions
that failed to evaluate. It never raises on a bad condition: the daemon logs and counts notes.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from jinja2 import Template, TemplateSyntaxError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from probes.base import Sample
from rules.condition import Condition, ConditionError
from rules.fingerprint import fingerprint
from rules.flapping import FlapState, observe
from rules.model import (
    AlertState,
    Evaluation,
    Phase,
    Rule,
    SeriesMemory,
    Severity,
    Transition,
    TransitionKind,
)
from rules.series import History, Recent, add, count, push, rate, time_to_threshold, trend

log = logging.getLogger(__name__)

# Labels come from probe output (process names, URLs): templates see them only through the sandbox.
_TEMPLATES = ImmutableSandboxedEnvironment(autoescape=False, undefined=Undefined)
_ACTIVE = (Phase.PENDING, Phase.FIRING)
HISTORY_POINTS = 360  # per series with a `window`: bounded memory whatever the sampling rate


def matches(rule: Rule, sample: Sample) -> bool:
    """Whether `rule` reads `sample`: same metric and, when the rule names a probe, that probe."""
    if sample.metric != rule.metric:
        return False
    return rule.probe is None or sample.labels.get("probe") == rule.probe


def past_predicted_level(rule: Rule, state: AlertState) -> bool:
    """Whether a firing alert's value reached the level its rule predicts (the impact)."""
    if rule.predict is None or state.phase is not Phase.FIRING or math.isnan(state.value):
        return False
    return state.value <= rule.predict if rule.predict_falling else state.value >= rule.predict


def evaluate(rule: Rule, previous: AlertState | None, sample: Sample, now: float) -> Evaluation:
    """Step the alert of `rule` on the labels of `sample` to `now`."""
    notes: list[str] = []
    prior = previous if previous is not None else _blank(rule, sample, now)
    history = _remember(rule, prior.memory.history, sample)
    variables = _variables(rule, sample, history, now)
    held = _holds("condition", rule.condition, variables, notes)
    recent = push(prior.memory.recent, held, rule.checks) if rule.checks else Recent()
    active = count(recent) >= rule.times if rule.checks else held
    clearing = _clearing(rule, variables, held, recent, notes)
    phase, active_since, cleared_since = _next_phase(rule, prior, active, clearing, now)
    flap = _observe_flaps(rule, prior.memory.flap, active)
    state = AlertState(
        fingerprint=prior.fingerprint,  # same rule, same labels: computed once per series
        rule=rule.name,
        labels=dict(sample.labels),
        phase=phase,
        severity=_severity(rule, prior, phase, variables, notes),
        changed_at=prior.changed_at if phase is prior.phase else now,
        active_since=active_since,
        value=sample.value,
        error=sample.error,
        evaluated_at=now,
        cleared_since=cleared_since,
        predicted_at=_impact(variables, now),
        flapping=flap.flapping,
        flap_changes=flap.changes,
        memory=SeriesMemory(history, recent, flap),
    )
    return Evaluation(state, _transition(prior, state), tuple(notes))


def expire(rule: Rule, state: AlertState, now: float) -> Evaluation:
    """The series stopped reporting: a pending alert lapses, a firing one resolves, and a
    flapping one settles (or the incident it keeps open would never close)."""
    if state.phase is Phase.FIRING:
        gone = replace(
            state,
            phase=Phase.RESOLVED,
            changed_at=now,
            cleared_since=None,
            error="the series stopped reporting",
            flapping=False,
        )
        return Evaluation(gone, Transition(TransitionKind.RESOLVED, gone))
    quiet = state
    if state.phase is Phase.PENDING:
        quiet = replace(state, phase=Phase.INACTIVE, changed_at=now, active_since=None)
    if not state.flapping:
        return Evaluation(quiet)
    settled = replace(quiet, flapping=False, error="the series stopped reporting")
    return Evaluation(settled, Transition(TransitionKind.RESOLVED, settled))


def _remember(rule: Rule, history: History, sample: Sample) -> History:
    if rule.window <= 0:
        return history
    return add(history, sample.timestamp, sample.value, rule.window, HISTORY_POINTS)


def _variables(rule: Rule, sample: Sample, history: History, now: float) -> dict[str, Any]:
    """What a condition sees. Unknown trend figures are NaN (compare false) and `eta` is
    infinite (no breach predicted), so `eta < 3600` is simply false without history."""
    variables: dict[str, Any] = {
        "value": sample.value,
        "labels": dict(sample.labels),
        "metric": sample.metric,
        "error": sample.error,
        "slope": math.nan,
        "rate": math.nan,
        "eta": math.inf,
    }
    if rule.window <= 0:
        return variables
    fitted = trend(history, min_span=rule.window / 4)
    measured = rate(history, rule.window)
    variables["slope"] = fitted.slope if fitted else math.nan
    variables["rate"] = measured if measured is not None else math.nan
    if fitted is not None and rule.predict is not None:
        eta = time_to_threshold(fitted, now, rule.predict, above=not rule.predict_falling)
        variables["eta"] = eta if eta is not None else math.inf
    return variables


def _impact(variables: Mapping[str, Any], now: float) -> float | None:
    eta = variables["eta"]
    return now + eta if math.isfinite(eta) else None


def _blank(rule: Rule, sample: Sample, now: float) -> AlertState:
    fp = fingerprint(rule.name, sample.labels)
    labels = dict(sample.labels)
    return AlertState(fp, rule.name, labels, Phase.INACTIVE, rule.severity, now, None, sample.value)


def _clearing(
    rule: Rule, variables: Mapping[str, Any], held: bool, recent: Recent, notes: list[str]
) -> bool:
    """Whether a firing alert may resolve: its clear holds, or else its trigger is gone."""
    if rule.clear is not None:
        return _holds("clear", rule.clear, variables, notes)
    if rule.checks:
        return count(recent) == 0  # an intermittent fault is over when the window is clean
    return not held


def _next_phase(
    rule: Rule, prior: AlertState, active: bool, clearing: bool, now: float
) -> tuple[Phase, float | None, float | None]:
    """The new phase, when the current episode began, and since when the clear has held."""
    if prior.phase is Phase.FIRING:
        if not clearing:
            return Phase.FIRING, prior.active_since, None
        cleared = prior.cleared_since if prior.cleared_since is not None else now
        if now - cleared >= rule.keep_firing_for:
            return Phase.RESOLVED, prior.active_since, None
        return Phase.FIRING, prior.active_since, cleared  # held down: not resolved yet
    if not active:
        if prior.phase is Phase.PENDING:
            return Phase.INACTIVE, None, None
        # RESOLVED stays RESOLVED and keeps when its episode began, for resolution messages.
        return prior.phase, prior.active_since, None
    pending_since = prior.active_since if prior.phase is Phase.PENDING else None
    since = now if pending_since is None else pending_since
    firing = now - since >= rule.for_seconds
    return (Phase.FIRING if firing else Phase.PENDING), since, None


def _observe_flaps(rule: Rule, flap: FlapState, active: bool) -> FlapState:
    # The check outcome, not the phase (Icinga counts check results): a hold-down
    # (`keep_firing_for`) keeps the phase steady while the service flaps underneath.
    if not rule.flap_detection:
        return flap
    return observe(flap, active)


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
    if prior.flapping and not state.flapping and state.phase is not Phase.FIRING:
        return Transition(TransitionKind.RESOLVED, state)  # settled: the kept incident may close
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
        # Seconds to the predicted breach when the rule predicts, else infinite.
        "eta": (state.predicted_at - state.evaluated_at) if state.predicted_at else math.inf,
    }


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> Template | None:
    """Compile once per source; None (also cached) for a template that does not compile."""
    try:
        return _TEMPLATES.from_string(source)
    except TemplateSyntaxError as exc:
        log.warning("summary template does not compile (%s); using the plain summary", exc)
        return None
