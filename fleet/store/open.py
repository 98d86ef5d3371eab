"""Open the store a target names: a PostgreSQL URL, else a SQLite path (or ``:memory:``)."""

from __future__ import annotations

from fleet.store.postgres import PostgresStore, is_postgres_url
from fleet.store.sql import SqlStore
from fleet.store.sqlite import SqliteStore


def open_store(target: str, *, readonly: bool = False) -> SqlStore:
    """The store at ``target`` (``postgresql://...`` or a SQLite file); raises `StoreError`."""
    if is_postgres_url(target):
        return PostgresStore.open(target, readonly=readonly)
    return SqliteStore.open(target, readonly=readonly)
