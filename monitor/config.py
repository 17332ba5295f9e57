"""Loading config.toml, once, into frozen dataclasses, with every error reported at once.

Each error reads `path: message (line N)`, e.g.
`rule[2] (disk_full).for: "5 minutes" is not a duration; use 30s, 5m, 4h or 1d (line 41)`.
Each section is validated by the annotated fields of a dataclass, with the same code
(`monitor.schema`) that checks each probe kind's `Options`; this module holds the sections,
the checks between them, and the checks of the values only the config has.

A `[[route]]` sends the tickets of the alerts its matchers select to a help desk of its own,
built like `[helpdesk]` from the route's other keys; the first route that matches wins.

Every config gets the built-in dead-man rule `probe_stale` (see `PROBE_STALE_RULE`) unless it
defines a rule of that name itself, and `stale_after` says when a probe counts as stale.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import logging
import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import TemplateSyntaxError, nodes
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from monitor.alertmanager import PROBE as ALERTMANAGER_PROBE
from monitor.alertmanager import RULE as ALERTMANAGER_RULE
from monitor.alertmanager import AlertmanagerConfig
from monitor.api_config import ApiConfig
from monitor.comms_config import CommsConfig, CommsSources, check_rule_policies, parse_comms
from monitor.durations import at_least, format_duration
from monitor.schema import (
    Context,
    Locator,
    Table,
    build,
    build_kind,
    check_address,
    check_addresses,
    check_directory,
    check_port,
    config_fields,
    each,
    known,
    listing,
    one_of,
    report_unknown,
    secret_dir,
    show,
)
from monitor.schema import build_options as build_options  # re-exported: part of this module's API
from monitor.schema import (
    check_name as _check_name,
)
from notifiers import TICKET_BACKENDS
from probes import REGISTRY
from probes.base import Duration
from rules.condition import Condition, compile_condition
from rules.model import Rule, Severity, Text
from rules.silences import MaintenanceWindow, Matcher, parse_matcher

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_SOURCE = "<built-in default config>"
DEFAULT_ROUTE_NAME = "default"  # how messages and commands name [helpdesk]: no route may take it
_METRIC = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TEMPLATES = ImmutableSandboxedEnvironment()
_WATCHDOG_GRACE = 1.0  # seconds the scheduler waits beyond a probe's own timeout
TREND_RUNS = 4  # a rule's window spans at least this many runs of its probe
MAX_CHECKS = 1000  # the longest X-within-Y memory, per series
_TREND_VARIABLES = ("eta", "rate", "slope")  # what a condition sees only with a window


class ConfigError(Exception):
    """The config is not valid. `errors` holds every problem found, each `path: message`."""

    def __init__(self, errors: list[str], source: str = "config") -> None:
        self.errors = list(errors)
        self.source = source
        count = f"{len(errors)} error" + ("" if len(errors) == 1 else "s")
        super().__init__(f"{source} is not valid ({count}):\n  " + "\n  ".join(errors))


# --- checks of the values only the config has ----------------------------------------------------


def _check_metric(value: str) -> None:
    if not _METRIC.fullmatch(value):
        raise ValueError(f"{show(value)} is not a metric name; use letters, digits and _")


def _check_template(source: str) -> None:
    try:
        _TEMPLATES.parse(source)
    except TemplateSyntaxError as exc:
        message = f"not a valid template: {exc.message} (template line {exc.lineno})"
        raise ValueError(message) from None


def _check_route_name(value: str) -> None:
    _check_name(value)
    if value == DEFAULT_ROUTE_NAME:
        raise ValueError(f"{show(value)} names the [helpdesk] itself; give the route its own name")


def _check_probe_name(value: str) -> None:
    _check_name(value)
    if value == ALERTMANAGER_PROBE:  # the samples of alerts Alertmanager posts carry it
        raise ValueError(f"{show(value)} is reserved for the alerts Alertmanager posts")


def _check_admin(value: str) -> None:
    """An e-mail address, or the name of an [[audience]] (checked against them later)."""
    if "@" in value:
        check_address(value)
    else:
        _check_name(value)


def _check_admins_known(
    daemon: DaemonConfig | None, comms: CommsConfig | None, smtp: bool, ctx: Context
) -> None:
    """[daemon] admins: each an [[audience]], or an address with an [smtp] to send through."""
    if daemon is None or comms is None:
        return
    where, names = Table("daemon", "daemon"), {a.name for a in comms.audiences}
    for number, admin in enumerate(daemon.admins, 1):
        if "@" in admin and not smtp and admin not in names:
            ctx.add(where, "admins", "an address, but there is no [smtp] section", f"[{number}]")
        elif "@" not in admin and admin not in names:
            neither = f"{show(admin)} is neither an [[audience]] nor an e-mail address"
            ctx.add(where, "admins", f"{neither}; audiences: {listing(names)}", f"[{number}]")


def _check_some_matchers(values: tuple[Matcher, ...]) -> None:
    if not values:
        raise ValueError("give at least one matcher, e.g. ['service=\"payroll\"']")


def _check_label_names(values: tuple[str, ...]) -> None:
    for value in values:
        if not _LABEL.fullmatch(value):
            raise ValueError(f"{show(value)} is not a label name; use letters, digits and _")
    _check_no_repeats(values)


def _check_rule_names(values: tuple[str, ...]) -> None:
    for value in values:
        _check_name(value)
    _check_no_repeats(values)


def _check_no_repeats(values: tuple[str, ...]) -> None:
    repeated = [value for number, value in enumerate(values) if value in values[:number]]
    if repeated:
        raise ValueError(f"{show(repeated[0])} is listed twice")


def _check_level(value: float) -> None:
    if not math.isfinite(value):  # TOML has inf and nan
        raise ValueError(f"{value} is not a level; write a finite number")


def _between(low: int, high: int) -> Callable[[int], None]:
    def check(value: int) -> None:
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range; use {low} to {high}")

    return check


def _listen_address(value: str) -> tuple[str, int] | None:
    """(host, port) of a `listen` value, None for "" (off)."""
    if not value:
        return None
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:9877
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f'{show(value)} is not host:port; use e.g. 127.0.0.1:9877, or "" for off')
    return host, int(port)


# --- the configuration ---------------------------------------------------------------------------


def default_state_dir() -> str:
    """systemd's StateDirectory=, else the system path for root, else the user's XDG state dir."""
    systemd = os.environ.get("STATE_DIRECTORY", "")
    if systemd:
        return systemd.split(":")[0]
    if os.geteuid() == 0:
        return "/var/lib/forewarn"
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(xdg) / "forewarn")


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: str = field(default_factory=default_state_dir)
    listen: str = field(default="127.0.0.1:9877", metadata={"check": _listen_address})
    log_level: str = field(
        default="info", metadata={"check": one_of("debug", "info", "warning", "error")}
    )
    reopen_within: Duration = field(default=Duration(86_400))
    hostname: str = field(default_factory=socket.gethostname)
    templates_dir: str = field(default="", metadata={"check": check_directory})
    # Self-monitoring (monitor.selfmon): who hears of forewarn's own trouble, directly, and
    # how long an undelivered ticket or message may wait before that is trouble.
    admins: tuple[str, ...] = field(default=(), metadata={"check": each(_check_admin)})
    outbox_age_limit: Duration = field(default=Duration(900), metadata={"check": at_least(1.0)})

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """(host, port) to serve /metrics on, None when disabled."""
        return _listen_address(self.listen)


@dataclass(frozen=True)
class HelpdeskConfig:
    kind: str = field(default="builtin", metadata={"check": known("kind", TICKET_BACKENDS)})
    contact: str = ""  # how users reach the help desk, shown in notices
    # How often the tickets of open incidents are read back (taken, rejected, resolved).
    sync_interval: Duration = field(default=Duration(60), metadata={"check": at_least(1.0)})
    # The backend's own Options (its keys sit in [helpdesk] too), when its class declares them.
    options: Any = field(default=None, metadata={"config": False})


@dataclass(frozen=True, kw_only=True)
class SmtpConfig:
    """Field for field the arguments of `notifiers.email.SmtpSettings`."""

    host: str = "localhost"
    port: int = field(default=25, metadata={"check": check_port})  # 465 for ssl by default
    security: str = field(default="none", metadata={"check": one_of("none", "starttls", "ssl")})
    username: str | None = None
    password: str | None = field(default=None, repr=False, metadata={"secret": True})
    sender: str = field(metadata={"key": "from", "check": check_address})
    timeout: Duration = field(default=Duration(10), metadata={"check": at_least(0.001)})
    verify_tls: bool = True


@dataclass(frozen=True)
class NotifyConfig:
    helpdesk: tuple[str, ...] = field(default=(), metadata={"check": check_addresses})
    users: tuple[str, ...] = field(default=(), metadata={"check": check_addresses})


@dataclass(frozen=True)
class ProbeConfig:
    name: str
    kind: str
    interval: float
    timeout: float
    jitter: float
    options: Any  # an instance of probes.REGISTRY[kind].Options


@dataclass(frozen=True)
class RouteConfig:
    """The tickets of the alerts all `matchers` select go to `helpdesk` instead of [helpdesk].

    The matchers see the alert's labels plus `rule`, `service` and `category`.
    """

    name: str
    matchers: tuple[Matcher, ...]
    helpdesk: HelpdeskConfig


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig
    helpdesk: HelpdeskConfig
    smtp: SmtpConfig | None
    notify: NotifyConfig
    probes: tuple[ProbeConfig, ...]
    rules: tuple[Rule, ...]
    source: str
    maintenance: tuple[MaintenanceWindow, ...] = ()
    routes: tuple[RouteConfig, ...] = ()  # in file order: the first that matches wins
    comms: CommsConfig = field(default_factory=CommsConfig)  # audiences, escalation, status
    alertmanager: AlertmanagerConfig = field(default_factory=AlertmanagerConfig)
    api: ApiConfig = field(default_factory=ApiConfig)  # the HTTP API's token and limits


def stale_after(probe: ProbeConfig) -> float:
    """Seconds without a result after which `probe` counts as stale: three missed runs.

    Three intervals, plus the timeout of the run that may be under way at the end of them.
    """
    return 3 * probe.interval + probe.timeout


PROBE_STALE = "probe_stale"
# The dead-man rule: the daemon samples `probe_stale{probe,kind}`, 1 once a probe has not
# reported for `stale_after`. A config overrides it with a rule of the same name.
PROBE_STALE_RULE = Rule(
    name=PROBE_STALE,
    metric=PROBE_STALE,
    condition=compile_condition("value == 1"),
    severity=Severity.WARNING,
    summary="Probe {{ labels.probe }} stopped reporting",
    description=(
        "forewarn got no result from this probe for longer than three of its intervals: the "
        "scheduler or the probe itself is stuck. So its other alerts cannot be trusted: a "
        "problem it would show goes unnoticed until it reports again. The daemon's log "
        "(journalctl -u forewarn) says what the probe was doing."
    ),
    category="monitoring",
)


DELIVERY_FAILED = "delivery_failed"
DELIVERY_FAILED_RULE = Rule(
    name=DELIVERY_FAILED,
    metric="outbox_dead_recent",
    condition=compile_condition("value > 0"),
    severity=Severity.WARNING,
    summary="{{ value | int }} deliveries to the help desk or mail server failed for good",
    description=(
        "In the last 24 hours forewarn gave up on some tickets, comments or e-mails because "
        "the help desk or the mail server refused them (a 4xx answer: a wrong token, a missing "
        "queue, a rejected address). They will not be retried. `forewarn incidents show ID` "
        "lists the failed deliveries with the reason (delivery_failed events); fix the "
        "configuration and restart."
    ),
    category="monitoring",
)
# `alertmanager`: the alerts Alertmanager posts to the API (see monitor.alertmanager).
BUILTIN_RULES = (PROBE_STALE_RULE, DELIVERY_FAILED_RULE, ALERTMANAGER_RULE)


def _with_builtin_rules(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    """The built-in self-monitoring rules, unless the config defines rules of their names."""
    names = {rule.name for rule in rules}
    return (*rules, *(rule for rule in BUILTIN_RULES if rule.name not in names))


@dataclass(frozen=True)
class _ProbeKeys:
    """The keys every [[probe]] has; the rest belong to its kind's Options."""

    name: str = field(metadata={"check": _check_probe_name})
    kind: str = field(metadata={"check": known("kind", REGISTRY)})
    interval: Duration = field(default=Duration(30), metadata={"check": at_least(1.0)})
    timeout: Duration | None = field(default=None, metadata={"check": at_least(0.001)})
    jitter: Duration | None = None


@dataclass(frozen=True)
class _RuleKeys:
    name: str = field(metadata={"check": _check_name})
    metric: str = field(metadata={"check": _check_metric})
    condition: Condition
    for_: Duration = field(default=Duration(0), metadata={"key": "for"})
    clear: Condition | None = None
    critical: Condition | None = None
    severity: Severity = Severity.WARNING
    priority: str = field(default="", metadata={"check": one_of("high", "medium", "low")})
    probe: str | None = None
    summary: str = field(default="", metadata={"check": _check_template})
    description: str = ""  # plain text: shown as written, not rendered
    runbook: str = ""
    service: str = ""
    category: str = ""
    notify_users: bool = False
    keep_firing_for: Duration = field(default=Duration(0))
    window: Duration | None = field(default=None, metadata={"check": at_least(1.0)})
    predict: float | None = field(default=None, metadata={"check": _check_level})
    predict_falling: bool = False
    times: int | None = field(default=None, metadata={"check": _between(1, MAX_CHECKS)})
    checks: int | None = field(default=None, metadata={"check": _between(1, MAX_CHECKS)})
    flap_detection: bool = True
    depends_on: tuple[str, ...] = field(default=(), metadata={"check": _check_rule_names})
    depends_match: tuple[str, ...] = field(default=(), metadata={"check": _check_label_names})
    group_by: tuple[str, ...] | None = field(default=None, metadata={"check": _check_label_names})
    group_wait: Duration = field(default=Duration(0))
    user_impact: Text = field(default_factory=Text)
    still_works: Text = field(default_factory=Text)
    workaround: Text = field(default_factory=Text)
    help_url: str = ""
    escalation: str = ""

    def to_rule(self) -> Rule:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["for_seconds"] = float(values.pop("for_"))
        values["keep_firing_for"] = float(self.keep_firing_for)
        values["group_wait"] = float(self.group_wait)
        # Rule says "none" with 0 where the keys tell "not given" (None) from a value.
        values.update(window=float(self.window or 0), times=self.times or 0)
        values.update(checks=self.checks or 0)
        return Rule(**values)


@dataclass(frozen=True)
class _Known:
    """What a rule may refer to, from the raw tables (so that a probe or rule with errors of
    its own does not also fail the rules that name it), and the intervals of parsed probes."""

    probes: set[str]
    rules: set[str]
    intervals: dict[str, float]


def _window_check(key: str) -> Callable[[Any], None]:
    """Check one key of a [[maintenance]] with MaintenanceWindow's own validation, so that its
    error lands on that key: the other arguments are ones it accepts."""
    valid = {"name": "-", "cron": "0 0 * * *", "duration": 1.0}
    valid["matchers"] = (parse_matcher('rule=~".+"'),)

    def check(value: Any) -> None:
        try:
            MaintenanceWindow(**{**valid, key: value})
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("maintenance window -: ")) from None

    return check


@dataclass(frozen=True)
class _MaintenanceKeys:
    name: str = field(metadata={"check": _check_name})
    cron: str = field(metadata={"check": _window_check("cron")})
    duration: Duration = field(metadata={"check": at_least(1.0)})
    matchers: tuple[Matcher, ...] = field(metadata={"check": _window_check("matchers")})
    comment: str = ""
    timezone: str = field(default="UTC", metadata={"check": _window_check("timezone")})
    services: tuple[str, ...] = ()
    title: str = ""
    description: str = ""
    announce_before: Duration = field(default=Duration(0))

    def to_window(self) -> MaintenanceWindow:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        seconds = {"duration": float(self.duration), "announce_before": float(self.announce_before)}
        return MaintenanceWindow(**values | seconds)


@dataclass(frozen=True)
class _RouteKeys:
    """The keys a [[route]] has beyond those of a [helpdesk]."""

    name: str = field(metadata={"check": _check_route_name})
    matchers: tuple[Matcher, ...] = field(metadata={"check": _check_some_matchers})


# --- sections ------------------------------------------------------------------------------------


def _section(data: Mapping[str, Any], name: str, ctx: Context) -> dict[str, Any] | None:
    """The [name] table, None when absent, {} (after reporting) when it is not a table."""
    value = data.get(name)
    if value is None or isinstance(value, dict):
        return value
    ctx.add(Table(""), name, f"expected a [{name}] table, got {show(value)}")
    return {}


def _array(data: Mapping[str, Any], name: str, ctx: Context) -> list[Any]:
    value = data.get(name, [])
    if not isinstance(value, list):
        ctx.add(Table(""), name, f"write each {name} as a [[{name}]] table")
        return []
    return value


def _parse_daemon(table: Mapping[str, Any], ctx: Context) -> DaemonConfig | None:
    daemon = build(DaemonConfig, table, Table("daemon", "daemon"), ctx)
    if daemon is None:
        return None
    # "" means "the default": both depend on where the daemon runs.
    return dataclasses.replace(
        daemon,
        state_dir=daemon.state_dir or default_state_dir(),
        hostname=daemon.hostname or socket.gethostname(),
    )


def _parse_helpdesk(table: Mapping[str, Any], ctx: Context) -> HelpdeskConfig | None:
    return _build_helpdesk(table, Table("helpdesk", "helpdesk"), ctx)


def _build_helpdesk(
    table: Mapping[str, Any], where: Table, ctx: Context, also_known: Iterable[str] = ()
) -> HelpdeskConfig | None:
    """[helpdesk], or the help desk of a [[route]], whose own keys (`also_known`) are not here."""
    helpdesk, options, ok = build_kind(
        HelpdeskConfig, table, TICKET_BACKENDS, where, ctx, also_known
    )
    return dataclasses.replace(helpdesk, options=options) if helpdesk is not None and ok else None


def _parse_smtp(table: Mapping[str, Any], ctx: Context) -> SmtpConfig | None:
    where = Table("smtp", "smtp")
    smtp = build(SmtpConfig, table, where, ctx)
    if smtp is None:
        return None
    if smtp.security == "ssl" and "port" not in table:
        smtp = dataclasses.replace(smtp, port=465)
    if bool(smtp.username) != bool(smtp.password):
        missing = "password" if smtp.username else "username"
        ctx.add(where, missing, "username and password go together; give both or neither")
    return dataclasses.replace(smtp, username=smtp.username or None)


# --- probes and rules ----------------------------------------------------------------------------


def _parse_probes(tables: list[Any], ctx: Context) -> list[ProbeConfig | None]:
    names: dict[str, str] = {}
    parsed = []
    for number, table in enumerate(tables, 1):
        where = Table(f"probe[{number}]", "probe", number)
        parsed.append(_parse_probe(table, where, ctx) if _is_table(table, where, ctx) else None)
        if isinstance(table, dict):
            _check_unique(table.get("name"), where, names, ctx)
    return parsed


def _is_table(value: Any, where: Table, ctx: Context) -> bool:
    if not isinstance(value, dict):
        ctx.add(where, None, f"expected a table, got {show(value)}")
    return isinstance(value, dict)


def _check_unique(name: Any, where: Table, seen: dict[str, str], ctx: Context) -> None:
    if not isinstance(name, str):
        return
    if name in seen:
        ctx.add(where.named(name), "name", f"duplicate name {show(name)} (also {seen[name]})")
    else:
        seen[name] = where.label


def _parse_probe(table: dict[str, Any], where: Table, ctx: Context) -> ProbeConfig | None:
    where = where.named(table.get("name"))
    keys, options, ok = build_kind(_ProbeKeys, table, REGISTRY, where, ctx)
    timing = _probe_timing(keys, options, where, ctx) if keys else None
    if keys is None or timing is None or not ok:
        return None
    return ProbeConfig(keys.name, keys.kind, *timing, options)


def _probe_timing(
    keys: _ProbeKeys, options: Any, where: Table, ctx: Context
) -> tuple[float, float, float] | None:
    interval = float(keys.interval)
    jitter = min(1.0, interval / 10) if keys.jitter is None else float(keys.jitter)
    before = len(ctx.errors)
    # A run that outlasts the interval would overlap the next one.
    every = f"the interval ({format_duration(interval)})"
    if keys.timeout is not None and keys.timeout > interval:
        ctx.add(where, "timeout", f"{format_duration(keys.timeout)} is longer than {every}")
    if jitter >= interval:
        ctx.add(where, "jitter", f"{format_duration(jitter)} must be shorter than {every}")
    timing = (interval, _run_timeout(keys.timeout, options, interval), jitter)
    return timing if len(ctx.errors) == before else None


def _run_timeout(written: float | None, options: Any, interval: float) -> float:
    """How long the scheduler waits for one run before it declares the probe hung."""
    own = getattr(options, "timeout", None)
    if isinstance(own, float):
        # The kind bounds each run itself (it got the same `timeout` key) and says what timed
        # out; the scheduler waits a little longer so that this sample wins over "hung".
        return min(interval, own + _WATCHDOG_GRACE)
    return min(10.0, interval) if written is None else float(written)


def _parse_rules(tables: list[Any], known: _Known, ctx: Context) -> list[Rule | None]:
    names: dict[str, str] = {}
    parsed: list[tuple[Table, Rule | None]] = []
    for number, table in enumerate(tables, 1):
        where = Table(f"rule[{number}]", "rule", number)
        if not _is_table(table, where, ctx):
            parsed.append((where, None))
            continue
        _check_unique(table.get("name"), where, names, ctx)
        where = where.named(table.get("name"))
        parsed.append((where, _parse_rule(table, where, known, ctx)))
    _check_cycles(parsed, ctx)
    return [rule for _, rule in parsed]


def _parse_rule(table: dict[str, Any], where: Table, known: _Known, ctx: Context) -> Rule | None:
    keys = build(_RuleKeys, table, where, ctx)
    if keys is None:
        return None
    problems = list(_rule_problems(keys, known))
    for key, message in problems:
        ctx.add(where, key, message)
    return None if problems else keys.to_rule()


def _names(tables: list[Any]) -> set[str]:
    return {t["name"] for t in tables if isinstance(t, dict) and isinstance(t.get("name"), str)}


# Each check yields (key, message) for what a rule's keys say together.
_Problems = Iterator[tuple[str, str]]


def _rule_problems(keys: _RuleKeys, known: _Known) -> _Problems:
    if keys.probe is not None and keys.probe not in known.probes:
        named = f"(probes: {listing(known.probes)})"
        yield "probe", f"no [[probe]] is named {show(keys.probe)} {named}"
    yield from _trend_problems(keys, known)
    yield from _variable_problems(keys)
    yield from _count_problems(keys)
    yield from _dependency_problems(keys, known)
    if keys.group_wait > 0 and keys.group_by is None:
        yield "group_wait", "only means something with group_by (the labels alerts share)"


def _trend_problems(keys: _RuleKeys, known: _Known) -> _Problems:
    if keys.predict is not None and keys.window is None:
        yield "predict", 'needs a window, the history the trend is fitted over: e.g. window = "6h"'
    if keys.predict_falling and keys.predict is None:
        yield "predict_falling", "only means something with predict (the level to fall to)"
    interval = known.intervals.get(keys.probe or "")
    if keys.window is None or interval is None or keys.window >= TREND_RUNS * interval:
        return
    runs, shortest = format_duration(interval), format_duration(TREND_RUNS * interval)
    message = (
        f"{format_duration(keys.window)} is too short for probe {show(keys.probe)}, which runs "
        f"every {runs}; use at least {shortest} ({TREND_RUNS} runs), so that a trend has points"
    )
    yield "window", message


def _variable_problems(keys: _RuleKeys) -> _Problems:
    # Without a window, `eta`, `rate` and `slope` are never known: the condition could never hold.
    for role in ("condition", "clear", "critical"):
        condition = getattr(keys, role)
        used = _variables(condition.source) if condition is not None else set()
        trend = [name for name in _TREND_VARIABLES if name in used]
        if trend and keys.window is None:
            yield role, f'uses {trend[0]}, which needs a window of history: e.g. window = "1h"'
        elif "eta" in used and keys.predict is None:
            yield role, "uses eta, the time until the trend reaches predict; there is no predict"


def _variables(expression: str) -> set[str]:
    """The names an expression reads; it compiled already, so it parses."""
    parsed = Parser(_TEMPLATES, expression, state="variable").parse_expression()
    return {name.name for name in parsed.find_all(nodes.Name) if name.ctx == "load"}


def _count_problems(keys: _RuleKeys) -> _Problems:
    if (keys.times is None) != (keys.checks is None):
        missing = "checks" if keys.checks is None else "times"
        meaning = "the condition held `times` times in the last `checks` checks"
        yield missing, f"times and checks go together ({meaning}); give both or neither"
    elif keys.times is not None and keys.checks is not None and keys.times > keys.checks:
        yield "times", f"{keys.times} is more than checks ({keys.checks})"


def _dependency_problems(keys: _RuleKeys, known: _Known) -> _Problems:
    for target in keys.depends_on:
        if target == keys.name:
            yield "depends_on", "a rule cannot depend on itself"
        elif target not in known.rules:
            close = difflib.get_close_matches(target, sorted(known.rules), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            yield "depends_on", f"no [[rule]] is named {show(target)}{hint}"
    if keys.depends_match and not keys.depends_on:
        yield "depends_match", "only means something with depends_on (the rules it depends on)"


def _check_cycles(parsed: list[tuple[Table, Rule | None]], ctx: Context) -> None:
    """Report each dependency cycle once, at its rule that comes first in the file."""
    where: dict[str, Table] = {}
    graph: dict[str, tuple[str, ...]] = {}
    for table, rule in parsed:
        if rule is not None and rule.name not in graph:
            where[rule.name], graph[rule.name] = table, rule.depends_on
    position = {name: number for number, name in enumerate(graph)}
    for cycle in _cycles(graph):
        first = min(range(len(cycle)), key=lambda index: position[cycle[index]])
        path = " -> ".join([*cycle[first:], *cycle[:first], cycle[first]])
        ctx.add(where[cycle[first]], "depends_on", f"dependency cycle {path}")


def _cycles(graph: Mapping[str, tuple[str, ...]]) -> list[list[str]]:
    """The cycles a depth-first walk meets (at least one in each tangle), without self-loops."""
    cycles: list[list[str]] = []
    done: set[str] = set()
    for start in graph:
        if start not in done:
            _walk(graph, start, done, cycles)
    return cycles


def _walk(
    graph: Mapping[str, tuple[str, ...]], start: str, done: set[str], cycles: list[list[str]]
) -> None:
    # Iterative, so that a long chain of dependencies cannot exhaust the stack.
    path, on_path, pending = [start], {start}, [iter(graph[start])]
    while pending:
        target = next(pending[-1], None)
        if target is None:
            done.add(path[-1])
            on_path.discard(path.pop())
            pending.pop()
        elif target in on_path and target != path[-1]:  # a self-loop is reported on its own
            cycles.append(path[path.index(target) :])
        elif target in graph and target not in done and target not in on_path:
            path.append(target)
            on_path.add(target)
            pending.append(iter(graph[target]))


# --- maintenance windows and routes --------------------------------------------------------------


def _parse_named(
    tables: list[Any],
    header: str,
    parse: Callable[[dict[str, Any], Table, Context], T | None],
    ctx: Context,
) -> list[T | None]:
    """Each [[header]] table by `parse`, after checking that its name is unique."""
    names: dict[str, str] = {}
    parsed: list[T | None] = []
    for number, table in enumerate(tables, 1):
        where = Table(f"{header}[{number}]", header, number)
        if not _is_table(table, where, ctx):
            parsed.append(None)
            continue
        _check_unique(table.get("name"), where, names, ctx)
        parsed.append(parse(table, where.named(table.get("name")), ctx))
    return parsed


def _parse_window(table: dict[str, Any], where: Table, ctx: Context) -> MaintenanceWindow | None:
    keys = build(_MaintenanceKeys, table, where, ctx)
    if keys is None:
        return None
    try:
        return keys.to_window()
    except ValueError as exc:  # each key passed on its own: only a combination can fail here
        ctx.add(where, None, str(exc))
        return None


def _parse_route(table: dict[str, Any], where: Table, ctx: Context) -> RouteConfig | None:
    own = set(config_fields(_RouteKeys))
    keys = build(_RouteKeys, {key: table[key] for key in own & set(table)}, where, ctx)
    rest = {key: value for key, value in table.items() if key not in own}
    helpdesk = _build_helpdesk(rest, where, ctx, also_known=own)
    if keys is None or helpdesk is None:
        return None
    return RouteConfig(keys.name, keys.matchers, helpdesk)


# --- the whole file ------------------------------------------------------------------------------

_SECTIONS = (
    *("daemon", "helpdesk", "route", "smtp", "notify", "probe", "rule", "maintenance"),
    *("audience", "service", "notices", "escalation", "status"),
    "alertmanager",
    "api",
)


def _parse_document(data: Mapping[str, Any], source: str, ctx: Context) -> Config | None:
    report_unknown(data, _SECTIONS, Table(""), ctx)
    daemon = _parse_daemon(_section(data, "daemon", ctx) or {}, ctx)
    helpdesk = _parse_helpdesk(_section(data, "helpdesk", ctx) or {}, ctx)
    routes = _parse_named(_array(data, "route", ctx), "route", _parse_route, ctx)
    smtp, notify = _parse_delivery(data, ctx)
    probes, rules = _parse_probes_and_rules(data, ctx)
    maintenance = _parse_named(_array(data, "maintenance", ctx), "maintenance", _parse_window, ctx)
    sources = CommsSources(
        services=frozenset(rule.service for rule in rules if rule.service),
        smtp="smtp" in data,
    )
    comms = parse_comms(data, sources, ctx)
    if comms is not None:
        check_rule_policies(rules, comms, ctx)
    _check_admins_known(daemon, comms, "smtp" in data, ctx)
    where = Table("alertmanager", "alertmanager")
    alertmanager = build(AlertmanagerConfig, _section(data, "alertmanager", ctx) or {}, where, ctx)
    api = build(ApiConfig, _section(data, "api", ctx) or {}, Table("api", "api"), ctx)
    if ctx.errors or daemon is None or helpdesk is None or notify is None or comms is None:
        return None
    rules = _with_builtin_rules(rules)
    windows, own_routes = tuple(filter(None, maintenance)), tuple(filter(None, routes))
    return dataclasses.replace(
        Config(daemon, helpdesk, smtp, notify, probes, rules, source, windows, own_routes, comms),
        alertmanager=alertmanager or AlertmanagerConfig(),
        api=api or ApiConfig(),
    )


def _parse_probes_and_rules(
    data: Mapping[str, Any], ctx: Context
) -> tuple[tuple[ProbeConfig, ...], tuple[Rule, ...]]:
    probe_tables, rule_tables = _array(data, "probe", ctx), _array(data, "rule", ctx)
    probes = tuple(filter(None, _parse_probes(probe_tables, ctx)))
    known = _Known(
        probes=_names(probe_tables) | {ALERTMANAGER_PROBE},
        rules=_names(rule_tables) | {rule.name for rule in BUILTIN_RULES},
        intervals={probe.name: probe.interval for probe in probes},
    )
    return probes, tuple(filter(None, _parse_rules(rule_tables, known, ctx)))


def _parse_delivery(
    data: Mapping[str, Any], ctx: Context
) -> tuple[SmtpConfig | None, NotifyConfig | None]:
    smtp_table = _section(data, "smtp", ctx)
    smtp = None if smtp_table is None else _parse_smtp(smtp_table, ctx)
    where = Table("notify", "notify")
    notify = build(NotifyConfig, _section(data, "notify", ctx) or {}, where, ctx)
    if notify is not None and smtp_table is None:
        # Without [smtp] these addresses would silently never get a message.
        for key in ("helpdesk", "users"):
            if getattr(notify, key):
                ctx.add(
                    where, key, "addresses given but there is no [smtp] section to send through"
                )
    return smtp, notify


def parse_config(text: str, source: str) -> Config:
    """Validate `text` (read from `source`, which locates relative secret files) into a Config.

    Raises ConfigError listing every problem.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"invalid TOML: {exc}"], source) from None
    ctx = Context([], Locator(text), secret_dir(source))
    config = _parse_document(data, source, ctx)
    if config is None:
        raise ConfigError(ctx.errors, source)
    log.debug("loaded %s: %d probes, %d rules", source, len(config.probes), len(config.rules))
    return config


def load_config(path: str | None) -> Config:
    """Load and validate the file at `path`; None loads the built-in default config."""
    if path is None:
        default = importlib.resources.files("monitor").joinpath("default.toml")
        return parse_config(default.read_text(encoding="utf-8"), DEFAULT_SOURCE)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror}"], path) from None
    except UnicodeDecodeError:
        raise ConfigError(["cannot read the file: not UTF-8 text"], path) from None
    return parse_config(text, path)
