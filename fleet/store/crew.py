"""Migration "crew" (issue 19): the dispatcher's "crew dispatched" step of an alarm.

The same DDL on both backends. An alarm row gains who was sent to the lift (``crew``: a
name or team, free text, personal data: never in /public/ nor in a northbound message, see
docs/dashboard.md), when they are expected there (``crew_eta_us``), and when and by whom
the step was recorded (``crew_dispatched_us``, ``crew_dispatched_by``). The step keeps the
alarm's state (acknowledged); the history chains it as step ``crew_dispatched``
(`fleet.store.chain.ALARM_STEP_COLUMNS`), which alarms written before this migration
simply lack (their rows hold NULL and '' here, as the cross-check expects).
"""

from __future__ import annotations

CREW_MIGRATION = """
ALTER TABLE alarms ADD COLUMN crew_dispatched_us BIGINT;
ALTER TABLE alarms ADD COLUMN crew_dispatched_by TEXT NOT NULL DEFAULT '';
ALTER TABLE alarms ADD COLUMN crew TEXT NOT NULL DEFAULT '';
ALTER TABLE alarms ADD COLUMN crew_eta_us BIGINT;
"""
