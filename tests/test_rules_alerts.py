"""The alert state machine stepped to the second, summaries, matching and fingerprints."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from probes.base import Sample
from rules import (
    AlertState,
    Evaluation,
    Phase,
    Rule,
    Severity,
    TransitionKind,
    compile_condition,
    evaluate,
    fingerprint,
    marker,
    matches,
    render_summary,
    validate_template,
)
from rules.alerts import _compiled

DISK_LABELS = {"probe": "disk", "mountpoint": "/"}


def disk_rule(**changes: object) -> Rule:
    base = Rule(
        name="disk_full",
        metric="disk_used_percent",
        condition=compile_condition("value > 90"),
        for_seconds=30.0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def sample(value: float, labels: dict[str, str] | None = None, error: str | None = None) -> Sample:
    return Sample(
        "disk_used_percent", value, 0.0, dict(DISK_LABELS if labels is None else labels), error
    )


def run(rule: Rule, series: list[tuple[float, float]]) -> list[Evaluation]:
    """Step `rule` through (now, value) pairs, feeding each state into the next step."""
    state: AlertState | None = None
    steps = []
    for now, value in series:
        step = evaluate(rule, state, sample(value), now)
        steps.append(step)
        state = step.state
    return steps


def kind(step: Evaluation) -> str:
    return "" if step.transition is None else str(step.transition.kind)


# --- golden series ------------------------------------------------------------------------
# Rule: condition value > 90 for 30s, clear value < 80, critical value > 98, severity warning.
# Columns: now, value, phase, transition, severity, changed_at, active_since ("-" for none).
GOLDEN = """
  0,  50, inactive,                 , warning,   0,   -
 10,  91, pending,                  , warning,  10,  10
 39,  92, pending,                  , warning,  10,  10
 40,  93, firing,   fired,            warning,  40,  10
 45,  93, firing,                   , warning,  40,  10
 50,  99, firing,   severity_changed, critical, 40,  10
 55,  99, firing,                   , critical, 40,  10
 60,  85, firing,   severity_changed, warning,  40,  10
 65,  80, firing,                   , warning,  40,  10
 70,  79, resolved, resolved,         warning,  70,  10
 80,  85, resolved,                 , warning,  70,  10
 90,  95, pending,                  , warning,  90,  90
100,  70, inactive,                 , warning, 100,   -
110,  99, pending,                  , critical, 110, 110
139,  99, pending,                  , critical, 110, 110
140,  99, firing,   fired,            critical, 140, 110
150,  10, resolved, resolved,         critical, 150, 110
"""


def golden_rows() -> list[list[str]]:
    return [[cell.strip() for cell in line.split(",")] for line in GOLDEN.strip().splitlines()]


def test_golden_series_with_hysteresis_and_escalation() -> None:
    rule = disk_rule(
        clear=compile_condition("value < 80"), critical=compile_condition("value > 98")
    )
    rows = golden_rows()
    steps = run(rule, [(float(row[0]), float(row[1])) for row in rows])
    for row, step in zip(rows, steps, strict=True):
        now, _, phase, transition, severity, changed_at, active_since = row
        state = step.state
        seen = (state.phase, kind(step), state.severity.label, state.changed_at, state.active_since)
        expected = (
            Phase(phase),
            transition,
            severity,
            float(changed_at),
            None if active_since == "-" else float(active_since),
        )
        assert seen == expected, f"at t={now}"
        assert step.notes == ()


def test_for_30s_pending_at_0_still_pending_at_29_firing_at_30() -> None:
    steps = run(disk_rule(), [(0.0, 95.0), (29.0, 95.0), (30.0, 95.0), (31.0, 95.0)])
    assert [s.state.phase for s in steps] == [
        Phase.PENDING,
        Phase.PENDING,
        Phase.FIRING,
        Phase.FIRING,
    ]
    assert [kind(s) for s in steps] == ["", "", "fired", ""]
    assert steps[2].state.changed_at == 30.0
    assert steps[3].state.active_since == 0.0


def test_pending_that_lapses_starts_over() -> None:
    steps = run(disk_rule(), [(0.0, 95.0), (29.0, 50.0), (30.0, 95.0), (59.0, 95.0), (60.0, 95.0)])
    assert [s.state.phase for s in steps] == [
        Phase.PENDING,
        Phase.INACTIVE,
        Phase.PENDING,
        Phase.PENDING,
        Phase.FIRING,
    ]
    assert steps[1].transition is None
    assert steps[1].state.active_since is None
    assert steps[4].state.active_since == 30.0


def test_without_for_it_fires_on_the_first_sample() -> None:
    step = evaluate(disk_rule(for_seconds=0.0), None, sample(95.0), 1000.0)
    assert step.state.phase is Phase.FIRING
    assert step.transition is not None
    assert step.transition.kind is TransitionKind.FIRED
    assert step.transition.alert == step.state
    assert (step.state.changed_at, step.state.active_since) == (1000.0, 1000.0)


def test_without_clear_it_resolves_as_soon_as_the_condition_is_false() -> None:
    steps = run(disk_rule(for_seconds=0.0), [(0.0, 95.0), (5.0, 90.5), (10.0, 90.0)])
    assert [kind(s) for s in steps] == ["fired", "", "resolved"]
    assert steps[2].state.phase is Phase.RESOLVED
    assert steps[2].state.changed_at == 10.0


def test_fired_carries_the_severity_at_the_time_of_firing() -> None:
    rule = disk_rule(
        for_seconds=0.0, severity=Severity.INFO, critical=compile_condition("value > 98")
    )
    steps = run(rule, [(0.0, 99.0), (10.0, 95.0)])
    assert steps[0].transition is not None
    assert steps[0].transition.alert.severity is Severity.CRITICAL
    second = steps[1].transition
    assert second is not None
    assert second.kind is TransitionKind.SEVERITY_CHANGED
    assert (second.previous_severity, second.alert.severity) == (Severity.CRITICAL, Severity.INFO)


def test_inactive_alert_has_the_rule_severity_even_when_critical_holds() -> None:
    rule = disk_rule(
        condition=compile_condition("value > 200"), critical=compile_condition("value > 98")
    )
    assert evaluate(rule, None, sample(99.0), 0.0).state.severity is Severity.WARNING


def test_value_error_and_evaluated_at_follow_every_sample() -> None:
    first = evaluate(disk_rule(), None, sample(95.0), 0.0).state
    second = evaluate(disk_rule(), first, sample(96.5, error="slow statvfs"), 7.0).state
    assert (second.value, second.error, second.evaluated_at) == (96.5, "slow statvfs", 7.0)
    assert (second.phase, second.changed_at) == (Phase.PENDING, 0.0)


def test_state_keeps_its_own_copy_of_the_labels() -> None:
    probe_sample = Sample("disk_used_percent", 95.0, 0.0, {"probe": "disk", "mountpoint": "/"})
    state = evaluate(disk_rule(), None, probe_sample, 0.0).state
    probe_sample.labels["mountpoint"] = "/home"  # the probe's dict is not the stored one
    assert state.labels == DISK_LABELS
    assert state.fingerprint == fingerprint("disk_full", DISK_LABELS)


def test_conditions_see_metric_labels_and_error() -> None:
    rule = disk_rule(
        for_seconds=0.0,
        condition=compile_condition(
            'metric == "disk_used_percent" and labels.mountpoint == "/" and "EIO" in error'
        ),
    )
    assert evaluate(rule, None, sample(1.0, error="EIO reading"), 0.0).state.phase is Phase.FIRING
    other = sample(1.0, {"mountpoint": "/srv"}, error="EIO reading")
    assert evaluate(rule, None, other, 0.0).state.phase is Phase.INACTIVE


def test_nan_value_does_not_fire() -> None:
    step = evaluate(disk_rule(for_seconds=0.0), None, sample(math.nan), 0.0)
    assert step.state.phase is Phase.INACTIVE
    assert step.notes == ()


# --- conditions that fail -----------------------------------------------------------------


def test_condition_error_is_a_note_and_counts_as_false() -> None:
    rule = disk_rule(for_seconds=0.0, condition=compile_condition("labels.queue_depth > 5"))
    step = evaluate(rule, None, sample(95.0), 0.0)
    assert step.state.phase is Phase.INACTIVE
    assert step.transition is None
    assert len(step.notes) == 1
    assert step.notes[0].startswith("condition: 'labels.queue_depth > 5' failed")


def test_critical_error_keeps_the_rule_severity_and_is_noted() -> None:
    rule = disk_rule(for_seconds=0.0, critical=compile_condition('value > "high"'))
    step = evaluate(rule, None, sample(95.0), 0.0)
    assert (step.state.phase, step.state.severity) == (Phase.FIRING, Severity.WARNING)
    assert len(step.notes) == 1
    assert "critical" in step.notes[0]


def test_clear_error_keeps_a_firing_alert_firing() -> None:
    rule = disk_rule(for_seconds=0.0, clear=compile_condition("labels.missing < 80"))
    fired = evaluate(rule, None, sample(95.0), 0.0).state
    step = evaluate(rule, fired, sample(10.0), 5.0)
    assert step.state.phase is Phase.FIRING
    assert step.transition is None
    assert "clear" in step.notes[0]


def test_sandbox_violation_in_a_condition_is_a_note() -> None:
    rule = disk_rule(for_seconds=0.0, condition=compile_condition("labels.clear() or value > 1"))
    step = evaluate(rule, None, sample(95.0), 0.0)
    assert step.state.phase is Phase.INACTIVE
    assert "unsafe" in step.notes[0]


# --- matching -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule_probe", "metric", "labels", "expected"),
    [
        (None, "disk_used_percent", {"probe": "disk"}, True),
        (None, "disk_used_percent", {}, True),
        (None, "memory_used_percent", {"probe": "disk"}, False),
        ("disk", "disk_used_percent", {"probe": "disk"}, True),
        ("disk", "disk_used_percent", {"probe": "nfs_disk"}, False),
        ("disk", "disk_used_percent", {}, False),
        ("disk", "memory_used_percent", {"probe": "disk"}, False),
    ],
)
def test_matches_metric_and_probe(
    rule_probe: str | None, metric: str, labels: dict[str, str], expected: bool
) -> None:
    probe_sample = Sample(metric, 1.0, 0.0, labels)
    assert matches(disk_rule(probe=rule_probe), probe_sample) is expected


# --- summaries ----------------------------------------------------------------------------


def firing_state(
    labels: dict[str, str], value: float = 93.25, error: str | None = None
) -> AlertState:
    return evaluate(disk_rule(for_seconds=0.0), None, sample(value, labels, error), 0.0).state


def test_summary_renders_labels_value_and_rule() -> None:
    rule = disk_rule(
        summary="{{ rule }}: {{ labels.mountpoint }} is {{ value | round(1) }}% full "
        "({{ severity }})"
    )
    assert render_summary(rule, firing_state(DISK_LABELS)) == "disk_full: / is 93.2% full (warning)"


@pytest.mark.parametrize("hostile", ["{{ 7*7 }}", "{% raw %}", "{% endraw %}{{ 7*7 }}", "<b>&"])
def test_hostile_label_values_appear_literally(hostile: str) -> None:
    rule = disk_rule(summary="process {{ labels.name }} is down")
    state = firing_state({"probe": "process", "name": hostile})
    assert render_summary(rule, state) == f"process {hostile} is down"


def test_hostile_label_in_the_plain_summary_is_not_executed() -> None:
    state = firing_state({"name": "{{ 7*7 }}"})
    assert "{{ 7*7 }}" in render_summary(disk_rule(), state)


def test_label_with_newlines_cannot_add_lines_to_the_title() -> None:
    rule = disk_rule(summary="{{ labels.name }} down")
    state = firing_state({"name": "web\r\nBcc: victim@example.org"})
    assert render_summary(rule, state) == "web Bcc: victim@example.org down"


def test_plain_summary_when_no_template() -> None:
    state = firing_state(DISK_LABELS, value=93.25, error="EIO")
    assert render_summary(disk_rule(), state) == (
        "disk_full: disk_used_percent = 93.25 {mountpoint='/', probe='disk'} (EIO)"
    )


def test_plain_summary_writes_whole_numbers_without_decimals() -> None:
    state = firing_state({}, value=95.0)
    assert render_summary(disk_rule(), state) == "disk_full: disk_used_percent = 95 {}"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",  # sandbox escape attempt
        "{{ labels.update({'mountpoint': 'x'}) }}",  # the immutable sandbox forbids mutation
        "{{ value / 0 }}",  # runtime error
        "{{ value ",  # does not compile
        "   ",  # blank
        "{{ labels.nothing }}",  # renders to nothing
    ],
)
def test_summary_falls_back_to_plain_line(template: str) -> None:
    state = firing_state(DISK_LABELS)
    assert render_summary(disk_rule(summary=template), state) == render_summary(disk_rule(), state)
    assert state.labels == DISK_LABELS


def test_templates_are_compiled_once_per_source() -> None:
    source = "{{ labels.mountpoint }} once"
    assert _compiled(source) is _compiled(source)
    assert _compiled("{{ broken") is None


def test_validate_template() -> None:
    validate_template("{{ labels.mountpoint }} at {{ value }}%")
    with pytest.raises(ValueError, match="line 1"):
        validate_template("{{ value ")
    with pytest.raises(ValueError, match="not a valid template"):
        validate_template("{% if value %}never closed")


# --- fingerprints -------------------------------------------------------------------------


def test_fingerprint_is_pinned_because_it_is_stored_and_written_into_tickets() -> None:
    assert fingerprint("disk_full", {"mountpoint": "/", "probe": "disk"}) == "2499738ca858d2c0"


def test_fingerprint_ignores_label_order() -> None:
    forward = {"a": "1", "b": "2"}
    backward = {"b": "2", "a": "1"}
    assert fingerprint("r", forward) == fingerprint("r", backward)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (("r", {"a": "b=c"}), ("r", {"a=b": "c"})),
        (("r", {"a": "1", "b": "2"}), ("r", {"a": "1,b=2"})),
        (("r,a", {}), ("r", {"a": ""})),
        (("disk_full", {"mountpoint": "/"}), ("disk_full", {"mountpoint": "/home"})),
    ],
)
def test_fingerprint_cannot_be_forged_by_separators(
    left: tuple[str, dict[str, str]], right: tuple[str, dict[str, str]]
) -> None:
    assert fingerprint(*left) != fingerprint(*right)


def test_marker() -> None:
    fp = fingerprint("disk_full", DISK_LABELS)
    assert len(fp) == 16
    assert int(fp, 16) >= 0
    assert marker(fp) == f"[forewarn:{fp}]"
