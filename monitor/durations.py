"""Durations as sysadmins write them: `30s`, `5m`, `4h`, `1d`, `1h30m`, `500ms`, or bare seconds."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime

DURATION_HINT = "use 30s, 5m, 4h or 1d"

# Times are shown as calendar dates, which run from the year 1 to 9999.
FIRST_INSTANT = datetime(1, 1, 2, tzinfo=UTC).timestamp()
LAST_INSTANT = datetime(9999, 12, 31, tzinfo=UTC).timestamp()

# Largest unit first: the order in which a duration must be written.
_UNIT_SECONDS = {"w": 604_800.0, "d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# `ms` before `m`, so that `500ms` is not read as 500 minutes and a stray `s`.
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|w|d|h|m|s)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|w|d|h|m|s))+")
_BARE_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_FORMAT_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1))


def parse_duration(text: str | int | float) -> float:
    """The seconds `text` stands for; ValueError with a hint when it is not a duration."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(_not_a_duration(text))
    if not isinstance(text, str):
        return _checked_seconds(float(text), text)
    spec = text.strip()
    if _BARE_NUMBER.fullmatch(spec):
        return float(spec)
    if not _WHOLE.fullmatch(spec):
        raise ValueError(_not_a_duration(text))
    parts = _PART.findall(spec)
    if not _largest_unit_first([unit for _, unit in parts]):
        raise ValueError(_not_a_duration(text))
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    """The shortest way to write `seconds` that `parse_duration` reads back (to the millisecond)."""
    if not math.isfinite(seconds):
        return str(seconds)
    remaining = round(abs(seconds) * 1000)
    if remaining == 0:
        return "0s"
    parts = []
    for unit, size in _FORMAT_UNITS:
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return ("-" if seconds < 0 else "") + "".join(parts)


def at_least(minimum: float) -> Callable[[float | None], None]:
    """A check (for a config field's metadata) that a duration is not shorter than `minimum`."""

    def check(value: float | None) -> None:
        if value is not None and value < minimum:
            raise ValueError(
                f"{format_duration(value)} is too short; use at least {format_duration(minimum)}"
            )

    return check


def _checked_seconds(seconds: float, original: int | float) -> float:
    # TOML allows inf and nan, and a negative wait means nothing.
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(_not_a_duration(original))
    return seconds


def _largest_unit_first(units: list[str]) -> bool:
    # `1h30m` is clear, `30m1h` or `1h1h` is a typo worth reporting.
    order = list(_UNIT_SECONDS)
    ranks = [order.index(unit) for unit in units]
    return all(earlier < later for earlier, later in itertools.pairwise(ranks))


def _not_a_duration(value: object) -> str:
    shown = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
    return f"{shown} is not a duration; {DURATION_HINT}"


def on_calendar(instant: float) -> bool:
    """Whether `instant` can be shown as a date (the years 1 to 9999)."""
    return FIRST_INSTANT <= instant < LAST_INSTANT


def parse_instant(text: str) -> float:
    """Epoch seconds of an ISO 8601 time, UTC unless it says its offset; ValueError when it is
    not one or falls off the calendar."""
    try:
        moment = datetime.fromisoformat(text.strip())
        instant = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError):  # not ISO 8601, or an offset off the calendar's end
        instant = math.nan
    if not on_calendar(instant):
        raise ValueError(f"{text!r} is not a time")
    return instant
