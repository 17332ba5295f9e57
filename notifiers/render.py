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
      "notice": {"eta": null,                                # optional, user notices only:
                 "next_update_at": null,                     #   epochs of the expected fix
                 "workaround": ""}                           #   and next update; self-help
    }

Template authors: read a key that is also a dict method or a keyword with brackets
(`alert["clear"]`, `alert["for"]`); `alert.clear` would find the dict method, not the key.

Templates: `ticket_subject.txt.j2`, `ticket_body.txt.j2`, `ticket_update.txt.j2`,
`ticket_resolved.txt.j2`, `ticket_reopened.txt.j2`, and the comments `ticket_alert_joined`,
`ticket_alert_left`, `ticket_intermittent` (rendered with `render_text`/`render_line`);
`ticket_symptom` and `ticket_symptom_recovered` get a smaller context: {host, symptom: {rule,
summary, labels, service}, incident: {id, marker}} (a symptom's news on its root's ticket);
messages `helpdesk_opened`, `helpdesk_reopened`, `helpdesk_updated`, `helpdesk_resolved`,
`user_outage`, `user_resolved` (rendered with `render_message`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_DIR = Path(__file__).parent / "templates"
DURATION_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


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

    def render_text(self, template_name: str, context: Mapping[str, Any]) -> str:
        try:
            return self.env.get_template(template_name).render(context)
        except Exception as err:  # a template's own code can raise anything (1/0, a bad call)
            raise RenderError(f"template {template_name}: {type(err).__name__}: {err}") from err

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
