"""The RTU slave over a real pty pair, read by a plain pymodbus serial client.

Independent of the emulator's own code paths: the client is pymodbus's, the line is a socat
pty pair, and the expectations come from the register map and the wire-timing formula.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import serial  # type: ignore[import-untyped]  # pyserial ships no type information
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusIOException

from hil_tests.emulator.faults import Fault, FaultOptions
from hil_tests.emulator.group import CarGroup, GroupConfig
from hil_tests.emulator.registers import Reg, StatusA, decode_ascii
from hil_tests.emulator.rtu import RtuSlaveLine
from hil_tests.emulator.rtu_frame import with_crc
from hil_tests.emulator.wire import SerialFormat, WireTiming, wire_time_s
from hil_tests.serial_line import PtyPair
from tests.conftest import require_binary

CARS = 3
TIMEOUT_S = 20.0
HEIGHTS = GroupConfig().car.landing_heights_mm


@contextlib.asynccontextmanager
async def rtu_rig(
    tmp: Path, *, wire: WireTiming | None = None, speedup: float = 1.0, baud: int = 115200
) -> AsyncIterator[tuple[CarGroup, RtuSlaveLine, AsyncModbusSerialClient]]:
    """Emulated cars on one end of a pty pair, a pymodbus RTU client on the other."""
    loop = asyncio.get_running_loop()
    group = CarGroup(GroupConfig(cars=CARS, seed=3, speedup=speedup), loop.time())
    async with PtyPair(tmp) as pair:
        line = RtuSlaveLine(group, str(pair.emulator_path), baud=baud, wire_timing=wire)
        await line.start()
        # A Linux pty refuses parity bits, so the client side runs 8N1; the timing format
        # is the emulator's --wire-timing, not the pty's.
        client = AsyncModbusSerialClient(
            port=str(pair.agent_path),
            framer=FramerType.RTU,
            baudrate=baud,
            parity="N",
            timeout=0.3,
            retries=0,
            reconnect_delay=0,
        )
        try:
            assert await client.connect()
            yield group, line, client
        finally:
            client.close()
            await line.stop()


def _run(coro: Any) -> None:
    require_binary("socat")
    asyncio.run(asyncio.wait_for(coro, 45))


def _uint32(regs: Sequence[int], at: int) -> int:
    return regs[at] << 16 | regs[at + 1]


def _nearest(position_mm: int) -> int:
    return min(range(len(HEIGHTS)), key=lambda i: abs(HEIGHTS[i] - position_mm)) + 1


async def _invariants(tmp: Path) -> None:
    async with rtu_rig(tmp, speedup=20.0) as (_, _, client):
        last: dict[int, list[int]] = {}
        moving_seen = rounds = 0
        # Sample until cars have been seen moving (the deadline is the test's wait_for).
        while moving_seen < 5 or rounds < 30:
            rounds += 1
            for car in range(1, CARS + 1):
                rr = await client.read_holding_registers(0, count=44, device_id=car)
                assert not rr.isError(), rr
                regs = rr.registers
                status = StatusA(regs[Reg.STATUS_A])
                if StatusA.MOVING in status:
                    moving_seen += 1
                    assert StatusA.DOOR_FULLY_OPEN not in status
                position = _uint32(regs, Reg.POSITION)
                assert regs[Reg.FLOOR] == _nearest(position)
                counters = [_uint32(regs, r) for r in (Reg.TRIPS, Reg.DOOR_CYCLES, Reg.RUN_HOURS)]
                before = last.get(car, counters)
                assert all(a >= b for a, b in zip(counters, before, strict=True))
                last[car] = counters
                assert decode_ascii(regs[36:44]) == f"LW{car:06d}"


def test_register_invariants_over_rtu(tmp_path: Path) -> None:
    _run(_invariants(tmp_path))


async def _timing(tmp: Path) -> None:
    wire = WireTiming(19200, SerialFormat(8, "E", 1))
    async with rtu_rig(tmp, wire=wire, baud=19200) as (_, _, client):
        loop = asyncio.get_running_loop()
        for count in (16, 44):
            # The answer completes one silent interval before the transaction's end: the
            # trailing silence is the master's to keep.
            expected = wire_time_s(8, 5 + 2 * count, 19200, "8E1") - 3.5 * 11 / 19200
            samples = []
            for _ in range(16):
                t0 = loop.time()
                rr = await client.read_holding_registers(0, count=count, device_id=1)
                samples.append(loop.time() - t0)
                assert not rr.isError()
            # A busy machine can only add delay, never remove it: the lower quartile is the
            # emulator's own timing with scheduling noise filtered out.
            lower_quartile = sorted(samples[1:])[len(samples[1:]) // 4]
            assert expected - 0.0002 <= lower_quartile <= expected + 0.0025, (
                count,
                samples,
                expected,
            )
            assert min(samples) >= expected - 0.0002  # never faster than the wire


def test_wire_timing_matches_the_formula(tmp_path: Path) -> None:
    _run(_timing(tmp_path))


async def _link_faults(tmp: Path) -> None:
    async with rtu_rig(tmp) as (group, _, client):
        loop = asyncio.get_running_loop()

        async def read(car: int = 2) -> Any:
            return await client.read_holding_registers(0, count=4, device_id=car)

        assert not (await read()).isError()
        group.inject(2, Fault.EXCEPTION_RESPONSE)
        rr = await read()
        assert rr.isError() and rr.exception_code == 0x04
        group.clear(2, Fault.EXCEPTION_RESPONSE)

        for fault in (Fault.CRC_ERROR, Fault.WRONG_SLAVE, Fault.GARBAGE, Fault.NO_ANSWER):
            group.inject(2, fault)
            with pytest.raises(ModbusIOException):
                await read()
            assert not (await read(1)).isError()  # the rest of the line is unharmed
            group.clear(2, fault)
            await _until_answers(client, 2)

        group.inject(2, Fault.LATE_ANSWER, FaultOptions(delay_ms=150))
        t0 = loop.time()
        assert not (await read()).isError()
        assert loop.time() - t0 >= 0.15
        group.clear(2, Fault.LATE_ANSWER)

        group.inject(2, Fault.REBOOT, FaultOptions(silent_s=0.5, firmware="5.2.0"))
        with pytest.raises(ModbusIOException):
            await read()
        await _until_answers(client, 2)
        rr = await client.read_holding_registers(20, count=8, device_id=2)
        assert decode_ascii(rr.registers) == "5.2.0"


async def _until_answers(client: AsyncModbusSerialClient, car: int) -> None:
    """Poll until `car` answers cleanly again (stray bytes of a fault flushed by timeouts)."""
    while True:
        try:
            rr = await client.read_holding_registers(0, count=4, device_id=car)
        except ModbusIOException:
            continue
        if not rr.isError():
            return


def test_link_faults_seen_by_pymodbus(tmp_path: Path) -> None:
    _run(_link_faults(tmp_path))


async def _raw_exchange(port: Any, frame: bytes, expect: int) -> bytes:
    """Write `frame` and read up to `expect` bytes, waiting at most the port timeout."""
    await asyncio.to_thread(port.write, frame)
    return bytes(await asyncio.to_thread(port.read, expect))


async def _slave_discipline(tmp: Path) -> None:
    loop = asyncio.get_running_loop()
    group = CarGroup(GroupConfig(cars=CARS, seed=3), loop.time())
    async with PtyPair(tmp) as pair:
        line = RtuSlaveLine(group, str(pair.emulator_path), baud=115200)
        await line.start()
        port = serial.Serial(str(pair.agent_path), baudrate=115200, timeout=0.3)
        try:
            good = with_crc(bytes.fromhex("020300000002"))
            reply = await _raw_exchange(port, good, 9)
            assert len(reply) == 9 and reply[:3] == bytes.fromhex("020304")
            # Another device's id, a broadcast read, and a bad CRC: no answer at all.
            assert await _raw_exchange(port, with_crc(bytes.fromhex("090300000002")), 9) == b""
            assert await _raw_exchange(port, with_crc(bytes.fromhex("000300000002")), 9) == b""
            assert await _raw_exchange(port, good[:-1] + bytes([good[-1] ^ 1]), 9) == b""
            assert line.frames_dropped >= 1
            # Writes are refused with exception 0x01, and noise does not wedge the slave.
            write = with_crc(bytes.fromhex("020600010005"))
            assert await _raw_exchange(port, write, 5) == with_crc(bytes.fromhex("028601"))
            many = with_crc(bytes.fromhex("0210000000020400010002"))
            assert await _raw_exchange(port, many, 5) == with_crc(bytes.fromhex("029001"))
            assert await _raw_exchange(port, b"\xff\x77\x00", 9) == b""
            assert len(await _raw_exchange(port, good, 9)) == 9
        finally:
            port.close()
            await line.stop()


def test_slave_ignores_others_drops_bad_crc_and_refuses_writes(tmp_path: Path) -> None:
    _run(_slave_discipline(tmp_path))
