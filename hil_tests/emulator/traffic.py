"""Passenger traffic profiles: when people arrive at the landings and where they travel.

Passengers arrive one by one at the group's landings as a Poisson process whose rate is
the profile's `per_car_per_hour` x the number of cars (a group is sized for its traffic),
drawn from the group's seeded `random.Random`. Each passenger has an origin and a
destination landing; the origin and destination follow the profile:

| profile | arrivals / car / h | from the lobby | to the lobby | otherwise |
|---|---|---|---|---|
| mixed (default) | 90 | - | - | any landing to any other, uniformly |
| up-peak (morning) | 150 | 80 % | - | uniform |
| lunch | 120 | 33 % | 50 % of the rest | uniform |
| night | 8 | - | - | uniform, sparse |

The lobby is landing 1 (index 0). A 1.6 m/s car of 13 persons on 12 landings handles
about 150-200 passengers an hour in up-peak, so up-peak keeps the cars busy without
queues growing without bound; queues are capped anyway (`MAX_WAITING`), as people take
the stairs when a lobby is full.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

__all__ = [
    "MAX_WAITING",
    "PASSENGER_KG",
    "PROFILES",
    "Passenger",
    "Profile",
    "Traffic",
    "draw_gap",
    "draw_trip",
    "parse_traffic",
]

PASSENGER_KG = 75  # EN 81-20 rates a car's capacity at 75 kg per person
MAX_WAITING = 40  # per landing and direction; later arrivals take the stairs


class Traffic(enum.Enum):
    """A traffic profile; the value is its `--traffic` name."""

    MIXED = "mixed"
    UP_PEAK = "up-peak"
    LUNCH = "lunch"
    NIGHT = "night"


@dataclass(frozen=True)
class Profile:
    """Arrival rate per car and hour, and the chances a trip starts at / goes to the lobby."""

    per_car_per_hour: float
    from_lobby: float
    to_lobby: float


PROFILES = {
    Traffic.MIXED: Profile(90.0, 0.0, 0.0),
    Traffic.UP_PEAK: Profile(150.0, 0.8, 0.0),
    Traffic.LUNCH: Profile(120.0, 0.33, 0.5),
    Traffic.NIGHT: Profile(8.0, 0.0, 0.0),
}


@dataclass(frozen=True, slots=True)
class Passenger:
    """One person: wants to go from `origin` to `destination` (0-based landing indexes),
    arrived at the origin at simulated time `arrived_at` (s); `number` is unique in a group."""

    number: int
    origin: int
    destination: int
    arrived_at: float

    @property
    def direction(self) -> int:
        """+1 when travelling up, -1 down."""
        return 1 if self.destination > self.origin else -1


def parse_traffic(name: str) -> Traffic:
    """The profile called `name`, or ValueError listing the names."""
    for traffic in Traffic:
        if traffic.value == name:
            return traffic
    raise ValueError(f"unknown traffic {name!r}; known: {', '.join(t.value for t in Traffic)}")


def draw_gap(traffic: Traffic, rng: random.Random, cars: int) -> float:
    """Seconds until the next passenger arrives somewhere in a group of `cars` cars."""
    rate_per_s = PROFILES[traffic].per_car_per_hour * cars / 3600.0
    return rng.expovariate(rate_per_s)


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
