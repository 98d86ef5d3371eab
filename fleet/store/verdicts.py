"""Migration "verdicts" (issue 13): what the fleet keeps so that its verdicts are true.

The same DDL on both backends but for the ``{id}`` column type:

- ``events.gb_code``: the GB/T 24476 code the agent sent (NULL where it sent 0, or an
  older fleet stored the event); ``events.at_landing``: where the car stood at onset
  (1 at a landing, 0 between floors, NULL unknown), which regional codes depend on.
- ``units.undetectable``: the wire EventType numbers the unit's agent said (in Hello) it
  cannot detect, comma-separated: the claims audit says "cannot tell" for those.
- ``alarms.close_reason``: why an alarm was resolved while its event was still raised.
- ``history_checks``: each verification of the history chains against a signed checkpoint
  (`fleet.history.checkpoint`), newest shown on the dashboard; append-only for the app role.
- ``units.detectable``: the wire EventType numbers the unit's agent said it can detect,
  comma-separated: an event neither there nor in ``undetectable`` (a type newer than the
  agent) is one the agent cannot see either.
- ``register_changes``: a row per register import; its newest id tells a serving fleet
  that its unit -> contractor map is stale (`fleet.web.scope`).
- ``unit_trips_daily.watched_slots``: per unit and UTC day, bit n (0-47) set when a
  Counters record fell in the day's half-hour n: the fault-rate report's watched time.
"""

from __future__ import annotations

VERDICTS_MIGRATION = """
-- Issue 14: the revocation list of agent certificates, and a log of every change to who
-- may connect, which serving fleets poll to end a removed or revoked agent's open streams
-- at once (see fleet.store.agents).
CREATE TABLE revoked_certificates (
    agent_id    TEXT NOT NULL,
    serial      TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    revoked_us  BIGINT NOT NULL,
    PRIMARY KEY (agent_id, serial)
);
CREATE TABLE agent_access_changes (
    id        {id},
    agent_id  TEXT NOT NULL,
    serial    TEXT NOT NULL
);
ALTER TABLE events ADD COLUMN gb_code INTEGER;
ALTER TABLE events ADD COLUMN at_landing INTEGER;
ALTER TABLE units ADD COLUMN undetectable TEXT NOT NULL DEFAULT '';
ALTER TABLE alarms ADD COLUMN close_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE units ADD COLUMN detectable TEXT NOT NULL DEFAULT '';
ALTER TABLE unit_trips_daily ADD COLUMN watched_slots BIGINT NOT NULL DEFAULT 0;
CREATE TABLE history_checks (
    id                     {id},
    checked_us             BIGINT NOT NULL,
    source                 TEXT NOT NULL,
    checkpoint_file        TEXT NOT NULL,
    checkpoint_written_us  BIGINT,
    units                  INTEGER NOT NULL,
    problems               INTEGER NOT NULL,
    summary                TEXT NOT NULL DEFAULT ''
);
-- Issue 14: one row per register import, so that a serving fleet sees a unit given to
-- another contractor at its next request (fleet.web.scope polls MAX(id), an index read).
CREATE TABLE register_changes (
    id          {id},
    changed_us  BIGINT NOT NULL
);
"""
