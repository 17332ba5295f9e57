"""The daemon: wires probes, rules, state and notifiers together and runs until told to stop.

Signal handlers only set flags; the main loop acts on them (SIGTERM/SIGINT: ordered shutdown,
SIGHUP: validated reload that keeps the old config on errors).
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from monitor.alertmanager import PROBE as ALERTMANAGER_PROBE
from monitor.alertmanager import Deadlines
from monitor.alertmanager import receive as receive_alerts
from monitor.clockstep import ClockWatch
from monitor.comms import Communicator, apprise_targets, comms_settings
from monitor.config import (
    PROBE_STALE,
    Config,
    ConfigError,
    HelpdeskConfig,
    load_config,
    stale_after,
)
from monitor.dispatcher import Dispatcher
from monitor.engine import Engine, EngineSettings
from monitor.figures_metrics import FigureExporter
from monitor.logs import config_secrets, redact_also
from monitor.metrics import Metrics
from monitor.scheduler import ProbeScheduler, ScheduledProbe
from monitor.sd_notify import Watchdog, monotonic_usec, notify
from monitor.selfmon import SelfMonitor, with_self_rules
from monitor.snapshot import take_snapshot
from monitor.statuspage import build_view
from monitor.store import Store, shift_pending
from monitor.sync import HelpdeskSync, SyncLoop
from monitor.web import serve
from notifiers import TICKET_BACKENDS
from notifiers.base import Channel, TicketBackend
from notifiers.email import SmtpChannel, SmtpSettings
from notifiers.render import Renderer
from probes import REGISTRY
from probes.base import PersistentProbe, Sample

log = logging.getLogger(__name__)

STATE_FILE = "forewarn.db"
TICK = 1.0  # seconds between evaluations of what happens without samples


def state_path(config: Config) -> Path:
    return Path(config.daemon.state_dir) / STATE_FILE


def build_backend(config: Config, helpdesk: HelpdeskConfig | None = None) -> TicketBackend:
    """The help desk of `[helpdesk]`, or of one `[[route]]`'s."""
    helpdesk = helpdesk or config.helpdesk
    cls = TICKET_BACKENDS[helpdesk.kind]
    backend: TicketBackend = cls.from_config(helpdesk.options, str(state_path(config)))
    return backend


def build_routes(config: Config) -> dict[str, TicketBackend]:
    return {route.name: build_backend(config, route.helpdesk) for route in config.routes}


def build_channel(config: Config) -> Channel | None:
    if config.smtp is None:
        return None
    s = config.smtp
    return SmtpChannel(
        SmtpSettings(
            host=s.host,
            port=s.port,
            security=s.security,
            username=s.username,
            password=s.password,
            sender=s.sender,
            timeout=s.timeout,
            verify_tls=s.verify_tls,
        )
    )


def build_jobs(config: Config, *, keep_state: bool = True) -> list[ScheduledProbe]:
    jobs = []
    for p in config.probes:
        probe = REGISTRY[p.kind](p.name, p.options)
        if keep_state and isinstance(probe, PersistentProbe):
            directory = Path(config.daemon.state_dir) / "probes" / p.name
            directory.mkdir(parents=True, exist_ok=True)
            probe.use_state_dir(directory)
        jobs.append(ScheduledProbe(probe, p.interval, p.timeout, p.jitter))
    return jobs


def engine_settings(config: Config) -> EngineSettings:
    return EngineSettings(
        hostname=config.daemon.hostname,
        reopen_within=config.daemon.reopen_within,
        backend=config.helpdesk.kind,
        helpdesk_contact=config.helpdesk.contact,
        helpdesk_emails=tuple(config.notify.helpdesk),
        email_enabled=config.smtp is not None,
        maintenance=config.maintenance,
        stale_after={p.name: stale_after(p) for p in config.probes}
        | {ALERTMANAGER_PROBE: config.alertmanager.resolve_timeout},
        routes=tuple((route.name, route.matchers) for route in config.routes),
    )


def _served(config: Config) -> str:
    """What the HTTP server offers, for the start-up log line."""
    if not config.daemon.listen:
        return ""
    base = f"http://{config.daemon.listen}"
    status = f", status page on {base}/status" if config.comms.status.enabled else ""
    return f", metrics on {base}/metrics{status}"


def _running(config: Config) -> str:
    """The STATUS= systemctl shows while the daemon runs."""
    return f"running: {len(config.probes)} probes, {len(config.rules)} rules"


@dataclass
class _Flags:
    stop: threading.Event
    reload: threading.Event


class Daemon:
    def __init__(self, config: Config, config_path: str | None) -> None:
        self.config = config
        self.config_path = config_path
        self.flags = _Flags(threading.Event(), threading.Event())
        self.samples: queue.Queue[tuple[str, list[Sample]]] = queue.Queue()
        self.metrics = Metrics()
        self.store = Store(state_path(config))
        self.metrics.watch_store(self._open_incidents, self.store.outbox_stats)
        self.selfmon = SelfMonitor(self.store, config.daemon.state_dir, self.metrics)
        rules, settings = with_self_rules(config), engine_settings(config)
        self.engine = Engine(self.store, rules, settings, self.metrics, take_snapshot)
        backend, routes = build_backend(config), build_routes(config)
        self.dispatcher = Dispatcher(
            self.store,
            backend,
            build_channel(config),
            Renderer(config.daemon.templates_dir or None),
            self.metrics,
            routes=routes,
        )
        self.comms = Communicator(
            self.store,
            comms_settings(config),
            self.metrics,
            lambda name: self.engine.by_name.get(name),
        )
        self.dispatcher.apprise_targets = apprise_targets(self.comms.settings)
        # Built once: a reload keeps its cursor, so no event is observed twice.
        self.figures = FigureExporter(self.store, self.metrics)
        self.scheduler = ProbeScheduler(self._receive, self.metrics)
        self.sync = SyncLoop(
            HelpdeskSync(self.store, backend, routes=routes),
            config.helpdesk.sync_interval,
            self.dispatcher.wake,
        )
        self._server: Any = None
        self._started = self._last_tick = time.time()
        self._reported: dict[str, float] = {}  # probe name -> when it last reported
        self.alert_deadlines = Deadlines()  # Alertmanager alerts with an endsAt ahead
        # Imported here: the API reuses the command line's queries, whose modules import this one.
        from monitor.api import Api

        self.api = Api(
            self.store,
            config.api,
            wake=self.dispatcher.wake,
            stale_probes=self.stale_probes,
            rules=lambda: self.engine.rules,  # the running ones, after a reload too
        )
        self.api.alertmanager_sink = self.receive_alertmanager

    def _open_incidents(self) -> float:
        return float(self.store.query("SELECT COUNT(*) FROM incident WHERE status='open'")[0][0])

    def _receive(self, probe: str, samples: list[Sample]) -> None:
        """Called from scheduler threads: hand over to the main loop."""
        if probe not in self.scheduler.runners:  # a run that outlived its probe's removal
            return
        self._reported[probe] = time.time()
        self.metrics.samples.update(probe, samples)
        self.samples.put((probe, samples))

    def stale_probes(self, now: float) -> list[str]:
        """The probes that missed their schedule (the API's health)."""
        return [sample.labels["probe"] for sample in self._staleness(now) if sample.value]

    def receive_alertmanager(self, payload: dict[str, Any]) -> dict[str, int]:
        """The API's Alertmanager webhook (from its threads): validate, then hand the alerts
        to the main loop as samples. Raises ValueError naming what is malformed."""
        received = receive_alerts(payload, time.time())
        self.alert_deadlines.note(received)
        if received.samples:
            self.samples.put((ALERTMANAGER_PROBE, list(received.samples)))
        log.debug("Alertmanager posted %s", received.summary)
        return received.summary

    # --- life cycle ----------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            self.flags.stop.set()

        def reload(signum: int, _frame: FrameType | None) -> None:
            self.flags.reload.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def run(self) -> int:
        status = self.config.comms.status.enabled  # [status] enabled: read at start only
        self._server = serve(
            self.metrics,
            self.config.daemon.listen,
            (lambda now: build_view(self.store, self.config, now)) if status else None,
            Renderer(self.config.daemon.templates_dir or None),
            api=self.api,
        )
        self.dispatcher.start()
        self.sync.start()
        self.scheduler.start(build_jobs(self.config))
        log.info(
            "forewarn running: %d probes, %d rules, state in %s%s",
            len(self.config.probes),
            len(self.config.rules),
            state_path(self.config),
            _served(self.config),
        )
        notify("READY=1", f"STATUS={_running(self.config)}")
        watchdog = Watchdog.from_environment()
        clock = ClockWatch(time.time(), time.monotonic())
        while not self.flags.stop.is_set():
            watchdog.ping(time.monotonic())  # here, so that a wedged loop stops the pings
            self._process_pending(timeout=0.5)
            jump = clock.step(time.time(), time.monotonic())
            if jump:
                self._clock_stepped(jump)
            self._tick(time.time())
            if self.flags.reload.is_set():
                self.flags.reload.clear()
                notify("RELOADING=1", monotonic_usec())
                notify("READY=1", f"STATUS={self.reload()}")
        self.shutdown()
        return 0

    def _clock_stepped(self, jump: float) -> None:
        """Shift what the daemon counts from by the wall clock's step (see monitor.clockstep):
        incidents and events keep the times they were stamped with."""
        log.warning(
            "the wall clock stepped %+.0f s: probes run now; series ages, rule timers and "
            "pending deliveries move with it",
            jump,
        )
        self._started += jump
        self._last_tick += jump
        self._reported = {probe: at + jump for probe, at in self._reported.items()}
        self.engine.rebase(jump)
        shift_pending(self.store, jump)
        self.scheduler.run_all_now()
        self.dispatcher.wake()

    def _process_pending(self, timeout: float) -> None:
        batch = self._take_batch(timeout)
        if not batch:
            return
        try:
            if self.engine.process(batch, time.time()):
                self.dispatcher.wake()
        except Exception:  # e.g. the disk is full: these samples are lost, the next ones come
            log.exception("could not evaluate %d samples", len(batch))

    def _tick(self, now: float) -> None:
        """Once a second: the dead-man samples, stale series, mutes that ended, and (every
        few seconds) the help-desk figures."""
        if now - self._last_tick < TICK:
            return
        self._last_tick = now
        self.figures.tick(now)  # never raises: a failure is logged and counted
        try:
            samples = [*self._staleness(now), self._dead_deliveries(now)]
            samples += self.selfmon.samples(now)  # outbox age, failing channels, free space
            samples += self.alert_deadlines.lapsed(now)
            changed = self.engine.process(samples, now) + self.engine.tick(now)
            changed += self.comms.tick(now)
        except Exception:
            log.exception("periodic evaluation failed")
            return
        if changed:
            self.dispatcher.wake()

    def _staleness(self, now: float) -> list[Sample]:
        """`probe_stale` 1 for every probe that has not reported for its `stale_after`."""
        samples = []
        for probe in self.config.probes:
            last = self._reported.get(probe.name, self._started)
            value = 1.0 if now - last > stale_after(probe) else 0.0
            labels = {"probe": probe.name, "kind": probe.kind}
            samples.append(Sample(PROBE_STALE, value, now, labels))
        return samples

    def _dead_deliveries(self, now: float) -> Sample:
        """`outbox_dead_recent`: deliveries given up on in the last day (a self-alert)."""
        failed = self.store.failed_deliveries_since(now - 86400)
        return Sample("outbox_dead_recent", float(failed), now, {})

    def _take_batch(self, timeout: float) -> list[Sample]:
        try:
            _probe, batch = self.samples.get(timeout=timeout)
        except queue.Empty:
            return []
        while True:
            try:
                batch = batch + self.samples.get_nowait()[1]
            except queue.Empty:
                return batch

    def reload(self) -> str:
        """Take the config file again, or keep the running config; says which (for systemd)."""
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %d error(s)", len(exc.errors))
            for error in exc.errors:
                log.error("  %s", error)
            refused = f"reload refused: {len(exc.errors)} config error(s), see the log"
            return f"{refused}; still {_running(self.config)}"
        redact_also(config_secrets(config))
        if config.daemon.state_dir != self.config.daemon.state_dir:
            log.warning("daemon.state_dir changed: takes effect at the next restart")
        self.engine.reconfigure(with_self_rules(config), engine_settings(config))
        self.comms.settings = comms_settings(config)
        self.dispatcher.apprise_targets = apprise_targets(self.comms.settings)
        self.dispatcher.channel = build_channel(config)
        # Routes are rebuilt; [helpdesk] itself (and the state directory) need a restart.
        self.dispatcher.routes = self.sync.sync.routes = build_routes(config)
        self.dispatcher.renderer = Renderer(config.daemon.templates_dir or None)
        self.api.settings = config.api  # a new token takes effect with the reload
        self.scheduler.replace(build_jobs(config))
        self.metrics.samples.forget(p.name for p in config.probes)
        self.config = config
        log.info(
            "configuration reloaded: %d probes, %d rules", len(config.probes), len(config.rules)
        )
        return _running(config)

    def shutdown(self) -> None:
        """Stop probing, evaluate what was already sampled, deliver what is due, close the DB."""
        notify("STOPPING=1", "STATUS=shutting down")
        log.info("shutting down")
        self.scheduler.shutdown()
        self.sync.stop()
        self._process_pending(timeout=0)
        self.dispatcher.stop(drain_seconds=5.0)
        if self._server is not None:
            self._server.shutdown()
        self.store.close()
        log.info("stopped")
