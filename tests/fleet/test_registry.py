from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path

import pytest

from fleet.serve.server import import_register
from fleet.store.base import UnitQuery
from fleet.store.sqlite import SqliteStore
from fleet.store.worker import StoreWorker
from fleet.units.registry import COLUMNS, RegistryError, read_register
from hil_tests.system import REGISTER_CSV

HEADER = ",".join(COLUMNS)
GOOD_1 = "31105001032024000001,楼A,addr,大坪街道,物业,维保单位02,2024-07-05,2.5,1000,40,RC-3000,1"
GOOD_2 = "31105001032024000002,楼A,addr,大坪街道,,维保单位02,2024-07-05,2.0,1050,40,RC-3000,2"
BAD_LOAD = "31105001032024000003,楼A,addr,大坪街道,物业,维保单位02,2024-07-05,2.5,heavy,40,VX-220,3"
NO_CODE = ",楼A,addr,大坪街道,物业,维保单位02,2024-07-05,2.5,630,40,VX-220,4"
SHORT = "31105001032024000005,楼A,addr"
BAD_DATE = "31105001032024000006,楼A,addr,大坪街道,物业,维保单位02,2024-13-05,2.5,630,40,VX-220,5"


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "units.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bad_rows_are_reported_by_line_and_the_rest_load(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER, GOOD_1, BAD_LOAD, NO_CODE, "", SHORT, GOOD_2, BAD_DATE, GOOD_1)
    register = read_register(path)
    assert [e.unit_id for e in register.entries] == [
        "31105001032024000001",
        "31105001032024000002",
    ]
    assert [(p.line, p.message.split(":")[0]) for p in register.problems] == [
        (3, "rated_load_kg"),
        (4, "registration_code is empty"),
        (6, "expected 12 fields, found 3"),
        (8, "install_date"),
        (9, "registration_code 31105001032024000001 repeats line 2"),
    ]
    first = register.entries[0]
    assert first.install_date == dt.date(2024, 7, 5)
    assert (first.rated_speed_m_s, first.rated_load_kg, first.landings) == (2.5, 1000, 40)
    assert (first.contractor, first.controller_model, first.car_in_group) == (
        "维保单位02",
        "RC-3000",
        1,
    )
    assert register.entries[1].use_unit == ""


def test_a_file_without_the_required_columns_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="missing column"):
        read_register(_write(tmp_path, "registration_code,building", "1,B"))
    with pytest.raises(RegistryError, match="file not found"):
        read_register(tmp_path / "absent.csv")


def test_import_logs_bad_rows_and_reloading_updates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = str(tmp_path / "fleet.db")
    renamed = GOOD_2.replace("楼A", "楼B")

    async def scenario() -> None:
        store = await StoreWorker.open(lambda: SqliteStore.open(db))
        try:
            assert await import_register(store, _write(tmp_path, HEADER, GOOD_1, BAD_LOAD)) == 1
            assert await import_register(store, _write(tmp_path, HEADER, GOOD_1, renamed)) == 2
            units = await store.list_units(UnitQuery())
            assert [(u.unit_id[-1], u.register.building) for u in units] == [
                ("1", "楼A"),
                ("2", "楼B"),
            ]
        finally:
            await store.close()

    with caplog.at_level(logging.WARNING, logger="fleet.serve.server"):
        asyncio.run(scenario())
    assert any("line 3: rated_load_kg" in message for message in caplog.messages)


def test_the_sample_register_loads_cleanly() -> None:
    # The repository's copy, which the demo and the rig load too.
    register = read_register(REGISTER_CSV)
    assert register.problems == ()
    assert len(register.entries) == 10_525
