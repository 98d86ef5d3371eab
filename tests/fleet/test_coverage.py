from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from prometheus_client import CollectorRegistry

from fleet.alarms.service import LifecycleMetrics, refresh_gauges
from fleet.store.base import ControllerIdentity, HelloOp, RegisterEntry, UnitClaim, UnitRow
from fleet.store.open import open_store
from fleet.store.worker import StoreWorker
from fleet.units.coverage import Coverage, CoverageConfig, UnitStatus, coverage, unit_status

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


def test_the_unit_gauges_are_counted_in_the_database(store_target: str) -> None:
    # The gauges no longer list every unit (that held the store thread, and so ingest, for
    # up to a second at 40,000 units): the same figures, counted by the store.
    async def scenario() -> CollectorRegistry:
        store = await StoreWorker.open(lambda: open_store(store_target))
        registry = CollectorRegistry()
        try:
            await store.upsert_register([RegisterEntry("R1"), RegisterEntry("R2")])
            claims = (UnitClaim("R1", ControllerIdentity()), UnitClaim("X1", ControllerIdentity()))
            await store.write([HelloOp("a1", "0.1.0", claims)], _ago(40))
            await refresh_gauges(store, LifecycleMetrics(registry), lambda: NOW, THRESHOLDS)
        finally:
            await store.close()
        return registry

    registry = asyncio.run(scenario())
    counts = {
        s.value: registry.get_sample_value("liftwatch_fleet_units", {"status": s.value})
        for s in UnitStatus
    }
    assert counts == {"online": 0, "stale": 2, "offline": 0, "blind": 0, "never_seen": 1}
