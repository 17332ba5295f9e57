"""Rendering tickets, help-desk e-mails and user notices from jinja2 templates.

Templates come from this package's `templates/` directory; a sysadmin can override any of them
by putting a file of the same name in an override directory, which is searched first. The
environment is sandboxed (an override template cannot reach Python internals), HTML templates
(`*.html.j2`) are autoescaped, text templates are not. A missing optional field renders empty
instead of failing, so templates guard optional parts with `{% if ... %}`.

The context the daemon passes (JSON-serialisable; optional parts may be null or absent):

    {
      "host": "web01",
      "incident": {"id": 3, "episode": 1, "fingerprint": "1a2b3c4d5e6f7a8b",
                   "marker": "[forewarn:1a2b3c4d5e6f7a8b]",  # optional; else from fingerprint
                   "severity": "critical", "priority": "high", "category": "web",
                   "opened_at": 1763800000.0,                # this episode
                   "first_opened_at": 1763700000.0,          # optional: episode 1
                   "resolved_at": null,
                   "lasted": null,                           # seconds, once resolved
                   "status": "open",
                   "intermittent": false, "flap_changes": 0, # the alert flaps
                   "predicted_at": null},                    # when the trend hits the limit
      "alert": {"rule": "web_down", "metric": "http_up", "labels": {"url": "http://..."},
                "value": 0.0,                                # null when not a number
                "error": "connection refused",
                "summary": "Intranet is not answering", "description": "...",
                "runbook": "https://...", "condition": "value == 0", "clear": null,
                "critical": null, "for": 30.0, "since": 1763800000.0,
                "previous_severity": null,                   # set for the `*update*` templates
                "predicted_at": null, "predict": null,       # a predicting rule: when the
                "window": 0.0, "evaluated_at": 1763800000.0, #   trend of `window` s reaches
                "flapping": false, "flap_changes": 0},       #   `predict`, seen at evaluated_at
      "alerts": [{"summary": "...", "labels": {}, "status": "firing",   # every alert of the
                  "since": 1763800000.0, "until": null, "rule": "..."}], #   incident (a group)
      "service": "intranet",                                 # may be ""
      "ticket": {"number": "#12", "url": null},              # null: no ticket (yet)
      "helpdesk": {"contact": "helpdesk@example.com"},
      "snapshot": {"top_processes": [{"pid": 1, "name": "x", "cpu_percent": 1.0,
                                      "memory_percent": 2.0}],
                   "filesystems": [{"mountpoint": "/", "used_percent": 42.0}]},  # optional
    }

`render_text` (and so `render_line` and `render_message`) adds `marker` to a context that has an
`incident`: the context's own `marker`, else `incident.marker`, else `[forewarn:<fingerprint>]`.

Template authors: read a key that is also a dict method or a keyword with brackets
(`alert["clear"]`, `alert["for"]`); `alert.clear` would find the dict method, not the key.

Templates: `ticket_subject.txt.j2`, `ticket_body.txt.j2`, `ticket_update.txt.j2`,
`ticket_resolved.txt.j2`, `ticket_reopened.txt.j2`, and the comments `ticket_alert_joined`,
`ticket_alert_left`, `ticket_intermittent` (rendered with `render_text`/`render_line`);
`ticket_symptom` and `ticket_symptom_recovered` get a smaller context: {host, symptom: {rule,
summary, labels, service}, incident: {id, marker}} (a symptom's news on its root's ticket);
messages `helpdesk_opened`, `helpdesk_reopened`, `helpdesk_updated`, `helpdesk_resolved`
(rendered with `render_message`). Users' notices have a context of their own (below).

Staff messages on that same context (rendered with `render_message`): `escalation` (an incident
nobody has acknowledged) adds
    "step": {"index": 1, "round": 0, "position": 2, "of": 3, "urgent": false,
             "policy": "default", "started_at": 1763800000.0},
    "acknowledge": "forewarn incidents ack 3",     # how to stop the escalation
    "now": 1763803600.0                            # optional: says how long unacknowledged
and the ticket comment `ticket_still_open.txt.j2` adds "open_for" (seconds), "eta" (as in a
notice, or null), "notices_sent" and "escalation_steps" (counts so far).

User notices, in the audience's language (rendered with `render_notice`), read another context:

    {
      "language": "it",                 # en | it | ru | hu ... (the audience's)
      "timezone": "Europe/Rome",        # IANA zone that times are written in
      "kind": "investigating",          # investigating | identified | update | monitoring |
                                        # resolved | scheduled | in_progress | completed
      "now": 1763800000.0,              # when the notice was decided
      "audience": {"name": "accounting", "title": "Accounting team"},   # title may be ""
      "service": {"name": "erp", "title": "Gestionale", "description": "..."},   # or null
      "host": "web01",
      "incident": {"id": 3, "episode": 1, "marker": "[forewarn:..]", "severity": "critical",
                   "opened_at": 1763800000.0, "first_opened_at": 1763700000.0,
                   "resolved_at": null, "lasted": null, "predicted_at": null,
                   "heads_up": false,     # impact predicted and still ahead: a warning
                   "acknowledged": false},                   # null for maintenance
      "eta": {"expected_at": 1763807200.0, "median": 7200.0, "low": 3600.0, "high": 9000.0,
              "samples": 4, "basis": "target", "overdue": false},   # null: unknown yet
      "next_update_at": 1763814400.0,                        # or null
      "update": {"seq": 1, "reason": "cadence" | "eta" | "relapse"},   # kind "update" only
      "texts": {"user_impact": "...", "still_works": "...", "workaround": "...",
                "help_url": "https://..."},                 # in the language; "" if not given
      "helpdesk": {"contact": "helpdesk@example.com or +39 ..."},       # may be ""
      "status_url": "https://status.example.com/status",     # or ""
      "maintenance": {"name": "backup", "title": "Nightly backup", "description": "...",
                      "starts_at": 1763800000.0, "ends_at": 1763807200.0},   # or null
      "ticket": {"number": "#12", "url": null, "backend": "builtin"}         # or null
    }

Notice templates live in `notices/<language>/<kind>.subject.j2`, `.txt.j2` and `.html.j2`; each
file falls back to the base language (`en_GB` -> `en`) and then to `notices/en/`, so a sysadmin
adds a language by dropping a `notices/<language>/` directory into the override directory. The
packaged languages (en, it, ru, hu) share per-language parts, each as `.txt.j2` and `.html.j2`:
`_greeting`, `_impact` (what the reader may notice, what still works), `_eta`, `_next` (the next
update), `_help` (workaround, self-help link), `_contact` (help desk, status page, thanks), and for
maintenance `_window` and `_unavailable`; the HTML notices extend `notices/_layout.html.j2` and
link through `notices/_link.html.j2`. They never show a technical field (no metric, value, label,
host or marker). `render_notice` sets `kind`, and `language` to the language the words of the file
are in (an English fallback for "de" writes English dates); a notice's text comes out tidied: no
trailing spaces, no runs of blank lines.

Localised filters, for notices (they read `language`, `timezone` and `now` from the context):
`when` (an epoch -> "11:26" today, else "22 novembre, 11:26"; `when(with_date=true)` always
with the date), `day` ("22 novembre", the year only when not this year) and `clock` ("11:26")
for languages that put the two apart, `span` (seconds -> "2 ore", "1 hour 30 minutes"),
`relative` (an epoch -> "in 3 hours", "2 ore fa"), and the tests `today`
(`{% if eta.expected_at is today %}`) and `same_day` (`{% if ends is same_day(starts) %}`).
The other filters (`duration`, `datetime`, `number`) write English and UTC, for the help desk.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, TypeGuard
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import babel
import babel.dates
import babel.lists
import jinja2
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_DIR = Path(__file__).parent / "templates"
DURATION_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
DEFAULT_LANGUAGE = "en"
# A language is a directory name too: letters, digits and "_" only ("en", "pt_BR", "sr_Latn").
LANGUAGE_PATTERN = re.compile(r"[A-Za-z]{2,3}(?:_[A-Za-z0-9]{2,8})*")
KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


class RenderError(Exception):
    """A template is missing, broken, or tried something the sandbox forbids."""


class Renderer:
    def __init__(self, override_dir: str | None = None) -> None:
        self.env = _environment(override_dir)

    def render_message(self, name: str, context: Mapping[str, Any]) -> tuple[str, str, str | None]:
        """(subject, text, html or None) from `<name>.subject.j2`, `.txt.j2`, `.html.j2`."""
        subject = self.render_line(f"{name}.subject.j2", context)
        text = self.render_text(f"{name}.txt.j2", context)
        html = self.render_text(f"{name}.html.j2", context) if self.has(f"{name}.html.j2") else None
        return subject, text, html

    def render_notice(
        self, kind: str, language: str, context: Mapping[str, Any]
    ) -> tuple[str, str, str]:
        """(subject, text, html) of a user notice from `notices/<language>/<kind>.*.j2`.

        Each of the three files falls back to the base language, then to English.
        """
        if not isinstance(kind, str) or not KIND_PATTERN.fullmatch(kind):
            raise RenderError(f"notice kind {kind!r} is not a template name")
        subject, text, html = (
            self._render_notice_file(kind, part, language, context)
            for part in ("subject", "txt", "html")
        )
        return " ".join(subject.split()), tidy_text(text), html

    def render_text(self, template_name: str, context: Mapping[str, Any]) -> str:
        return self._render(self._load([template_name]), _with_marker(context))

    def render_line(self, template_name: str, context: Mapping[str, Any]) -> str:
        """A subject or title: one line, whitespace collapsed."""
        return " ".join(self.render_text(template_name, context).split())

    def has(self, template_name: str) -> bool:
        try:
            self.env.get_template(template_name)
        except jinja2.TemplateNotFound:
            return False
        except jinja2.TemplateError as err:
            raise RenderError(f"template {template_name}: {err}") from err
        return True

    def _render_notice_file(
        self, kind: str, part: str, language: str, context: Mapping[str, Any]
    ) -> str:
        names = [f"notices/{lang}/{kind}.{part}.j2" for lang in notice_languages(language)]
        template = self._load(names)
        written_in = (template.name or "").split("/")[1]
        # Dates and durations follow the words around them: the English fallback for "de"
        # writes English dates, the one for "en_GB" keeps British ones.
        formats = language if _base_language(language) == written_in else written_in
        return self._render(template, {**context, "kind": kind, "language": formats})

    def _load(self, names: Sequence[str]) -> jinja2.Template:
        """The first of `names` that exists (an override first); a broken one is an error."""
        try:
            return self.env.select_template(list(names))
        except Exception as err:  # not found, a syntax error, an unreadable override
            tried = " or ".join(names)
            raise RenderError(f"template {tried}: {type(err).__name__}: {err}") from err

    def _render(self, template: jinja2.Template, context: Mapping[str, Any]) -> str:
        try:
            return template.render(context)
        except Exception as err:  # a template's own code can raise anything (1/0, a bad call)
            raise RenderError(f"template {template.name}: {type(err).__name__}: {err}") from err


def notice_languages(language: str) -> list[str]:
    """The notice directories to try, in order: "en-GB" -> ["en_GB", "en"], "it" -> ["it", "en"]."""
    if not isinstance(language, str) or not LANGUAGE_PATTERN.fullmatch(language.replace("-", "_")):
        return [DEFAULT_LANGUAGE]
    exact = language.replace("-", "_")
    return list(dict.fromkeys([exact, _base_language(exact), DEFAULT_LANGUAGE]))


def tidy_text(text: str) -> str:
    """A plain-text message without trailing spaces or runs of blank lines, so that its
    templates can join optional paragraphs freely."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"


def _with_marker(context: Mapping[str, Any]) -> Mapping[str, Any]:
    """The context with `marker`, which every help-desk text carries so that the ticket can be
    found again: the context's own, else the incident's, else one made from its fingerprint."""
    incident = context.get("incident")
    if context.get("marker") or not isinstance(incident, Mapping):
        return context
    fingerprint = incident.get("fingerprint")
    made = f"[forewarn:{fingerprint}]" if fingerprint else ""
    return {**context, "marker": incident.get("marker") or made}


def _base_language(language: str) -> str:
    return language.replace("-", "_").split("_")[0].lower() if isinstance(language, str) else ""


def _environment(override_dir: str | None) -> ImmutableSandboxedEnvironment:
    search_path = [override_dir, str(TEMPLATE_DIR)] if override_dir else [str(TEMPLATE_DIR)]
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(search_path),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(duration=format_duration, datetime=format_datetime, number=format_number)
    env.filters.update(when=_when_filter, day=_day_filter, clock=_clock_filter)
    env.filters.update(span=_span_filter, relative=_relative_filter)
    env.tests.update(today=_today_test, same_day=_same_day_test)
    return env


def format_duration(seconds: float | None) -> str:
    """The two largest units: 190 -> "3 min 10 s", 7500 -> "2 h 5 min", 93600 -> "1 d 2 h"."""
    if not _is_number(seconds):
        return ""
    remaining = max(0, round(seconds))
    parts: list[tuple[int, str]] = []
    for unit, size in DURATION_UNITS:
        count, remaining = divmod(remaining, size)
        if count or parts:
            parts.append((count, unit))
    shown = [f"{count} {unit}" for count, unit in parts[:2] if count]
    return " ".join(shown) or "0 s"


def format_datetime(epoch: float | None) -> str:
    """Epoch seconds -> "2026-11-22 07:30 UTC"."""
    if not _is_number(epoch):
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def format_number(value: float | None) -> str:
    """A measured value, readable: 0.0 -> "0", 93.456 -> "93.46", 1e12 -> "1000000000000"."""
    if not _is_number(value):
        return "" if value is None or isinstance(value, jinja2.Undefined) else str(value)
    rounded = round(value, 2)
    return f"{rounded:.2f}".rstrip("0").rstrip(".") if rounded % 1 else str(int(rounded))


def _is_number(value: object) -> TypeGuard[float]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


# --- localised, for user notices: Babel knows each language's words, plurals and formats ----


def format_when(
    epoch: float | None, language: str = DEFAULT_LANGUAGE, timezone: str = "UTC",
    now: float | None = None, with_date: bool = False,
) -> str:
    """An epoch in the reader's zone and words: "11:26" on the day of `now` (unless
    `with_date`), else the date and time ("22 novembre, 11:26")."""
    if not _is_number(epoch):
        return ""
    clock = format_clock(epoch, language, timezone)
    if not with_date and is_today(epoch, timezone, now):
        return clock
    day = format_day(epoch, language, timezone, now)
    pattern = str(babel.dates.get_datetime_format("medium", locale=_locale(language)))
    return pattern.replace("'", "").replace("{0}", clock).replace("{1}", day)


def format_day(
    epoch: float | None, language: str = DEFAULT_LANGUAGE, timezone: str = "UTC",
    now: float | None = None,
) -> str:
    """The date of an epoch: "22 novembre", with the year when it is not the year of `now`."""
    if not _is_number(epoch):
        return ""
    zone = _zone(timezone)
    moment = datetime.fromtimestamp(epoch, zone)
    same_year = _is_number(now) and datetime.fromtimestamp(now, zone).year == moment.year
    skeleton = "MMMMd" if same_year else "yMMMd"
    return babel.dates.format_skeleton(skeleton, moment, tzinfo=zone, locale=_locale(language))


def format_clock(
    epoch: float | None, language: str = DEFAULT_LANGUAGE, timezone: str = "UTC"
) -> str:
    """The time of day of an epoch: "11:26", "11:26 AM"."""
    if not _is_number(epoch):
        return ""
    zone = _zone(timezone)
    moment = datetime.fromtimestamp(epoch, zone)
    return babel.dates.format_time(moment, "short", tzinfo=zone, locale=_locale(language))


def format_span(seconds: float | None, language: str = DEFAULT_LANGUAGE) -> str:
    """A duration as people say it: "45 seconds", "2 ore", "1 час 30 минут", "3 nap és 2 óra".

    Minutes are rounded to 5 once it is hours, hours to whole ones once it is days, days once
    it is weeks; from four weeks on it is one rounded unit ("2 months").
    """
    if not _is_number(seconds):
        return ""
    locale = _locale(language)
    parts = [
        babel.dates.format_timedelta(timedelta(seconds=count * size), threshold=1, locale=locale)
        for count, size in _span_parts(max(0.0, seconds))
    ]
    return babel.lists.format_list(parts, style="unit-narrow", locale=locale)


def format_relative(
    epoch: float | None, now: float | None, language: str = DEFAULT_LANGUAGE
) -> str:
    """How far an epoch is from `now`: "in 3 hours", "tra 3 ore", "2 часа назад"."""
    if not (_is_number(epoch) and _is_number(now)):
        return ""
    return babel.dates.format_timedelta(
        timedelta(seconds=epoch - now), add_direction=True, locale=_locale(language)
    )


def is_today(epoch: float | None, timezone: str = "UTC", now: float | None = None) -> bool:
    """Whether an epoch falls on the same calendar day as `now` (or any other epoch) in the
    zone."""
    if not (_is_number(epoch) and _is_number(now)):
        return False
    zone = _zone(timezone)
    return datetime.fromtimestamp(epoch, zone).date() == datetime.fromtimestamp(now, zone).date()


def _span_parts(seconds: float) -> list[tuple[int, int]]:
    """(count, unit seconds): at most two units, the smaller one rounded."""
    if seconds < 3600:
        minutes = round(seconds / 60)
        return [(round(seconds), 1)] if minutes == 0 else [(minutes, 60)]
    if seconds < 86400:
        hours, minutes = divmod(round(seconds / 300) * 5, 60)
        return [(hours, 3600)] + ([(minutes, 60)] if minutes else [])
    if seconds < 7 * 86400:
        days, hours = divmod(round(seconds / 3600), 24)
        return [(days, 86400)] + ([(hours, 3600)] if hours else [])
    if seconds < 28 * 86400:
        weeks, days = divmod(round(seconds / 86400), 7)
        return [(weeks, 7 * 86400)] + ([(days, 86400)] if days else [])
    return [(round(seconds), 1)]  # Babel rounds it to months or years


@functools.lru_cache(maxsize=64)
def _locale(language: str) -> babel.Locale:
    """Babel's locale for a language; English for one that Babel does not know."""
    try:
        return babel.Locale.parse(str(language).replace("-", "_"))
    except (ValueError, TypeError, babel.UnknownLocaleError):
        return babel.Locale.parse(DEFAULT_LANGUAGE)


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> tzinfo:
    """The IANA zone; UTC for a name that is not one (times stay right, only in UTC)."""
    try:
        return ZoneInfo(str(name))
    except (ValueError, ZoneInfoNotFoundError):
        return UTC


def _reader(context: Context) -> tuple[str, str, float | None]:
    """(language, timezone, now) from a notice's context."""
    language, timezone, now = (context.get(key) for key in ("language", "timezone", "now"))
    return (
        language if isinstance(language, str) and language else DEFAULT_LANGUAGE,
        timezone if isinstance(timezone, str) and timezone else "UTC",
        now if _is_number(now) else None,
    )


@jinja2.pass_context
def _when_filter(context: Context, epoch: float | None, with_date: bool = False) -> str:
    language, timezone, now = _reader(context)
    return format_when(epoch, language, timezone, now, with_date=bool(with_date))


@jinja2.pass_context
def _day_filter(context: Context, epoch: float | None) -> str:
    language, timezone, now = _reader(context)
    return format_day(epoch, language, timezone, now)


@jinja2.pass_context
def _clock_filter(context: Context, epoch: float | None) -> str:
    language, timezone, _ = _reader(context)
    return format_clock(epoch, language, timezone)


@jinja2.pass_context
def _span_filter(context: Context, seconds: float | None) -> str:
    return format_span(seconds, _reader(context)[0])


@jinja2.pass_context
def _relative_filter(context: Context, epoch: float | None) -> str:
    language, _, now = _reader(context)
    return format_relative(epoch, now, language)


@jinja2.pass_context
def _today_test(context: Context, epoch: float | None) -> bool:
    _, timezone, now = _reader(context)
    return is_today(epoch, timezone, now)


@jinja2.pass_context
def _same_day_test(context: Context, epoch: float | None, other: float | None) -> bool:
    return is_today(epoch, _reader(context)[1], other)
