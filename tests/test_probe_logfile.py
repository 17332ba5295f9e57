"""The logfile probe on real files: appends, both kinds of rotation, restarts with the state
directory, hostile lines, and its watcher in a real thread."""

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import probes.logfile as logfile
from monitor.config import parse_config
from monitor.daemon import build_jobs
from probes import REGISTRY
from probes.base import PersistentProbe, Sample, WatchingProbe
from probes.logfile import LogfileProbe

NOW = 1_700_000_000.0
ERROR = r"\bERROR\b"
TIMEOUT = "timed out"


def make(path: Path, state: Path | None = None, **options: Any) -> LogfileProbe:
    options.setdefault("patterns", [ERROR, TIMEOUT])
    probe = LogfileProbe("app-log", LogfileProbe.Options(path=str(path), **options))
    if state is not None:
        probe.use_state_dir(state)
    return probe


def write(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(text)


def by_metric(samples: list[Sample], pattern: str = ERROR) -> dict[str, Sample]:
    chosen = [s for s in samples if s.labels.get("pattern") in (None, pattern)]
    return {s.metric: s for s in chosen}


def new(samples: list[Sample], pattern: str = ERROR) -> float:
    return by_metric(samples, pattern)["log_matches_new"].value


def total(samples: list[Sample], pattern: str = ERROR) -> float:
    return by_metric(samples, pattern)["log_matches_total"].value


def quoted(samples: list[Sample], pattern: str = ERROR) -> str | None:
    return by_metric(samples, pattern)["log_matches_new"].error


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "app.log"
    write(path, "old ERROR from last year\nold line\n")
    return path


@pytest.fixture
def state(tmp_path: Path) -> Path:
    directory = tmp_path / "state"
    directory.mkdir()
    return directory


def test_it_is_a_persistent_watching_kind() -> None:
    assert REGISTRY["logfile"] is LogfileProbe
    probe = make(Path("/var/log/none.log"))
    assert isinstance(probe, PersistentProbe) and isinstance(probe, WatchingProbe)


def test_the_first_run_starts_at_the_end(log: Path) -> None:
    probe = make(log)
    first = probe.collect(NOW)
    assert (new(first), total(first), quoted(first)) == (0.0, 0.0, None)
    up = by_metric(first)["log_up"]
    assert (up.value, up.error, up.labels) == (1.0, None, {"path": str(log)})
    write(log, "12:00 ERROR disk quota exceeded\n12:01 fine\n")
    second = probe.collect(NOW + 60)
    assert (new(second), total(second)) == (1.0, 1.0)
    assert quoted(second) == "last match: 12:00 ERROR disk quota exceeded"
    assert by_metric(second)["log_matches_new"].labels == {"path": str(log), "pattern": ERROR}
    third = probe.collect(NOW + 120)
    assert (new(third), total(third), quoted(third)) == (0.0, 1.0, None)


def test_from_start_reads_what_is_there(log: Path) -> None:
    samples = make(log, from_start=True).collect(NOW)
    assert (new(samples), total(samples)) == (1.0, 1.0)


def test_each_pattern_counts_lines_once(log: Path) -> None:
    probe = make(log)
    probe.collect(NOW)
    write(log, "ERROR ERROR twice on one line\nupstream timed out\nERROR and timed out\n")
    samples = probe.collect(NOW + 1)
    assert (new(samples, ERROR), new(samples, TIMEOUT)) == (2.0, 2.0)
    assert quoted(samples, TIMEOUT) == "last match: ERROR and timed out"


def test_a_line_still_being_written_waits_for_its_newline(log: Path) -> None:
    probe = make(log)
    probe.collect(NOW)
    write(log, "half a line: ERR")
    assert new(probe.collect(NOW + 1)) == 0.0
    write(log, "OR completed\n")
    samples = probe.collect(NOW + 2)
    assert new(samples) == 1.0 and quoted(samples) == "last match: half a line: ERROR completed"


def test_starting_inside_a_line_skips_its_tail(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    write(path, "a line being written when the probe first looked: ")
    probe = make(path)
    probe.collect(NOW)
    write(path, "ERROR in its tail, never seen whole\nERROR on a line of its own\n")
    samples = probe.collect(NOW + 1)
    assert new(samples) == 1.0 and quoted(samples) == "last match: ERROR on a line of its own"


def test_rename_and_create_finishes_the_old_file_first(log: Path) -> None:
    probe = make(log)
    probe.collect(NOW)
    write(log, "ERROR written just before the rotation\nERROR last line, no newline")
    log.rename(log.with_suffix(".log.1"))
    write(log, "ERROR first line of the new file\n")
    samples = probe.collect(NOW + 1)
    assert (new(samples), total(samples)) == (3.0, 3.0)
    assert quoted(samples) == "last match: ERROR first line of the new file"
    write(log.with_suffix(".log.1"), "\nERROR late write to the old file\n")  # nobody reads it
    write(log, "ERROR second line of the new file\n")
    assert new(probe.collect(NOW + 2)) == 1.0


def test_a_rotation_with_the_new_file_not_there_yet(log: Path) -> None:
    probe = make(log)
    probe.collect(NOW)
    write(log, "ERROR before the rotation\n")
    log.rename(log.with_suffix(".log.1"))
    gap = probe.collect(NOW + 1)
    assert new(gap) == 1.0
    assert by_metric(gap)["log_up"].value == 0.0
    assert by_metric(gap)["log_up"].error == f"no such file: {log}"
    write(log, "ERROR in the new file\n")
    assert new(probe.collect(NOW + 2)) == 1.0


def test_copytruncate_is_read_again_from_the_start(log: Path) -> None:
    probe = make(log)
    probe.collect(NOW)
    write(log, "ERROR before the copy\n")
    shutil.copyfile(log, log.with_suffix(".log.1"))
    os.truncate(log, 0)
    write(log, "ERROR after the truncation\n")  # shorter than the old offset
    samples = probe.collect(NOW + 1)
    assert new(samples) == 1.0 and quoted(samples) == "last match: ERROR after the truncation"


def test_copytruncate_rewritten_past_the_old_offset_is_noticed(log: Path) -> None:
    probe = make(log)
    probe.collect(NOW)
    os.truncate(log, 0)
    write(log, "ERROR a line written after the truncation, longer than all the old file\n")
    assert log.stat().st_size > len("old ERROR from last year\nold line\n")
    assert new(probe.collect(NOW + 1)) == 1.0


def test_the_cursor_and_counters_survive_a_restart(log: Path, state: Path) -> None:
    before = make(log, state)
    before.collect(NOW)
    write(log, "ERROR one\n")
    assert total(before.collect(NOW + 1)) == 1.0
    write(log, "ERROR two, while the daemon restarts\nERROR three\n")
    before.close()
    after = make(log, state)
    samples = after.collect(NOW + 2)
    assert (new(samples), total(samples)) == (2.0, 3.0)
    assert json.loads((state / "cursor.json").read_text())["totals"][ERROR] == 3


def test_a_rotation_while_down_reads_the_new_file_whole(log: Path, state: Path) -> None:
    before = make(log, state)
    before.collect(NOW)
    before.close()
    log.rename(log.with_suffix(".log.1"))
    write(log, "ERROR written by the new file's first writer\n")
    assert new(make(log, state).collect(NOW + 1)) == 1.0


def test_a_copytruncate_while_down_is_read_from_the_start(log: Path, state: Path) -> None:
    before = make(log, state)
    before.collect(NOW)
    before.close()
    os.truncate(log, 0)
    write(log, "ERROR after the truncation, a line longer than the old file\n")
    assert new(make(log, state).collect(NOW + 1)) == 1.0


def test_the_very_first_run_with_a_state_dir_starts_at_the_end(log: Path, state: Path) -> None:
    assert new(make(log, state).collect(NOW)) == 0.0
    assert (state / "cursor.json").exists()


@pytest.mark.parametrize(
    "saved",
    ["{not json", '{"version": 1, "path": "/elsewhere.log"}', '{"version": 1}', "[1, 2]"],
)
def test_an_unusable_saved_cursor_means_starting_afresh(
    log: Path, state: Path, saved: str
) -> None:
    (state / "cursor.json").write_text(saved)
    probe = make(log, state)
    assert new(probe.collect(NOW)) == 0.0  # at the end, as on a first run
    write(log, "ERROR new\n")
    assert total(probe.collect(NOW + 1)) == 1.0


def test_a_file_that_appears_later_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "later.log"
    probe = make(path)
    missing = probe.collect(NOW)
    up = by_metric(missing)["log_up"]
    assert (up.value, up.error) == (0.0, f"no such file: {path}")
    assert new(missing) == 0.0
    write(path, "ERROR first words of a new file\n")
    samples = probe.collect(NOW + 1)
    assert new(samples) == 1.0 and by_metric(samples)["log_up"].value == 1.0


def test_a_directory_is_not_followed(tmp_path: Path) -> None:
    up = by_metric(make(tmp_path).collect(NOW))["log_up"]
    assert (up.value, up.error) == (0.0, f"{tmp_path} is not a regular file")


def test_long_lines_are_matched_on_their_head(log: Path) -> None:
    probe = make(log, max_line_bytes=64)
    probe.collect(NOW)
    write(log, "ERROR at the head " + "x" * 500 + "\n")
    write(log, "x" * 500 + " ERROR in the tail\n")
    write(log, "ERROR on the next line\n")
    samples = probe.collect(NOW + 1)
    assert new(samples) == 2.0 and quoted(samples) == "last match: ERROR on the next line"


def test_a_hostile_line_is_quoted_short_and_printable(log: Path) -> None:
    probe = make(log)
    probe.collect(NOW)
    write(log, "ERROR \x1b[31mred\x1b[0m\r\u202eevil\t" + "<script>" * 200 + "\n")
    samples = probe.collect(NOW + 1)
    text = quoted(samples) or ""
    assert text.startswith("last match: ERROR \ufffd[31mred\ufffd[0m")
    assert len(text) <= len("last match: ") + logfile.MAX_EXCERPT_CHARS
    assert not any(c in text for c in "\x1b\r\n\t\u202e")
    assert all(set(s.labels) <= {"path", "pattern"} for s in samples)


def test_undecodable_bytes_are_replaced(log: Path) -> None:
    probe = make(log)
    probe.collect(NOW)
    with open(log, "ab") as file:
        file.write(b"ERROR \xff\xfe not utf-8\n")
    assert quoted(probe.collect(NOW + 1)) == "last match: ERROR \ufffd\ufffd not utf-8"


def test_a_backlog_is_read_in_bounded_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logfile, "READ_BUDGET", 100)
    path = tmp_path / "big.log"
    write(path, "".join(f"line {n:02} ERROR\n" for n in range(20)))  # 20 lines of 14 bytes
    probe = make(path, from_start=True)
    first = new(probe.collect(NOW))
    assert 0 < first < 20
    totals = [total(probe.collect(NOW + n)) for n in range(1, 5)]
    assert totals[-1] == 20.0


# --- the watcher ---------------------------------------------------------------------------------


class Reports:
    def __init__(self) -> None:
        self.batches: list[tuple[float, list[Sample]]] = []
        self.arrived = threading.Event()

    def __call__(self, samples: list[Sample]) -> None:
        self.batches.append((time.monotonic(), samples))
        self.arrived.set()


@pytest.fixture
def watched(log: Path) -> Iterator[tuple[LogfileProbe, Reports]]:
    probe, reports, stop = make(log), Reports(), threading.Event()
    probe.collect(NOW)  # the scheduler's first run
    thread = threading.Thread(target=probe.watch, args=(reports, stop))
    thread.start()
    yield probe, reports
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def test_the_watcher_reports_a_match_at_once(
    log: Path, watched: tuple[LogfileProbe, Reports]
) -> None:
    probe, reports = watched
    write(log, "nothing to see\n")
    time.sleep(logfile.WATCH_POLL_SECONDS * 3)  # lines that match nothing: no report
    assert reports.batches == []
    written = time.monotonic()
    write(log, "ERROR payment gateway unreachable\n")
    assert reports.arrived.wait(5)
    arrived, samples = reports.batches[0]
    assert arrived - written < 1.0
    assert new(samples) == 1.0
    assert quoted(samples) == "last match: ERROR payment gateway unreachable"
    after = probe.collect(NOW + 1)  # the scheduled run does not count it again
    assert (new(after), total(after)) == (0.0, 1.0)


def test_the_watcher_reports_the_file_going(
    log: Path, watched: tuple[LogfileProbe, Reports]
) -> None:
    _probe, reports = watched
    log.unlink()
    assert reports.arrived.wait(5)
    up = by_metric(reports.batches[0][1])["log_up"]
    assert (up.value, up.error) == (0.0, f"no such file: {log}")


def test_the_watcher_follows_a_rotation(log: Path, watched: tuple[LogfileProbe, Reports]) -> None:
    _probe, reports = watched
    log.rename(log.with_suffix(".log.1"))
    write(log, "ERROR in the new file\n")
    deadline = time.monotonic() + 5
    while sum(new(s) for _, s in reports.batches) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(new(s) for _, s in reports.batches) == 1.0


# --- configuration -------------------------------------------------------------------------------


def test_a_config_table_builds_the_probe(tmp_path: Path) -> None:
    config = parse_config(
        f"""
        [[probe]]
        name = "app-log"
        kind = "logfile"
        path = "{tmp_path / "app.log"}"
        patterns = ['\\bERROR\\b', 'timed out']
        max_line_bytes = 4096
        """,
        "config.toml",
    )
    [probe] = config.probes
    assert probe.options == LogfileProbe.Options(
        path=str(tmp_path / "app.log"), patterns=[ERROR, TIMEOUT], max_line_bytes=4096
    )


def test_the_daemon_gives_it_a_state_dir_of_its_own(tmp_path: Path, log: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    config = parse_config(
        f"""
        [daemon]
        state_dir = "{state_dir}"

        [[probe]]
        name = "app-log"
        kind = "logfile"
        path = "{log}"
        patterns = ['ERROR']
        """,
        "config.toml",
    )
    [job] = build_jobs(config)
    job.probe.collect(NOW)
    assert (state_dir / "probes" / "app-log" / "cursor.json").is_file()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"path": "app.log", "patterns": ["x"]}, "path must be an absolute path"),
        ({"path": "/a.log", "patterns": []}, "at least one regular expression"),
        ({"path": "/a.log", "patterns": ["x", "x"]}, "patterns has duplicates"),
        ({"path": "/a.log", "patterns": ["(unclosed"]}, "is not a valid regular expression"),
        ({"path": "/a.log", "patterns": ["x"], "max_line_bytes": 10}, "at least 64"),
    ],
)
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LogfileProbe.Options(**options)
