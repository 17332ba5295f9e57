"""Loading config.toml, once, into frozen dataclasses, with every error reported at once.

Each error reads `path: message (line N)`, e.g.
`rule[2] (disk_full).for: "5 minutes" is not a duration; use 30s, 5m, 4h or 1d (line 41)`.
Unknown keys are errors at every level, nothing falls back silently to a default, and secrets
are never written in the file: they come from `{ env = "NAME" }` or `{ file = "path" }`.

A table is validated by the annotated fields of a dataclass (`build_options`): the same code
checks the daemon's own sections and each probe kind's `Options`. Field metadata tunes it:
`key` (the config name when it differs from the field's), `check` (a callable raising
ValueError), `secret` (resolve `{ env }` / `{ file }`), `config=False` (not read from the file).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import importlib.resources
import json
import logging
import os
import re
import socket
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

import notifiers
import probes
from monitor.durations import DURATION_HINT, format_duration, parse_duration
from probes.base import Duration
from rules.condition import Condition, compile_condition
from rules.model import Rule, Severity

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_SOURCE = "<built-in default config>"
SECRET_HINT = "write secrets as { env = ... } or { file = ... }, never in the file"
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_METRIC = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+")
_TEMPLATES = ImmutableSandboxedEnvironment()
_WATCHDOG_GRACE = 1.0  # seconds the scheduler waits beyond a probe's own timeout


class ConfigError(Exception):
    """The config is not valid. `errors` holds every problem found, each `path: message`."""

    def __init__(self, errors: list[str], source: str = "config") -> None:
        self.errors = list(errors)
        self.source = source
        count = f"{len(errors)} error" + ("" if len(errors) == 1 else "s")
        super().__init__(f"{source} is not valid ({count}):\n  " + "\n  ".join(errors))


# --- checks used in field metadata -------------------------------------------------------------


def _show(value: Any) -> str:
    """A value as the user wrote it in TOML (never called on secrets)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _one_of(*choices: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value not in choices:
            raise ValueError(f"{_show(value)} is not one of {', '.join(choices)}")

    return check


def _at_least(minimum: float) -> Callable[[float | None], None]:
    def check(value: float | None) -> None:
        if value is not None and value < minimum:
            raise ValueError(
                f"{format_duration(value)} is too short; use at least {format_duration(minimum)}"
            )

    return check


def _check_name(value: str) -> None:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{_show(value)} is not a valid name; use letters, digits, _ . and -")


def _check_metric(value: str) -> None:
    if not _METRIC.fullmatch(value):
        raise ValueError(f"{_show(value)} is not a metric name; use letters, digits and _")


def _check_template(source: str) -> None:
    try:
        _TEMPLATES.parse(source)
    except TemplateSyntaxError as exc:
        message = f"not a valid template: {exc.message} (template line {exc.lineno})"
        raise ValueError(message) from None


def _check_address(value: str) -> None:
    if not _ADDRESS.fullmatch(parseaddr(value)[1]):
        raise ValueError(f"{_show(value)} is not an e-mail address")


def _check_addresses(values: tuple[str, ...]) -> None:
    for value in values:
        _check_address(value)


def _split_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:9877
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f'{_show(value)} is not host:port; use e.g. 127.0.0.1:9877, or "" for off')
    return host, int(port)


def _check_port(value: int) -> None:
    if not 0 < value < 65536:
        raise ValueError(f"{value} is not a TCP port")


def _check_listen(value: str) -> None:
    if value:
        _split_listen(value)


def _check_directory(value: str) -> None:
    if value and not Path(value).is_dir():
        raise ValueError(f"{_show(value)} is not a directory")


def _check_probe_kind(kind: str) -> None:
    _check_known("kind", kind, _probe_registry())


def _check_backend_kind(kind: str) -> None:
    _check_known("kind", kind, _ticket_backends())


def _check_known(what: str, value: str, known: Iterable[str]) -> None:
    if value not in known:
        raise ValueError(
            f"unknown {what} {_show(value)}{_did_you_mean(value, known)}; "
            f"known {what}s: {_listing(known)}"
        )


def _did_you_mean(value: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _listing(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "(none)"


def _probe_registry() -> Mapping[str, Any]:
    return probes.REGISTRY


def _ticket_backends() -> Mapping[str, Any]:
    # Until notifiers registers its backends, only the built-in store exists.
    return getattr(notifiers, "TICKET_BACKENDS", None) or {"builtin": None}


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
    listen: str = field(default="127.0.0.1:9877", metadata={"check": _check_listen})
    log_level: str = field(
        default="info", metadata={"check": _one_of("debug", "info", "warning", "error")}
    )
    reopen_within: Duration = field(default=Duration(86_400))
    hostname: str = field(default_factory=socket.gethostname)
    templates_dir: str = field(default="", metadata={"check": _check_directory})

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """(host, port) to serve /metrics on, None when disabled."""
        return _split_listen(self.listen) if self.listen else None


@dataclass(frozen=True)
class HelpdeskConfig:
    kind: str = field(default="builtin", metadata={"check": _check_backend_kind})
    contact: str = ""  # how users reach the help desk, shown in notices
    # The backend's own Options (its keys sit in [helpdesk] too), when its class declares them.
    options: Any = field(default=None, metadata={"config": False})


@dataclass(frozen=True, kw_only=True)
class SmtpConfig:
    """Field for field the arguments of `notifiers.email.SmtpSettings`."""

    host: str = "localhost"
    port: int = field(default=25, metadata={"check": _check_port})  # 465 for ssl by default
    security: str = field(default="none", metadata={"check": _one_of("none", "starttls", "ssl")})
    username: str | None = None
    password: str | None = field(default=None, repr=False, metadata={"secret": True})
    sender: str = field(metadata={"key": "from", "check": _check_address})
    timeout: Duration = field(default=Duration(10), metadata={"check": _at_least(0.001)})
    verify_tls: bool = True


@dataclass(frozen=True)
class NotifyConfig:
    helpdesk: tuple[str, ...] = field(default=(), metadata={"check": _check_addresses})
    users: tuple[str, ...] = field(default=(), metadata={"check": _check_addresses})


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
    kind: str = field(metadata={"check": _check_probe_kind})
    interval: Duration = field(default=Duration(30), metadata={"check": _at_least(1.0)})
    timeout: Duration | None = field(default=None, metadata={"check": _at_least(0.001)})
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


# --- where errors are: paths and lines -----------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """A table of the file: its name in messages and how to find its header line."""

    label: str  # "rule[2] (disk_full)", "smtp", "" for the top level
    header: str = ""  # "rule", "smtp"; "" for the top level
    index: int = 0  # 1-based position among the [[header]] tables; 0 for a plain [header]

    def path(self, key: str | None) -> str:
        if not key:
            return self.label or "(top level)"
        return f"{self.label}.{key}" if self.label else key

    def named(self, name: Any) -> _Table:
        if not isinstance(name, str) or not name:
            return self
        return dataclasses.replace(self, label=f"{self.label} ({name})")


_HEADER = re.compile(r"\s*(\[\[?)\s*([^\]]+?)\s*\]")


class _Locator:
    """Finds the line of a table or key by scanning the text: tomllib keeps no positions."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        self._headers: list[tuple[int, str, bool]] = []  # (line index, name, is [[array]])
        for number, line in enumerate(self._lines):
            match = _HEADER.match(line)
            if match:
                name = re.sub(r"\s*\.\s*", ".", match.group(2)).replace('"', "")
                self._headers.append((number, name, match.group(1) == "[["))

    def line_of(self, table: _Table, key: str | None) -> int | None:
        """1-based line of `key` in `table`, else of the table's header, else None."""
        span = self._span(table)
        if span is None:
            return None
        start, end = span
        found = self._key_line(key, start + 1, end) if key else None
        if found is None and not table.header and key:
            found = next((n for n, name, _ in self._headers if name == key), None)
        if found is None:
            found = start if table.header else None
        return None if found is None else found + 1

    def _span(self, table: _Table) -> tuple[int, int] | None:
        if not table.header:
            return -1, self._next_header(-1)
        matches = [
            n
            for n, name, is_array in self._headers
            if name == table.header and is_array == (table.index > 0)
        ]
        position = max(table.index, 1) - 1
        if position >= len(matches):
            return None
        return matches[position], self._next_header(matches[position])

    def _next_header(self, after: int) -> int:
        return next((n for n, _, _ in self._headers if n > after), len(self._lines))

    def _key_line(self, key: str, start: int, end: int) -> int | None:
        pattern = re.compile(rf"\s*([\"']?){re.escape(key)}\1\s*[=.]")
        return next((n for n in range(start, end) if pattern.match(self._lines[n])), None)


@dataclass
class _Context:
    errors: list[str]
    locator: _Locator | None = None
    secret_dir: Path = field(default_factory=Path.cwd)

    def add(self, table: _Table, key: str | None, message: str, suffix: str = "") -> None:
        line = self.locator.line_of(table, key) if self.locator else None
        where = f" (line {line})" if line else ""
        self.errors.append(f"{table.path(key)}{suffix}: {message}{where}")


# --- building a dataclass from a table -----------------------------------------------------------


class _Invalid(ValueError):
    """Problems inside one value (list items, table entries), each with its sub-path."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


def _problems_of(exc: ValueError, prefix: str) -> list[tuple[str, str]]:
    if isinstance(exc, _Invalid):
        return [(prefix + sub, message) for sub, message in exc.problems]
    return [(prefix, str(exc))]


def build_options(cls: type[T], table: Mapping[str, Any], path: str, errors: list[str]) -> T | None:
    """Build the dataclass `cls` from a TOML table, by its fields' type annotations.

    Appends a `path.key: message` to `errors` for every unknown key, missing required key,
    value of the wrong type or bad duration, and for a ValueError raised by `cls` itself;
    returns None when there was any. Supported annotations: str, int, float, bool, Duration,
    Condition, enums (by lower-case name), list[X], tuple[X, ...], dict[str, X] and `X | None`.
    """
    return _build(cls, table, _Table(path), _Context(errors))


def _build(
    cls: type[T],
    table: Mapping[str, Any],
    where: _Table,
    ctx: _Context,
    also_known: Iterable[str] = (),
) -> T | None:
    fields = _config_fields(cls)
    hints = typing.get_type_hints(cls)
    before = len(ctx.errors)
    _report_unknown(table, [*fields, *also_known], where, ctx)
    values = {}
    for key, spec in fields.items():
        if key in table:
            values[spec.name] = _convert(table[key], hints[spec.name], spec, where, key, ctx)
        elif _is_required(spec):
            ctx.add(where, key, "missing required key")
    if len(ctx.errors) > before:
        return None
    try:
        return cls(**values)
    except ValueError as exc:  # the dataclass's own semantic checks
        ctx.add(where, None, str(exc))
        return None


def _config_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {
        spec.metadata.get("key", spec.name): spec
        for spec in dataclasses.fields(cls)
        if spec.init and spec.metadata.get("config", True)
    }


def _is_required(spec: dataclasses.Field[Any]) -> bool:
    return spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING


def _report_unknown(
    table: Mapping[str, Any], known: Iterable[str], where: _Table, ctx: _Context
) -> None:
    names = sorted(set(known))
    for key in table:
        if key not in names:
            ctx.add(
                where, key, f"unknown key{_did_you_mean(key, names)}; known keys: {_listing(names)}"
            )


def _convert(
    value: Any, hint: Any, spec: dataclasses.Field[Any], where: _Table, key: str, ctx: _Context
) -> Any:
    """The value coerced and checked, or None after reporting why it is not valid."""
    try:
        if spec.metadata.get("secret"):
            converted = _resolve_secret(value, ctx.secret_dir)
        else:
            converted = _coerce(value, hint)
        check = spec.metadata.get("check")
        if check is not None:
            check(converted)
        return converted
    except ValueError as exc:
        for suffix, message in _problems_of(exc, ""):
            ctx.add(where, key, message, suffix)
        return None


def _coerce(value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        # TOML has no null: an optional key is simply left out.
        present = [arg for arg in args if arg is not type(None)]
        if len(present) != 1:
            raise TypeError(f"config option type {hint!r} is not supported")
        return _coerce(value, present[0])
    if origin in (list, tuple):
        items = _coerce_items(value, args[0])
        return items if origin is list else tuple(items)
    if origin is dict:
        return _coerce_table(value, args[1])
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _as_enum(value, hint)
    if hint in _SCALARS:
        return _SCALARS[hint](value)
    raise TypeError(f"config option type {hint!r} is not supported")


def _coerce_items(value: Any, hint: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {_show(value)}")
    items, problems = [], []
    for number, item in enumerate(value, 1):
        try:
            items.append(_coerce(item, hint))
        except ValueError as exc:
            problems += _problems_of(exc, f"[{number}]")
    if problems:
        raise _Invalid(problems)
    return items


def _coerce_table(value: Any, hint: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a table, got {_show(value)}")
    entries, problems = {}, []
    for key, item in value.items():
        try:
            entries[key] = _coerce(item, hint)
        except ValueError as exc:
            problems += _problems_of(exc, f".{key}")
    if problems:
        raise _Invalid(problems)
    return entries


def _as_enum(value: Any, cls: type[enum.Enum]) -> enum.Enum:
    names = [member.name.lower() for member in cls]
    if not isinstance(value, str) or value.lower() not in names:
        raise ValueError(f"{_show(value)} is not one of {', '.join(names)}")
    return cls[value.upper()]


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_show(value)}")
    return value


def _as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_show(value)}")
    return value


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {_show(value)}")
    return value


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {_show(value)}")
    return float(value)


def _as_duration(value: Any) -> Duration:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration, got {_show(value)}; {DURATION_HINT}")
    return Duration(parse_duration(value))


def _as_condition(value: Any) -> Condition:
    return compile_condition(_as_str(value))  # ConditionError is a ValueError


_SCALARS: dict[Any, Callable[[Any], Any]] = {
    str: _as_str,
    bool: _as_bool,
    int: _as_int,
    float: _as_float,
    Duration: _as_duration,
    Condition: _as_condition,
}


# --- secrets -------------------------------------------------------------------------------------


def _resolve_secret(value: Any, secret_dir: Path) -> str:
    """The secret's value; error messages name where it was looked for, never what it is."""
    if isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str):
        return _secret_from_env(value["env"])
    if isinstance(value, dict) and set(value) == {"file"} and isinstance(value["file"], str):
        return _secret_from_file(secret_dir / value["file"])  # an absolute path stays itself
    raise ValueError(SECRET_HINT)


def _secret_from_env(name: str) -> str:
    if name not in os.environ:
        raise ValueError(f"environment variable {name} is not set")
    if not os.environ[name]:
        raise ValueError(f"environment variable {name} is empty")
    return os.environ[name]


def _secret_from_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except FileNotFoundError:
        raise ValueError(f"secret file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"cannot read secret file {path}: {reason}") from None


def _secret_dir(source: str) -> Path:
    """Relative secret files live in systemd's credentials directory, else next to the config."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(credentials) if credentials else Path(source).parent


# --- sections ------------------------------------------------------------------------------------


def _section(data: Mapping[str, Any], name: str, ctx: _Context) -> dict[str, Any] | None:
    """The [name] table, None when absent, {} (after reporting) when it is not a table."""
    value = data.get(name)
    if value is None or isinstance(value, dict):
        return value
    ctx.add(_Table(""), name, f"expected a [{name}] table, got {_show(value)}")
    return {}


def _array(data: Mapping[str, Any], name: str, ctx: _Context) -> list[Any]:
    value = data.get(name, [])
    if not isinstance(value, list):
        ctx.add(_Table(""), name, f"write each {name} as a [[{name}]] table")
        return []
    return value


def _parse_daemon(table: Mapping[str, Any], ctx: _Context) -> DaemonConfig | None:
    daemon = _build(DaemonConfig, table, _Table("daemon", "daemon"), ctx)
    if daemon is None:
        return None
    # "" means "the default": both depend on where the daemon runs.
    return dataclasses.replace(
        daemon,
        state_dir=daemon.state_dir or default_state_dir(),
        hostname=daemon.hostname or socket.gethostname(),
    )


def _parse_helpdesk(table: Mapping[str, Any], ctx: _Context) -> HelpdeskConfig | None:
    where = _Table("helpdesk", "helpdesk")
    common = set(_config_fields(HelpdeskConfig))
    helpdesk = _build(HelpdeskConfig, _only(table, common), where, ctx)
    kind, backends = table.get("kind", "builtin"), _ticket_backends()
    if not isinstance(kind, str) or kind not in backends:
        return None  # already reported; an unknown backend's keys cannot be checked
    ok, options = _kind_options(table, common, backends[kind], where, ctx)
    if helpdesk is None or not ok:
        return None
    return dataclasses.replace(helpdesk, options=options)


def _parse_smtp(table: Mapping[str, Any], ctx: _Context) -> SmtpConfig | None:
    where = _Table("smtp", "smtp")
    smtp = _build(SmtpConfig, table, where, ctx)
    if smtp is None:
        return None
    if smtp.security == "ssl" and "port" not in table:
        smtp = dataclasses.replace(smtp, port=465)
    if bool(smtp.username) != bool(smtp.password):
        missing = "password" if smtp.username else "username"
        ctx.add(where, missing, "username and password go together; give both or neither")
    return dataclasses.replace(smtp, username=smtp.username or None)


def _only(table: Mapping[str, Any], keys: set[str]) -> dict[str, Any]:
    return {key: value for key, value in table.items() if key in keys}


def _without(table: Mapping[str, Any], keys: set[str], options_cls: Any) -> dict[str, Any]:
    """The keys left for a kind's Options (which may reuse a common key's name)."""
    own = set(_config_fields(options_cls)) if options_cls is not None else set()
    return {key: value for key, value in table.items() if key not in keys or key in own}


def _kind_options(
    table: Mapping[str, Any], common: set[str], kind_cls: Any, where: _Table, ctx: _Context
) -> tuple[bool, Any]:
    """Build the kind's Options from the keys beyond `common`: (valid, options or None)."""
    options_cls = getattr(kind_cls, "Options", None)
    rest = _without(table, common, options_cls)
    if options_cls is None:
        before = len(ctx.errors)
        _report_unknown(rest, common, where, ctx)
        return len(ctx.errors) == before, None
    options = _build(options_cls, rest, where, ctx, also_known=common)
    return options is not None, options


# --- probes and rules ----------------------------------------------------------------------------


def _parse_probes(tables: list[Any], ctx: _Context) -> list[ProbeConfig | None]:
    names: dict[str, str] = {}
    parsed = []
    for number, table in enumerate(tables, 1):
        where = _Table(f"probe[{number}]", "probe", number)
        parsed.append(_parse_probe(table, where, ctx) if _is_table(table, where, ctx) else None)
        if isinstance(table, dict):
            _check_unique(table.get("name"), where, names, ctx)
    return parsed


def _is_table(value: Any, where: _Table, ctx: _Context) -> bool:
    if not isinstance(value, dict):
        ctx.add(where, None, f"expected a table, got {_show(value)}")
    return isinstance(value, dict)


def _check_unique(name: Any, where: _Table, seen: dict[str, str], ctx: _Context) -> None:
    if not isinstance(name, str):
        return
    if name in seen:
        ctx.add(where.named(name), "name", f"duplicate name {_show(name)} (also {seen[name]})")
    else:
        seen[name] = where.label


def _parse_probe(table: dict[str, Any], where: _Table, ctx: _Context) -> ProbeConfig | None:
    where = where.named(table.get("name"))
    common = set(_config_fields(_ProbeKeys))
    keys = _build(_ProbeKeys, _only(table, common), where, ctx)
    kind = table.get("kind")
    kind_cls = _probe_registry().get(kind) if isinstance(kind, str) else None
    # With an unknown kind (already reported), its own keys cannot be checked.
    ok, options = _kind_options(table, common, kind_cls, where, ctx) if kind_cls else (False, None)
    timing = _probe_timing(keys, options, where, ctx) if keys else None
    if keys is None or timing is None or not ok:
        return None
    return ProbeConfig(keys.name, keys.kind, *timing, options)


def _probe_timing(
    keys: _ProbeKeys, options: Any, where: _Table, ctx: _Context
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


def _parse_rules(tables: list[Any], probe_names: set[str], ctx: _Context) -> list[Rule | None]:
    names: dict[str, str] = {}
    parsed: list[Rule | None] = []
    for number, table in enumerate(tables, 1):
        where = _Table(f"rule[{number}]", "rule", number)
        if not _is_table(table, where, ctx):
            parsed.append(None)
            continue
        _check_unique(table.get("name"), where, names, ctx)
        parsed.append(_parse_rule(table, where.named(table.get("name")), probe_names, ctx))
    return parsed


def _parse_rule(
    table: dict[str, Any], where: _Table, probe_names: set[str], ctx: _Context
) -> Rule | None:
    keys = _build(_RuleKeys, table, where, ctx)
    if keys is None:
        return None
    if keys.probe is not None and keys.probe not in probe_names:
        known = f"(probes: {_listing(probe_names)})"
        ctx.add(where, "probe", f"no [[probe]] is named {_show(keys.probe)} {known}")
        return None
    return keys.to_rule()


def _probe_names(tables: list[Any]) -> set[str]:
    # From the raw tables, so a probe with some other error does not also fail its rules.
    return {t["name"] for t in tables if isinstance(t, dict) and isinstance(t.get("name"), str)}


# --- the whole file ------------------------------------------------------------------------------

_SECTIONS = ("daemon", "helpdesk", "smtp", "notify", "probe", "rule")


def _parse_document(data: Mapping[str, Any], source: str, ctx: _Context) -> Config | None:
    _report_unknown(data, _SECTIONS, _Table(""), ctx)
    daemon = _parse_daemon(_section(data, "daemon", ctx) or {}, ctx)
    helpdesk = _parse_helpdesk(_section(data, "helpdesk", ctx) or {}, ctx)
    smtp_table = _section(data, "smtp", ctx)
    smtp = None if smtp_table is None else _parse_smtp(smtp_table, ctx)
    notify = _build(
        NotifyConfig, _section(data, "notify", ctx) or {}, _Table("notify", "notify"), ctx
    )
    if notify is not None and smtp_table is None:
        _report_unsendable(notify, ctx)
    probe_tables = _array(data, "probe", ctx)
    probe_list = _parse_probes(probe_tables, ctx)
    rule_list = _parse_rules(_array(data, "rule", ctx), _probe_names(probe_tables), ctx)
    if ctx.errors or daemon is None or helpdesk is None or notify is None:
        return None
    probes_ok, rules_ok = tuple(filter(None, probe_list)), tuple(filter(None, rule_list))
    return Config(daemon, helpdesk, smtp, notify, probes_ok, rules_ok, source)


def _report_unsendable(notify: NotifyConfig, ctx: _Context) -> None:
    # Without [smtp] these addresses would silently never get a message.
    message = "addresses given but there is no [smtp] section to send through"
    for key in ("helpdesk", "users"):
        if getattr(notify, key):
            ctx.add(_Table("notify", "notify"), key, message)


def parse_config(text: str, source: str) -> Config:
    """Validate `text` (read from `source`, which locates relative secret files) into a Config.

    Raises ConfigError listing every problem.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"invalid TOML: {exc}"], source) from None
    ctx = _Context([], _Locator(text), _secret_dir(source))
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
