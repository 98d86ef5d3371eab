"""The fleet store's interface and the plain data that crosses it.

Implementations (SQLite in `fleet.store.sqlite`, PostgreSQL in `fleet.store.postgres`, both
on the shared SQL of `fleet.store.sql`) are synchronous; the asyncio side reaches them
through `fleet.store.worker.StoreWorker`, which runs every call on one dedicated thread,
and writes from many agent streams through `fleet.ingest.committer.GroupCommitter`, which applies
them in one transaction per group. Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fleet.auth.roles import Principal, Role
from fleet.store.agents import AccessChange, Revocation
from fleet.store.chain import AlarmFact, EventFact, Head, HistoryCheck, HistoryRow
from fleet.store.evidence import EvidenceFact, EvidenceRequestRow, EvidenceRow
from fleet.store.publication import Publication, PublicationStep, RegisterDetails
from fleet.store.retention import StateHour
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
    # What the unit's profile lets the agent see, as wire EventType numbers (Hello's
    # UnitDescriptor.detectable / undetectable); the claims audit reads them.
    detectable: tuple[int, ...] = ()
    undetectable: tuple[int, ...] = ()


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
    # The unit's last Hello: the wire EventTypes its agent can and cannot detect (empty
    # when no Hello has said, e.g. one stored before migration "verdicts").
    detectable: tuple[int, ...] = ()
    undetectable: tuple[int, ...] = ()

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
    # The GB/T 24476 code as `fleet.taxonomy.shown_gb_code` gives it: the stored one, else
    # the type's fixed code (a row stored before migration "verdicts"); None, never 0.
    gb_code: int | None = None
    # Where the car stood at onset: True at a landing, False between floors, None unknown.
    at_landing: bool | None = None
    # The reason as a stable code and its parameters (sorted pairs), for the reader's
    # language; '' and () from an older agent (fleet.store.reasons).
    reason_code: str = ""
    reason_params: tuple[tuple[str, str], ...] = ()


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
    """Filters for `Store.list_events`: unit, event type number (0 = any), newest
    ``limit``, and the units of one maintenance contractor."""

    unit_id: str = ""
    type: int = 0
    limit: int = 100
    contractor: str = ""


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

    def status_counts(
        self, now: dt.datetime, stale_after_s: float, offline_after_s: float
    ) -> list[tuple[str, bool, bool, int]]:
        """(status, registered, ever seen, count) over all units, the status as
        `fleet.units.coverage.unit_status` gives it as of ``now``, counted in the database."""
        ...

    def get_unit(self, unit_id: str) -> UnitRow | None:
        """The unit ``unit_id``, or None when it is neither registered nor ever reported."""
        ...

    def list_events(self, query: EventQuery) -> list[EventRow]:
        """The newest ``query.limit`` matching events, returned oldest first."""
        ...

    def unit_contractors(self) -> dict[str, str]:
        """unit_id -> maintenance contractor of every unit the fleet knows."""
        ...

    def register_version(self) -> int:
        """A number that grows with every register import (0 before the first): while it
        stands still, `unit_contractors` has not changed."""
        ...

    def latest_car_state(self, unit_id: str) -> tuple[dt.datetime, bytes] | None:
        """The newest CarState record of ``unit_id``: its time and the serialized Record."""
        ...

    def health_records(
        self, unit_id: str, kind: str, limit: int
    ) -> list[tuple[dt.datetime, bytes]]:
        """The newest ``limit`` records of ``kind`` ("counters" or "link_status") of
        ``unit_id``, oldest first: times and serialized Records."""
        ...

    def close(self) -> None:
        """Release the store; no call may follow."""
        ...

    # -- the agent registry (implemented in fleet.store.agents) ---------------------------

    def add_agent_units(self, agent_id: str, unit_ids: Sequence[str]) -> int:
        """Register ``unit_ids`` for ``agent_id`` (idempotent); returns how many were new."""
        ...

    def remove_agent_units(self, agent_id: str, unit_ids: Sequence[str] = ()) -> int:
        """Withdraw ``unit_ids`` from ``agent_id`` (all when empty); returns how many."""
        ...

    def agent_units(self, agent_id: str) -> tuple[str, ...]:
        """The units registered for ``agent_id``, sorted; empty when it has none."""
        ...

    def agent_registrations(self) -> dict[str, tuple[str, ...]]:
        """Every registered agent with its units, both sorted."""
        ...

    def revoke_agent(
        self, at: dt.datetime, *, agent_id: str = "", serial: str = "", reason: str = ""
    ) -> bool:
        """Revoke certificate ``serial``, or every certificate of ``agent_id``; False when
        it was revoked already."""
        ...

    def unrevoke_agent(self, *, agent_id: str = "", serial: str = "") -> bool:
        """Take ``agent_id`` or ``serial`` off the revocation list; False when absent."""
        ...

    def revocations(self) -> list[Revocation]:
        """The revocation list, oldest first."""
        ...

    def revocation_reason(self, agent_id: str, serial: str) -> str | None:
        """Why a certificate of ``agent_id`` with ``serial`` is revoked, or None."""
        ...

    def access_changes(self, after_id: int) -> list[AccessChange]:
        """Changes to who may connect with an id above ``after_id``, oldest first."""
        ...

    def last_access_change(self) -> int:
        """The id of the newest change to who may connect (0 when none)."""
        ...

    # -- lifecycle (implemented in fleet.store.lifecycle) --------------------------------

    def alarms(
        self, *, open_only: bool = False, unit_id: str = "", limit: int = 0
    ) -> list[AlarmRow]:
        """Alarms, newest first (``limit`` 0 = all); ``open_only``: not yet resolved."""
        ...

    def alarm_action(
        self,
        alarm_id: int,
        action: str,
        by: str,
        now: dt.datetime,
        reason: str = "",
        crew: str = "",
        eta: dt.datetime | None = None,
    ) -> AlarmRow:
        """Apply ``action`` (ack, dispatch, on_site, resolve, false_alarm) by ``by``; raises
        `AlarmActionError` for an unknown alarm or a step its state does not allow, and
        `AlarmReasonRequiredError` for closing (resolve, false_alarm) an alarm whose event is
        still raised without a ``reason`` (then kept as its ``close_reason``). ``dispatch``
        (an acknowledged alarm, which it leaves acknowledged) records ``crew`` (who was
        sent, required, at most `MAX_CREW_CHARS`) and ``eta`` (when they are expected, not
        before ``now``); other actions refuse them."""
        ...

    def claim_deliveries(self, plan: DispatchPlan, now: dt.datetime) -> list[Delivery]:
        """Escalate overdue alarms, then lease every due send for ``plan.lease_s``."""
        ...

    def delivery_done(
        self, delivery: Delivery, error: str, now: dt.datetime, next_at: dt.datetime | None
    ) -> None:
        """Record a send: ``error`` "" = accepted; the next send at ``next_at`` (None = no
        more to this target)."""
        ...

    def next_dispatch_at(self, plan: DispatchPlan) -> dt.datetime | None:
        """When the dispatcher has something to do next (a send or an escalation)."""
        ...

    def history(self, unit_id: str = "") -> tuple[list[HistoryRow], list[Head]]:
        """Every history row (of ``unit_id`` unless ""), by unit and seq, and the heads."""
        ...

    def chained_rows(self, unit_id: str = "") -> tuple[list[EventFact], list[AlarmFact]]:
        """The ``events`` and ``alarms`` rows (of ``unit_id`` unless "") as the history
        chains record them, for `fleet.store.chain.cross_check_events` / `cross_check_alarms`."""
        ...

    def history_hashes(self, points: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """The stored hash of each (unit_id, seq) in ``points`` that has a history row."""
        ...

    def history_heads(self) -> list[Head]:
        """Every unit's chain head (its newest seq and hash), by unit."""
        ...

    def record_history_check(self, check: HistoryCheck) -> None:
        """Keep the outcome of one verification against a checkpoint (append-only)."""
        ...

    def last_history_check(self) -> HistoryCheck | None:
        """The newest verification kept by `record_history_check`, or None."""
        ...

    def fault_events(self, since: dt.datetime, until: dt.datetime) -> list[FaultEvent]:
        """RAISED events stored with a time in [since, until)."""
        ...

    def trip_spans(self, since: dt.date, until: dt.date) -> list[TripSpan]:
        """Daily trip counter spans for the days in [since, until)."""
        ...

    def record_times(
        self, unit_id: str, agent_id: str, since: dt.datetime, until: dt.datetime
    ) -> list[dt.datetime]:
        """The times of the records ``agent_id`` sent about ``unit_id`` in [since, until)."""
        ...

    def state_hours(self, unit_id: str, since: dt.datetime, until: dt.datetime) -> list[StateHour]:
        """The car states of ``unit_id`` folded beyond the retention window, by hour, for
        the hours holding any time in [since, until) (`fleet.store.retention.state_hours`)."""
        ...

    def unit_events(self, unit_id: str, since: dt.datetime, until: dt.datetime) -> list[EventRow]:
        """Events of ``unit_id`` whose time or onset lies in [since, until), oldest first."""
        ...

    # -- users, sessions, API tokens (implemented in fleet.store.users) -------------------

    def add_user(
        self,
        username: str,
        role: Role,
        password_hash: str,
        contractor: str = "",
        display_name: str = "",
        *,
        now: dt.datetime,
    ) -> None:
        """Create a user; raises `UserError` for a taken or malformed name or a role and
        contractor that do not go together."""
        ...

    def users(self) -> list[UserRow]:
        """Every user, by username."""
        ...

    def user(self, username: str) -> UserRow | None:
        """The user ``username``, or None."""
        ...

    def remove_user(self, username: str) -> bool:
        """Delete a user with its sessions and tokens; False when there was none."""
        ...

    def set_password(self, username: str, password_hash: str) -> bool:
        """Replace a user's password hash and end its sessions; False when no such user."""
        ...

    def create_session(self, username: str, now: dt.datetime, ttl: dt.timedelta) -> tuple[str, str]:
        """A new session for ``username`` valid for ``ttl``: (session id, CSRF token)."""
        ...

    def session(self, session_id: str, now: dt.datetime) -> tuple[UserRow, str] | None:
        """The user of a live session and its CSRF token; None if unknown or expired."""
        ...

    def end_session(self, session_id: str) -> None:
        """Forget a session (log out); unknown ids are ignored."""
        ...

    def purge_sessions(self, now: dt.datetime) -> int:
        """Delete the sessions expired by ``now``; returns how many."""
        ...

    def create_token(self, username: str, label: str, now: dt.datetime) -> str:
        """A new API token ``lwt_...`` for ``username``, shown only this once."""
        ...

    def token_user(self, token: str) -> UserRow | None:
        """The user an API token belongs to, or None."""
        ...

    def tokens(self, username: str) -> list[TokenRow]:
        """The labels and creation times of a user's API tokens, by label."""
        ...

    def revoke_token(self, username: str, label: str) -> bool:
        """Delete a user's token ``label``; False when there was none."""
        ...

    # -- the flight recorder (implemented in fleet.store.evidence) ------------------------

    def event_evidence(self, event_id: str) -> EvidenceRow | None:
        """The Evidence answering for event ``event_id`` (its final window over the one
        written at the raise, then the newest), or None."""
        ...

    def request_evidence(self, request_id: str) -> EvidenceRow | None:
        """The Evidence answering on-demand request ``request_id``, or None."""
        ...

    def evidence_facts(self, unit_id: str = "") -> list[EvidenceFact]:
        """The ``evidence`` rows (of ``unit_id`` unless "") as the chains record them."""
        ...

    def add_evidence_request(
        self,
        request_id: str,
        unit_id: str,
        seconds: int,
        by: str,
        now: dt.datetime,
        expires: dt.datetime,
    ) -> EvidenceRequestRow:
        """Record a pending on-demand request, and who asked in the unit's history."""
        ...

    def evidence_request(self, request_id: str) -> EvidenceRequestRow | None:
        """The on-demand request ``request_id``, or None."""
        ...

    def outstanding_evidence_request(
        self, unit_id: str, now: dt.datetime
    ) -> EvidenceRequestRow | None:
        """The newest request of ``unit_id`` pending or sent, unanswered and not expired
        by ``now``, or None."""
        ...

    def pending_evidence_requests(self, now: dt.datetime) -> list[EvidenceRequestRow]:
        """Requests no gateway has taken yet and not expired by ``now``, oldest first."""
        ...

    def settle_evidence_request(
        self, request_id: str, state: str, now: dt.datetime, reason: str = ""
    ) -> bool:
        """Move a pending request to ``state``; False when it was settled already."""
        ...

    # -- the register's optional columns and the published lists (fleet.store.publication)

    def upsert_register_details(
        self, details: Sequence[RegisterDetails], columns: frozenset[str]
    ) -> int:
        """Keep the register's optional ``columns`` for ``details``' units."""
        ...

    def register_details(self) -> dict[str, RegisterDetails]:
        """Every unit's register details by unit id."""
        ...

    def counters_near(self, unit_id: str, at: dt.datetime) -> tuple[dt.datetime, bytes] | None:
        """The unit's Counters record at or last before ``at``, else its first after."""
        ...

    def draft_publication(
        self, lists: dict[str, Any], as_of: dt.datetime, username: str, now: dt.datetime
    ) -> int:
        """Keep a new draft of the published lists; its id."""
        ...

    def approve_publication(
        self, publication_id: int, username: str, now: dt.datetime, *, by_another: bool
    ) -> Publication:
        """Approve a draft (`fleet.store.publication.PublicationError` if not allowed)."""
        ...

    def publish_publication(
        self, publication_id: int, username: str, now: dt.datetime
    ) -> Publication:
        """Publish an approved publication."""
        ...

    def publications(self, limit: int = 20) -> list[Publication]:
        """The newest publications, newest first."""
        ...

    def publication(self, publication_id: int) -> Publication | None:
        """One publication in whatever state, or None."""
        ...

    def current_publication(self) -> Publication | None:
        """The last one published, None before the first."""
        ...

    def publication_steps(self, publication_id: int = 0) -> list[PublicationStep]:
        """A publication's history (0: every publication's), oldest first."""
        ...


# -- the lifecycle side: alarms, the hash-chained history, report inputs -------------------
# (tables of migration "lifecycle", logic in fleet.store.lifecycle, fleet.alarms, fleet.reports)

# The longest "who was sent" of a crew dispatched step (a name or a team, not a letter).
MAX_CREW_CHARS = 80
ALARM_STATES = ("raised", "dispatched", "acknowledged", "on_site", "resolved", "false_alarm")
OPEN_ALARM_STATES = ("raised", "dispatched", "acknowledged", "on_site")


class AlarmActionError(Exception):
    """An alarm action that cannot be applied (unknown alarm id, wrong state); the message
    names the alarm and why."""


class AlarmReasonRequiredError(AlarmActionError):
    """Closing an alarm whose event is still raised (the passenger may still be inside)
    without saying why; the message names the alarm and its event."""


@dataclass(frozen=True, slots=True)
class AlarmRow:
    """One alarm and its disposal steps; times are None until the step happened."""

    alarm_id: int
    unit_id: str
    event_id: str
    agent_id: str
    type: int
    floor: int | None
    reason: str
    onset: dt.datetime | None
    raised: dt.datetime
    state: str
    dispatched: dt.datetime | None = None
    acknowledged: dt.datetime | None = None
    acknowledged_by: str = ""
    on_site: dt.datetime | None = None
    on_site_by: str = ""
    closed: dt.datetime | None = None  # resolved or declared a false alarm
    closed_by: str = ""
    escalated: dt.datetime | None = None
    cleared: dt.datetime | None = None  # the event's CLEARED record (the condition ended)
    building: str = ""
    address: str = ""
    street: str = ""
    contractor: str = ""
    # Why it was closed while its event was still raised; "" when it was not (the marker
    # the scorecard counts: such an alarm has no rescue time).
    close_reason: str = ""
    # The dispatcher's "crew dispatched" step (migration "crew"): who was sent (personal
    # data: never public nor northbound), when they are expected, when and by whom recorded.
    crew: str = ""
    crew_eta: dt.datetime | None = None
    crew_dispatched: dt.datetime | None = None
    crew_dispatched_by: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed send of ``alarm`` to ``target``; ``attempt`` counts from 1."""

    alarm: AlarmRow
    target: str
    attempt: int
    escalation: bool


@dataclass(frozen=True, slots=True)
class DispatchPlan:
    """What the dispatcher asks of the store on each round (see `Store.claim_deliveries`)."""

    targets: tuple[str, ...]
    escalation_targets: tuple[str, ...]
    escalate_after_s: float
    lease_s: float


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """A RAISED event as the reports count it."""

    unit_id: str
    type: int
    time: dt.datetime
    onset: dt.datetime | None
    event_id: str


@dataclass(frozen=True, slots=True)
class TripSpan:
    """The lowest and highest trip counter a unit reported on one UTC day."""

    unit_id: str
    day: dt.date
    min_trips: int
    max_trips: int
    # Bit n set: the agent sent a Counters record in the day's half-hour n (0-47), i.e.
    # it was reading the unit's controller then (see fleet.reports.fault_rate).
    watched_slots: int = 0


# -- users, sessions and API tokens (migration "users", logic in fleet.store.users) ----------


class UserError(Exception):
    """A user operation that cannot be done (taken or malformed name, bad role, unknown
    user or token label); the message names the problem."""


@dataclass(frozen=True, slots=True)
class UserRow:
    """A dashboard / API user; ``password_hash`` as `fleet.auth.passwords` made it."""

    username: str
    role: Role
    contractor: str
    display_name: str
    password_hash: str
    created: dt.datetime

    def principal(self) -> Principal:
        """What the access rules need of this user (no secrets)."""
        return Principal(self.username, self.role, self.contractor, self.display_name)


@dataclass(frozen=True, slots=True)
class TokenRow:
    """An API token as listed: its label and creation time, never the secret."""

    label: str
    created: dt.datetime
