"""The probe registry and the contract every probe kind keeps with the config loader."""

import dataclasses
import subprocess
import sys
import time
import typing
from typing import Any

import pytest

from probes import REGISTRY
from probes.base import Duration, Sample

ALLOWED_OPTION_TYPES: set[Any] = {
    str,
    int,
    float,
    bool,
    Duration,
    list[str],
    list[int],
    dict[str, str],
}
ALLOWED_OPTION_TYPES |= {t | None for t in ALLOWED_OPTION_TYPES}

# Port 9 (discard) on loopback: nothing listens there, so network kinds fail fast and locally.
REQUIRED_OPTIONS: dict[str, dict[str, Any]] = {
    "process": {"match_name": "forewarn-test-none"},
    "http": {"url": "http://127.0.0.1:9/"},
    "command": {"command": ["check_dummy", "0"]},
    "scrape": {"url": "http://127.0.0.1:9/metrics"},
    "promql": {"url": "http://127.0.0.1:9", "query": "up"},
    "tls": {"host": "127.0.0.1", "port": 9},
    "tcp": {"host": "127.0.0.1", "port": 9},
    "dns": {"query_name": "localhost", "server": "127.0.0.1", "port": 9},
    "ping": {"host": "127.0.0.1"},
    "systemd": {"units": ["forewarn-test-none.service"]},
    "logfile": {"path": "/nonexistent/forewarn-test.log", "patterns": ["error"]},
}

ISSUE_3_KINDS = {
    "diskio",
    "net",
    "system",
    "clock",
    "smart",
    "raid",
    "gpu",
    "tls",
    "tcp",
    "dns",
    "ping",
    "systemd",
    "logfile",
    "command",
    "scrape",
    "promql",
}


def probe_class(kind: str) -> Any:
    return REGISTRY[kind]


def build(kind: str) -> Any:
    cls = probe_class(kind)
    return cls(f"test-{kind}", cls.Options(**REQUIRED_OPTIONS.get(kind, {})))


def test_registry_has_every_kind_under_its_own_name() -> None:
    expected = {"cpu", "load", "memory", "swap", "disk", "sensors", "process", "http"}
    expected |= ISSUE_3_KINDS
    assert set(REGISTRY) == expected
    assert all(probe_class(kind).kind == kind for kind in REGISTRY)


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_options_are_frozen_dataclasses_with_loader_types(kind: str) -> None:
    options = probe_class(kind).Options
    instance = options(**REQUIRED_OPTIONS.get(kind, {}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        instance.anything = 1
    hints = typing.get_type_hints(options)
    for spec in dataclasses.fields(options):
        assert hints[spec.name] in ALLOWED_OPTION_TYPES, f"{kind}.{spec.name}: {hints[spec.name]}"


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_every_sample_carries_the_given_timestamp(kind: str) -> None:
    probe = build(kind)
    assert probe.name == f"test-{kind}"
    samples = probe.collect(1234.5)
    assert all(isinstance(s, Sample) for s in samples)
    assert {s.timestamp for s in samples} <= {1234.5}


def test_importing_probes_loads_no_http_library() -> None:
    code = "import sys, probes; assert 'requests' not in sys.modules, 'requests imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("kind", ["cpu", "load", "memory", "swap", "disk", "sensors"])
def test_machine_probes_are_cheap_to_call(kind: str) -> None:
    probe = build(kind)
    probe.collect(time.time())
    used = time.process_time()  # CPU spent, in all threads: a wait costs nothing
    for _ in range(3):
        probe.collect(time.time())
    assert (time.process_time() - used) / 3 < 0.05
