"""The event taxonomy and the `Event` value every detector emits."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from agent.detect.reasons import Params


class EventType(enum.Enum):
    """DESIGN.md's taxonomy; the value is the GB/T 24476-2017 code (0 for extensions)."""

    SAFETY_CIRCUIT_OPEN = "SAFETY_CIRCUIT_OPEN"
    DOOR_CLOSE_FAILURE = "DOOR_CLOSE_FAILURE"
    DOOR_OPEN_FAILURE = "DOOR_OPEN_FAILURE"
    STOPPED_OUTSIDE_DOOR_ZONE = "STOPPED_OUTSIDE_DOOR_ZONE"
    UNINTENDED_MOVEMENT = "UNINTENDED_MOVEMENT"
    RUN_TIME_EXCEEDED = "RUN_TIME_EXCEEDED"
    POSITION_LOST = "POSITION_LOST"
    RESTART_PREVENTED = "RESTART_PREVENTED"
    OVERTRAVEL_TOP = "OVERTRAVEL_TOP"
    OVERTRAVEL_BOTTOM = "OVERTRAVEL_BOTTOM"
    OVERSPEED = "OVERSPEED"
    DOOR_OPEN_WHILE_MOVING = "DOOR_OPEN_WHILE_MOVING"
    DOOR_LOCK_BYPASS = "DOOR_LOCK_BYPASS"
    ENTRAPMENT = "ENTRAPMENT"
    DOOR_REOPEN_LOOP = "DOOR_REOPEN_LOOP"
    DOOR_HELD_OPEN = "DOOR_HELD_OPEN"
    DOOR_SLOWING = "DOOR_SLOWING"
    POWER_FAILURE = "POWER_FAILURE"
    MODE_CHANGE = "MODE_CHANGE"
    ALARM_BUTTON = "ALARM_BUTTON"
    CONTROLLER_LINK_LOST = "CONTROLLER_LINK_LOST"
    LEVELLING_FAULT = "LEVELLING_FAULT"

    @property
    def gb_code(self) -> int:
        """GB/T 24476-2017 code of this event, 0 for the regional and LiftWatch extensions."""
        return _GB_CODES.get(self, 0)


_GB_CODES = {
    EventType.SAFETY_CIRCUIT_OPEN: 1,
    EventType.DOOR_CLOSE_FAILURE: 2,
    EventType.DOOR_OPEN_FAILURE: 3,
    EventType.STOPPED_OUTSIDE_DOOR_ZONE: 4,
    EventType.UNINTENDED_MOVEMENT: 5,
    EventType.RUN_TIME_EXCEEDED: 6,
    EventType.POSITION_LOST: 7,
    EventType.RESTART_PREVENTED: 8,
    EventType.POWER_FAILURE: 41,
    EventType.MODE_CHANGE: 40,
    EventType.ALARM_BUTTON: 90,
}


class Phase(enum.Enum):
    RAISED = "RAISED"
    CLEARED = "CLEARED"


@dataclass(frozen=True, slots=True)
class Event:
    """One phase of one occurrence of an event on one car.

    ``onset`` is the monotonic time the condition began; ``at`` the monotonic time this
    phase was decided. The RAISED and CLEARED of one occurrence share ``onset`` and
    ``type``; the agent turns (unit, type, onset) into one event id.
    """

    type: EventType
    phase: Phase
    onset: float
    at: float
    floor: int | None = None
    reason: str = ""
    # The GB/T 24476 code when it depends on the occurrence (MODE_CHANGE: the mode
    # entered); None takes the type's own `EventType.gb_code`.
    gb_code: int | None = None
    # True when the car stood at a landing (door zone and levelled) at onset, False
    # between floors, None when the profile cannot tell.
    at_landing: bool | None = None
    # ``reason`` as a stable code and its parameters (agent.detect.reasons), for a reader
    # in another language. Not part of an event's identity: two events equal but for
    # them say the same.
    reason_code: str = field(default="", compare=False)
    reason_params: Params = field(default=(), compare=False)

    @property
    def code(self) -> int:
        """The GB/T 24476 code this occurrence carries (0 where the standard has none)."""
        return self.type.gb_code if self.gb_code is None else self.gb_code
