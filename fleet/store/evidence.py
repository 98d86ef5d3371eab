"""Migration "evidence" (issue 16): the flight recorder's windows and the dispatchers'
requests for them, and the store's side of both.

- ``evidence``: one row per Evidence record an agent sent, keyed like ``records`` by
  (agent_id, seq), so a replay is stored once. ``body`` holds the serialized Evidence
  message (deterministic serialization of what the agent sent) and ``sha256`` its
  SHA-256; the same hash goes into the unit's hash-chained history (kind ``evidence``, see
  `evidence_detail`), so an altered body or hash is named by ``verify-history``
  (`cross_check_evidence`). Every window of an event is kept: the one written at the
  raise (EVIDENCE_END_RAISE) and the final one; a read takes the final one
  (`EvidenceStore.event_evidence`).
- ``evidence_requests``: a dispatcher's "what is this car doing?" (issue 16, item 5). The
  web process that takes the request writes it ``pending``; the gateway holding the
  unit's agent stream, in whichever ``serve --workers`` process that is, finds it on its
  next poll (`fleet.ingest.evidence`), marks it ``sent`` (or ``refused`` with the reason,
  for an agent whose Hello did not set records_evidence) and writes the EvidenceRequest
  frame. A request nobody took is marked ``expired`` by the web process; a sent one not
  answered by ``expires_us`` reads as expired. Who asked goes into the unit's history
  (kind ``evidence_request``) in the same transaction as the row.

The same DDL on both backends but for ``{blob}`` (BLOB on SQLite, BYTEA on PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleet.store.chain import HistoryRow, Problem, iso_us
from protos.liftwatch.v1 import records_pb2

if TYPE_CHECKING:
    from fleet.store.base import Store

EVIDENCE_MIGRATION = """
CREATE TABLE evidence (
    agent_id      TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    unit_id       TEXT NOT NULL,
    event_id      TEXT NOT NULL DEFAULT '',
    request_id    TEXT NOT NULL DEFAULT '',
    end_kind      INTEGER NOT NULL,
    start_us      BIGINT NOT NULL,
    time_us       BIGINT NOT NULL,
    committed_us  BIGINT NOT NULL,
    samples       INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    body          {blob} NOT NULL,
    PRIMARY KEY (agent_id, seq)
);
CREATE INDEX evidence_event ON evidence (event_id);
CREATE INDEX evidence_request ON evidence (request_id);
CREATE INDEX evidence_unit ON evidence (unit_id);
CREATE TABLE evidence_requests (
    request_id    TEXT PRIMARY KEY,
    unit_id       TEXT NOT NULL,
    seconds       INTEGER NOT NULL,
    requested_by  TEXT NOT NULL,
    requested_us  BIGINT NOT NULL,
    expires_us    BIGINT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'pending',
    reason        TEXT NOT NULL DEFAULT '',
    sent_us       BIGINT,
    answered_us   BIGINT
);
CREATE INDEX evidence_requests_state ON evidence_requests (state);
"""

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
RAISE = records_pb2.EVIDENCE_END_RAISE
# How often each serving process looks for requests to take to its agents
# (fleet.ingest.evidence); the web process waits several of these for a taker.
EVIDENCE_POLL_S = 0.25
# The states a request row goes through (see the module docstring).
REQUEST_STATES = ("pending", "sent", "refused", "expired")


def end_name(number: int) -> str:
    """``raise``, ``post``, ``cleared``, ``max``, ``request`` or ``shutdown`` for an
    EvidenceEnd; the number as text when the wire enum does not know it."""
    try:
        return records_pb2.EvidenceEnd.Name(number).removeprefix("EVIDENCE_END_").lower()
    except ValueError:
        return str(number)


def _us(moment: dt.datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _at(us: int | None) -> dt.datetime | None:
    return None if us is None else _EPOCH + dt.timedelta(microseconds=int(us))


@dataclass(frozen=True, slots=True)
class EvidenceRow:
    """One stored Evidence record: who sent it, what it belongs to, and its bytes
    (``body``, the serialized Evidence; ``sha256`` as stored beside them)."""

    agent_id: str
    seq: int
    unit_id: str
    event_id: str
    request_id: str
    end: int
    time: dt.datetime
    committed: dt.datetime
    sha256: str
    body: bytes
    # The EventType of the event (its RAISED row), 0 when no stored event names it.
    event_type: int = 0


@dataclass(frozen=True, slots=True)
class EvidenceRequestRow:
    """One on-demand request as stored; ``state`` one of `REQUEST_STATES`."""

    request_id: str
    unit_id: str
    seconds: int
    requested_by: str
    requested: dt.datetime
    expires: dt.datetime
    state: str
    reason: str
    sent: dt.datetime | None
    answered: dt.datetime | None

    def status(self, now: dt.datetime) -> str:
        """What a reader is told: ``answered`` once an Evidence names it, else
        ``expired`` when nobody took it, the agent could not record, or its time ran
        out, else ``sent`` (a pending row is being handed to the agent's stream)."""
        if self.answered is not None:
            return "answered"
        if self.state in ("refused", "expired") or now >= self.expires:
            return "expired"
        return "sent"


@dataclass(frozen=True, slots=True)
class EvidenceFact:
    """One ``evidence`` row as the history chain records it, with the SHA-256 of its
    body computed afresh (``body_sha256``) beside the stored ``sha256``."""

    agent_id: str
    seq: int
    unit_id: str
    event_id: str
    request_id: str
    end: int
    time_us: int
    samples: int
    sha256: str
    body_sha256: str


def evidence_detail(fact: EvidenceFact) -> dict[str, Any]:
    """The detail of the ``evidence`` history entry recording ``fact``: the one place
    that says what of an Evidence is chained (ingest writes it, the cross-check
    recomputes it). The hash is of the body as stored."""
    return {
        "agent_id": fact.agent_id,
        "seq": int(fact.seq),
        "event_id": fact.event_id,
        "request_id": fact.request_id,
        "end": end_name(fact.end),
        "time": iso_us(fact.time_us),
        "samples": int(fact.samples),
        "sha256": fact.body_sha256,
    }


def cross_check_evidence(
    chains: Mapping[str, Sequence[HistoryRow]], facts: Iterable[EvidenceFact]
) -> list[Problem]:
    """Every disagreement between the ``evidence`` table and the chains: a row with no
    entry (inserted), a chained Evidence whose row is gone (deleted), a row whose body no
    longer hashes to the chained SHA-256, or whose stored hash or fields differ from the
    entry (edited). ``table`` is ``evidence``."""
    chained: dict[tuple[str, str, int], tuple[HistoryRow, dict[str, Any]]] = {}
    for unit_id, rows in chains.items():
        for row in rows:
            if row.kind != "evidence":
                continue
            try:
                detail = json.loads(row.detail)
                key = (unit_id, str(detail["agent_id"]), int(detail["seq"]))
            except (ValueError, KeyError, TypeError):
                continue  # verify_chain names an entry whose content was edited
            chained[key] = (row, detail)
    problems: list[Problem] = []
    for fact in facts:
        name = f"evidence row {fact.agent_id}#{fact.seq} ({fact.event_id or fact.request_id})"
        found = chained.pop((fact.unit_id, fact.agent_id, fact.seq), None)
        if found is None:
            problems.append(
                Problem(
                    fact.unit_id, 0, None, "inserted", f"{name} has no history entry", "evidence"
                )
            )
            continue
        row, detail = found
        expected = evidence_detail(fact)
        differ = sorted(
            k for k in expected.keys() | detail.keys() if expected.get(k) != detail.get(k)
        )
        if fact.sha256 != fact.body_sha256 and "sha256" not in differ:
            differ.append("sha256 (the stored hash is not the body's)")
        if differ:
            problems.append(
                Problem(
                    fact.unit_id,
                    row.seq,
                    row.row_id,
                    "edited",
                    f"{name} differs from history seq {row.seq} in {', '.join(differ)}",
                    "evidence",
                )
            )
    for (unit_id, agent_id, seq), (row, _) in sorted(chained.items()):
        problems.append(
            Problem(
                unit_id,
                row.seq,
                row.row_id,
                "deleted",
                f"evidence row {agent_id}#{seq} is gone; history seq {row.seq} recorded it",
                "evidence",
            )
        )
    return problems


def settle(
    request_id: str, state: str, now: dt.datetime, reason: str = ""
) -> Callable[[Store], bool]:
    """A store call (for `fleet.store.worker.StoreWorker.call`) that settles the pending
    request ``request_id`` as ``state`` (see `EvidenceStore.settle_evidence_request`)."""
    return lambda store: store.settle_evidence_request(request_id, state, now, reason)


_EVIDENCE_COLUMNS = (
    "e.agent_id, e.seq, e.unit_id, e.event_id, e.request_id, e.end_kind, e.time_us, "
    "e.committed_us, e.sha256, e.body"
)
# The event's type, from its RAISED row (a CLEARED row carries the same type).
_EVENT_TYPE = (
    "COALESCE((SELECT MIN(v.type) FROM events v WHERE v.event_id = e.event_id "
    "AND e.event_id <> '' AND v.unit_id = e.unit_id), 0)"
)
# The unit an Evidence must be of to answer a read by each column: the request's unit; an
# event's unit (its event record's, under this unit) when the fleet has the event at all.
_SAME_UNIT = {
    "request_id": "e.unit_id = (SELECT r.unit_id FROM evidence_requests r "
    "WHERE r.request_id = e.request_id)",
    "event_id": "(EXISTS (SELECT 1 FROM events v WHERE v.unit_id = e.unit_id "
    "AND v.event_id = e.event_id) OR NOT EXISTS (SELECT 1 FROM events v "
    "WHERE v.event_id = e.event_id))",
}
# Which of several windows answers a read: the final one over the one written at the
# raise, then the newest.
_NEWEST_FIRST = (
    f"ORDER BY CASE WHEN e.end_kind = {RAISE} THEN 0 ELSE 1 END DESC, e.time_us DESC, "
    "e.seq DESC LIMIT 1"
)
_REQUEST_COLUMNS = (
    "request_id, unit_id, seconds, requested_by, requested_us, expires_us, state, reason, "
    "sent_us, answered_us"
)


def _evidence_row(row: Sequence[Any]) -> EvidenceRow:
    return EvidenceRow(
        agent_id=str(row[0]),
        seq=int(row[1]),
        unit_id=str(row[2]),
        event_id=str(row[3]),
        request_id=str(row[4]),
        end=int(row[5]),
        time=_at(int(row[6])) or _EPOCH,
        committed=_at(int(row[7])) or _EPOCH,
        sha256=str(row[8]),
        body=bytes(row[9]),
        event_type=int(row[10]),
    )


def _request_row(row: Sequence[Any]) -> EvidenceRequestRow:
    return EvidenceRequestRow(
        request_id=str(row[0]),
        unit_id=str(row[1]),
        seconds=int(row[2]),
        requested_by=str(row[3]),
        requested=_at(int(row[4])) or _EPOCH,
        expires=_at(int(row[5])) or _EPOCH,
        state=str(row[6]),
        reason=str(row[7]),
        sent=_at(row[8]),
        answered=_at(row[9]),
    )


class EvidenceStore:
    """Evidence and evidence requests over the driver hooks of `fleet.store.sql.SqlStore`
    (a mixin, like `fleet.store.lifecycle.LifecycleStore`)."""

    # -- driver hooks (SqlStore supplies them) --------------------------------------------

    def _execute(self, text: str, params: Sequence[object] = ()) -> Any:
        raise NotImplementedError

    def _many(self, text: str, rows: Sequence[Sequence[object]]) -> None:
        raise NotImplementedError

    def _transaction(self, *, durable: bool = False) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _queue_history(self, unit_id: str, at_us: int, kind: str, detail: dict[str, Any]) -> None:
        raise NotImplementedError

    def _drop_history(self) -> None:
        raise NotImplementedError

    def _flush_history(self) -> None:
        raise NotImplementedError

    # -- ingest ---------------------------------------------------------------------------

    def _on_evidence(
        self, rows: Sequence[tuple[str, records_pb2.Record, int]], now_us: int
    ) -> None:
        """Store the Evidence records ``rows`` (agent_id, record, record time µs), each
        newly stored under its (agent_id, seq): the row, its history entry, and the
        request it answers marked answered. Inside the ingest transaction."""
        stored: list[tuple[object, ...]] = []
        answers: list[tuple[object, ...]] = []
        for agent_id, record, time_us in rows:
            evidence = record.evidence
            body = evidence.SerializeToString(deterministic=True)
            digest = hashlib.sha256(body).hexdigest()
            start_us = evidence.start.seconds * 1_000_000 + evidence.start.nanos // 1000
            stored.append(
                (
                    agent_id,
                    int(record.seq),
                    record.unit_id,
                    evidence.event_id,
                    evidence.request_id,
                    int(evidence.end),
                    start_us,
                    time_us,
                    now_us,
                    int(evidence.samples),
                    digest,
                    body,
                )
            )
            fact = EvidenceFact(
                agent_id,
                int(record.seq),
                record.unit_id,
                evidence.event_id,
                evidence.request_id,
                int(evidence.end),
                time_us,
                int(evidence.samples),
                digest,
                digest,
            )
            self._queue_history(record.unit_id, now_us, "evidence", evidence_detail(fact))
            if evidence.request_id:
                answers.append((now_us, evidence.request_id, record.unit_id))
        self._many(
            "INSERT INTO evidence (agent_id, seq, unit_id, event_id, request_id, end_kind, "
            "start_us, time_us, committed_us, samples, sha256, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            stored,
        )
        # Only a request for this unit: an agent cannot answer another unit's request.
        self._many(
            "UPDATE evidence_requests SET answered_us = ? WHERE request_id = ? "
            "AND unit_id = ? AND answered_us IS NULL",
            answers,
        )

    # -- reads ----------------------------------------------------------------------------

    def event_evidence(self, event_id: str) -> EvidenceRow | None:
        """The Evidence that answers for event ``event_id``: its final window over the
        one written at the raise, then the newest; None when none is stored."""
        return self._answering("event_id", event_id)

    def request_evidence(self, request_id: str) -> EvidenceRow | None:
        """The Evidence answering on-demand request ``request_id``, or None."""
        return self._answering("request_id", request_id)

    def _answering(self, column: str, value: str) -> EvidenceRow | None:
        """The Evidence whose ``column`` (event_id or request_id) is ``value`` that
        answers a read (see `_NEWEST_FIRST`), or None. Only an Evidence of the unit the
        request or event is about answers it: an agent may name any id on its own unit's
        records, and another unit's samples must never pass for this one's."""
        row = self._execute(
            f"SELECT {_EVIDENCE_COLUMNS}, {_EVENT_TYPE} FROM evidence e "
            f"WHERE e.{column} = ? AND e.{column} <> '' AND {_SAME_UNIT[column]} "
            f"{_NEWEST_FIRST}",
            (value,),
        ).fetchone()
        return None if row is None else _evidence_row(row)

    def evidence_facts(self, unit_id: str = "") -> list[EvidenceFact]:
        """The ``evidence`` rows (of ``unit_id`` unless "") as the chain records them,
        each body hashed afresh, for `cross_check_evidence`."""
        where, params = ("WHERE unit_id = ? ", [unit_id]) if unit_id else ("", [])
        rows = self._execute(
            "SELECT agent_id, seq, unit_id, event_id, request_id, end_kind, time_us, samples, "
            f"sha256, body FROM evidence {where}ORDER BY unit_id, agent_id, seq",
            params,
        ).fetchall()
        return [
            EvidenceFact(
                str(r[0]),
                int(r[1]),
                str(r[2]),
                str(r[3]),
                str(r[4]),
                int(r[5]),
                int(r[6]),
                int(r[7]),
                str(r[8]),
                hashlib.sha256(bytes(r[9])).hexdigest(),
            )
            for r in rows
        ]

    # -- on-demand requests ---------------------------------------------------------------

    def add_evidence_request(
        self,
        request_id: str,
        unit_id: str,
        seconds: int,
        by: str,
        now: dt.datetime,
        expires: dt.datetime,
    ) -> EvidenceRequestRow:
        """Record a dispatcher's request, ``pending`` until a gateway takes it, with an
        ``evidence_request`` entry (who asked, for how long) in the unit's history."""
        now_us = _us(now)
        with self._transaction(durable=True):
            self._drop_history()
            self._execute(
                "INSERT INTO evidence_requests (request_id, unit_id, seconds, requested_by, "
                "requested_us, expires_us) VALUES (?, ?, ?, ?, ?, ?)",
                (request_id, unit_id, seconds, by, now_us, _us(expires)),
            )
            detail = {"request_id": request_id, "seconds": int(seconds), "by": by}
            self._queue_history(unit_id, now_us, "evidence_request", detail)
            self._flush_history()
        found = self.evidence_request(request_id)
        assert found is not None
        return found

    def evidence_request(self, request_id: str) -> EvidenceRequestRow | None:
        """The request ``request_id``, or None."""
        row = self._execute(
            f"SELECT {_REQUEST_COLUMNS} FROM evidence_requests WHERE request_id = ?",
            (request_id,),
        ).fetchone()
        return None if row is None else _request_row(row)

    def outstanding_evidence_request(
        self, unit_id: str, now: dt.datetime
    ) -> EvidenceRequestRow | None:
        """The newest request of ``unit_id`` still in flight at ``now`` (pending or sent,
        not answered, not expired), or None: the web allows one a unit at a time."""
        row = self._execute(
            f"SELECT {_REQUEST_COLUMNS} FROM evidence_requests WHERE unit_id = ? "
            "AND state IN ('pending', 'sent') AND answered_us IS NULL AND expires_us > ? "
            "ORDER BY requested_us DESC LIMIT 1",
            (unit_id, _us(now)),
        ).fetchone()
        return None if row is None else _request_row(row)

    def pending_evidence_requests(self, now: dt.datetime) -> list[EvidenceRequestRow]:
        """The requests no gateway has taken yet and whose time has not run out, oldest
        first (an index read: usually none)."""
        rows = self._execute(
            f"SELECT {_REQUEST_COLUMNS} FROM evidence_requests WHERE state = 'pending' "
            "AND expires_us > ? ORDER BY requested_us",
            (_us(now),),
        ).fetchall()
        return [_request_row(r) for r in rows]

    def settle_evidence_request(
        self, request_id: str, state: str, now: dt.datetime, reason: str = ""
    ) -> bool:
        """Move request ``request_id`` from ``pending`` to ``state`` (sent, refused or
        expired) with ``reason``; False when it was no longer pending (another process
        settled it first: each request is settled once)."""
        if state not in REQUEST_STATES[1:]:
            raise ValueError(f"state must be one of {', '.join(REQUEST_STATES[1:])}")
        with self._transaction():
            found = self._execute(
                "UPDATE evidence_requests SET state = ?, reason = ?, "
                "sent_us = CASE WHEN ? = 'sent' THEN ? ELSE sent_us END "
                "WHERE request_id = ? AND state = 'pending' RETURNING request_id",
                (state, reason, state, _us(now), request_id),
            ).fetchone()
        return found is not None
