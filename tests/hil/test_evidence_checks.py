"""The rig's evidence checks (hil_tests/evidence_checks.py) hold on the windows they name
and fail, saying why, on windows that do not show it."""

from __future__ import annotations

import dataclasses

from hil_tests.evidence_checks import lock_made_doors_open, trapped_between_floors
from protos.evidence import EvidenceSample
from protos.liftwatch.v1 import records_pb2

T0_US = 1_796_000_000_000_000
CLOSED, OPEN = records_pb2.DOOR_STATE_CLOSED, records_pb2.DOOR_STATE_OPEN


def sample(i: int, **fields: object) -> EvidenceSample:
    base = EvidenceSample(
        T0_US + i * 100_000,
        True,
        4000,
        0,
        30,
        2,
        0,
        CLOSED,
        records_pb2.DIRECTION_NONE,
        records_pb2.SERVICE_MODE_NORMAL,
        False,
        True,
        True,
        True,
        True,
        True,
        False,
        False,
        True,
        False,
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def window(onset_i: int, raised_i: int) -> records_pb2.Evidence:
    evidence = records_pb2.Evidence()
    evidence.onset.FromMicroseconds(T0_US + onset_i * 100_000)
    evidence.raised.FromMicroseconds(T0_US + raised_i * 100_000)
    return evidence


def test_a_car_that_ran_and_stopped_between_floors_occupied_is_trapped() -> None:
    samples = [sample(i, moving=True, door_zone=i % 5 == 0) for i in range(10)]
    samples += [sample(i, moving=False, door_zone=False) for i in range(10, 60)]
    assert trapped_between_floors(window(10, 50), samples) is None


def test_a_car_standing_at_a_landing_is_not_trapped_between_floors() -> None:
    samples = [sample(i, moving=True) for i in range(10)]
    samples += [sample(i, moving=False, door_zone=True) for i in range(10, 60)]
    problem = trapped_between_floors(window(10, 50), samples)
    assert problem is not None and "door_zone=True" in problem


def test_a_car_that_never_moved_shows_no_stop() -> None:
    samples = [sample(i, door_zone=False) for i in range(60)]
    assert trapped_between_floors(window(10, 50), samples) == (
        "the car never moves before the onset"
    )


def test_the_lock_made_with_the_doors_open_is_a_bypass() -> None:
    samples = [sample(i) for i in range(10)] + [sample(10, door=OPEN)]
    assert lock_made_doors_open(window(10, 30), samples) is None


def test_the_lock_made_only_with_the_doors_closed_is_no_bypass() -> None:
    samples = [sample(i) for i in range(10)] + [sample(10, door=OPEN, door_lock_closed=False)]
    problem = lock_made_doors_open(window(10, 30), samples)
    assert problem == "the lock circuit is made only with the doors DOOR_STATE_CLOSED"
