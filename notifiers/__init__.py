"""Notifiers carry out what the daemon decided: ticket backends and message channels.

The registries map the config `kind` string to the class; an unknown kind is a config error.
Ticket backends are built with `cls.from_config(options, state_path)` (see
`notifiers.base.TicketBackend`); the SMTP channel with `SmtpChannel(SmtpSettings(...))`.
A backend's module is imported when its kind is first looked up: a daemon that keeps tickets
in the built-in store does not load the HTTP stack of Request Tracker's or Redmine's client.
"""

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from notifiers.base import Channel
from notifiers.email import SmtpChannel


class _LazyRegistry(Mapping[str, Any]):
    """kind -> class, each class imported from its `module.Class` path on first use."""

    def __init__(self, paths: dict[str, str]) -> None:
        self._paths = paths

    def __getitem__(self, kind: str) -> Any:
        module, _, name = self._paths[kind].rpartition(".")
        return getattr(importlib.import_module(module), name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


TICKET_BACKENDS: Mapping[str, Any] = _LazyRegistry(
    {
        "builtin": "notifiers.builtin.BuiltinTickets",
        "email": "notifiers.email_tickets.EmailTickets",
        "redmine": "notifiers.redmine.RedmineTickets",
        "rt": "notifiers.rt.RtTickets",
        "webhook": "notifiers.webhook.WebhookTickets",
    }
)
CHANNELS: dict[str, Callable[..., Channel]] = {SmtpChannel.kind: SmtpChannel}
