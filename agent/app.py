"""The running agent: pollers, monitors, outbox and uplink on one asyncio loop.

Keeping records: each sample is decoded and run through the detectors as soon as it is
read. What it produces is committed to the outbox by poll cycle: the telemetry of a
cycle (state samples, counters, link status, controller info) in one transaction when
the bus scheduler says the cycle ended, an event at once, with ``synchronous=FULL`` and
together with the telemetry held before it, so that seqs follow the order of decision.
The uplink is then told, and sends an event at once and telemetry after at most
``fleet.linger_s``. A crash loses at most the telemetry of the cycle in progress, which
had no seq yet; never an event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Callable
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
from agent.config import AgentConfig, BusConfig, FleetConfig
from agent.metrics import AgentMetrics, serve_metrics
from agent.monitor import UnitMonitor
from agent.outbox import Outbox
from agent.records import TimeBase, event_type_name, event_type_wire, phase_name
from agent.uplink import Uplink
from agent.watchdog import Liveness, SystemdNotifier, keep_watchdog
from protos.liftwatch.v1 import gateway_pb2, records_pb2

if TYPE_CHECKING:
    from agent.mqtt import MqttPublisher

log = logging.getLogger(__name__)


class Agent:
    """Wires buses to monitors to the outbox; the outbox feeds the uplink."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._monotonic = monotonic
        self._wall = wall
        self.metrics = AgentMetrics()
        self.liveness = Liveness(monotonic)
        self.outbox = Outbox(config.outbox_path, max_bytes=config.outbox_max_bytes)
        if self.outbox.moved_aside is not None:
            self.metrics.outbox_corrupt.inc()
        self._watch_outbox()
        self.mqtt: MqttPublisher | None = None
        if config.mqtt.host:
            # Imported only when wanted: aiomqtt is the optional `mqtt` extra.
            from agent.mqtt import MqttConfig, MqttPublisher

            m = config.mqtt
            self.mqtt = MqttPublisher(
                MqttConfig(
                    m.host,
                    m.port,
                    m.prefix,
                    m.username or None,
                    m.password or None,
                    m.queue_size,
                ),
                config.id,
                self.metrics,
            )
        bus_by_name = {b.name: b for b in config.buses}
        # One LinkStats per slave, shared by the bus scheduler (writer) and the monitor.
        self.link_stats: dict[tuple[str, int], LinkStats] = {}
        # (bus, slave) -> (unit id, index of the source in the unit's sources)
        self.routes: dict[tuple[str, int], tuple[str, int]] = {}
        self.monitors: dict[str, UnitMonitor] = {}
        for u in config.units:
            stats = []
            for index, source in enumerate(u.sources):
                where = (u.bus, source.slave)
                stats.append(self.link_stats.setdefault(where, LinkStats()))
                self.routes[where] = (u.id, index)
            self.monitors[u.id] = UnitMonitor(
                u,
                link_lost_after_s=bus_by_name[u.bus].link_lost_after_s,
                state_interval_s=config.state_interval_s,
                counters_interval_s=config.counters_interval_s,
                link_stats=stats,
                on_detection_cost=self.metrics.detection.observe,
            )
        self.uplink = Uplink(
            self.outbox,
            self.hello,
            config.fleet.endpoints,
            max_batch_records=config.fleet.max_batch_records,
            linger_s=config.fleet.linger_s,
            metrics=self.metrics,
            credentials=channel_credentials(config.fleet),
        )
        # Records of the current poll cycle not committed yet: telemetry waits for the
        # cycle's end so that the cycle costs one commit; an event commits it at once.
        self._held: list[records_pb2.Record] = []
        self._workers = {b.name: f"bus {b.name}" for b in config.buses}
        self._cycle_time_base: TimeBase | None = None

    def _watch_outbox(self) -> None:
        # Read at scrape time, on the loop's thread, which owns the SQLite connection.
        outbox = self.outbox
        self.metrics.outbox_depth.set_function(lambda: float(outbox.depth()))
        self.metrics.outbox_used_bytes.set_function(lambda: float(outbox.used_bytes()))

        def oldest_age() -> float:
            oldest = outbox.oldest_time()
            return 0.0 if oldest is None else max(0.0, self._wall() - oldest)

        self.metrics.outbox_oldest_age.set_function(oldest_age)
        self.metrics.outbox_thinned.set_function(lambda: float(outbox.thinned))

    def _time_base(self) -> TimeBase:
        # Both clocks are read once per poll cycle (not per sample: most samples make no
        # record), so a stepped wall clock (NTP) is followed from the next cycle on.
        time_base = self._cycle_time_base
        if time_base is None:
            time_base = self._cycle_time_base = TimeBase(self._monotonic(), self._wall())
        return time_base

    def hello(self) -> gateway_pb2.Hello:
        """The Hello frame: who this agent is and what it watches, with what it can detect."""
        hello = gateway_pb2.Hello(agent_id=self.config.id, agent_version=agent.__version__)
        for unit_id, monitor in self.monitors.items():
            detectable, undetectable = monitor.detectable()
            descriptor = hello.units.add(unit_id=unit_id)
            if monitor.identity is not None:
                descriptor.controller.CopyFrom(monitor.identity)
            else:
                descriptor.controller.profile = monitor.unit.profile
            descriptor.detectable.extend(sorted(map(event_type_wire, detectable)))
            descriptor.undetectable.extend(sorted(map(event_type_wire, undetectable)))
        return hello

    def _keep(self, records: list[records_pb2.Record]) -> None:
        """Keep ``records``: an event commits (synced) and is sent at once, together with
        the telemetry held before it; telemetry alone waits for the end of the cycle."""
        if not records:
            return
        self._held += records
        for record in records:
            if record.WhichOneof("payload") == "event":
                self._commit(urgent=True)
                return

    def _commit(self, *, urgent: bool) -> None:
        records, self._held = self._held, []
        self.outbox.append(records)
        self.uplink.notify(urgent=urgent)
        for record in records:
            if record.WhichOneof("payload") == "event":
                self.metrics.events.labels(
                    event_type_name(record.event.type), phase_name(record.event.phase)
                ).inc()
            if self.mqtt is not None:
                self.mqtt.offer(record)

    def sink(self, bus: str) -> BusSink:
        """The `PollSink` of one bus: routes each slave's reads to its unit's monitor."""
        return BusSink(self, bus)

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

    async def run(self, notifier: SystemdNotifier | None = None) -> None:
        """Poll, detect, keep and send until cancelled; then close the outbox.

        Once every task is started it prints one JSON line on stdout (``{"ready": true,
        "agent_id", "metrics"}``) for the rig, and tells systemd it is ready.
        """
        self.describe()
        loop = asyncio.get_running_loop()
        notifier = notifier or SystemdNotifier()
        metrics_server: asyncio.Server | None = None
        try:
            if self.config.metrics_listen is not None:
                host, port = self.config.metrics_listen
                metrics_server = await serve_metrics(self.metrics, host, port)
                bound = metrics_server.sockets[0].getsockname()
                log.info("metrics on http://%s:%d/metrics", bound[0], bound[1])
            async with asyncio.TaskGroup() as tasks:
                for bus in self.config.buses:
                    scheduler = self.scheduler(bus, loop.time)
                    self.liveness.register(f"bus {bus.name}")
                    tasks.create_task(scheduler.run(), name=f"bus {bus.name}")
                tasks.create_task(self.uplink.run(), name="uplink")
                if self.mqtt is not None:
                    tasks.create_task(self.mqtt.run(), name="mqtt")
                tasks.create_task(keep_watchdog(notifier, self.liveness), name="watchdog")
                metrics_at = (
                    "{}:{}".format(*metrics_server.sockets[0].getsockname()[:2])
                    if metrics_server is not None
                    else None
                )
                print(
                    json.dumps({"ready": True, "agent_id": self.config.id, "metrics": metrics_at}),
                    flush=True,
                )
                notifier.ready(f"watching {len(self.monitors)} unit(s)")
        finally:
            notifier.stopping()
            if metrics_server is not None:
                metrics_server.close()
            if self._held:
                self._commit(urgent=False)  # the last cycle's telemetry, cut short
            self.outbox.close()


class BusSink:
    """Adapts the bus layer's `PollSink` (slave ids) to the agent (units and sources)."""

    def __init__(self, agent: Agent, bus: str) -> None:
        self._agent = agent
        self._bus = bus

    def on_identity(self, slave: int, values: RawValues, t: float) -> None:
        """Identity strings read from ``slave``."""
        self._agent.on_identity(self._bus, slave, values, t)

    def on_sample(self, slave: int, values: RawValues, kind: TurnKind, t: float) -> None:
        """Fast (and on slow turns, slow) spans read from ``slave``."""
        self._agent.on_sample(self._bus, slave, values, t)

    def on_failure(self, slave: int, fault: LinkFault, t: float) -> None:
        """A request to ``slave`` without a usable answer."""
        self._agent.on_failure(self._bus, slave, fault, t)

    def on_cycle_end(self, t: float) -> None:
        """Every due slave of the bus had its turn."""
        self._agent.on_cycle_end(self._bus, t)


def open_link(bus: BusConfig) -> ModbusLink:
    """The transport of ``bus``: a serial RTU line or one TCP connection."""
    if bus.is_rtu:
        return ModbusRtuLink(
            SerialEndpoint(bus.device, bus.baudrate, bus.serial_format, bus.timeout_s, bus.retries)
        )
    return ModbusTcpLink(TcpEndpoint(bus.host, bus.port, bus.timeout_s, bus.retries))


def channel_credentials(fleet: FleetConfig) -> Any:
    """grpc channel credentials for mutual TLS, or None when the config says insecure."""
    if fleet.insecure:
        return None
    assert fleet.ca is not None and fleet.cert is not None and fleet.key is not None
    return grpc.ssl_channel_credentials(
        root_certificates=fleet.ca.read_bytes(),
        private_key=fleet.key.read_bytes(),
        certificate_chain=fleet.cert.read_bytes(),
    )


def run(config: AgentConfig) -> int:
    """Run the agent until SIGTERM or SIGINT; return the exit status."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        # The agent's monotonic clock is the loop's, so poll times and timers agree.
        app = Agent(config, monotonic=loop.time)
        log.info(
            "agent %s watching %d unit(s) on %d bus(es)",
            config.id,
            len(config.units),
            len(config.buses),
        )
        await app.run()

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        log.info("stopped")
    return 0
