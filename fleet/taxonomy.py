"""What each event type *is* to the people who read it: its class, its codes.

This is the one place where the fleet decides which events are faults of the lift. The
fault-rate report, the claims audit, the JSON API, the CSV exports and the dashboard all
ask here; docs/events.md gives each class with its reason, and a test keeps the two in
step.

Classes (shared/DESIGN.md, "Event taxonomy"):

- ``lift_fault``: the lift failed; counts in the fault rates a regulator publishes.
- ``usage``: what passengers do (the alarm button, doors held open).
- ``health``: predictive signs (a slowing door), not yet a failure.
- ``external``: causes outside the lift (mains failure).
- ``monitoring``: what the monitoring sees of itself or of the operators (link lost,
  a service mode change).

Codes: ``gb_code`` is the GB/T 24476-2017 code the agent sent, ``None`` where the standard
has none (the wire's 0), never 0. ``platform_codes`` are the regional platforms' own codes
where one is defined; today Chongqing's (91 bottom overtravel, 92 top overtravel, 93
entrapment at floor level).

Events stored without a code (before migration "verdicts", when the fleet dropped the
wire's code, or from an agent that sent 0) show the code their type always has
(`FIXED_GB_CODES`, see `shown_gb_code`). MODE_CHANGE has no such code: its code is the
mode entered, and agents before issue 13 sent 40 ("back to normal") for every mode, so an
old MODE_CHANGE shows no code rather than a guess.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from protos.liftwatch.v1 import records_pb2


class EventClass(enum.Enum):
    """What an event says about the lift; the value is its name in JSON and CSV."""

    LIFT_FAULT = "lift_fault"
    USAGE = "usage"
    HEALTH = "health"
    EXTERNAL = "external"
    MONITORING = "monitoring"


_T = records_pb2

# Every wire EventType but UNSPECIFIED has a class: tests/fleet/test_taxonomy.py checks it.
EVENT_CLASSES: Mapping[int, EventClass] = {
    _T.EVENT_TYPE_SAFETY_CIRCUIT_OPEN: EventClass.LIFT_FAULT,
    _T.EVENT_TYPE_DOOR_CLOSE_FAILURE: EventClass.LIFT_FAULT,
    _T.EVENT_TYPE_DOOR_OPEN_FAILURE: EventClass.LIFT_FAULT,
    _T.EVENT_TYPE_STOPPED_OUTSIDE_DOOR_ZONE: EventClass.LIFT_FAULT,
    _T.EVENT_TYPE_UNINTENDED_MOVEMENT: EventClass.LIFT_FAULT,
    _T.EVENT_TYPE_RUN_TIME_EXCEEDED: EventClass.LIFT_FAULT,
    _T.EVENT_TYPE_POSITION_LOST: EventClass.LIFT_FAULT,
    _T.EVENT_TYPE_RESTART_PREVENTED: EventClass.LIFT_FAULT,
    _T.EVENT_TYPE_OVERTRAVEL_TOP: EventClass.LIFT_FAULT,
    _T.EVENT_TYPE_OVERTRAVEL_BOTTOM: EventClass.LIFT_FAULT,
    _T.EVENT_TYPE_OVERSPEED: EventClass.LIFT_FAULT,
    _T.EVENT_TYPE_DOOR_OPEN_WHILE_MOVING: EventClass.LIFT_FAULT,
    _T.EVENT_TYPE_DOOR_LOCK_BYPASS: EventClass.LIFT_FAULT,
    # A passenger shut in a car with closed doors is the lift failing its one duty,
    # whatever the cause; a mains failure with someone inside is still an entrapment.
    _T.EVENT_TYPE_ENTRAPMENT: EventClass.LIFT_FAULT,
    # A minute of reopening that keeps the car at one landing is a door protective
    # device or a sill that needs a mechanic; a passenger holding the door is
    # DOOR_HELD_OPEN or a shorter loop, which the rule does not reach.
    _T.EVENT_TYPE_DOOR_REOPEN_LOOP: EventClass.LIFT_FAULT,
    _T.EVENT_TYPE_LEVELLING_FAULT: EventClass.LIFT_FAULT,
    _T.EVENT_TYPE_DOOR_HELD_OPEN: EventClass.USAGE,
    _T.EVENT_TYPE_ALARM_BUTTON: EventClass.USAGE,
    _T.EVENT_TYPE_DOOR_SLOWING: EventClass.HEALTH,
    _T.EVENT_TYPE_POWER_FAILURE: EventClass.EXTERNAL,
    _T.EVENT_TYPE_MODE_CHANGE: EventClass.MONITORING,
    _T.EVENT_TYPE_CONTROLLER_LINK_LOST: EventClass.MONITORING,
}

# The GB/T 24476-2017 code of every type whose code is fixed by the type alone: the agent's
# own table (agent/detect/events.py; tests/fleet/test_taxonomy.py keeps the two equal).
# MODE_CHANGE is left out on purpose: its code depends on the mode (40, 42-47).
FIXED_GB_CODES: Mapping[int, int] = {
    _T.EVENT_TYPE_SAFETY_CIRCUIT_OPEN: 1,
    _T.EVENT_TYPE_DOOR_CLOSE_FAILURE: 2,
    _T.EVENT_TYPE_DOOR_OPEN_FAILURE: 3,
    _T.EVENT_TYPE_STOPPED_OUTSIDE_DOOR_ZONE: 4,
    _T.EVENT_TYPE_UNINTENDED_MOVEMENT: 5,
    _T.EVENT_TYPE_RUN_TIME_EXCEEDED: 6,
    _T.EVENT_TYPE_POSITION_LOST: 7,
    _T.EVENT_TYPE_RESTART_PREVENTED: 8,
    _T.EVENT_TYPE_POWER_FAILURE: 41,
    _T.EVENT_TYPE_ALARM_BUTTON: 90,
}

# Chongqing's platform codes (渝 lift-IoT platform): overtravel and floor-level entrapment.
CHONGQING = "chongqing"


def event_class(event_type: int) -> EventClass | None:
    """The class of a wire EventType; None for a type this fleet does not know."""
    return EVENT_CLASSES.get(event_type)


def is_lift_fault(event_type: int) -> bool:
    """True when events of this type count in the fault rates a regulator publishes."""
    return EVENT_CLASSES.get(event_type) is EventClass.LIFT_FAULT


def gb_code(wire_code: int) -> int | None:
    """The GB/T 24476 code to show for the wire's ``gb_code``: None where it is 0."""
    return wire_code or None


def platform_codes(event_type: int, at_landing: bool | None) -> dict[str, int]:
    """The regional platforms' codes for one event, by platform name; empty when none.

    Chongqing's 93 is entrapment *at floor level*: an entrapment between floors, or one
    whose position the profile could not tell, has no Chongqing code.
    """
    if event_type == _T.EVENT_TYPE_OVERTRAVEL_BOTTOM:
        return {CHONGQING: 91}
    if event_type == _T.EVENT_TYPE_OVERTRAVEL_TOP:
        return {CHONGQING: 92}
    if event_type == _T.EVENT_TYPE_ENTRAPMENT and at_landing:
        return {CHONGQING: 93}
    return {}


def shown_gb_code(event_type: int, stored: int | None) -> int | None:
    """The GB/T 24476 code to show for a stored event: the code stored with it; for one
    stored without (NULL), the code its type always has; None where the standard has none
    or the code depended on the occurrence (an old MODE_CHANGE). Never 0."""
    if stored:
        return stored
    return FIXED_GB_CODES.get(event_type)


@dataclass(frozen=True, slots=True)
class EventCodes:
    """What one stored event is, as every output shows it."""

    gb_code: int | None
    platform_codes: Mapping[str, int]
    event_class: EventClass | None


def codes_of(event_type: int, stored_gb_code: int | None, at_landing: bool | None) -> EventCodes:
    """The codes and class of one stored event of ``event_type``, stored with
    ``stored_gb_code`` (None: none) at ``at_landing`` (None: position unknown)."""
    return EventCodes(
        gb_code=shown_gb_code(event_type, stored_gb_code),
        platform_codes=platform_codes(event_type, at_landing),
        event_class=event_class(event_type),
    )
