"""The daemon's deciding parts, wired on a real state store without the daemon's threads: the
engine opens incidents from samples, the communicator decides notices and escalation steps,
a `dispatcher` delivers them; `DaemonRig` holds them with the daemon's tick. Tests pass `now`
to each.

Also the pieces of TOML the tests' configs share (`web_down`, `audience`, `escalation`,
`step`): each returns its lines, a blank line before, for the configs to add up."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from monitor.comms import Communicator, comms_settings
from monitor.config import Config, parse_config
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

# A probe whose samples the tests pass in (no scheduler runs it here), and a rule on it.
_WEB_DOWN = """
[[probe]]
name = "web"
kind = "http"
url = "http://127.0.0.1:9/"

[[rule]]
name = "web_down"
probe = "web"
metric = "http_up"
condition = "value == 0"
"""


def web_down(*keys: str) -> str:
    """The `web` probe and the rule `web_down`, an incident when a page does not answer; `keys`
    are the rule's further lines, such as `'service = "intranet"'`."""
    return _WEB_DOWN + _lines(keys)


def audience(name: str, service: str, email: str, *keys: str) -> str:
    """An `[[audience]]` that hears of `service` by mail at `email`; `keys`: its further lines."""
    head = f'\n[[audience]]\nname = "{name}"\nservices = ["{service}"]\nemail = ["{email}"]\n'
    return head + _lines(keys)


def escalation(name: str, *keys: str) -> str:
    """An `[[escalation]]` policy with `keys`; its tables (`step`) follow it."""
    return f'\n[[escalation]]\nname = "{name}"\n' + _lines(keys)


def step(after: str, notify: str, *keys: str) -> str:
    """A step of the `escalation` before it: `notify` (an address or an audience) when the
    incident is still unacknowledged `after` (a duration); `keys`: its further lines."""
    return f'\n[[escalation.step]]\nafter = "{after}"\nnotify = ["{notify}"]\n' + _lines(keys)


def _lines(keys: Iterable[str]) -> str:
    return "".join(f"{key}\n" for key in keys)


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


class DaemonRig:
    """The parts on a test config in `tmp` (`config` has a `{state}` placeholder, as HEAD, and
    the `fields` to fill in), a dispatcher whose clock is the rig's `now`, and the daemon's tick.
    A test file's rig adds the ways it feeds samples and reads the store."""

    def __init__(self, tmp: Path, config: str, now: float, **fields: str) -> None:
        text = config.format(state=tmp / "state", **fields)
        parts = wire(parse_config(text, str(tmp / "config.toml")))
        self.config, self.store, self.engine, self.comms, _ = parts
        self.now = now
        self.dispatcher = dispatcher(parts, clock=lambda: self.now)

    def tick(self, now: float) -> None:
        """A tick of the daemon at `now` and a delivery pass."""
        self.now = now
        self.engine.tick(now)
        self.comms.tick(now)
        self.dispatcher.run_once()

    def close(self) -> None:
        self.store.close()
