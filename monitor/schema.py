"""Building a frozen dataclass from a TOML table, by its fields' annotations, every error at once.

Each error reads `path: message (line N)`; unknown keys are errors, nothing falls back silently
to a default, and secrets are never written in the file: they come from `{ env = "NAME" }` or
`{ file = "path" }`. Field metadata tunes a field: `key` (the config name when it differs from
the field's), `check` (a callable raising ValueError, such as `one_of(...)` or `check_port`),
`secret` (resolve `{ env }` / `{ file }`), `config=False` (not read from the file).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import json
import os
import re
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any, TypeVar

from monitor.durations import DURATION_HINT, parse_duration
from probes.base import Duration
from rules.condition import Condition, compile_condition
from rules.model import Text
from rules.silences import Matcher, parse_matcher

T = TypeVar("T")
_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+")
SECRET_HINT = "write secrets as { env = ... } or { file = ... }, never in the file"


# --- messages and checks for field metadata ------------------------------------------------------


def show(value: Any) -> str:
    """A value as the user wrote it in TOML (never called on secrets)."""
    if isinstance(value, str | bool):
        return json.dumps(value, ensure_ascii=False)  # "quoted", true, false
    if isinstance(value, dict | list):
        return "a table" if isinstance(value, dict) else "a list"
    return str(value)


def listing(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "(none)"


def _did_you_mean(value: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def one_of(*choices: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value not in choices:
            raise ValueError(f"{show(value)} is not one of {', '.join(choices)}")

    return check


def known(what: str, names: Collection[str]) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value not in names:
            raise ValueError(
                f"unknown {what} {show(value)}{_did_you_mean(value, names)}; "
                f"known {what}s: {listing(names)}"
            )

    return check


def check_address(value: str) -> None:
    if not _ADDRESS.fullmatch(parseaddr(value)[1]):
        raise ValueError(f"{show(value)} is not an e-mail address")


def check_addresses(values: tuple[str, ...]) -> None:
    for value in values:
        check_address(value)


_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def check_name(value: str) -> None:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{show(value)} is not a valid name; use letters, digits, _ . and -")


def each(check: Callable[[Any], None]) -> Callable[[tuple[Any, ...]], None]:
    """A check of every item of a list."""

    def check_all(values: tuple[Any, ...]) -> None:
        for value in values:
            check(value)

    return check_all


def check_port(value: int) -> None:
    if not 0 < value < 65536:
        raise ValueError(f"{value} is not a TCP port")


def check_directory(value: str) -> None:
    if value and not Path(value).is_dir():
        raise ValueError(f"{show(value)} is not a directory")


# --- where errors are: paths and lines -----------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A table of the file: its name in messages and how to find its header line."""

    label: str  # "rule[2] (disk_full)", "smtp", "" for the top level
    header: str = ""  # "rule", "smtp"; "" for the top level
    index: int = 0  # 1-based position among the [[header]] tables; 0 for a plain [header]

    def path(self, key: str | None) -> str:
        if not key:
            return self.label or "(top level)"
        return f"{self.label}.{key}" if self.label else key

    def named(self, name: Any) -> Table:
        if not isinstance(name, str) or not name:
            return self
        return dataclasses.replace(self, label=f"{self.label} ({name})")


_HEADER = re.compile(r"\s*(\[\[?)\s*([^\]]+?)\s*\]")


class Locator:
    """Finds the line of a table or key by scanning the text: tomllib keeps no positions."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        self._headers: list[tuple[int, str, bool]] = []  # (line index, name, is [[array]])
        for number, line in enumerate(self._lines):
            match = _HEADER.match(line)
            if match:
                name = re.sub(r"\s*\.\s*", ".", match.group(2)).replace('"', "")
                self._headers.append((number, name, match.group(1) == "[["))

    def line_of(self, table: Table, key: str | None) -> int | None:
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

    def _span(self, table: Table) -> tuple[int, int] | None:
        if not table.header:
            return -1, self._next_header(-1)
        wanted = (table.header, table.index > 0)
        matches = [n for n, name, is_array in self._headers if (name, is_array) == wanted]
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
class Context:
    """Where the errors of one file go, and what locates its lines and relative secret files."""

    errors: list[str]
    locator: Locator | None = None
    secret_dir: Path = field(default_factory=Path.cwd)

    def add(self, table: Table, key: str | None, message: str, suffix: str = "") -> None:
        line = self.locator.line_of(table, key) if self.locator else None
        where = f" (line {line})" if line else ""
        self.errors.append(f"{table.path(key)}{suffix}: {message}{where}")


# --- building a dataclass from a table -----------------------------------------------------------


def build_options(cls: type[T], table: Mapping[str, Any], path: str, errors: list[str]) -> T | None:
    """Build the dataclass `cls` from a TOML table, by its fields' type annotations.

    Appends a `path.key: message` to `errors` for every unknown key, missing required key,
    value of the wrong type or bad duration, and for a ValueError raised by `cls` itself;
    returns None when there was any. Supported annotations: str, int, float, bool, Duration,
    Condition, Matcher (`rule="disk_full"`), enums (by lower-case name), list[X],
    tuple[X, ...], dict[str, X] and `X | None`.
    """
    return build(cls, table, Table(path), Context(errors))


def build(
    cls: type[T],
    table: Mapping[str, Any],
    where: Table,
    ctx: Context,
    also_known: Iterable[str] = (),
) -> T | None:
    """`build_options` reporting into `ctx`; `also_known` keys belong to someone else."""
    before = len(ctx.errors)
    report_unknown(table, [*config_fields(cls), *also_known], where, ctx)
    values = _field_values(cls, table, where, ctx)
    if len(ctx.errors) > before:
        return None
    try:
        return cls(**values)
    except ValueError as exc:  # the dataclass's own semantic checks
        ctx.add(where, None, str(exc))
        return None


def config_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """The fields read from the file, by their config key."""
    return {
        spec.metadata.get("key", spec.name): spec
        for spec in dataclasses.fields(cls)
        if spec.init and spec.metadata.get("config", True)
    }


def report_unknown(
    table: Mapping[str, Any], known: Iterable[str], where: Table, ctx: Context
) -> None:
    names = sorted(set(known))
    for key in table:
        if key not in names:
            ctx.add(
                where, key, f"unknown key{_did_you_mean(key, names)}; known keys: {listing(names)}"
            )


def build_kind(
    cls: type[T],
    table: Mapping[str, Any],
    kinds: Mapping[str, Any],
    where: Table,
    ctx: Context,
    also_known: Iterable[str] = (),
) -> tuple[T | None, Any, bool]:
    """A table whose `kind` picks one of `kinds`: `cls` from its own keys, the rest for the kind.

    Returns (`cls` or None, the kind's options or None, whether the rest is valid). With an
    unknown kind (which `cls` should check), the rest cannot be checked and is not valid.
    `also_known` keys were taken out of `table` by the caller: messages list them as known.
    """
    common = config_fields(cls)
    keys = build(cls, {key: value for key, value in table.items() if key in common}, where, ctx)
    kind = table.get("kind", common["kind"].default)  # the field's default, if it has one
    kind_cls = kinds.get(kind) if isinstance(kind, str) else None
    if kind_cls is None:
        return keys, None, False
    others = set(also_known)
    return (keys, *_kind_options(table, set(common), kind_cls, where, ctx, others))


def _kind_options(
    table: Mapping[str, Any],
    common: set[str],
    kind_cls: Any,
    where: Table,
    ctx: Context,
    also_known: set[str],
) -> tuple[Any, bool]:
    """The kind's `Options` dataclass from the keys beyond `common`; without one, no other key."""
    options_cls = getattr(kind_cls, "Options", None)
    own = config_fields(options_cls) if options_cls is not None else {}
    # The kind's Options may reuse a common key's name (a probe's `timeout`): both get its value.
    rest = {key: value for key, value in table.items() if key not in common or key in own}
    if options_cls is None:
        report_unknown(rest, common | also_known, where, ctx)
        return None, not rest
    options = build(options_cls, rest, where, ctx, also_known=common | also_known)
    return options, options is not None


def _field_values(
    cls: type, table: Mapping[str, Any], where: Table, ctx: Context
) -> dict[str, Any]:
    hints = _type_hints(cls)
    values = {}
    for key, spec in config_fields(cls).items():
        if key in table:
            values[spec.name] = _convert(table[key], hints[spec.name], spec, where, key, ctx)
        elif _is_required(spec):
            ctx.add(where, key, "missing required key")
    return values


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    # Resolving the annotations is most of the cost of a table: a config has hundreds of rules.
    return typing.get_type_hints(cls)


def _is_required(spec: dataclasses.Field[Any]) -> bool:
    return spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING


def _convert(
    value: Any, hint: Any, spec: dataclasses.Field[Any], where: Table, key: str, ctx: Context
) -> Any:
    """The value coerced and checked, or None after reporting why it is not valid."""
    secret, check = spec.metadata.get("secret"), spec.metadata.get("check")
    try:
        converted = resolve_secret(value, ctx.secret_dir) if secret else _coerce(value, hint)
        if check is not None:
            check(converted)
        return converted
    except ValueError as exc:
        for suffix, message in _problems_of(exc, ""):
            ctx.add(where, key, message, suffix)
        return None


# --- coercion by type annotation -----------------------------------------------------------------


class _Invalid(ValueError):
    """Problems inside one value (list items, table entries), each with its sub-path."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


def _problems_of(exc: ValueError, prefix: str) -> list[tuple[str, str]]:
    if isinstance(exc, _Invalid):
        return [(prefix + sub, message) for sub, message in exc.problems]
    return [(prefix, str(exc))]


def _coerce(value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        # TOML has no null: an optional key is simply left out.
        return _coerce(value, next(arg for arg in args if arg is not type(None)))
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
        raise ValueError(f"expected a list, got {show(value)}")
    return _coerce_each([(f"[{number}]", item) for number, item in enumerate(value, 1)], hint)


def _coerce_table(value: Any, hint: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a table, got {show(value)}")
    entries = [(f".{key}", item) for key, item in value.items()]
    return dict(zip(value, _coerce_each(entries, hint), strict=True))


def _coerce_each(entries: list[tuple[str, Any]], hint: Any) -> list[Any]:
    """Every entry coerced, or _Invalid naming each bad one by its sub-path."""
    coerced, problems = [], []
    for sub_path, value in entries:
        try:
            coerced.append(_coerce(value, hint))
        except ValueError as exc:
            problems += _problems_of(exc, sub_path)
    if problems:
        raise _Invalid(problems)
    return coerced


def _as_enum(value: Any, cls: type[enum.Enum]) -> enum.Enum:
    names = [member.name.lower() for member in cls]
    if not isinstance(value, str) or value.lower() not in names:
        raise ValueError(f"{show(value)} is not one of {', '.join(names)}")
    return cls[value.upper()]


def _scalar(python_type: type, accepted: Any, expected: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        # To Python a bool is an int; to TOML it never is.
        if isinstance(value, bool) != (python_type is bool) or not isinstance(value, accepted):
            raise ValueError(f"expected {expected}, got {show(value)}")
        return python_type(value)

    return convert


_as_str = _scalar(str, str, "a string")


def _as_duration(value: Any) -> Duration:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration, got {show(value)}; {DURATION_HINT}")
    return Duration(parse_duration(value))


def _as_condition(value: Any) -> Condition:
    return compile_condition(_as_str(value))  # ConditionError is a ValueError


def _as_matcher(value: Any) -> Matcher:
    return parse_matcher(_as_str(value))


_LANGUAGE_KEY = re.compile(r"[a-z]{2,3}(_[A-Z]{2})?")


def _as_text(value: Any) -> Text:
    """User-facing text: a string, or a table of translations (`{ en = "...", it = "..." }`)."""
    if isinstance(value, str):
        return Text((("", value),))
    if not isinstance(value, dict):
        raise ValueError(f"expected a string or a table of translations, got {show(value)}")
    problems = [
        (f".{key}", "expected a language code such as en or it, and a string")
        for key, text in value.items()
        if not _LANGUAGE_KEY.fullmatch(key) or not isinstance(text, str)
    ]
    if problems:
        raise _Invalid(problems)
    return Text(tuple(value.items()))


_SCALARS: dict[Any, Callable[[Any], Any]] = {
    Text: _as_text,
    str: _as_str,
    bool: _scalar(bool, bool, "true or false"),
    int: _scalar(int, int, "a whole number"),
    float: _scalar(float, int | float, "a number"),
    Duration: _as_duration,
    Condition: _as_condition,
    Matcher: _as_matcher,
}


# --- secrets -------------------------------------------------------------------------------------


def secret_dir(source: str) -> Path:
    """Relative secret files live in systemd's credentials directory, else next to the config."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(credentials) if credentials else Path(source).parent


def resolve_secret(value: Any, directory: Path) -> str:
    """The secret's value; error messages name where it was looked for, never what it is."""
    if isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str):
        return _secret_from_env(value["env"])
    if isinstance(value, dict) and set(value) == {"file"} and isinstance(value["file"], str):
        return _secret_from_file(directory / value["file"])  # an absolute path stays itself
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
