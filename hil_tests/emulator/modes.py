"""Service modes of a controller, numbered as GB/T 24476 numbers them (register 4)."""

from __future__ import annotations

import enum


class ServiceMode(enum.IntEnum):
    """Service mode as GB/T 24476 numbers it (register 4); STOPPED is "out of service"."""

    STOPPED = 0
    NORMAL = 1
    INSPECTION = 2
    FIRE_RETURN = 3
    FIREFIGHTER = 4
    EMERGENCY_POWER = 5
    EARTHQUAKE = 6
    UNKNOWN = 7


# Names accepted by the `mode` fault; "out_of_service" is the everyday word for STOPPED.
MODE_NAMES: dict[str, ServiceMode] = {m.name.lower(): m for m in ServiceMode} | {
    "out_of_service": ServiceMode.STOPPED
}


def parse_mode(name: object) -> ServiceMode:
    """The mode called `name`, or ValueError listing the known names."""
    if isinstance(name, str) and name in MODE_NAMES:
        return MODE_NAMES[name]
    raise ValueError(f"unknown mode {name!r}; known modes: {', '.join(sorted(MODE_NAMES))}")
