"""`state_at` makes the very CarState the dataclass makes: equal, hashing alike, frozen,
every field not given at its default."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.state import CarState, Direction, DoorState, ServiceMode, state_at, state_values

OPTIONAL_BOOL = st.none() | st.booleans()
OPTIONAL_INT = st.none() | st.integers(-(2**31), 2**31)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "floor": OPTIONAL_INT,
        "position_mm": OPTIONAL_INT,
        "speed_mm_s": OPTIONAL_INT,
        "direction": st.sampled_from(Direction),
        "moving": OPTIONAL_BOOL,
        "door_zone": OPTIONAL_BOOL,
        "levelled": OPTIONAL_BOOL,
        "door": st.sampled_from(DoorState),
        "door_lock_closed": OPTIONAL_BOOL,
        "occupied": OPTIONAL_BOOL,
        "mode": st.sampled_from(ServiceMode),
        "fault_code": OPTIONAL_INT,
        "trips": OPTIONAL_INT,
        "up_final_limit": OPTIONAL_BOOL,
    },
)


@given(FIELDS, st.floats(0, 1e9))
def test_state_at_equals_the_dataclass(fields: dict[str, object], t: float) -> None:
    expected = CarState(t, **fields)  # type: ignore[arg-type]
    made = state_at(t, state_values(fields))
    assert made == expected
    assert hash(made) == hash(expected)
    assert dataclasses.astuple(made) == dataclasses.astuple(expected)


def test_state_at_is_frozen_and_unknown_fields_are_refused() -> None:
    made = state_at(1.0, state_values({"floor": 3}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.floor = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        state_values({"flor": 3})
