from __future__ import annotations

import datetime as dt

import pytest

from fleet.config import CoverageConfig
from fleet.coverage import Coverage, UnitStatus, coverage, unit_status
from fleet.store.base import ControllerIdentity, RegisterEntry, UnitRow

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
THRESHOLDS = CoverageConfig(stale_after_s=30, offline_after_s=300)


def _ago(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("age_s", "link_up", "expected"),
    [
        (0, None, UnitStatus.ONLINE),
        (29.999, True, UnitStatus.ONLINE),
        (29.999, False, UnitStatus.BLIND),
        (30, True, UnitStatus.STALE),
        (30, False, UnitStatus.STALE),  # not recent: cannot tell blind from gone
        (299.999, None, UnitStatus.STALE),
        (300, True, UnitStatus.OFFLINE),
        (86_400, False, UnitStatus.OFFLINE),
    ],
)
def test_status_thresholds(age_s: float, link_up: bool | None, expected: UnitStatus) -> None:
    assert unit_status(_ago(age_s), link_up, NOW, THRESHOLDS) is expected


def test_never_seen() -> None:
    assert unit_status(None, None, NOW, THRESHOLDS) is UnitStatus.NEVER_SEEN


def _unit(unit_id: str, registered: bool, age_s: float | None, link_up: bool | None) -> UnitRow:
    return UnitRow(
        unit_id=unit_id,
        registered=registered,
        register=RegisterEntry(unit_id),
        agent_id="a1" if age_s is not None else "",
        agent_version="",
        controller=ControllerIdentity(),
        last_seen=_ago(age_s) if age_s is not None else None,
        link_up=link_up,
    )


def test_coverage_counts() -> None:
    units = [
        _unit("R1", True, 1, True),
        _unit("R2", True, 5, False),
        _unit("R3", True, 60, None),
        _unit("R4", True, 600, True),
        _unit("R5", True, None, None),
        _unit("R6", True, None, None),
        _unit("X1", False, 1, None),
    ]
    assert coverage(units, NOW, THRESHOLDS) == Coverage(
        registered=6,
        monitored=5,
        online=2,
        stale=1,
        offline=1,
        blind=1,
        never_seen=2,
        unregistered_reporting=1,
    )
