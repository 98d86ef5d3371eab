"""`BusPoller`: polls every slave on one bus in turn at the configured rate.

It emits raw register blocks with the monotonic time of the read, and failures by kind,
to a `PollSink`; it knows nothing of decoding or detection. Identity strings are read at
start and after every link recovery. One failure never ends the loop: the only way out
is cancellation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.bus.link import LinkError, LinkFault, ModbusTcpLink

log = logging.getLogger(__name__)

STATE_BLOCK = (0, 16)  # (address, count) of the live-state registers of the reference map
IDENTITY_BLOCK = (20, 24)


@dataclass(frozen=True, slots=True)
class PolledSlave:
    unit_id: str
    slave: int


class PollSink(Protocol):
    def on_state(self, unit_id: str, registers: list[int], t: float) -> None: ...
    def on_identity(self, unit_id: str, registers: list[int], t: float) -> None: ...
    def on_failure(self, unit_id: str, fault: LinkFault, t: float) -> None: ...


class BusPoller:
    """Reads the state of every slave on one bus once per period, forever."""

    def __init__(
        self,
        link: ModbusTcpLink,
        slaves: Sequence[PolledSlave],
        poll_hz: float,
        sink: PollSink,
        clock: Callable[[], float],
    ) -> None:
        self._link = link
        self._slaves = list(slaves)
        self._period = 1.0 / poll_hz
        self._sink = sink
        self._clock = clock
        self._identity_due = {s.unit_id for s in slaves}

    async def run(self) -> None:
        """Poll until cancelled; failures are reported to the sink, never raised."""
        next_cycle = self._clock()
        try:
            while True:
                for slave in self._slaves:
                    await self._poll(slave)
                next_cycle += self._period
                delay = next_cycle - self._clock()
                if delay < 0:
                    # Behind schedule: start the next cycle now rather than bursting to
                    # catch up, which would only crowd the bus.
                    next_cycle = self._clock()
                    delay = 0
                await asyncio.sleep(delay)
        finally:
            self._link.close()

    async def _poll(self, slave: PolledSlave) -> None:
        if slave.unit_id in self._identity_due:
            registers = await self._read(slave, *IDENTITY_BLOCK)
            if registers is None:
                return
            self._identity_due.discard(slave.unit_id)
            self._sink.on_identity(slave.unit_id, registers, self._clock())
        registers = await self._read(slave, *STATE_BLOCK)
        if registers is not None:
            self._sink.on_state(slave.unit_id, registers, self._clock())

    async def _read(self, slave: PolledSlave, address: int, count: int) -> list[int] | None:
        try:
            return await self._link.read_holding(slave.slave, address, count)
        except LinkError as exc:
            if slave.unit_id not in self._identity_due:
                log.warning("unit %s (slave %d): %s", slave.unit_id, slave.slave, exc)
            # After any failure, read the identity again on recovery: a rebooted or
            # swapped controller may answer with new firmware.
            self._identity_due.add(slave.unit_id)
            self._sink.on_failure(slave.unit_id, exc.fault, self._clock())
            return None
