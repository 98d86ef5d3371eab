"""Migration "liveness" (issue 18, item 5): marking a unit seen rewrites no index.

Every committed batch and heartbeat sets ``units.last_seen_us`` (and ``agents.last_seen_us``)
of the units it carries: at 10,000 agents that is about 8,000 row updates a second. While
``last_seen_us`` was a column of the index ``units_status_seen (status, last_seen_us)``,
PostgreSQL could not make any of those updates HOT (heap-only: the new row version on the
same page, no index touched): each one added an entry to every index of ``units``
(primary key, street, contractor, agent, status-and-seen), five index writes and their
WAL for one changed number, and as much vacuum work later. SQLite likewise rewrote the
entry of that index on every update.

The index served only the coverage sweep (``WHERE status IN (...) AND last_seen_us <=
?``), and barely: nearly every unit is ``online``, so its leading column selects almost
all of them. The sweep reads the table instead: one sequential pass over the units every
``[coverage] sweep_interval_s`` (300,000 units: well under a second of the database's
CPU a minute), against thousands of index writes a second saved.

On PostgreSQL the tables also get room on each page for the new row versions
(``fillfactor``: pages are filled to 70 % on insert), without which a HOT update finds
no space on the row's page and is not HOT after all. Pages written before the migration
are full; they gain room as their rows move or are pruned. `POSTGRES_FILLFACTOR` is
appended to the migration on PostgreSQL only (SQLite has no such setting).

The database CPU per record before and after: docs/scaling.md.
"""

from __future__ import annotations

LIVENESS_MIGRATION = """
DROP INDEX IF EXISTS units_status_seen;
"""

POSTGRES_FILLFACTOR = """
ALTER TABLE units SET (fillfactor = 70);
ALTER TABLE agents SET (fillfactor = 70);
"""
