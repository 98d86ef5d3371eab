"""``unit_hours``'s layout (issue 18, long-term bytes). PostgreSQL's migration "unit hours
packed" rewrites a database's existing hour rows into the unpadded layout, and "unit keys"
(both backends) keys them by a unit's number instead of its text id: each with the same
values read back, the key the fold's upsert finds, the owner and the grants the
application role had."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fleet.store import sqlite
from fleet.store.postgres import MIGRATIONS, PostgresStore
from fleet.store.retention import (
    _HOUR_COLUMNS,
    _HOUR_UPSERT,
    _KEYED_COLUMNS,
    _UNIT_KEY,
    UNIT_HOURS_PACKED_MIGRATION_POSTGRES,
    UNIT_KEYS_MIGRATION_POSTGRES,
    UNIT_KEYS_MIGRATION_SQLITE,
    Retention,
)
from fleet.store.sql import SqlStore

HOUR = 3_600_000_000
AT = 1_767_225_600_000_000  # 2026-01-01 00:00 UTC
# Every column set, at the edges of its type: times and run time beyond 2^31 µs, a
# widest gap of ten days, totals beyond 2^32, moving unknown (-1), floats a float4 holds.
FULL = (
    "U-full", AT, 2_622, AT + 23_371, AT + HOUR - 1, 10 * 24 * HOUR, 221, 146,
    HOUR + 60_000_000, '{"2":3593114196,"3":7000000}', 3, -1, 4, 111, 110, AT + HOUR,
    2**40, 760_452, 9_501, 2_505, 3_102, 1.25, 0.75,
)  # fmt: skip
# An hour with link-status records only: no car state, no Counters reading.
SPARSE = (
    "U-sparse", AT + HOUR, 0, None, None, 0, 0, 0, 0, "{}", None, None, None, 2, 1, None,
    None, None, None, None, None, None, None,
)  # fmt: skip
# A second hour of the full unit: a unit's hours share one number.
LATER = ("U-full", AT + HOUR, *FULL[2:])
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


def _before(url: str, migration: str, rows: tuple[tuple[Any, ...], ...]) -> tuple[str, str]:
    """A database as the migration before ``migration`` left it: ``rows`` in unit_hours,
    unit_hours owned by a role of its own and granted to another as `grant_app_role`
    grants it; (the owner's name, the other's)."""
    import psycopg

    version = MIGRATIONS.index(migration)
    with psycopg.connect(url, autocommit=True) as conn:
        # Roles are the cluster's: one per database.
        owner, role = f"lw_owner_{conn.info.dbname}", f"lw_hours_{conn.info.dbname}"
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for migration in MIGRATIONS[:version]:
            conn.execute(migration)
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        marks = ", ".join(["%s"] * len(FULL))
        for row in rows:
            conn.execute(f"INSERT INTO unit_hours ({_HOUR_COLUMNS}) VALUES ({marks})", row)
        conn.execute(f"CREATE ROLE {owner}")
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"ALTER TABLE unit_hours OWNER TO {owner}")
        conn.execute(f"GRANT {', '.join(PRIVILEGES)} ON unit_hours TO {role}")
    return owner, role


def _row_sizes(store: PostgresStore, *, keyed: bool) -> dict[str, tuple[int, int]]:
    """Per unit: the hour row's size (pg_column_size, its tuple header included) and the
    sum of its columns' sizes (``keyed``: the layout of "unit keys", else the one before)."""
    stored = (_KEYED_COLUMNS if keyed else _HOUR_COLUMNS).split(", ")
    columns = " + ".join(f"COALESCE(pg_column_size(t.{c}), 0)" for c in stored)
    joined = "unit_hours t JOIN unit_keys k USING (unit_no)" if keyed else "unit_hours t"
    rows = store._execute(f"SELECT unit_id, pg_column_size(t.*), {columns} FROM {joined}")
    return {str(r[0]): (int(r[1]), int(r[2])) for r in rows.fetchall()}


def _hours(store: SqlStore) -> list[dict[str, Any]]:
    retention = Retention(store)
    return [h for u in ("U-full", "U-sparse") for h in retention.unit_hours(u, AT, AT + 2 * HOUR)]


def test_existing_hour_rows_are_packed_with_their_values_key_owner_and_grants(pg_url: str) -> None:
    import psycopg

    owner, role = _before(pg_url, UNIT_HOURS_PACKED_MIGRATION_POSTGRES, (FULL, SPARSE))
    with psycopg.connect(pg_url) as conn:
        before = _row_sizes(PostgresStore(conn, "before"), keyed=False)
    store = PostgresStore.open(pg_url)  # migrates
    try:
        hours = _hours(store)
        names = _HOUR_COLUMNS.split(", ")
        assert hours == [dict(zip(names, row, strict=True)) for row in (FULL, SPARSE)]
        for hour in hours:
            for name, value in hour.items():
                assert value is None or type(value) is type(FULL[names.index(name)]), name
        after = _row_sizes(store, keyed=True)
        # Unpadded (and keyed by the unit's number since: smaller still): a row is its
        # header (23 bytes and the null bitmap, to 8: 24 without a NULL, 32 with) and its
        # columns; the old order padded both rows.
        assert after["U-full"][0] == 24 + after["U-full"][1] < before["U-full"][0]
        assert after["U-sparse"][0] == 32 + after["U-sparse"][1] < before["U-sparse"][0]
        key = store._execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'unit_hours'"
        ).fetchall()
        assert [str(k[0]) for k in key] == [
            "CREATE UNIQUE INDEX unit_hours_pkey ON public.unit_hours "
            "USING btree (unit_no, hour_us)"
        ]
        _assert_owned(store, "unit_hours", owner, role)
        # The fold's upsert finds the key: the sparse hour takes the full one's values.
        store._execute(_HOUR_UPSERT, SPARSE[:2] + FULL[2:])
        (hour,) = Retention(store).unit_hours("U-sparse", AT, AT + 2 * HOUR)
        assert hour == dict(zip(names, SPARSE[:2] + FULL[2:], strict=True))
    finally:
        store.close()


def _assert_owned(store: SqlStore, table: str, owner: str, role: str) -> None:
    """``table`` is ``owner``'s and ``role`` holds `PRIVILEGES` on it."""
    granted = store._execute(
        "SELECT p FROM unnest(?::text[]) p WHERE has_table_privilege(?, ?, p)",
        (list(PRIVILEGES), role, table),
    ).fetchall()
    assert [str(g[0]) for g in granted] == list(PRIVILEGES)
    found = store._execute(
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = ?::regclass", (table,)
    ).fetchone()
    assert found == (owner,)


def _sqlite_before_keys(path: Path, rows: tuple[tuple[Any, ...], ...]) -> None:
    """A SQLite database as the migration before "unit keys" left it, with ``rows``."""
    version = sqlite.MIGRATIONS.index(UNIT_KEYS_MIGRATION_SQLITE)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for index, migration in enumerate(sqlite.MIGRATIONS[:version]):
            conn.executescript(f"BEGIN; {migration}; PRAGMA user_version = {index + 1}; COMMIT;")
        marks = ", ".join(["?"] * len(FULL))
        for row in rows:
            conn.execute(f"INSERT INTO unit_hours ({_HOUR_COLUMNS}) VALUES ({marks})", row)
    finally:
        conn.close()


def _keys(store: SqlStore) -> list[tuple[int, str]]:
    rows = store._execute("SELECT unit_no, unit_id FROM unit_keys ORDER BY unit_no").fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_existing_hour_rows_are_keyed_by_unit_number_with_their_values(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rows = (FULL, LATER, SPARSE)
    store: SqlStore
    if backend == "sqlite":
        _sqlite_before_keys(tmp_path / "fleet.db", rows)
        store = sqlite.SqliteStore.open(str(tmp_path / "fleet.db"))  # migrates
    else:
        url = str(request.getfixturevalue("pg_url"))
        owner, role = _before(url, UNIT_KEYS_MIGRATION_POSTGRES, rows)
        store = PostgresStore.open(url)  # migrates
    try:
        names = _HOUR_COLUMNS.split(", ")
        hours = Retention(store).unit_hours("U-full", AT, AT + 2 * HOUR)
        hours += Retention(store).unit_hours("U-sparse", AT, AT + 2 * HOUR)
        assert hours == [dict(zip(names, row, strict=True)) for row in rows]
        for hour in hours:
            for name, value in hour.items():
                assert value is None or type(value) is type(FULL[names.index(name)]), name
        # One number a unit, however many hours it has.
        assert _keys(store) == [(1, "U-full"), (2, "U-sparse")]
        if backend == "postgres":
            _assert_owned(store, "unit_hours", owner, role)
            _assert_owned(store, "unit_keys", owner, role)
        # A new unit takes the next number; a known one none (the statement is a no-op).
        store._many(_UNIT_KEY, [("U-new", "U-new"), ("U-full", "U-full")])
        assert _keys(store) == [(1, "U-full"), (2, "U-sparse"), (3, "U-new")]
        # The fold's upsert finds the key: the sparse hour takes the full one's values,
        # and the new unit's hour is its own.
        store._many(_HOUR_UPSERT, [SPARSE[:2] + FULL[2:], ("U-new", AT, *FULL[2:])])
        (hour,) = Retention(store).unit_hours("U-sparse", AT, AT + 2 * HOUR)
        assert hour == dict(zip(names, SPARSE[:2] + FULL[2:], strict=True))
        (hour,) = Retention(store).unit_hours("U-new", AT, AT + 2 * HOUR)
        assert hour == dict(zip(names, ("U-new", AT, *FULL[2:]), strict=True))
        assert store._execute("SELECT COUNT(*) FROM unit_hours").fetchone()[0] == 4
    finally:
        store.close()
