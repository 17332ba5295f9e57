"""Silences and maintenance windows, as pure functions of labels and `now`.

A `Silence` is one-off (start, end, matchers, author, comment); a `MaintenanceWindow` recurs on
a cron schedule for a fixed duration. Both mute the messages and escalation of the alerts their
matchers select; neither ever holds back a ticket's resolution (that rule belongs to the caller,
which must keep resolving muted incidents). `muted` says which one applies, for the "why was
this muted" line of a ticket; `opened_and_closed_inside` is the rule "an alert that starts and
ends inside a window opens no ticket".

Matchers follow Alertmanager: operators `=`, `!=`, `=~`, `!~`; regular expressions are anchored
at both ends (`/srv/.*` does not match `/mnt/srv/x`); a missing label is the empty string. The
regex dialect is Python's `re`, which agrees with Go's RE2 on the patterns people write for
labels (classes, alternation, repetition); RE2-only syntax is rejected when the matcher is
built. The labels a caller passes should include `rule` (the rule name), so that silences can
say `rule="disk_full"`.

Time: every instant is epoch seconds. Intervals are half-open: a silence from 10 to 20 mutes at
10 and at 19.999, not at 20.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger


class MatchOp(enum.StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# `=~` before `=`, as in Alertmanager: otherwise `=` would match and leave `~` in the value.
_MATCHER = re.compile(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|=|!=|!~)\s*(.*?)\s*", re.DOTALL)


@dataclass(frozen=True)
class Matcher:
    """`name op value`, e.g. `mountpoint =~ "/srv/.*"`. A regex is compiled once, here."""

    name: str
    op: MatchOp
    value: str
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"matcher: {self.name!r} is not a valid label name")
        object.__setattr__(self, "op", MatchOp(self.op))
        object.__setattr__(self, "_pattern", _compile(self.op, self.value))

    def __str__(self) -> str:
        return f"{self.name}{self.op}{_quote(self.value)}"

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self._pattern is not None:
            return bool(self._pattern.fullmatch(actual)) == (self.op is MatchOp.REGEX)
        return (actual == self.value) == (self.op is MatchOp.EQUAL)


def _compile(op: MatchOp, value: str) -> re.Pattern[str] | None:
    if op not in (MatchOp.REGEX, MatchOp.NOT_REGEX):
        return None
    try:
        # fullmatch anchors at both ends; `$` would also accept a trailing newline.
        return re.compile(f"(?:{value})")
    except re.error as exc:
        raise ValueError(f"matcher: {value!r} is not a valid regular expression: {exc}") from exc


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def matches(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether every matcher matches `labels` (True for no matchers)."""
    return all(matcher.matches(labels) for matcher in matchers)


def parse_matcher(text: str) -> Matcher:
    """Parse `rule="disk_full"`, `mountpoint=~"/srv/.*"`, `severity!=info`.

    Alertmanager's syntax: a label name, an operator, and a value that may be double-quoted.
    Inside the value `\\"` is a quote, `\\n` a newline, `\\\\` a backslash; any other backslash
    is literal (so `"\\d+"` is the regex \\d+). Raises ValueError naming what is wrong.
    """
    found = _MATCHER.fullmatch(text)
    if found is None:
        raise ValueError(
            f'matcher {text!r}: expected name, operator (=, !=, =~, !~) and value, e.g. rule="x"'
        )
    name, op, raw = found.groups()
    try:
        return Matcher(name, MatchOp(op), _unquote(raw))
    except ValueError as exc:
        raise ValueError(f"matcher {text!r}: {exc}") from exc


def _unquote(raw: str) -> str:
    quoted = raw.startswith('"')
    body = raw[1:] if quoted else raw
    if quoted and (len(body) == 0 or not body.endswith('"') or _escaped_end(body)):
        raise ValueError("value has an opening double quote but no closing one")
    body = body[:-1] if quoted else body
    chars: list[str] = []
    index = 0
    while index < len(body):
        char, index = _unescape_at(body, index)
        chars.append(char)
    return "".join(chars)


def _escaped_end(body: str) -> bool:
    """Whether the final quote of `body` is escaped (preceded by an odd run of backslashes)."""
    run = len(body[:-1]) - len(body[:-1].rstrip("\\"))
    return run % 2 == 1


def _unescape_at(body: str, index: int) -> tuple[str, int]:
    char = body[index]
    if char == '"':
        raise ValueError('value contains an unescaped double quote; write \\" inside quotes')
    if char != "\\" or index + 1 == len(body):
        return char, index + 1
    following = body[index + 1]
    if following in ('"', "\\"):
        return following, index + 2
    if following == "n":
        return "\n", index + 2
    return char, index + 1  # a lone backslash is literal: regexes keep their \d and \.


def _require_selective(matchers: Sequence[Matcher], what: str) -> tuple[Matcher, ...]:
    # Alertmanager's rule: matchers that all match the empty label set would mute everything.
    if all(matcher.matches({}) for matcher in matchers):
        raise ValueError(
            f"{what}: at least one matcher must not match an empty value "
            f'(to mute every alert on purpose, write rule=~".+")'
        )
    return tuple(matchers)


@dataclass(frozen=True)
class Silence:
    """A one-off mute from `starts_at` (included) to `ends_at` (excluded)."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    author: str
    comment: str

    def __post_init__(self) -> None:
        if not self.ends_at > self.starts_at:
            raise ValueError(f"silence {self.id}: ends_at must be after starts_at")
        object.__setattr__(
            self, "matchers", _require_selective(self.matchers, f"silence {self.id}")
        )


def active(mute: Silence | MaintenanceWindow, now: float) -> bool:
    """Whether the silence, or an occurrence of the window, covers `now`."""
    if isinstance(mute, Silence):
        return mute.starts_at <= now < mute.ends_at
    return window_active(mute, now)


@dataclass(frozen=True)
class MaintenanceWindow:
    """A recurring mute: it opens at each fire time of `cron` and lasts `duration` seconds.

    `cron` is a standard 5-field crontab line (minute hour day month weekday) read in the IANA
    `timezone`. Weekday numbers are crontab's (0 or 7 = Sunday, 1 = Monday); names (`mon-fri`)
    work too. APScheduler 3 does the calendar arithmetic, but it numbers weekdays from Monday = 0
    and ANDs day-of-month with weekday where cron ORs them: numeric weekdays are translated to
    names here, and restricting both fields is refused rather than silently read differently.

    `duration` is elapsed time. Across a DST change the start follows Vixie cron: a start time
    that does not exist (spring forward) opens the window at the first instant after the jump
    (`0 2` and `30 2` both open at 03:00 summer time in Rome); a start time that happens twice
    (fall back) opens it once, at the first occurrence. So `0 2 * * *` for 2 h mutes 02:00 to
    03:00 winter time on the autumn night: two real hours, as long as the job it covers.

    How: APScheduler computes fire times on the naive wall clock (a DST-free calendar, in UTC),
    and this module maps each wall time to an instant in `timezone` with the rules above. That
    mapping never decreases, so "the first fire after an instant" is well defined; APScheduler
    searching in the zone itself gives answers that depend on where the search starts (it
    misses a spring-forward start asked from inside the jump, and fires twice in autumn).
    """

    name: str
    cron: str
    duration: float
    matchers: tuple[Matcher, ...]
    comment: str = ""
    timezone: str = "UTC"
    # Announcing it to the audiences of these services (scheduled → in progress → completed),
    # `announce_before` ahead (0: not announced). `title` and `description` are for users.
    services: tuple[str, ...] = ()
    title: str = ""
    description: str = ""
    announce_before: float = 0.0
    _trigger: CronTrigger = field(init=False, repr=False, compare=False)
    _zone: tzinfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.duration > 0:
            raise ValueError(f"maintenance window {self.name}: duration must be positive")
        object.__setattr__(
            self, "matchers", _require_selective(self.matchers, f"maintenance window {self.name}")
        )
        object.__setattr__(self, "_zone", _zone(self.name, self.timezone))
        object.__setattr__(self, "_trigger", _trigger(self.name, self.cron))


def _trigger(name: str, cron: str) -> CronTrigger:
    try:
        # UTC here is the naive wall clock of the window's zone: see the class docstring.
        return CronTrigger.from_crontab(_crontab_for_apscheduler(cron), timezone=UTC)
    except ValueError as exc:
        raise ValueError(f"maintenance window {name}: {cron!r} is not valid: {exc}") from exc


def _crontab_for_apscheduler(cron: str) -> str:
    fields = cron.split()
    if len(fields) != 5:
        raise ValueError(f"a crontab line has 5 fields, this one {len(fields)}")
    if fields[2] != "*" and fields[4] != "*":
        raise ValueError(
            "it restricts both day of month and weekday, which cron reads as either and "
            "APScheduler as both; split it into two windows"
        )
    return " ".join([*fields[:4], _weekday_names(fields[4])])


def _zone(name: str, timezone: str) -> tzinfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"maintenance window {name}: {timezone!r} is not an IANA time zone"
        ) from exc


_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _weekday_names(spec: str) -> str:
    """Crontab weekday numbers (0/7 = Sunday) as names, which APScheduler reads the same way."""
    if spec == "*":
        return spec
    return ",".join(_weekday_part(part) for part in spec.split(","))


def _weekday_part(part: str) -> str:
    span, slash, step_text = part.partition("/")
    if span != "*" and not any(char.isdigit() for char in span):
        return part  # names mean the same in crontab and APScheduler, which validates them
    step = _step(step_text) if slash else 1
    first, last = _weekday_span(span)
    days = {day % 7 for day in range(first, last + 1, step)}
    return ",".join(_DAYS[day] for day in sorted(days))


def _step(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"weekday step {text!r} is not a positive whole number")
    return int(text)


def _weekday_span(span: str) -> tuple[int, int]:
    if span == "*":
        return 0, 6
    low, _, high = span.partition("-")
    if not low.isdigit() or (high and not high.isdigit()):
        raise ValueError(f"weekday {span!r}: write numbers 0-7 or names, not both")
    first, last = int(low), int(high or low)
    if not 0 <= first <= last <= 7:
        raise ValueError(f"weekday range {span!r} must lie within 0-7, low to high")
    return first, last


def _fires(window: MaintenanceWindow, after: float) -> Iterator[float]:
    """Fire times strictly after `after`, in order, as epoch seconds (always whole seconds)."""
    while (fire := _first_fire_after(window, after)) is not None:
        yield fire
        after = fire


def _first_fire_after(window: MaintenanceWindow, after: float) -> float | None:
    # Every fire at an instant > `after` has a wall time >= the wall time of floor(after): the
    # wall-to-instant mapping never decreases. Fires before `after` are skipped; that loops more
    # than once only in the repeated hour of autumn, whose wall times map to earlier instants.
    wall = _wall_clock(math.floor(after), window._zone)
    while (found := window._trigger.get_next_fire_time(None, wall)) is not None:
        instant = _instant(found.replace(tzinfo=None), window._zone)
        if instant > after:
            return instant
        wall = found + timedelta(seconds=1)
    return None


def _wall_clock(instant: float, zone: tzinfo) -> datetime:
    """The wall time shown in `zone` at `instant`, tagged UTC for the wall-clock trigger."""
    local = datetime.fromtimestamp(instant, tz=zone)
    return local.replace(tzinfo=UTC, fold=0)


def _instant(wall: datetime, zone: tzinfo) -> float:
    """When the naive `wall` time happens in `zone`: its first occurrence if it happens twice,
    the first instant after the jump if it does not happen at all."""
    first = wall.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall:
        return first.timestamp()
    return _end_of_gap(wall, zone)


def _end_of_gap(wall: datetime, zone: tzinfo) -> float:
    # `wall` falls in a gap: reading it with the offset after (fold=1) gives an instant before
    # the jump, with the offset before (fold=0) one after it. Bisect for the jump itself: the
    # first whole second whose wall time is past `wall`.
    low = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = int(wall.replace(tzinfo=zone, fold=0).timestamp())
    while low < high:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz=zone).replace(tzinfo=None) > wall:
            high = middle
        else:
            low = middle + 1
    return float(high)


def window_active(window: MaintenanceWindow, now: float) -> bool:
    """Whether `now` lies inside an occurrence: a fire time in (now - duration, now].

    APScheduler only walks forward, so this asks for the first fire time after
    `now - duration`: one call whatever the duration, as a window that started earlier has
    already ended.
    """
    first = next(_fires(window, now - window.duration), None)
    return first is not None and first <= now


def next_start(window: MaintenanceWindow, now: float) -> float | None:
    """The first fire time strictly after `now`, or None if the schedule never fires again."""
    return next(_fires(window, now), None)


Mute = Silence | MaintenanceWindow


def covering(mute: Mute, now: float) -> tuple[float, float] | None:
    """(start, end) of the occurrence of `mute` that covers `now` and ends last, or None.

    For a window whose occurrences overlap (duration longer than the schedule's period) this
    walks every fire time in (now - duration, now]: as many calls as fires in one duration.
    """
    if isinstance(mute, Silence):
        return (mute.starts_at, mute.ends_at) if active(mute, now) else None
    latest = None
    for fire in _fires(mute, now - mute.duration):
        if fire > now:
            break
        latest = fire
    return None if latest is None else (latest, latest + mute.duration)


def muted(
    labels: Mapping[str, str],
    silences: Sequence[Silence],
    windows: Sequence[MaintenanceWindow],
    now: float,
) -> Mute | None:
    """The first active silence, else the first active window, that selects `labels`."""
    for silence in silences:
        if active(silence, now) and matches(silence.matchers, labels):
            return silence
    for window in windows:
        if matches(window.matchers, labels) and active(window, now):
            return window
    return None


def opened_and_closed_inside(
    start: float, end: float, windows: Sequence[Mute], labels: Mapping[str, str]
) -> bool:
    """Whether an alert active from `start` to `end` was muted all along: it opens no ticket.

    True when every instant of [start, end] is covered by the mutes that select `labels`,
    possibly by several overlapping or back-to-back occurrences. An alert that starts inside
    a window and ends after it (or at its very end, intervals being half-open) is not inside.
    Cost: one `covering` per occurrence crossed; an alert that did not start muted costs one.
    """
    selecting = [mute for mute in windows if matches(mute.matchers, labels)]
    reached = start
    while reached <= end:
        ends = [found[1] for mute in selecting if (found := covering(mute, reached)) is not None]
        if not ends:
            return False
        reached = max(ends)
    return True
