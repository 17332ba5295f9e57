"""Loading config.toml, once, into frozen dataclasses, with every error reported at once.

Each error reads `path: message (line N)`, e.g.
`rule[2] (disk_full).for: "5 minutes" is not a duration; use 30s, 5m, 4h or 1d (line 41)`.
Each section is validated by the annotated fields of a dataclass, with the same code
(`monitor.schema`) that checks each probe kind's `Options`; this module holds the sections,
the checks between them, and the checks of the values only the config has.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

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
    known,
    listing,
    one_of,
    report_unknown,
    secret_dir,
    show,
)
from monitor.schema import build_options as build_options  # re-exported: part of this module's API
from notifiers import TICKET_BACKENDS
from probes import REGISTRY
from probes.base import Duration
from rules.condition import Condition
from rules.model import Rule, Severity

log = logging.getLogger(__name__)

DEFAULT_SOURCE = "<built-in default config>"
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_METRIC = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_TEMPLATES = ImmutableSandboxedEnvironment()
_WATCHDOG_GRACE = 1.0  # seconds the scheduler waits beyond a probe's own timeout


class ConfigError(Exception):
    """The config is not valid. `errors` holds every problem found, each `path: message`."""

    def __init__(self, errors: list[str], source: str = "config") -> None:
        self.errors = list(errors)
        self.source = source
        count = f"{len(errors)} error" + ("" if len(errors) == 1 else "s")
        super().__init__(f"{source} is not valid ({count}):\n  " + "\n  ".join(errors))


# --- checks of the values only the config has ----------------------------------------------------


def _check_name(value: str) -> None:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{show(value)} is not a valid name; use letters, digits, _ . and -")


def _check_metric(value: str) -> None:
    if not _METRIC.fullmatch(value):
        raise ValueError(f"{show(value)} is not a metric name; use letters, digits and _")


def _check_template(source: str) -> None:
    try:
        _TEMPLATES.parse(source)
    except TemplateSyntaxError as exc:
        message = f"not a valid template: {exc.message} (template line {exc.lineno})"
        raise ValueError(message) from None


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

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """(host, port) to serve /metrics on, None when disabled."""
        return _listen_address(self.listen)


@dataclass(frozen=True)
class HelpdeskConfig:
    kind: str = field(default="builtin", metadata={"check": known("kind", TICKET_BACKENDS)})
    contact: str = ""  # how users reach the help desk, shown in notices
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
class Config:
    daemon: DaemonConfig
    helpdesk: HelpdeskConfig
    smtp: SmtpConfig | None
    notify: NotifyConfig
    probes: tuple[ProbeConfig, ...]
    rules: tuple[Rule, ...]
    source: str


@dataclass(frozen=True)
class _ProbeKeys:
    """The keys every [[probe]] has; the rest belong to its kind's Options."""

    name: str = field(metadata={"check": _check_name})
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
    probe: str | None = None
    summary: str = field(default="", metadata={"check": _check_template})
    description: str = ""  # plain text: shown as written, not rendered
    runbook: str = ""
    service: str = ""
    category: str = ""
    notify_users: bool = False

    def to_rule(self) -> Rule:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["for_seconds"] = float(values.pop("for_"))
        return Rule(**values)


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
    where = Table("helpdesk", "helpdesk")
    helpdesk, options, ok = build_kind(HelpdeskConfig, table, TICKET_BACKENDS, where, ctx)
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


def _parse_rules(tables: list[Any], probe_names: set[str], ctx: Context) -> list[Rule | None]:
    names: dict[str, str] = {}
    parsed: list[Rule | None] = []
    for number, table in enumerate(tables, 1):
        where = Table(f"rule[{number}]", "rule", number)
        if not _is_table(table, where, ctx):
            parsed.append(None)
            continue
        _check_unique(table.get("name"), where, names, ctx)
        parsed.append(_parse_rule(table, where.named(table.get("name")), probe_names, ctx))
    return parsed


def _parse_rule(
    table: dict[str, Any], where: Table, probe_names: set[str], ctx: Context
) -> Rule | None:
    keys = build(_RuleKeys, table, where, ctx)
    if keys is None:
        return None
    if keys.probe is not None and keys.probe not in probe_names:
        named = f"(probes: {listing(probe_names)})"
        ctx.add(where, "probe", f"no [[probe]] is named {show(keys.probe)} {named}")
        return None
    return keys.to_rule()


def _probe_names(tables: list[Any]) -> set[str]:
    # From the raw tables, so a probe with some other error does not also fail its rules.
    return {t["name"] for t in tables if isinstance(t, dict) and isinstance(t.get("name"), str)}


# --- the whole file ------------------------------------------------------------------------------

_SECTIONS = ("daemon", "helpdesk", "smtp", "notify", "probe", "rule")


def _parse_document(data: Mapping[str, Any], source: str, ctx: Context) -> Config | None:
    report_unknown(data, _SECTIONS, Table(""), ctx)
    daemon = _parse_daemon(_section(data, "daemon", ctx) or {}, ctx)
    helpdesk = _parse_helpdesk(_section(data, "helpdesk", ctx) or {}, ctx)
    smtp, notify = _parse_delivery(data, ctx)
    probe_tables = _array(data, "probe", ctx)
    probe_list = _parse_probes(probe_tables, ctx)
    rule_list = _parse_rules(_array(data, "rule", ctx), _probe_names(probe_tables), ctx)
    if ctx.errors or daemon is None or helpdesk is None or notify is None:
        return None
    probes_ok, rules_ok = tuple(filter(None, probe_list)), tuple(filter(None, rule_list))
    return Config(daemon, helpdesk, smtp, notify, probes_ok, rules_ok, source)


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
