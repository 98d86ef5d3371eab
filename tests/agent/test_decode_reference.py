"""The reference-map decoder: bit positions, word order, and refusal of impossible blocks."""

from __future__ import annotations

import pytest

from agent.decode.reference import DecodeError, decode_identity, decode_state
from agent.state import Direction, DoorState, ServiceMode


def block(**regs: int) -> list[int]:
    values = [0] * 16
    values[0] = 1
    for name, value in regs.items():
        values[int(name.removeprefix("r"))] = value
    return values


def test_moving_up_with_doors_closed_and_locked() -> None:
    status_a = 1 << 0 | 1 << 1 | 1 << 5 | 1 << 6 | 1 << 8 | 1 << 14 | 1 << 15
    s = decode_state(block(r1=7, r2=status_a, r4=1, r5=1600, r6=1, r7=0x86A0, r8=40), t=3.5)
    assert s.t == 3.5
    assert (s.floor, s.moving, s.direction, s.door) == (7, True, Direction.UP, DoorState.CLOSED)
    assert s.door_lock_closed and s.safety_circuit_closed and s.occupied and s.mains_ok
    assert s.position_mm == 100_000  # 0x0001_86A0, high word first
    assert (s.speed_mm_s, s.load_percent, s.mode) == (1600, 40, ServiceMode.NORMAL)


def test_negative_floor_and_door_states_by_precedence() -> None:
    assert decode_state(block(r1=0xFFFF), 0).floor == -1
    assert decode_state(block(r2=1 << 7 | 1 << 9), 0).door is DoorState.OPEN
    assert decode_state(block(r2=1 << 10), 0).door is DoorState.CLOSING
    assert decode_state(block(r2=0), 0).door is DoorState.PARTLY_OPEN


def test_commands_and_counters() -> None:
    s = decode_state(block(r3=1 << 10, r10=2, r11=5, r13=9, r15=3), 0)
    assert (s.door_close_command, s.door_open_command) == (True, False)
    assert (s.trips, s.door_cycles, s.run_hours) == (2 << 16 | 5, 9, 3)


@pytest.mark.parametrize(
    ("regs", "message"),
    [
        (block(r0=2), "map version"),
        (block(r4=9), "service mode"),
        ([1] * 15, "expected 16"),
    ],
)
def test_impossible_blocks_are_refused_by_name(regs: list[int], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_state(regs, 0)


def test_identity_strings() -> None:
    def text(s: str) -> list[int]:
        raw = s.encode().ljust(16, b"\0")
        return [raw[i] << 8 | raw[i + 1] for i in range(0, 16, 2)]

    ident = decode_identity(text("5.1.3") + text("RC-5000") + text("SN-0042"))
    assert (ident.firmware, ident.model, ident.serial) == ("5.1.3", "RC-5000", "SN-0042")
