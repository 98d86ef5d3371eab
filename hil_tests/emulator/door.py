"""The door operator: a door panel position driven by open and close commands."""

from __future__ import annotations

from dataclasses import dataclass

# Fully open/closed are judged with a tolerance so float accumulation cannot leave a door
# one rounding error short of its limit switch.
_LIMIT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class DoorTiming:
    """How long the operator takes for a full stroke, in seconds."""

    open_s: float = 2.5
    close_s: float = 3.0

    def __post_init__(self) -> None:
        if self.open_s <= 0 or self.close_s <= 0:
            raise ValueError("door stroke times must be positive")


class DoorOperator:
    """A door whose opening fraction (0 closed .. 1 open) follows its commands over time.

    `open_blocked` keeps the door from leaving closed; `close_stall_at` is the opening
    fraction where a failing close stroke stops (None when the operator is healthy).
    """

    def __init__(self, timing: DoorTiming) -> None:
        """A closed door with no command, healthy operator."""
        self.timing = timing
        self.opening = 0.0
        self.open_command = False
        self.close_command = False
        self.open_blocked = False
        self.close_stall_at: float | None = None
        # >1 for a wearing operator: every stroke takes this many times its normal time.
        self.slowdown = 1.0
        self._moving = False

    @property
    def fully_open(self) -> bool:
        """True when the door is at its open limit."""
        return self.opening >= 1.0 - _LIMIT_TOLERANCE

    @property
    def fully_closed(self) -> bool:
        """True when the door is at its closed limit (the lock can only be made here)."""
        return self.opening <= _LIMIT_TOLERANCE

    @property
    def is_opening(self) -> bool:
        """True while the panel actually moved towards open in the last step."""
        return self._moving and self.open_command

    @property
    def is_closing(self) -> bool:
        """True while a close stroke is in progress, including a stalled one."""
        return self.close_command and not self.fully_closed

    def command_open(self) -> None:
        """Start an open stroke (cancels any close)."""
        self.open_command, self.close_command = True, False

    def command_close(self) -> None:
        """Start a close stroke (cancels any open)."""
        self.open_command, self.close_command = False, True

    def step(self, dt: float) -> None:
        """Advance the panel by `dt` seconds; commands drop when their limit is reached."""
        before = self.opening
        if self.open_command and not self.open_blocked:
            self.opening = min(1.0, self.opening + dt / (self.timing.open_s * self.slowdown))
            if self.fully_open:
                self.opening = 1.0
                self.open_command = False
        elif self.close_command:
            floor = self.close_stall_at if self.close_stall_at is not None else 0.0
            if self.opening > floor:
                self.opening = max(floor, self.opening - dt / (self.timing.close_s * self.slowdown))
            if self.fully_closed:
                self.opening = 0.0
                self.close_command = False
        self._moving = self.opening != before
