"""Migration "publication" (issue 17, items 4-6): what the register knows beyond the unit,
and the lists the district publishes.

- ``register_details``: the register's optional columns per unit (`RegisterDetails`): the
  use unit's contact (personal data: never in public output), the maintenance fund
  status, the last periodic inspection and the safety assessments. NULL means the register
  never said (the column was absent from every import): "unknown", never "no".
- ``publications``: one row per drafted set of lists. The lists are computed when the
  draft is made and kept as JSON, so that what a second regulator approves is exactly
  what goes public; the row's state moves draft -> approved -> published.
- ``publication_steps``: every step (drafted, approved, published) with who and when;
  append-only for the application role, the publication's history.

`PublicationStore` is a mixin of `fleet.store.sql.SqlStore`: the same SQL on both
backends, run through its driver hooks.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

from fleet.store import batches
from fleet.store.retention import counters_in_hours

PUBLICATION_MIGRATION = """
CREATE TABLE register_details (
    unit_id             TEXT PRIMARY KEY,
    use_unit_contact    TEXT,
    maintenance_fund    TEXT,
    inspection_date     TEXT,
    inspection_result   TEXT,
    safety_assessments  TEXT
);
CREATE TABLE publications (
    id            {id},
    state         TEXT NOT NULL,
    lists         TEXT NOT NULL,
    as_of_us      BIGINT NOT NULL,
    drafted_by    TEXT NOT NULL,
    drafted_us    BIGINT NOT NULL,
    approved_by   TEXT NOT NULL DEFAULT '',
    approved_us   BIGINT,
    published_by  TEXT NOT NULL DEFAULT '',
    published_us  BIGINT
);
CREATE INDEX publications_published ON publications (published_us);
CREATE TABLE publication_steps (
    id              {id},
    publication_id  BIGINT NOT NULL,
    step            TEXT NOT NULL,
    username        TEXT NOT NULL,
    at_us           BIGINT NOT NULL
);
"""

# The register's optional columns as the file names them, in `RegisterDetails` order.
DETAIL_COLUMNS = (
    "use_unit_contact",
    "maintenance_fund",
    "last_inspection_date",
    "last_inspection_result",
    "safety_assessments",
)
# ... and the register_details column each is kept in.
_DB_COLUMN = {
    "use_unit_contact": "use_unit_contact",
    "maintenance_fund": "maintenance_fund",
    "last_inspection_date": "inspection_date",
    "last_inspection_result": "inspection_result",
    "safety_assessments": "safety_assessments",
}

Fund = Literal["yes", "no"]
Result = Literal["pass", "fail"]
State = Literal["draft", "approved", "published"]


@dataclass(frozen=True, slots=True)
class RegisterDetails:
    """What the register's optional columns say of one unit; None: not said (unknown).

    ``safety_assessments`` is the dates of the unit's safety assessments on record,
    oldest first: () when the register's column was there and empty (none on record),
    None when no import had the column."""

    unit_id: str
    use_unit_contact: str | None = None
    maintenance_fund: Fund | None = None
    last_inspection_date: dt.date | None = None
    last_inspection_result: Result | None = None
    safety_assessments: tuple[dt.date, ...] | None = None


@dataclass(frozen=True, slots=True)
class Publication:
    """One drafted set of lists and how far it went; ``lists`` is the JSON kept at draft."""

    id: int
    state: State
    lists: dict[str, Any]
    as_of: dt.datetime
    drafted_by: str
    drafted: dt.datetime
    approved_by: str
    approved: dt.datetime | None
    published_by: str
    published: dt.datetime | None


@dataclass(frozen=True, slots=True)
class PublicationStep:
    """One step of a publication's history."""

    publication_id: int
    step: str
    username: str
    at: dt.datetime


class PublicationError(Exception):
    """A publication step that is not allowed now (named, with why)."""


def _us(at: dt.datetime) -> int:
    return int((at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / dt.timedelta(microseconds=1))


def _time(us: object) -> dt.datetime | None:
    if us is None:
        return None
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(str(us)))


def _date(text: object) -> dt.date | None:
    return dt.date.fromisoformat(str(text)) if text else None


_PUBLICATION_COLUMNS = (
    "id, state, lists, as_of_us, drafted_by, drafted_us, approved_by, approved_us, "
    "published_by, published_us"
)


def _publication(row: Sequence[Any]) -> Publication:
    as_of, drafted = _time(row[3]), _time(row[5])
    assert as_of is not None and drafted is not None
    return Publication(
        id=int(row[0]),
        state=row[1],
        lists=json.loads(row[2]),
        as_of=as_of,
        drafted_by=row[4],
        drafted=drafted,
        approved_by=row[6],
        approved=_time(row[7]),
        published_by=row[8],
        published=_time(row[9]),
    )


class PublicationStore:
    """Register details and publications over the driver hooks of `SqlStore`."""

    def _execute(self, text: str, params: Sequence[object] = ()) -> Any:
        raise NotImplementedError

    def _many(self, text: str, rows: Sequence[Sequence[object]]) -> None:
        raise NotImplementedError

    def _transaction(self, *, durable: bool = False) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _snapshot(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    # -- the register's optional columns -----------------------------------------------

    def upsert_register_details(
        self, details: Sequence[RegisterDetails], columns: frozenset[str]
    ) -> int:
        """Keep ``details`` for their units; only the optional ``columns`` the file had are
        written (a column the file lacks leaves what an earlier import said). Returns how
        many units were written."""
        present = [c for c in DETAIL_COLUMNS if c in columns]
        if not present or not details:
            return 0
        names = ", ".join(_DB_COLUMN[c] for c in present)
        updates = ", ".join(f"{_DB_COLUMN[c]} = excluded.{_DB_COLUMN[c]}" for c in present)
        marks = ", ".join("?" * (len(present) + 1))
        rows = [(d.unit_id, *(_cell(d, c) for c in present)) for d in details]
        with self._transaction():
            self._many(
                f"INSERT INTO register_details (unit_id, {names}) VALUES ({marks}) "
                f"ON CONFLICT (unit_id) DO UPDATE SET {updates}",
                rows,
            )
        return len(rows)

    def register_details(self) -> dict[str, RegisterDetails]:
        """Every unit's register details by unit id (units never given any are absent)."""
        rows = self._execute(
            "SELECT unit_id, use_unit_contact, maintenance_fund, inspection_date, "
            "inspection_result, safety_assessments FROM register_details"
        ).fetchall()
        found: dict[str, RegisterDetails] = {}
        for r in rows:
            assessed = (
                None
                if r[5] is None
                else tuple(dt.date.fromisoformat(d) for d in r[5].split(";") if d)
            )
            found[r[0]] = RegisterDetails(
                unit_id=r[0],
                use_unit_contact=r[1],
                maintenance_fund=r[2],
                last_inspection_date=_date(r[3]),
                last_inspection_result=r[4],
                safety_assessments=assessed,
            )
        return found

    # -- counters for the maintenance plan ---------------------------------------------

    @batches.snapshot_read
    def counters_near(self, unit_id: str, at: dt.datetime) -> tuple[dt.datetime, bytes] | None:
        """The unit's Counters record at or last before ``at``, else its first after; its
        time and the serialized Record (None: the unit never sent counters)."""
        at_us = _us(at)
        # The kind is a literal so that the partial index records_health applies.
        row = self._execute(
            "SELECT time_us, payload FROM records WHERE unit_id = ? AND kind = 'counters' "
            "AND time_us <= ? ORDER BY time_us DESC LIMIT 1",
            (unit_id, at_us),
        ).fetchone()
        if row is not None:
            # After a clock set back, compaction (which stops at an agent's first record
            # past its cutoff) leaves hot rows older than batched ones: a batched reading
            # newer than this one, at or before ``at``, is the answer. Mostly no batch is
            # that new, and the index says so.
            newer = batches.rows_in(self, unit_id, ("counters",), int(row[0]) + 1, at_us + 1)
            row = (newer[-1][0], newer[-1][3]) if newer else row
        if row is None:
            # Compacted (fleet.store.batches): the newest batched reading at or before.
            found = batches.nearest_rows(self, unit_id, "counters", at_us + 1, 1)
            row = (found[0][0], found[0][3]) if found else None
        if row is None:
            # Beyond the retention window: each hour's last Counters reading, folded into
            # unit_hours (fleet.store.retention), the same reading for a time on an hour.
            row = counters_in_hours(self, unit_id, at_us, after=False)
        if row is None:
            row = counters_in_hours(self, unit_id, at_us, after=True)
        if row is None:
            found = batches.nearest_rows(self, unit_id, "counters", at_us + 1, 1, after=True)
            row = (found[0][0], found[0][3]) if found else None
        if row is None:
            row = self._execute(
                "SELECT time_us, payload FROM records WHERE unit_id = ? AND kind = 'counters' "
                "AND time_us > ? ORDER BY time_us LIMIT 1",
                (unit_id, at_us),
            ).fetchone()
        if row is None:
            return None
        time = _time(row[0])
        assert time is not None
        return time, bytes(row[1])

    # -- publications -------------------------------------------------------------------

    def draft_publication(
        self, lists: dict[str, Any], as_of: dt.datetime, username: str, now: dt.datetime
    ) -> int:
        """Keep a new draft of ``lists`` (computed ``as_of``) by ``username``; its id."""
        with self._transaction(durable=True):
            row = self._execute(
                "INSERT INTO publications (state, lists, as_of_us, drafted_by, drafted_us) "
                "VALUES ('draft', ?, ?, ?, ?) RETURNING id",
                (json.dumps(lists, ensure_ascii=False), _us(as_of), username, _us(now)),
            ).fetchone()
            publication_id = int(row[0])
            self._step(publication_id, "drafted", username, now)
        return publication_id

    def approve_publication(
        self, publication_id: int, username: str, now: dt.datetime, *, by_another: bool
    ) -> Publication:
        """Approve draft ``publication_id``; with ``by_another``, ``username`` must not be
        its drafter. Raises `PublicationError` naming why not."""
        with self._transaction(durable=True):
            found = self._publication_for_update(publication_id)
            if found.state != "draft":
                raise PublicationError(
                    f"publication {publication_id} is {found.state}: only a draft is approved"
                )
            if by_another and found.drafted_by == username:
                raise PublicationError(
                    f"publication {publication_id} was drafted by {username}: another "
                    "regulator must approve it (publication.approval_by_another)"
                )
            self._moved(
                "UPDATE publications SET state = 'approved', approved_by = ?, approved_us = ? "
                "WHERE id = ? AND state = 'draft' RETURNING id",
                (username, _us(now), publication_id),
            )
            self._step(publication_id, "approved", username, now)
        return self._publication_for_update(publication_id)

    def publish_publication(
        self, publication_id: int, username: str, now: dt.datetime
    ) -> Publication:
        """Publish approved ``publication_id``: it becomes what /public/ serves. Raises
        `PublicationError` unless it is approved."""
        with self._transaction(durable=True):
            found = self._publication_for_update(publication_id)
            if found.state != "approved":
                raise PublicationError(
                    f"publication {publication_id} is {found.state}: only an approved one "
                    "is published"
                )
            self._moved(
                "UPDATE publications SET state = 'published', published_by = ?, "
                "published_us = ? WHERE id = ? AND state = 'approved' RETURNING id",
                (username, _us(now), publication_id),
            )
            self._step(publication_id, "published", username, now)
        return self._publication_for_update(publication_id)

    def publications(self, limit: int = 20) -> list[Publication]:
        """The newest ``limit`` publications (any state), newest first."""
        rows = self._execute(
            f"SELECT {_PUBLICATION_COLUMNS} FROM publications ORDER BY id DESC LIMIT ?",
            (max(limit, 0),),
        ).fetchall()
        return [_publication(r) for r in rows]

    def publication(self, publication_id: int) -> Publication | None:
        """Publication ``publication_id`` in whatever state, or None."""
        row = self._execute(
            f"SELECT {_PUBLICATION_COLUMNS} FROM publications WHERE id = ?", (publication_id,)
        ).fetchone()
        return None if row is None else _publication(row)

    def current_publication(self) -> Publication | None:
        """The last one published (what the public sees), None before the first."""
        row = self._execute(
            f"SELECT {_PUBLICATION_COLUMNS} FROM publications WHERE state = 'published' "
            "ORDER BY published_us DESC, id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else _publication(row)

    def publication_steps(self, publication_id: int = 0) -> list[PublicationStep]:
        """The history of ``publication_id`` (0: of every publication), oldest first."""
        where, params = (
            ("WHERE publication_id = ? ", (publication_id,)) if publication_id else ("", ())
        )
        rows = self._execute(
            "SELECT publication_id, step, username, at_us FROM publication_steps "
            f"{where}ORDER BY id",
            params,
        ).fetchall()
        steps = []
        for r in rows:
            at = _time(r[3])
            assert at is not None
            steps.append(PublicationStep(int(r[0]), r[1], r[2], at))
        return steps

    def _publication_for_update(self, publication_id: int) -> Publication:
        found = self.publication(publication_id)
        if found is None:
            raise PublicationError(f"publication {publication_id}: no such publication")
        return found

    def _moved(self, text: str, params: Sequence[object]) -> None:
        # Two regulators acting at once: the second finds the state already moved.
        if self._execute(text, params).fetchone() is None:
            raise PublicationError(f"publication {params[-1]}: another step came first")

    def _step(self, publication_id: int, step: str, username: str, now: dt.datetime) -> None:
        self._execute(
            "INSERT INTO publication_steps (publication_id, step, username, at_us) "
            "VALUES (?, ?, ?, ?)",
            (publication_id, step, username, _us(now)),
        )


def _cell(details: RegisterDetails, column: str) -> object:
    value = getattr(details, column)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, tuple):
        return ";".join(d.isoformat() for d in value)
    return value
