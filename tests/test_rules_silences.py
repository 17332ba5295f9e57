"""Matchers, silences and recurring maintenance windows, to the second and across DST."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from rules.silences import (
    MaintenanceWindow,
    Matcher,
    MatchOp,
    Silence,
    active,
    covering,
    matches,
    muted,
    next_start,
    opened_and_closed_inside,
    parse_matcher,
)

ROME = ZoneInfo("Europe/Rome")
DISK = {"rule": "disk_full", "probe": "disk", "mountpoint": "/srv/data"}


def rome(*fields: int, fold: int = 0) -> float:
    return datetime(*fields, tzinfo=ROME, fold=fold).timestamp()  # type: ignore[misc]


def utc(*fields: int) -> float:
    return datetime(*fields, tzinfo=UTC).timestamp()  # type: ignore[misc]


def selects(*texts: str) -> tuple[Matcher, ...]:
    return tuple(parse_matcher(text) for text in texts)


# --- matchers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('rule="disk_full"', True),
        ('rule="disk"', False),
        ('rule!="disk_full"', False),
        ('rule!="cpu"', True),
        ('mountpoint=~"/srv/.*"', True),
        ('mountpoint=~"/srv"', False),  # anchored at the end
        ('mountpoint=~"srv/.*"', False),  # anchored at the start
        ('mountpoint!~"/srv/.*"', False),
        ('mountpoint!~"/home/.*"', True),
        ('rule=~"cpu|disk_full"', True),
        ('rule=~"disk|cpu"', False),  # alternation is grouped before anchoring
        ('host=""', True),  # a missing label is the empty string
        ('host!=""', False),
        ('host=~".*"', True),
        ('host=~".+"', False),
        ('host!~"web.*"', True),
    ],
)
def test_operators_anchoring_and_missing_labels(text: str, expected: bool) -> None:
    assert parse_matcher(text).matches(DISK) is expected


def test_regex_does_not_accept_a_trailing_newline() -> None:
    # With `^...$` Python's `$` would match before a final newline; fullmatch does not.
    assert not parse_matcher('name=~"web"').matches({"name": "web\n"})


def test_matches_needs_all_matchers() -> None:
    assert matches(selects('rule="disk_full"', 'probe="disk"'), DISK)
    assert not matches(selects('rule="disk_full"', 'probe="smart"'), DISK)
    assert matches((), DISK)


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        ('rule="disk_full"', "rule", MatchOp.EQUAL, "disk_full"),
        ("  rule  !=  disk_full  ", "rule", MatchOp.NOT_EQUAL, "disk_full"),
        ("severity!~info|debug", "severity", MatchOp.NOT_REGEX, "info|debug"),
        ('path=~"C:\\\\temp"', "path", MatchOp.REGEX, "C:\\temp"),
        ('msg="say \\"hi\\""', "msg", MatchOp.EQUAL, 'say "hi"'),
        ('msg="two\\nlines"', "msg", MatchOp.EQUAL, "two\nlines"),
        ('code=~"5\\d\\d"', "code", MatchOp.REGEX, "5\\d\\d"),  # a lone backslash is kept
        ('host=""', "host", MatchOp.EQUAL, ""),
        ("host=", "host", MatchOp.EQUAL, ""),
        ('job:x="a = b"', "job:x", MatchOp.EQUAL, "a = b"),
    ],
)
def test_parse_matcher(text: str, name: str, op: MatchOp, value: str) -> None:
    assert parse_matcher(text) == Matcher(name, op, value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("rule", "expected name, operator"),
        ('="disk"', "expected name, operator"),
        ('1rule="disk"', "expected name, operator"),
        ('ru-le="disk"', "expected name, operator"),
        ('rule=="disk"', "unescaped double quote"),
        ('rule="disk', "no closing"),
        ('rule="disk\\"', "no closing"),
        ('rule="di"sk"', "unescaped double quote"),
        ('rule=di"sk', "unescaped double quote"),
        ('rule=~"(disk"', "not a valid regular expression"),
    ],
)
def test_parse_matcher_errors_name_the_text_and_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as raised:
        parse_matcher(text)
    assert repr(text) in str(raised.value)


def test_matcher_built_directly_is_checked_too() -> None:
    with pytest.raises(ValueError, match="not a valid label name"):
        Matcher("bad name", MatchOp.EQUAL, "x")
    with pytest.raises(ValueError, match="regular expression"):
        Matcher("rule", MatchOp.REGEX, "[")


label_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@given(st.sampled_from(list(MatchOp)), label_values)
def test_a_matcher_written_out_parses_back_to_itself(op: MatchOp, value: str) -> None:
    if op in (MatchOp.REGEX, MatchOp.NOT_REGEX):
        value = "".join(ch for ch in value if ch.isalnum())  # keep it a valid regex
    matcher = Matcher("name", op, value)
    assert parse_matcher(str(matcher)) == matcher


# --- silences -----------------------------------------------------------------------------


def silence(start: float = 1000.0, end: float = 2000.0, *texts: str) -> Silence:
    return Silence("s1", selects(*(texts or ('rule="disk_full"',))), start, end, "ana", "disk swap")


def test_silence_is_active_from_its_start_until_just_before_its_end() -> None:
    one = silence(1000.0, 2000.0)
    assert [active(one, now) for now in (999.999, 1000.0, 1999.999, 2000.0)] == [
        False,
        True,
        True,
        False,
    ]


def test_silence_must_end_after_it_starts() -> None:
    with pytest.raises(ValueError, match="ends_at must be after starts_at"):
        silence(2000.0, 2000.0)


@pytest.mark.parametrize("texts", [(), ('host=""',), ('rule=~".*"', 'host!="x"')])
def test_silence_that_would_mute_everything_is_refused(texts: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="must not match an empty value"):
        Silence("s1", selects(*texts), 0.0, 1.0, "ana", "")


# --- maintenance windows ------------------------------------------------------------------


def nightly(timezone: str = "Europe/Rome") -> MaintenanceWindow:
    return MaintenanceWindow(
        "backup", "0 2 * * *", 2 * 3600.0, selects('rule="disk_full"'), "nightly backup", timezone
    )


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        (rome(2025, 6, 1, 1, 59, 59), False),
        (rome(2025, 6, 1, 2, 0, 0), True),
        (rome(2025, 6, 1, 3, 59, 59), True),
        (rome(2025, 6, 1, 4, 0, 0), False),
        # Spring forward, 30 March 2025: 02:00 does not exist, the window opens at 03:00
        # summer time, the first instant after the jump, and lasts two real hours.
        (utc(2025, 3, 30, 0, 59, 59), False),  # 01:59:59 winter time
        (utc(2025, 3, 30, 1, 0, 0), True),  # 03:00:00 summer time
        (rome(2025, 3, 30, 4, 59, 59), True),
        (rome(2025, 3, 30, 5, 0, 0), False),
        # Fall back, 26 October 2025: 02:00 happens twice and opens the window once, at the
        # first 02:00 (summer time); it closes two real hours later, at 03:00 winter time.
        (rome(2025, 10, 26, 1, 59, 59), False),
        (rome(2025, 10, 26, 2, 0, 0, fold=0), True),
        (rome(2025, 10, 26, 2, 59, 59, fold=1), True),
        (rome(2025, 10, 26, 3, 0, 0), False),
    ],
)
def test_nightly_window_in_rome_to_the_second_across_dst(now: float, inside: bool) -> None:
    assert active(nightly(), now) is inside
    assert (covering(nightly(), now) is not None) is inside


def test_fall_back_night_has_one_occurrence() -> None:
    window = nightly()
    occurrence = (utc(2025, 10, 26, 0, 0), utc(2025, 10, 26, 2, 0))
    assert covering(window, rome(2025, 10, 26, 2, 30, fold=0)) == occurrence
    assert covering(window, rome(2025, 10, 26, 2, 30, fold=1)) == occurrence


@pytest.mark.parametrize("minute", [0, 30])
def test_start_in_the_skipped_hour_opens_right_after_the_jump(minute: int) -> None:
    window = MaintenanceWindow(
        "w", f"{minute} 2 * * *", 3600.0, selects('rule="x"'), "", "Europe/Rome"
    )
    jump = utc(2025, 3, 30, 1, 0)  # 02:00 winter time becomes 03:00 summer time
    assert next_start(window, jump - 3600) == jump
    # Asked from inside the occurrence, whatever the instant: the answer does not move.
    for now in (jump, jump + 1, jump + 1800, jump + 3599):
        assert covering(window, now) == (jump, jump + 3600)
    assert not active(window, jump + 3600)


def test_next_start_across_dst() -> None:
    window = nightly()
    assert next_start(window, rome(2025, 3, 29, 12, 0)) == utc(2025, 3, 30, 1, 0)
    assert next_start(window, rome(2025, 3, 30, 12, 0)) == rome(2025, 3, 31, 2, 0)
    assert next_start(window, rome(2025, 10, 26, 2, 0, fold=0)) == rome(2025, 10, 27, 2, 0)
    assert next_start(window, rome(2025, 6, 1, 2, 0)) == rome(2025, 6, 2, 2, 0)  # strictly after


def test_same_cron_in_utc_is_another_instant() -> None:
    assert active(nightly("UTC"), utc(2025, 6, 1, 2, 0))
    assert not active(nightly(), utc(2025, 6, 1, 2, 0))  # 04:00 in Rome


@pytest.mark.parametrize("weekday", ["0", "7", "sun", "6-7", "0,3"])
def test_weekly_window_on_sunday_uses_crontab_weekday_numbers(weekday: str) -> None:
    # APScheduler 3 alone would read 0 as Monday; crontab (and sysadmins) read it as Sunday.
    window = MaintenanceWindow("patch", f"0 3 * * {weekday}", 3600.0, selects('rule="x"'))
    sunday, monday = utc(2025, 6, 1, 3, 30), utc(2025, 6, 2, 3, 30)
    assert active(window, sunday)
    assert not active(window, monday)
    assert next_start(window, utc(2025, 6, 1, 4, 0)) != utc(2025, 6, 2, 3, 0)


@pytest.mark.parametrize(
    ("weekday", "days"),
    [
        ("1-5", [False, True, True, True, True, True, False]),
        ("mon-fri", [False, True, True, True, True, True, False]),
        ("*/2", [True, False, True, False, True, False, True]),  # Sun, Tue, Thu, Sat
        ("*", [True] * 7),
    ],
)
def test_weekday_sets(weekday: str, days: list[bool]) -> None:
    window = MaintenanceWindow("w", f"0 12 * * {weekday}", 60.0, selects('rule="x"'))
    week = [utc(2025, 6, 1 + offset, 12, 0, 30) for offset in range(7)]  # Sunday first
    assert [active(window, now) for now in week] == days


@pytest.mark.parametrize(
    ("cron", "timezone", "duration", "reason"),
    [
        ("0 2 * *", "UTC", 60.0, "5 fields"),
        ("0 25 * * *", "UTC", 60.0, "not valid"),
        ("0 2 1 * 1", "UTC", 60.0, "both day of month and weekday"),
        ("0 2 * * 8", "UTC", 60.0, "within 0-7"),
        ("0 2 * * 1-x", "UTC", 60.0, "numbers 0-7 or names"),
        ("0 2 * * */0", "UTC", 60.0, "positive whole number"),
        ("0 2 * * *", "Mars/Olympus", 60.0, "not an IANA time zone"),
        ("0 2 * * *", "UTC", 0.0, "duration must be positive"),
    ],
)
def test_window_errors(cron: str, timezone: str, duration: float, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        MaintenanceWindow("w", cron, duration, selects('rule="x"'), "", timezone)


def test_window_that_would_mute_everything_is_refused() -> None:
    with pytest.raises(ValueError, match="must not match an empty value"):
        MaintenanceWindow("w", "0 2 * * *", 60.0, ())


def test_overlapping_occurrences_report_the_one_that_ends_last() -> None:
    hourly = MaintenanceWindow("w", "0 * * * *", 5400.0, selects('rule="x"'))
    assert covering(hourly, utc(2025, 6, 1, 1, 10)) == (
        utc(2025, 6, 1, 1, 0),
        utc(2025, 6, 1, 2, 30),
    )


def _all_fires(window: MaintenanceWindow, start: float, end: float) -> list[float]:
    fires, fire = [], next_start(window, start)
    while fire is not None and fire < end:
        fires.append(fire)
        fire = next_start(window, fire)
    return fires


DST_NIGHTS = [
    (rome(2025, 3, 29, 22, 0), rome(2025, 3, 30, 8, 0)),
    (rome(2025, 10, 25, 22, 0), rome(2025, 10, 26, 8, 0)),
]


@pytest.mark.parametrize("cron", ["0 2 * * *", "30 2 * * *", "*/20 * * * *", "59 1 * * *"])
@pytest.mark.parametrize(("night_start", "night_end"), DST_NIGHTS)
def test_answers_do_not_depend_on_where_the_question_starts(
    cron: str, night_start: float, night_end: float
) -> None:
    # The occurrences enumerated once from the evening must agree with `active` asked at
    # every minute of the night (and one second either side of each minute).
    window = MaintenanceWindow("w", cron, 1800.0, selects('rule="x"'), "", "Europe/Rome")
    fires = _all_fires(window, night_start - 7200, night_end)
    assert fires == sorted(fires)
    for minute in range(int(night_start), int(night_end), 60):
        for now in (minute - 1, minute, minute + 1):
            expected = any(fire <= now < fire + 1800.0 for fire in fires)
            assert active(window, now) is expected, datetime.fromtimestamp(now, ROME)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=int(utc(2025, 1, 1)), max_value=int(utc(2026, 1, 1))))
def test_nightly_window_matches_the_local_clock_on_ordinary_days(now: int) -> None:
    local = datetime.fromtimestamp(now, ROME)
    if local.date().isoformat() in ("2025-03-30", "2025-10-26"):
        return  # the DST days are pinned down above
    assert active(nightly(), now) is (2 <= local.hour < 4)


# --- muted --------------------------------------------------------------------------------


def test_muted_reports_the_silence_then_the_window() -> None:
    one = silence(rome(2025, 6, 1, 0, 0), rome(2025, 6, 1, 12, 0))
    window = nightly()
    assert muted(DISK, [one], [window], rome(2025, 6, 1, 3, 0)) is one
    assert muted(DISK, [], [window], rome(2025, 6, 1, 3, 0)) is window
    assert muted(DISK, [one], [window], rome(2025, 6, 1, 13, 0)) is None
    assert muted({**DISK, "rule": "cpu"}, [one], [window], rome(2025, 6, 1, 3, 0)) is None


def test_expired_and_future_silences_do_not_mute() -> None:
    past = silence(0.0, 100.0)
    future = silence(500.0, 600.0)
    assert muted(DISK, [past, future], [], 300.0) is None


# --- opened and closed inside -------------------------------------------------------------


def test_alert_inside_a_window_opens_no_ticket() -> None:
    window = nightly()
    start, end = rome(2025, 6, 1, 2, 10), rome(2025, 6, 1, 3, 40)
    assert opened_and_closed_inside(start, end, [window], DISK)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (rome(2025, 6, 1, 2, 10), rome(2025, 6, 1, 4, 30)),  # a real outage past the window
        (rome(2025, 6, 1, 2, 10), rome(2025, 6, 1, 4, 0)),  # resolved as the window closed
        (rome(2025, 6, 1, 1, 50), rome(2025, 6, 1, 3, 0)),  # began before the window
        (rome(2025, 6, 1, 2, 10), rome(2025, 6, 2, 3, 0)),  # lasted into the next night
    ],
)
def test_alert_not_entirely_inside_opens_a_ticket(start: float, end: float) -> None:
    assert not opened_and_closed_inside(start, end, [nightly()], DISK)


def test_window_that_does_not_select_the_alert_does_not_count() -> None:
    start, end = rome(2025, 6, 1, 2, 10), rome(2025, 6, 1, 3, 40)
    assert not opened_and_closed_inside(start, end, [nightly()], {"rule": "cpu"})


def test_back_to_back_silence_and_window_cover_an_alert_together() -> None:
    before = silence(rome(2025, 6, 1, 1, 0), rome(2025, 6, 1, 2, 0))
    start, end = rome(2025, 6, 1, 1, 30), rome(2025, 6, 1, 3, 0)
    assert opened_and_closed_inside(start, end, [before, nightly()], DISK)
    gap = silence(rome(2025, 6, 1, 1, 0), rome(2025, 6, 1, 1, 59))
    assert not opened_and_closed_inside(start, end, [gap, nightly()], DISK)


def test_overlapping_occurrences_chain() -> None:
    hourly = MaintenanceWindow("w", "0 * * * *", 5400.0, selects('rule="disk_full"'))
    assert opened_and_closed_inside(utc(2025, 6, 1, 1, 10), utc(2025, 6, 1, 9, 0), [hourly], DISK)


# --- properties ---------------------------------------------------------------------------

RULES = ("disk_full", "cpu_hot", "http_down")
LABEL_SETS = [{"rule": rule, "host": host} for rule in RULES for host in ("a", "b")]

silences = st.builds(
    lambda index, rule, start, length: Silence(
        f"s{index}", selects(f'rule="{rule}"'), start, start + length, "ana", ""
    ),
    st.integers(0, 99),
    st.sampled_from(RULES),
    st.integers(0, 1000).map(float),
    st.integers(1, 500).map(float),
)
windows = st.builds(
    lambda rule, cron, minutes: MaintenanceWindow(
        f"w-{rule}", cron, minutes * 60.0, selects(f'rule=~"{rule}|none"')
    ),
    st.sampled_from(RULES),
    st.sampled_from(["*/10 * * * *", "0 * * * *", "15 3 * * 1-5", "0 0 1 * *"]),
    st.integers(1, 120),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(silences, max_size=6),
    st.lists(windows, max_size=4),
    st.sampled_from(LABEL_SETS),
    st.integers(0, 1500),
    st.randoms(use_true_random=False),
)
def test_muted_does_not_depend_on_the_order_given(
    some_silences: list[Silence],
    some_windows: list[MaintenanceWindow],
    labels: dict[str, str],
    offset: int,
    shuffler: random.Random,
) -> None:
    now = utc(2025, 6, 2) + offset
    first = muted(labels, some_silences, some_windows, now)
    shuffled_silences, shuffled_windows = list(some_silences), list(some_windows)
    shuffler.shuffle(shuffled_silences)
    shuffler.shuffle(shuffled_windows)
    second = muted(labels, shuffled_silences, shuffled_windows, now)
    assert (first is None) == (second is None)
    for found in (first, second):
        if found is not None:
            assert active(found, now) and matches(found.matchers, labels)
    if first is None:
        mutes = [*some_silences, *some_windows]
        assert not any(active(m, now) and matches(m.matchers, labels) for m in mutes)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(windows, min_size=1, max_size=3),
    st.lists(silences, max_size=3),
    st.sampled_from(LABEL_SETS),
    st.integers(0, 3 * 3600),
    st.integers(0, 3 * 3600),
)
def test_inside_means_muted_at_every_instant(
    some_windows: list[MaintenanceWindow],
    some_silences: list[Silence],
    labels: dict[str, str],
    start_offset: int,
    length: int,
) -> None:
    base = utc(2025, 6, 2)
    mutes = [*some_windows, *[_spread(one, base) for one in some_silences]]
    start = base + start_offset
    end = start + length
    # Mutes cover half-open intervals, so if [start, end] is not covered, its first uncovered
    # instant is `start` or the end of some occurrence: checking those instants is exhaustive.
    selecting = [mute for mute in mutes if matches(mute.matchers, labels)]
    ends = _occurrence_ends(selecting, start, end)
    candidates = [start, *(e for e in ends if start <= e <= end)]
    uncovered = [now for now in candidates if not any(active(m, now) for m in selecting)]
    inside = opened_and_closed_inside(start, end, mutes, labels)
    event(f"inside: {inside}")
    assert inside is (not uncovered)


def _occurrence_ends(
    mutes: list[Silence | MaintenanceWindow], start: float, end: float
) -> list[float]:
    ends = []
    for mute in mutes:
        if isinstance(mute, Silence):
            ends.append(mute.ends_at)
            continue
        fire = next_start(mute, start - mute.duration - 1)
        while fire is not None and fire <= end:
            ends.append(fire + mute.duration)
            fire = next_start(mute, fire)
    return ends


def _spread(one: Silence, base: float) -> Silence:
    """The generated silence (0..1500 s) spread over the 3 h the alert may span."""
    return Silence(
        one.id, one.matchers, base + one.starts_at * 10, base + one.ends_at * 10, "ana", ""
    )
