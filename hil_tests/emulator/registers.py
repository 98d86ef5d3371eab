"""Pure encoding of a car snapshot into the reference register map (DESIGN.md, profile
`reference`): 44 holding registers, one Modbus slave id per car."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from hil_tests.emulator.car import CarSnapshot

MAP_VERSION = 1
REGISTER_COUNT = 44
STRING_REGISTERS = 8  # 16 ASCII characters, two per register
STRING_PAD = " "


class Reg(enum.IntEnum):
    """Address of each field (the first register of multi-register fields)."""

    MAP_VERSION = 0
    FLOOR = 1
    STATUS_A = 2
    STATUS_B = 3
    SERVICE_MODE = 4
    SPEED = 5
    POSITION = 6
    LOAD = 8
    FAULT_CODE = 9
    TRIPS = 10
    DOOR_CYCLES = 12
    RUN_HOURS = 14
    FIRMWARE = 20
    MODEL = 28
    SERIAL = 36


class StatusA(enum.IntFlag):
    """Bits of register 2."""

    MOVING = 1 << 0
    UP = 1 << 1
    DOWN = 1 << 2
    DOOR_ZONE = 1 << 3
    LEVELLED = 1 << 4
    SAFETY_CIRCUIT = 1 << 5
    DOOR_LOCK = 1 << 6
    DOOR_FULLY_OPEN = 1 << 7
    DOOR_FULLY_CLOSED = 1 << 8
    DOOR_OPENING = 1 << 9
    DOOR_CLOSING = 1 << 10
    REOPEN_DEVICE = 1 << 11
    ALARM_BUTTON = 1 << 12
    OVERLOAD = 1 << 13
    OCCUPIED = 1 << 14
    MAINS_OK = 1 << 15


class StatusB(enum.IntFlag):
    """Bits of register 3."""

    UP_LEVELLING = 1 << 0
    DOWN_LEVELLING = 1 << 1
    UP_FINAL_LIMIT = 1 << 2
    DOWN_FINAL_LIMIT = 1 << 3
    RUN_CONTACTOR = 1 << 4
    BRAKE_OPEN = 1 << 5
    CAR_LIGHT = 1 << 6
    FULL_LOAD = 1 << 7
    RUN_COMMAND = 1 << 8
    DOOR_OPEN_COMMAND = 1 << 9
    DOOR_CLOSE_COMMAND = 1 << 10


@dataclass(frozen=True)
class Identity:
    """The controller's identity strings, each at most 16 printable ASCII characters."""

    firmware: str
    model: str
    serial: str

    def __post_init__(self) -> None:
        for name in ("firmware", "model", "serial"):
            encode_ascii(getattr(self, name), what=name)


def encode_ascii(text: str, *, what: str = "string") -> list[int]:
    """Encode `text` into 8 registers, high byte first, padded with spaces.

    Raises ValueError naming `what` when the text is not printable ASCII or too long.
    """
    if not text.isascii() or not text.isprintable():
        raise ValueError(f"{what} {text!r} must be printable ASCII")
    if len(text) > 2 * STRING_REGISTERS:
        raise ValueError(f"{what} {text!r} is longer than {2 * STRING_REGISTERS} characters")
    raw = text.ljust(2 * STRING_REGISTERS, STRING_PAD).encode("ascii")
    return [(raw[i] << 8) | raw[i + 1] for i in range(0, len(raw), 2)]


def decode_ascii(registers: Sequence[int]) -> str:
    """Inverse of `encode_ascii`: the text with trailing space and NUL padding removed."""
    raw = b"".join(r.to_bytes(2, "big") for r in registers)
    return raw.decode("ascii", errors="replace").rstrip(" \x00")


def uint32_words(value: int, *, what: str = "value") -> list[int]:
    """Split an unsigned 32-bit `value` into two registers, high word first."""
    if not 0 <= value <= 0xFFFF_FFFF:
        raise ValueError(f"{what} {value} does not fit in uint32")
    return [value >> 16, value & 0xFFFF]


def _uint16(value: int, what: str) -> int:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} {value} does not fit in uint16")
    return value


def _int16(value: int, what: str) -> int:
    if not -0x8000 <= value <= 0x7FFF:
        raise ValueError(f"{what} {value} does not fit in int16")
    return value & 0xFFFF


def _flags(pairs: list[tuple[bool, int]]) -> int:
    word = 0
    for on, bit in pairs:
        if on:
            word |= bit
    return word


def status_a(s: CarSnapshot) -> int:
    """Register 2 for snapshot `s`."""
    return _flags(
        [
            (s.moving, StatusA.MOVING),
            (s.up, StatusA.UP),
            (s.down, StatusA.DOWN),
            (s.door_zone, StatusA.DOOR_ZONE),
            (s.levelled, StatusA.LEVELLED),
            (s.safety_circuit, StatusA.SAFETY_CIRCUIT),
            (s.door_lock, StatusA.DOOR_LOCK),
            (s.door_fully_open, StatusA.DOOR_FULLY_OPEN),
            (s.door_fully_closed, StatusA.DOOR_FULLY_CLOSED),
            (s.door_opening, StatusA.DOOR_OPENING),
            (s.door_closing, StatusA.DOOR_CLOSING),
            (s.reopen_device, StatusA.REOPEN_DEVICE),
            (s.alarm_button, StatusA.ALARM_BUTTON),
            (s.overload, StatusA.OVERLOAD),
            (s.occupied, StatusA.OCCUPIED),
            (s.mains_ok, StatusA.MAINS_OK),
        ]
    )


def status_b(s: CarSnapshot) -> int:
    """Register 3 for snapshot `s`."""
    return _flags(
        [
            (s.up_levelling, StatusB.UP_LEVELLING),
            (s.down_levelling, StatusB.DOWN_LEVELLING),
            (s.up_final_limit, StatusB.UP_FINAL_LIMIT),
            (s.down_final_limit, StatusB.DOWN_FINAL_LIMIT),
            (s.run_contactor, StatusB.RUN_CONTACTOR),
            (s.brake_open, StatusB.BRAKE_OPEN),
            (s.car_light, StatusB.CAR_LIGHT),
            (s.full_load, StatusB.FULL_LOAD),
            (s.run_command, StatusB.RUN_COMMAND),
            (s.door_open_command, StatusB.DOOR_OPEN_COMMAND),
            (s.door_close_command, StatusB.DOOR_CLOSE_COMMAND),
        ]
    )


def encode_identity(identity: Identity) -> list[int]:
    """Registers 20-43: firmware, model and serial strings."""
    return (
        encode_ascii(identity.firmware, what="firmware")
        + encode_ascii(identity.model, what="model")
        + encode_ascii(identity.serial, what="serial")
    )


def encode_car(s: CarSnapshot, identity: Identity) -> list[int]:
    """All 44 registers for snapshot `s`; registers 16-19 are reserved and read 0.

    Raises ValueError naming the field when a value does not fit its register.
    """
    c = s.counters
    regs = [
        MAP_VERSION,
        _int16(s.floor, "floor"),
        status_a(s),
        status_b(s),
        _uint16(int(s.service_mode), "service mode"),
        _uint16(s.speed_mm_s, "speed"),
        *uint32_words(s.position_mm, what="position"),
        _uint16(s.load_pct, "load"),
        _uint16(s.fault_code, "fault code"),
        *uint32_words(c.trips, what="trip counter"),
        *uint32_words(c.door_cycles, what="door cycle counter"),
        *uint32_words(c.run_hours, what="run hours"),
        0,
        0,
        0,
        0,
        *encode_identity(identity),
    ]
    assert len(regs) == REGISTER_COUNT  # a layout slip here would shift every later field
    return regs
