"""Travel of the car along the hoistway: jerk-limited (S-curve) runs that land exactly.

A run is planned once, when it starts or when its stopping point or speed limit changes,
as a short list of constant-jerk segments (`Segment`), and then evaluated in closed form
at any time since the plan began (`Run.at`). Planning, not integrating, is what makes a
run land on its target to the micrometre whatever the caller's time step, and what makes
a moving car's substep cheap (one cubic polynomial).

Each plan is "ramp to a cruise speed, cruise, ramp to rest": a ramp raises or lowers the
acceleration at the jerk limit, holds it at the acceleration limit if it gets there, and
lowers it back to zero at the jerk limit. Short runs never reach rated speed: the cruise
speed is then found by bisection so that the two ramps alone cover the distance.

Defaults are typical of a 1.6 m/s passenger lift (gearless traction, VVVF drive):
rated speed 1.6 m/s, acceleration and deceleration 0.9 m/s², jerk 1.2 m/s³. A 3 m
one-floor run then takes 4.5 s and peaks at 1.34 m/s; rated speed needs a run of at
least 4.05 m; 33 m (11 floors) take 23.2 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MotionProfile", "Run", "Segment", "plan_run", "stopping_distance"]

# Bisection on the cruise speed stops when the bracket is this narrow (m/s); the
# remaining distance is covered by a cruise at the lower bound, so the run still ends
# exactly at its target.
_SPEED_TOLERANCE = 1e-9
_BISECTION_STEPS = 60


@dataclass(frozen=True)
class MotionProfile:
    """Limits of a normal run, in metres and seconds.

    `rated_speed` (m/s) is the contract speed, `acceleration` (m/s²) the limit used both
    to accelerate and to brake, `jerk` (m/s³) how fast the acceleration may change (what
    passengers feel as comfort; 1.0-1.5 m/s³ is usual).
    """

    rated_speed: float = 1.6
    acceleration: float = 0.9
    jerk: float = 1.2

    def __post_init__(self) -> None:
        if not (self.rated_speed > 0 and self.acceleration > 0 and self.jerk > 0):
            raise ValueError("rated_speed, acceleration and jerk must be positive")

    def stopping_distance(self, speed: float, acceleration: float = 0.0) -> float:
        """Metres needed to come to rest from `speed` (m/s, >= 0) with the current
        `acceleration` (m/s², signed along the travel), braking as hard as the profile
        allows; see `stopping_distance`."""
        return stopping_distance(speed, acceleration, self)


@dataclass(frozen=True)
class Segment:
    """A stretch of constant jerk: `duration` s at `jerk` m/s³ (signed along the travel)."""

    duration: float
    jerk: float


def _ramp(v0: float, a0: float, v1: float, amax: float, jmax: float) -> list[Segment]:
    """Segments taking the speed from `v0` (acceleration `a0`) to `v1` with zero
    acceleration at the end, within |a| <= `amax` and |j| <= `jmax`."""
    a0 = max(-amax, min(amax, a0))  # a float hair beyond the limit must not break the algebra
    # Where the speed settles if the acceleration is brought to zero at once.
    settle = v0 + a0 * abs(a0) / (2.0 * jmax)
    if abs(v1 - settle) < 1e-12:
        return [Segment(abs(a0) / jmax, -math.copysign(jmax, a0))] if a0 else []
    sign = 1.0 if v1 > settle else -1.0
    # Mirror so the ramp always raises the speed: b0 the mirrored start acceleration.
    b0, dv = sign * a0, sign * (v1 - v0)
    peak = math.sqrt(max(0.0, (2.0 * jmax * dv + b0 * b0) / 2.0))
    hold = 0.0
    if peak > amax:
        peak = amax
        hold = (dv - (2.0 * amax * amax - b0 * b0) / (2.0 * jmax)) / amax
    segments = []
    if peak > b0:
        segments.append(Segment((peak - b0) / jmax, sign * jmax))
    if hold > 0.0:
        segments.append(Segment(hold, 0.0))
    segments.append(Segment(peak / jmax, -sign * jmax))
    return segments


def _walk(v0: float, a0: float, segments: list[Segment]) -> tuple[float, float]:
    """(distance, lowest speed at a segment end) after running `segments` from (v0, a0)."""
    x, v, a, lowest = 0.0, v0, a0, v0
    for seg in segments:
        t, j = seg.duration, seg.jerk
        x += v * t + a * t * t / 2.0 + j * t * t * t / 6.0
        v += a * t + j * t * t / 2.0
        a += j * t
        lowest = min(lowest, v)
    return x, lowest


def _settle_speed(v0: float, a0: float, jmax: float) -> float:
    return v0 + a0 * abs(a0) / (2.0 * jmax)


def stopping_distance(speed: float, acceleration: float, profile: MotionProfile) -> float:
    """Shortest distance (m) in which a car at `speed` with `acceleration` can come to rest
    within the profile's limits; `math.inf` when braking already and the jerk limit cannot
    bring the acceleration to zero before the speed would reverse (the car is then within
    millimetres of stopping on its current plan anyway)."""
    if speed <= 0.0 and acceleration <= 0.0:
        return 0.0
    if acceleration < 0.0 and _settle_speed(speed, acceleration, profile.jerk) < -1e-12:
        return math.inf
    segments = _ramp(speed, acceleration, 0.0, profile.acceleration, profile.jerk)
    return _walk(speed, acceleration, segments)[0]


@dataclass(frozen=True)
class Run:
    """A planned run from `start` (m) in direction `sign` (+1 up, -1 down) to `target`.

    `knots` hold (start time, distance, speed, acceleration, jerk) of each segment, the
    distances measured along the travel; `duration` is when the car is at rest at the
    target. Evaluate with `at(t)`.
    """

    start: float
    target: float
    sign: int
    knots: tuple[tuple[float, float, float, float, float], ...]
    duration: float

    def at(self, t: float, index: int = 0) -> tuple[float, float, float, int]:
        """(position m, speed m/s >= 0, acceleration m/s² along the travel, segment index)
        at `t` s after the plan began. `index` is a hint (the last index returned) so that
        stepping forwards costs O(1); past `duration` the car is at the target, at rest."""
        if t >= self.duration:
            return self.target, 0.0, 0.0, len(self.knots)
        knots = self.knots
        last = len(knots) - 1
        while index < last and t >= knots[index + 1][0]:
            index += 1
        t0, x0, v0, a0, j = knots[index]
        tau = t - t0
        x = x0 + tau * (v0 + tau * (a0 / 2.0 + tau * j / 6.0))
        v = v0 + tau * (a0 + tau * j / 2.0)
        return self.start + self.sign * x, max(0.0, v), a0 + j * tau, index


def plan_run(
    position: float, speed: float, acceleration: float, target: float, profile: MotionProfile
) -> Run | None:
    """Plan a jerk-limited run from the current state to rest at `target`.

    `speed` (>= 0) and `acceleration` are along the direction of `target`; a car already
    moving keeps its direction (callers only retarget ahead of the car). Returns None when
    the car cannot stop at `target` within the profile's limits (it is too close). The
    speed never exceeds `max(rated_speed, speed)`: a car already faster than the profile
    allows (an overspeed cleared mid-run) first slows to it.
    """
    distance = abs(target - position)
    sign = 1 if target >= position else -1
    amax, jmax, vmax = profile.acceleration, profile.jerk, profile.rated_speed
    if distance == 0.0 and speed == 0.0:
        return Run(position, target, sign, ((0.0, 0.0, 0.0, 0.0, 0.0),), 0.0)
    minimum = stopping_distance(speed, acceleration, profile)
    if minimum > distance + 1e-9:
        return None

    def covered(cruise: float) -> float:
        up = _ramp(speed, acceleration, cruise, amax, jmax)
        down = _ramp(cruise, 0.0, 0.0, amax, jmax)
        return _walk(speed, acceleration, up)[0] + _walk(cruise, 0.0, down)[0]

    if covered(vmax) <= distance:
        cruise = vmax
    else:
        # covered(0) is the shortest stop (<= distance), covered(vmax) is too far.
        low, high = 0.0, vmax
        for _ in range(_BISECTION_STEPS):
            if high - low < _SPEED_TOLERANCE:
                break
            middle = (low + high) / 2.0
            if covered(middle) <= distance:
                low = middle
            else:
                high = middle
        cruise = low
    up = _ramp(speed, acceleration, cruise, amax, jmax)
    down = _ramp(cruise, 0.0, 0.0, amax, jmax)
    travelled, lowest = _walk(speed, acceleration, up)
    if lowest < -1e-9:
        return None  # the ramp would reverse the car: not a plan a drive would run
    travelled += _walk(cruise, 0.0, down)[0]
    segments = list(up)
    remaining = distance - travelled
    if cruise > 1e-6 and remaining > 0.0:
        segments.append(Segment(remaining / cruise, 0.0))
    segments.extend(down)
    knots = []
    t = x = 0.0
    v, a = speed, max(-amax, min(amax, acceleration))
    for seg in segments:
        if seg.duration <= 0.0:
            continue
        knots.append((t, x, v, a, seg.jerk))
        d, j = seg.duration, seg.jerk
        x += v * d + a * d * d / 2.0 + j * d * d * d / 6.0
        v += a * d + j * d * d / 2.0
        a += j * d
        t += d
    if not knots:
        knots.append((0.0, 0.0, speed, 0.0, 0.0))
    return Run(position, target, sign, tuple(knots), t)
