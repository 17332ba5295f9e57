"""Which help desk an incident's ticket goes to: the first `[[route]]` whose matchers all
match the alert's labels (plus its rule, service and category), else the default one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rules.model import Rule
from rules.silences import Matcher, matches

DEFAULT_ROUTE = ""

Route = tuple[str, tuple[Matcher, ...]]  # (name, matchers)


def route_for(rule: Rule, labels: Mapping[str, str], routes: Sequence[Route]) -> str:
    seen = {**labels, "rule": rule.name, "service": rule.service, "category": rule.category}
    return next((name for name, matchers in routes if matches(matchers, seen)), DEFAULT_ROUTE)
