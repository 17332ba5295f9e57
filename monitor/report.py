"""`forewarn report`: the help-desk figures of a window, read from the state file.

The episodes come from the event log (`rules.figures`); this module reads them, and renders
the summary as text for a terminal or as JSON. The HTML report (`monitor.report_html`) shows
the same figures: both take their numbers from `headline` and `fmt_*` here, so a figure reads
the same in both.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sqlite3
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from monitor import store as st
from monitor.durations import format_duration, on_calendar, parse_duration, parse_instant
from rules.figures import (
    Breakdown,
    Episode,
    Event,
    IncidentFacts,
    RuleNoise,
    RuleTuning,
    Stat,
    Suggestion,
    Summary,
    episodes,
    summarize,
)
from rules.model import Rule

DEFAULT_SINCE = 30 * 86_400.0
TIMES = (
    ("detect", "time to detect"),
    ("ticket", "time to ticket"),
    ("first_notice", "time to first notice"),
    ("acknowledge", "time to acknowledge"),
    ("resolve", "time to resolve"),
)

# --- reading -------------------------------------------------------------------------------------


def load_episodes(conn: sqlite3.Connection, since: float, until: float) -> list[Episode]:
    """The episodes of every incident with an episode opened in [since, until)."""
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT incident_id FROM event WHERE kind IN ('opened', 'reopened')"
            " AND at >= ? AND at < ? AND incident_id IS NOT NULL",
            (since, until),
        )
    ]
    return [ep for incident_id in ids for ep in incident_episodes(conn, incident_id)]


def incident_episodes(conn: sqlite3.Connection, incident_id: int) -> list[Episode]:
    """The episodes of one incident, from its row and its events."""
    row = conn.execute(
        "SELECT id, rule, service, summary FROM incident WHERE id = ?", (incident_id,)
    ).fetchone()
    if row is None:
        return []
    facts = IncidentFacts(row[0], row[1], row[2] or "", row[3] or "")
    events = (
        Event(incident_id, at, kind, json.loads(detail))
        for at, kind, detail in conn.execute(
            "SELECT at, kind, detail FROM event WHERE incident_id = ? ORDER BY id",
            (incident_id,),
        )
    )
    return episodes(facts, events)


def tuning_of(rules: Iterable[Rule]) -> dict[str, RuleTuning]:
    return {rule.name: RuleTuning(rule.for_seconds, rule.keep_firing_for) for rule in rules}


def build_summary(
    conn: sqlite3.Connection,
    since: float,
    until: float,
    rules: Iterable[Rule] = (),
) -> Summary:
    return summarize(load_episodes(conn, since, until), since, until, tuning_of(rules))


def parse_since(text: str, now: float) -> float:
    """The start of a report window: `30d` (that long before `now`) or a time (`2026-11-01`,
    UTC unless it names its offset) → epoch seconds. ValueError says what is wrong (for the
    command line and the API alike): not a duration or time, before the calendar, or ahead."""
    try:
        since = now - parse_duration(text)
    except ValueError:
        try:
            since = parse_instant(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is not a duration back from now (30d, 12h) or a date "
                "(2026-11-01, 2026-11-01T08:00Z)"
            ) from None
    if not on_calendar(since):
        raise ValueError(f"{text!r} reaches back before the calendar")
    if since > now:
        raise ValueError(f"{text!r} is in the future")
    return since


# --- formatting, shared with the HTML report -----------------------------------------------------


def fmt_duration(seconds: float | None) -> str:
    """A duration as people read it: `0.84 s`, `41 s`, `3 min 10 s`, `2 h 5 min`, `3 d 4 h`;
    `–` when unknown. Negative durations keep their sign (the user was first)."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    # Rounded first, so that 59.6 s reads `1 min`, not `60 s`, and 9.996 s `10 s`.
    hundredths = round(abs(seconds), 2)
    if hundredths == 0:
        return "0 s"
    sign = "-" if seconds < 0 else ""
    if hundredths < 10:
        return f"{sign}{hundredths:.2f} s"
    return sign + _two_units(round(abs(seconds)))


_UNITS = (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1))


def _two_units(whole: int) -> str:
    """Whole seconds in the largest unit they reach and the next one, unless that is 0."""
    index = next(i for i, (_, size) in enumerate(_UNITS) if whole >= size)
    unit, size = _UNITS[index]
    count, rest = divmod(whole, size)
    shown = f"{count} {unit}"
    if index + 1 < len(_UNITS):
        next_unit, next_size = _UNITS[index + 1]
        if rest // next_size:
            shown += f" {rest // next_size} {next_unit}"
    return shown


def fmt_share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def fmt_part(part: int, whole: int) -> str:
    """`3 of 4 (75 %)`, or `0 of 0` when there is no whole."""
    if not whole:
        return f"{part} of {whole}"
    return f"{part} of {whole} ({fmt_share(part / whole)})"


def fmt_moment(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def window_text(summary: Summary) -> str:
    """`2026-11-01 00:00 UTC to 2026-11-22 10:00 UTC (21 d 10 h)`."""
    length = fmt_duration(summary.until - summary.since)
    return f"{fmt_moment(summary.since)} to {fmt_moment(summary.until)} ({length})"


def fmt_number(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def headline(summary: Summary) -> list[tuple[str, str]]:
    """The report's key figures as (label, value text): the terminal and the HTML report
    both show exactly these, so the same label reads the same value in both."""
    r, p = summary.rates, summary.proactive
    figures = [
        ("incidents", str(r.incidents)),
        ("new incidents", str(r.new)),
        ("recurrences", str(r.recurrences)),
        ("still open", str(r.open)),
        ("resolution rate", fmt_part(r.resolved, r.incidents)),
        ("auto-resolved", fmt_part(r.auto_resolved, r.resolved)),
        ("reopen rate", f"{fmt_share(r.reopen_rate)} ({r.recurrences} of {r.resolved} resolved)"),
        ("escalated", fmt_part(r.escalated, r.incidents)),
        ("reached step 2+", fmt_part(r.step2, r.incidents)),
        ("tier-1 resolution", fmt_part(r.tier1, r.resolved)),
        ("notices per incident", fmt_number(r.notices_per_incident)),
    ]
    for key, label in TIMES:
        stat: Stat = getattr(summary.times, key)
        figures.append((f"median {label}", fmt_duration(stat.median)))
        figures.append((f"mean {label}", fmt_duration(stat.mean)))
    figures += [
        ("predicted", str(p.predicted)),
        ("averted", str(p.averted)),
        # Out of those that reached the level: an open one that has not yet tells nothing.
        ("warned before impact", fmt_part(p.warned_before_impact, p.lead_time.count)),
        ("median lead time", fmt_duration(p.lead_time.median)),
        ("user-reported", str(p.user_reported)),
        ("detected before the user", fmt_part(p.detected_before_user, p.user_reported)),
        ("median lead on users", fmt_duration(p.user_lead.median)),
        ("caught before users", fmt_part(p.caught_first, p.judged)),
    ]
    return figures


def suggestion_text(rule: str, s: Suggestion) -> str:
    """A suggestion in plain words, naming the setting to change."""
    if s.setting == "for" and s.value is not None:
        return (
            f"{rule}: raise `for` from {format_duration(s.current)} to "
            f"{format_duration(s.value)}: {s.spared} of {s.out_of} tickets were blips that "
            f"ended sooner; real problems would be reported "
            f"{format_duration(s.value - s.current)} later"
        )
    if s.setting == "keep_firing_for" and s.value is not None:
        return (
            f'{rule}: widen the hysteresis, keep_firing_for = "{format_duration(s.value)}" '
            f"(or a `clear` condition a step past the threshold): {s.spared} of {s.out_of} "
            "recurrences came back within it and would have stayed one incident"
        )
    return (
        f"{rule}: {s.spared} of {s.out_of} tickets were closed as needing no action: raise "
        "the threshold, or drop the rule"
    )


# --- the terminal summary ------------------------------------------------------------------------


def text_report(summary: Summary) -> str:
    lines = [f"forewarn report: {window_text(summary)}"]
    if summary.symptoms:
        lines.append(f"({summary.symptoms} symptom(s) of other incidents left out)")
    if not summary.rates.incidents:
        lines.append("\nNo incidents in this window.")
        return "\n".join(lines) + "\n"
    figures = dict(headline(summary))
    lines += _section("Incidents", figures, _OUTCOMES)
    lines += ["", "Response times", *_times_table(summary)]
    lines += _section("Ahead of users", figures, _PROACTIVE)
    lines += ["", "Weekly trend (weeks from Monday, UTC)", *_breakdown_table(summary.weeks)]
    lines += ["", "Top rules", *_breakdown_table(summary.by_rule[:10])]
    if summary.by_service:
        lines += ["", "By service", *_breakdown_table(summary.by_service[:10])]
    lines += ["", "Noise budget (noisiest first)", *_noise_table(summary.noise)]
    return "\n".join(lines) + "\n"


_OUTCOMES = (
    "incidents",
    "new incidents",
    "recurrences",
    "still open",
    "resolution rate",
    "auto-resolved",
    "reopen rate",
    "escalated",
    "reached step 2+",
    "tier-1 resolution",
    "notices per incident",
)
_PROACTIVE = (
    "predicted",
    "averted",
    "warned before impact",
    "median lead time",
    "user-reported",
    "detected before the user",
    "median lead on users",
    "caught before users",
)


def _section(title: str, figures: dict[str, str], labels: Sequence[str]) -> list[str]:
    width = max(len(label) for label in labels)
    return ["", title] + [f"  {label:<{width}}  {figures[label]}" for label in labels]


TIMES_HEADERS = ("", "COUNT", "MEDIAN", "MEAN", "P90", "MAX")
BREAKDOWN_HEADERS = ("", "INCIDENTS", "MTTA", "MTTR", "ESCALATED", "TIER-1", "LEAD")
NOISE_HEADERS = (
    *("", "INCIDENTS", "ALERTS", "TICKETS", "BLIPS", "FLAPPING", "REOPENS"),
    *("NO-ACTION", "NOISE"),
)


def times_rows(summary: Summary) -> list[list[str]]:
    """The response-time table's cells (the HTML report shows the same)."""
    rows = []
    for key, label in TIMES:
        stat: Stat = getattr(summary.times, key)
        durations = (stat.median, stat.mean, stat.p90, stat.max)
        rows.append([label, str(stat.count), *map(fmt_duration, durations)])
    return rows


def breakdown_rows(parts: Sequence[Breakdown]) -> list[list[str]]:
    """A per-week, per-rule or per-service table's cells."""
    return [
        [
            b.key,
            str(b.rates.incidents),
            fmt_duration(b.times.acknowledge.mean),
            fmt_duration(b.times.resolve.mean),
            fmt_share(b.rates.escalated_share),
            fmt_share(b.rates.tier1_share),
            fmt_duration(b.proactive.lead_time.median),
        ]
        for b in parts
    ]


def noise_rows(budgets: Sequence[RuleNoise]) -> list[list[str]]:
    """The noise budget table's cells."""
    rows = []
    for n in budgets:
        counts = (n.episodes, n.alerts, n.tickets, n.blips, n.flapping, n.recurrences, n.no_action)
        rows.append([n.rule, *map(str, counts), fmt_share(n.noise_share)])
    return rows


def _times_table(summary: Summary) -> list[str]:
    return _table(TIMES_HEADERS, times_rows(summary))


def _breakdown_table(parts: Sequence[Breakdown]) -> list[str]:
    return _table(BREAKDOWN_HEADERS, breakdown_rows(parts))


def _noise_table(budgets: Sequence[RuleNoise]) -> list[str]:
    lines = _table(NOISE_HEADERS, noise_rows(budgets))
    advice = [suggestion_text(n.rule, s) for n in budgets for s in n.suggestions]
    if advice:
        lines += ["", "  Suggested changes:"] + [f"  - {text}" for text in advice]
    return lines


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = []
    for cells in (headers, *rows):
        first = f"{cells[0]:<{widths[0]}}"
        rest = (f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True))
        lines.append("  " + "  ".join([first, *rest]).rstrip())
    return lines


# --- JSON ----------------------------------------------------------------------------------------


def summary_json(summary: Summary, with_episodes: bool = False) -> dict[str, Any]:
    """The summary as JSON-ready data: every figure, the headline texts and the suggestions."""
    data = dataclasses.asdict(summary)
    if not with_episodes:
        data.pop("episodes")
    data["headline"] = dict(headline(summary))
    data["suggestions"] = [suggestion_text(n.rule, s) for n in summary.noise for s in n.suggestions]
    return data


# --- the command ---------------------------------------------------------------------------------


def add_command(sub: Any, parents: list[argparse.ArgumentParser], handler: Any) -> None:
    report = sub.add_parser(
        "report",
        parents=parents,
        help="help-desk figures: response times, escalations, lead time, noise",
        description="Summarise the incidents opened in a window from the event log: time to "
        "detect, ticket, notify, acknowledge and resolve; resolution, reopen and escalation "
        "rates; tier-1 resolution; how far ahead of users forewarn warned; and each rule's "
        "noise with a suggested change. Works while the daemon runs.",
    )
    report.add_argument(
        "--since",
        default="30d",
        help="window start: a duration back from now (30d, 12h) or a date (default 30d)",
    )
    report.add_argument(
        "--html", metavar="FILE", help="also write a self-contained HTML report with charts"
    )
    report.set_defaults(func=handler)


def run(config_rules: Iterable[Rule], path: Any, args: argparse.Namespace) -> int:
    """The `report` command on the state file at `path`: 0, or raise ValueError to print."""
    until = time.time()
    try:
        since = parse_since(args.since, until)
    except ValueError as exc:
        raise ValueError(f"--since {exc}") from None
    conn = st.connect(path, readonly=True)
    try:
        summary = build_summary(conn, since, until, config_rules)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(summary_json(summary), indent=2, sort_keys=True))
    else:
        print(text_report(summary), end="")
    if args.html:
        from monitor.report_html import write_html

        write_html(summary, args.html)
        if not args.json:
            print(f"\nHTML report written to {args.html}")
    return 0
