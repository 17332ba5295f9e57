"""forewarn watching itself: the samples its own health gives, the rules on them, who hears.

Once a tick the daemon evaluates, besides `probe_stale` and `outbox_dead_recent`, the samples
of `SelfMonitor.samples` against the built-in rules of `self_rules`:

- `outbox_oldest_age_seconds`: how long the oldest undelivered outbox row has waited (a row
  held back by a rule's `group_wait` counts from its creation). Rule `outbox_stuck`: over
  `[daemon] outbox_age_limit` (15m by default), tickets and messages are not getting out;
- `delivery_retrying{channel}`: rows of the channel (`helpdesk`, `email`, `apprise`) that
  failed `RETRYING_AFTER` times or more and are still retried. Rule `delivery_retrying`: one
  has kept failing for 5 minutes;
- `state_dir_free_ratio{path}`: the free share of the state directory's file system. Rule
  `state_dir_full`: under 5%, before SQLite can no longer write the state and its outbox.

A rule of the same name in the config replaces the built-in one.

Who hears: their incidents, and those of the built-in `probe_stale` and `delivery_failed`,
open tickets like any other; and when `[daemon] admins` names people, the escalation policy
`forewarn-self` (implicit: one step, at once, to the admins) messages them directly. Those
messages do not wait for the ticket (`"wait_for_ticket": false`): the help desk may be the
very part that failed. When the mail server is what failed, the ticket reports it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from collections.abc import Callable
from typing import Any

from monitor.config import BUILTIN_RULES, Config
from monitor.metrics import Metrics
from monitor.store import Store
from probes.base import Sample
from rules.condition import compile_condition
from rules.escalation import Policy, Step
from rules.model import Rule, Severity

log = logging.getLogger(__name__)

SELF_POLICY = "forewarn-self"  # the implicit escalation policy of the self rules
OUTBOX_AGE = "outbox_oldest_age_seconds"
DELIVERY_RETRYING = "delivery_retrying"
STATE_DIR_FREE = "state_dir_free_ratio"
RETRYING_AFTER = 5  # failed attempts (half a minute of backoff) before a row counts
STATE_DIR_FREE_MIN = 0.05
CHANNELS = {"email.send": "email", "apprise.send": "apprise"}  # any ticket.* is "helpdesk"

DiskUsage = Callable[[str], Any]  # shutil.disk_usage: (total, used, free) in bytes


class SelfMonitor:
    """The daemon's own health as samples; `disk_usage` is replaceable to fake a full disk."""

    def __init__(
        self,
        store: Store,
        state_dir: str,
        metrics: Metrics | None = None,
        disk_usage: DiskUsage = shutil.disk_usage,
    ) -> None:
        self.store = store
        self.state_dir = state_dir
        self.metrics = metrics
        self.disk_usage = disk_usage

    def samples(self, now: float) -> list[Sample]:
        return [self.outbox_age(now), *self.retrying(now), self.free_space(now)]

    def outbox_age(self, now: float) -> Sample:
        _pending, oldest, _dead = self.store.outbox_stats(now)
        return Sample(OUTBOX_AGE, max(0.0, oldest), now, {})

    def retrying(self, now: float) -> list[Sample]:
        """One sample per channel, 0 included, so that an alert resolves when it recovers."""
        counts = dict.fromkeys(("helpdesk", *CHANNELS.values()), 0)
        for row in self.store.query(
            "SELECT op, COUNT(*) AS n FROM outbox WHERE status = 'pending' AND attempts >= ?"
            " GROUP BY op",
            (RETRYING_AFTER,),
        ):
            channel = CHANNELS.get(row["op"], "helpdesk")
            counts[channel] = counts.get(channel, 0) + int(row["n"])
        return [
            Sample(DELIVERY_RETRYING, float(n), now, {"channel": channel})
            for channel, n in counts.items()
        ]

    def free_space(self, now: float) -> Sample:
        labels = {"path": self.state_dir}
        try:
            usage = self.disk_usage(self.state_dir)
        except OSError as exc:
            error = f"cannot read the state directory's file system: {exc.strerror or exc}"
            return Sample(STATE_DIR_FREE, math.nan, now, labels, error)
        ratio = usage.free / usage.total if usage.total else math.nan
        if self.metrics is not None:
            self.metrics.state_dir_free.set(ratio)
        return Sample(STATE_DIR_FREE, ratio, now, labels)


# --- the rules ---------------------------------------------------------------------------------


def self_rules(outbox_age_limit: float) -> tuple[Rule, ...]:
    """The built-in rules on the samples above; the outbox's limit comes from the config."""
    return (_outbox_stuck(outbox_age_limit), DELIVERY_RETRYING_RULE, STATE_DIR_FULL_RULE)


def _outbox_stuck(limit: float) -> Rule:
    return Rule(
        name="outbox_stuck",
        metric=OUTBOX_AGE,
        condition=compile_condition(f"value > {limit:g}"),
        severity=Severity.CRITICAL,
        summary="forewarn's outbox has waited {{ (value / 60) | round | int }} minutes to deliver",
        description=(
            "A ticket, comment or message has waited longer than [daemon] outbox_age_limit to "
            "be delivered: the help desk, the mail server or a chat service is not taking "
            "what forewarn has to say, so new problems may reach nobody. `forewarn incidents "
            "show` and the daemon's log (journalctl -u forewarn) name the failing delivery "
            "and its last error."
        ),
        category="monitoring",
    )


DELIVERY_RETRYING_RULE = Rule(
    name=DELIVERY_RETRYING,
    metric=DELIVERY_RETRYING,
    condition=compile_condition("value > 0"),
    for_seconds=300.0,
    summary="Deliveries through {{ labels.channel }} keep failing ({{ value | int }} retried)",
    description=(
        f"Tickets or messages through this channel failed {RETRYING_AFTER} times or more "
        "and are still being retried: the help desk or the mail or chat service is down, "
        "unreachable, or refuses forewarn's credentials. Nothing is lost; they go out once it "
        "answers again. The daemon's log (journalctl -u forewarn) has each attempt's error."
    ),
    category="monitoring",
)

STATE_DIR_FULL_RULE = Rule(
    name="state_dir_full",
    metric=STATE_DIR_FREE,
    condition=compile_condition(f"value < {STATE_DIR_FREE_MIN}"),
    severity=Severity.CRITICAL,
    summary="forewarn's state directory {{ labels.path }} is almost full"
    " ({{ (value * 100) | round(1) }}% free)",
    description=(
        "The file system of forewarn's state directory has less than 5% free space. Once it "
        "is full, forewarn can no longer record alerts, incidents or the tickets and messages "
        "it owes, and stops working. Free space there (du -xsh on the file system) or move "
        "[daemon] state_dir."
    ),
    category="monitoring",
)


def with_self_rules(config: Config) -> tuple[Rule, ...]:
    """The config's rules, the self rules it does not replace, and, when `[daemon] admins`
    names people, every built-in rule about forewarn itself (category "monitoring") sent to
    them through the `forewarn-self` policy."""
    own = {rule.name for rule in config.rules}
    added = [r for r in self_rules(config.daemon.outbox_age_limit) if r.name not in own]
    rules = (*config.rules, *added)
    if not config.daemon.admins:
        return rules
    builtin = [rule for rule in (*BUILTIN_RULES, *added) if rule.category == "monitoring"]
    return tuple(
        dataclasses.replace(rule, escalation=SELF_POLICY) if rule in builtin else rule
        for rule in rules
    )


def admin_policy(admins: tuple[str, ...]) -> Policy | None:
    """The implicit `forewarn-self` policy: the admins hear at once; None without admins."""
    return Policy(SELF_POLICY, (Step(0.0, admins),)) if admins else None
