"""`CarState`: the one normalized snapshot of a car that every detector reads.

A profile decoder turns raw registers into a `CarState`; detectors never see registers.
A signal the unit's profile cannot read is ``None``, never a default: an absent occupancy
sensor is not an empty car, and each detector documents how it degrades without it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


class Direction(enum.Enum):
    NONE = "none"
    UP = "up"
    DOWN = "down"


class DoorState(enum.Enum):
    """What the door limit switches and operator say, in order of precedence."""

    OPEN = "open"  # fully-open limit made
    CLOSED = "closed"  # fully-closed limit made
    OPENING = "opening"
    CLOSING = "closing"
    PARTLY_OPEN = "partly_open"  # neither limit made, operator idle
    UNKNOWN = "unknown"  # the profile has no door signals

    # Detectors test membership in sets of these once or more per rule and sample, and
    # Enum's own __hash__ is Python code. Members are singletons that compare by
    # identity, so identity hashing is equivalent and runs in C.
    __hash__ = object.__hash__


class ServiceMode(enum.Enum):
    """Service modes with their GB/T 24476-2017 register values (reference map reg 4)."""

    STOPPED = 0
    NORMAL = 1
    INSPECTION = 2
    FIRE_RETURN = 3
    FIREFIGHTER = 4
    EMERGENCY_POWER = 5
    EARTHQUAKE = 6
    UNKNOWN = 7

    # Detectors test membership in sets of these once or more per rule and sample, and
    # Enum's own __hash__ is Python code. Members are singletons that compare by
    # identity, so identity hashing is equivalent and runs in C.
    __hash__ = object.__hash__


@dataclass(frozen=True, slots=True)
class CarState:
    """One decoded sample of one car at monotonic time ``t`` (seconds).

    ``door_lock_closed`` and ``safety_circuit_closed`` are the circuits being *made*
    (continuity), as the controller reads them. ``up_final_limit``/``down_final_limit``
    are True when the final limit switch has *operated* (reference map reg 3 bits 2-3).
    """

    t: float
    floor: int | None = None
    position_mm: int | None = None
    speed_mm_s: int | None = None
    direction: Direction = Direction.NONE
    moving: bool | None = None
    door_zone: bool | None = None
    levelled: bool | None = None
    door: DoorState = DoorState.UNKNOWN
    door_lock_closed: bool | None = None
    safety_circuit_closed: bool | None = None
    occupied: bool | None = None
    load_percent: int | None = None
    alarm_button: bool | None = None
    overload: bool | None = None
    mode: ServiceMode = ServiceMode.UNKNOWN
    fault_code: int | None = None
    mains_ok: bool | None = None
    reopen_active: bool | None = None
    door_open_command: bool | None = None
    door_close_command: bool | None = None
    trips: int | None = None
    door_cycles: int | None = None
    run_hours: int | None = None
    # Final limit switches, True when operated (the car ran past the terminal landing).
    up_final_limit: bool | None = None
    down_final_limit: bool | None = None

    @property
    def at_landing(self) -> bool | None:
        """True when the car stands level in a door zone; None if the profile cannot tell."""
        if self.door_zone is None:
            return None
        return self.door_zone and self.levelled is not False


@dataclass(frozen=True, slots=True)
class ControllerIdentity:
    """Identity strings read from the controller."""

    firmware: str
    model: str
    serial: str
    vendor: str = ""


# --- CarState per sample, fast ----------------------------------------------------------
#
# The agent makes one CarState per sample of every car (40 a second for 4 cars at 10 Hz),
# and the generated __init__ of a frozen dataclass binds 27 keywords and calls
# object.__setattr__ 27 times: about a fifth of what all the detectors then spend on the
# sample. The fields other than ``t`` rarely change from one sample to the next, so the
# monitor resolves them once (`state_values`) and stamps each sample with `state_at`,
# which fills the slots through their descriptors, as the generated __init__ does, just
# without the keyword binding and the per-field method lookups. The result is the same
# frozen object (equal, hashing alike, immutable afterwards).

_FIELD_NAMES = tuple(f.name for f in fields(CarState))
# The slot descriptors' setters, `t` first (slots bypass the frozen __setattr__).
_SET_T: Any = CarState.__dict__["t"].__set__
_SETTERS: tuple[Any, ...] = tuple(CarState.__dict__[name].__set__ for name in _FIELD_NAMES[1:])


def state_values(decoded: Mapping[str, Any]) -> tuple[object, ...]:
    """Every CarState field but ``t``, in declaration order: ``decoded`` over the defaults.

    Raises TypeError for a name that is not a CarState field, as CarState itself does.
    """
    template = CarState(0.0, **decoded)
    return tuple(getattr(template, name) for name in _FIELD_NAMES[1:])


def state_at(t: float, values: tuple[object, ...]) -> CarState:
    """The CarState at ``t`` with the other fields ``values`` (from `state_values`): equal
    to ``CarState(t, **decoded)``, made in about half the time."""
    sample: CarState = object.__new__(CarState)
    _SET_T(sample, t)
    for set_field, value in zip(_SETTERS, values, strict=True):
        set_field(sample, value)
    return sample
