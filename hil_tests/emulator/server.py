"""Modbus TCP serving of a `CarGroup`, on pymodbus's `SimDevice` simulator API.

Each car is one `SimDevice` (slave id = car number) holding registers 0..43; anything past
43 is an exception response. The device's async `action` hook re-encodes the car from the
model on every request, so reads are as fresh as the physics. The physics itself advances
on a periodic task reading `loop.time()` and passing it to the group.

Link faults act through the same hook where Modbus TCP can express them: `no_answer` and a
reboot's silence raise pymodbus's NoSuchIdException, which a server built with
`ignore_missing_devices` answers with nothing (real unknown ids still get 0x0B from the
catch-all device 0); `late_answer` awaits its delay in the request's own task;
`exception_response` returns 0x04. CRC, garbage and wrong-slave faults have no TCP form
(TCP has no CRC, and a TCP slave's id is echoed by the server): TCP answers normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimAction, SimData, SimDevice

from hil_tests.emulator.group import CarGroup
from hil_tests.emulator.link import LinkAction
from hil_tests.emulator.registers import REGISTER_COUNT

log = logging.getLogger(__name__)

READ_HOLDING_REGISTERS = 3
PHYSICS_PERIOD_S = 0.05


def _car_action(group: CarGroup, number: int, clock: Callable[[], float]) -> SimAction:
    async def action(
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        # The controller is read-only over Modbus, as the agent must be towards it.
        if function_code != READ_HOLDING_REGISTERS or set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION
        now = clock()
        decision = group.links[number].decide(now)
        if decision.action is LinkAction.SILENT:
            raise NoSuchIdException(f"car {number} is silent (link fault)")
        if decision.delay_s > 0:
            await asyncio.sleep(decision.delay_s)  # the late answer itself
            now = clock()
        if decision.action is LinkAction.EXCEPTION:
            return ExcCodes.DEVICE_FAILURE
        group.advance_to(now)
        fresh = group.registers(number)
        registers[start_address : start_address + len(fresh)] = fresh
        return None

    return action


async def _no_such_car(
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    # What a TCP gateway answers for a slave that does not respond on its line.
    return ExcCodes.GATEWAY_NO_RESPONSE


def build_devices(group: CarGroup, clock: Callable[[], float]) -> list[SimDevice]:
    """One SimDevice per car (ids 1..N), plus a catch-all id 0 for unknown slave ids.

    `clock` is read on every request to bring the physics up to date before encoding.
    """
    devices = [
        SimDevice(
            id=number,
            simdata=[SimData(address=0, count=REGISTER_COUNT, datatype=DataType.REGISTERS)],
            action=_car_action(group, number, clock),
        )
        for number in group.cars
    ]
    # pymodbus routes unknown ids to device 0; without it they raise inside the server.
    devices.append(
        SimDevice(
            id=0,
            simdata=[SimData(address=0, count=0x10000, datatype=DataType.REGISTERS)],
            action=_no_such_car,
        )
    )
    return devices


class ModbusEmulator:
    """The Modbus TCP listener and the physics task for one `CarGroup`."""

    def __init__(self, group: CarGroup, host: str, port: int) -> None:
        """Prepare to serve `group` on host:port (port 0 picks a free port at start)."""
        self.group = group
        self.host = host
        self.port = port
        self._server: ModbusTcpServer | None = None
        self._physics: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Start listening and the physics task; returns the bound port.

        Raises OSError when the address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        server = ModbusTcpServer(
            build_devices(self.group, loop.time),
            address=(self.host, self.port),
            ignore_missing_devices=True,  # how a silent car gets no answer (module doc)
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # how pymodbus reports a failed bind
            raise OSError(f"cannot listen for modbus on {self.host}:{self.port}") from exc
        self._server = server
        listener = server.transport
        sockets = listener.sockets if isinstance(listener, asyncio.Server) else ()
        if not sockets:
            raise OSError(f"modbus listener on {self.host}:{self.port} did not bind")
        self.port = int(sockets[0].getsockname()[1])
        self._physics = asyncio.create_task(self._run_physics(loop.time))
        log.info(
            "modbus listening on %s:%d for %d cars", self.host, self.port, len(self.group.cars)
        )
        return self.port

    async def stop(self) -> None:
        """Stop the physics task and close the listener and its connections."""
        if self._physics is not None:
            self._physics.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._physics
            self._physics = None
        if self._server is not None:
            self._server.close()  # also drops the open client connections
            self._server = None

    async def _run_physics(self, clock: Callable[[], float]) -> None:
        while True:
            self.group.advance_to(clock())
            await asyncio.sleep(PHYSICS_PERIOD_S)
