"""Follow a text log file and count the lines that match regular expressions.

Each run reads the lines written since the cursor (the file's device and inode, and the
offset read up to) and counts, per pattern, the lines in which the pattern is found
(`re.search`, on the line decoded as UTF-8 with undecodable bytes replaced). A line counts
once per pattern however often the pattern occurs in it. A last line without its newline
yet is left for the next run, so a line being written is never cut in two.

Rotation is followed, both ways logrotate does it:
- rename and create: the path names another inode; the old file, still open, is read to
  its end first (a last line without newline included; at most `READ_BUDGET` bytes of it,
  should the probe have fallen that far behind), then the new file from its start;
- copytruncate: the same inode, but shorter than the cursor, or no longer holding the bytes
  the cursor last read (truncated and written again past the old offset); it is read again
  from its start. Lines written between the copy and the truncation are lost to everyone;
  that is copytruncate's nature.

The cursor and the counters are kept across daemon restarts in the probe's state directory
(`cursor.json`), written whenever a run matched something, and otherwise at least every
few seconds while the file grows. On the very first run (no saved cursor) reading starts at
the end of the file, so a years-old log does not raise a flood of stale matches, unless
`from_start = true`. A file that does not exist yet is read from its start once it
appears. When the daemon comes back to find another file at the path (rotated while it was
down), that file is read from its start: all of it was written since the cursor. After a
crash the cursor may lag the last few seconds of unmatched lines, which are read again.

Between scheduled runs a watcher looks at the file's size every `WATCH_POLL_SECONDS` (the
standard library has no inotify; a stat is cheap) and reads at once when it changed,
reporting the samples straight away when a pattern matched (or the file appeared or went).
A backlog is read `READ_BUDGET` bytes per run, so a huge file is caught up over several
runs instead of one that overruns its timeout.

Options:
- `path`: the file (an absolute path).
- `patterns`: regular expressions (Python `re` syntax), at least one.
- `max_line_bytes` (default 64 KiB): a longer line is matched on its first
  `max_line_bytes` bytes; the rest of it is skipped.
- `from_start` (default false): on the very first run, read the file from its start.

Metrics:
- `log_up` {"path"}: 1 when the file could be opened and read, else 0 with the reason.
- `log_matches_total` {"path", "pattern"}: matching lines since the cursor began (a
  counter, kept across restarts; use `rate` in a rule with a `window`).
- `log_matches_new` {"path", "pattern"}: matching lines read by this run (or this watcher
  report).
On both, when this read matched, `error` quotes the last matching line, cut to
`MAX_EXCERPT_CHARS` with control characters replaced: log lines are untrusted text, so
they never go into labels, only there, for a ticket to quote.

The systemd journal is not followed yet (a known gap: it needs `journalctl --follow` or the
journal API, and a host with journald to test against). A unit that logs only to the
journal can be followed in the file syslog writes from it (journald's `ForwardToSyslog`).

Example:

    [[probe]]
    name = "app-log"
    kind = "logfile"
    path = "/var/log/app/app.log"
    patterns = ['\\bERROR\\b', 'OutOfMemoryError']
    interval = "1m"
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

from probes._text import UNPRINTABLE
from probes.base import Emit, Sample

log = logging.getLogger(__name__)

UP = "log_up"
MATCHES_TOTAL = "log_matches_total"
MATCHES_NEW = "log_matches_new"

STATE_FILE = "cursor.json"
STATE_VERSION = 1
GUARD_BYTES = 64  # the bytes before the cursor, kept to notice a truncate-and-rewrite
READ_BUDGET = 8 * 1024 * 1024  # bytes read per run at most
WATCH_POLL_SECONDS = 0.2
SAVE_EVERY_SECONDS = 5.0  # how stale a saved cursor without new matches may get
MAX_EXCERPT_CHARS = 200
DEFAULT_MAX_LINE_BYTES = 64 * 1024


def excerpt(line: str) -> str:
    """An untrusted line made safe to quote: one line, printable, short."""
    text = UNPRINTABLE.sub("\ufffd", line.strip().replace("\t", " "))
    if len(text) > MAX_EXCERPT_CHARS:
        text = text[: MAX_EXCERPT_CHARS - 1] + "…"
    return text


# --- the cursor ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """Where reading stopped: which file (device, inode) and how far into it.

    `guard` is the end of what was read (up to GUARD_BYTES), to recognise the same content
    at the same place next time. `skipping` means the cursor is inside an over-long line
    whose head was matched: the rest of it, up to its newline, is dropped. A cursor with
    inode 0 names no file yet: whatever file appears is read from its start.
    """

    device: int = 0
    inode: int = 0
    offset: int = 0
    guard: bytes = b""
    skipping: bool = False

    def names(self, info: os.stat_result) -> bool:
        return (self.device, self.inode) == (info.st_dev, info.st_ino)

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "inode": self.inode,
            "offset": self.offset,
            "guard": base64.b64encode(self.guard).decode("ascii"),
            "skipping": self.skipping,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cursor:
        cursor = cls(
            device=int(data["device"]),
            inode=int(data["inode"]),
            offset=int(data["offset"]),
            guard=base64.b64decode(data["guard"], validate=True),
            skipping=bool(data["skipping"]),
        )
        if cursor.offset < 0 or len(cursor.guard) > min(cursor.offset, GUARD_BYTES):
            raise ValueError("offset and guard do not agree")
        return cursor


def _start_of(info: os.stat_result) -> Cursor:
    return Cursor(info.st_dev, info.st_ino)


def _end_of(file: IO[bytes], info: os.stat_result) -> Cursor:
    """The end of the file; inside its last line when that has no newline yet."""
    size = info.st_size
    file.seek(max(0, size - GUARD_BYTES))
    guard = file.read(size - file.tell())
    inside_a_line = bool(guard) and not guard.endswith(b"\n")
    return Cursor(info.st_dev, info.st_ino, size, guard, skipping=inside_a_line)


def _still_there(file: IO[bytes], info: os.stat_result, cursor: Cursor) -> bool:
    """Whether the file still holds what the cursor last read, where it read it."""
    if info.st_size < cursor.offset:
        return False
    file.seek(cursor.offset - len(cursor.guard))
    return file.read(len(cursor.guard)) == cursor.guard


# --- reading lines -------------------------------------------------------------------------------


@dataclass
class Chunk:
    """Complete lines read from one file, and the cursor after them."""

    lines: list[bytes]
    cursor: Cursor
    more: bool  # stopped by READ_BUDGET with more to read


def read_lines(
    file: IO[bytes], cursor: Cursor, max_line_bytes: int, *, final: bool = False
) -> Chunk:
    """The lines after `cursor`; a last line without newline only when `final`."""
    file.seek(cursor.offset)
    lines: list[bytes] = []
    offset, guard, skipping = cursor.offset, cursor.guard, cursor.skipping
    while offset - cursor.offset < READ_BUDGET:
        line = file.readline(max_line_bytes + 1)
        complete = line.endswith(b"\n")
        if not line or (not complete and len(line) <= max_line_bytes and not final):
            break  # the end, or a line still being written
        offset += len(line)
        guard = (guard + line)[-GUARD_BYTES:]
        if not skipping:
            lines.append(line[:max_line_bytes].rstrip(b"\r\n"))
        skipping = not complete and not final
    more = offset - cursor.offset >= READ_BUDGET
    return Chunk(lines, Cursor(cursor.device, cursor.inode, offset, guard, skipping), more)


class Follower:
    """The followed file: open, positioned at the cursor, reopened across rotations."""

    def __init__(self, path: str, max_line_bytes: int, from_start: bool) -> None:
        self.path = path
        self.max_line_bytes = max_line_bytes
        self.from_start = from_start  # where the very first look starts reading
        self.cursor: Cursor | None = None  # None: never looked, no saved cursor
        self._file: IO[bytes] | None = None

    def read(self) -> tuple[Chunk, str | None]:
        """New complete lines, and why the file could not be read (None when it could)."""
        lines: list[bytes] = []
        info, error = self._stat()
        if self._file is not None and (info is None or not self._cursor.names(info)):
            lines = self._finish_old()  # rotated (or removed): the rest of the old file
        if info is None:
            self._close()
            return Chunk(lines, self._cursor, more=False), error
        try:
            chunk = self._read_current(info)
        except OSError as exc:
            self._close()
            return Chunk(lines, self._cursor, more=False), _reason(self.path, exc)
        return Chunk(lines + chunk.lines, chunk.cursor, chunk.more), None

    def close(self) -> None:
        self._close()

    @property
    def _cursor(self) -> Cursor:
        return self.cursor if self.cursor is not None else Cursor()

    def _stat(self) -> tuple[os.stat_result | None, str | None]:
        try:
            info = os.stat(self.path)
        except OSError as exc:
            return None, _reason(self.path, exc)
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read
            return None, f"{self.path} is not a regular file"
        return info, None

    def _finish_old(self) -> list[bytes]:
        assert self._file is not None
        try:
            chunk = read_lines(self._file, self._cursor, self.max_line_bytes, final=True)
        except OSError as exc:
            log.warning("%s: the rotated file could not be finished: %s", self.path, exc)
            chunk = Chunk([], self._cursor, more=False)
        self._close()
        self.cursor = Cursor()  # whatever is at the path now is new: read it from its start
        return chunk.lines

    def _read_current(self, info: os.stat_result) -> Chunk:
        if self._file is None:
            self._open()
        assert self._file is not None
        info = os.fstat(self._file.fileno())  # the file we hold, not what the path names now
        cursor = self._cursor
        if not cursor.names(info) or not _still_there(self._file, info, cursor):
            cursor = self._first_cursor(info) if self.cursor is None else _start_of(info)
        chunk = read_lines(self._file, cursor, self.max_line_bytes)
        self.cursor = chunk.cursor
        return chunk

    def _first_cursor(self, info: os.stat_result) -> Cursor:
        assert self._file is not None
        return _start_of(info) if self.from_start else _end_of(self._file, info)

    def _open(self) -> None:
        self._file = open(self.path, "rb")  # noqa: SIM115 - held open across runs

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _reason(path: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {path}"
    return f"cannot read {path}: {(exc.strerror or type(exc).__name__).lower()}"


# --- the probe -----------------------------------------------------------------------------------


def _check_patterns(patterns: list[str]) -> None:
    if not patterns:
        raise ValueError("patterns must list at least one regular expression")
    if len(set(patterns)) != len(patterns):
        raise ValueError("patterns has duplicates")
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"pattern {pattern!r} is not a valid regular expression: {exc}"
            ) from None


@dataclass
class Matches:
    """What one read found, per pattern."""

    new: dict[str, int] = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        return any(self.new.values())


class LogfileProbe:
    kind: ClassVar[str] = "logfile"

    @dataclass(frozen=True)
    class Options:
        """`path` (absolute) is followed for `patterns` (regular expressions); a line
        longer than `max_line_bytes` is matched on its head; `from_start` reads an existing
        file from its start on the very first run instead of from its end."""

        path: str
        patterns: list[str]
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
        from_start: bool = False

        def __post_init__(self) -> None:
            if not os.path.isabs(self.path):
                raise ValueError("path must be an absolute path")
            _check_patterns(self.patterns)
            if self.max_line_bytes < 64:
                raise ValueError("max_line_bytes must be at least 64")

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self._patterns = [(p, re.compile(p)) for p in options.patterns]
        self._follower = Follower(options.path, options.max_line_bytes, options.from_start)
        self._totals = dict.fromkeys(options.patterns, 0)
        self._lock = threading.Lock()  # scheduled runs and the watcher share the cursor
        self._state_file: Path | None = None
        self._saved: tuple[Cursor | None, dict[str, int]] | None = None
        self._saved_at = 0.0
        self._up: bool | None = None

    # -- state across restarts

    def use_state_dir(self, directory: Path) -> None:
        self._state_file = directory / STATE_FILE
        with self._lock:
            self._load()

    def _load(self) -> None:
        assert self._state_file is not None
        try:
            data = json.loads(self._state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("logfile %s: saved cursor unreadable, starting afresh: %s", self.name, exc)
            return
        self._restore(data)

    def _restore(self, data: Any) -> None:
        try:
            if data["version"] != STATE_VERSION or data["path"] != self.options.path:
                log.info("logfile %s: saved cursor is for another file; starting afresh", self.name)
                return
            cursor = Cursor.from_json(data["cursor"])
            totals = {p: int(data["totals"].get(p, 0)) for p in self.options.patterns}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("logfile %s: saved cursor invalid, starting afresh: %s", self.name, exc)
            return
        self._follower.cursor, self._totals = cursor, totals
        self._saved = (cursor, dict(totals))

    def _save(self, force: bool) -> None:
        current = (self._follower.cursor, dict(self._totals))
        due = force or time.monotonic() - self._saved_at >= SAVE_EVERY_SECONDS
        if self._state_file is None or current == self._saved or not due:
            return
        cursor = current[0] or Cursor()
        data = {"version": STATE_VERSION, "path": self.options.path,
                "cursor": cursor.to_json(), "totals": current[1]}  # fmt: skip
        temporary = self._state_file.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(data), encoding="utf-8")
            os.replace(temporary, self._state_file)  # atomic: never half a cursor
        except OSError as exc:
            log.warning("logfile %s: cannot save the cursor: %s", self.name, exc)
            return
        self._saved, self._saved_at = current, time.monotonic()

    # -- reading

    def collect(self, now: float) -> list[Sample]:
        with self._lock:
            matches, error, _more = self._read(force_save=True)
        return self._samples(now, matches, error)

    def _read(self, force_save: bool) -> tuple[Matches, str | None, bool]:
        chunk, error = self._follower.read()
        matches = self._match(chunk.lines)
        for pattern, count in matches.new.items():
            self._totals[pattern] += count
        if self._follower.cursor is None:  # the file is missing on the very first run
            self._follower.cursor = Cursor()  # read it from its start once it appears
        self._save(force=force_save or matches.any)
        self._up = error is None
        return matches, error, chunk.more

    def _match(self, lines: list[bytes]) -> Matches:
        matches = Matches(new=dict.fromkeys(self.options.patterns, 0))
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            for text, pattern in self._patterns:
                if pattern.search(line):
                    matches.new[text] += 1
                    matches.last[text] = line
        return matches

    def _samples(self, now: float, matches: Matches, error: str | None) -> list[Sample]:
        path = self.options.path
        samples = [Sample(UP, 0.0 if error else 1.0, now, {"path": path}, error)]
        for pattern in self.options.patterns:
            labels = {"path": path, "pattern": pattern}
            last = matches.last.get(pattern)
            quoted = f"last match: {excerpt(last)}" if last is not None else None
            samples.append(Sample(MATCHES_TOTAL, float(self._totals[pattern]), now, labels, quoted))
            samples.append(Sample(MATCHES_NEW, float(matches.new[pattern]), now, labels, quoted))
        return samples

    # -- the watcher

    def watch(self, emit: Emit, stop: threading.Event) -> None:
        """Read as soon as the file changes; report when something matched or log_up moved."""
        seen: tuple[int, int, int] | None = None
        looked = more = False
        while not stop.wait(WATCH_POLL_SECONDS):
            now_seen = _identity(self.options.path)
            if looked and now_seen == seen and not more:
                continue
            looked, seen = True, now_seen
            with self._lock:
                was_up = self._up
                matches, error, more = self._read(force_save=False)
            up_moved = was_up is not None and was_up != (error is None)
            if matches.any or up_moved:
                emit(self._samples(time.time(), matches, error))

    def close(self) -> None:
        with self._lock:
            self._follower.close()


def _identity(path: str) -> tuple[int, int, int] | None:
    """(device, inode, size) of the file at `path` now, or None."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_size
