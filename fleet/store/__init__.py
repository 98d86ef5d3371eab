"""Fleet storage: the `Store` interface (base), SQLite (sqlite), the async facade (worker)."""
