"""Scenario files: shipped ones load; a bad one names every problem with its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil_tests.scenario import SCENARIO_DIR, ScenarioError, load_scenario, resolve


def test_every_shipped_scenario_loads() -> None:
    paths = sorted(SCENARIO_DIR.glob("*.toml"))
    assert paths, "no scenarios shipped"
    for path in paths:
        scenario = load_scenario(path)
        assert scenario.expectations or scenario.injections or scenario.description
        for expectation in scenario.expectations:
            assert 0 <= expectation.after < len(scenario.injections)


def test_names_resolve_to_the_scenario_folder() -> None:
    assert resolve("entrapment-between-floors") == SCENARIO_DIR / "entrapment-between-floors.toml"


def test_every_problem_is_reported_with_its_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        """
transport = "carrier-pigeon"
durationn_s = 3

[cars]
count = 2

[[inject]]
at_s = 5
car = 3
fault = "entrapment"
clear_at_s = 2

[[expect]]
type = "ENTRAPMENT"
car = 1
phase = "MAYBE"
""",
        encoding="utf-8",
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    for expected in (
        "transport: must be one of rtu, tcp",
        "durationn_s: unknown key",
        "inject[0].car: must be 1..2",
        "inject[0].clear_at_s: 2.0 is not after at_s 5.0",
        "expect[0].phase: must be RAISED or CLEARED",
        "expect[0].within_s: is required",
        "expect[0].after: no [[inject]] number -1 for car 1",
    ):
        assert expected in message


def test_evidence_expectations_load_and_bad_ones_are_named(tmp_path: Path) -> None:
    shipped = load_scenario(resolve("entrapment-between-floors"))
    [wanted] = shipped.evidence
    assert shipped.expectations[wanted.expect].type == "ENTRAPMENT"
    assert wanted.shows == "trapped_between_floors"
    path = tmp_path / "bad-evidence.toml"
    path.write_text(
        """
[cars]
count = 2

[[inject]]
at_s = 1
car = 2
fault = "entrapment"

[[expect]]
type = "ENTRAPMENT"
car = 2
phase = "CLEARED"
within_s = 30

[[evidence]]
expect = 0
shows = "a_miracle"

[[evidence]]
expect = 5
shows = "trapped_between_floors"
""",
        encoding="utf-8",
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert "evidence[0].expect: [[expect]] 0 is not a RAISED event" in message
    assert "evidence[0].shows: unknown check 'a_miracle'" in message
    assert "evidence[1].expect: no [[expect]] number 5" in message
