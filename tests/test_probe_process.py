"""The process probe against real processes: this one, and children started for the test;
its watcher against real exits (pidfds), through the real scheduler."""

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from probe_helpers import values

import probes.process as process_probe
from monitor.metrics import Metrics
from monitor.scheduler import ProbeScheduler, ScheduledProbe
from probes.base import Sample
from probes.process import ProcessProbe

NOW = 1_700_000_000.0
SPIN = "while True: pass"


def probe(**options: Any) -> ProcessProbe:
    return ProcessProbe("worker", ProcessProbe.Options(**options))


def count_error(samples: list[Any]) -> str | None:
    [count] = [s for s in samples if s.metric == "process_count"]
    return count.error


class Child:
    """A python process under a name of its own (a symlink to the interpreter), with a
    unique marker on its command line."""

    def __init__(self, directory: Path, code: str) -> None:
        self.name = f"fw{uuid.uuid4().hex[:10]}"  # under the 15 characters of a Linux comm
        self.marker = f"marker-{uuid.uuid4().hex}"
        link = directory / self.name
        link.symlink_to(sys.executable)
        args = [str(link), "-c", f"# {self.marker}\n{code}"]
        self.popen = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        self.process = psutil.Process(self.popen.pid)
        wait_for(lambda: self.process.name() == self.name, "the child to exec")

    def stop(self) -> None:
        self.popen.kill()
        self.popen.wait(10)


def wait_for(condition: Any, what: str) -> None:
    """Wait for something the test cannot cause synchronously (a child's progress)."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def spinner(tmp_path: Path) -> Iterator[Child]:
    child = Child(tmp_path, SPIN)
    yield child
    child.stop()


def test_pidfile_finds_this_process(tmp_path: Path) -> None:
    pidfile = tmp_path / "test.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    samples = probe(pidfile=str(pidfile)).collect(NOW)
    assert values(samples)["process_count"] == 1.0
    assert values(samples)["process_memory_bytes"] == pytest.approx(
        psutil.Process().memory_info().rss, rel=0.5
    )
    assert values(samples)["process_cpu_percent"] >= 0.0
    assert all(s.labels == {"process": "worker"} and s.timestamp == NOW for s in samples)
    assert all(s.error is None for s in samples)


def test_missing_pidfile_counts_zero_with_the_reason(tmp_path: Path) -> None:
    pidfile = tmp_path / "absent.pid"
    samples = probe(pidfile=str(pidfile)).collect(NOW)
    assert values(samples) == {
        "process_count": 0.0,
        "process_cpu_percent": 0.0,
        "process_memory_bytes": 0.0,
        "process_starts_total": 0.0,
    }
    assert count_error(samples) == f"pidfile missing: {pidfile}"


def test_pidfile_without_a_pid_counts_zero(tmp_path: Path) -> None:
    pidfile = tmp_path / "garbage.pid"
    pidfile.write_text("<html>not a pid</html>")
    samples = probe(pidfile=str(pidfile)).collect(NOW)
    assert values(samples)["process_count"] == 0.0
    assert count_error(samples) == f"pidfile {pidfile} holds no pid"


def test_pidfile_of_an_exited_process_counts_zero(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    pidfile = tmp_path / "dead.pid"
    pidfile.write_text(finished.stdout)
    samples = probe(pidfile=str(pidfile)).collect(NOW)
    assert values(samples)["process_count"] == 0.0
    assert "is not running" in (count_error(samples) or "")


def test_name_and_cmdline_find_the_child(spinner: Child) -> None:
    for options in ({"match_name": spinner.name}, {"match_cmdline": re.escape(spinner.marker)}):
        watcher = probe(**options)
        assert [p.pid for p in watcher.matching_processes()] == [spinner.popen.pid]
        samples = watcher.collect(NOW)
        assert values(samples)["process_count"] == 1.0
        assert values(samples)["process_memory_bytes"] > 0
        assert count_error(samples) is None


def test_cpu_percent_has_a_baseline_from_the_previous_call(spinner: Child) -> None:
    watcher = probe(match_cmdline=re.escape(spinner.marker))
    first = values(watcher.collect(NOW))
    assert first["process_cpu_percent"] == 0.0  # first sight: no baseline yet, as documented
    spent = spinner.process.cpu_times().user
    wait_for(lambda: spinner.process.cpu_times().user > spent + 0.1, "the child to use CPU")
    second = values(watcher.collect(NOW + 1))
    assert 10.0 < second["process_cpu_percent"] <= 100.0 * (psutil.cpu_count() or 1)


def test_a_process_that_has_gone_is_no_longer_counted(tmp_path: Path) -> None:
    child = Child(tmp_path, SPIN)
    watcher = probe(match_name=child.name)
    assert values(watcher.collect(NOW))["process_count"] == 1.0
    child.stop()
    assert values(watcher.collect(NOW))["process_count"] == 0.0


def test_a_zombie_is_not_running(tmp_path: Path) -> None:
    child = Child(tmp_path, "import sys; sys.stdin.read()")
    child.popen.kill()  # not reaped yet: a zombie until wait()
    wait_for(lambda: child.process.status() == psutil.STATUS_ZOMBIE, "the child to die")
    pidfile = tmp_path / "zombie.pid"
    pidfile.write_text(str(child.popen.pid))
    try:
        assert values(probe(match_name=child.name).collect(NOW))["process_count"] == 0.0
        by_pidfile = probe(pidfile=str(pidfile)).collect(NOW)
        assert "is not running" in (count_error(by_pidfile) or "")
    finally:
        child.popen.wait(10)


def test_the_daemon_never_counts_itself() -> None:
    own = psutil.Process()
    by_cmdline = probe(match_cmdline=re.escape(" ".join(own.cmdline())))
    by_name = probe(match_name=own.name())
    for watcher in (by_cmdline, by_name):
        assert os.getpid() not in [p.pid for p in watcher.matching_processes()]


def test_a_name_that_does_not_run_counts_zero_without_error() -> None:
    samples = probe(match_name=f"nx{uuid.uuid4().hex[:12]}").collect(NOW)
    assert values(samples)["process_count"] == 0.0
    assert all(s.error is None for s in samples)
    assert all(type(s.value) is float for s in samples)  # an int 0 breaks float formatting


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of match_name, match_cmdline, pidfile"),
        ({"match_name": "nginx", "pidfile": "nginx.pid"}, "exactly one of"),
        ({"match_name": ""}, "match_name must not be empty"),
        ({"match_cmdline": "nginx: (master"}, "match_cmdline is not a valid regular expression"),
    ],
)
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ProcessProbe.Options(**options)


# --- process_starts_total ------------------------------------------------------------------------


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL)


def starts(samples: list[Any]) -> float:
    return values(samples)["process_starts_total"]


def test_starts_count_new_processes_after_the_first_look(tmp_path: Path) -> None:
    pidfile = tmp_path / "service.pid"
    first, second = sleeper(), sleeper()
    try:
        pidfile.write_text(f"{first.pid}\n")
        watcher = probe(pidfile=str(pidfile))
        assert starts(watcher.collect(NOW)) == 0.0  # the baseline: already running
        assert starts(watcher.collect(NOW + 1)) == 0.0
        pidfile.write_text(f"{second.pid}\n")  # "restarted" under another PID
        assert starts(watcher.collect(NOW + 2)) == 1.0
        pidfile.unlink()
        assert starts(watcher.collect(NOW + 3)) == 1.0  # gone: nothing new
        pidfile.write_text(f"{first.pid}\n")
        assert starts(watcher.collect(NOW + 4)) == 2.0  # seen again after a gap
    finally:
        for child in (first, second):
            child.kill()
            child.wait(10)


# --- the watcher: exits seen through pidfds ------------------------------------------------------


class Sink:
    """Records every batch with the moment it arrived."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[Sample]]] = []
        self.lock = threading.Lock()

    def __call__(self, probe_name: str, samples: list[Sample]) -> None:
        arrived = time.monotonic()
        with self.lock:
            self.batches.append((arrived, samples))

    def emit(self, samples: list[Sample]) -> None:
        self("worker", samples)

    def first_count(self, count: float, after: float) -> float | None:
        """When the first batch with process_count == count arrived after `after`."""
        with self.lock:
            for arrived, samples in self.batches:
                counts = [s.value for s in samples if s.metric == "process_count"]
                if arrived >= after and counts == [count]:
                    return arrived
        return None


class Watching:
    """A probe's watch() running in a thread, as the scheduler runs it."""

    def __init__(self, watched: ProcessProbe, sink: Sink) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=watched.watch, args=(sink.emit, self.stop))
        self.thread.start()

    def end(self) -> float:
        """Stop the watcher; how long it took to notice."""
        started = time.monotonic()
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()
        return time.monotonic() - started


def test_this_kernel_gives_pidfds() -> None:
    assert process_probe.pidfd_supported(), "pidfd_open is Linux >= 5.3: the exit test needs it"


def test_a_killed_process_is_reported_within_100ms_through_the_scheduler(tmp_path: Path) -> None:
    """The acceptance test: a one-hour interval, so only the watcher can report the exit."""
    child = sleeper()
    pidfile = tmp_path / "sleep.pid"
    pidfile.write_text(str(child.pid))
    watched = probe(pidfile=str(pidfile))
    sink = Sink()
    scheduler = ProbeScheduler(sink, Metrics())
    scheduler.start([ScheduledProbe(watched, interval=3600.0, timeout=5.0, jitter=0.0)])
    try:
        wait_for(lambda: sink.first_count(1.0, 0.0) is not None, "the first scheduled run")
        wait_for(lambda: child.pid in watched.watched_pids(), "the watcher's pidfd")
        killed_at = time.monotonic()
        os.kill(child.pid, signal.SIGKILL)
        wait_for(lambda: sink.first_count(0.0, killed_at) is not None, "the exit to be reported")
    finally:
        scheduler.shutdown()
        child.kill()
        child.wait(10)
    latency = (sink.first_count(0.0, killed_at) or math.inf) - killed_at
    print(f"\nkilled process reported after {latency * 1000:.1f} ms")
    assert latency < 0.1


def test_a_process_matched_by_a_scheduled_run_is_watched_at_once(tmp_path: Path) -> None:
    child = Child(tmp_path, "import time; time.sleep(1000)")
    watched, sink = probe(match_cmdline=re.escape(child.marker)), Sink()
    running = Watching(watched, sink)
    try:
        watched.collect(NOW)  # as a scheduled run does
        wait_for(lambda: child.popen.pid in watched.watched_pids(), "the watcher's pidfd")
        killed_at = time.monotonic()
        child.stop()
        wait_for(lambda: sink.first_count(0.0, killed_at) is not None, "the exit to be reported")
    finally:
        running.end()


def test_the_watcher_rescans_for_processes_started_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process_probe, "RESCAN_SECONDS", 0.1)
    marker = f"marker-{uuid.uuid4().hex}"
    watched, sink = probe(match_cmdline=re.escape(marker)), Sink()
    assert starts(watched.collect(NOW)) == 0.0  # the first look, before the child exists
    running = Watching(watched, sink)
    try:
        child = Child(tmp_path, f"# {marker}\nimport time; time.sleep(1000)")
        wait_for(lambda: child.popen.pid in watched.watched_pids(), "the rescan to find it")
        child.stop()
        wait_for(lambda: sink.first_count(0.0, 0.0) is not None, "the exit to be reported")
        samples = sink.batches[-1][1]
        assert starts(samples) == 1.0  # it appeared after the watcher's first look
    finally:
        running.end()


def test_the_watcher_notices_stop_quickly(tmp_path: Path) -> None:
    child = Child(tmp_path, "import time; time.sleep(1000)")
    watched, sink = probe(match_name=child.name), Sink()
    running = Watching(watched, sink)
    try:
        wait_for(lambda: child.popen.pid in watched.watched_pids(), "the watcher's pidfd")
        assert running.end() < 1.0
        assert sink.batches == []  # nothing exited: nothing to report between runs
    finally:
        child.stop()


def test_without_pidfds_the_watcher_only_waits_for_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "pidfd_open")
    child = Child(tmp_path, "import time; time.sleep(1000)")
    watched, sink = probe(match_name=child.name), Sink()
    running = Watching(watched, sink)
    try:
        child.stop()
        time.sleep(0.3)  # an exit the watcher must not (cannot) report
        assert running.end() < 1.0
        assert sink.batches == [] and watched.watched_pids() == set()
    finally:
        child.stop()
