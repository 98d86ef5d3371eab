"""Jerk-limited (S-curve) runs: the planner on its own, and the car that uses it."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil_tests.emulator.car import Car, CarConfig, CarSnapshot
from hil_tests.emulator.motion import MotionProfile, plan_run

PROFILE = MotionProfile()
CONFIG = CarConfig()
HEIGHTS = CONFIG.landing_heights_mm
TICK = 0.001  # s, sampling of a plan in closed form


Point = tuple[float, float, float, float]  # t, x, v, a


def sample(position: float, speed: float, accel: float, target: float) -> list[Point]:
    """(t, x, v, a) every TICK along the plan to `target`, past its end."""
    run = plan_run(position, speed, accel, target, PROFILE)
    assert run is not None
    out: list[Point] = []
    t, index = 0.0, 0
    while t <= run.duration + 0.01:
        x, v, a, index = run.at(t, min(index, len(run.knots) - 1))
        out.append((t, x, v, a))
        t += TICK
    return out


def check_limits(points: list[Point], rated: float = PROFILE.rated_speed) -> None:
    for (_, _, v0, a0), (_, _, v1, a1) in itertools.pairwise(points):
        assert 0.0 <= v1 <= rated + 1e-9
        assert abs(a1) <= PROFILE.acceleration + 1e-9
        assert abs(a1 - a0) <= PROFILE.jerk * TICK + 1e-9  # jerk bounded
        assert abs(v1 - v0) <= PROFILE.acceleration * TICK + 1e-9


@pytest.mark.parametrize("distance", [0.35, 1.0, 3.0, 4.9, 6.0, 15.0, 33.0])
def test_runs_from_rest_respect_the_limits_and_land_exactly(distance: float) -> None:
    points = sample(0.0, 0.0, 0.0, distance)
    check_limits(points)
    _, x, v, a = points[-1]
    assert x == distance and v == 0.0 and a == 0.0
    # Position never passes the target and never goes backwards.
    xs = [p[1] for p in points]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(xs))
    assert max(xs) <= distance + 1e-9


def test_short_trips_never_reach_rated_speed_and_long_ones_cruise() -> None:
    one_floor = max(p[2] for p in sample(0.0, 0.0, 0.0, 3.0))
    assert 0.9 < one_floor < PROFILE.rated_speed - 0.1
    long_run = sample(0.0, 0.0, 0.0, 33.0)
    cruising = [p for p in long_run if abs(p[2] - PROFILE.rated_speed) < 1e-9]
    assert cruising and cruising[-1][0] - cruising[0][0] > 15.0


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.5, 40.0),
    st.floats(0.0, 1.0),
    st.floats(0.1, 30.0),
)
def test_replanning_mid_run_keeps_limits_or_refuses(
    first: float, fraction: float, second: float
) -> None:
    # A car on its way to `first` is told, part-way, to stop at `second` instead: the new
    # plan continues smoothly from the current state, or is refused when too late.
    run = plan_run(0.0, 0.0, 0.0, first, PROFILE)
    assert run is not None
    x, v, a, _ = run.at(fraction * run.duration)
    if v == 0.0 and a == 0.0:
        return
    target = x + second
    again = plan_run(x, v, a, target, PROFILE)
    stop = PROFILE.stopping_distance(v, a)
    if again is None:
        assert stop > second - 1e-6
        return
    points = sample(x, v, a, target)
    check_limits(points, max(PROFILE.rated_speed, v))
    assert abs(points[0][3] - a) < 1e-9  # the acceleration does not jump
    assert points[-1][1] == target


def run_car(seconds: float, dt: float) -> list[CarSnapshot]:
    car = Car(CONFIG, random.Random(4))
    snaps = []
    end = car.time + seconds
    while car.time < end:
        car.step(dt)
        snaps.append(car.snapshot())
    return snaps


def test_a_car_in_service_keeps_speed_acceleration_and_jerk_bounded() -> None:
    dt = 0.25  # coarse enough that the 1 mm/s register resolution does not swamp jerk
    snaps = run_car(3600.0, dt)
    speeds = [s.speed_mm_s / 1000.0 for s in snaps]
    assert max(speeds) <= PROFILE.rated_speed
    assert max(speeds) == PROFILE.rated_speed  # some runs are long enough to cruise
    resolution = 0.001 / dt
    accels = [(b - a) / dt for a, b in itertools.pairwise(speeds)]
    assert max(abs(a) for a in accels) <= PROFILE.acceleration + 2 * resolution
    jerks = [(b - a) / dt for a, b in itertools.pairwise(accels)]
    assert max(abs(j) for j in jerks) <= PROFILE.jerk + 4 * resolution / dt


def test_every_stop_in_service_is_level_within_10_mm_and_in_the_door_zone() -> None:
    stops = 0
    for s in run_car(3600.0, 0.05):
        if s.door_fully_open or (not s.moving and s.door_open_command):
            offset = s.position_mm - HEIGHTS[s.floor - 1]
            assert abs(offset) <= CONFIG.levelled_mm
            assert s.levelled and s.door_zone
            stops += 1
    assert stops > 100


def test_bad_profiles_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        MotionProfile(jerk=0.0)
