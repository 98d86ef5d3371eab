"""The running agent: pollers, monitors, outbox and uplink on one asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable

import agent
from agent.bus.link import LinkFault, ModbusTcpLink, TcpEndpoint
from agent.bus.poller import BusPoller, PolledSlave
from agent.config import AgentConfig
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
        self.monitors = {
            u.id: UnitMonitor(
                u,
                link_lost_after_s=bus_by_name[u.bus].link_lost_after_s,
                state_interval_s=config.state_interval_s,
                counters_interval_s=config.counters_interval_s,
            )
            for u in config.units
        }
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

    def on_state(self, unit_id: str, registers: list[int], t: float) -> None:
        """PollSink: a good read of a unit's state registers."""
        self._keep(self.monitors[unit_id].on_state(registers, t, self._time_base()))

    def on_identity(self, unit_id: str, registers: list[int], t: float) -> None:
        """PollSink: a good read of a unit's identity strings."""
        self._keep(self.monitors[unit_id].on_identity(registers, t, self._time_base()))

    def on_failure(self, unit_id: str, fault: LinkFault, t: float) -> None:
        """PollSink: a request to a unit that got no usable answer."""
        self._keep(self.monitors[unit_id].on_failure(fault, t, self._time_base()))

    def describe(self) -> None:
        """Log, per unit, which events its profile lets the agent detect and which not."""
        for unit_id, monitor in self.monitors.items():
            detectable, undetectable = monitor.detectable()
            names = ", ".join(sorted(t.name for t in detectable)) or "none"
            missing = ", ".join(sorted(t.name for t in undetectable)) or "none"
            log.info(
                "unit %s (profile %s) detects: %s; cannot detect: %s",
                unit_id,
                monitor.unit.profile,
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
                    slaves = [
                        PolledSlave(u.id, u.slave) for u in self.config.units if u.bus == bus.name
                    ]
                    link = ModbusTcpLink(
                        TcpEndpoint(bus.host, bus.port, bus.timeout_s, bus.retries)
                    )
                    poller = BusPoller(link, slaves, bus.poll_hz, self, loop.time)
                    tasks.create_task(poller.run(), name=f"bus {bus.name}")
                tasks.create_task(self.uplink.run(), name="uplink")
        finally:
            self.outbox.close()


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
