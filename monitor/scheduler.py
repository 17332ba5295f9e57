"""Runs every probe at its interval with APScheduler 3, isolated from the others.

Each run happens in a thread of its own, joined with the probe's timeout: a probe that raises
or hangs becomes an error sample and a counter, and never holds a scheduler worker. A hung run
is remembered; until it returns, the probe's later runs report it instead of starting another
thread, so one stuck probe costs one thread, not one per interval.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.metrics import Metrics
from probes.base import Probe, Sample, WatchingProbe, probe_up_sample

log = logging.getLogger(__name__)

Sink = Callable[[str, list[Sample]], None]
WATCH_RETRY = 5.0  # seconds before a failed watcher starts again


@dataclass(frozen=True)
class ScheduledProbe:
    probe: Probe
    interval: float
    timeout: float
    jitter: float


class ProbeRunner:
    """One probe's runs: collect with a timeout, label the samples, hand them to the sink."""

    def __init__(
        self,
        job: ScheduledProbe,
        sink: Sink,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.job = job
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self._hung: threading.Thread | None = None
        self._hung_since = 0.0

    @property
    def name(self) -> str:
        return self.job.probe.name

    def run(self) -> None:
        now = self.clock()
        if self._hung is not None and self._hung.is_alive():
            waited = now - self._hung_since
            self._emit(now, [], f"still hung: the run started {waited:.0f}s ago has not returned")
            return
        self._hung = None
        samples, error = self._collect(now)
        self.metrics.probe_duration.labels(probe=self.name, kind=self.job.probe.kind).observe(
            self.clock() - now
        )
        self._emit(now, samples, error)

    def _collect(self, now: float) -> tuple[list[Sample], str | None]:
        collected: list[Sample] = []
        errors: list[str] = []

        def target() -> None:
            try:
                collected.extend(self.job.probe.collect(now))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

        thread = threading.Thread(target=target, name=f"probe-{self.name}", daemon=True)
        thread.start()
        thread.join(self.job.timeout)
        if thread.is_alive():
            self._hung, self._hung_since = thread, now
            return [], f"timed out after {self.job.timeout:g}s"
        if errors:
            return [], errors[0]
        return collected, None

    def _emit(self, now: float, samples: list[Sample], error: str | None) -> None:
        if error:
            log.warning("probe %s: %s", self.name, error)
            self.metrics.probe_errors.labels(probe=self.name, kind=self.job.probe.kind).inc()
        labelled = [_with_probe(s, self.name) for s in samples]
        labelled.append(probe_up_sample(self.name, self.job.probe.kind, now, error))
        self.sink(self.name, labelled)

    def watch(self, stop: threading.Event) -> None:
        """Run the probe's `watch` until `stop`; restart it after a pause when it fails."""
        probe = self.job.probe
        assert isinstance(probe, WatchingProbe)
        while not stop.is_set():
            try:
                probe.watch(self._emit_event, stop)
            except Exception as exc:
                log.warning(
                    "probe %s: watching failed, retrying in %gs: %s", self.name, WATCH_RETRY, exc
                )
                self.metrics.probe_errors.labels(probe=self.name, kind=probe.kind).inc()
            stop.wait(WATCH_RETRY)

    def _emit_event(self, samples: list[Sample]) -> None:
        self.sink(self.name, [_with_probe(s, self.name) for s in samples])


def _with_probe(sample: Sample, probe: str) -> Sample:
    return dataclasses.replace(sample, labels={**sample.labels, "probe": probe})


class ProbeScheduler:
    """The APScheduler instance and the probes' jobs on it."""

    def __init__(self, sink: Sink, metrics: Metrics) -> None:
        self.sink = sink
        self.metrics = metrics
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=16)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone="UTC",
        )
        self.runners: dict[str, ProbeRunner] = {}
        self._watching: list[threading.Event] = []

    def start(self, jobs: Sequence[ScheduledProbe]) -> None:
        self._scheduler.start()
        self.replace(jobs)

    def replace(self, jobs: Sequence[ScheduledProbe]) -> None:
        """Swap the whole set of probes (on reload); each new probe runs once at once."""
        self._scheduler.remove_all_jobs()
        self.runners = {job.probe.name: ProbeRunner(job, self.sink, self.metrics) for job in jobs}
        for runner in self.runners.values():
            job = runner.job
            self._scheduler.add_job(
                runner.run,
                IntervalTrigger(seconds=job.interval, jitter=job.jitter or None),
                id=runner.name,
                name=runner.name,
                misfire_grace_time=max(1, int(job.interval)),
                next_run_time=datetime.now(UTC),
            )
        self._restart_watchers()

    def run_all_now(self) -> None:
        """Every probe runs now and its schedule starts afresh: after a step of the wall clock,
        on which APScheduler keeps its run times (a step back would hold them off)."""
        now = datetime.now(UTC)
        for job in self._scheduler.get_jobs():
            job.modify(next_run_time=now)

    def _restart_watchers(self) -> None:
        """One thread per watching probe; the old set stops first."""
        self._stop_watchers()
        for runner in self.runners.values():
            if isinstance(runner.job.probe, WatchingProbe):
                stop = threading.Event()
                threading.Thread(
                    target=runner.watch, args=(stop,), name=f"watch-{runner.name}", daemon=True
                ).start()
                self._watching.append(stop)

    def _stop_watchers(self) -> None:
        for stop in self._watching:
            stop.set()
        self._watching = []

    def shutdown(self) -> None:
        # Do not wait: a hung probe thread must not hold up an ordered shutdown.
        self._scheduler.shutdown(wait=False)
        self._stop_watchers()
