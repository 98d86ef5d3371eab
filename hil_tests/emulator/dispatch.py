"""The group controller: passengers arrive, press hall calls, and one car answers each.

A collective (full collective selective) group: every landing has an up and a down hall
button. A passenger arriving at a landing (see `traffic.py`) walks straight into a car
standing there with its doors open in their direction, holds closing doors open (at most
`MAX_REOPENS_PER_STOP` times a stop, then they wait), or presses the hall button. A new
hall call is assigned at once to the car with the lowest estimated time of arrival
(`Car.eta`); a call nobody can take (every car out of group service or full) waits
unassigned and is offered again every `REVIEW_S`, as are calls of a car that left group
service meanwhile. A car answers a call when it opens its doors at that landing in that
direction: the waiting passengers board (as many as fit) and the call is cleared; people
left behind press the button again, which makes a new call.

Cars serve their car calls (the destinations of the passengers aboard) and the hall calls
assigned to them in collective order (`Car` keeps its travel direction while it has calls
ahead). All times are simulated seconds passed in; nothing here reads a clock. Recent
answers and journeys are kept in bounded logs (`answers`, `journeys`) for tests and for
the operator's curiosity; `stats` counts everything since the start.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from hil_tests.emulator.traffic import MAX_WAITING, Passenger, Traffic, draw_gap, draw_trip

if TYPE_CHECKING:
    from hil_tests.emulator.car import Car

__all__ = ["Answer", "GroupController", "GroupStats", "HallCall", "Journey"]

REVIEW_S = 1.0  # how often unassigned calls and calls of cars out of group service are re-offered
STALE_S = 2.0  # a car whose clock lags the group's by more than this is not in group service
MAX_REOPENS_PER_STOP = 2  # controllers ignore the hall button after a few reopenings
LOG_LENGTH = 10_000  # entries kept in `answers` and `journeys`


@dataclass(frozen=True, slots=True)
class HallCall:
    """A lit hall button: `landing` (0-based), `direction` (+1 up, -1 down), registered at
    `registered_at` (s), assigned to car `car` (0 while nobody can take it)."""

    number: int
    landing: int
    direction: int
    registered_at: float
    car: int


@dataclass(frozen=True, slots=True)
class Answer:
    """Call `call` was answered by car `car` at `answered_at`, `boarded` people got in."""

    call: int
    car: int
    landing: int
    direction: int
    registered_at: float
    answered_at: float
    boarded: int


@dataclass(frozen=True, slots=True)
class Journey:
    """Passenger `passenger` rode car `car` from `origin` to `landing` (0-based), boarding
    at `boarded_at` and leaving at `left_at`; `delivered` is False when they left early
    (evacuated after a fault, or put out of a car taken out of service)."""

    passenger: Passenger
    car: int
    origin: int
    landing: int
    boarded_at: float
    left_at: float
    delivered: bool


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Counts since the group started."""

    arrived: int = 0
    walked_away: int = 0  # queue full: took the stairs
    calls: int = 0
    answered: int = 0
    boarded: int = 0
    delivered: int = 0
    left_early: int = 0


class GroupController:
    """Hall calls, waiting passengers and call assignment for the cars of one group."""

    def __init__(
        self, traffic: Traffic, rng: random.Random, landings: int, *, passengers: bool = True
    ) -> None:
        """An empty group of `landings` landings; passengers arrive per `traffic` drawn from
        `rng`, unless `passengers` is False (then only fault riders travel)."""
        self.traffic = traffic
        self.landings = landings
        self.time = 0.0
        self._rng = rng
        self._passengers = passengers
        self._cars: list[Car] = []
        self._waiting: dict[tuple[int, int], deque[Passenger]] = {
            (landing, d): deque() for landing in range(landings) for d in (1, -1)
        }
        self._calls: dict[tuple[int, int], HallCall] = {}
        self._next_arrival = float("inf")
        self._next_review = 0.0
        self._numbers = 0
        self.stats = GroupStats()
        self.answers: deque[Answer] = deque(maxlen=LOG_LENGTH)
        self.journeys: deque[Journey] = deque(maxlen=LOG_LENGTH)

    def attach(self, car: Car) -> None:
        """Add `car` to the group; the first car starts the arrivals."""
        self._cars.append(car)
        if self._passengers:
            self._next_arrival = self.time + draw_gap(self.traffic, self._rng, len(self._cars))

    @property
    def calls(self) -> tuple[HallCall, ...]:
        """Hall calls now lit."""
        return tuple(self._calls.values())

    def waiting(self, landing: int, direction: int) -> int:
        """How many people wait at `landing` to travel in `direction`."""
        return len(self._waiting[(landing, direction)])

    def quiet_until(self) -> float:
        """Simulated time before which `advance_to` has nothing to do."""
        return self.time if self._calls else self._next_arrival

    def advance_to(self, t: float) -> None:
        """Let passengers arrive up to simulated time `t` and re-offer stranded calls."""
        if t <= self.time:
            return
        while self._next_arrival <= t:
            self.time = self._next_arrival
            self._arrive()
            self._next_arrival = self.time + draw_gap(self.traffic, self._rng, len(self._cars))
        self.time = t
        if self._calls and t >= self._next_review:
            self._next_review = t + REVIEW_S
            self._review()

    def new_passenger(self, origin: int, destination: int) -> Passenger:
        """A passenger created now outside the traffic profile (a fault rider)."""
        self._numbers += 1
        return Passenger(self._numbers, origin, destination, self.time)

    def board(self, car: Car, landing: int, direction: int, room: int) -> list[Passenger]:
        """Car `car` opened its doors at `landing` to travel `direction`: answer the call
        there and hand over up to `room` waiting passengers (longest-waiting first)."""
        queue = self._waiting[(landing, direction)]
        riders = [queue.popleft() for _ in range(min(room, len(queue)))]
        call = self._calls.pop((landing, direction), None)
        if call is not None:
            if call.car and call.car != car.number:
                self._car(call.car).unassign(landing, direction)
            car.unassign(landing, direction)
            self.answers.append(
                Answer(
                    call.number,
                    car.number,
                    landing,
                    direction,
                    call.registered_at,
                    self.time,
                    len(riders),
                )
            )
            self.stats = replace(self.stats, answered=self.stats.answered + 1)
        if riders:
            self.stats = replace(self.stats, boarded=self.stats.boarded + len(riders))
        if queue:
            self._register(landing, direction, exclude=car.number)  # left behind: press again
        return riders

    def walk_in(self, car: Car) -> None:
        """Count a passenger who stepped straight into `car`'s open doors."""
        self.stats = replace(self.stats, boarded=self.stats.boarded + 1)

    def left(self, car: Car, passenger: Passenger, boarded_at: float, landing: int) -> None:
        """`passenger` left `car` at `landing`; someone not yet at their destination waits
        there again (a car taken out of service) unless `car` evacuated them."""
        delivered = landing == passenger.destination
        self.journeys.append(
            Journey(
                passenger, car.number, passenger.origin, landing, boarded_at, self.time, delivered
            )
        )
        if delivered:
            self.stats = replace(self.stats, delivered=self.stats.delivered + 1)
        else:
            self.stats = replace(self.stats, left_early=self.stats.left_early + 1)

    def requeue(self, passenger: Passenger, landing: int) -> None:
        """`passenger`, put out at `landing` short of their destination, calls again there."""
        again = Passenger(passenger.number, landing, passenger.destination, self.time)
        self._queue(again)

    def release(self, car: Car) -> None:
        """`car` left group service: offer its calls to the others at once."""
        for key, call in list(self._calls.items()):
            if call.car == car.number:
                car.unassign(*key)
                self._calls[key] = replace(call, car=0)
        self._next_review = self.time

    # --- internals -------------------------------------------------------------------

    def _car(self, number: int) -> Car:
        for car in self._cars:
            if car.number == number:
                return car
        raise KeyError(number)

    def _arrive(self) -> None:
        origin, destination = draw_trip(self.traffic, self._rng, self.landings)
        self._numbers += 1
        self.stats = replace(self.stats, arrived=self.stats.arrived + 1)
        self._queue(Passenger(self._numbers, origin, destination, self.time))

    def _queue(self, passenger: Passenger) -> None:
        landing, direction = passenger.origin, passenger.direction
        queue = self._waiting[(landing, direction)]
        if not queue:
            for car in self._cars:
                if car.take_walk_in(passenger, self.time):
                    self.walk_in(car)
                    return
        if len(queue) >= MAX_WAITING:
            self.stats = replace(self.stats, walked_away=self.stats.walked_away + 1)
            return
        queue.append(passenger)
        if (landing, direction) not in self._calls:
            self._register(landing, direction)

    def _register(self, landing: int, direction: int, exclude: int = 0) -> None:
        self._numbers += 1
        car = self._best_car(landing, direction, exclude)
        call = HallCall(self._numbers, landing, direction, self.time, car.number if car else 0)
        self._calls[(landing, direction)] = call
        self.stats = replace(self.stats, calls=self.stats.calls + 1)
        if car is not None:
            car.assign(landing, direction)

    def _best_car(self, landing: int, direction: int, exclude: int = 0) -> Car | None:
        best: Car | None = None
        best_eta = float("inf")
        for car in self._cars:
            if car.number == exclude or self.time - car.time > STALE_S:
                continue
            eta = car.eta(landing, direction)
            if eta is not None and eta < best_eta:
                best, best_eta = car, eta
        return best

    def _review(self) -> None:
        """Re-offer calls nobody holds, and calls of cars that left group service."""
        for key, call in list(self._calls.items()):
            holder = self._car(call.car) if call.car else None
            if holder is not None and holder.in_group_service(self.time):
                continue
            if holder is not None:
                holder.unassign(*key)
            car = self._best_car(*key)
            self._calls[key] = replace(call, car=car.number if car else 0)
            if car is not None:
                car.assign(*key)
