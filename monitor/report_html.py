"""The HTML help-desk report: one self-contained page with the figures of `forewarn report`.

The page is `notifiers/templates/report/report.html.j2`, rendered through the sandboxed,
autoescaping `notifiers.render.Renderer`. Every figure on it is the text `monitor.report`
writes for the terminal (`headline` and the `fmt_*` helpers), so a number reads the same in
both. The charts are worked out here as coordinates and drawn by the template as inline SVG:
the page has no script, no font and no image from anywhere, and its Content-Security-Policy
forbids fetching any. Episode summaries quote probe output: untrusted, only ever escaped.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from monitor.report import (
    BREAKDOWN_HEADERS,
    NOISE_HEADERS,
    TIMES,
    TIMES_HEADERS,
    breakdown_rows,
    fmt_duration,
    fmt_moment,
    fmt_share,
    headline,
    noise_rows,
    suggestion_text,
    times_rows,
    window_text,
)
from notifiers.render import Renderer
from rules.figures import Breakdown, Episode, RuleNoise, Summary, nice_ceiling

log = logging.getLogger(__name__)

__all__ = [
    "Chart",
    "Shape",
    "Words",
    "charts",
    "lead_chart",
    "render_html",
    "report_context",
    "response_chart",
    "rules_chart",
    "tables",
    "trend_chart",
    "write_html",
]

TEMPLATE = "report/report.html.j2"
TOP_RULES = 10  # as many as the terminal's "Top rules"
LEAD_EPISODES = 40  # the latest predicted episodes in the lead-time chart
WIDTH = 420.0  # SVG user units; the page scales a chart to its column
NAME_CHARS = 52  # a row label longer than this is cut (the tooltip has it whole)
ROW_GAP, LANE, LANE_GAP, TEXT_LINE = 8.0, 11.0, 3.0, 18.0


# --- charts as data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What the template draws: a `rect` (a bar), a `dot` or a `line` (a polyline through
    `points`), coloured by its CSS class, with `tip` as its tooltip."""

    kind: str
    css: str
    x: float = 0.0
    y: float = 0.0
    width: float = 0.0
    height: float = 0.0
    points: str = ""
    tip: str = ""


@dataclass(frozen=True)
class Words:
    """A text in a chart; `anchor` is SVG's text-anchor."""

    x: float
    y: float
    text: str
    anchor: str = "start"
    css: str = ""


@dataclass(frozen=True)
class Chart:
    """One inline SVG: `label` is its aria-label, `legend` (CSS class, words) its key."""

    name: str
    title: str
    label: str
    height: float
    shapes: tuple[Shape, ...]
    words: tuple[Words, ...]
    legend: tuple[tuple[str, str], ...]
    width: float = WIDTH


@dataclass(frozen=True)
class _Bar:
    """A bar of a row chart, from `start` to `end` as fractions of the width (equal: a dot)."""

    start: float
    end: float
    css: str
    tip: str
    lane: int = 0


@dataclass(frozen=True)
class _Row:
    text: str
    bars: tuple[_Bar, ...]
    lanes: int = 1


@dataclass(frozen=True)
class _Frame:
    """The plotting area of an axes chart, in user units."""

    left: float
    top: float
    right: float
    bottom: float

    def y(self, fraction: float) -> float:
        return _r(self.bottom - fraction * (self.bottom - self.top))


def _r(value: float) -> float:
    return round(value, 1)


def _clip(text: str, limit: int = NAME_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# --- (a) the weekly trend ------------------------------------------------------------------------

_TREND = _Frame(left=34.0, top=30.0, right=WIDTH - 72.0, bottom=190.0)


def trend_chart(weeks: Sequence[Breakdown]) -> Chart:
    """Incidents per week as bars (left axis), mean time to acknowledge and to resolve per
    week as lines (right axis)."""
    frame, slot = _TREND, (_TREND.right - _TREND.left) / len(weeks)
    counts = _count_ticks(max(w.rates.incidents for w in weeks))
    series = [[w.times.acknowledge.mean for w in weeks], [w.times.resolve.mean for w in weeks]]
    top = _duration_top(v for values in series for v in values)
    shapes = [*_axes(frame), *_week_bars(weeks, frame, slot, counts[-1])]
    for css, name, values in zip(("c-mtta", "c-mttr"), ("MTTA", "MTTR"), series, strict=True):
        shapes += _week_line(weeks, values, frame, slot, top, css, name)
    words = [*_count_labels(frame, counts), *_duration_labels(frame, top)]
    words += _week_labels(weeks, frame, slot)
    return Chart(
        name="trend",
        title="Weekly trend",
        label=f"Incidents per week over {_plural(len(weeks), 'week')}, with the mean time to "
        "acknowledge (MTTA) and to resolve (MTTR) of each week",
        height=frame.bottom + 40.0,
        shapes=tuple(shapes),
        words=tuple(words),
        legend=(
            ("c-incidents", "incidents (bars, left axis)"),
            ("c-mtta", "MTTA: mean time to acknowledge (right axis)"),
            ("c-mttr", "MTTR: mean time to resolve (right axis)"),
        ),
    )


def _count_ticks(most: int) -> list[int]:
    """0 up to a round top at or past `most`, in at most five ticks."""
    step = max(1, math.ceil(max(1, most) / 4))
    return list(range(0, step * math.ceil(max(1, most) / step) + 1, step))


def _duration_top(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return nice_ceiling(max(known)) if known else None


def _axes(frame: _Frame) -> list[Shape]:
    corners = f"{frame.left},{frame.top} {frame.left},{frame.bottom} {frame.right},{frame.bottom}"
    return [
        Shape("line", "axis", points=corners),
        Shape("line", "axis", points=f"{frame.right},{frame.top} {frame.right},{frame.bottom}"),
    ]


def _week_bars(weeks: Sequence[Breakdown], frame: _Frame, slot: float, top: int) -> list[Shape]:
    width = min(slot * 0.6, 36.0)
    bars = []
    for index, week in enumerate(weeks):
        count = week.rates.incidents
        if count:
            y = frame.y(count / top)
            x = frame.left + slot * (index + 0.5) - width / 2
            tip = f"week of {week.key}: {_plural(count, 'incident')}"
            bars.append(
                Shape("rect", "c-incidents", _r(x), y, _r(width), _r(frame.bottom - y), tip=tip)
            )
    return bars


def _week_line(
    weeks: Sequence[Breakdown],
    values: Sequence[float | None],
    frame: _Frame,
    slot: float,
    top: float | None,
    css: str,
    name: str,
) -> list[Shape]:
    """A polyline through each run of weeks with a value, and a dot (with its tooltip) per week."""
    if top is None:
        return []
    points = [
        None if v is None else (_r(frame.left + slot * (i + 0.5)), frame.y(v / top))
        for i, v in enumerate(values)
    ]
    shapes = [Shape("line", css, points=run) for run in _runs(points)]
    for week, value, point in zip(weeks, values, points, strict=True):
        if point is not None:
            tip = f"week of {week.key}: {name} {fmt_duration(value)}"
            shapes.append(Shape("dot", css, x=point[0], y=point[1], tip=tip))
    return shapes


def _runs(points: Sequence[tuple[float, float] | None]) -> list[str]:
    """The polyline `points` of each run of two or more known points."""
    runs: list[list[tuple[float, float]]] = [[]]
    for point in points:
        if point is None:
            runs.append([])
        else:
            runs[-1].append(point)
    return [" ".join(f"{x},{y}" for x, y in run) for run in runs if len(run) > 1]


def _count_labels(frame: _Frame, ticks: Sequence[int]) -> list[Words]:
    labels = [Words(0.0, 14.0, "incidents", css="caption")]
    for tick in ticks:
        labels.append(
            Words(frame.left - 5, frame.y(tick / ticks[-1]) + 4, str(tick), "end", "tick")
        )
    return labels


def _duration_labels(frame: _Frame, top: float | None) -> list[Words]:
    labels = [Words(WIDTH, 14.0, "MTTA / MTTR", "end", css="caption")]
    if top is None:
        return labels
    for fraction in (0.5, 1.0):
        text = fmt_duration(top * fraction)
        labels.append(Words(frame.right + 5, frame.y(fraction) + 4, text, css="tick"))
    return labels


def _week_labels(weeks: Sequence[Breakdown], frame: _Frame, slot: float) -> list[Words]:
    """Every week's start (month-day) when they fit, else every few weeks'."""
    every = max(1, math.ceil(len(weeks) / 6))
    labels = [
        Words(_r(frame.left + slot * (i + 0.5)), frame.bottom + 16, week.key[5:], "middle")
        for i, week in enumerate(weeks)
        if i % every == 0
    ]
    middle = (frame.left + frame.right) / 2
    labels.append(Words(middle, frame.bottom + 36, "week starting (UTC)", "middle", "caption"))
    return labels


# --- (b, c, d) row charts: one row of bars per rule or episode -----------------------------------


def _row_chart(
    name: str, title: str, label: str, rows: Sequence[_Row], legend: Sequence[tuple[str, str]]
) -> Chart:
    """Rows of a label line over one or more lanes of bars, as wide as the chart."""
    shapes: list[Shape] = []
    words: list[Words] = []
    y = 0.0
    for row in rows:
        words.append(Words(0.0, y + TEXT_LINE - 5, _clip(row.text)))
        shapes += _row_shapes(row, y + TEXT_LINE)
        y += TEXT_LINE + row.lanes * (LANE + LANE_GAP) + ROW_GAP
    return Chart(name, title, label, _r(y), tuple(shapes), tuple(words), tuple(legend))


def _row_shapes(row: _Row, top: float) -> list[Shape]:
    shapes = []
    for bar in row.bars:
        y = top + bar.lane * (LANE + LANE_GAP)
        start, end = sorted((bar.start * WIDTH, bar.end * WIDTH))
        if end - start < 0.5:  # a marker, not a length: a dot
            shapes.append(Shape("dot", bar.css, x=_r(start), y=_r(y + LANE / 2), tip=bar.tip))
        else:
            shapes.append(
                Shape("rect", bar.css, _r(start), _r(y), _r(end - start), LANE, tip=bar.tip)
            )
    return shapes


def rules_chart(by_rule: Sequence[Breakdown], noise: Sequence[RuleNoise]) -> Chart:
    """(b) incidents per rule, the noisy part of each highlighted."""
    noisy = {budget.rule: budget for budget in noise}
    most = max(b.rates.incidents for b in by_rule)
    rows = [_rule_row(b, noisy.get(b.key), most) for b in by_rule[:TOP_RULES]]
    label = (
        f"Incidents per rule for the top {_plural(len(rows), 'rule')}, the noisy part of "
        "each (blips, flapping, recurrences, no action needed) highlighted"
    )
    legend = (
        ("c-incidents", "incidents"),
        ("c-noisy", "noisy: blips, flapping, reopens, no action"),
    )
    return _row_chart("rules", "Top rules", label, rows, legend)


def _rule_row(part: Breakdown, budget: RuleNoise | None, most: int) -> _Row:
    count = part.rates.incidents
    noisy = budget.noisy if budget else 0
    share = fmt_share(budget.noise_share if budget else None)
    text = f"{part.key}: {_plural(count, 'incident')}, {noisy} noisy ({share})"
    bars = [_Bar(0.0, count / most, "c-incidents", f"{part.key}: {_plural(count, 'incident')}")]
    if noisy:
        bars.append(_Bar(0.0, noisy / most, "c-noisy", f"{part.key}: {noisy} noisy ({share})"))
    return _Row(text, tuple(bars))


def response_chart(by_rule: Sequence[Breakdown]) -> Chart:
    """(c) mean time to acknowledge and to resolve per rule, side by side."""
    parts = by_rule[:TOP_RULES]
    top = _duration_top(s.mean for b in parts for s in (b.times.acknowledge, b.times.resolve))
    rows = [_response_row(b, top) for b in parts]
    label = (
        f"Mean time to acknowledge (MTTA) and to resolve (MTTR) for the top "
        f"{_plural(len(rows), 'rule')}"
    )
    legend = (
        ("c-mtta", "MTTA: mean time to acknowledge"),
        ("c-mttr", "MTTR: mean time to resolve"),
    )
    return _row_chart("response", "MTTA and MTTR per rule", label, rows, legend)


def _response_row(part: Breakdown, top: float | None) -> _Row:
    pairs = (("MTTA", "c-mtta", part.times.acknowledge), ("MTTR", "c-mttr", part.times.resolve))
    text = f"{part.key}: " + ", ".join(f"{n} {fmt_duration(s.mean)}" for n, _, s in pairs)
    bars = [
        _Bar(0.0, stat.mean / top, css, f"{part.key}: {name} {fmt_duration(stat.mean)}", lane)
        for lane, (name, css, stat) in enumerate(pairs)
        if top and stat.mean is not None
    ]
    return _Row(text, tuple(bars), lanes=2)  # both lanes even when a value is unknown


def lead_chart(episodes: Sequence[Episode]) -> Chart:
    """(d) the lead time of each predicted episode: right of the line when forewarn warned
    before the impact, left when the impact came first; a mark at the line when averted."""
    shown = list(episodes)[-LEAD_EPISODES:]
    leads = [e.lead_time for e in shown if e.lead_time is not None]
    ahead, behind = max([*leads, 0.0]), max([*(-lead for lead in leads), 0.0])
    span = (ahead + behind) or 1.0
    zero = behind / span  # where the warning is: right of it, forewarn was ahead
    rows = [_lead_row(e, zero, span) for e in shown]
    label = (
        f"Lead time of the latest {_plural(len(rows), 'predicted episode')}: from the warning "
        "to the impact it predicted; averted ones marked"
    )
    legend = (
        ("c-lead", "warned before the impact"),
        ("c-late", "impact came first"),
        ("c-averted", "averted: resolved before the impact"),
        ("c-pending", "no impact yet, still open"),
    )
    chart = _row_chart("lead", "Lead time per predicted episode", label, rows, legend)
    line = Shape("line", "axis", points=f"{_r(zero * WIDTH)},0 {_r(zero * WIDTH)},{chart.height}")
    return replace(chart, shapes=(line, *chart.shapes))


def _lead_row(episode: Episode, zero: float, span: float) -> _Row:
    name = f"#{episode.incident_id} {episode.rule}"
    lead = episode.lead_time
    if lead is None:
        verdict = "averted" if episode.averted else "no impact yet"
        css = "c-averted" if episode.averted else "c-pending"
        return _Row(f"{name}: {verdict}", (_Bar(zero, zero, css, f"{name}: {verdict}"),))
    verdict = f"lead {fmt_duration(lead)}" + ("" if lead > 0 else " (impact first)")
    css = "c-lead" if lead > 0 else "c-late"
    return _Row(f"{name}: {verdict}", (_Bar(zero, zero + lead / span, css, f"{name}: {verdict}"),))


def charts(summary: Summary) -> list[Chart]:
    """The report's charts: trend, top rules, MTTA/MTTR per rule, and lead time when an
    episode was opened on a prediction. None for a window without incidents."""
    if not summary.rates.incidents:
        return []
    drawn = [
        trend_chart(summary.weeks),
        rules_chart(summary.by_rule, summary.noise),
        response_chart(summary.by_rule),
    ]
    predicted = [e for e in summary.episodes if e.predicted]
    return drawn + ([lead_chart(predicted)] if predicted else [])


# --- tables, as the terminal shows them ----------------------------------------------------------


def _table(
    name: str, caption: str, headers: Sequence[str], rows: Iterable[list[str]]
) -> dict[str, Any]:
    return {"name": name, "caption": caption, "headers": list(headers), "rows": list(rows)}


def tables(summary: Summary) -> dict[str, dict[str, Any]]:
    """The report's tables by name, each cell the text the terminal shows (every row here:
    the terminal lists the top ten rules and services)."""
    made = [
        _table("times", "Response times", TIMES_HEADERS, times_rows(summary)),
        _table(
            "weeks",
            "Weekly trend (weeks from Monday, UTC)",
            BREAKDOWN_HEADERS,
            breakdown_rows(summary.weeks),
        ),
        _table("rules", "By rule", BREAKDOWN_HEADERS, breakdown_rows(summary.by_rule)),
        _table("services", "By service", BREAKDOWN_HEADERS, breakdown_rows(summary.by_service)),
        _table("noise", "Noise budget (noisiest first)", NOISE_HEADERS, noise_rows(summary.noise)),
    ]
    return {table["name"]: table for table in made}


# --- the headline and the episodes ---------------------------------------------------------------


def figure_groups(summary: Summary) -> list[tuple[str, list[tuple[str, str]]]]:
    """`headline(summary)` in its three runs: the incidents, the response times (the median
    and mean of each time), and how far ahead of users forewarn was."""
    figures = headline(summary)
    timed = {f"{which} {label}" for _, label in TIMES for which in ("median", "mean")}
    places = [i for i, (label, _) in enumerate(figures) if label in timed]
    first, last = places[0], places[-1] + 1
    return [
        ("Incidents", figures[:first]),
        ("Median and mean times", figures[first:last]),
        ("Ahead of users", figures[last:]),
    ]


def episode_row(episode: Episode) -> dict[str, Any]:
    """One line of the episode list; `summary` is untrusted text (the template escapes it)."""
    number = f"#{episode.incident_id}"
    return {
        "incident": number if episode.episode == 1 else f"{number} ({episode.episode})",
        "rule": episode.rule,
        "service": episode.service,
        "summary": episode.summary,
        "opened": fmt_moment(episode.opened_at),
        "ticket": fmt_duration(episode.time_to_ticket),
        "acknowledge": fmt_duration(episode.time_to_acknowledge),
        "resolve": fmt_duration(episode.time_to_resolve),
        "step": str(episode.escalation_step) if episode.escalation_step else "none",
        "outcome": _outcome(episode),
        "tags": _tags(episode),
    }


def _outcome(episode: Episode) -> str:
    if not episode.resolved:
        return "open"
    if episode.auto_resolved:
        return "auto-resolved"
    return f"resolved by {episode.resolved_by}"


def _tags(episode: Episode) -> list[str]:
    lead = episode.lead_time
    flags = [
        (episode.averted, "averted"),
        (lead is not None, f"lead {fmt_duration(lead)}"),
        (episode.recurrence, "recurrence"),
        (episode.blip, "blip"),
        (episode.flapping, "flapping"),
        (episode.rejected, "no action needed"),
        (bool(episode.user_reports), "user-reported"),
        (episode.muted, "muted"),
    ]
    return [text for present, text in flags if present]


# --- the page ------------------------------------------------------------------------------------


def report_context(summary: Summary, generated_at: float) -> dict[str, Any]:
    """Everything the template shows, as texts and chart coordinates."""
    return {
        "window": window_text(summary),
        "generated": fmt_moment(generated_at),
        "symptoms": summary.symptoms,
        "empty": not summary.rates.incidents,
        "groups": figure_groups(summary) if summary.rates.incidents else [],
        "charts": {chart.name: chart for chart in charts(summary)},
        "tables": tables(summary),
        "suggestions": [suggestion_text(n.rule, s) for n in summary.noise for s in n.suggestions],
        "episodes": [episode_row(e) for e in summary.episodes],
    }


def render_html(summary: Summary, generated_at: float | None = None) -> str:
    """The report as one self-contained HTML page; `generated_at` defaults to now."""
    moment = time.time() if generated_at is None else generated_at
    return Renderer().render_text(TEMPLATE, report_context(summary, moment))


def write_html(summary: Summary, path: str | Path, generated_at: float | None = None) -> None:
    """Write the page to `path` atomically: a reader sees the old file or the whole new one.
    ValueError (with the reason) when it cannot be written."""
    target = Path(path)
    page = render_html(summary, generated_at)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        _write_new(temporary, page)
        os.replace(temporary, target)
    except OSError as exc:
        if not isinstance(exc, FileExistsError):  # only ever remove our own half-written file
            temporary.unlink(missing_ok=True)
        raise ValueError(
            f"cannot write the HTML report to {target}: {exc.strerror or exc}"
        ) from exc
    log.debug("HTML report written to %s", target)


def _write_new(path: Path, text: str) -> None:
    """Write a file that must not exist yet, through to the disk (so the rename is safe)."""
    with open(path, "x", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
