"""The daemon's deciding parts, wired on a real state store without the daemon's threads: the
engine opens incidents from samples, the communicator decides notices and escalation steps.
Tests pass `now` to both."""

from __future__ import annotations

from dataclasses import dataclass

from monitor.comms import Communicator, comms_settings
from monitor.config import Config
from monitor.daemon import engine_settings, state_path
from monitor.engine import Engine
from monitor.metrics import Metrics
from monitor.store import Store

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


@dataclass
class Parts:
    config: Config
    store: Store
    engine: Engine
    comms: Communicator
    metrics: Metrics


def wire(config: Config) -> Parts:
    store = Store(state_path(config))
    metrics = Metrics()
    engine = Engine(store, config.rules, engine_settings(config), metrics, dict)
    comms = Communicator(store, comms_settings(config), metrics, engine.by_name.get)
    return Parts(config, store, engine, comms, metrics)
