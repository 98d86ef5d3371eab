"""The collective group controller: passengers, hall calls, load and occupancy."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from hil_tests.emulator.car import Car, CarConfig, Phase
from hil_tests.emulator.dispatch import GroupController
from hil_tests.emulator.faults import Fault, FaultOptions
from hil_tests.emulator.group import CarGroup, GroupConfig
from hil_tests.emulator.traffic import PASSENGER_KG, Traffic

SAMPLE_S = 0.5


def group(traffic: Traffic = Traffic.MIXED, cars: int = 4, seed: int = 1) -> CarGroup:
    return CarGroup(GroupConfig(cars=cars, seed=seed, traffic=traffic), now=0.0)


def test_every_hall_call_is_answered_by_exactly_one_car() -> None:
    g = group(Traffic.LUNCH)
    for _ in range(int(3600 / SAMPLE_S)):
        g.step(SAMPLE_S)
        for call in g.controller.calls:
            holders = [
                n for n, car in g.cars.items() if (call.landing, call.direction) in car.hall_calls
            ]
            assert holders == ([call.car] if call.car else [])
    answers = list(g.controller.answers)
    assert len(answers) > 200
    assert len({a.call for a in answers}) == len(answers)  # no call answered twice
    stats = g.controller.stats
    assert stats.calls == stats.answered + len(g.controller.calls)
    assert {a.car for a in answers} == set(g.cars)  # the whole group works
    assert all(a.answered_at >= a.registered_at for a in answers)


def test_passengers_reach_their_destination_riding_one_way() -> None:
    g = group(Traffic.MIXED)
    for _ in range(int(3600 / SAMPLE_S)):
        g.step(SAMPLE_S)
        for car in g.cars.values():
            s = car.snapshot()
            if s.moving:
                # Collective control: the car never turns while someone aboard goes on.
                for p in car.passengers:
                    assert (1 if s.up else -1) == p.direction
    stats = g.controller.stats
    journeys = list(g.controller.journeys)
    assert stats.delivered > 300 and stats.left_early == 0 and stats.walked_away == 0
    assert all(j.delivered and j.landing == j.passenger.destination for j in journeys)
    aboard = sum(len(car.passengers) for car in g.cars.values())
    waiting = sum(
        g.controller.waiting(landing, d)
        for landing in range(g.controller.landings)
        for d in (1, -1)
    )
    assert stats.arrived == stats.delivered + aboard + waiting


def test_load_and_occupancy_follow_the_passengers() -> None:
    g = group(Traffic.UP_PEAK, cars=2)
    seen_loads = set()
    for _ in range(int(1800 / SAMPLE_S)):
        g.step(SAMPLE_S)
        for number, car in g.cars.items():
            people = len(car.passengers)
            s = car.snapshot()
            assert s.load_pct == round(people * PASSENGER_KG * 100 / car.config.rated_load_kg)
            assert s.occupied == (people > 0)
            assert people <= car.config.capacity and not s.overload
            registers = g.registers(number)
            assert registers[8] == s.load_pct
            assert bool(registers[2] & (1 << 14)) == s.occupied
            seen_loads.add(s.load_pct)
    assert max(seen_loads) >= 50  # up-peak fills the cars at the lobby


def lobby_share(traffic: Traffic) -> float:
    g = group(traffic, seed=2)
    for _ in range(int(3600 / SAMPLE_S)):
        g.step(SAMPLE_S)
    journeys = list(g.controller.journeys)
    assert len(journeys) > 100
    return sum(j.origin == 0 for j in journeys) / len(journeys)


def test_up_peak_sends_most_trips_from_the_lobby() -> None:
    assert lobby_share(Traffic.UP_PEAK) > 0.7
    assert lobby_share(Traffic.MIXED) < 0.2


def test_night_cars_stay_quiet_most_of_the_time() -> None:
    g = group(Traffic.NIGHT)
    quiet = 0
    samples = int(3600 / SAMPLE_S)
    for _ in range(samples):
        g.step(SAMPLE_S)
        quiet += sum(car.quiet for car in g.cars.values())
    assert quiet > 0.8 * samples * len(g.cars)
    assert 10 < g.controller.stats.delivered < 100


def test_same_seed_same_registers() -> None:
    a, b = group(seed=9), group(seed=9)
    for _ in range(600):
        a.step(SAMPLE_S)
        b.step(SAMPLE_S)
        assert [a.registers(n) for n in a.cars] == [b.registers(n) for n in b.cars]


def test_a_car_out_of_service_gives_its_calls_to_the_others() -> None:
    g = group(cars=2, seed=4)
    g.inject(1, Fault.MODE, FaultOptions())
    for _ in range(int(600 / SAMPLE_S)):
        g.step(SAMPLE_S)
    car1 = g.car(1)
    assert not car1.hall_calls and not car1.passengers and car1.phase is Phase.IDLE
    late = [a for a in g.controller.answers if a.answered_at > 120.0]
    assert late and all(a.car == 2 for a in late)


def test_an_empty_idle_car_takes_a_rider_so_an_entrapment_shows() -> None:
    g = group(Traffic.NIGHT, cars=2, seed=3)
    g.step(1.0)
    car = g.car(1)
    assert car.quiet
    g.inject(1, Fault.ENTRAPMENT)
    for _ in range(int(120 / SAMPLE_S)):
        g.step(SAMPLE_S)
        if car.phase is Phase.TRAPPED:
            break
    assert car.phase is Phase.TRAPPED and car.passengers
    s = car.snapshot()
    assert s.occupied and not s.door_zone and s.door_fully_closed


def test_a_car_stepped_alone_serves_the_group_traffic() -> None:
    # The legacy way (one car's step): cars nobody steps drop out of group service.
    g = group(cars=3, seed=5)
    car = g.car(2)
    for _ in range(int(1200 / SAMPLE_S)):
        car.step(SAMPLE_S)
    answers = Counter(a.car for a in g.controller.answers)
    assert answers[2] > 30 and set(answers) == {2}


def test_a_car_on_its_own_has_a_private_group() -> None:
    car = Car(CarConfig(), random.Random(1))
    assert isinstance(car.group, GroupController)
    for _ in range(int(1800 / SAMPLE_S)):
        car.step(SAMPLE_S)
    assert car.group.stats.delivered > 20


def test_group_step_refuses_negative_time() -> None:
    with pytest.raises(ValueError, match="backwards"):
        group().step(-1.0)
