"""The probe contract and the data types every part of forewarn shares.

A probe observes; it never decides whether something is wrong. It turns the world into
`Sample`s. Rules (in `rules/`) read samples and decide; they import only these data types.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable


class Duration(float):
    """Seconds. Written in config as `30s`, `5m`, `4h`, `1d` (or a bare number of seconds)."""


@dataclass(frozen=True)
class Sample:
    """One observation: a metric name, identifying labels, a value and when it was taken.

    `error` is the reason a probe saw a failure (`connection refused`, `timed out after 10s`).
    A sample with an error still has a value (e.g. `http_up 0`) and is evaluated by rules;
    the error text travels into the alert so the ticket can say what was seen.
    """

    metric: str
    value: float
    timestamp: float
    labels: dict[str, str] = field(default_factory=dict)
    error: str | None = None


class Probe(Protocol):
    """What the scheduler needs from a probe.

    Implementations set `kind` (the config `kind` string) and `Options` (a frozen dataclass
    whose annotated fields are the probe's config keys; see `monitor.config`). The constructor
    takes `(name, options)`. `collect` may block (the scheduler runs it in a thread with a
    timeout) and may raise: the scheduler turns an exception into an error sample.
    """

    kind: ClassVar[str]
    name: str

    def collect(self, now: float) -> list[Sample]: ...


Emit = Callable[[list[Sample]], None]


@runtime_checkable
class WatchingProbe(Probe, Protocol):
    """A probe that can also report the moment something happens, between scheduled runs.

    `watch` blocks in a thread of its own (the scheduler starts it, and restarts it after a
    pause if it raises), calling `emit(samples)` whenever the kernel tells it something changed
    (a watched process exited, a log line matched), until `stop` is set. It must wake up at
    least every second or so to notice `stop`. Scheduled `collect` runs continue as usual.
    """

    def watch(self, emit: Emit, stop: threading.Event) -> None: ...


@runtime_checkable
class PersistentProbe(Probe, Protocol):
    """A probe that keeps something across restarts (a log file's read position).

    The daemon calls `use_state_dir` once, right after building the probe, with a directory of
    the probe's own under the state directory (created, writable). `forewarn check` does not
    call it: a one-off check keeps nothing.
    """

    def use_state_dir(self, directory: Path) -> None: ...


PROBE_UP = "probe_up"
"""Metric the scheduler emits for every run: 1 when `collect` returned, 0 when it raised or hung."""


def probe_up_sample(probe: str, kind: str, now: float, error: str | None = None) -> Sample:
    labels = {"probe": probe, "kind": kind}
    return Sample(PROBE_UP, 0.0 if error else 1.0, now, labels, error)


@dataclass(frozen=True)
class NoOptions:
    """The options of a probe kind that has nothing to configure."""


class UnconfiguredProbe:
    """Base of probe kinds configured by their name alone (memory, swap, load, sensors)."""

    Options: ClassVar[type[NoOptions]] = NoOptions

    def __init__(self, name: str, options: NoOptions) -> None:
        self.name = name
        self.options = options
