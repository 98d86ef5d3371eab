"""Migration "liveness" (issue 18, item 5): marking a unit seen rewrites no index.

On both backends no index of ``units`` holds ``last_seen_us`` any more; on PostgreSQL
the updates that a stream of batches makes to its units are HOT (heap-only: no index
entry written), counted by the server's own statistics."""

from __future__ import annotations

import asyncio
import datetime as dt

import psycopg

from fleet.store.open import open_store
from fleet.store.postgres import PostgresStore
from tests.fleet.factories import T0, record
from tests.support import eventually


def _indexed_columns(store_target: str) -> set[str]:
    store = open_store(store_target)
    try:
        if store_target.startswith("postgresql://"):
            rows = store._execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indrelid = 'units'::regclass"
            ).fetchall()
            return {str(r[0]) for r in rows}
        columns: set[str] = set()
        for index in store._execute("PRAGMA index_list(units)").fetchall():
            info = store._execute(f"PRAGMA index_info({index[1]})").fetchall()
            columns |= {str(row[2]) for row in info}
        return columns
    finally:
        store.close()


def test_no_index_of_units_holds_last_seen(store_target: str) -> None:
    columns = _indexed_columns(store_target)
    assert "unit_id" in columns  # the query sees the indexes at all
    assert "last_seen_us" not in columns


def test_a_stream_of_batches_updates_its_units_heap_only(pg_url: str) -> None:
    store = PostgresStore.open(pg_url)
    try:
        for n in range(1, 201):
            now = T0 + dt.timedelta(seconds=n)
            store.commit_batch("a1", [record(2 * n - 1, "U1"), record(2 * n, "U2")], now)
        # Statistics reach the shared counters when the backend flushes them.
        store._execute("SELECT pg_stat_force_next_flush()")
        store.commit_batch("a1", [record(401, "U1")], T0 + dt.timedelta(seconds=999))
    finally:
        store.close()

    def counts() -> tuple[int, int]:
        with psycopg.connect(pg_url) as conn:
            row = conn.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'units'"
            ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

    updated, hot = asyncio.run(
        eventually(counts, lambda c: c[0] >= 400, what="the units' updates counted")
    )
    # Every batch updates both units' last_seen_us; nearly all of it heap-only (the first
    # updates of a page may find no room before pruning frees some).
    assert hot >= 0.9 * updated
