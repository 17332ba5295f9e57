"""The HTML help-desk report: summaries made by `rules.figures.summarize` from synthetic
episodes, rendered by `monitor.report_html`, read back from the page in a real headless
Chromium and compared with the terminal report to the character.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from chromium import launched, watch_problems
from markupsafe import escape

from monitor.report import headline, suggestion_text, text_report
from monitor.report_html import lead_chart, render_html, rules_chart, trend_chart, write_html
from rules.figures import Episode, RuleTuning, Summary, summarize

MONDAY = 1_799_020_800.0  # 2027-01-04 00:00 UTC, a Monday
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
SINCE = MONDAY + 2 * DAY  # a Wednesday: the first and last weeks are partial
UNTIL = SINCE + 30 * DAY
GENERATED = UNTIL + 5.0
PROBE_OUTPUT = "<script>window.__pwned=1</script>"

WINDOW = "2027-01-06 00:00 UTC to 2027-02-05 00:00 UTC (30 d)"  # of the summaries below


def episode(incident_id: int, rule: str, opened: float, **changes: Any) -> Episode:
    base = Episode(
        incident_id=incident_id,
        episode=1,
        rule=rule,
        service="",
        summary=f"{rule} on web01",
        opened_at=opened,
        failing_since=opened - 45.0,
        ticket_at=opened + 4.0,
    )
    return replace(base, **changes)


def handled(incident_id: int, rule: str, opened: float, **changes: Any) -> Episode:
    """A ticket a person took and closed."""
    fields: dict[str, Any] = {
        "first_notice_at": opened + 90.0,
        "notices": 2,
        "acknowledged_at": opened + 6 * MINUTE,
        "acknowledged_by": "anna",
        "resolved_at": opened + 2 * HOUR,
        "resolved_by": "anna",
    }
    return episode(incident_id, rule, opened, **{**fields, **changes})


def blip(incident_id: int, opened: float, lasted: float) -> Episode:
    return episode(
        incident_id, "http_down", opened, service="intranet", resolved_at=opened + lasted
    )


def sample_episodes() -> list[Episode]:
    day = [SINCE + (n + 0.3) * DAY for n in range(30)]
    vpn = {"service": "vpn"}
    return [
        # Blips of one rule: enough for a longer `for`.
        blip(1, day[0], 40.0),
        blip(2, day[3], 70.0),
        blip(3, day[9], 100.0),
        blip(4, day[16], 130.0),
        handled(5, "http_down", day[17], service="intranet", escalation_step=1),
        # Predictions: warned ahead twice, the impact first once, one averted, one still open.
        handled(6, "disk_full", day[2], service="files", predicted_at=day[2] + 6 * HOUR,
                impact_at=day[2] + 5 * HOUR),
        handled(7, "disk_full", day[11], service="files", predicted_at=day[11] + 3 * HOUR,
                impact_at=day[11] + 40 * MINUTE),
        handled(8, "disk_full", day[20], service="files", predicted_at=day[20] + HOUR,
                impact_at=day[20] - 10 * MINUTE, user_reports=(day[20] - 20 * MINUTE,)),
        episode(9, "disk_full", day[22], service="files", predicted_at=day[22] + 4 * HOUR,
                resolved_at=day[22] + HOUR),
        episode(10, "disk_full", day[29], service="files", predicted_at=day[29] + 4 * HOUR),
        # One incident back twice soon after recovering: a wider hysteresis.
        handled(11, "vpn_down", day[5], **vpn, recurred=True),
        handled(11, "vpn_down", day[5] + 3 * HOUR, **vpn, episode=2, recurrence=True,
                resolved_for=HOUR, recurred=True),
        handled(11, "vpn_down", day[5] + 6 * HOUR, **vpn, episode=3, recurrence=True,
                resolved_for=HOUR + 10 * MINUTE, escalation_step=2),
        # Tickets closed as needing no action, one reported by a user first, one hostile.
        handled(12, "mail_slow", day[6], rejected=True, user_reports=(day[6] - 5 * MINUTE,)),
        handled(13, "mail_slow", day[13], rejected=True, summary=f"body: {PROBE_OUTPUT}"),
        handled(14, "mail_slow", day[24], escalation_step=3, user_reports=(day[24] + HOUR,)),
        episode(15, "mail_slow", day[27], flapping=True),
        # A symptom of another incident: left out of the figures.
        episode(16, "wiki_down", day[17] + MINUTE, symptom=True),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def summary() -> Summary:
    tuning = {"http_down": RuleTuning(for_seconds=60.0)}
    return summarize(sample_episodes(), SINCE, UNTIL, tuning)


@pytest.fixture(scope="module")
def report_file(summary: Summary, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    write_html(summary, path, generated_at=GENERATED)
    return path


def one_week_summary() -> Summary:
    since = MONDAY + DAY
    return summarize([handled(1, "http_down", since + HOUR)], since, since + 3 * DAY)


def empty_summary() -> Summary:
    return summarize([], SINCE, UNTIL)


# --- reading the terminal report -----------------------------------------------------------------


def terminal_table(report: str, title: str) -> list[list[str]]:
    """A table of the terminal report, header included, as cells (columns are two spaces or
    more apart; the header's first, empty cell is dropped)."""
    lines = report.splitlines()
    rows = []
    for line in lines[lines.index(title) + 1 :]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def terminal_figure(report: str, label: str) -> str:
    """A headline figure as the terminal shows it: on its own line in a section, or for the
    median and mean of a time, in the response-times table."""
    line = re.search(rf"^  {re.escape(label)}  +(.+)$", report, re.MULTILINE)
    if line:
        return line.group(1)
    which, _, time = label.partition(" ")
    rows = {row[0]: row for row in terminal_table(report, "Response times")[1:]}
    return rows[time][{"median": 2, "mean": 3}[which]]


# --- without a browser ---------------------------------------------------------------------------


def test_the_sample_has_what_the_page_shows(summary: Summary) -> None:
    """Guards the other tests: every part of the page has something to show."""
    assert len(summary.weeks) == 5
    assert summary.symptoms == 1
    assert summary.proactive.averted == 1
    assert summary.proactive.impact_first == 1
    assert summary.rates.recurrences == 2
    assert summary.rates.step2 == 2
    assert {s.setting for n in summary.noise for s in n.suggestions} == {
        "for", "keep_firing_for", "condition",
    }  # fmt: skip


def test_the_page_refers_to_nothing_outside_itself(summary: Summary) -> None:
    page = render_html(summary, GENERATED)

    assert not re.search(r"https?:|//[a-z]", page, re.IGNORECASE)
    assert not re.search(r"<script|\bsrc=|url\(|@import|<iframe|<object|<embed", page, re.I)
    assert "default-src 'none'; style-src 'unsafe-inline'; img-src data:" in page
    assert re.findall(r'href="([^"]*)"', page) == ["data:,"]


def test_probe_output_in_a_summary_is_escaped(summary: Summary) -> None:
    page = render_html(summary, GENERATED)

    assert PROBE_OUTPUT not in page
    assert "body: &lt;script&gt;window.__pwned=1&lt;/script&gt;" in page


def test_the_page_shows_the_window_and_when_it_was_made(summary: Summary) -> None:
    page = render_html(summary, GENERATED)
    first_line = text_report(summary).splitlines()[0]

    assert WINDOW in first_line
    assert WINDOW in page
    assert "Generated 2027-02-05 00:00 UTC" in page
    assert "(1 symptom(s) of other incidents left out)" in page


def test_every_suggestion_is_worded_as_in_the_terminal(summary: Summary) -> None:
    page = render_html(summary, GENERATED)
    texts = [suggestion_text(n.rule, s) for n in summary.noise for s in n.suggestions]

    assert len(texts) == 3
    for text in texts:
        assert f"  - {text}" in text_report(summary)
        assert f"<li>{escape(text)}</li>" in page


def test_an_empty_window_says_so_and_draws_no_chart() -> None:
    page = render_html(empty_summary(), GENERATED)

    assert "No incidents in this window." in page
    assert "No incidents in this window." in text_report(empty_summary())
    assert "<svg" not in page and 'class="figure"' not in page


def test_one_week_draws_one_bar_and_a_dot_per_line_but_no_line() -> None:
    chart = trend_chart(one_week_summary().weeks)

    assert [s.kind for s in chart.shapes if s.css == "c-incidents"] == ["rect"]
    assert sorted(s.css for s in chart.shapes if s.kind == "dot") == ["c-mtta", "c-mttr"]
    assert {s.css for s in chart.shapes if s.kind == "line"} == {"axis"}
    assert "<svg" in render_html(one_week_summary(), GENERATED)


def test_weekly_lines_break_where_a_week_has_no_value(summary: Summary) -> None:
    chart = trend_chart(summary.weeks)
    acknowledged = [w.times.acknowledge.mean is not None for w in summary.weeks]
    lines = [s.points for s in chart.shapes if s.kind == "line" and s.css == "c-mtta"]

    assert acknowledged == [True, True, True, True, False]  # the last week: none acknowledged
    assert len(lines) == 1 and len(lines[0].split()) == 4
    bars = [s for s in chart.shapes if s.css == "c-incidents"]
    assert bars[0].tip == "week of 2027-01-04: 3 incidents"
    tallest = max(bars, key=lambda b: b.height)
    assert tallest.tip.endswith(f"{max(w.rates.incidents for w in summary.weeks)} incidents")


def test_the_noisy_part_of_a_rule_is_within_its_bar(summary: Summary) -> None:
    chart = rules_chart(summary.by_rule, summary.noise)
    rects = {s.tip: s for s in chart.shapes if s.kind == "rect"}

    assert rects["http_down: 5 incidents"].width == 420.0  # the busiest rule: the whole width
    assert rects["http_down: 4 noisy (80 %)"].width == 336.0
    assert "mail_slow: 4 incidents, 3 noisy (75 %)" in [w.text for w in chart.words]


def test_lead_time_bars_lie_either_side_of_the_warning(summary: Summary) -> None:
    predicted = [e for e in summary.episodes if e.predicted]
    chart = lead_chart(predicted)
    zero = float(chart.shapes[0].points.split(",")[0])  # the line at "warned at the impact"
    bars = {s.tip.split(":")[0]: s for s in chart.shapes[1:]}

    assert bars["#6 disk_full"].x == zero and bars["#6 disk_full"].css == "c-lead"
    assert bars["#8 disk_full"].x + bars["#8 disk_full"].width == zero
    assert bars["#8 disk_full"].css == "c-late"
    assert (bars["#9 disk_full"].kind, bars["#9 disk_full"].x) == ("dot", zero)
    assert bars["#9 disk_full"].tip == "#9 disk_full: averted"
    assert bars["#10 disk_full"].tip == "#10 disk_full: no impact yet"


def test_write_html_replaces_the_file_whole_and_leaves_no_temporary_file(
    summary: Summary, tmp_path: Path
) -> None:
    target = tmp_path / "report.html"
    target.write_text("the report of last month")

    write_html(summary, target, generated_at=GENERATED)

    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert target.read_text(encoding="utf-8") == render_html(summary, GENERATED)


def test_write_html_into_a_missing_directory_says_why(summary: Summary, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot write the HTML report to .*: No such file"):
        write_html(summary, tmp_path / "missing" / "report.html")
    assert list(tmp_path.iterdir()) == []


def test_write_html_over_a_directory_removes_its_temporary_file(
    summary: Summary, tmp_path: Path
) -> None:
    (tmp_path / "report.html").mkdir()

    with pytest.raises(ValueError, match="cannot write the HTML report"):
        write_html(summary, tmp_path / "report.html")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


# --- in a real browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched() as chromium:
        yield chromium


class Visit:
    """A page opened on a file, with what the browser complained about and fetched."""

    def __init__(self, browser: Any, path: Path, width: int, dark: bool = False) -> None:
        self.url = path.as_uri()
        scheme = "dark" if dark else "light"
        self.page = browser.new_page(viewport={"width": width, "height": 800}, color_scheme=scheme)
        self.problems = watch_problems(self.page)
        self.fetched: list[str] = []
        self.page.on("request", lambda request: self.fetched.append(request.url))
        self.page.goto(self.url)
        self.page.wait_for_load_state("load")

    def cells(self, selector: str) -> list[list[str]]:
        script = "rows => rows.map(r => [...r.children].map(c => c.textContent))"
        return self.page.eval_on_selector_all(selector, script)  # type: ignore[no-any-return]


@pytest.fixture
def visit(browser: Any) -> Iterator[Callable[..., Visit]]:
    opened: list[Visit] = []

    def open_page(path: Path, width: int = 1280, dark: bool = False) -> Visit:
        opened.append(Visit(browser, path, width, dark))
        return opened[-1]

    yield open_page
    for each in opened:
        each.page.close()


@pytest.mark.timeout(60)
def test_the_page_loads_without_an_error_and_fetches_only_itself(
    report_file: Path, visit: Callable[..., Visit]
) -> None:
    seen = visit(report_file)

    assert seen.problems == []
    assert seen.fetched == [seen.url]
    assert seen.page.title() == f"forewarn report: {WINDOW}"
    assert seen.page.locator("script").count() == 0


@pytest.mark.timeout(60)
def test_every_headline_figure_reads_as_in_the_terminal(
    summary: Summary, report_file: Path, visit: Callable[..., Visit]
) -> None:
    seen = visit(report_file)
    script = """els => els.map(e => [e.dataset.label,
        e.querySelector('.label').textContent, e.querySelector('.value').textContent])"""
    shown = seen.page.eval_on_selector_all(".figure", script)
    terminal = text_report(summary)

    assert len(shown) == len(headline(summary))
    assert {label: value for label, _, value in shown} == dict(headline(summary))
    for label, label_text, value in shown:
        assert label_text == label
        assert terminal_figure(terminal, label) == value, label


@pytest.mark.timeout(60)
def test_the_tables_read_as_in_the_terminal(
    summary: Summary, report_file: Path, visit: Callable[..., Visit]
) -> None:
    seen = visit(report_file)
    terminal = text_report(summary)
    sections = {
        "times": "Response times",
        "weeks": "Weekly trend (weeks from Monday, UTC)",
        "rules": "Top rules",
        "services": "By service",
        "noise": "Noise budget (noisiest first)",
    }
    for name, title in sections.items():
        header, *rows = seen.cells(f'table[data-table="{name}"] tr')
        assert [header[1:], *rows] == terminal_table(terminal, title), name
    assert len(seen.cells('table[data-table="times"] tbody tr')) == 5


@pytest.mark.timeout(60)
def test_the_charts_are_drawn_and_labelled(report_file: Path, visit: Callable[..., Visit]) -> None:
    seen = visit(report_file)
    script = """svgs => svgs.map(svg => ({
        role: svg.getAttribute('role'), label: svg.getAttribute('aria-label'),
        width: svg.getBoundingClientRect().width,
        drawn: [...svg.querySelectorAll('rect, circle, polyline')].filter(shape => {
            const box = shape.getBBox(); return box.width > 0 || box.height > 0 }).length,
        tips: svg.querySelectorAll('rect > title, circle > title').length }))"""
    svgs = seen.page.eval_on_selector_all("svg", script)

    assert len(svgs) == 4
    for svg in svgs:
        assert svg["role"] == "img" and svg["label"], svg
        assert svg["width"] > 200 and svg["drawn"] > 0 and svg["tips"] > 0, svg
    trend = seen.page.locator("#chart-trend svg")
    assert trend.locator("text", has_text="week starting (UTC)").count() == 1
    assert trend.locator("title", has_text="week of 2027-01-04: 3 incidents").count() == 1


@pytest.mark.timeout(60)
def test_probe_output_shows_as_text_and_does_not_run(
    report_file: Path, visit: Callable[..., Visit]
) -> None:
    seen = visit(report_file)

    assert seen.page.get_by_text(f"body: {PROBE_OUTPUT}").is_visible()
    assert seen.page.evaluate("typeof window.__pwned") == "undefined"
    assert seen.problems == []


@pytest.mark.timeout(60)
def test_on_a_phone_nothing_scrolls_sideways_but_the_wide_tables(
    report_file: Path, visit: Callable[..., Visit], tmp_path: Path
) -> None:
    seen = visit(report_file, width=375)

    width = seen.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"horizontal scroll on a phone: {width}"
    episodes = seen.page.locator('table[data-table="episodes"]')
    assert episodes.evaluate("t => t.parentElement.scrollWidth > t.parentElement.clientWidth")
    for svg in seen.page.locator("svg").all():
        box = svg.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
    seen.page.screenshot(path=str(tmp_path / "report-375.png"), full_page=True)


@pytest.mark.timeout(60)
def test_dark_mode_follows_the_system(report_file: Path, visit: Callable[..., Visit]) -> None:
    background = "getComputedStyle(document.body).backgroundColor"

    light = visit(report_file).page.evaluate(background)
    dark = visit(report_file, dark=True).page.evaluate(background)

    assert (light, dark) == ("rgb(246, 247, 249)", "rgb(13, 17, 23)")


@pytest.mark.timeout(60)
def test_an_empty_or_one_week_window_renders_cleanly(
    tmp_path: Path, visit: Callable[..., Visit]
) -> None:
    write_html(empty_summary(), tmp_path / "empty.html", generated_at=GENERATED)
    write_html(one_week_summary(), tmp_path / "week.html", generated_at=GENERATED)

    empty = visit(tmp_path / "empty.html", width=375)
    assert empty.page.get_by_text("No incidents in this window.").is_visible()
    assert empty.page.locator("svg").count() == 0
    week = visit(tmp_path / "week.html", width=375)
    assert week.page.locator("svg").count() == 3  # nothing predicted: no lead-time chart
    assert week.page.get_by_text("no lead time to show").is_visible()
    for seen in (empty, week):
        assert seen.problems == [] and seen.fetched == [seen.url]
        assert seen.page.evaluate("document.documentElement.scrollWidth") <= 375
