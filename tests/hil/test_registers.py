"""Encoding of a car snapshot into the reference register map, checked against DESIGN.md."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hil_tests.emulator.car import Car, CarConfig, CarSnapshot, Counters, ServiceMode
from hil_tests.emulator.registers import (
    REGISTER_COUNT,
    Identity,
    decode_ascii,
    encode_ascii,
    encode_car,
)

IDENTITY = Identity(firmware="5.1.3", model="RC-5000", serial="LW000002")

# (register, bit) for each flag, transcribed from DESIGN.md's table rather than the code.
FLAG_BITS = {
    "moving": (2, 0),
    "up": (2, 1),
    "down": (2, 2),
    "door_zone": (2, 3),
    "levelled": (2, 4),
    "safety_circuit": (2, 5),
    "door_lock": (2, 6),
    "door_fully_open": (2, 7),
    "door_fully_closed": (2, 8),
    "door_opening": (2, 9),
    "door_closing": (2, 10),
    "reopen_device": (2, 11),
    "alarm_button": (2, 12),
    "overload": (2, 13),
    "occupied": (2, 14),
    "mains_ok": (2, 15),
    "up_levelling": (3, 0),
    "down_levelling": (3, 1),
    "up_final_limit": (3, 2),
    "down_final_limit": (3, 3),
    "run_contactor": (3, 4),
    "brake_open": (3, 5),
    "car_light": (3, 6),
    "full_load": (3, 7),
    "run_command": (3, 8),
    "door_open_command": (3, 9),
    "door_close_command": (3, 10),
}


def all_flags_off() -> CarSnapshot:
    snap = Car(CarConfig(), random.Random(0)).snapshot()
    flags: dict[str, Any] = dict.fromkeys(FLAG_BITS, False)
    return dataclasses.replace(snap, **flags)


def test_every_flag_field_is_in_the_table() -> None:
    bools = {f.name for f in dataclasses.fields(CarSnapshot) if f.type == "bool"}
    assert bools == set(FLAG_BITS)


@pytest.mark.parametrize("name", sorted(FLAG_BITS))
def test_each_flag_sets_exactly_its_bit(name: str) -> None:
    register, bit = FLAG_BITS[name]
    off = encode_car(all_flags_off(), IDENTITY)
    flag: dict[str, Any] = {name: True}
    on = encode_car(dataclasses.replace(all_flags_off(), **flag), IDENTITY)
    assert off[2] == 0 and off[3] == 0
    assert on[register] == 1 << bit
    assert on[5 - register] == 0  # the other status word stays clear


def test_fixed_fields_and_word_order() -> None:
    snap = dataclasses.replace(
        all_flags_off(),
        floor=7,
        service_mode=ServiceMode.INSPECTION,
        speed_mm_s=1600,
        position_mm=0x0001_2345,
        load_pct=42,
        fault_code=9,
        counters=Counters(trips=0x0002_0003, door_cycles=0xABCD_EF01, run_hours=65536),
    )
    regs = encode_car(snap, IDENTITY)
    assert len(regs) == REGISTER_COUNT == 44
    assert regs[0] == 1
    assert regs[1] == 7
    assert regs[4] == 2
    assert regs[5] == 1600
    assert regs[6:8] == [0x0001, 0x2345]
    assert regs[8] == 42
    assert regs[9] == 9
    assert regs[10:12] == [0x0002, 0x0003]
    assert regs[12:14] == [0xABCD, 0xEF01]
    assert regs[14:16] == [1, 0]
    assert regs[16:20] == [0, 0, 0, 0]
    assert all(0 <= r <= 0xFFFF for r in regs)


def test_identity_strings_are_ascii_high_byte_first() -> None:
    regs = encode_car(all_flags_off(), IDENTITY)
    assert regs[20] == (ord("5") << 8) | ord(".")
    assert regs[21] == (ord("1") << 8) | ord(".")
    assert regs[22] == (ord("3") << 8) | ord(" ")
    assert regs[23:28] == [0x2020] * 5
    assert decode_ascii(regs[20:28]) == "5.1.3"
    assert decode_ascii(regs[28:36]) == "RC-5000"
    assert decode_ascii(regs[36:44]) == "LW000002"


def test_negative_floor_is_twos_complement() -> None:
    assert encode_car(dataclasses.replace(all_flags_off(), floor=-2), IDENTITY)[1] == 0xFFFE


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=16))
def test_ascii_round_trip(text: str) -> None:
    regs = encode_ascii(text)
    assert len(regs) == 8
    assert decode_ascii(regs) == text.rstrip(" ")


def test_values_that_do_not_fit_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="speed"):
        encode_car(dataclasses.replace(all_flags_off(), speed_mm_s=70_000), IDENTITY)
    with pytest.raises(ValueError, match="position"):
        encode_car(dataclasses.replace(all_flags_off(), position_mm=-1), IDENTITY)
    with pytest.raises(ValueError, match="serial"):
        Identity(firmware="1", model="m", serial="X" * 17)
    with pytest.raises(ValueError, match="model"):
        Identity(firmware="1", model="Modèle", serial="1")
