"""The daemon's deciding parts, wired on a real state store without the daemon's threads: the
engine opens incidents from samples, the communicator decides notices and escalation steps,
a `dispatcher` delivers them. Tests pass `now` to each."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from monitor.comms import Communicator, comms_settings
from monitor.config import Config
from monitor.daemon import build_backend, engine_settings, state_path
from monitor.dispatcher import Dispatcher
from monitor.engine import Engine
from monitor.metrics import Metrics
from monitor.store import Store
from notifiers.base import Channel
from notifiers.render import Renderer
from rules import Rule

# The head of a test config: the keys every comms test needs (a state directory, [smtp]).
HEAD = """
[daemon]
state_dir = "{state}"
hostname = "web01"

[smtp]
host = "127.0.0.1"
port = 2525
from = "forewarn@example.com"
"""


class Parts(NamedTuple):
    """A tuple, so that a test's rig can take the parts it keeps in one line."""

    config: Config
    store: Store
    engine: Engine
    comms: Communicator
    metrics: Metrics


def wire(config: Config, rules: Iterable[Rule] | None = None) -> Parts:
    """The parts on the config's state directory; `rules` instead of the config's own (e.g.
    `with_self_rules(config)`, as the daemon runs them)."""
    store = Store(state_path(config))
    metrics = Metrics()
    rules = config.rules if rules is None else rules
    engine = Engine(store, rules, engine_settings(config), metrics, dict)
    # Looked up at each call, as the daemon does: the rules of a reconfigured engine are seen.
    comms = Communicator(
        store, comms_settings(config), metrics, lambda name: engine.by_name.get(name)
    )
    return Parts(config, store, engine, comms, metrics)


def dispatcher(
    parts: Parts, clock: Callable[[], float], channel: Channel | None = None
) -> Dispatcher:
    """A dispatcher to the config's `[helpdesk]` on the parts' store, its clock the test's;
    without `channel`, every mail fails for good, as with no `[smtp]`."""
    return Dispatcher(
        parts.store, build_backend(parts.config), channel, Renderer(), parts.metrics, clock=clock
    )
