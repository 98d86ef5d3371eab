"""The running agent: pollers, monitors, outbox and uplink on one asyncio loop.

Keeping records: each sample is decoded and run through the detectors as soon as it is
read. What it produces is committed to the outbox by poll cycle: the telemetry of a
cycle (state samples, counters, link status, controller info) in one transaction when
the bus scheduler says the cycle ended, an event at once, with ``synchronous=FULL`` and
together with the telemetry held before it, so that seqs follow the order of decision.
The uplink is then told, and sends an event at once and telemetry after at most
``fleet.linger_s``. A crash loses at most the telemetry of the cycle in progress, which
had no seq yet; never an event.

When an append fails (a full disk past the outbox's reserve, a failing card), nothing is
dropped: the records stay held in memory, in order, and every poll cycle tries them
again. Memory stays bounded: past `MAX_HELD_RECORDS` the oldest state samples among them
are dropped (counted as thinned); events, counters, link and controller records never. A
run of failures is counted (``outbox_append_failures_total``, ``outbox_failing_seconds``),
logged, and once it has lasted ``agent.outbox_fail_restart_s`` the watchdog pings stop,
so that systemd restarts the agent.

Stopping: SIGTERM or SIGINT sets the agent's stop flag (`Agent.stop`). Every task is
cancelled, and cancelled again every `RECANCEL_S` until it ends, because a cancellation
can be lost: in Python 3.11 ``asyncio.wait_for`` returns the result instead of raising
when the awaited reply arrived in the same loop iteration, and pymodbus awaits every reply
that way. A bus poller whose cancellation was lost also meets the flag at its next
delivery to the sink, which raises `CancelledError` into it. Whatever still runs after
`STOP_DEADLINE_S` is abandoned: the held records are committed, the outbox closed and the
process exits (systemd's TimeoutStopSec is one second above). Nothing acked is at risk,
and nothing committed is lost: the outbox is the only state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

import agent
from agent.bus.health import LinkStats
from agent.bus.link import (
    LinkFault,
    ModbusLink,
    ModbusRtuLink,
    ModbusTcpLink,
    SerialEndpoint,
    TcpEndpoint,
)
from agent.bus.scheduler import BusScheduler, RawValues, Station, TurnKind
from agent.config import AgentConfig, BusConfig, UnitConfig, UplinkConfig
from agent.metrics import AgentMetrics, MetricsServer, serve_metrics
from agent.monitor import UnitMonitor
from agent.outbox import DURABLE_KINDS, Outbox, OutboxFullError
from agent.recorder import Recorder, RequestError, onset_lag_s
from agent.records import TimeBase, event_type_name, event_type_wire, phase_name
from agent.remote_config import AppliedDocument, RemoteConfig
from agent.update import Updates
from agent.uplink import Uplink
from agent.watchdog import Liveness, SystemdNotifier, keep_watchdog
from protos.liftwatch.v1 import gateway_pb2, records_pb2

if TYPE_CHECKING:
    from agent.mqtt import MqttPublisher

log = logging.getLogger(__name__)

# Records held in memory while appends fail; past this many the oldest state samples among
# them are dropped (about 8 MB of records; at 10 Hz on 8 cars, minutes of samples).
MAX_HELD_RECORDS = 20_000
# A run of failed appends is logged at its start and then at most this often.
FAILURE_LOG_EVERY_S = 30.0
# The worker name the outbox's appends report under to the watchdog's Liveness.
OUTBOX_WORKER = "outbox"
# Stopping: tasks are cancelled again this often until they end, for at most this long.
RECANCEL_S = 0.05
STOP_DEADLINE_S = 4.0


class Agent:
    """Wires buses to monitors to the outbox; the outbox feeds the uplink."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        config_path: Path | None = None,
        applied: AppliedDocument | None = None,
    ) -> None:
        """``config_path``: the box's own config file, which fleet documents are merged
        into (None: the agent takes none); ``applied``: the fleet document ``config``
        already holds (`agent.remote_config.load_running_config`)."""
        self.config = config
        self._monotonic = monotonic
        self._wall = wall
        self.metrics = AgentMetrics()
        self.liveness = Liveness(monotonic)
        self.outbox = Outbox(
            config.outbox_path,
            max_bytes=config.outbox_max_bytes,
            reserve_bytes=config.outbox_reserve_bytes,
        )
        if self.outbox.moved_aside is not None:
            self.metrics.outbox_corrupt.inc()
        self._watch_outbox()
        self.mqtt: MqttPublisher | None = None
        if config.mqtt.host:
            # Imported only when wanted: aiomqtt is the optional `mqtt` extra.
            from agent.mqtt import MqttPublisher

            self.mqtt = MqttPublisher(config.mqtt, config.id, self.metrics)
        # One LinkStats per slave, shared by the bus scheduler (writer) and the monitor.
        self.link_stats: dict[tuple[str, int], LinkStats] = {}
        # (bus, slave) -> (unit id, index of the source in the unit's sources)
        self.routes: dict[tuple[str, int], tuple[str, int]] = {}
        self.monitors: dict[str, UnitMonitor] = {}
        for u in config.units:
            self.monitors[u.id] = self._monitor(u, config)
        # Units a fleet document removed, still named in the Hello for this process's
        # life: records of theirs in the outbox must not be refused by the fleet.
        self.retired_units: dict[str, gateway_pb2.UnitDescriptor] = {}
        if applied is not None:
            # Started on a fleet document, which may have removed units whose records
            # still wait in the outbox: named too (bare), or the fleet would refuse them.
            for unit_id in sorted(self.outbox.unit_ids() - self.monitors.keys()):
                self.retired_units[unit_id] = gateway_pb2.UnitDescriptor(unit_id=unit_id)
        # The bus tasks by bus name, and each bus's sink (a replaced bus's is retired).
        self._bus_tasks: dict[str, asyncio.Task[None]] = {}
        self._sinks: dict[str, BusSink] = {}
        self.remote = (
            RemoteConfig(
                config_path,
                config.data_dir,
                self.apply_config,
                applied,
                on_outcome=lambda outcome: self.metrics.config_documents.labels(outcome).inc(),
            )
            if config_path is not None
            else None
        )
        ring_bytes = sum(
            m.recorder.ring_bytes for m in self.monitors.values() if m.recorder is not None
        )
        self.metrics.recorder_ring_bytes.set(ring_bytes)
        # Signed releases (issue 20): offers verified, bundles fetched and staged for the
        # updater, its outcomes reported; never the outbox (agent.update).
        self.updates = Updates(
            config,
            agent.__version__,
            lambda release_id, file: self.uplink.fetch_release(release_id, file),
            lambda frame: self.uplink.send_frame(frame),
            self.detector_errors,
            self.metrics,
        )
        self.uplink = Uplink(
            self.outbox,
            self.hello,
            config.fleet.endpoints,
            max_batch_records=config.fleet.max_batch_records,
            linger_s=config.fleet.linger_s,
            metrics=self.metrics,
            credentials=channel_credentials(config.fleet),
            on_evidence_request=self.on_evidence_request,
            on_desired_config=self.remote.receive if self.remote is not None else None,
            on_release_offer=self.updates.on_offer,
            on_connected=self.updates.on_connected,
        )
        if applied is not None:  # reported again at each session start (agent.uplink)
            self.uplink.config_report = gateway_pb2.ConfigReport(
                document_id=applied.document_id, version=applied.version, applied=True
            )
        # Records of the current poll cycle not committed yet: telemetry waits for the
        # cycle's end so that the cycle costs one commit; an event commits it at once.
        self._held: list[records_pb2.Record] = []
        # State samples dropped from memory while appends failed (see MAX_HELD_RECORDS).
        self.held_thinned = 0
        self._next_failure_log = float("-inf")
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Tasks still running when the stop deadline passed (normally none).
        self.abandoned: list[str] = []
        self._workers = {b.name: f"bus {b.name}" for b in config.buses}
        self._cycle_time_base: TimeBase | None = None

    def _monitor(self, u: UnitConfig, config: AgentConfig) -> UnitMonitor:
        """A new monitor of unit ``u`` (its LinkStats and routes registered)."""
        stats = []
        for index, source in enumerate(u.sources):
            where = (u.bus, source.slave)
            stats.append(self.link_stats.setdefault(where, LinkStats()))
            self.routes[where] = (u.id, index)
        bus = next(b for b in config.buses if b.name == u.bus)
        return UnitMonitor(
            u,
            link_lost_after_s=bus.link_lost_after_s,
            state_interval_s=config.state_interval_s,
            counters_interval_s=config.counters_interval_s,
            link_stats=stats,
            on_detection_cost=self.metrics.detection.observe,
            recorder=Recorder(u.id, u.recorder, lag_s=onset_lag_s(u.detect), poll_hz=bus.poll_hz),
        )

    def apply_config(self, new: AgentConfig) -> dict[str, str]:
        """Run ``new`` (checked: `agent.remote_config`) from now on, atomically on the
        event loop (no poll delivery runs in between) and without losing a record.

        A unit whose configuration changed gets a new monitor (the old one's open evidence
        windows are cut and kept); an unchanged unit keeps its monitor and its state. A
        bus is restarted only when its own settings or its stations (slaves, profiles)
        changed; the polling of every other bus goes on untouched. The outbox, uplink and
        metrics are kept as they are; the uplink says Hello again when the units changed.
        Returns each unit touched: ``added``, ``changed`` (new monitor) or ``removed``.
        """
        old = self.config
        old_units = {u.id: u for u in old.units}
        new_units = {u.id: u for u in new.units}
        old_buses = {b.name: b for b in old.buses}
        new_buses = {b.name: b for b in new.buses}
        # A unit changes with its own table or its bus's settings (its monitor and
        # recorder are built with the bus's link_lost_after_s and poll_hz).
        changed = sorted(
            {
                i
                for i, u in new_units.items()
                if old_units.get(i) != u or old_buses.get(u.bus) != new_buses.get(u.bus)
            }
            | (old_units.keys() - new_units.keys())
        )
        restart = sorted(
            name
            for name in old_buses.keys() | new_buses.keys()
            if old_buses.get(name) != new_buses.get(name)
            or _stations(old, name) != _stations(new, name)
        )
        now_us = round(self._wall() * 1e6)
        for unit_id in changed:
            monitor = self.monitors.pop(unit_id, None)
            if monitor is not None and monitor.recorder is not None:
                self._held += monitor.recorder.shutdown(now_us)
            if unit_id not in new_units and monitor is not None:
                self.retired_units[unit_id] = self._descriptor(unit_id, monitor)
        self.routes = {
            where: route for where, route in self.routes.items() if route[0] not in changed
        }
        self.config = new
        for unit_id in changed:
            if unit_id in new_units:
                self.monitors[unit_id] = self._monitor(new_units[unit_id], new)
                self.retired_units.pop(unit_id, None)
        self._workers = {b.name: f"bus {b.name}" for b in new.buses}
        if self._held:
            self._commit(urgent=False)
        loop = asyncio.get_running_loop() if self._bus_tasks else None
        for name in restart:
            self._retire_bus(name)
            if name in new_buses and loop is not None:
                self._start_bus(new_buses[name], loop)
            elif name not in new_buses:
                self.liveness.forget(f"bus {name}")
                self.liveness.forget(sink_worker(name))
        log.info(
            "configuration applied: unit(s) rebuilt: %s; bus(es) restarted: %s",
            ", ".join(changed) or "none",
            ", ".join(restart) or "none",
        )
        if old_units.keys() != new_units.keys():
            self.uplink.rehello()
        return {
            unit_id: "added"
            if unit_id not in old_units
            else "removed"
            if unit_id not in new_units
            else "changed"
            for unit_id in changed
        }

    def _retire_bus(self, name: str) -> None:
        """Stop the poller of bus ``name``: its sink refuses further deliveries."""
        sink = self._sinks.pop(name, None)
        if sink is not None:
            sink.retired = True
        task = self._bus_tasks.pop(name, None)
        if task is not None:
            task.cancel()

    def _start_bus(self, bus: BusConfig, loop: asyncio.AbstractEventLoop) -> None:
        scheduler = self.scheduler(bus, loop.time)
        self.liveness.register(f"bus {bus.name}")
        task = loop.create_task(scheduler.run(), name=f"bus {bus.name}")
        self._bus_tasks[bus.name] = task
        self._tasks.append(task)

    def _watch_outbox(self) -> None:
        # Read at scrape time, on the loop's thread, which owns the SQLite connection.
        outbox = self.outbox
        self.metrics.outbox_depth.set_function(lambda: float(outbox.depth()))
        self.metrics.outbox_used_bytes.set_function(lambda: float(outbox.used_bytes()))

        def oldest_age() -> float:
            oldest = outbox.oldest_time()
            return 0.0 if oldest is None else max(0.0, self._wall() - oldest)

        self.metrics.outbox_oldest_age.set_function(oldest_age)
        self.metrics.outbox_thinned.set_function(lambda: float(outbox.thinned + self.held_thinned))
        self.metrics.outbox_held.set_function(lambda: float(len(self._held)))
        self.metrics.outbox_failing.set_function(lambda: self.liveness.failing_for(OUTBOX_WORKER))
        self.metrics.outbox_reserve_held.set_function(lambda: float(outbox.reserve_held()))
        self.metrics.outbox_quarantined.set_function(lambda: float(outbox.quarantine_count()))
        self.metrics.evidence_held_back.set_function(lambda: float(outbox.held_count()))

    def _time_base(self) -> TimeBase:
        # Both clocks are read once per poll cycle (not per sample: most samples make no
        # record), so a stepped wall clock (NTP) is followed from the next cycle on.
        time_base = self._cycle_time_base
        if time_base is None:
            time_base = self._cycle_time_base = TimeBase(self._monotonic(), self._wall())
        return time_base

    def hello(self) -> gateway_pb2.Hello:
        """The Hello frame: who this agent is and what it watches, with what it can detect."""
        hello = gateway_pb2.Hello(
            agent_id=self.config.id,
            agent_version=agent.__version__,
            records_evidence=True,
            config_version=self.remote.version if self.remote is not None else 0,
            accepts_config=self.remote is not None,
        )
        for unit_id, monitor in self.monitors.items():
            hello.units.append(self._descriptor(unit_id, monitor))
        hello.units.extend(
            d for unit_id, d in self.retired_units.items() if unit_id not in self.monitors
        )
        return hello

    @staticmethod
    def _descriptor(unit_id: str, monitor: UnitMonitor) -> gateway_pb2.UnitDescriptor:
        detectable, undetectable = monitor.detectable()
        descriptor = gateway_pb2.UnitDescriptor(unit_id=unit_id)
        if monitor.identity is not None:
            descriptor.controller.CopyFrom(monitor.identity)
        else:
            descriptor.controller.profile = monitor.unit.profile
        descriptor.detectable.extend(sorted(map(event_type_wire, detectable)))
        descriptor.undetectable.extend(sorted(map(event_type_wire, undetectable)))
        return descriptor

    def _keep(self, records: list[records_pb2.Record]) -> None:
        """Keep ``records``: an event commits (synced) and is sent at once, together with
        the telemetry held before it; telemetry alone waits for the end of the cycle."""
        if not records:
            return
        self._held += records
        for record in records:
            # An event's evidence is kept (synced, sent at once) as the event is.
            if record.WhichOneof("payload") in DURABLE_KINDS:
                self._commit(urgent=True)
                return

    def _commit(self, *, urgent: bool) -> bool:
        """Append every held record; they stay held when the append fails (False)."""
        records = self._held
        try:
            self.outbox.append(records)
        except (sqlite3.Error, OutboxFullError, OSError) as exc:
            self._append_failed(exc)
            return False
        self._held = []
        failed_for = self.liveness.failing_for(OUTBOX_WORKER)
        if failed_for > 0:
            log.warning(
                "outbox appends work again after %.1f s; %d held record(s) committed",
                failed_for,
                len(records),
            )
            self._next_failure_log = float("-inf")
        self.liveness.recovered(OUTBOX_WORKER)
        has_event = False
        for record in records:
            kind = record.WhichOneof("payload")
            if kind == "event":
                has_event = True
                self.metrics.events.labels(
                    event_type_name(record.event.type), phase_name(record.event.phase)
                ).inc()
            elif kind == "evidence":
                has_event = True
                self.metrics.evidence_windows.labels(
                    records_pb2.EvidenceEnd.Name(record.evidence.end)
                    .removeprefix("EVIDENCE_END_")
                    .lower()
                ).inc()
                self.metrics.evidence_bytes.inc(record.ByteSize())
            if self.mqtt is not None:
                self.mqtt.offer(record)
        # Held events committed late by a telemetry commit still go at once.
        self.uplink.notify(urgent=urgent or has_event)
        return True

    def _append_failed(self, exc: Exception) -> None:
        self.metrics.outbox_append_failures.inc()
        failing_s = self.liveness.failing(OUTBOX_WORKER, self.config.outbox_fail_restart_s)
        self._thin_held()
        now = self._monotonic()
        if now < self._next_failure_log:
            return
        self._next_failure_log = now + FAILURE_LOG_EVERY_S
        events = sum(1 for r in self._held if r.WhichOneof("payload") == "event")
        log.error(
            "outbox append failing for %.1f s (%s): %d record(s), %d of them events, held in "
            "memory and retried every poll cycle; after %.0f s the watchdog pings stop",
            failing_s,
            exc,
            len(self._held),
            events,
            self.config.outbox_fail_restart_s,
        )

    def _thin_held(self) -> None:
        """Drop the oldest held state samples beyond `MAX_HELD_RECORDS`, never anything else."""
        excess = len(self._held) - MAX_HELD_RECORDS
        if excess <= 0:
            return
        kept: list[records_pb2.Record] = []
        for record in self._held:
            if excess > 0 and record.WhichOneof("payload") == "car_state":
                excess -= 1
                self.held_thinned += 1
                continue
            kept.append(record)
        self._held = kept

    def sink(self, bus: str) -> BusSink:
        """The `PollSink` of one bus: routes each slave's reads to its unit's monitor."""
        sink = self._sinks[bus] = BusSink(self, bus)
        return sink

    def on_sample(self, bus: str, slave: int, values: RawValues, t: float) -> None:
        """A good read of one slave's fast (or fast and slow) spans."""
        unit_id, source = self.routes[(bus, slave)]
        self.liveness.beat(self._workers[bus])
        self._keep(self.monitors[unit_id].on_sample(source, values, t, self._time_base()))

    def on_identity(self, bus: str, slave: int, values: RawValues, t: float) -> None:
        """A good read of one slave's identity strings."""
        unit_id, source = self.routes[(bus, slave)]
        self._keep(self.monitors[unit_id].on_identity(source, values, t, self._time_base()))

    def on_failure(self, bus: str, slave: int, fault: LinkFault, t: float) -> None:
        """A request to one slave that got no usable answer."""
        unit_id, source = self.routes[(bus, slave)]
        self.liveness.beat(self._workers[bus])
        self.metrics.link_errors.labels(unit_id, fault.value).inc()
        self._keep(self.monitors[unit_id].on_failure(source, fault, t, self._time_base()))

    def on_evidence_request(self, request: gateway_pb2.EvidenceRequest) -> None:
        """Answer the fleet's "what is this car doing?" with an Evidence of the unit's last
        ``request.seconds``, kept through the outbox like any record. Reads the recorder,
        never the bus. An unknown unit or seconds out of reach is logged and counted."""
        monitor = self.monitors.get(request.unit_id)
        recorder = monitor.recorder if monitor is not None else None
        if recorder is None:
            self.metrics.evidence_requests.labels("unknown_unit").inc()
            log.warning(
                "evidence request %r: no unit %r on this agent (watching %s); not answered",
                request.request_id,
                request.unit_id,
                ", ".join(sorted(self.monitors)),
            )
            return
        try:
            record = recorder.request(
                request.request_id, request.seconds, round(self._wall() * 1e6)
            )
        except RequestError as exc:
            self.metrics.evidence_requests.labels("bad_seconds").inc()
            log.warning(
                "evidence request %r for unit %s not answered: %s",
                request.request_id,
                request.unit_id,
                exc,
            )
            return
        self.metrics.evidence_requests.labels("answered").inc()
        log.info(
            "evidence request %r: the last %d s of unit %s (%d samples)",
            request.request_id,
            request.seconds,
            request.unit_id,
            record.evidence.samples,
        )
        self._keep([record])

    def on_cycle_end(self, bus: str, t: float) -> None:
        """A poll cycle of ``bus`` ended: decide what time alone decides (a controller
        silent long enough is lost, whatever its retry back-off), then commit the
        telemetry the cycle produced, in one go."""
        for monitor in self.monitors.values():
            if monitor.unit.bus == bus:
                self._keep(monitor.on_cycle_end(t, self._time_base()))
        self._cycle_time_base = None
        if self._held:
            self._commit(urgent=False)

    def scheduler(self, bus: BusConfig, clock: Callable[[], float]) -> BusScheduler:
        """The scheduler of one bus, polling every source of every unit on it."""
        stations = [
            Station(
                source.slave,
                source.profile.plan(bus.cost_model),
                self.link_stats[(bus.name, source.slave)],
            )
            for unit in self.config.units
            if unit.bus == bus.name
            for source in unit.sources
        ]
        return BusScheduler(
            bus.name,
            open_link(bus),
            stations,
            self.sink(bus.name),
            clock,
            period_s=1.0 / bus.poll_hz,
            frame_gap_s=bus.frame_gap_s,
            slow_poll_s=bus.slow_poll_s,
            identity_poll_s=bus.identity_poll_s,
            backoff_max_s=bus.backoff_max_s,
        )

    def describe(self) -> None:
        """Log, per unit, which events its profile lets the agent detect and which not."""
        for unit_id, monitor in self.monitors.items():
            detectable, _ = monitor.detectable()
            names = ", ".join(sorted(t.name for t in detectable)) or "none"
            reasons = monitor.undetectable_reasons()
            missing = (
                "; ".join(
                    f"{t.name} ({why})"
                    for t, why in sorted(reasons.items(), key=lambda item: item[0].name)
                )
                or "none"
            )
            profiles = " + ".join(f"{s.profile.name}@{s.slave}" for s in monitor.unit.sources)
            log.info(
                "unit %s (%s) detects: %s; cannot detect: %s",
                unit_id,
                profiles,
                names,
                missing,
            )

    def detector_errors(self) -> int:
        """Deliveries of reads that raised (a bug in a detector, say) since the start, over
        every bus: what a rollout's gate watches not rising (agent.update reports it)."""
        return int(
            sum(
                sample.value
                for metric in self.metrics.sink_failures.collect()
                for sample in metric.samples
                if sample.name.endswith("_total")
            )
        )

    def sink_failed(self, bus: str) -> None:
        """A delivery of ``bus`` raised: count it; a run of them longer than
        ``agent.outbox_fail_restart_s`` stops the watchdog pings."""
        self.metrics.sink_failures.labels(bus).inc()
        self.liveness.failing(sink_worker(bus), self.config.outbox_fail_restart_s)

    def stop(self) -> None:
        """Ask the agent to stop (SIGTERM): `run` cancels every task, again and again until
        each has ended or `STOP_DEADLINE_S` has passed. Calling it again cancels again."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()

    @property
    def stopping(self) -> bool:
        """True once `stop` was called (or `run` is ending)."""
        return self._stop.is_set()

    def check_stopping(self) -> None:
        """Raise `CancelledError` into the caller once the agent is stopping: a poller whose
        cancellation ``wait_for`` swallowed meets this at its next delivery."""
        if self._stop.is_set():
            raise asyncio.CancelledError("the agent is stopping")

    async def run(self, notifier: SystemdNotifier | None = None) -> None:
        """Poll, detect, keep and send until `stop` or cancellation; then commit what is
        held and close the outbox, within `STOP_DEADLINE_S` of the stop.

        Once every task is started it prints one JSON line on stdout (``{"ready": true,
        "agent_id", "metrics"}``) for the rig, and tells systemd it is ready. A task that
        fails ends the run (the others are stopped) and its exception is raised.
        """
        self.describe()
        loop = asyncio.get_running_loop()
        notifier = notifier or SystemdNotifier()
        metrics_server: MetricsServer | None = None
        try:
            if self.config.metrics_listen is not None:
                host, port = self.config.metrics_listen
                metrics_server = await serve_metrics(self.metrics, host, port)
                log.info("metrics on http://%s:%d/metrics", *metrics_server.address)
            for bus in self.config.buses:
                self._start_bus(bus, loop)
            self._tasks.append(loop.create_task(self.uplink.run(), name="uplink"))
            self._tasks.append(loop.create_task(self.updates.run(), name="updates"))
            if self.mqtt is not None:
                self._tasks.append(loop.create_task(self.mqtt.run(), name="mqtt"))
            self._tasks.append(
                loop.create_task(keep_watchdog(notifier, self.liveness), name="watchdog")
            )
            metrics_at = (
                "{}:{}".format(*metrics_server.address) if metrics_server is not None else None
            )
            print(
                json.dumps({"ready": True, "agent_id": self.config.id, "metrics": metrics_at}),
                flush=True,
            )
            notifier.ready(f"watching {len(self.monitors)} unit(s)")
            await self._until_stop_or_failure()
        finally:
            self._stop.set()
            notifier.stopping()
            if metrics_server is not None:
                await metrics_server.stop()
            await self._end_tasks(loop.time() + STOP_DEADLINE_S)
            # Evidence windows still open are cut at the stop (end SHUTDOWN).
            now_us = round(self._wall() * 1e6)
            for monitor in self.monitors.values():
                if monitor.recorder is not None:
                    self._held += monitor.recorder.shutdown(now_us)
            if self._held and not self._commit(urgent=False):
                log.error("stopping with %d record(s) not committed", len(self._held))
            self.outbox.close()

    async def _until_stop_or_failure(self) -> None:
        stopped: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        running: set[asyncio.Future[Any]] = set(self._tasks)
        try:
            while running and not self._stop.is_set():
                done, running = await asyncio.wait(
                    running | {stopped}, return_when=asyncio.FIRST_COMPLETED
                )
                running.discard(stopped)
                for task in self._tasks:
                    if task in done and not task.cancelled() and task.exception() is not None:
                        log.error("task %s failed; stopping", task.get_name())
                        task.result()
        finally:
            stopped.cancel()

    async def _end_tasks(self, deadline: float) -> None:
        """Cancel every task until it ends (a cancellation may be lost, see the module
        doc); what still runs at ``deadline`` is abandoned and named in `abandoned`."""
        loop = asyncio.get_running_loop()
        while True:
            running = [t for t in self._tasks if not t.done()]
            left = deadline - loop.time()
            if not running or left <= 0:
                break
            for task in running:
                task.cancel()
            try:
                await asyncio.wait(running, timeout=min(RECANCEL_S, left))
            except asyncio.CancelledError:
                # Cancelled again (a second signal, a test): the stop is already under way.
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("task %s ended with %r", task.get_name(), task.exception())
        self.abandoned = sorted(t.get_name() for t in self._tasks if not t.done())
        if self.abandoned:
            log.error(
                "stopping without waiting for %s: still running %.1f s after the stop",
                ", ".join(self.abandoned),
                STOP_DEADLINE_S,
            )


class BusSink:
    """Adapts the bus layer's `PollSink` (slave ids) to the agent (units and sources)."""

    def __init__(self, agent: Agent, bus: str) -> None:
        self._agent = agent
        self._bus = bus
        self._worker = sink_worker(bus)
        # Set when a fleet document replaced this bus: a delivery still arriving from
        # its old poller is refused (CancelledError ends that poller).
        self.retired = False

    # Each delivery is kept first, then meets the stop flag: what was read is never lost,
    # and a poller whose cancellation was swallowed ends here (see the module doc).
    def on_identity(self, slave: int, values: RawValues, t: float) -> None:
        """Identity strings read from ``slave``."""
        self._deliver(self._agent.on_identity, slave, values, t)

    def on_sample(self, slave: int, values: RawValues, kind: TurnKind, t: float) -> None:
        """Fast (and on slow turns, slow) spans read from ``slave``."""
        self._deliver(self._agent.on_sample, slave, values, t)

    def on_failure(self, slave: int, fault: LinkFault, t: float) -> None:
        """A request to ``slave`` without a usable answer."""
        self._deliver(self._agent.on_failure, slave, fault, t)

    def on_cycle_end(self, t: float) -> None:
        """Every due slave of the bus had its turn."""
        self._deliver(self._agent.on_cycle_end, t)

    def _deliver(self, call: Callable[..., None], *args: object) -> None:
        if self.retired:
            raise asyncio.CancelledError(f"bus {self._bus} was replaced")
        # A delivery that raises (a bug in a detector, say) is counted, and a run of them
        # that lasts stops the watchdog pings like failing appends do; the scheduler logs it.
        try:
            call(self._bus, *args)
        except Exception:
            self._agent.sink_failed(self._bus)
            raise
        self._agent.liveness.recovered(self._worker)
        self._agent.check_stopping()


def sink_worker(bus: str) -> str:
    """The name a bus's deliveries report under to the watchdog's `Liveness`."""
    return f"sink {bus}"


def open_link(bus: BusConfig) -> ModbusLink:
    """The transport of ``bus``: a serial RTU line or one TCP connection."""
    if bus.is_rtu:
        return ModbusRtuLink(
            SerialEndpoint(bus.device, bus.baudrate, bus.serial_format, bus.timeout_s, bus.retries)
        )
    return ModbusTcpLink(TcpEndpoint(bus.host, bus.port, bus.timeout_s, bus.retries))


def channel_credentials(fleet: UplinkConfig) -> Any:
    """grpc channel credentials for mutual TLS, or None when the config says insecure."""
    if fleet.insecure:
        return None
    assert fleet.ca is not None and fleet.cert is not None and fleet.key is not None
    return grpc.ssl_channel_credentials(
        root_certificates=fleet.ca.read_bytes(),
        private_key=fleet.key.read_bytes(),
        certificate_chain=fleet.cert.read_bytes(),
    )


def _stations(config: AgentConfig, bus: str) -> list[tuple[int, object]]:
    """What the poller of ``bus`` polls: each source's slave and profile, in order."""
    return sorted(
        ((s.slave, s.profile) for u in config.units if u.bus == bus for s in u.sources),
        key=lambda station: station[0],
    )


def run(
    config: AgentConfig, config_path: Path | None = None, applied: AppliedDocument | None = None
) -> int:
    """Run the agent until SIGTERM or SIGINT; return the exit status. With
    ``config_path`` it takes the fleet's configuration documents (agent.remote_config)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # The agent's monotonic clock is the loop's, so poll times and timers agree.
        app = Agent(config, monotonic=loop.time, config_path=config_path, applied=applied)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, app.stop)
        log.info(
            "agent %s watching %d unit(s) on %d bus(es)",
            config.id,
            len(config.units),
            len(config.buses),
        )
        await app.run()
        log.info("stopped")
        if app.abandoned:
            # asyncio.run would wait for them forever; the outbox is already closed.
            logging.shutdown()
            os._exit(0)

    asyncio.run(main())
    return 0
