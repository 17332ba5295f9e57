"""Config of how forewarn talks to people: audiences, services, notices, escalation, status page.

The sections:
- `[[audience]]`: people who depend on services or machines, how to reach them (e-mail,
  Apprise URLs for chat, push and SMS) and in which language;
- `[[service]]`: the services users know, by the name rules give in `service`, with the title
  and description users read (per language);
- `[notices]`: the update cadence, the "monitoring" period, the time zone notices write;
- `[[escalation]]` with `[[escalation.step]]`s: who hears of an unacknowledged incident, when;
- `[status]`: the status page the daemon serves.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, time
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import babel
import holidays

from monitor.schema import (
    Context,
    Table,
    build,
    check_addresses,
    check_name,
    each,
    listing,
    resolve_secret,
    show,
)
from probes.base import Duration
from rules.escalation import BusinessHours, Policy, Step
from rules.model import Text
from rules.notices import Audience, Cadence

T = TypeVar("T")

LANGUAGES = ("en", "it", "ru", "hu")  # the languages whose notice templates ship


def _check_language(value: str) -> None:
    try:
        babel.Locale.parse(value)
    except (ValueError, babel.UnknownLocaleError):
        raise ValueError(
            f"{show(value)} is not a language code; notices ship in {', '.join(LANGUAGES)}"
        ) from None


def _check_timezone(value: str) -> None:
    try:
        ZoneInfo(value)
    except (ValueError, ZoneInfoNotFoundError):
        raise ValueError(f"{show(value)} is not an IANA time zone such as Europe/Rome") from None


def _check_clock(value: str) -> None:
    if not _CLOCK.fullmatch(value):
        raise ValueError(f"{show(value)} is not a time of day; write it as 08:30")


def _check_day(value: str) -> None:
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{show(value)} is not a date; write it as 2026-12-24") from None


_CLOCK = re.compile(r"([01]\d|2[0-4]):[0-5]\d")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _check_days(value: str) -> None:
    _weekdays(value)


def _weekdays(spec: str) -> frozenset[int]:
    """ "mon-fri", "mon,wed,fri", "sat-sun" -> weekday numbers (Monday = 0)."""
    days: set[int] = set()
    for part in spec.lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            raise ValueError(f"{show(spec)} is not a list of days; write mon-fri or mon,wed,fri")
        start, end = _DAYS.index(first), _DAYS.index(last or first)
        days.update(range(start, end + 1) if start <= end else [*range(start, 7), *range(end + 1)])
    return frozenset(days)


@dataclass(frozen=True)
class AudienceConfig:
    name: str
    title: str = ""  # how notices greet them ("Accounting team"); "" greets generically
    services: tuple[str, ...] = ()  # the services they depend on; "*" for every one
    hosts: tuple[str, ...] = ()  # machines they use (shell patterns): their problems reach them
    email: tuple[str, ...] = ()
    # Apprise URLs (chat, push, SMS). A URL carrying a token is written { env } or { file }.
    apprise: tuple[str, ...] = field(default=(), repr=False)
    language: str = "en"

    @property
    def audience(self) -> Audience:
        return Audience(self.name, self.services, self.hosts)


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    title: Text = field(default_factory=Text)  # what users call it; the name when empty
    description: Text = field(default_factory=Text)

    def title_in(self, language: str) -> str:
        return self.title.get(language) or self.name


@dataclass(frozen=True)
class NoticesConfig:
    update_every: Duration = field(
        default=Duration(4 * 3600)
    )  # users hear again while it stays open
    ticket_update_every: Duration = field(
        default=Duration(24 * 3600)
    )  # a "still open" ticket comment
    monitor_for: Duration = field(default=Duration(0))  # > 0: "monitoring" before "resolved"
    timezone: str = field(default="UTC", metadata={"check": _check_timezone})  # of times written
    # For audiences that set none, and the status page.
    language: str = field(default="en", metadata={"check": _check_language})
    status_url: str = ""  # the public address of the status page, linked from notices

    @property
    def cadence(self) -> Cadence:
        return Cadence(float(self.update_every), float(self.monitor_for))


@dataclass(frozen=True)
class StatusConfig:
    enabled: bool = True  # served at /status on [daemon] listen
    title: str = "Service status"
    history: Duration = field(
        default=Duration(7 * 86400)
    )  # how far back resolved incidents are listed
    upcoming: Duration = field(default=Duration(14 * 86400))  # how far ahead maintenance is listed


@dataclass(frozen=True)
class CommsConfig:
    audiences: tuple[AudienceConfig, ...] = ()
    services: tuple[ServiceConfig, ...] = ()
    notices: NoticesConfig = field(default_factory=NoticesConfig)
    escalations: tuple[Policy, ...] = ()
    status: StatusConfig = field(default_factory=StatusConfig)

    def service(self, name: str) -> ServiceConfig:
        for service in self.services:
            if service.name == name:
                return service
        return ServiceConfig(name)

    def audience(self, name: str) -> AudienceConfig | None:
        return next((a for a in self.audiences if a.name == name), None)

    def policy(self, name: str) -> Policy | None:
        """The policy a rule names, or the one named "default" for a rule that names none."""
        return next((p for p in self.escalations if p.name == (name or "default")), None)


# --- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _AudienceKeys:
    name: str = field(metadata={"check": check_name})
    title: str = ""
    services: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    email: tuple[str, ...] = field(default=(), metadata={"check": check_addresses})
    language: str = field(default="", metadata={"check": _check_language})


@dataclass(frozen=True)
class _StepKeys:
    notify: tuple[str, ...]
    after: Duration = field(default=Duration(0))
    business_hours_only: bool = False


@dataclass(frozen=True)
class _HoursKeys:
    days: str = field(default="mon-fri", metadata={"check": _check_days})
    start: str = field(default="09:00", metadata={"check": _check_clock})
    end: str = field(default="17:00", metadata={"check": _check_clock})
    timezone: str = field(default="UTC", metadata={"check": _check_timezone})
    holidays: str = ""  # a country (and subdivision) of the `holidays` package: "IT", "US-CA"
    extra_holidays: tuple[str, ...] = field(default=(), metadata={"check": each(_check_day)})


@dataclass(frozen=True)
class _PolicyKeys:
    name: str = field(metadata={"check": check_name})
    repeat: int = 0
    repeat_every: Duration = field(default=Duration(0))
    urgent_gap: Duration = field(default=Duration(300))


@dataclass(frozen=True)
class CommsSources:
    """What the comms sections may refer to, from the rest of the file."""

    services: frozenset[str]  # services the rules name
    smtp: bool  # an [smtp] section exists
    default_language: str = "en"


def parse_comms(data: Mapping[str, Any], known: CommsSources, ctx: Context) -> CommsConfig | None:
    before = len(ctx.errors)
    notices = build(NoticesConfig, _table(data, "notices", ctx), Table("notices", "notices"), ctx)
    status = build(StatusConfig, _table(data, "status", ctx), Table("status", "status"), ctx)
    services = _each_table(data, "service", ctx, _parse_service)
    named = known.services | {s.name for s in services}
    language = notices.language if notices else known.default_language
    audiences = _each_table(data, "audience", ctx, _audience_parser(named, known, language))
    # Named from the tables, so an audience with errors of its own does not also fail the
    # escalation steps that name it.
    names = {str(t.get("name")) for t in _list(data.get("audience")) if isinstance(t, dict)}
    policies = _each_table(data, "escalation", ctx, _policy_parser(names, known.smtp))
    if len(ctx.errors) > before or notices is None or status is None:
        return None
    return CommsConfig(tuple(audiences), tuple(services), notices, tuple(policies), status)


def check_rule_policies(rules: Iterable[Any], comms: CommsConfig, ctx: Context) -> None:
    """A rule naming an [[escalation]] that does not exist."""
    names = {policy.name for policy in comms.escalations}
    for number, rule in enumerate(rules, 1):
        if rule.escalation and rule.escalation not in names:
            where = Table(f"rule[{number}] ({rule.name})", "rule", number)
            ctx.add(where, "escalation", f"no [[escalation]] is named {show(rule.escalation)}")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _table(data: Mapping[str, Any], name: str, ctx: Context) -> Mapping[str, Any]:
    value = data.get(name, {})
    if isinstance(value, dict):
        return value
    ctx.add(Table(""), name, f"expected a [{name}] table, got {show(value)}")
    return {}


def _each_table(
    data: Mapping[str, Any],
    header: str,
    ctx: Context,
    parse: Callable[[dict[str, Any], Table, Context], T | None],
) -> list[T]:
    """Each [[header]] parsed; names must be unique. Only the valid ones are returned."""
    tables = data.get(header, [])
    if not isinstance(tables, list):
        ctx.add(Table(""), header, f"write each {header} as a [[{header}]] table")
        return []
    parsed, seen = [], set()
    for number, table in enumerate(tables, 1):
        where = Table(f"{header}[{number}]", header, number)
        if not isinstance(table, dict):
            ctx.add(where, None, f"expected a table, got {show(table)}")
            continue
        name = table.get("name")
        where = where.named(name)
        if isinstance(name, str) and name in seen:
            ctx.add(where, "name", f"{show(name)} is used by an earlier [[{header}]]")
        seen.add(name)
        item = parse(table, where, ctx)
        if item is not None:
            parsed.append(item)
    return parsed


def _parse_service(table: dict[str, Any], where: Table, ctx: Context) -> ServiceConfig | None:
    return build(ServiceConfig, table, where, ctx)


def _audience_parser(
    services: frozenset[str] | set[str], known: CommsSources, language: str
) -> Callable[[dict[str, Any], Table, Context], AudienceConfig | None]:
    def parse(table: dict[str, Any], where: Table, ctx: Context) -> AudienceConfig | None:
        urls = _apprise_urls(table.get("apprise", []), where, ctx)
        own = {key: value for key, value in table.items() if key != "apprise"}
        keys = build(_AudienceKeys, own, where, ctx, also_known=["apprise"])
        if keys is None or urls is None:
            return None
        audience = AudienceConfig(**_fields(keys), apprise=urls)
        if not _audience_problems(audience, services, known, where, ctx):
            return None
        return dataclasses.replace(audience, language=keys.language or language)

    return parse


def _audience_problems(
    audience: AudienceConfig,
    services: Iterable[str],
    known: CommsSources,
    where: Table,
    ctx: Context,
) -> bool:
    """Report what would make the audience never hear anything; True when it is fine."""
    before = len(ctx.errors)
    if not audience.email and not audience.apprise:
        ctx.add(where, None, "give `email` addresses or `apprise` URLs: how to reach them")
    if audience.email and not known.smtp:
        ctx.add(where, "email", "addresses given but there is no [smtp] section to send through")
    if not audience.services and not audience.hosts:
        ctx.add(where, None, "give the `services` they depend on or the `hosts` they use")
    for number, name in enumerate(audience.services, 1):
        if name != "*" and name not in services:
            ctx.add(
                where,
                "services",
                f"no rule and no [[service]] names {show(name)}; known: {listing(services)}",
                f"[{number}]",
            )
    return len(ctx.errors) == before


def _apprise_urls(value: Any, where: Table, ctx: Context) -> tuple[str, ...] | None:
    """Apprise URLs: plain strings, or { env } / { file } for those that carry a token."""
    if not isinstance(value, list):
        ctx.add(where, "apprise", f"expected a list, got {show(value)}")
        return None
    urls, ok = [], True
    for number, item in enumerate(value, 1):
        try:
            url = item if isinstance(item, str) else resolve_secret(item, ctx.secret_dir)
        except ValueError as exc:
            ctx.add(where, "apprise", str(exc), f"[{number}]")
            ok = False
            continue
        if "://" not in url:
            ctx.add(where, "apprise", "not an Apprise URL (scheme://...)", f"[{number}]")
            ok = False
        urls.append(url)
    return tuple(urls) if ok else None


def _policy_parser(
    audiences: set[str], smtp: bool
) -> Callable[[dict[str, Any], Table, Context], Policy | None]:
    def parse(table: dict[str, Any], where: Table, ctx: Context) -> Policy | None:
        own = {key: value for key, value in table.items() if key not in ("step", "business_hours")}
        keys = build(_PolicyKeys, own, where, ctx, also_known=["step", "business_hours"])
        steps = _steps(table.get("step", []), audiences, smtp, where, ctx)
        hours = _hours(table.get("business_hours"), where, ctx)
        if keys is None or steps is None or isinstance(hours, bool):
            return None
        try:
            return Policy(
                keys.name,
                steps,
                repeat=keys.repeat,
                repeat_every=float(keys.repeat_every),
                hours=hours,
                urgent_gap=float(keys.urgent_gap),
            )
        except ValueError as exc:
            ctx.add(where, None, str(exc))
            return None

    return parse


def _steps(
    tables: Any, audiences: set[str], smtp: bool, where: Table, ctx: Context
) -> tuple[Step, ...] | None:
    if not isinstance(tables, list) or not tables:
        ctx.add(where, "step", "give at least one [[escalation.step]] (after, notify)")
        return None
    steps, ok = [], True
    for number, table in enumerate(tables, 1):
        at = Table(f"{where.label}.step[{number}]", "escalation.step")
        keys = build(_StepKeys, table, at, ctx) if isinstance(table, dict) else None
        if keys is None or not _targets_known(keys.notify, audiences, smtp, at, ctx):
            ok = False
            continue
        steps.append(Step(float(keys.after), keys.notify, keys.business_hours_only))
    return tuple(steps) if ok else None


def _targets_known(
    targets: tuple[str, ...], audiences: set[str], smtp: bool, where: Table, ctx: Context
) -> bool:
    if not targets:
        ctx.add(where, "notify", "name at least one [[audience]] or e-mail address")
        return False
    ok = True
    for number, target in enumerate(targets, 1):
        if target not in audiences and "@" in target and not smtp:
            ctx.add(where, "notify", "an address, but there is no [smtp] section", f"[{number}]")
            ok = False
        elif target not in audiences and "@" not in target:
            ctx.add(
                where,
                "notify",
                f"{show(target)} is neither an [[audience]] nor an e-mail address;"
                f" audiences: {listing(audiences)}",
                f"[{number}]",
            )
            ok = False
    return ok


def _hours(table: Any, where: Table, ctx: Context) -> BusinessHours | bool | None:
    """The policy's business hours; None when not given, False when not valid (never True)."""
    if table is None:
        return None
    at = Table(f"{where.label}.business_hours", "escalation.business_hours")
    keys = build(_HoursKeys, table, at, ctx) if isinstance(table, dict) else None
    if keys is None:
        return False
    calendar = _calendar(keys, at, ctx)
    if calendar is None:
        return False
    return BusinessHours(
        weekdays=_weekdays(keys.days),
        start=time.fromisoformat(keys.start),
        end=time.max if keys.end == "24:00" else time.fromisoformat(keys.end),
        timezone=keys.timezone,
        is_holiday=calendar,
    )


def _calendar(keys: _HoursKeys, where: Table, ctx: Context) -> Callable[[date], bool] | None:
    extra = frozenset(date.fromisoformat(day) for day in keys.extra_holidays)
    if not keys.holidays:
        return extra.__contains__
    country, _, subdivision = keys.holidays.partition("-")
    try:
        public = holidays.country_holidays(country.upper(), subdiv=subdivision or None)
    except NotImplementedError:
        ctx.add(where, "holidays", f"{show(keys.holidays)} is not a country the calendar knows")
        return None
    return lambda day: day in extra or day in public


def _fields(keys: Any) -> dict[str, Any]:
    return {f.name: getattr(keys, f.name) for f in dataclasses.fields(keys)}
