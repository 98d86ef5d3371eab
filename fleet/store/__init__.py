"""Fleet storage: the `Store` interface (base), the shared SQL (sql), SQLite (sqlite),
PostgreSQL (postgres), choosing one by target (open), the async facade (worker)."""
