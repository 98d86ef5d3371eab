"""The running agent: pollers, monitors, outbox and uplink on one asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable

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
from agent.config import AgentConfig, BusConfig
from agent.monitor import UnitMonitor
from agent.outbox import Outbox
from agent.records import TimeBase, event_type_wire
from agent.uplink import Uplink
from protos.liftwatch.v1 import gateway_pb2, records_pb2

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
        self.outbox = Outbox(config.outbox_path)
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
            )
        self.uplink = Uplink(
            self.outbox,
            self.hello,
            config.fleet.endpoints,
            max_batch_records=config.fleet.max_batch_records,
        )

    def _time_base(self) -> TimeBase:
        # Re-read both clocks for every conversion so a stepped wall clock (NTP) is
        # followed from the next record on.
        return TimeBase(self._monotonic(), self._wall())

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
        if records:
            self.outbox.append(records)
            self.uplink.notify()

    def sink(self, bus: str) -> BusSink:
        """The `PollSink` of one bus: routes each slave's reads to its unit's monitor."""
        return BusSink(self, bus)

    def on_sample(self, bus: str, slave: int, values: RawValues, t: float) -> None:
        """A good read of one slave's fast (or fast and slow) spans."""
        unit_id, source = self.routes[(bus, slave)]
        self._keep(self.monitors[unit_id].on_sample(source, values, t, self._time_base()))

    def on_identity(self, bus: str, slave: int, values: RawValues, t: float) -> None:
        """A good read of one slave's identity strings."""
        unit_id, source = self.routes[(bus, slave)]
        self._keep(self.monitors[unit_id].on_identity(source, values, t, self._time_base()))

    def on_failure(self, bus: str, slave: int, fault: LinkFault, t: float) -> None:
        """A request to one slave that got no usable answer."""
        unit_id, source = self.routes[(bus, slave)]
        self._keep(self.monitors[unit_id].on_failure(source, fault, t, self._time_base()))

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

    async def run(self) -> None:
        """Poll, detect, keep and send until cancelled; then close the outbox."""
        self.describe()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as tasks:
                for bus in self.config.buses:
                    scheduler = self.scheduler(bus, loop.time)
                    tasks.create_task(scheduler.run(), name=f"bus {bus.name}")
                tasks.create_task(self.uplink.run(), name="uplink")
        finally:
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


def open_link(bus: BusConfig) -> ModbusLink:
    """The transport of ``bus``: a serial RTU line or one TCP connection."""
    if bus.is_rtu:
        return ModbusRtuLink(
            SerialEndpoint(bus.device, bus.baudrate, bus.serial_format, bus.timeout_s, bus.retries)
        )
    return ModbusTcpLink(TcpEndpoint(bus.host, bus.port, bus.timeout_s, bus.retries))


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
