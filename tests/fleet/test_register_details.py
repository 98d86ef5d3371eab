"""The register's optional columns (issue 17, item 6) and the publication steps' store, on
both backends."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.store.base import RegisterEntry
from fleet.store.open import open_store
from fleet.store.publication import PublicationError
from fleet.store.sql import SqlStore
from fleet.units.registry import COLUMNS, parse_register

T0 = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)
BASE = "楼A,addr,大坪街道,物业,维保单位02,2008-07-05,2.5,1000,40,RC-3000,1"


@pytest.fixture
def store(store_target: str) -> Iterator[SqlStore]:
    """A fresh store of each backend."""
    opened = open_store(store_target)
    yield opened
    opened.close()


def test_optional_columns_are_read_and_bad_values_named_by_line() -> None:
    extra = (
        "use_unit_contact,maintenance_fund,last_inspection_date,last_inspection_result,"
        "safety_assessments"
    )
    register = parse_register(
        [
            ",".join(COLUMNS) + "," + extra,
            f"U1,{BASE},张三 13800000000,有,2026-03-01,合格,2021-05-01;2016-04-02",
            f"U2,{BASE},,no,,,",
            f"U3,{BASE},x,maybe,,,",
            f"U4,{BASE},x,yes,2026-02-30,pass,",
            f"U5,{BASE},x,yes,2026-02-01,so-so,",
            f"U6,{BASE},x,yes,,,2021-5-1",
        ],
        "test.csv",
    )
    by_id = {d.unit_id: d for d in register.details}
    assert sorted(by_id) == ["U1", "U2"]
    assert by_id["U1"].maintenance_fund == "yes"
    assert by_id["U1"].last_inspection_result == "pass"
    assert by_id["U1"].safety_assessments == (dt.date(2016, 4, 2), dt.date(2021, 5, 1))
    assert by_id["U2"].maintenance_fund == "no"
    assert by_id["U2"].safety_assessments == ()  # the column is there: none on record
    assert by_id["U2"].last_inspection_date is None
    assert [(p.line, p.message.split(":")[0]) for p in register.problems] == [
        (4, "maintenance_fund"),
        (5, "last_inspection_date"),
        (6, "last_inspection_result"),
        (7, "safety_assessments"),
    ]


def test_a_missing_column_is_unknown_not_no() -> None:
    register = parse_register([",".join(COLUMNS) + ",maintenance_fund", f"U1,{BASE},"], "t")
    (detail,) = register.details
    assert register.optional == frozenset({"maintenance_fund"})
    assert detail.maintenance_fund is None
    assert detail.safety_assessments is None  # the file had no such column


def test_details_are_kept_and_an_absent_column_leaves_what_an_earlier_import_said(
    store: SqlStore,
) -> None:
    header = ",".join(COLUMNS)
    first = parse_register(
        [header + ",maintenance_fund,safety_assessments", f"U1,{BASE},无,2020-01-02"], "a"
    )
    store.upsert_register(first.entries, T0)
    store.upsert_register_details(first.details, first.optional)
    later = parse_register([header + ",use_unit_contact", f"U1,{BASE},李四"], "b")
    store.upsert_register_details(later.details, later.optional)
    kept = store.register_details()["U1"]
    assert kept.maintenance_fund == "no"
    assert kept.safety_assessments == (dt.date(2020, 1, 2),)
    assert kept.use_unit_contact == "李四"
    assert kept.last_inspection_result is None


def test_a_publication_goes_draft_approved_published_and_each_step_is_kept(
    store: SqlStore,
) -> None:
    store.upsert_register([RegisterEntry("U1")], T0)
    assert store.current_publication() is None
    draft = store.draft_publication({"three_no": []}, T0, "reg1", T0)
    with pytest.raises(PublicationError, match="only an approved one"):
        store.publish_publication(draft, "reg1", T0)
    with pytest.raises(PublicationError, match="another regulator"):
        store.approve_publication(draft, "reg1", T0, by_another=True)
    store.approve_publication(draft, "reg2", T0 + dt.timedelta(minutes=1), by_another=True)
    assert store.current_publication() is None  # approved is not yet public
    approved = store.publication(draft)
    assert approved is not None and approved.state == "approved" and approved.approved_by == "reg2"
    assert store.publication(draft + 1000) is None
    published = store.publish_publication(draft, "reg2", T0 + dt.timedelta(minutes=2))
    assert published.state == "published"
    current = store.current_publication()
    assert current is not None and current.id == draft and current.lists == {"three_no": []}
    # A newer draft does not replace what is public.
    store.draft_publication({"three_no": [{"unit_id": "U1"}]}, T0, "reg1", T0)
    current = store.current_publication()
    assert current is not None and current.id == draft
    assert [(s.step, s.username) for s in store.publication_steps(draft)] == [
        ("drafted", "reg1"),
        ("approved", "reg2"),
        ("published", "reg2"),
    ]
    with pytest.raises(PublicationError, match="published"):
        store.approve_publication(draft, "reg3", T0, by_another=True)


def test_the_import_command_keeps_the_details(tmp_path: Path) -> None:
    from fleet.cli.main import main

    csv_path = tmp_path / "units.csv"
    csv_path.write_text(
        ",".join(COLUMNS) + ",maintenance_fund\n" + f"U1,{BASE},有\n", encoding="utf-8"
    )
    db = tmp_path / "fleet.db"
    assert main(["units", "import", str(csv_path), "--db", str(db)]) == 0
    opened = open_store(str(db))
    try:
        assert opened.register_details()["U1"].maintenance_fund == "yes"
    finally:
        opened.close()
