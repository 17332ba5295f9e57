"""`forewarn check`: run every probe once and show each sample with the rules' verdicts."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from monitor.config import Config
from monitor.daemon import build_jobs
from monitor.metrics import Metrics
from monitor.scheduler import ProbeRunner
from probes.base import Sample
from rules import Phase, Rule, Severity, evaluate, matches

WARM_UP = 0.5  # rate-based probes (cpu) measure between two calls


@dataclass(frozen=True)
class Verdict:
    rule: str
    phase: Phase
    severity: Severity
    for_seconds: float

    @property
    def text(self) -> str:
        if self.phase is Phase.FIRING:
            return f"FIRING {self.rule} ({self.severity.label})"
        if self.phase is Phase.PENDING:
            return f"PENDING {self.rule} ({self.severity.label} after {self.for_seconds:g}s)"
        return f"ok {self.rule}"


@dataclass(frozen=True)
class CheckRow:
    sample: Sample
    verdicts: tuple[Verdict, ...]

    @property
    def failing(self) -> bool:
        return any(v.phase in (Phase.FIRING, Phase.PENDING) for v in self.verdicts)

    def cells(self) -> list[str]:
        labels = {k: v for k, v in self.sample.labels.items() if k != "probe"}
        verdict = "; ".join(v.text for v in self.verdicts) or "-"
        if self.sample.error:
            verdict = f"{verdict}  [{self.sample.error}]"
        return [
            self.sample.labels.get("probe", "?"),
            self.sample.metric,
            ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            _number(self.sample.value),
            verdict,
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.sample.metric,
            "labels": self.sample.labels,
            "value": self.sample.value if math.isfinite(self.sample.value) else None,
            "error": self.sample.error,
            "verdicts": [
                {"rule": v.rule, "state": v.phase.value, "severity": v.severity.label}
                for v in self.verdicts
            ],
        }


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return (
        f"{value:.0f}"
        if value.is_integer()
        else f"{value:.3g}"
        if abs(value) < 1
        else f"{value:.1f}"
    )


def run_check(config: Config) -> list[CheckRow]:
    samples = _collect_all(config)
    now = time.time()
    return [CheckRow(s, _verdicts(config.rules, s, now)) for s in samples]


def _collect_all(config: Config) -> list[Sample]:
    collected: list[Sample] = []
    runners = [
        ProbeRunner(job, lambda _name, batch: collected.extend(batch), Metrics())
        for job in build_jobs(config, keep_state=False)
    ]
    for runner in runners:  # the first run gives rate-based probes their baseline
        runner.run()
    collected.clear()
    time.sleep(WARM_UP)
    for runner in runners:
        runner.run()
    return collected


def _verdicts(rules: tuple[Rule, ...], sample: Sample, now: float) -> tuple[Verdict, ...]:
    verdicts = []
    for rule in rules:
        if matches(rule, sample):
            state = evaluate(rule, None, sample, now).state
            verdicts.append(Verdict(rule.name, state.phase, state.severity, rule.for_seconds))
    return tuple(verdicts)
