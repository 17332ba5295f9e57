"""Nagios/Icinga plugin output: the status text and the performance data.

The format, from the Nagios plugin development guidelines:

    TEXT OUTPUT | OPTIONAL PERFDATA
    LONG TEXT LINE 1
    LONG TEXT LINE 2 | PERFDATA LINE 2
    PERFDATA LINE 3

Perfdata is a space-separated list of `'label'=value[UOM];[warn];[crit];[min];[max]`. A label
with spaces is quoted with single quotes, a quote inside it doubled (`'it''s'`). A value of
`U` means the plugin could not determine it. Trailing empty fields may be left out.

Values and thresholds are normalised to base units, as Icinga 2 does: `s`, `ms`, `us` to
seconds; `B`, `KB`, `MB`, `GB`, `TB`, `PB` to bytes in powers of 1000, `KiB`, `MiB`... in
powers of 1024; `%` stays a percentage, `c` a counter, `C` degrees Celsius. Any other unit
is kept as written (and the value unscaled) when it is a short word, else dropped.

A threshold is kept only when it is a plain number (`80`: alert above 80, or below 0).
Nagios ranges (`10:`, `~:10`, `10:20`, `@10:20`) mean more than one bound, or an inside
range; squeezing them into one number would mislead a rule, so they are left out.
"""

import logging
import math
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_ITEMS = 500  # a plugin listing every file of a disk must not flood the state store
MAX_LABEL_CHARS = 128
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
VALUE = re.compile(rf"(?P<number>{NUMBER.pattern}|U)(?P<unit>\S*)")
PLAIN_UNIT = re.compile(r"[A-Za-z/°]{1,12}")
PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")
SPACES = re.compile(r"\s*")

_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_OTHER = {"": ("", 1.0), "%": ("percent", 1.0), "c": ("counter", 1.0), "C": ("celsius", 1.0)}


def _byte_units() -> dict[str, float]:
    units = {"B": 1.0}
    for power, prefix in enumerate("KMGTPE", start=1):
        units[f"{prefix}B"] = 1000.0**power
        units[f"{prefix}iB"] = 1024.0**power
    units["kB"] = 1000.0
    return units


_BYTES = _byte_units()


@dataclass(frozen=True)
class Perfdata:
    """One perfdata item in base units; `value` is NaN for `U`; thresholds None when absent."""

    label: str
    value: float
    unit: str  # "seconds", "bytes", "percent", "counter", "celsius", "" or the unit as written
    warn: float | None = None
    crit: float | None = None
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class PluginOutput:
    status_text: str  # the first line before `|`, stripped
    long_text: str
    perfdata: tuple[Perfdata, ...]


def split_output(text: str) -> PluginOutput:
    """The status line, the long text and the parsed perfdata of a plugin's standard output."""
    lines = text.splitlines() or [""]
    status_text, _, first_perf = lines[0].partition("|")
    long_lines, perf_chunks = [], [first_perf]
    in_perfdata = False
    for line in lines[1:]:
        if in_perfdata:
            perf_chunks.append(line)
            continue
        before, bar, after = line.partition("|")
        long_lines.append(before)
        if bar:
            in_perfdata = True
            perf_chunks.append(after)
    items = parse_perfdata(" ".join(perf_chunks))
    return PluginOutput(status_text.strip(), "\n".join(long_lines).strip(), items)


def parse_perfdata(text: str) -> tuple[Perfdata, ...]:
    """Every well-formed item of a perfdata string; malformed ones are skipped (and logged)."""
    items: dict[str, Perfdata] = {}
    position = 0
    while len(items) < MAX_ITEMS:
        token, position = _next_token(text, position)
        if token is None:
            break
        item = _parse_item(*token)
        if item is not None and item.label not in items:  # the first of a repeated label wins
            items[item.label] = item
    return tuple(items.values())


def _next_token(text: str, start: int) -> tuple[tuple[str, str] | None, int]:
    """((label, rest up to the next space), position after it), or (None, end) at the end."""
    spaces = SPACES.match(text, start)
    position = spaces.end() if spaces else start
    if position >= len(text):
        return None, position
    if text[position] == "'":
        label, position = _quoted_label(text, position + 1)
    else:
        end = _find_any(text, position, "= \t")
        label, position = text[position:end], end
    end = _find_any(text, position, " \t")
    rest = text[position:end]
    if not rest.startswith("="):
        log.debug("perfdata item without '=' skipped: %r", (label + rest)[:80])
        return ("", ""), end  # no label: _parse_item skips it
    return (label, rest[1:]), end


def _quoted_label(text: str, position: int) -> tuple[str, int]:
    """The label of a quoted item starting after its opening quote, and where it ends."""
    chars: list[str] = []
    while position < len(text):
        if text[position] == "'":
            if text[position + 1 : position + 2] != "'":
                return "".join(chars), position + 1
            position += 1  # '' is one quote
        chars.append(text[position])
        position += 1
    return "".join(chars), position


def _find_any(text: str, start: int, stops: str) -> int:
    return next((i for i in range(start, len(text)) if text[i] in stops), len(text))


def _parse_item(label: str, fields_text: str) -> Perfdata | None:
    if not label or len(label) > MAX_LABEL_CHARS or not PRINTABLE.fullmatch(label):
        if label:
            log.debug("perfdata label skipped: %r", label[:80])
        return None
    fields = fields_text.split(";")
    match = VALUE.fullmatch(fields[0])
    if match is None:
        log.debug("perfdata item %r has no valid value: %r", label, fields[0][:40])
        return None
    unit, factor = normalise_unit(match["unit"])
    if unit is None:
        log.debug("perfdata item %r has an unusable unit: %r", label, match["unit"][:20])
        return None
    value = math.nan if match["number"] == "U" else float(match["number"]) * factor
    warn, crit, low, high = (_plain(fields, i, factor) for i in range(1, 5))
    return Perfdata(label, value, unit, warn, crit, low, high)


def _plain(fields: list[str], index: int, factor: float) -> float | None:
    """Field `index` as a number in base units, None when absent, a range or not a number."""
    if index >= len(fields) or not NUMBER.fullmatch(fields[index].strip()):
        return None
    return float(fields[index]) * factor


def normalise_unit(unit: str) -> tuple[str | None, float]:
    """(the unit's name in labels, factor to base units); name None for an unusable unit."""
    if unit in _TIME:
        return "seconds", _TIME[unit]
    if unit in _BYTES:
        return "bytes", _BYTES[unit]
    if unit in _OTHER:
        return _OTHER[unit]
    if PLAIN_UNIT.fullmatch(unit):
        return unit, 1.0
    return None, 1.0
