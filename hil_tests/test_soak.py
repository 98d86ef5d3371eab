"""The soak: normal traffic through the real detectors raises nothing; faults are found."""

from __future__ import annotations

from hil_tests.soak import PLANS, CarJob, soak, soak_car


def test_hours_of_normal_traffic_raise_no_event() -> None:
    report = soak(cars=2, days=0.25, faults=0, seed=3, sample_s=0.5, workers=2)
    assert report["events_raised"] == 0, report
    assert report["false_alarms"] == 0


def test_injected_faults_are_detected_with_their_type_on_their_car() -> None:
    # One car, a fault of every planned kind (the schedule draws them at random, so
    # enough of them that most kinds come up), judged by the same code as the CLI.
    result = soak_car(CarJob(car=1, cars=1, days=0.5, faults=len(PLANS), seed=5, sample_s=0.5))
    assert result.injected == len(PLANS)
    assert not result.false_alarms, result.false_alarms
    assert result.detected == result.injected, (result.detected, result.missed)
    assert all(delay <= 0.5 + 1e-6 for kind, delay in result.delays if kind != "DOOR_REOPEN_LOOP")
