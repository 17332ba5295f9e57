"""Config of how forewarn talks to people: audiences, services, notices, escalation, status page.

The sections:
- `[[audience]]`: people who depend on services or machines, how to reach them (e-mail,
  Apprise URLs for chat, push and SMS) and in which language;
- `[[service]]`: the services users know, by the name rules give in `service`, with the title
  and description users read (per language);
- `[notices]`: the update cadence, the "monitoring" period, the time zone notices write;
- `[[escalation]]` with `[[escalation.step]]`s: who hears of an unacknowledged incident, when;
- `[status]`: the status page the daemon serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from probes.base import Duration
from rules.escalation import Policy
from rules.model import Text
from rules.notices import Audience, Cadence

LANGUAGES = ("en", "it", "ru", "hu")  # the languages whose notice templates ship


@dataclass(frozen=True)
class AudienceConfig:
    name: str
    title: str = ""  # how notices greet them ("Accounting team"); "" greets generically
    services: tuple[str, ...] = ()  # the services they depend on; "*" for every one
    hosts: tuple[str, ...] = ()  # machines they use (shell patterns): their problems reach them
    email: tuple[str, ...] = ()
    # Apprise URLs (chat, push, SMS). A URL carrying a token is written { env } or { file }.
    apprise: tuple[str, ...] = field(default=(), repr=False)
    language: str = "en"

    @property
    def audience(self) -> Audience:
        return Audience(self.name, self.services, self.hosts)


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    title: Text = field(default_factory=Text)  # what users call it; the name when empty
    description: Text = field(default_factory=Text)

    def title_in(self, language: str) -> str:
        return self.title.get(language) or self.name


@dataclass(frozen=True)
class NoticesConfig:
    update_every: Duration = Duration(4 * 3600)  # users hear again while it stays open
    ticket_update_every: Duration = Duration(24 * 3600)  # a "still open" ticket comment
    monitor_for: Duration = Duration(0)  # > 0: "monitoring" before "resolved"
    timezone: str = "UTC"  # the zone notices write times in
    language: str = "en"  # for audiences that set none, and the status page
    status_url: str = ""  # the public address of the status page, linked from notices

    @property
    def cadence(self) -> Cadence:
        return Cadence(float(self.update_every), float(self.monitor_for))


@dataclass(frozen=True)
class StatusConfig:
    enabled: bool = True  # served at /status on [daemon] listen
    title: str = "Service status"
    history: Duration = Duration(7 * 86400)  # how far back resolved incidents are listed
    upcoming: Duration = Duration(14 * 86400)  # how far ahead maintenance is listed


@dataclass(frozen=True)
class CommsConfig:
    audiences: tuple[AudienceConfig, ...] = ()
    services: tuple[ServiceConfig, ...] = ()
    notices: NoticesConfig = field(default_factory=NoticesConfig)
    escalations: tuple[Policy, ...] = ()
    status: StatusConfig = field(default_factory=StatusConfig)

    def service(self, name: str) -> ServiceConfig:
        for service in self.services:
            if service.name == name:
                return service
        return ServiceConfig(name)

    def audience(self, name: str) -> AudienceConfig | None:
        return next((a for a in self.audiences if a.name == name), None)

    def policy(self, name: str) -> Policy | None:
        """The policy a rule names, or the one named "default" for a rule that names none."""
        return next((p for p in self.escalations if p.name == (name or "default")), None)
