"""Throughput of the rule engine: samples per second with 10,000 series and 200 rules.

    python bench/rules.py [--rounds 60] [--series 500] [--steady 10] [--profile]

Builds the daemon's `Engine` in-process on a throw-away state store, with 200 rules over 20
metric names (10 rules per metric, so each sample is evaluated by 10 rules): thresholds with
critical levels, `for`, `clear` hysteresis, `keep_firing_for`, trend prediction (`window`,
`predict`, `eta`), `slope` and counter `rate` over a window, X-within-Y (`times`/`checks`),
label filters and `group_by`. 16 metrics are percentages (disk, memory, ...), 4 are error
counters; each metric has 500 series with distinct labels.

Every round is one probe interval (10 s of simulated time): each of the 20 probes hands over
its batch of 500 samples, which goes through `Engine.process` as the daemon does it, then
`Engine.tick` runs once. Values are mostly healthy; about 3 % of the series are in trouble at
any time (episodes of 2 to 12 rounds) and 2 % of the gauges fill up steadily, so alerts go
pending, fire, resolve and open incidents with their outbox rows. Time is simulated (`now` is
passed), so the figures are pure engine cost: evaluation, SQLite writes (the store's
`synchronous=FULL` commits included), incident decisions. Samples per second are measured on
the wall clock; samples per CPU second too, which other jobs on a shared machine do not skew.
By the 60th round every history window (at most 10 min) is full: `--steady` rounds at the end
give the figure of a daemon that has been running for a while.

Prints a short summary, then one `name value unit` line per figure. `--profile` runs the same
workload under cProfile and prints the functions that cost most.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.engine import Engine, EngineSettings
from monitor.metrics import Metrics
from monitor.store import Store
from probes.base import Sample
from rules import Rule, Severity, compile_condition, evaluate, matches
from rules.alerts import HISTORY_POINTS

T0 = 1_800_000_000.0
INTERVAL = 10.0  # seconds of simulated time per round
GAUGES = 16
COUNTERS = 4
TROUBLE_SHARE = 0.03
FILLING_SHARE = 0.02
SETTINGS = EngineSettings(
    hostname="bench",
    reopen_within=3600.0,
    backend="builtin",
    helpdesk_emails=("helpdesk@example.com",),
    email_enabled=True,
)

# Ten rule shapes per kind of metric: (condition, options of the Rule).
GAUGE_RULES: list[tuple[str, dict[str, Any]]] = [
    ("value > 90", {"critical": "value > 97"}),
    ("value > 85", {"for_seconds": 30.0, "clear": "value < 80"}),
    ("value > 80 and eta < 3600", {"window": 600.0, "predict": 100.0, "for_seconds": 60.0}),
    ("value > 95", {"times": 3, "checks": 10}),
    ("value > 75 and slope > 0.05", {"window": 300.0}),
    ("value > 99", {"severity": Severity.CRITICAL, "keep_firing_for": 60.0}),
    ('value > 92 and labels.tier == "prod"', {"for_seconds": 20.0}),
    ("value < 0.5", {}),
    ("error is not none", {}),
    ("value > 88", {"for_seconds": 120.0, "group_by": ("host",)}),
]
COUNTER_RULES: list[tuple[str, dict[str, Any]]] = [
    ("rate > 5", {"window": 120.0}),
    ("rate > 2", {"window": 300.0, "for_seconds": 60.0}),
    ("rate > 10", {"window": 60.0, "critical": "rate > 50"}),
    ("rate > 1", {"window": 60.0, "times": 3, "checks": 10}),
    ("value > 1e9", {}),
    ('rate > 20 and labels.tier == "prod"', {"window": 120.0}),
    ("slope > 3", {"window": 300.0}),
    ("rate > 0.5", {"window": 600.0, "keep_firing_for": 120.0}),
    ("error is not none", {}),
    ("rate > 8", {"window": 120.0, "group_by": ("host",)}),
]


def metric_names() -> list[str]:
    gauges = [f"bench_gauge_{i:02d}_percent" for i in range(GAUGES)]
    return gauges + [f"bench_errors_{i:02d}_total" for i in range(COUNTERS)]


def build_rules(metrics: list[str]) -> list[Rule]:
    rules = []
    for metric in metrics:
        shapes = COUNTER_RULES if metric.endswith("_total") else GAUGE_RULES
        for n, (condition, options) in enumerate(shapes):
            rules.append(_rule(f"{metric}_r{n}", metric, condition, options))
    return rules


def _rule(name: str, metric: str, condition: str, options: dict[str, Any]) -> Rule:
    compiled = {k: compile_condition(v) for k, v in options.items() if k in ("clear", "critical")}
    return Rule(
        name=name,
        metric=metric,
        condition=compile_condition(condition),
        **{**options, **compiled},
    )


@dataclass
class Series:
    """One simulated series: its labels, level and trouble episode."""

    labels: dict[str, str]
    counter: bool
    level: float
    trouble_left: int = 0
    filling: bool = False


def build_series(metrics: list[str], per_metric: int, rng: random.Random) -> list[list[Series]]:
    """The series of each probe (one probe per metric)."""
    probes = []
    for m, metric in enumerate(metrics):
        counter = metric.endswith("_total")
        probes.append(
            [
                Series(
                    labels={
                        "probe": f"probe{m:02d}",
                        "host": f"host{i % 50:02d}",
                        "item": f"item{i:03d}",
                        "tier": "prod" if i % 3 == 0 else "test",
                    },
                    counter=counter,
                    level=rng.uniform(0, 1000) if counter else rng.uniform(10, 60),
                    filling=not counter and rng.random() < FILLING_SHARE,
                )
                for i in range(per_metric)
            ]
        )
    return probes


def step(series: Series, rng: random.Random) -> tuple[float, str | None]:
    """The next value of `series` (and a probe error, rarely)."""
    if series.trouble_left:
        series.trouble_left -= 1
    elif rng.random() < TROUBLE_SHARE / 7:  # episodes last 7 rounds on average
        series.trouble_left = rng.randint(2, 12)
    if rng.random() < 0.001:
        return float("nan"), "timed out"
    if series.counter:
        series.level += rng.uniform(100, 600) if series.trouble_left else rng.uniform(0, 5)
        return series.level, None
    if series.filling:
        series.level = series.level + 1.5 if series.level < 100 else 40.0  # a cleanup
        return series.level, None
    base = series.level + rng.uniform(-2, 2)
    return (rng.uniform(91, 100) if series.trouble_left else base), None


def batch(probe: list[Series], metric: str, now: float, rng: random.Random) -> list[Sample]:
    samples = []
    for series in probe:
        value, error = step(series, rng)
        samples.append(Sample(metric, value, now, series.labels, error))
    return samples


@dataclass
class Figures:
    rules: int = 0
    series: int = 0
    evaluations_per_round: int = 0
    round_samples: list[int] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)  # wall time in Engine.process
    round_cpu: list[float] = field(default_factory=list)  # CPU time in Engine.process
    transitions: int = 0
    tick_seconds: float = 0.0

    def samples_per_second(self, last: int = 0) -> float:
        """Over the last `last` rounds; 0: all of them (`[-0:]` is the whole list)."""
        return sum(self.round_samples[-last:]) / sum(self.round_seconds[-last:])

    def samples_per_cpu_second(self, last: int = 0) -> float:
        """Robust on a shared machine: other jobs lengthen wall time, not this CPU time."""
        return sum(self.round_samples[-last:]) / sum(self.round_cpu[-last:])

    def evaluations_per_second(self, last: int = 0) -> float:
        rounds = len(self.round_seconds[-last:])
        return rounds * self.evaluations_per_round / sum(self.round_seconds[-last:])


def evaluations_per_round(rules: list[Rule], probes: list[list[Series]], metrics: list[str]) -> int:
    """Rule evaluations of one round: the matching rules of every series."""
    total = 0
    for metric, probe in zip(metrics, probes, strict=True):
        for series in probe:
            sample = Sample(metric, 0.0, T0, series.labels)
            total += sum(matches(rule, sample) for rule in rules)
    return total


def run(
    engine: Engine,
    probes: list[list[Series]],
    metrics: list[str],
    rounds: int,
    rng: random.Random,
    figures: Figures,
) -> None:
    for r in range(rounds):
        start = T0 + r * INTERVAL
        seconds = cpu = 0.0
        samples = 0
        for p, (metric, probe) in enumerate(zip(metrics, probes, strict=True)):
            now = start + p * INTERVAL / len(probes)  # probes spread over the interval
            batch_ = batch(probe, metric, now, rng)
            began, began_cpu = time.perf_counter(), time.process_time()
            figures.transitions += engine.process(batch_, now)
            seconds += time.perf_counter() - began
            cpu += time.process_time() - began_cpu
            samples += len(batch_)
        figures.round_seconds.append(seconds)
        figures.round_cpu.append(cpu)
        figures.round_samples.append(samples)
        began = time.perf_counter()
        figures.transitions += engine.tick(start + INTERVAL - 0.01)
        figures.tick_seconds += time.perf_counter() - began


def workload(state: Path, rounds: int, per_metric: int, seed: int) -> tuple[Figures, Store]:
    rng = random.Random(seed)
    metrics = metric_names()
    rules = build_rules(metrics)
    probes = build_series(metrics, per_metric, rng)
    store = Store(state / "forewarn.db")
    engine = Engine(store, rules, SETTINGS, Metrics(), snapshot=dict)
    figures = Figures(
        rules=len(rules),
        series=sum(len(probe) for probe in probes),
        evaluations_per_round=evaluations_per_round(rules, probes, metrics),
    )
    run(engine, probes, metrics, rounds, rng, figures)
    return figures, store


def full_history_microseconds(repeat: int = 2000) -> float:
    """One evaluation of a predicting rule whose history is full (HISTORY_POINTS points)."""
    rule = _rule(
        "disk_fill",
        "disk_used_percent",
        "value > 80 and eta < 3600",
        {"window": 6 * 3600.0, "predict": 100.0, "for_seconds": 600.0},
    )
    labels = {"mountpoint": "/"}
    state = None
    step_seconds = rule.window / HISTORY_POINTS
    for n in range(HISTORY_POINTS + 10):
        t = T0 + n * step_seconds
        state = evaluate(rule, state, Sample(rule.metric, 50 + n * 0.01, t, labels), t).state
    t += step_seconds
    sample = Sample(rule.metric, 60.0, t, labels)
    began = time.perf_counter()
    for _ in range(repeat):
        evaluate(rule, state, sample, t)
    return 1e6 * (time.perf_counter() - began) / repeat


def count(store: Store, sql: str) -> int:
    return int(store.query(sql)[0][0])


def report(figures: Figures, store: Store, steady: int) -> None:
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tick_ms = 1000 * figures.tick_seconds / len(figures.round_seconds)
    incidents = count(store, "SELECT COUNT(*) FROM incident")
    outbox = count(store, "SELECT COUNT(*) FROM outbox")
    full_history_us = full_history_microseconds()
    print(
        f"{figures.series} series, {figures.rules} rules, {len(figures.round_seconds)} rounds: "
        f"{sum(figures.round_samples)} samples in {sum(figures.round_seconds):.1f} s of "
        f"Engine.process ({sum(figures.round_cpu):.1f} s CPU), "
        f"{figures.samples_per_second():.0f} samples/s "
        f"({figures.evaluations_per_second():.0f} rule evaluations/s), "
        f"{figures.samples_per_second(steady):.0f} samples/s over the last {steady} rounds; "
        f"{figures.transitions} transitions, {incidents} incidents, {outbox} outbox rows; "
        f"Engine.tick {tick_ms:.0f} ms; peak RSS {peak_rss_mib:.0f} MiB; one evaluation of a "
        f"predicting rule on a full {HISTORY_POINTS}-point history {full_history_us:.0f} us"
    )
    print(f"rules_samples_per_second {figures.samples_per_second():.0f} 1/s")
    print(f"rules_evaluations_per_second {figures.evaluations_per_second():.0f} 1/s")
    print(f"rules_samples_per_second_steady {figures.samples_per_second(steady):.0f} 1/s")
    print(f"rules_samples_per_cpu_second {figures.samples_per_cpu_second():.0f} 1/s")
    print(f"rules_samples_per_cpu_second_steady {figures.samples_per_cpu_second(steady):.0f} 1/s")
    print(f"rules_tick_milliseconds {tick_ms:.1f} ms")
    print(f"rules_transitions {figures.transitions} 1")
    print(f"rules_incidents {incidents} 1")
    print(f"rules_peak_rss {peak_rss_mib:.1f} MiB")
    print(f"rules_full_history_evaluation_microseconds {full_history_us:.0f} us")


def profile(state: Path, rounds: int, per_metric: int, seed: int, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    _figures, store = workload(state, rounds, per_metric, seed)
    profiler.disable()
    store.close()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    print(out.getvalue(), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60, help="probe intervals simulated")
    parser.add_argument("--steady", type=int, default=10, help="last rounds for a steady figure")
    parser.add_argument("--series", type=int, default=500, help="series per metric")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="run under cProfile instead")
    parser.add_argument("--top", type=int, default=30, help="functions listed by --profile")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="forewarn-bench-") as tmp:
        if args.profile:
            profile(Path(tmp), args.rounds, args.series, args.seed, args.top)
            return
        figures, store = workload(Path(tmp), args.rounds, args.series, args.seed)
        report(figures, store, min(args.steady, args.rounds))
        store.close()


if __name__ == "__main__":
    main()
