"""Conditions written as Jinja2 expressions, compiled once in a sandbox.

A condition such as `value > 90 and labels.mountpoint == "/"` sees `value` (float),
`labels` (a dict, missing keys are undefined and compare false), `metric` and `error`.
The sandbox matters: labels come from probe output (process names, URLs) and are untrusted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateSyntaxError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

_ENV = ImmutableSandboxedEnvironment(undefined=Undefined)


class ConditionError(ValueError):
    """The expression does not compile, or failed while being evaluated."""


@dataclass(frozen=True)
class Condition:
    source: str
    _compiled: Callable[..., Any] = field(repr=False, compare=False)

    def __call__(self, variables: Mapping[str, Any]) -> bool:
        try:
            result = self._compiled(**variables)
        except Exception as exc:  # the sandbox raises SecurityError, TypeError, ...
            raise ConditionError(f"{self.source!r} failed: {exc}") from exc
        return bool(result) and not isinstance(result, Undefined)


def compile_condition(source: str) -> Condition:
    """Compile `source`; raise ConditionError with a readable reason when it is not valid."""
    if not source.strip():
        raise ConditionError("empty expression")
    try:
        compiled = _ENV.compile_expression(source, undefined_to_none=False)
    except TemplateSyntaxError as exc:
        raise ConditionError(f"not a valid expression: {exc.message}") from exc
    return Condition(source, compiled)
