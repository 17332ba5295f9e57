"""Help-desk figures from the incident event log, as pure functions.

The event log is append-only: every incident's life is there, in order (opened, ticket
created, notices delivered, acknowledged, escalated, resolved, reopened, ...). `episodes`
turns one incident's events into its episodes (an episode is one outage: a reopened incident
has one per recurrence), each with the moments the help desk is judged by. `summarize`
aggregates the episodes opened in a window into the figures of a report: time to detect,
ticket, notify, acknowledge and resolve; resolution, reopen and escalation rates; tier-1
resolution; proactive lead time; user reports; a per-week trend; and `noise`, the noise budget
of each rule with a suggested change where the data supports one.

Nothing here reads the clock or the database: the report command, the API and the metrics
exporter all feed the same functions, so their figures agree.

Definitions (one episode at a time; symptoms of another incident are counted apart and left
out of every figure, as they open no ticket of their own):
- time to detect: the first failing sample (the alert's `since`) → the alert fired (opened);
- time to ticket: opened → the ticket was created (or reopened) in the help desk;
- time to first notice: opened → the first user notice was delivered;
- time to acknowledge: opened → a person acknowledged it (CLI, API, or took the ticket);
- time to resolve: opened → resolved;
- auto-resolved: resolved by forewarn (the problem went away), not by a person;
- reopen rate: recurrences (episodes after the first) ÷ resolved episodes;
- tier-1 resolution: resolved with no escalation and not followed by a recurrence;
- lead time: for an episode opened on a prediction, opened → the value crossed the predicted
  level (the impact); "averted" when it resolved without crossing it;
- detected before the user: opened before the first user report recorded for it.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

WEEK = 7 * 86_400.0
# A Monday, 00:00 UTC: weeks in the trend start on Mondays (ISO weeks), in UTC.
_MONDAY = 4 * 86_400.0
BLIP = 300.0  # seconds: an auto-resolved, unacknowledged episode this short is a blip
# Suggest a change only where the data supports it: enough episodes, and a clear share.
MIN_EPISODES_FOR_ADVICE = 3
BLIP_SHARE_FOR_ADVICE = 0.5
RECURRENCE_SHARE_FOR_ADVICE = 0.25
# Round suggested durations up to one of these (seconds), as a person would write them.
_NICE = (5, 10, 15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)
_KEY_EPISODE = re.compile(r"incident:\d+:(?:episode:)?(\d+):")


@dataclass(frozen=True)
class Event:
    """One row of the event log."""

    incident_id: int
    at: float
    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IncidentFacts:
    """What the incident row says that the events do not repeat."""

    id: int
    rule: str
    service: str = ""
    summary: str = ""


@dataclass(frozen=True)
class Episode:
    """One outage of one incident, with the moments the help desk is judged by."""

    incident_id: int
    episode: int
    rule: str
    service: str
    summary: str
    opened_at: float
    failing_since: float | None = None  # the first failing sample, when the event says
    predicted_at: float | None = None  # the impact it warned of, for a predicted episode
    symptom: bool = False  # of another incident: no ticket of its own
    muted: bool = False  # opened in a silence or maintenance window
    alerts: int = 1  # the alert that opened it and those that joined it
    ticket_at: float | None = None
    first_notice_at: float | None = None
    notices: int = 0  # user notices decided (one per audience and step)
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    escalation_step: int = 0  # the highest step reached, 1-based; 0 when none fired
    resolved_at: float | None = None
    resolved_by: str | None = None  # a person; None when forewarn resolved it
    recurrence: bool = False  # a reopen of an earlier episode
    resolved_for: float | None = None  # for a recurrence: how long it had been resolved
    recurred: bool = False  # a later episode reopened it
    flapping: bool = False
    rejected: bool = False  # the ticket was closed as rejected: no action needed
    impact_at: float | None = None  # the value crossed the predicted level
    user_reports: tuple[float, ...] = ()  # when users reported it

    def since_open(self, moment: float | None) -> float | None:
        return None if moment is None else max(0.0, moment - self.opened_at)

    @property
    def time_to_detect(self) -> float | None:
        if self.failing_since is None:
            return None
        return max(0.0, self.opened_at - self.failing_since)

    @property
    def time_to_ticket(self) -> float | None:
        return self.since_open(self.ticket_at)

    @property
    def time_to_first_notice(self) -> float | None:
        return self.since_open(self.first_notice_at)

    @property
    def time_to_acknowledge(self) -> float | None:
        return self.since_open(self.acknowledged_at)

    @property
    def time_to_resolve(self) -> float | None:
        return self.since_open(self.resolved_at)

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None

    @property
    def auto_resolved(self) -> bool:
        return self.resolved and self.resolved_by is None

    @property
    def tier1(self) -> bool:
        return self.resolved and self.escalation_step == 0 and not self.recurred

    @property
    def predicted(self) -> bool:
        return self.predicted_at is not None

    @property
    def averted(self) -> bool:
        return self.predicted and self.impact_at is None and self.resolved

    @property
    def lead_time(self) -> float | None:
        """Opened → impact, for a predicted episode that reached it (negative: impact first)."""
        if not self.predicted or self.impact_at is None:
            return None
        return self.impact_at - self.opened_at

    @property
    def first_user_report(self) -> float | None:
        return min(self.user_reports) if self.user_reports else None

    @property
    def user_lead(self) -> float | None:
        """Opened → the first user report (negative: the user was first)."""
        first = self.first_user_report
        return None if first is None else first - self.opened_at

    @property
    def caught_first(self) -> bool | None:
        """Whether forewarn warned before users were hit: None when nothing tells."""
        moments = [m for m in (self.impact_at, self.first_user_report) if m is not None]
        if not moments:
            return True if self.averted else None
        # Averted or not, a user who reported it before the warning was first.
        return self.opened_at < min(moments)

    @property
    def blip(self) -> bool:
        """Gone by itself, unacknowledged, within BLIP, with no impact and no user report:
        likely noise."""
        return (
            self.auto_resolved
            and self.acknowledged_at is None
            and (self.time_to_resolve or 0.0) < BLIP
            and self.impact_at is None
            and not self.user_reports
        )

    @property
    def noisy(self) -> bool:
        return self.blip or self.rejected or self.flapping or self.recurrence


# --- episodes from events ------------------------------------------------------------------


def episodes(incident: IncidentFacts, events: Iterable[Event]) -> list[Episode]:
    """The episodes of one incident from its events, oldest first ([] before it opened)."""
    built: dict[int, Episode] = {}
    current: int | None = None
    reports: list[float] = []
    for event in events:
        if event.kind in ("opened", "reopened"):
            number = int(event.detail.get("episode", 1)) if event.kind == "reopened" else 1
            if current is not None:
                built[current] = replace(built[current], recurred=True)
            built[number] = _begin(incident, number, event)
            current = number
        elif event.kind == "user_report":
            reports.append(_reported_at(event))
        elif current is not None:
            number = _episode_in_key(event) or current
            if number in built:
                built[number] = _apply(built[number], event)
    ordered = [built[n] for n in sorted(built)]
    return _with_reports(ordered, reports)


def _begin(incident: IncidentFacts, number: int, event: Event) -> Episode:
    d = event.detail
    return Episode(
        incident_id=incident.id,
        episode=number,
        rule=incident.rule,
        service=incident.service,
        summary=incident.summary,
        opened_at=event.at,
        failing_since=_number(d.get("since")),
        predicted_at=_number(d.get("predicted_at")),
        symptom=d.get("parent") is not None,
        muted=d.get("mute") is not None,
        recurrence=event.kind == "reopened",
        resolved_for=_number(d.get("resolved_for")),
    )


def _apply(ep: Episode, event: Event) -> Episode:
    d, at, kind = event.detail, event.at, event.kind
    if kind == "delivered":
        return _delivered(ep, d, at)
    if kind == "notice":
        return replace(ep, notices=ep.notices + 1)
    if kind == "acknowledged" and ep.acknowledged_at is None:
        return replace(ep, acknowledged_at=at, acknowledged_by=str(d.get("by") or "") or None)
    if kind == "escalated":
        return replace(ep, escalation_step=max(ep.escalation_step, int(d.get("step", 0)) + 1))
    if kind == "resolved" and ep.resolved_at is None:
        by = d.get("by")
        return replace(ep, resolved_at=at, resolved_by=str(by) if by else None)
    if kind == "alert_joined":
        return replace(ep, alerts=ep.alerts + 1)
    if kind == "intermittent":
        return replace(ep, flapping=True)
    if kind == "rejected":
        return replace(ep, rejected=True)
    if kind == "impact" and ep.impact_at is None:
        return replace(ep, impact_at=at)
    return ep


def _delivered(ep: Episode, d: Mapping[str, Any], at: float) -> Episode:
    op, template = d.get("op"), d.get("template")
    if op in ("ticket.create", "ticket.reopen") and ep.ticket_at is None:
        return replace(ep, ticket_at=at)
    if template == "notice" and ep.first_notice_at is None:
        return replace(ep, first_notice_at=at)
    return ep


def _episode_in_key(event: Event) -> int | None:
    """The episode an outbox key names (a delivery may land after the next episode began)."""
    key = event.detail.get("key")
    found = _KEY_EPISODE.search(key) if isinstance(key, str) else None
    return int(found.group(1)) if found else None


def _reported_at(event: Event) -> float:
    reported = _number(event.detail.get("reported_at"))
    return event.at if reported is None else reported


def _with_reports(ordered: list[Episode], reports: list[float]) -> list[Episode]:
    """Each user report goes to the episode it speaks of (see `_reported_episode`)."""
    if not ordered or not reports:
        return ordered
    by_episode: dict[int, list[float]] = {}
    for moment in reports:
        by_episode.setdefault(_reported_episode(ordered, moment), []).append(moment)
    return [
        replace(ep, user_reports=tuple(sorted(by_episode[i]))) if i in by_episode else ep
        for i, ep in enumerate(ordered)
    ]


def _reported_episode(ordered: Sequence[Episode], moment: float) -> int:
    """The index of the episode open at `moment`; else of the next one to open (the user
    noticed the problem before forewarn did); else of the last one (a late report)."""
    for index, ep in enumerate(ordered):
        if moment < ep.opened_at or ep.resolved_at is None or moment <= ep.resolved_at:
            return index
    return len(ordered) - 1


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


# --- statistics -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """The distribution of one duration, in seconds (None figures when there is no value)."""

    count: int = 0
    mean: float | None = None
    median: float | None = None
    p90: float | None = None
    min: float | None = None
    max: float | None = None
    total: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        known = sorted(v for v in values if v is not None)
        if not known:
            return cls()
        return cls(
            count=len(known),
            mean=statistics.fmean(known),
            median=statistics.median(known),
            p90=_percentile(known, 0.9),
            min=known[0],
            max=known[-1],
            total=math.fsum(known),
        )


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), of sorted values."""
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# --- the summary ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Times:
    """The five durations the help desk is judged by."""

    detect: Stat
    ticket: Stat
    first_notice: Stat
    acknowledge: Stat
    resolve: Stat

    @classmethod
    def of(cls, eps: Sequence[Episode]) -> Times:
        return cls(
            detect=Stat.of(e.time_to_detect for e in eps),
            ticket=Stat.of(e.time_to_ticket for e in eps),
            first_notice=Stat.of(e.time_to_first_notice for e in eps),
            acknowledge=Stat.of(e.time_to_acknowledge for e in eps),
            resolve=Stat.of(e.time_to_resolve for e in eps),
        )


@dataclass(frozen=True)
class Rates:
    """Counts and shares over a set of episodes (shares are None when there is no whole)."""

    incidents: int  # episodes
    new: int  # first episodes
    recurrences: int
    open: int
    resolved: int
    auto_resolved: int
    escalated: int
    step2: int  # reached escalation step 2 or later
    tier1: int
    notices: int
    resolution_rate: float | None
    auto_resolved_share: float | None
    reopen_rate: float | None
    escalated_share: float | None
    step2_share: float | None
    tier1_share: float | None
    notices_per_incident: float | None

    @classmethod
    def of(cls, eps: Sequence[Episode]) -> Rates:
        resolved = [e for e in eps if e.resolved]
        recurrences = sum(e.recurrence for e in eps)
        escalated = sum(e.escalation_step > 0 for e in eps)
        step2 = sum(e.escalation_step >= 2 for e in eps)
        tier1 = sum(e.tier1 for e in eps)
        auto = sum(e.auto_resolved for e in resolved)
        notices = sum(e.notices for e in eps)
        return cls(
            incidents=len(eps),
            new=len(eps) - recurrences,
            recurrences=recurrences,
            open=len(eps) - len(resolved),
            resolved=len(resolved),
            auto_resolved=auto,
            escalated=escalated,
            step2=step2,
            tier1=tier1,
            notices=notices,
            resolution_rate=share(len(resolved), len(eps)),
            auto_resolved_share=share(auto, len(resolved)),
            reopen_rate=share(recurrences, len(resolved)),
            escalated_share=share(escalated, len(eps)),
            step2_share=share(step2, len(eps)),
            tier1_share=share(tier1, len(resolved)),
            notices_per_incident=(notices / len(eps)) if eps else None,
        )


@dataclass(frozen=True)
class Proactive:
    """How far ahead of users forewarn was."""

    predicted: int  # episodes opened on a prediction
    averted: int  # ... that resolved without reaching the predicted level
    warned_before_impact: int  # ... that reached it after forewarn warned
    impact_first: int  # ... that reached it at or before the warning
    lead_time: Stat  # opened → impact, of those that reached it
    user_reported: int  # episodes with a user report
    detected_before_user: int
    user_lead: Stat  # opened → first user report (negative: the user was first)
    caught_first: int  # warned before any impact or user report (averted ones included)
    judged: int  # episodes where an impact, an averted prediction or a report tells
    before_impact_share: float | None  # of predicted ones decided: averted or warned first
    before_user_share: float | None
    caught_first_share: float | None

    @classmethod
    def of(cls, eps: Sequence[Episode]) -> Proactive:
        predicted = [e for e in eps if e.predicted]
        leads = [e.lead_time for e in predicted if e.lead_time is not None]
        averted = sum(e.averted for e in predicted)
        warned = sum(lead > 0 for lead in leads)
        reported = [e for e in eps if e.user_reports]
        before_user = sum((e.user_lead or 0.0) > 0 for e in reported)
        verdicts = [e.caught_first for e in eps if e.caught_first is not None]
        return cls(
            predicted=len(predicted),
            averted=averted,
            warned_before_impact=warned,
            impact_first=len(leads) - warned,
            lead_time=Stat.of(leads),
            user_reported=len(reported),
            detected_before_user=before_user,
            user_lead=Stat.of(e.user_lead for e in reported),
            caught_first=sum(verdicts),
            judged=len(verdicts),
            before_impact_share=share(averted + warned, averted + len(leads)),
            before_user_share=share(before_user, len(reported)),
            caught_first_share=share(sum(verdicts), len(verdicts)),
        )


@dataclass(frozen=True)
class Breakdown:
    """The figures of the episodes of one rule, one service or one week."""

    key: str
    rates: Rates
    times: Times
    proactive: Proactive

    @classmethod
    def of(cls, key: str, eps: Sequence[Episode]) -> Breakdown:
        return cls(key, Rates.of(eps), Times.of(eps), Proactive.of(eps))


@dataclass(frozen=True)
class RuleTuning:
    """A rule's current settings, for suggestions that start from them."""

    for_seconds: float = 0.0
    keep_firing_for: float = 0.0


@dataclass(frozen=True)
class Suggestion:
    """A change to a rule's settings the data supports, with what it would have spared."""

    setting: str  # "for", "keep_firing_for" or "condition" (the threshold)
    value: float | None  # the proposed duration in seconds; None for "condition"
    spared: int  # tickets ("for", "condition") or recurrences it would have avoided
    out_of: int  # ... out of this many in the window
    current: float = 0.0  # the setting's value now, in seconds


@dataclass(frozen=True)
class RuleNoise:
    """The noise budget of one rule over the window."""

    rule: str
    episodes: int
    alerts: int
    tickets: int
    blips: int  # gone by themselves, unacknowledged, within BLIP
    flapping: int
    recurrences: int
    no_action: int  # tickets closed by a person as rejected
    noisy: int  # episodes with any of the above
    noise_share: float | None
    suggestions: tuple[Suggestion, ...] = ()


@dataclass(frozen=True)
class Summary:
    """Everything a report shows, for the episodes opened in [since, until)."""

    since: float
    until: float
    symptoms: int  # left out of the figures: attached to another incident's ticket
    rates: Rates
    times: Times
    proactive: Proactive
    by_rule: tuple[Breakdown, ...]
    by_service: tuple[Breakdown, ...]
    weeks: tuple[Breakdown, ...]  # key: the Monday (UTC) the week starts, YYYY-MM-DD
    noise: tuple[RuleNoise, ...]  # noisiest first
    episodes: tuple[Episode, ...] = ()


def summarize(
    all_episodes: Iterable[Episode],
    since: float,
    until: float,
    tuning: Mapping[str, RuleTuning] | None = None,
) -> Summary:
    """The figures of the episodes opened in [since, until); `tuning` holds the rules'
    current settings, which suggestions start from."""
    window = [e for e in all_episodes if since <= e.opened_at < until]
    counted = sorted((e for e in window if not e.symptom), key=lambda e: e.opened_at)
    return Summary(
        since=since,
        until=until,
        symptoms=len(window) - len(counted),
        rates=Rates.of(counted),
        times=Times.of(counted),
        proactive=Proactive.of(counted),
        by_rule=_breakdowns(counted, lambda e: e.rule),
        by_service=_breakdowns([e for e in counted if e.service], lambda e: e.service),
        weeks=_weeks(counted, since, until),
        noise=noise(counted, tuning or {}),
        episodes=tuple(counted),
    )


def _breakdowns(eps: Sequence[Episode], key_of: Any) -> tuple[Breakdown, ...]:
    groups: dict[str, list[Episode]] = {}
    for ep in eps:
        groups.setdefault(key_of(ep), []).append(ep)
    parts = [Breakdown.of(key, group) for key, group in groups.items()]
    return tuple(sorted(parts, key=lambda b: (-b.rates.incidents, b.key)))


def week_start(moment: float) -> float:
    """The Monday 00:00 UTC that begins the week of `moment`."""
    return moment - (moment - _MONDAY) % WEEK


def _weeks(eps: Sequence[Episode], since: float, until: float) -> tuple[Breakdown, ...]:
    """One breakdown per week of the window, empty weeks included, oldest first."""
    first = week_start(since)
    starts = [first + i * WEEK for i in range(max(1, math.ceil((until - first) / WEEK)))]
    groups: dict[float, list[Episode]] = {start: [] for start in starts}
    for ep in eps:
        groups.setdefault(week_start(ep.opened_at), []).append(ep)
    return tuple(
        Breakdown.of(dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y-%m-%d"), group)
        for start, group in sorted(groups.items())
    )


# --- noise ----------------------------------------------------------------------------------


def noise(eps: Sequence[Episode], tuning: Mapping[str, RuleTuning]) -> tuple[RuleNoise, ...]:
    """The noise budget of each rule, noisiest first."""
    by_rule: dict[str, list[Episode]] = {}
    for ep in eps:
        by_rule.setdefault(ep.rule, []).append(ep)
    budgets = [
        _budget(rule, group, tuning.get(rule, RuleTuning())) for rule, group in by_rule.items()
    ]
    return tuple(sorted(budgets, key=lambda b: (-b.noisy, -(b.noise_share or 0.0), b.rule)))


def _budget(rule: str, eps: Sequence[Episode], tuning: RuleTuning) -> RuleNoise:
    noisy = sum(e.noisy for e in eps)
    return RuleNoise(
        rule=rule,
        episodes=len(eps),
        alerts=sum(e.alerts for e in eps),
        tickets=sum(e.ticket_at is not None for e in eps),
        blips=sum(e.blip for e in eps),
        flapping=sum(e.flapping for e in eps),
        recurrences=sum(e.recurrence for e in eps),
        no_action=sum(e.rejected for e in eps),
        noisy=noisy,
        noise_share=share(noisy, len(eps)),
        suggestions=tuple(_suggestions(eps, tuning)),
    )


def _suggestions(eps: Sequence[Episode], tuning: RuleTuning) -> Iterable[Suggestion]:
    if len(eps) < MIN_EPISODES_FOR_ADVICE:
        return
    longer_for = _longer_for(eps, tuning)
    if longer_for is not None:
        yield longer_for
    hold_down = _hold_down(eps, tuning)
    if hold_down is not None:
        yield hold_down
    rejected = sum(e.rejected for e in eps)
    if rejected:
        yield Suggestion("condition", None, rejected, len(eps))


def _longer_for(eps: Sequence[Episode], tuning: RuleTuning) -> Suggestion | None:
    """Blips held for `for` plus their length: a `for` past most of them keeps them quiet."""
    blips = sorted(e.time_to_resolve or 0.0 for e in eps if e.blip)
    if len(blips) < 2 or len(blips) / len(eps) < BLIP_SHARE_FOR_ADVICE:
        return None
    held = [tuning.for_seconds + length for length in blips]
    proposed = nice_ceiling(_percentile(held, 0.9))
    if proposed <= tuning.for_seconds:
        return None
    # A condition seen for `held` seconds, then gone at the next sample, never lasts a `for`
    # of `held`: the blip would have stayed pending.
    spared = sum(h <= proposed for h in held)
    return Suggestion("for", proposed, spared, len(eps), tuning.for_seconds)


def _hold_down(eps: Sequence[Episode], tuning: RuleTuning) -> Suggestion | None:
    """Recurrences soon after a recovery: hysteresis (a hold-down) merges them."""
    gaps = sorted(e.resolved_for for e in eps if e.recurrence and e.resolved_for is not None)
    resolved = sum(e.resolved for e in eps)
    if len(gaps) < 2 or not resolved or len(gaps) / resolved < RECURRENCE_SHARE_FOR_ADVICE:
        return None
    # An episode resolves only after the current hold-down, so the problem was gone for
    # (at most) that plus the time it stayed resolved.
    gone = [tuning.keep_firing_for + gap for gap in gaps]
    proposed = nice_ceiling(_percentile(gone, 0.9))
    if proposed <= tuning.keep_firing_for:
        return None
    spared = sum(g <= proposed for g in gone)
    return Suggestion("keep_firing_for", proposed, spared, len(gaps), tuning.keep_firing_for)


def nice_ceiling(seconds: float) -> float:
    """The first round duration at least `seconds` (whole days past the table)."""
    for nice in _NICE:
        if nice >= seconds:
            return float(nice)
    return float(math.ceil(seconds / 86_400) * 86_400)
