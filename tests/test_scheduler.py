"""The real APScheduler with a probe that never returns: the others keep their schedule."""

from __future__ import annotations

import itertools
import threading
import time
from typing import ClassVar

from monitor.metrics import Metrics
from monitor.scheduler import ProbeRunner, ProbeScheduler, ScheduledProbe
from probes.base import PROBE_UP, Sample


class TickProbe:
    kind: ClassVar[str] = "tick"

    def __init__(self, name: str) -> None:
        self.name = name

    def collect(self, now: float) -> list[Sample]:
        return [Sample("tick", 1.0, now)]


class HangingProbe:
    kind: ClassVar[str] = "hang"

    def __init__(self, name: str, release: threading.Event) -> None:
        self.name = name
        self.release = release
        self.started = 0

    def collect(self, now: float) -> list[Sample]:
        self.started += 1
        self.release.wait()  # "forever", until the test ends
        return []


class BrokenProbe:
    kind: ClassVar[str] = "broken"

    def __init__(self, name: str) -> None:
        self.name = name

    def collect(self, now: float) -> list[Sample]:
        raise OSError("device not ready")


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[str, list[Sample]]] = []
        self.lock = threading.Lock()

    def __call__(self, probe: str, samples: list[Sample]) -> None:
        with self.lock:
            self.batches.append((probe, samples))

    def of(self, probe: str) -> list[list[Sample]]:
        with self.lock:
            return [s for p, s in self.batches if p == probe]


def test_hung_probe_does_not_delay_the_others() -> None:
    release = threading.Event()
    hanging = HangingProbe("stuck", release)
    recorder, metrics = Recorder(), Metrics()
    scheduler = ProbeScheduler(recorder, metrics)
    scheduler.start(
        [
            ScheduledProbe(TickProbe("fast"), interval=1.0, timeout=0.5, jitter=0.0),
            ScheduledProbe(hanging, interval=1.0, timeout=0.5, jitter=0.0),
        ]
    )
    try:
        time.sleep(5.3)
    finally:
        scheduler.shutdown()
        release.set()

    fast_times = [b[0].timestamp for b in recorder.of("fast")]
    assert len(fast_times) >= 5
    gaps = [b - a for a, b in itertools.pairwise(fast_times)]
    assert all(0.8 < gap < 1.2 for gap in gaps), gaps

    stuck = recorder.of("stuck")
    assert len(stuck) >= 4  # an error sample every interval, not silence
    ups = [s for batch in stuck for s in batch if s.metric == PROBE_UP]
    assert all(s.value == 0.0 for s in ups)
    assert "timed out after 0.5s" in (ups[0].error or "")
    assert "still hung" in (ups[-1].error or "")
    assert hanging.started == 1  # one stuck thread, not one per interval
    errors = metrics.registry.get_sample_value(
        "forewarn_probe_errors_total", {"probe": "stuck", "kind": "hang"}
    )
    assert errors is not None and errors >= 4


def test_raising_probe_becomes_an_error_sample() -> None:
    recorder, metrics = Recorder(), Metrics()
    runner = ProbeRunner(ScheduledProbe(BrokenProbe("disk0"), 10, 1, 0), recorder, metrics)
    runner.run()
    [(probe, samples)] = recorder.batches
    assert probe == "disk0"
    [up] = samples
    assert (up.metric, up.value, up.labels) == (PROBE_UP, 0.0, {"probe": "disk0", "kind": "broken"})
    assert up.error == "OSError: device not ready"


def test_samples_get_the_probe_label_and_an_up_sample() -> None:
    recorder = Recorder()
    ProbeRunner(
        ScheduledProbe(TickProbe("t"), 10, 1, 0), recorder, Metrics(), clock=lambda: 42.0
    ).run()
    [(_, samples)] = recorder.batches
    assert samples == [
        Sample("tick", 1.0, 42.0, {"probe": "t"}),
        Sample(PROBE_UP, 1.0, 42.0, {"probe": "t", "kind": "tick"}),
    ]


class EventProbe:
    """Emits a sample each time the test sets `fire`, between scheduled runs."""

    kind: ClassVar[str] = "event"

    def __init__(self, name: str) -> None:
        self.name = name
        self.fire = threading.Event()
        self.failed_once = False

    def collect(self, now: float) -> list[Sample]:
        return []

    def watch(self, emit, stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
        if not self.failed_once:
            self.failed_once = True
            raise OSError("watch set-up failed")  # the scheduler must restart the watcher
        while not stop.is_set():
            if self.fire.wait(0.05):
                self.fire.clear()
                emit([Sample("event", 1.0, time.time())])


def test_watching_probe_reports_between_runs_and_is_restarted(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import monitor.scheduler

    monkeypatch.setattr(monitor.scheduler, "WATCH_RETRY", 0.1)
    probe, recorder = EventProbe("ev"), Recorder()
    scheduler = ProbeScheduler(recorder, Metrics())
    scheduler.start([ScheduledProbe(probe, interval=3600, timeout=1, jitter=0)])
    try:
        time.sleep(0.3)  # the first watch failed, the retry is watching now
        fired = time.monotonic()
        probe.fire.set()
        deadline = time.monotonic() + 2
        while not any(s.metric == "event" for b in recorder.of("ev") for s in b):
            assert time.monotonic() < deadline, "the event never arrived"
            time.sleep(0.005)
        assert time.monotonic() - fired < 0.5
    finally:
        scheduler.shutdown()
    [event] = [s for b in recorder.of("ev") for s in b if s.metric == "event"]
    assert event.labels == {"probe": "ev"}
