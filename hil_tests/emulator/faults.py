"""The faults an emulated car can be made to suffer, and how they are named on the wire."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Fault(enum.Enum):
    """A fault injectable into one car; the value is its name in the control protocol."""

    ENTRAPMENT = "entrapment"
    DOOR_CLOSE_FAILURE = "door_close_failure"
    DOOR_OPEN_FAILURE = "door_open_failure"


@dataclass(frozen=True)
class FaultSpec:
    """What a fault means to the emulator.

    `controller_code` is what the controller itself reports in register 9 while the fault
    is manifest. The faults below report 0 on purpose: a real controller often says nothing
    when it stalls a door or stops between floors, and the agent must detect them from the
    signals alone.
    """

    fault: Fault
    description: str
    controller_code: int = 0


FAULTS: dict[Fault, FaultSpec] = {
    Fault.ENTRAPMENT: FaultSpec(
        Fault.ENTRAPMENT,
        "on its next loaded run the car stops between two floors, doors closed and locked; "
        "clearing it crawls the car to the nearest landing and lets the passengers out",
    ),
    Fault.DOOR_CLOSE_FAILURE: FaultSpec(
        Fault.DOOR_CLOSE_FAILURE,
        "the door operator stalls part-way while closing, close command held on",
    ),
    Fault.DOOR_OPEN_FAILURE: FaultSpec(
        Fault.DOOR_OPEN_FAILURE,
        "the door stays closed at a landing while the open command is on",
    ),
}


def parse_fault(name: object) -> Fault:
    """Return the fault called `name`, or raise ValueError listing the known names."""
    for fault in Fault:
        if fault.value == name:
            return fault
    known = ", ".join(f.value for f in Fault)
    raise ValueError(f"unknown fault {name!r}; known faults: {known}")
