"""The Modbus TCP server and the control port, in process, read with a plain pymodbus client."""

from __future__ import annotations

import asyncio
import json

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from hil_tests.emulator.control import bound_port, control, start_control_server
from hil_tests.emulator.faults import Fault, FaultOptions
from hil_tests.emulator.group import CarGroup, GroupConfig
from hil_tests.emulator.registers import decode_ascii
from hil_tests.emulator.server import ModbusEmulator

CARS = 3
TIMEOUT_S = 10.0


async def _serve_and_read() -> None:
    loop = asyncio.get_running_loop()
    group = CarGroup(GroupConfig(cars=CARS, seed=4, speedup=50.0), loop.time())
    emulator = ModbusEmulator(group, "127.0.0.1", 0)
    port = await emulator.start()
    ctl = await start_control_server(group, "127.0.0.1", 0)
    ctl_port = bound_port(ctl)
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    try:
        assert await client.connect()
        for car in range(1, CARS + 1):
            rr = await client.read_holding_registers(0, count=44, device_id=car)
            assert not rr.isError(), rr
            regs = rr.registers
            assert regs[0] == 1
            assert 1 <= regs[1] <= 12
            assert decode_ascii(regs[20:28]) == "5.1.3"
            assert decode_ascii(regs[28:36]) == "RC-5000"
            assert decode_ascii(regs[36:44]) == f"LW{car:06d}"

        beyond = await client.read_holding_registers(40, count=5, device_id=1)
        assert beyond.isError() and beyond.exception_code == 0x02
        unknown = await client.read_holding_registers(0, count=44, device_id=CARS + 1)
        assert unknown.isError() and unknown.exception_code == 0x0B
        write = await client.write_register(8, 99, device_id=1)
        assert write.isError()
        inputs = await client.read_input_registers(0, count=4, device_id=1)
        assert inputs.isError()

        # The registers follow the physics: the position changes while the server runs.
        async def position_changes() -> None:
            first = (await client.read_holding_registers(6, count=2, device_id=2)).registers
            while True:
                now = (await client.read_holding_registers(6, count=2, device_id=2)).registers
                if now != first:
                    return
                await asyncio.sleep(0.02)

        await asyncio.wait_for(position_changes(), TIMEOUT_S)

        assert await control(
            "127.0.0.1", ctl_port, {"op": "inject", "car": 2, "fault": "entrapment"}
        ) == {"ok": True}
        state = await control("127.0.0.1", ctl_port, {"op": "state"})
        assert state["ok"] is True
        cars = state["cars"]
        assert isinstance(cars, list) and [c["car"] for c in cars] == [1, 2, 3]
        assert cars[1]["faults"] == ["entrapment"] and cars[0]["faults"] == []
        for c in cars:
            assert {"floor", "moving", "door", "occupied"} <= set(c)

        # The injected entrapment shows on the wire: stopped, closed, occupied, outside the zone.
        async def trapped_on_the_wire() -> list[int]:
            while True:
                status = (await client.read_holding_registers(2, count=1, device_id=2)).registers[0]
                moving, zone, closed, occupied = (status >> b & 1 for b in (0, 3, 8, 14))
                state = await control("127.0.0.1", ctl_port, {"op": "state"})
                phase = state["cars"][1]["phase"]  # type: ignore[index]
                if phase == "trapped" and not moving and not zone and closed and occupied:
                    return [status]
                await asyncio.sleep(0.02)

        await asyncio.wait_for(trapped_on_the_wire(), TIMEOUT_S)
        assert await control(
            "127.0.0.1", ctl_port, {"op": "clear", "car": 2, "fault": "entrapment"}
        ) == {"ok": True}
    finally:
        client.close()
        ctl.close()
        await ctl.wait_closed()
        await emulator.stop()


def test_every_car_reads_over_modbus_and_control_injects() -> None:
    asyncio.run(asyncio.wait_for(_serve_and_read(), 60))


async def _bad_requests() -> list[dict[str, object]]:
    loop = asyncio.get_running_loop()
    group = CarGroup(GroupConfig(cars=2), loop.time())
    ctl = await start_control_server(group, "127.0.0.1", 0)
    replies = []
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", bound_port(ctl))
        lines = [
            b"this is not json\n",
            b"[1, 2]\n",
            b'{"op": "explode"}\n',
            b'{"op": "inject", "car": 9, "fault": "entrapment"}\n',
            b'{"op": "inject", "car": true, "fault": "entrapment"}\n',
            b'{"op": "inject", "car": 1, "fault": "gremlins"}\n',
            b'{"op": "clear", "car": 1}\n',
            b'{"op": "state"}\n',
        ]
        for line in lines:
            writer.write(line)
            await writer.drain()
            replies.append(json.loads(await asyncio.wait_for(reader.readline(), TIMEOUT_S)))
        writer.close()
        await writer.wait_closed()
    finally:
        ctl.close()
        await ctl.wait_closed()
    return replies


def test_bad_control_requests_get_errors_and_the_session_survives() -> None:
    replies = asyncio.run(_bad_requests())
    *errors, state = replies
    for reply in errors:
        assert reply["ok"] is False
        assert isinstance(reply["error"], str) and reply["error"]
    assert "JSON" in str(errors[0]["error"])
    assert "explode" in str(errors[2]["error"])
    assert "1..2" in str(errors[3]["error"])
    assert "gremlins" in str(errors[5]["error"]) and "entrapment" in str(errors[5]["error"])
    assert state["ok"] is True and len(state["cars"]) == 2  # type: ignore[arg-type]


async def _tcp_link_faults() -> None:
    loop = asyncio.get_running_loop()
    group = CarGroup(GroupConfig(cars=2, seed=4), loop.time())
    emulator = ModbusEmulator(group, "127.0.0.1", 0)
    port = await emulator.start()
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.3, retries=0)
    try:
        assert await client.connect()
        group.inject(2, Fault.EXCEPTION_RESPONSE)
        rr = await client.read_holding_registers(0, count=4, device_id=2)
        assert rr.isError() and rr.exception_code == 0x04
        group.clear(2, Fault.EXCEPTION_RESPONSE)
        group.inject(2, Fault.NO_ANSWER)
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(0, count=4, device_id=2)
        group.clear(2, Fault.NO_ANSWER)
        group.inject(2, Fault.LATE_ANSWER, FaultOptions(delay_ms=150))
        t0 = loop.time()
        rr = await client.read_holding_registers(0, count=4, device_id=2)
        assert not rr.isError() and loop.time() - t0 >= 0.15
        group.clear(2, Fault.LATE_ANSWER)
        assert not (await client.read_holding_registers(0, count=4, device_id=1)).isError()
    finally:
        client.close()
        await emulator.stop()


def test_tcp_link_faults() -> None:
    asyncio.run(asyncio.wait_for(_tcp_link_faults(), 30))
