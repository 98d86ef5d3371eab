"""The fleet store's interface and the plain data that crosses it.

Implementations (SQLite in `fleet.store.sqlite`, PostgreSQL in `fleet.store.postgres`, both
on the shared SQL of `fleet.store.sql`) are synchronous; the asyncio side reaches them
through `fleet.store.worker.StoreWorker`, which runs every call on one dedicated thread,
and writes from many agent streams through `fleet.ingest.GroupCommitter`, which applies
them in one transaction per group. Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from protos.liftwatch.v1 import records_pb2


class StoreError(Exception):
    """The store cannot be opened or used (missing file, not a database, unknown schema)."""


@dataclass(frozen=True, slots=True)
class RegisterEntry:
    """One unit as the district register lists it; ``unit_id`` is the registration code."""

    unit_id: str
    building: str = ""
    address: str = ""
    street: str = ""
    use_unit: str = ""
    contractor: str = ""
    install_date: dt.date | None = None
    rated_speed_m_s: float | None = None
    rated_load_kg: int | None = None
    landings: int | None = None
    controller_model: str = ""
    car_in_group: int | None = None


@dataclass(frozen=True, slots=True)
class ControllerIdentity:
    """What the agent says about a unit's controller; empty strings mean "not known"."""

    vendor: str = ""
    model: str = ""
    firmware: str = ""
    serial: str = ""
    profile: str = ""


@dataclass(frozen=True, slots=True)
class UnitClaim:
    """A unit an agent declares in Hello, with its controller as the agent sees it."""

    unit_id: str
    controller: ControllerIdentity


@dataclass(frozen=True, slots=True)
class HelloOp:
    """A write: an agent's Hello (see `Store.register_hello`)."""

    agent_id: str
    agent_version: str
    units: tuple[UnitClaim, ...]


@dataclass(frozen=True, slots=True)
class BatchOp:
    """A write: one RecordBatch of an agent (see `Store.commit_batch`)."""

    agent_id: str
    records: tuple[records_pb2.Record, ...]


@dataclass(frozen=True, slots=True)
class HeartbeatOp:
    """A write: an agent's Heartbeat (see `Store.touch_agent`)."""

    agent_id: str


WriteOp = HelloOp | BatchOp | HeartbeatOp


@dataclass(frozen=True, slots=True)
class CoverageChange:
    """One coverage transition of a unit, as kept in the coverage history.

    ``cause`` says what the fleet observed: ``hello``, ``record``, ``heartbeat`` (the unit
    was heard of) or ``sweep`` (nothing was heard for a threshold).
    """

    unit_id: str
    at: dt.datetime
    old_status: str
    new_status: str
    cause: str


@dataclass(frozen=True, slots=True)
class FirmwareChange:
    """A change of a unit's controller firmware or agent version (first report included)."""

    unit_id: str
    at: dt.datetime
    agent_id: str
    model: str
    old_firmware: str
    new_firmware: str
    old_agent_version: str
    new_agent_version: str


@dataclass(frozen=True, slots=True)
class UnitRow:
    """Everything the store knows about one unit: register data and what agents reported."""

    unit_id: str
    registered: bool
    register: RegisterEntry
    agent_id: str
    agent_version: str
    controller: ControllerIdentity
    last_seen: dt.datetime | None
    link_up: bool | None

    @property
    def model(self) -> str:
        """The controller model: as reported by the agent, else as registered."""
        return self.controller.model or self.register.controller_model


@dataclass(frozen=True, slots=True)
class EventRow:
    """One stored Event record; ``type`` and ``phase`` are the proto enum numbers."""

    agent_id: str
    seq: int
    unit_id: str
    time: dt.datetime
    event_id: str
    type: int
    phase: int
    onset: dt.datetime | None
    floor: int | None
    reason: str
    committed: dt.datetime | None = None  # the fleet's clock when it committed the event


@dataclass(frozen=True, slots=True)
class UnitQuery:
    """Filters for `Store.list_units`; empty strings and False mean "any"."""

    street: str = ""
    building: str = ""
    contractor: str = ""
    firmware: str = ""
    model: str = ""
    reported_only: bool = False


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters for `Store.list_events`: unit, event type number (0 = any), newest ``limit``."""

    unit_id: str = ""
    type: int = 0
    limit: int = 100


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What `Store.commit_batch` did: the agent's highest committed seq, rows newly stored."""

    committed_seq: int
    inserted: int


class Store(Protocol):
    """The fleet's repository. Every method is atomic; writes are idempotent where noted."""

    @property
    def description(self) -> str:
        """Where the data lives, for logs (a path or a URL without password)."""
        ...

    def write(self, ops: Sequence[WriteOp], now: dt.datetime) -> list[CommitResult | None]:
        """Apply ``ops`` in order in one transaction; one result per op.

        A `BatchOp` gets its `CommitResult`, a `HelloOp` one whose ``committed_seq`` is the
        agent's (``inserted`` 0), a `HeartbeatOp` None. Either all ops are applied or none.
        """
        ...

    def sweep(
        self, now: dt.datetime, stale_after_s: float, offline_after_s: float
    ) -> list[CoverageChange]:
        """Move units not heard of for the thresholds to stale / offline; returns the changes
        it recorded in the coverage history (safe to run from several fleets at once)."""
        ...

    def coverage_history(self, unit_id: str, limit: int) -> list[CoverageChange]:
        """The newest ``limit`` coverage transitions of ``unit_id`` ("" = all), oldest first."""
        ...

    def firmware_history(self, unit_id: str, limit: int) -> list[FirmwareChange]:
        """The newest ``limit`` firmware / agent version changes of ``unit_id`` ("" = all),
        oldest first."""
        ...

    def committed_seq(self, agent_id: str) -> int:
        """The highest seq stored for ``agent_id``; 0 when nothing is."""
        ...

    def register_hello(
        self, agent_id: str, agent_version: str, units: Sequence[UnitClaim], now: dt.datetime
    ) -> None:
        """Record an agent's Hello: its version, the units it claims and their controllers.

        Non-empty controller fields overwrite stored ones; the agent and its units count as
        seen at ``now``.
        """
        ...

    def commit_batch(
        self, agent_id: str, records: Sequence[records_pb2.Record], now: dt.datetime
    ) -> CommitResult:
        """Store ``records`` in one transaction, once per (agent_id, seq).

        A record already stored changes nothing. New records mark their unit seen at ``now``,
        update its firmware (ControllerInfo) and link state (LinkStatus) unless a newer one is
        stored, and Events are indexed for `list_events`.
        """
        ...

    def touch_agent(self, agent_id: str, now: dt.datetime) -> None:
        """A heartbeat: the agent and every unit it claims count as seen at ``now``."""
        ...

    def upsert_register(self, entries: Sequence[RegisterEntry]) -> int:
        """Insert or update register entries in one transaction; returns how many."""
        ...

    def list_units(self, query: UnitQuery) -> list[UnitRow]:
        """Units matching ``query`` (registered or ever reported), ordered by unit_id."""
        ...

    def get_unit(self, unit_id: str) -> UnitRow | None:
        """The unit ``unit_id``, or None when it is neither registered nor ever reported."""
        ...

    def list_events(self, query: EventQuery) -> list[EventRow]:
        """The newest ``query.limit`` matching events, returned oldest first."""
        ...

    def close(self) -> None:
        """Release the store; no call may follow."""
        ...
