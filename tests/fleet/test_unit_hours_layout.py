"""PostgreSQL's ``unit_hours`` in order of alignment (issue 18, long-term bytes): migration
"unit hours packed" rewrites a database's existing hour rows into the unpadded layout with
the same values, the same key, owner and the grants the application role had."""

from __future__ import annotations

from typing import Any

from fleet.store.postgres import MIGRATIONS, PostgresStore
from fleet.store.retention import (
    _HOUR_COLUMNS,
    _HOUR_UPSERT,
    UNIT_HOURS_PACKED_MIGRATION_POSTGRES,
    Retention,
)

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
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


def _before_packing(url: str) -> tuple[str, str]:
    """A database as the migration before "unit hours packed" left it: the two hour rows,
    unit_hours owned by a role of its own and granted to another as `grant_app_role`
    grants it; (the owner's name, the other's)."""
    import psycopg

    version = MIGRATIONS.index(UNIT_HOURS_PACKED_MIGRATION_POSTGRES)
    with psycopg.connect(url, autocommit=True) as conn:
        # Roles are the cluster's: one per database.
        owner, role = f"lw_owner_{conn.info.dbname}", f"lw_hours_{conn.info.dbname}"
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for migration in MIGRATIONS[:version]:
            conn.execute(migration)
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        marks = ", ".join(["%s"] * len(FULL))
        for row in (FULL, SPARSE):
            conn.execute(f"INSERT INTO unit_hours ({_HOUR_COLUMNS}) VALUES ({marks})", row)
        conn.execute(f"CREATE ROLE {owner}")
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"ALTER TABLE unit_hours OWNER TO {owner}")
        conn.execute(f"GRANT {', '.join(PRIVILEGES)} ON unit_hours TO {role}")
    return owner, role


def _row_sizes(store: PostgresStore) -> dict[str, tuple[int, int]]:
    """Per unit: the hour row's size (pg_column_size, its tuple header included) and the
    sum of its columns' sizes."""
    columns = " + ".join(f"COALESCE(pg_column_size({c}), 0)" for c in _HOUR_COLUMNS.split(", "))
    rows = store._execute(f"SELECT unit_id, pg_column_size(t.*), {columns} FROM unit_hours t")
    return {str(r[0]): (int(r[1]), int(r[2])) for r in rows.fetchall()}


def _hours(store: PostgresStore) -> list[dict[str, Any]]:
    retention = Retention(store)
    return [h for u in ("U-full", "U-sparse") for h in retention.unit_hours(u, AT, AT + 2 * HOUR)]


def test_existing_hour_rows_are_packed_with_their_values_key_owner_and_grants(pg_url: str) -> None:
    import psycopg

    owner, role = _before_packing(pg_url)
    with psycopg.connect(pg_url) as conn:
        before = _row_sizes(PostgresStore(conn, "before"))
    store = PostgresStore.open(pg_url)  # migrates
    try:
        hours = _hours(store)
        names = _HOUR_COLUMNS.split(", ")
        assert hours == [dict(zip(names, row, strict=True)) for row in (FULL, SPARSE)]
        for hour in hours:
            for name, value in hour.items():
                assert value is None or type(value) is type(FULL[names.index(name)]), name
        after = _row_sizes(store)
        # Unpadded: a row is its header (23 bytes and the null bitmap, to 8: 24 without a
        # NULL, 32 with) and its columns; the old order padded both rows.
        assert after["U-full"][0] == 24 + after["U-full"][1] < before["U-full"][0]
        assert after["U-sparse"][0] == 32 + after["U-sparse"][1] < before["U-sparse"][0]
        key = store._execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'unit_hours'"
        ).fetchall()
        assert [str(k[0]) for k in key] == [
            "CREATE UNIQUE INDEX unit_hours_pkey ON public.unit_hours "
            "USING btree (unit_id, hour_us)"
        ]
        granted = store._execute(
            "SELECT p FROM unnest(?::text[]) p WHERE has_table_privilege(?, 'unit_hours', p)",
            (list(PRIVILEGES), role),
        ).fetchall()
        assert [str(g[0]) for g in granted] == list(PRIVILEGES)
        found = store._execute(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'unit_hours'::regclass"
        ).fetchone()
        assert found == (owner,)
        # The fold's upsert finds the key: the sparse hour takes the full one's values.
        store._execute(_HOUR_UPSERT, SPARSE[:2] + FULL[2:])
        (hour,) = Retention(store).unit_hours("U-sparse", AT, AT + 2 * HOUR)
        assert hour == dict(zip(names, SPARSE[:2] + FULL[2:], strict=True))
    finally:
        store.close()
