"""Unit liveness and district coverage: pure functions of stored facts and ``now``.

A unit is *seen* whenever the fleet hears of it (Hello, a record, its agent's heartbeat;
agents send a heartbeat every ``ingest.heartbeat_interval_s``, 10 s by default).
Statuses, with ``age = now - last_seen`` and the thresholds of ``[coverage]`` (defaults
30 s stale, 300 s offline: three missed heartbeats, then five minutes):

- never_seen: registered, never heard of;
- offline: ``age >= offline_after_s``;
- stale: ``stale_after_s <= age < offline_after_s``;
- blind: recent, but the last LinkStatus said the agent cannot reach the controller;
- online: recent, and the controller link is up or not reported yet.

Transitions are kept as history by the store (on ingest) and `fleet.ingest.sweeper` (silence).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from fleet.store.base import UnitRow
from liftconf.schema import bounded

GROUP_KEYS = ("street", "building", "contractor")


@dataclass(frozen=True, slots=True)
class CoverageConfig:
    """``[coverage]``: liveness thresholds, in seconds since a unit was last heard of.

    Owned here, not in `fleet.config`, so the arrow runs one way: the config loader
    imports the sections of the features, never the reverse.
    """

    stale_after_s: float = bounded(30.0, 0, low_open=True)
    offline_after_s: float = 300.0  # must exceed stale_after_s (checked by fleet.config)
    sweep_interval_s: float = bounded(10.0, 0, 3600, low_open=True)


class UnitStatus(enum.Enum):
    """A unit's liveness; the values are the names the CLI and JSON use."""

    ONLINE = "online"
    STALE = "stale"
    OFFLINE = "offline"
    BLIND = "blind"
    NEVER_SEEN = "never_seen"


def unit_status(
    last_seen: dt.datetime | None,
    link_up: bool | None,
    now: dt.datetime,
    thresholds: CoverageConfig,
) -> UnitStatus:
    """The status of a unit last seen at ``last_seen`` (None = never), as of ``now``."""
    if last_seen is None:
        return UnitStatus.NEVER_SEEN
    age_s = (now - last_seen).total_seconds()
    if age_s >= thresholds.offline_after_s:
        return UnitStatus.OFFLINE
    if age_s >= thresholds.stale_after_s:
        return UnitStatus.STALE
    if link_up is False:
        return UnitStatus.BLIND
    return UnitStatus.ONLINE


def status_of(unit: UnitRow, now: dt.datetime, thresholds: CoverageConfig) -> UnitStatus:
    """`unit_status` of a stored unit."""
    return unit_status(unit.last_seen, unit.link_up, now, thresholds)


@dataclass(frozen=True, slots=True)
class Coverage:
    """District counts. online + stale + offline + blind = monitored (units ever heard of,
    registered or not); never_seen counts registered units only; unregistered_reporting are
    monitored units missing from the register (flagged, their data kept)."""

    registered: int = 0
    monitored: int = 0
    online: int = 0
    stale: int = 0
    offline: int = 0
    blind: int = 0
    never_seen: int = 0
    unregistered_reporting: int = 0


def coverage(units: Iterable[UnitRow], now: dt.datetime, thresholds: CoverageConfig) -> Coverage:
    """Count ``units`` by registration and status as of ``now``."""
    counts = dict.fromkeys(Coverage.__dataclass_fields__, 0)
    for unit in units:
        status = status_of(unit, now, thresholds)
        counts[status.value] += 1
        if unit.registered:
            counts["registered"] += 1
        if unit.last_seen is not None:
            counts["monitored"] += 1
            if not unit.registered:
                counts["unregistered_reporting"] += 1
    return Coverage(**counts)


def coverage_of_counts(rows: Iterable[tuple[str, bool, bool, int]]) -> Coverage:
    """`coverage` from the store's `fleet.store.base.Store.status_counts` rows: the same
    counts without listing every unit."""
    counts = dict.fromkeys(Coverage.__dataclass_fields__, 0)
    for status, registered, seen, count in rows:
        counts[status] += count
        if registered:
            counts["registered"] += count
        if seen:
            counts["monitored"] += count
            if not registered:
                counts["unregistered_reporting"] += count
    return Coverage(**counts)


def coverage_by(
    units: Iterable[UnitRow], key: str, now: dt.datetime, thresholds: CoverageConfig
) -> dict[str, Coverage]:
    """`coverage` per value of register field ``key`` (one of `GROUP_KEYS`), sorted by it.

    Units without that field (unregistered, or left empty in the register) count under "".
    """
    if key not in GROUP_KEYS:
        raise ValueError(f"cannot group coverage by {key!r}; choose {', '.join(GROUP_KEYS)}")
    groups: dict[str, list[UnitRow]] = {}
    for unit in units:
        groups.setdefault(getattr(unit.register, key), []).append(unit)
    return {name: coverage(groups[name], now, thresholds) for name in sorted(groups)}
