"""The shipped reference profile through the generic decoder: bit positions, word order,
signedness, and refusal of impossible blocks."""

from __future__ import annotations

import pytest

from agent.bus.plan import Table
from agent.decode.decoder import SampleRejectedError, car_state, decode, decode_identity
from agent.decode.parser import load_profile
from agent.state import CarState, Direction, DoorState, ServiceMode

REFERENCE = load_profile("reference")


def block(**regs: int) -> dict[tuple[Table, int], int]:
    values = [0] * 16
    values[0] = 1
    for name, value in regs.items():
        values[int(name.removeprefix("r"))] = value
    return {(Table.HOLDING, i): v for i, v in enumerate(values)}


def state(values: dict[tuple[Table, int], int], t: float = 0.0) -> CarState:
    return car_state(t, [decode(REFERENCE, values).fields])


def test_moving_up_with_doors_closed_and_locked() -> None:
    status_a = 1 << 0 | 1 << 1 | 1 << 5 | 1 << 6 | 1 << 8 | 1 << 14 | 1 << 15
    s = state(block(r1=7, r2=status_a, r4=1, r5=1600, r6=1, r7=0x86A0, r8=40), t=3.5)
    assert s.t == 3.5
    assert (s.floor, s.moving, s.direction, s.door) == (7, True, Direction.UP, DoorState.CLOSED)
    assert s.door_lock_closed and s.safety_circuit_closed and s.occupied and s.mains_ok
    assert s.position_mm == 100_000  # 0x0001_86A0, high word first
    assert (s.speed_mm_s, s.load_percent, s.mode) == (1600, 40, ServiceMode.NORMAL)


def test_negative_floor_and_door_states_by_precedence() -> None:
    assert state(block(r1=0xFFFF)).floor == -1
    assert state(block(r2=1 << 7 | 1 << 9)).door is DoorState.OPEN
    assert state(block(r2=1 << 10)).door is DoorState.CLOSING
    assert state(block(r2=0)).door is DoorState.PARTLY_OPEN


def test_commands_and_counters() -> None:
    s = state(block(r3=1 << 10, r10=2, r11=5, r13=9, r15=3))
    assert (s.door_close_command, s.door_open_command) == (True, False)
    assert (s.trips, s.door_cycles, s.run_hours) == (2 << 16 | 5, 9, 3)


def test_a_fast_read_leaves_the_counters_out() -> None:
    fast = {k: v for k, v in block(r10=1).items() if k[1] < 10}
    assert "trips" not in decode(REFERENCE, fast).fields


def test_a_wrong_map_version_refuses_the_whole_sample() -> None:
    with pytest.raises(SampleRejectedError, match="map version"):
        decode(REFERENCE, block(r0=2))


@pytest.mark.parametrize(
    ("regs", "signal"),
    [({"r4": 9}, "mode"), ({"r5": 40000}, "speed_mm_s"), ({"r1": 999}, "floor")],
)
def test_a_value_outside_its_declared_range_is_dropped_and_named(
    regs: dict[str, int], signal: str
) -> None:
    decoded = decode(REFERENCE, block(**regs))
    assert any(item.startswith(f"{signal}=") for item in decoded.implausible)
    s = car_state(0, [decoded.fields])
    if signal == "mode":
        assert s.mode is ServiceMode.UNKNOWN
    else:
        assert getattr(s, signal) is None
    assert s.door is not DoorState.UNKNOWN  # the rest of the sample still decodes


def test_identity_strings() -> None:
    def text(s: str) -> list[int]:
        raw = s.encode().ljust(16, b"\0")
        return [raw[i] << 8 | raw[i + 1] for i in range(0, 16, 2)]

    words = text("5.1.3") + text("RC-5000") + text("SN-0042")
    values = {(Table.HOLDING, 20 + i): w for i, w in enumerate(words)}
    ident = decode_identity(REFERENCE, values)
    assert ident is not None
    assert (ident.firmware, ident.model, ident.serial) == ("5.1.3", "RC-5000", "SN-0042")
