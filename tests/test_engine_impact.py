"""The engine records when a predicted problem arrives: the `impact` event.

A predictive rule (a `window`, a `predict` level, a condition on `eta`) opens its incident
before the value reaches the level; the opening event says when the condition first held
(`since`) and when the impact was predicted (`predicted_at`). When the value of the firing
alert then reaches the level, one `impact` event ends the warning's lead time. An episode that
resolves before the level is averted: no impact event. `rules.figures` reads all three.

Real engine on a real state store; time is passed as `now`, samples come every minute.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from monitor.engine import Engine, EngineSettings
from monitor.metrics import Metrics
from monitor.report import incident_episodes
from monitor.store import Store, connect
from probes.base import Sample
from rules import Rule, Severity, compile_condition, fingerprint
from rules.figures import Episode

T0 = 1_800_000_000.0
STEP = 60.0  # seconds between samples
LEVEL = 95.0
ROOT = {"mountpoint": "/"}
SETTINGS = EngineSettings(hostname="web01", reopen_within=3600.0, backend="builtin")


def filling_rule(**changes: Any) -> Rule:
    """Disk used %: warns 10 minutes ahead of 95 %, or at once past it; clears below 60 %."""
    options: dict[str, Any] = {
        "name": "disk_filling",
        "metric": "disk_used_percent",
        "condition": compile_condition(f"value >= {LEVEL} or eta < 600"),
        "clear": compile_condition("value < 60"),
        "window": 600.0,
        "predict": LEVEL,
        "severity": Severity.WARNING,
        "service": "file shares",
    }
    return Rule(**(options | changes))


def free_rule() -> Rule:
    """Free space %: the breach is below the level (`predict_falling`)."""
    return Rule(
        name="space_low",
        metric="disk_free_percent",
        condition=compile_condition("value <= 5 or eta < 600"),
        clear=compile_condition("value > 40"),
        window=600.0,
        predict=5.0,
        predict_falling=True,
    )


@dataclass
class Rig:
    store: Store
    engine: Engine
    path: Path
    rule: Rule
    at: float = T0

    def feed(self, *values: float) -> None:
        """One sample per value, STEP apart, starting at `at`."""
        for value in values:
            sample = Sample(self.rule.metric, value, self.at, dict(ROOT))
            self.engine.process([sample], self.at)
            self.at += STEP

    def events(self, kind: str | None = None) -> list[tuple[str, float, dict[str, Any]]]:
        rows = self.store.query("SELECT kind, at, detail FROM event ORDER BY id")
        found = [(r["kind"], r["at"], json.loads(r["detail"])) for r in rows]
        return [e for e in found if kind is None or e[0] == kind]

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.events()]

    def status(self) -> str:
        return str(self.store.query("SELECT status FROM incident WHERE id = 1")[0]["status"])

    def episodes(self) -> list[Episode]:
        conn = connect(self.path, readonly=True)
        try:
            return incident_episodes(conn, 1)
        finally:
            conn.close()


RigFactory = Callable[..., Rig]


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[RigFactory]:
    """An engine on the same state file every time: a second call is a daemon restart."""
    stores: list[Store] = []

    def make(rule: Rule, at: float = T0) -> Rig:
        path = tmp_path / "forewarn.db"
        store = Store(path)
        stores.append(store)
        engine = Engine(store, (rule,), SETTINGS, Metrics(), snapshot=dict)
        return Rig(store, engine, path, rule, at)

    yield make
    for store in stores:
        store.close()


def rising(start: float, step: float, count: int) -> list[float]:
    return [start + step * i for i in range(count)]


# --- the opening event and the impact -----------------------------------------------------


def test_a_rising_series_opens_with_since_and_predicted_at(make_rig: RigFactory) -> None:
    rig = make_rig(filling_rule())
    # 5 % a minute from 50 %: the trend needs a quarter window (150 s) of points, so the
    # fourth sample (65 % at T0+180) predicts 95 % 360 s later, inside the 600 s warning.
    rig.feed(*rising(50.0, 5.0, 4))

    [(kind, at, detail)] = rig.events()
    assert kind == "opened" and at == T0 + 180
    assert detail["since"] == T0 + 180  # for = 0: the condition held since this sample
    assert detail["predicted_at"] == pytest.approx(T0 + 540)
    [row] = rig.store.query("SELECT predicted_at FROM incident")
    assert row["predicted_at"] == detail["predicted_at"]


def test_reaching_the_level_writes_one_impact_event(make_rig: RigFactory) -> None:
    rig = make_rig(filling_rule())
    rig.feed(*rising(50.0, 5.0, 9))  # up to 90 % at T0+480: warned, not reached
    assert rig.events("impact") == []

    rig.feed(95.0, 97.0, 99.0)  # 95 % at T0+540: the impact; later samples are past it too

    [(_, at, detail)] = rig.events("impact")
    assert at == T0 + 540
    assert detail == {"value": 95.0, "fingerprint": fingerprint("disk_filling", ROOT)}
    assert rig.status() == "open"
    [episode] = rig.episodes()
    assert episode.predicted_at == pytest.approx(T0 + 540)
    assert episode.impact_at == T0 + 540
    assert episode.lead_time == 360.0
    assert episode.caught_first is True


def test_dipping_below_the_level_and_back_is_still_one_impact_per_episode(
    make_rig: RigFactory,
) -> None:
    """The engine notices the level reached again after a dip (it forgets a fingerprint
    that falls below), but the lifecycle writes at most one impact per episode: the lead time
    ends at the first one."""
    rig = make_rig(filling_rule())
    rig.feed(*rising(50.0, 5.0, 10))  # 95 % at T0+540
    rig.feed(93.0, 96.0, 94.0, 98.0)  # below, above, below, above: still firing (clear < 60)

    assert rig.status() == "open"
    assert [at for _, at, _ in rig.events("impact")] == [T0 + 540]


def test_a_restart_past_the_level_adds_no_second_impact(make_rig: RigFactory) -> None:
    rig = make_rig(filling_rule())
    rig.feed(*rising(50.0, 5.0, 10))
    assert len(rig.events("impact")) == 1

    restarted = make_rig(filling_rule(), at=rig.at)  # forgets which alerts were past it
    restarted.feed(97.0, 98.0)

    assert restarted.status() == "open"
    assert len(restarted.events("impact")) == 1


def test_a_series_that_turns_back_resolves_averted_without_impact(make_rig: RigFactory) -> None:
    rig = make_rig(filling_rule())
    rig.feed(*rising(50.0, 5.0, 6))  # warned at 65 %, up to 75 %
    rig.feed(70.0, 55.0)  # turns back: 55 % < 60 % clears it

    assert rig.kinds() == ["opened", "resolved"]
    [episode] = rig.episodes()
    assert episode.predicted and episode.impact_at is None
    assert episode.averted and episode.caught_first is True
    assert episode.lead_time is None


def test_predict_falling_reaches_its_level_from_above(make_rig: RigFactory) -> None:
    rig = make_rig(free_rule())
    rig.feed(*rising(50.0, -5.0, 9))  # free space down to 10 % at T0+480: warned only
    [(_, opened_at, opened)] = rig.events("opened")
    assert opened_at == T0 + 180 and opened["predicted_at"] == pytest.approx(T0 + 540)
    assert rig.events("impact") == []

    rig.feed(5.0, 4.0, 6.0, 3.0)  # 5 % reached at T0+540; a dip back above is the same episode

    [(_, at, detail)] = rig.events("impact")
    assert at == T0 + 540 and detail["value"] == 5.0
    [episode] = rig.episodes()
    assert episode.lead_time == 360.0


def test_an_alert_that_opens_past_the_level_gets_its_impact_in_the_same_batch(
    make_rig: RigFactory,
) -> None:
    """A `for` of 5 minutes on a fast rise: the value passes 95 % while the alert is still
    pending, so the warning comes too late; the impact is written right after the opening,
    at the same moment."""
    rig = make_rig(filling_rule(for_seconds=300.0))
    rig.feed(*rising(50.0, 10.0, 8))  # pending from 80 % at T0+180; 110 %... at T0+420
    assert rig.events() == []  # no incident while pending, so nothing past the level yet

    rig.feed(130.0)  # T0+480: pending for 300 s, fires

    assert rig.kinds() == ["opened", "impact"]
    (_, opened_at, opened), (_, impact_at, _) = rig.events()
    assert opened_at == impact_at == T0 + 480
    assert opened["since"] == T0 + 180
    [episode] = rig.episodes()
    assert episode.time_to_detect == 300.0
    assert episode.lead_time == 0.0 and episode.caught_first is False


def test_a_recurrence_gets_its_own_impact(make_rig: RigFactory) -> None:
    rig = make_rig(filling_rule())
    rig.feed(*rising(50.0, 5.0, 10))  # opened at T0+180, impact at T0+540
    rig.feed(55.0)  # T0+600: cleared, resolved
    rig.feed(96.0)  # T0+660: past the level at once: the same incident reopens

    assert rig.kinds() == ["opened", "impact", "resolved", "reopened", "impact"]
    [reopened] = rig.events("reopened")
    assert reopened[2]["episode"] == 2 and reopened[2]["since"] == T0 + 660
    first, second = rig.episodes()
    assert (first.impact_at, second.impact_at) == (T0 + 540, T0 + 660)
    assert second.recurrence and second.resolved_for == 60.0
    assert first.recurred
