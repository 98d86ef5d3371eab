"""The published lists' one definition (issue 15, item 3; the lists of issue 17, item 5):
on a real store of each backend with a lift in every list, `draw_lists` writes JSON that
the OpenAPI schema generated from `ListsView` accepts, row by row, and the public CSV
takes its lift columns from the same definition."""

from __future__ import annotations

import datetime as dt

from fleet.config import ReportsConfig
from fleet.read.shape import keys_of
from fleet.reports.plan_config import PlanConfig, PublicationConfig
from fleet.reports.publication import CSV_COLUMNS, LiftView, draw_lists, lists_csv
from fleet.store.base import ControllerIdentity, RegisterEntry, UnitClaim
from fleet.store.maintenance import NewRecord, VerdictChange
from fleet.store.open import open_store
from fleet.store.publication import RegisterDetails
from fleet.store.sql import SqlStore, to_us
from fleet.web.openapi import openapi_spec
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import record
from tests.fleet.test_api import validate

NOW = dt.datetime(2026, 6, 10, 12, 0, tzinfo=dt.UTC)


def _counters(seq: int, at: dt.datetime, trips: int) -> records_pb2.Record:
    message = record(seq, "U1", time=at)
    message.counters.trips = trips
    return message


def _seed(store: SqlStore) -> None:
    """U1: old, no assessment on record, 2 faults in 2,000 trips (ranked), a record 20
    days ago the controller contradicts (overdue, its contractor listed); U2: no use
    unit and no maintenance fund (three-no)."""
    store.upsert_register(
        [
            RegisterEntry(
                "U1", building="甲楼", use_unit="物业", contractor="C1",
                install_date=dt.date(2001, 5, 1),
            ),
            RegisterEntry("U2", building="乙楼", contractor="C2", install_date=dt.date(2020, 1, 1)),
        ],
        NOW,
    )  # fmt: skip
    store.upsert_register_details(
        [
            RegisterDetails("U1", maintenance_fund="yes", safety_assessments=()),
            RegisterDetails("U2", maintenance_fund="no", safety_assessments=()),
        ],
        frozenset({"maintenance_fund", "safety_assessments"}),
    )
    claims = [UnitClaim(u, ControllerIdentity(model="RC-3000")) for u in ("U1", "U2")]
    store.register_hello("a1", "0.1.0", claims, NOW)
    start = NOW - dt.timedelta(days=2)
    faults = (records_pb2.EVENT_TYPE_DOOR_OPEN_FAILURE, records_pb2.EVENT_TYPE_DOOR_CLOSE_FAILURE)
    store.commit_batch(
        "a1",
        [
            _counters(1, start, 10_000),
            _counters(2, start + dt.timedelta(hours=5), 12_000),
            *(
                record(3 + n, "U1", time=start + dt.timedelta(hours=1 + n), event=kind,
                       event_id=f"f{n}")
                for n, kind in enumerate(faults)
            ),
        ],
        NOW,
    )  # fmt: skip
    visit = NOW - dt.timedelta(days=20)
    (record_id,) = store.add_maintenance_records(
        [
            NewRecord(
                "U1", "C1", "half_monthly", to_us(visit), to_us(visit + dt.timedelta(hours=1)),
                "w", "csv", "c1", to_us(NOW),
            )
        ],
        NOW,
    )  # fmt: skip
    assert record_id is not None
    store.set_verdicts([VerdictChange(record_id, "contradicted", "", "{}", None)], NOW)


def test_every_list_is_its_definition(store_target: str) -> None:
    store = open_store(store_target)
    assert isinstance(store, SqlStore)
    try:
        _seed(store)
        lists = draw_lists(store, NOW, PublicationConfig(), ReportsConfig(), PlanConfig())
    finally:
        store.close()
    spec = openapi_spec()
    validate(lists, {"$ref": "#/components/schemas/PublishedLists"}, spec, "lists")
    shown = {name: [r["unit_id"] for r in lists[name]["rows"]] for name in
             ("high_fault", "three_no", "aged_without_assessment", "overdue")}  # fmt: skip
    assert shown == {
        "high_fault": ["U1"],
        "three_no": ["U2"],
        "aged_without_assessment": ["U1"],
        "overdue": ["U1"],
    }
    high = lists["high_fault"]["rows"][0]
    assert (high["rank"], high["faults"], high["trips"]) == (1, 2, 2000)
    assert lists["overdue"]["rows"][0]["days_overdue"] == 5
    assert [r["contractor"] for r in lists["contradicted_contractors"]["rows"]] == ["C1"]
    # The CSV names each listed lift by the definition's keys.
    assert CSV_COLUMNS[2:-1] == keys_of(LiftView)
    body = lists_csv(lists).lstrip("\ufeff").splitlines()
    assert body[0] == ",".join(CSV_COLUMNS) and body[1].startswith("high_fault,1,U1,甲楼,")
