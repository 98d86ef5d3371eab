"""Profiles as data: the shipped ones load, and every problem names the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.bus.plan import RTU_COST, Read, Table
from agent.decode.decoder import car_state, decode
from agent.decode.parser import ProfileError, load_profile, shipped_profiles
from agent.detect.engine import UnitDetectors
from agent.detect.events import EventType
from agent.state import DoorState


def test_shipped_profiles_load_and_name_only_car_state_fields() -> None:
    assert {"reference", "io-module", "template"} <= set(shipped_profiles())
    for name in shipped_profiles():
        profile = load_profile(name)
        UnitDetectors.detectable(profile.signal_names)  # raises on a non-CarState field


def test_io_module_reads_discrete_inputs_and_cannot_place_the_car() -> None:
    profile = load_profile("io-module")
    assert profile.plan(RTU_COST).fast == (Read(Table.DISCRETE_INPUT, 0, 6),)
    inputs = dict.fromkeys(((Table.DISCRETE_INPUT, a) for a in range(6)), 0)
    inputs[(Table.DISCRETE_INPUT, 0)] = 1  # lock made
    inputs[(Table.DISCRETE_INPUT, 3)] = 1  # closed limit
    s = car_state(1.0, [decode(profile, inputs).fields])
    assert (s.door_lock_closed, s.door, s.floor, s.moving) == (True, DoorState.CLOSED, None, None)
    _, cannot = UnitDetectors.detectable(profile.signal_names)
    assert EventType.DOOR_OPEN_FAILURE in cannot  # needs the door zone


def test_template_documents_every_key_it_uses() -> None:
    profile = load_profile("template")
    assert profile.fault_event(17) == "RESTART_PREVENTED"
    assert profile.fault_event(99) is None


BAD = """
[profile]
name = "acme"
colour = "red"

[signals]
floor = { address = 1, type = "int64" }
moving = { address = 2 }
speed_mm_s = { address = 3, range = [10, 0] }
door_lock_closed = { table = "discrete", address = 4, bit = 3 }
elevation = { address = 5 }

[signals.mode]
address = 4
values = { 0 = "normal", 1 = "party" }

[faults]
17 = "EXPLOSION"
"""


def test_every_problem_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "acme.toml"
    path.write_text(BAD, encoding="utf-8")
    with pytest.raises(ProfileError) as caught:
        load_profile("acme.toml", tmp_path)
    keys = {key for key, _ in caught.value.problems}
    assert {
        "profile.colour",
        "signals.floor.type",
        "signals.moving.bit",
        "signals.speed_mm_s.range",
        "signals.door_lock_closed.bit",
        "signals.elevation",
        "signals.mode.values.1",
        "faults.17",
    } <= keys
    text = str(caught.value)
    assert str(path) in text
    assert "signals.elevation: unknown key" in text


def test_unknown_name_lists_the_shipped_profiles() -> None:
    with pytest.raises(ProfileError, match=r"known: .*reference"):
        load_profile("nope")


def test_syntax_and_missing_file_are_profile_errors(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text("[profile\n", encoding="utf-8")
    with pytest.raises(ProfileError, match="syntax"):
        load_profile("broken.toml", tmp_path)
    with pytest.raises(ProfileError, match="file"):
        load_profile("missing.toml", tmp_path)


def test_a_span_past_the_address_space_is_a_plan_problem(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(
        '[profile]\nname = "edge"\n[signals]\ntrips = { address = 65535, type = "uint32" }\n',
        encoding="utf-8",
    )
    with pytest.raises(ProfileError, match=r"\(plan\)"):
        load_profile(str(path))
