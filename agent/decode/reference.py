"""Decoder of DESIGN.md's reference register map (profile ``reference``).

Holding registers 0-15 carry the live state, 20-43 the identity strings. The bit layout is
the one the emulator serves; a real controller gets its own profile.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.state import CarState, ControllerIdentity, Direction, DoorState, ServiceMode

MAP_VERSION = 1
STATE_ADDRESS, STATE_COUNT = 0, 16
IDENTITY_ADDRESS, IDENTITY_COUNT = 20, 24

# The signals this profile provides: the CarState fields a decoded sample fills in.
SIGNALS = frozenset(
    {
        "floor",
        "position_mm",
        "speed_mm_s",
        "direction",
        "moving",
        "door_zone",
        "levelled",
        "door",
        "door_lock_closed",
        "safety_circuit_closed",
        "occupied",
        "load_percent",
        "alarm_button",
        "overload",
        "mode",
        "fault_code",
        "mains_ok",
        "reopen_active",
        "door_open_command",
        "door_close_command",
        "trips",
        "door_cycles",
        "run_hours",
    }
)


class DecodeError(ValueError):
    """A register block that cannot be a reference-map answer (names the register)."""


def _bit(word: int, n: int) -> bool:
    return bool(word >> n & 1)


def _u32(high: int, low: int) -> int:
    return high << 16 | low


def _door(a: int) -> DoorState:
    if _bit(a, 7):
        return DoorState.OPEN
    if _bit(a, 8):
        return DoorState.CLOSED
    if _bit(a, 9):
        return DoorState.OPENING
    if _bit(a, 10):
        return DoorState.CLOSING
    return DoorState.PARTLY_OPEN


def decode_state(regs: Sequence[int], t: float) -> CarState:
    """Decode holding registers 0-15 read at monotonic time ``t`` into a `CarState`.

    Raises `DecodeError` for a block of the wrong length, a map version other than 1, or a
    service mode outside the map's range: such a block must never reach the detectors.
    """
    if len(regs) < STATE_COUNT:
        raise DecodeError(f"expected {STATE_COUNT} registers, got {len(regs)}")
    if regs[0] != MAP_VERSION:
        raise DecodeError(f"register 0 (map version) is {regs[0]}, expected {MAP_VERSION}")
    a, b, mode = regs[2], regs[3], regs[4]
    if mode > ServiceMode.UNKNOWN.value:
        raise DecodeError(f"register 4 (service mode) is {mode}, outside 0..7")
    floor = regs[1] - 0x10000 if regs[1] & 0x8000 else regs[1]
    direction = Direction.UP if _bit(a, 1) else Direction.DOWN if _bit(a, 2) else Direction.NONE
    return CarState(
        t=t,
        floor=floor,
        position_mm=_u32(regs[6], regs[7]),
        speed_mm_s=regs[5],
        direction=direction,
        moving=_bit(a, 0),
        door_zone=_bit(a, 3),
        levelled=_bit(a, 4),
        door=_door(a),
        safety_circuit_closed=_bit(a, 5),
        door_lock_closed=_bit(a, 6),
        reopen_active=_bit(a, 11),
        alarm_button=_bit(a, 12),
        overload=_bit(a, 13),
        occupied=_bit(a, 14),
        mains_ok=_bit(a, 15),
        door_open_command=_bit(b, 9),
        door_close_command=_bit(b, 10),
        mode=ServiceMode(mode),
        load_percent=regs[8],
        fault_code=regs[9],
        trips=_u32(regs[10], regs[11]),
        door_cycles=_u32(regs[12], regs[13]),
        run_hours=_u32(regs[14], regs[15]),
    )


def _ascii(regs: Sequence[int]) -> str:
    raw = b"".join(r.to_bytes(2, "big") for r in regs)
    return raw.decode("ascii", errors="replace").strip("\x00 ")


def decode_identity(regs: Sequence[int]) -> ControllerIdentity:
    """Decode holding registers 20-43 (firmware, model, serial: 16 ASCII chars each)."""
    if len(regs) < IDENTITY_COUNT:
        raise DecodeError(f"expected {IDENTITY_COUNT} identity registers, got {len(regs)}")
    return ControllerIdentity(
        firmware=_ascii(regs[0:8]), model=_ascii(regs[8:16]), serial=_ascii(regs[16:24])
    )
