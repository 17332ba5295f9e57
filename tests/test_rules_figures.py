"""The help-desk figures (`rules.figures`): episodes from the event log, and their summary.

Event logs are written here as the daemon writes them: `opened`/`reopened` from the lifecycle
(with `since` and `predicted_at`), `delivered` from the dispatcher (op, outbox key, template),
`notice` and `escalated` (0-based `step`) from comms, `acknowledged` from the store, `resolved`
from the engine or, with `by`, from a person, `rejected` from ticket sync, `impact` from the
engine, `user_report` from `forewarn incidents report-by-user`. Expected figures are worked
out by hand.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.figures import (
    BLIP,
    Episode,
    Event,
    IncidentFacts,
    RuleTuning,
    Stat,
    Suggestion,
    episodes,
    nice_ceiling,
    noise,
    summarize,
    week_start,
)

T0 = 1_800_000_000.0  # Friday 2027-01-15 08:00 UTC
DAY = 86_400.0
ID = 7
FACTS = IncidentFacts(ID, "disk_full", "file shares", "/ is 95 % full")


# --- events as the daemon writes them -------------------------------------------------------


def event(offset: float, kind: str, **detail: Any) -> Event:
    return Event(ID, T0 + offset, kind, detail)


def opened(
    offset: float,
    *,
    since: float | None = None,
    predicted_at: float | None = None,
    parent: int | None = None,
    mute: str | None = None,
) -> Event:
    return event(
        offset,
        "opened",
        severity="warning",
        value=95.0,
        mute=mute,
        parent=parent,
        since=T0 + (offset if since is None else since),
        predicted_at=None if predicted_at is None else T0 + predicted_at,
    )


def reopened(offset: float, episode: int, resolved_for: float, since: float | None = None) -> Event:
    return event(
        offset,
        "reopened",
        episode=episode,
        resolved_for=resolved_for,
        mute=None,
        since=T0 + (offset if since is None else since),
        predicted_at=None,
    )


def delivered(offset: float, op: str, key: str, template: str | None) -> Event:
    return event(offset, "delivered", op=op, key=key, template=template)


# The template of each ticket operation the dispatcher delivers.
TICKET_TEMPLATES = {
    "create": "ticket_body",
    "reopen": "ticket_reopened",
    "resolve": "ticket_resolved",
}


def ticket_delivered(offset: float, action: str, episode: int = 1) -> Event:
    op = f"ticket.{action}"
    key = f"incident:{ID}:episode:{episode}:{op}"
    return delivered(offset, op, key, TICKET_TEMPLATES[action])


def notice(offset: float, kind: str = "investigating", seq: int = 1) -> Event:
    return event(offset, "notice", notice=kind, audience="staff", seq=seq, reason="opened")


def notice_delivered(offset: float, episode: int, kind: str = "investigating") -> Event:
    key = f"notice:incident:{ID}:{episode}:staff:{kind}:1:email:ana@example.com"
    return delivered(offset, "email.send", key, "notice")


def comment_delivered(offset: float, event_id: int) -> Event:
    key = f"incident:{ID}:event:{event_id}:ticket.comment"
    return delivered(offset, "ticket.comment", key, "ticket_update")


def escalated(offset: float, step: int) -> Event:
    return event(offset, "escalated", step=step, urgent=False, to=["oncall"])


def acknowledged(offset: float, by: str) -> Event:
    return event(offset, "acknowledged", by=by, source="cli")


def resolved(offset: float, lasted: float = 0.0) -> Event:
    return event(offset, "resolved", lasted=lasted, mute=None, silent=False)


def resolved_by(offset: float, who: str) -> Event:
    return event(
        offset, "resolved", lasted=0.0, by=who, comment="fixed", source="api", forced=False
    )


def user_report(offset: float, reported: float | None) -> Event:
    at = None if reported is None else T0 + reported
    return event(offset, "user_report", by="carla", reported_at=at, note="", source="cli")


def impact(offset: float) -> Event:
    return event(offset, "impact", value=96.0, fingerprint="abc")


# --- episodes -------------------------------------------------------------------------------

# (events, the expected fields of each episode: one dict per episode, oldest first)
EPISODE_CASES: dict[str, tuple[list[Event], list[dict[str, Any]]]] = {
    "one plain episode": (
        [
            opened(0, since=-60),
            ticket_delivered(5, "create"),
            event(5, "ticket_created", ticket="#12", backend="builtin"),
            notice(30),
            notice_delivered(32, 1),
            comment_delivered(40, 9),
            acknowledged(120, "alice"),
            resolved(600, 600),
            ticket_delivered(601, "resolve", 1),
        ],
        [
            {
                "episode": 1,
                "rule": "disk_full",
                "service": "file shares",
                "opened_at": T0,
                "failing_since": T0 - 60,
                "ticket_at": T0 + 5,
                "first_notice_at": T0 + 32,
                "notices": 1,
                "acknowledged_at": T0 + 120,
                "acknowledged_by": "alice",
                "escalation_step": 0,
                "resolved_at": T0 + 600,
                "resolved_by": None,
                "recurrence": False,
                "recurred": False,
            }
        ],
    ),
    "deliveries of episode 1 logged after episode 2 began go to episode 1 by their key": (
        [
            opened(0),
            notice(30),
            resolved(60),
            reopened(90, 2, 30),
            ticket_delivered(92, "reopen", 2),  # episode 2's own ticket operation
            ticket_delivered(94, "create"),  # group_wait and a slow help desk: episode 1's ticket
            notice_delivered(95, 1),  # episode 1's notice, from a slow mail server
            ticket_delivered(96, "resolve", 1),
        ],
        [
            {"ticket_at": T0 + 94, "first_notice_at": T0 + 95, "notices": 1, "recurred": True},
            {
                "episode": 2,
                "opened_at": T0 + 90,
                "ticket_at": T0 + 92,
                "first_notice_at": None,
                "notices": 0,
                "recurrence": True,
                "resolved_for": 30.0,
                "resolved_at": None,
            },
        ],
    ),
    "a comment delivered first is not the ticket": (
        [opened(0), comment_delivered(3, 5), ticket_delivered(8, "create")],
        [{"ticket_at": T0 + 8}],
    ),
    "a symptom of another incident": (
        [opened(0, parent=3), resolved(100)],
        [{"symptom": True, "muted": False}],
    ),
    "an opening in a silence": (
        [opened(0, mute="silence 2 by ana: backup"), resolved(100)],
        [{"symptom": False, "muted": True}],
    ),
    "escalation steps are 0-based in events, 1-based in the episode": (
        [opened(0), escalated(300, 0), escalated(900, 1), acknowledged(1000, "bob")],
        [{"escalation_step": 2, "acknowledged_by": "bob"}],
    ),
    "one escalation step": (
        [opened(0), escalated(300, 0), resolved(400)],
        [{"escalation_step": 1}],
    ),
    "the first acknowledgement counts": (
        [opened(0), acknowledged(100, "alice"), acknowledged(200, "bob (help desk)")],
        [{"acknowledged_at": T0 + 100, "acknowledged_by": "alice"}],
    ),
    "each episode its own acknowledgement and escalation": (
        [
            opened(0),
            escalated(60, 0),
            acknowledged(100, "alice"),
            resolved(200),
            reopened(300, 2, 100),
            acknowledged(400, "bob"),
        ],
        [
            {"acknowledged_by": "alice", "escalation_step": 1},
            {"acknowledged_by": "bob", "acknowledged_at": T0 + 400, "escalation_step": 0},
        ],
    ),
    "a person's resolution names them; the engine's later one is ignored": (
        [opened(0), resolved_by(500, "bob"), resolved(700)],
        [{"resolved_at": T0 + 500, "resolved_by": "bob"}],
    ),
    "the impact counts once": (
        [opened(0, predicted_at=600), impact(540), impact(660), resolved(900)],
        [{"impact_at": T0 + 540, "predicted_at": T0 + 600}],
    ),
    "joined alerts, flapping and a rejected ticket": (
        [
            opened(0),
            event(10, "alert_joined", fingerprint="b", labels={}),
            event(20, "alert_joined", fingerprint="c", labels={}),
            event(30, "intermittent", flap_changes=6),
            event(40, "rejected", by="dan", silence=4),
        ],
        [{"alerts": 3, "flapping": True, "rejected": True}],
    ),
    "events before the opening are not an episode's": (
        [acknowledged(-10, "early"), opened(0)],
        [{"acknowledged_at": None}],
    ),
    "no opening, no episode": ([acknowledged(0, "alice"), resolved(10)], []),
    "user reports before the opening and while open go to episode 1": (
        [opened(0), user_report(5, -300), user_report(400, 200), resolved(600)],
        [{"user_reports": (T0 - 300, T0 + 200)}],
    ),
    "a report after the last resolution is a late one of the last episode": (
        [opened(0), resolved(100), user_report(900, 800)],
        [{"user_reports": (T0 + 800,)}],
    ),
    "a report without reported_at is dated when it was recorded": (
        [opened(0), user_report(50, None)],
        [{"user_reports": (T0 + 50,)}],
    ),
    "a report between episodes goes to the next: the user noticed it first": (
        [
            opened(0),
            user_report(50, 40),
            resolved(100),
            reopened(600, 2, 500),
            user_report(650, 550),  # recorded while episode 2 is open, reported before it
            user_report(700, 680),
        ],
        [{"user_reports": (T0 + 40,)}, {"user_reports": (T0 + 550, T0 + 680)}],
    ),
}


@pytest.mark.parametrize(("events", "expected"), EPISODE_CASES.values(), ids=EPISODE_CASES)
def test_episodes_from_the_event_log(events: list[Event], expected: list[dict[str, Any]]) -> None:
    built = episodes(FACTS, events)
    assert len(built) == len(expected)
    for number, (episode, fields) in enumerate(zip(built, expected, strict=True), start=1):
        assert episode.incident_id == ID
        assert episode.episode == fields.get("episode", number)
        for name, value in fields.items():
            assert getattr(episode, name) == value, (number, name)


def test_episodes_accept_any_iterable_and_keep_the_incident_facts() -> None:
    [episode] = episodes(FACTS, iter([opened(0), resolved(30)]))
    assert (episode.rule, episode.service, episode.summary) == (
        "disk_full",
        "file shares",
        "/ is 95 % full",
    )
    assert episode.time_to_resolve == 30.0


# --- episode properties ---------------------------------------------------------------------


def ep(**fields: Any) -> Episode:
    """An episode opened at T0; offsets in `*_at` fields are seconds after T0."""
    for name in ("resolved_at", "acknowledged_at", "impact_at", "predicted_at", "ticket_at"):
        if fields.get(name) is not None:
            fields[name] = T0 + fields[name]
    if "user_reports" in fields:
        fields["user_reports"] = tuple(T0 + r for r in fields["user_reports"])
    base: dict[str, Any] = {
        "incident_id": 1,
        "episode": 1,
        "rule": "r",
        "service": "",
        "summary": "",
        "opened_at": T0,
    }
    return Episode(**(base | fields))


FLAGS = ("tier1", "averted", "blip", "noisy")
# (episode, the FLAGS that hold, lead_time, caught_first)
PROPERTY_CASES: dict[str, tuple[Episode, set[str], float | None, bool | None]] = {
    "open, nothing known": (ep(), set(), None, None),
    "a blip": (ep(resolved_at=60), {"tier1", "blip", "noisy"}, None, None),
    "just not a blip": (ep(resolved_at=BLIP), {"tier1"}, None, None),
    "acknowledged: not a blip": (ep(resolved_at=60, acknowledged_at=30), {"tier1"}, None, None),
    "resolved by a person: not a blip": (
        ep(resolved_at=60, resolved_by="bob"), {"tier1"}, None, None
    ),
    "a user report: not a blip, forewarn first": (
        ep(resolved_at=60, user_reports=(30,)), {"tier1"}, None, True
    ),
    "escalated: not tier 1": (ep(resolved_at=900, escalation_step=1), set(), None, None),
    "recurred: not tier 1": (ep(resolved_at=900, recurred=True), set(), None, None),
    "a recurrence is noisy": (ep(resolved_at=900, recurrence=True), {"tier1", "noisy"}, None, None),
    "flapping is noisy": (ep(flapping=True), {"noisy"}, None, None),
    "rejected is noisy": (ep(rejected=True), {"noisy"}, None, None),
    "predicted, reached later": (
        ep(predicted_at=600, impact_at=540, resolved_at=900), {"tier1"}, 540.0, True
    ),
    "predicted, impact first": (
        ep(predicted_at=0, impact_at=-30, resolved_at=900), {"tier1"}, -30.0, False
    ),
    "predicted, impact at the opening": (
        ep(predicted_at=0, impact_at=0, resolved_at=900), {"tier1"}, 0.0, False
    ),
    "predicted, averted": (ep(predicted_at=600, resolved_at=400), {"tier1", "averted"}, None, True),
    "predicted, still open: not averted yet": (ep(predicted_at=600), set(), None, None),
    "predicted and averted, but a user reported it before": (
        ep(predicted_at=600, resolved_at=400, user_reports=(-120,)),
        {"tier1", "averted"}, None, False,
    ),
    "impact but no prediction: no lead time": (
        ep(impact_at=100, resolved_at=900), {"tier1"}, None, True
    ),
    "the user was first": (ep(resolved_at=900, user_reports=(200, -60)), {"tier1"}, None, False),
}  # fmt: skip


@pytest.mark.parametrize(
    ("episode", "holds", "lead_time", "caught_first"), PROPERTY_CASES.values(), ids=PROPERTY_CASES
)
def test_episode_properties(
    episode: Episode, holds: set[str], lead_time: float | None, caught_first: bool | None
) -> None:
    flags = {flag: getattr(episode, flag) for flag in FLAGS}
    assert flags == {flag: flag in holds for flag in FLAGS}
    assert all(type(value) is bool for value in flags.values())
    assert episode.lead_time == lead_time
    assert episode.caught_first is caught_first


def test_episode_durations_from_the_opening() -> None:
    e = ep(
        failing_since=T0 - 90,
        ticket_at=4,
        acknowledged_at=120,
        resolved_at=1800,
        user_reports=(300, 200),
    )
    assert e.time_to_detect == 90.0
    assert (e.time_to_ticket, e.time_to_acknowledge, e.time_to_resolve) == (4.0, 120.0, 1800.0)
    assert e.time_to_first_notice is None
    assert (e.first_user_report, e.user_lead) == (T0 + 200, 200.0)
    assert ep(user_reports=(-60,)).user_lead == -60.0
    # A clock that stepped back never makes a negative response time.
    assert ep(ticket_at=-5).time_to_ticket == 0.0
    assert ep(failing_since=T0 + 5).time_to_detect == 0.0


# --- statistics -----------------------------------------------------------------------------


def numpy_linear(values: Sequence[float], q: float) -> float:
    """numpy.percentile's default (linear) method, written out: rank (n-1)·q, interpolated."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    below = int(rank)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)


@pytest.mark.parametrize(
    ("values", "median", "p90", "mean"),
    [
        ([42.0], 42.0, 42.0, 42.0),
        ([10.0, 20.0], 15.0, 19.0, 15.0),  # rank 0.9: 10 + 0.9·10
        ([30.0, 10.0, 20.0], 20.0, 28.0, 20.0),  # rank 1.8: 20 + 0.8·10
        ([10.0, 20.0, 30.0, 40.0, 100.0], 30.0, 76.0, 40.0),  # rank 3.6: 40 + 0.6·60
        ([1.0] * 9 + [1001.0], 1.0, 101.0, 101.0),  # rank 8.1: 1 + 0.1·1000
    ],
)
def test_stat_percentiles_interpolate_linearly(
    values: list[float], median: float, p90: float, mean: float
) -> None:
    stat = Stat.of([*values, None])
    assert stat.count == len(values)
    assert stat.median == pytest.approx(median) == pytest.approx(numpy_linear(values, 0.5))
    assert stat.p90 == pytest.approx(p90) == pytest.approx(numpy_linear(values, 0.9))
    assert stat.mean == pytest.approx(mean)
    assert (stat.min, stat.max) == (min(values), max(values))
    assert stat.total == pytest.approx(sum(values))


def test_stat_of_nothing_has_no_figures() -> None:
    assert Stat.of([None, None]) == Stat(count=0)
    assert Stat.of([]).median is None


# --- the summary ----------------------------------------------------------------------------


def test_the_window_is_since_inclusive_until_exclusive_on_the_opening() -> None:
    since, until = T0, T0 + 7 * DAY
    eps = [
        ep(opened_at=since - 1, episode=1),
        ep(opened_at=since, episode=2),
        ep(opened_at=until - 1, episode=3),
        ep(opened_at=until, episode=4),
    ]
    summary = summarize(eps, since, until)
    assert [e.episode for e in summary.episodes] == [2, 3]
    assert (summary.since, summary.until) == (since, until)


def test_symptoms_are_counted_apart_and_left_out_of_every_figure() -> None:
    eps = [
        ep(episode=1, resolved_at=600, escalation_step=1),
        ep(episode=2, symptom=True, resolved_at=60, service="mail"),
        ep(episode=3, symptom=True, opened_at=T0 - DAY),  # outside the window: not counted
    ]
    summary = summarize(eps, T0, T0 + DAY)
    assert summary.symptoms == 1
    assert summary.rates.incidents == 1 and summary.rates.escalated == 1
    assert summary.times.resolve.count == 1
    assert [b.key for b in summary.by_service] == []
    assert [n.episodes for n in summary.noise] == [1]


def fixed_set() -> list[Episode]:
    """Six episodes whose every figure is worked out by hand below."""
    return [
        # a: escalated to step 2, acknowledged, resolved by forewarn after an hour
        ep(
            incident_id=1,
            rule="disk",
            service="files",
            escalation_step=2,
            acknowledged_at=300,
            resolved_at=3600,
            notices=3,
            failing_since=T0 - 60,
            ticket_at=5,
        ),
        # b: a blip that came back (b2)
        ep(
            incident_id=2,
            rule="disk",
            service="files",
            opened_at=T0 + DAY,
            resolved_at=DAY + 100,
            recurred=True,
            ticket_at=DAY + 10,
        ),
        ep(
            incident_id=2,
            episode=2,
            rule="disk",
            service="files",
            opened_at=T0 + DAY + 400,
            resolved_at=DAY + 1000,
            recurrence=True,
            resolved_for=300.0,
            resolved_by="bob",
            ticket_at=DAY + 402,
        ),
        # c: predicted, reached 10 minutes after the warning, user report after it
        ep(
            incident_id=3,
            rule="queue",
            service="mail",
            opened_at=T0 + 2 * DAY,
            predicted_at=2 * DAY + 900,
            impact_at=2 * DAY + 600,
            user_reports=(2 * DAY + 700,),
            escalation_step=1,
            resolved_at=2 * DAY + 2000,
            notices=1,
        ),
        # d: predicted and averted
        ep(
            incident_id=4,
            rule="queue",
            service="mail",
            opened_at=T0 + 3 * DAY,
            predicted_at=3 * DAY + 900,
            resolved_at=3 * DAY + 800,
        ),
        # e: still open, a user called five minutes before forewarn opened it
        ep(
            incident_id=5,
            rule="web",
            opened_at=T0 + 4 * DAY,
            user_reports=(4 * DAY - 300,),
            notices=2,
        ),
    ]


def test_rates_of_a_fixed_set_by_hand() -> None:
    r = summarize(fixed_set(), T0, T0 + 7 * DAY).rates
    assert (r.incidents, r.new, r.recurrences, r.open, r.resolved) == (6, 5, 1, 1, 5)
    assert r.auto_resolved == 4  # all resolved but b2 (bob)
    assert (r.escalated, r.step2) == (2, 1)  # a (step 2), c (step 1)
    assert r.tier1 == 2  # b2 and d: a and c escalated, b recurred, e open
    assert r.notices == 6
    assert r.resolution_rate == pytest.approx(5 / 6)
    assert r.auto_resolved_share == pytest.approx(4 / 5)
    assert r.reopen_rate == pytest.approx(1 / 5)
    assert r.escalated_share == pytest.approx(2 / 6)
    assert r.step2_share == pytest.approx(1 / 6)
    assert r.tier1_share == pytest.approx(2 / 5)
    assert r.notices_per_incident == pytest.approx(1.0)


def test_times_and_proactive_figures_of_a_fixed_set_by_hand() -> None:
    summary = summarize(fixed_set(), T0, T0 + 7 * DAY)
    t, p = summary.times, summary.proactive
    assert (t.detect.count, t.detect.median) == (1, 60.0)
    assert (t.ticket.count, t.ticket.median, t.ticket.mean) == (3, 5.0, pytest.approx(17 / 3))
    assert t.acknowledge.median == 300.0
    # resolve: a 3600, b 100, b2 600, c 2000, d 800 → sorted 100 600 800 2000 3600
    assert t.resolve.median == 800.0
    assert t.resolve.mean == pytest.approx(7100 / 5)
    assert t.resolve.p90 == pytest.approx(2000 + 0.6 * 1600)  # rank 3.6
    assert (p.predicted, p.averted, p.warned_before_impact, p.impact_first) == (2, 1, 1, 0)
    assert p.lead_time.median == 600.0
    assert (p.user_reported, p.detected_before_user) == (2, 1)  # c: forewarn, e: the user
    assert (p.user_lead.min, p.user_lead.max) == (-300.0, 700.0)
    assert (p.caught_first, p.judged) == (2, 3)  # c and d; e was reported first
    assert p.before_impact_share == 1.0
    assert p.before_user_share == pytest.approx(1 / 2)
    assert p.caught_first_share == pytest.approx(2 / 3)


def test_breakdowns_are_ordered_by_incidents_then_name() -> None:
    summary = summarize(fixed_set(), T0, T0 + 7 * DAY)
    assert [(b.key, b.rates.incidents) for b in summary.by_rule] == [
        ("disk", 3),
        ("queue", 2),
        ("web", 1),
    ]
    # Episodes without a service are left out of the service breakdown.
    assert [(b.key, b.rates.incidents) for b in summary.by_service] == [("files", 3), ("mail", 2)]
    tie = [ep(rule="b"), ep(rule="a"), ep(rule="c"), ep(rule="c")]
    assert [b.key for b in summarize(tie, T0, T0 + DAY).by_rule] == ["c", "a", "b"]


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def test_weeks_start_on_monday_utc_and_include_empty_weeks() -> None:
    since, until = utc("2027-01-13T12:00"), utc("2027-02-03T00:00")  # a Wednesday to a Wednesday
    eps = [
        ep(opened_at=utc("2027-01-17T23:59:59")),  # Sunday: the week of Monday the 11th
        ep(opened_at=utc("2027-01-18T00:00")),  # Monday 00:00: a new week
        ep(opened_at=utc("2027-02-02T10:00"), escalation_step=1),
    ]
    weeks = summarize(eps, since, until).weeks
    assert [(w.key, w.rates.incidents) for w in weeks] == [
        ("2027-01-11", 1),
        ("2027-01-18", 1),
        ("2027-01-25", 0),
        ("2027-02-01", 1),
    ]
    assert weeks[3].rates.escalated == 1 and weeks[2].rates.resolution_rate is None


def test_a_window_ending_on_a_monday_has_no_week_after_it() -> None:
    weeks = summarize([], utc("2027-01-11T00:00"), utc("2027-01-25T00:00")).weeks
    assert [w.key for w in weeks] == ["2027-01-11", "2027-01-18"]
    assert [w.key for w in summarize([], T0, T0 + 60).weeks] == ["2027-01-11"]


def test_week_start_is_a_monday_midnight_utc() -> None:
    for moment in (T0, utc("2027-01-11T00:00"), utc("1999-12-31T23:00"), 0.0):
        start = dt.datetime.fromtimestamp(week_start(moment), dt.UTC)
        assert (start.weekday(), start.hour, start.minute) == (0, 0, 0)
        assert 0 <= moment - start.timestamp() < 7 * DAY


# --- noise ----------------------------------------------------------------------------------


def blip(rule: str, length: float, at: float = 0.0) -> Episode:
    return ep(rule=rule, opened_at=T0 + at, resolved_at=at + length, ticket_at=at + 2)


def real(rule: str, at: float = 0.0, **fields: Any) -> Episode:
    """A problem someone worked on: acknowledged, resolved after an hour."""
    return ep(
        rule=rule, opened_at=T0 + at, acknowledged_at=at + 60, resolved_at=at + 3600, **fields
    )


def test_noise_ranks_the_noisiest_rule_first() -> None:
    eps = [
        blip("chatty", 30),
        blip("chatty", 40),
        blip("chatty", 50),
        real("chatty"),
        real("half", flapping=True),
        real("half"),
        real("all", rejected=True),  # as noisy as `half`, a larger share
        real("quiet"),
    ]
    budgets = noise(eps, {})
    assert [(n.rule, n.noisy) for n in budgets] == [
        ("chatty", 3),
        ("all", 1),
        ("half", 1),
        ("quiet", 0),
    ]
    chatty = budgets[0]
    assert (chatty.episodes, chatty.alerts, chatty.tickets, chatty.blips) == (4, 4, 3, 3)
    assert chatty.noise_share == pytest.approx(3 / 4)
    assert (budgets[1].no_action, budgets[2].flapping) == (1, 1)


def suggestions(eps: list[Episode], tuning: RuleTuning | None = None) -> list[Suggestion]:
    [budget] = noise(eps, {"r": tuning} if tuning else {})
    return list(budget.suggestions)


def test_a_longer_for_is_suggested_for_a_rule_of_blips() -> None:
    # for 60 s: the blips were seen 60+60 and 60+90 s; p90 of (120, 150) is 147 → 3 min
    eps = [blip("r", 60), blip("r", 90), real("r")]
    assert suggestions(eps, RuleTuning(for_seconds=60.0)) == [Suggestion("for", 180.0, 2, 3, 60.0)]


def test_the_suggested_for_is_a_round_duration_past_most_blips() -> None:
    lengths = [12.0, 40.0, 45.0, 50.0, 55.0, 70.0, 200.0, 290.0]
    [s] = suggestions([blip("r", x) for x in lengths])
    p90 = numpy_linear(lengths, 0.9)  # rank 6.3: 200 + 0.3·90 = 227
    assert s.value == 300.0 == nice_ceiling(p90)
    assert s.spared == sum(x <= 300.0 for x in lengths) == 8
    assert s.out_of == 8 and s.current == 0.0


def test_a_blip_exactly_as_long_as_the_suggested_for_is_spared() -> None:
    """Samples every minute: a blip seen once lasts 60 s to its clearing sample; with `for`
    60 s that sample finds the condition gone, so it would have stayed pending."""
    [s] = suggestions([blip("r", 60), blip("r", 60), blip("r", 60)])
    assert (s.setting, s.value, s.spared, s.out_of) == ("for", 60.0, 3, 3)


@pytest.mark.parametrize(
    "eps",
    [
        pytest.param([blip("r", 30), blip("r", 30)], id="two episodes: too few"),
        pytest.param([blip("r", 30), real("r"), real("r")], id="one blip"),
        pytest.param([blip("r", 30), blip("r", 30), *[real("r")] * 3], id="under half blips"),
    ],
)
def test_no_for_suggestion_without_enough_blips(eps: list[Episode]) -> None:
    assert [s.setting for s in suggestions(eps)] == []


def test_exactly_half_blips_is_enough() -> None:
    eps = [blip("r", 30), blip("r", 20), real("r"), real("r")]
    assert [s.setting for s in suggestions(eps)] == ["for"]


def test_no_for_suggestion_that_is_the_current_for() -> None:
    # Blips of 5 s under a `for` of 25 s were seen 30 s: a `for` of 30 s spares them...
    [s] = suggestions([blip("r", 5)] * 3, RuleTuning(for_seconds=25.0))
    assert (s.value, s.spared, s.current) == (30.0, 3, 25.0)
    # ... but blips gone at once under a `for` of 30 s round up to 30 s: no change to suggest.
    assert suggestions([blip("r", 0)] * 3, RuleTuning(for_seconds=30.0)) == []


def recurring(gaps: list[float], kff: float = 0.0) -> list[Episode]:
    """One incident recurring after each gap; every episode a worked problem, no blip."""
    first = real("r", recurred=True)
    later = [
        real("r", at=(i + 1) * 7200, recurrence=True, resolved_for=gap, recurred=i < len(gaps) - 1)
        for i, gap in enumerate(gaps)
    ]
    return [first, *later]


def test_keep_firing_for_is_suggested_for_quick_recurrences() -> None:
    # gone 30, 45 and 200 s: p90 169 → 3 min keeps the first two one incident
    assert suggestions(recurring([30.0, 45.0, 200.0])) == [
        Suggestion("keep_firing_for", 180.0, 2, 3, 0.0)
    ]


def test_keep_firing_for_starts_from_the_current_hold_down() -> None:
    """The problem was gone for the hold-down plus the time the incident stayed resolved:
    with keep_firing_for 2 min already, recurrences 30 to 100 s after the resolution came
    150 to 220 s after the recovery, and only a hold-down past that merges them."""
    [s] = suggestions(recurring([30.0, 45.0, 100.0]), RuleTuning(keep_firing_for=120.0))
    assert s == Suggestion("keep_firing_for", 300.0, 3, 3, 120.0)
    assert s.value is not None and s.value > s.current


def test_no_keep_firing_for_suggestion_from_one_recurrence_or_few() -> None:
    assert suggestions(recurring([30.0])) == []
    # 2 recurrences out of 9 resolved episodes: under a quarter
    rare = [*recurring([30.0, 45.0]), *[real("r", at=-i * 86_400.0) for i in range(1, 7)]]
    assert [s.setting for s in suggestions(rare)] == []


def test_rejected_tickets_suggest_a_better_condition() -> None:
    eps = [real("r", rejected=True), real("r", rejected=True), real("r")]
    assert suggestions(eps) == [Suggestion("condition", None, 2, 3)]


def test_no_suggestion_of_any_kind_from_two_episodes() -> None:
    eps = [
        replace(blip("r", 10), rejected=True),
        replace(blip("r", 10, at=400), recurrence=True, resolved_for=60.0, rejected=True),
    ]
    assert noise(eps, {})[0].noisy == 2
    assert suggestions(eps) == []


@pytest.mark.parametrize(
    ("seconds", "nice"),
    [(0.0, 5.0), (5.0, 5.0), (5.1, 10.0), (61.0, 120.0), (3600.0, 3600.0), (86_401.0, 172_800.0)],
)
def test_nice_ceiling(seconds: float, nice: float) -> None:
    assert nice_ceiling(seconds) == nice


def test_the_summary_carries_the_noise_of_its_window_with_the_rules_tuning() -> None:
    eps = [blip("r", 60), blip("r", 90), real("r"), blip("r", 10, at=30 * DAY)]
    summary = summarize(eps, T0, T0 + 7 * DAY, {"r": RuleTuning(for_seconds=60.0)})
    [budget] = summary.noise
    assert budget.episodes == 3
    assert budget.suggestions == (Suggestion("for", 180.0, 2, 3, 60.0),)


# --- properties -----------------------------------------------------------------------------


@st.composite
def incident_logs(draw: st.DrawFn, incident_id: int) -> tuple[IncidentFacts, list[Event]]:
    """An incident's events as the daemon writes them: episodes one after the other, each
    with a ticket, notices, escalations, acknowledgement, impact and resolution, or not."""
    rule = draw(st.sampled_from(["disk", "queue", "web"]))
    facts = IncidentFacts(incident_id, rule, draw(st.sampled_from(["", "files", "mail"])))
    at = T0 + draw(st.floats(0, 20 * DAY))
    events: list[Event] = []

    def add(offset: float, kind: str, **detail: Any) -> None:
        events.append(Event(incident_id, at + offset, kind, detail))

    count, gap = draw(st.integers(1, 4)), 0.0
    for number in range(1, count + 1):
        since = draw(st.floats(0, 600))
        predicted = draw(st.none() | st.floats(0, 3600))
        opening = {
            "since": at - since,
            "predicted_at": None if predicted is None else at + predicted,
        }
        if number == 1:
            parent = draw(st.none() | st.just(99))
            add(0, "opened", parent=parent, mute=None, **opening)
        else:
            add(0, "reopened", episode=number, resolved_for=gap, mute=None, **opening)
        times = sorted(draw(st.lists(st.floats(0, 7200), min_size=6, max_size=6)))
        if draw(st.booleans()):
            key = f"incident:{incident_id}:episode:{number}:ticket.create"
            add(times[0], "delivered", op="ticket.create", key=key, template="ticket_body")
        for step in range(draw(st.integers(0, 3))):
            add(times[1], "escalated", step=step)
        if draw(st.booleans()):
            add(times[2], "acknowledged", by="alice")
        if draw(st.booleans()):
            add(times[3], "impact", value=1.0)
        for reported in draw(st.lists(st.floats(-900, 7200), max_size=2)):
            add(times[4], "user_report", reported_at=at + reported)
        last = number == count
        if not last or draw(st.booleans()):
            who = draw(st.sampled_from([None, "bob"]))
            add(times[5], "resolved", **({"by": who} if who else {}))
        gap = draw(st.floats(1, 3600))
        at += times[5] + gap
    return facts, events


@st.composite
def all_episodes(draw: st.DrawFn) -> list[Episode]:
    logs = draw(st.lists(st.integers(1, 10_000), min_size=0, max_size=8, unique=True))
    return [e for i in logs for e in episodes(*draw(incident_logs(i)))]


def check_stat(stat: Stat) -> None:
    if stat.count == 0:
        assert stat.median is None and stat.p90 is None and stat.total == 0.0
        return
    assert stat.min is not None and stat.median is not None and stat.max is not None
    assert stat.p90 is not None and stat.mean is not None
    tolerance = 1e-9 * max(1.0, abs(stat.max), abs(stat.min))
    assert stat.min - tolerance <= stat.median <= stat.p90 + tolerance
    assert stat.p90 <= stat.max + tolerance
    assert stat.min - tolerance <= stat.mean <= stat.max + tolerance


@settings(max_examples=150, deadline=None)
@given(all_episodes(), st.floats(0, 25 * DAY), st.floats(1, 30 * DAY))
def test_figures_are_consistent_whatever_the_logs(
    eps: list[Episode], start: float, length: float
) -> None:
    summary = summarize(eps, T0 + start, T0 + start + length)
    r = summary.rates
    assert r.incidents == r.new + r.recurrences == r.open + r.resolved
    assert r.tier1 <= r.resolved and r.auto_resolved <= r.resolved
    assert r.step2 <= r.escalated <= r.incidents
    for name in (
        "resolution_rate",
        "auto_resolved_share",
        "escalated_share",
        "step2_share",
        "tier1_share",
    ):
        value = getattr(r, name)
        assert value is None or 0.0 <= value <= 1.0, name
    p = summary.proactive
    for value in (p.before_impact_share, p.before_user_share, p.caught_first_share):
        assert value is None or 0.0 <= value <= 1.0
    assert p.averted + p.warned_before_impact + p.impact_first <= p.predicted
    assert p.caught_first <= p.judged <= r.incidents
    for stat in (*vars(summary.times).values(), p.lead_time, p.user_lead):
        check_stat(stat)
    assert sum(w.rates.incidents for w in summary.weeks) == r.incidents
    assert sum(b.rates.incidents for b in summary.by_rule) == r.incidents
    assert sum(n.episodes for n in summary.noise) == r.incidents
    assert all(e.escalation_step <= 3 for e in summary.episodes)
    for budget in summary.noise:
        assert budget.noisy <= budget.episodes
        for s in budget.suggestions:
            assert 0 < s.spared <= s.out_of
            assert s.value is None or (s.value > s.current and math.isfinite(s.value))


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 10_000).flatmap(incident_logs))
def test_episodes_of_a_log_are_numbered_and_ordered(log: tuple[IncidentFacts, list[Event]]) -> None:
    facts, events = log
    built = episodes(facts, events)
    assert [e.episode for e in built] == list(range(1, len(built) + 1))
    assert all(a.opened_at < b.opened_at for a, b in itertools.pairwise(built))
    assert all(e.recurred for e in built[:-1]) and not built[-1].recurred
    reports = sum(e.kind == "user_report" for e in events)
    assert sum(len(e.user_reports) for e in built) == reports
    for e in built:
        assert e.resolved_at is None or e.resolved_at >= e.opened_at
