"""Notifiers carry out what the daemon decided: ticket backends and message channels.

The registries map the config `kind` string to the class; an unknown kind is a config error.
Ticket backends are built with `cls.from_config(options, state_path)` (see
`notifiers.base.TicketBackend`); the SMTP channel with `SmtpChannel(SmtpSettings(...))`.
"""

from collections.abc import Callable
from typing import Any

from notifiers.base import Channel
from notifiers.builtin import BuiltinTickets
from notifiers.email import SmtpChannel
from notifiers.email_tickets import EmailTickets
from notifiers.redmine import RedmineTickets
from notifiers.rt import RtTickets
from notifiers.webhook import WebhookTickets

TICKET_BACKENDS: dict[str, Any] = {
    cls.kind: cls
    for cls in (BuiltinTickets, EmailTickets, RedmineTickets, RtTickets, WebhookTickets)
}
CHANNELS: dict[str, Callable[..., Channel]] = {SmtpChannel.kind: SmtpChannel}
