"""Travel of the car along the hoistway: a trapezoidal speed profile that lands exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class MotionProfile:
    """Speed limits of a run, in metres and seconds.

    `levelling_speed` is the creep speed the car keeps for its last centimetres, so that a
    coarse time step still arrives instead of stopping short.
    """

    rated_speed: float = 1.6
    acceleration: float = 0.8
    levelling_speed: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.levelling_speed <= self.rated_speed:
            raise ValueError("need 0 < levelling_speed <= rated_speed")
        if self.acceleration <= 0:
            raise ValueError("acceleration must be positive")

    def stopping_distance(self, speed: float) -> float:
        """Distance in metres needed to brake from `speed` at the profile's deceleration."""
        return speed * speed / (2.0 * self.acceleration)


def advance(
    position: float, speed: float, target: float, dt: float, profile: MotionProfile
) -> tuple[float, float]:
    """Move from `position` towards `target` for `dt` seconds.

    Returns the new (position, speed); `speed` is unsigned. Never overshoots: when the
    target is reached the position equals it exactly and the speed is 0.
    """
    distance = abs(target - position)
    if distance == 0.0:
        return target, 0.0
    # Speed allowed now so that the car can still brake to a stop at the target.
    brake_limit = math.sqrt(2.0 * profile.acceleration * distance)
    new_speed = min(profile.rated_speed, speed + profile.acceleration * dt, brake_limit)
    new_speed = max(new_speed, profile.levelling_speed)
    step = new_speed * dt
    if step >= distance:
        return target, 0.0
    return position + math.copysign(step, target - position), new_speed
