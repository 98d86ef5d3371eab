"""Pure encoding of a car snapshot into the reference register map (DESIGN.md, profile
`reference`): 44 holding registers, one Modbus slave id per car."""

from __future__ import annotations

import enum
import functools
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


# The bits as plain ints for the encoder (see `status_a`).
_A_MOVING = int(StatusA.MOVING)
_A_UP = int(StatusA.UP)
_A_DOWN = int(StatusA.DOWN)
_A_DOOR_ZONE = int(StatusA.DOOR_ZONE)
_A_LEVELLED = int(StatusA.LEVELLED)
_A_SAFETY_CIRCUIT = int(StatusA.SAFETY_CIRCUIT)
_A_DOOR_LOCK = int(StatusA.DOOR_LOCK)
_A_DOOR_FULLY_OPEN = int(StatusA.DOOR_FULLY_OPEN)
_A_DOOR_FULLY_CLOSED = int(StatusA.DOOR_FULLY_CLOSED)
_A_DOOR_OPENING = int(StatusA.DOOR_OPENING)
_A_DOOR_CLOSING = int(StatusA.DOOR_CLOSING)
_A_REOPEN_DEVICE = int(StatusA.REOPEN_DEVICE)
_A_ALARM_BUTTON = int(StatusA.ALARM_BUTTON)
_A_OVERLOAD = int(StatusA.OVERLOAD)
_A_OCCUPIED = int(StatusA.OCCUPIED)
_A_MAINS_OK = int(StatusA.MAINS_OK)
_B_UP_LEVELLING = int(StatusB.UP_LEVELLING)
_B_DOWN_LEVELLING = int(StatusB.DOWN_LEVELLING)
_B_UP_FINAL_LIMIT = int(StatusB.UP_FINAL_LIMIT)
_B_DOWN_FINAL_LIMIT = int(StatusB.DOWN_FINAL_LIMIT)
_B_RUN_CONTACTOR = int(StatusB.RUN_CONTACTOR)
_B_BRAKE_OPEN = int(StatusB.BRAKE_OPEN)
_B_CAR_LIGHT = int(StatusB.CAR_LIGHT)
_B_FULL_LOAD = int(StatusB.FULL_LOAD)
_B_RUN_COMMAND = int(StatusB.RUN_COMMAND)
_B_DOOR_OPEN_COMMAND = int(StatusB.DOOR_OPEN_COMMAND)
_B_DOOR_CLOSE_COMMAND = int(StatusB.DOOR_CLOSE_COMMAND)


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


def status_a(s: CarSnapshot) -> int:
    """Register 2 for snapshot `s`."""
    # Plain ints and a sum of bools x bits: IntFlag arithmetic costs microseconds per bit,
    # and the soak encodes millions of snapshots.
    return (
        s.moving * _A_MOVING
        | s.up * _A_UP
        | s.down * _A_DOWN
        | s.door_zone * _A_DOOR_ZONE
        | s.levelled * _A_LEVELLED
        | s.safety_circuit * _A_SAFETY_CIRCUIT
        | s.door_lock * _A_DOOR_LOCK
        | s.door_fully_open * _A_DOOR_FULLY_OPEN
        | s.door_fully_closed * _A_DOOR_FULLY_CLOSED
        | s.door_opening * _A_DOOR_OPENING
        | s.door_closing * _A_DOOR_CLOSING
        | s.reopen_device * _A_REOPEN_DEVICE
        | s.alarm_button * _A_ALARM_BUTTON
        | s.overload * _A_OVERLOAD
        | s.occupied * _A_OCCUPIED
        | s.mains_ok * _A_MAINS_OK
    )


def status_b(s: CarSnapshot) -> int:
    """Register 3 for snapshot `s`."""
    return (
        s.up_levelling * _B_UP_LEVELLING
        | s.down_levelling * _B_DOWN_LEVELLING
        | s.up_final_limit * _B_UP_FINAL_LIMIT
        | s.down_final_limit * _B_DOWN_FINAL_LIMIT
        | s.run_contactor * _B_RUN_CONTACTOR
        | s.brake_open * _B_BRAKE_OPEN
        | s.car_light * _B_CAR_LIGHT
        | s.full_load * _B_FULL_LOAD
        | s.run_command * _B_RUN_COMMAND
        | s.door_open_command * _B_DOOR_OPEN_COMMAND
        | s.door_close_command * _B_DOOR_CLOSE_COMMAND
    )


@functools.lru_cache(maxsize=1024)
def _identity_registers(identity: Identity) -> tuple[int, ...]:
    return tuple(
        encode_ascii(identity.firmware, what="firmware")
        + encode_ascii(identity.model, what="model")
        + encode_ascii(identity.serial, what="serial")
    )


def encode_identity(identity: Identity) -> list[int]:
    """Registers 20-43: firmware, model and serial strings."""
    return list(_identity_registers(identity))


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
        *_identity_registers(identity),
    ]
    assert len(regs) == REGISTER_COUNT  # a layout slip here would shift every later field
    return regs
