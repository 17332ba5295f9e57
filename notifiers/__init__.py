"""Notifiers carry out what the daemon decided: ticket backends and message channels.

The registries map the config `kind` string to the class; an unknown kind is a config error.
Constructors differ by kind (`BuiltinTickets(db_path)`, `SmtpChannel(SmtpSettings(...))`).
"""

from collections.abc import Callable

from notifiers.base import Channel, TicketBackend
from notifiers.builtin import BuiltinTickets
from notifiers.email import SmtpChannel

TICKET_BACKENDS: dict[str, Callable[..., TicketBackend]] = {BuiltinTickets.kind: BuiltinTickets}
CHANNELS: dict[str, Callable[..., Channel]] = {SmtpChannel.kind: SmtpChannel}
