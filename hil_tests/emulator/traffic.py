"""Passenger traffic profiles: how often calls come and where people travel.

Each profile is a seeded draw (the car's `random.Random`): the time until the next call
(exponential, mean `mean_idle_s` x the profile's factor) and an origin/destination pair.

- mixed (default): any landing to any other, uniformly; mean gap 8 s.
- up-peak (morning): 80 % of trips board at the lobby (landing 1) and go up; gap x 0.5.
- lunch: half the trips go to the lobby, a third leave from it; gap x 0.75.
- night: uniform like mixed, but calls are sparse; gap x 6.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass


class Traffic(enum.Enum):
    """A traffic profile; the value is its `--traffic` name."""

    MIXED = "mixed"
    UP_PEAK = "up-peak"
    LUNCH = "lunch"
    NIGHT = "night"


@dataclass(frozen=True)
class Profile:
    """Probabilities that a trip starts at / goes to the lobby, and the call-gap factor."""

    from_lobby: float
    to_lobby: float
    gap_factor: float


PROFILES = {
    Traffic.MIXED: Profile(0.0, 0.0, 1.0),
    Traffic.UP_PEAK: Profile(0.8, 0.0, 0.5),
    Traffic.LUNCH: Profile(0.33, 0.5, 0.75),
    Traffic.NIGHT: Profile(0.0, 0.0, 6.0),
}


def parse_traffic(name: str) -> Traffic:
    """The profile called `name`, or ValueError listing the names."""
    for traffic in Traffic:
        if traffic.value == name:
            return traffic
    raise ValueError(f"unknown traffic {name!r}; known: {', '.join(t.value for t in Traffic)}")


def draw_gap(traffic: Traffic, rng: random.Random, mean_idle_s: float) -> float:
    """Seconds until the next call while the car is idle."""
    return rng.expovariate(1.0 / (mean_idle_s * PROFILES[traffic].gap_factor))


def draw_trip(traffic: Traffic, rng: random.Random, landings: int) -> tuple[int, int]:
    """An (origin, destination) pair of distinct 0-based landing indexes."""
    profile = PROFILES[traffic]
    if profile.from_lobby and rng.random() < profile.from_lobby:
        return 0, rng.randrange(1, landings)
    if profile.to_lobby and rng.random() < profile.to_lobby:
        return rng.randrange(1, landings), 0
    origin = rng.randrange(landings)
    destination = rng.randrange(landings - 1)
    if destination >= origin:
        destination += 1
    return origin, destination
