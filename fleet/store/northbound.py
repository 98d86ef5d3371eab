"""The northbound outbox (issue 21): what each regional platform has been sent of the
per-unit history, who sends it, and what it refused.

Why a cursor over the history and not a second copy of every record: the hash-chained
unit history (`fleet.store.chain`) already *is* a durable, per-unit ordered log of every
event, alarm step, coverage change and register change, appended in the same transaction
as the change it records, with ``seq`` = 1, 2, 3 ... per unit and no gaps. Its head row is
locked by every append (`fleet.store.lifecycle`), so entry n + 1 of a unit never becomes
visible before entry n: a reader that remembers "sent up to seq n" for a unit and asks
for ``seq > n`` can neither skip an entry (lose it) nor see one twice. A global cursor
over ``unit_history.id`` could lose: on PostgreSQL identity values are drawn before
commit, so id 7 may become visible after id 8 was read. The outbox of a platform is
therefore one row per unit (``northbound_cursors``: the last seq that platform has dealt
with), and its backlog is every history entry past it; no write path of the fleet had to
learn about platforms, and a platform added later can be given the whole history.

Tables (migration "northbound", the same DDL on both backends but for ``{id}``):

- ``northbound_platforms``: one row per configured platform: the lease (``owner``,
  ``lease_until_us``, ``epoch``) that makes one fleet instance at a time its sender,
  counters, the last error.
- ``northbound_cursors``: per platform and unit, the last history seq sent, skipped
  (the mapping has no message for it) or dead-lettered.
- ``northbound_dead_letters``: entries the platform refused, with its reason; ``state``
  is ``dead``, ``replay`` (an operator asked for it to be sent again, after a mapping
  fix), ``delivered`` (a replay the platform took) or ``skipped`` (after the fix the
  mapping sends nothing for it).

Every write that records progress is *fenced*: it runs only while this instance still
holds the lease at the epoch it acquired (`LeaseLostError` otherwise), in one transaction
with the cursor move, so an instance that lost its lease cannot move a cursor that the
new owner moves too.

`NorthboundOutbox` is used on the store's own thread (`StoreWorker.call`), like the rest
of the store.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fleet.store import lease
from fleet.store.sql import SqlStore, from_us

NORTHBOUND_MIGRATION = """
CREATE TABLE northbound_platforms (
    platform        TEXT PRIMARY KEY,
    owner           TEXT NOT NULL DEFAULT '',
    lease_until_us  BIGINT NOT NULL DEFAULT 0,
    epoch           BIGINT NOT NULL DEFAULT 0,
    created_us      BIGINT NOT NULL,
    sent            BIGINT NOT NULL DEFAULT 0,
    rejected        BIGINT NOT NULL DEFAULT 0,
    last_sent_us    BIGINT,
    last_error      TEXT NOT NULL DEFAULT '',
    last_error_us   BIGINT
);
CREATE TABLE northbound_cursors (
    platform  TEXT NOT NULL,
    unit_id   TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    PRIMARY KEY (platform, unit_id)
);
CREATE TABLE northbound_dead_letters (
    id           {id},
    platform     TEXT NOT NULL,
    unit_id      TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    message_key  TEXT NOT NULL,
    kind         TEXT NOT NULL,
    status       INTEGER,
    reason       TEXT NOT NULL,
    body         TEXT NOT NULL,
    dead_us      BIGINT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'dead',
    replays      INTEGER NOT NULL DEFAULT 0,
    delivered_us BIGINT,
    UNIQUE (platform, unit_id, seq)
);
CREATE INDEX northbound_dead_letters_state ON northbound_dead_letters (platform, state);
"""

DEAD_STATES = ("dead", "replay", "delivered", "skipped")


# The table whose rows carry each platform's lease (`fleet.store.lease`).
_PLATFORMS = "northbound_platforms"


class LeaseLostError(Exception):
    """This instance no longer holds the platform's lease: another one sends for it now."""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One entry of a unit's history, as the northbound mapping renders it."""

    unit_id: str
    seq: int
    at_us: int
    kind: str
    detail: str  # canonical JSON, as chained


@dataclass(frozen=True, slots=True)
class Lease:
    """The lease this instance holds on a platform: valid until ``until_us``; every fenced
    write checks ``owner`` and ``epoch``."""

    platform: str
    owner: str
    epoch: int
    until_us: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry a platform refused: which, why (its HTTP status and reason), the body
    that was refused, when, and whether it is waiting to be replayed or was delivered."""

    id: int
    platform: str
    unit_id: str
    seq: int
    message_key: str
    kind: str
    status: int | None
    reason: str
    body: str
    dead: dt.datetime
    state: str
    replays: int
    delivered: dt.datetime | None


@dataclass(frozen=True, slots=True)
class PlatformStatus:
    """What the status command, the dashboard and the metrics show of one platform."""

    platform: str
    backlog: int  # history entries not yet dealt with (sent, skipped or dead-lettered)
    oldest_unsent: dt.datetime | None  # the fleet time of the oldest of them
    units_behind: int
    sent: int
    rejected: int
    dead_letters: int  # in state "dead"
    replaying: int  # in state "replay"
    owner: str  # the instance holding the lease ("" = none)
    lease_until: dt.datetime | None
    last_sent: dt.datetime | None
    last_error: str
    last_error_at: dt.datetime | None


class NorthboundOutbox:
    """The northbound tables of one open `SqlStore`; call only on the store's thread."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    # -- set-up and the lease --------------------------------------------------------

    def ensure_platform(self, platform: str, now_us: int, *, from_start: bool) -> bool:
        """Create the platform's row if it has none; True when created.

        A new platform starts at the present (every unit's cursor at its head) unless
        ``from_start``: then it is sent each unit's whole history."""
        s = self._store
        with s._transaction(durable=True):
            found = s._execute(
                "INSERT INTO northbound_platforms (platform, created_us) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING RETURNING platform",
                (platform, now_us),
            ).fetchall()
            if not found:
                return False
            if not from_start:
                s._execute(
                    "INSERT INTO northbound_cursors (platform, unit_id, seq) "
                    "SELECT CAST(? AS TEXT), unit_id, seq FROM unit_history_head",
                    (platform,),
                )
        return True

    def acquire(self, platform: str, owner: str, now_us: int, lease_s: float) -> Lease | None:
        """Take the platform's lease for ``owner`` when nobody holds it or it ran out;
        None when another owner holds it. Each acquisition starts a new epoch."""
        until = now_us + int(lease_s * 1_000_000)
        s = self._store
        with s._transaction():
            epoch = lease.acquire(s, _PLATFORMS, "platform", platform, owner, until, now_us)
        return None if epoch is None else Lease(platform, owner, epoch, until)

    def renew(self, lease: Lease, now_us: int, lease_s: float) -> Lease:
        """Extend ``lease``; raises `LeaseLostError` when it is no longer ours."""
        until = now_us + int(lease_s * 1_000_000)
        s = self._store
        with s._transaction():
            self._fence(lease, "lease_until_us = ?", (until,))
        return dataclasses.replace(lease, until_us=until)

    def release(self, held: Lease) -> None:
        """Give the lease up (a clean stop), so another instance takes over at once."""
        s = self._store
        with s._transaction():
            lease.release(s, _PLATFORMS, "platform", held.platform, held.owner, held.epoch)

    def _fence(self, held: Lease, assignments: str, params: Sequence[object]) -> None:
        key = (held.platform, held.owner, held.epoch)
        if not lease.fence(self._store, _PLATFORMS, "platform", *key, assignments, params):
            raise LeaseLostError(f"{held.platform}: lease lost (another instance sends)")

    # -- reading the backlog ---------------------------------------------------------

    def pending(self, platform: str, limit: int, per_unit: int) -> list[HistoryEntry]:
        """Up to ``limit`` history entries not yet dealt with: the units whose next entry
        is oldest first, each unit's entries in seq order (at most ``per_unit`` a unit)."""
        s = self._store
        heads = s._execute(
            "SELECT h.unit_id, COALESCE(c.seq, 0), x.at_us FROM unit_history_head h "
            "LEFT JOIN northbound_cursors c ON c.platform = ? AND c.unit_id = h.unit_id "
            "JOIN unit_history x ON x.unit_id = h.unit_id AND x.seq = COALESCE(c.seq, 0) + 1 "
            "WHERE h.seq > COALESCE(c.seq, 0) ORDER BY x.at_us, h.unit_id LIMIT ?",
            (platform, limit),
        ).fetchall()
        entries: list[HistoryEntry] = []
        for unit_id, after, _ in heads:
            if len(entries) >= limit:
                break
            rows = s._execute(
                "SELECT unit_id, seq, at_us, kind, detail FROM unit_history "
                "WHERE unit_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (unit_id, int(after), min(per_unit, limit - len(entries))),
            ).fetchall()
            entries += [_entry(r) for r in rows]
        return entries

    def entry(self, unit_id: str, seq: int) -> HistoryEntry | None:
        """The history entry ``seq`` of ``unit_id`` (a dead letter's source), if any."""
        row = self._store._execute(
            "SELECT unit_id, seq, at_us, kind, detail FROM unit_history "
            "WHERE unit_id = ? AND seq = ?",
            (unit_id, seq),
        ).fetchone()
        return None if row is None else _entry(row)

    # -- recording progress (fenced) -------------------------------------------------

    def advance(
        self, lease: Lease, entries: Sequence[HistoryEntry], sent: int, now_us: int
    ) -> None:
        """Record ``entries`` as dealt with (``sent`` of them were delivered, the rest
        skipped by the mapping): each unit's cursor moves to its highest seq among them."""
        s = self._store
        with s._transaction():
            if sent:
                self._fence(lease, "sent = sent + ?, last_sent_us = ?", (sent, now_us))
            else:
                self._fence(lease, "epoch = epoch", ())
            self._move(lease.platform, entries)

    def _move(self, platform: str, entries: Sequence[HistoryEntry]) -> None:
        top: dict[str, int] = {}
        for e in entries:
            top[e.unit_id] = max(top.get(e.unit_id, 0), e.seq)
        self._store._many(
            "INSERT INTO northbound_cursors (platform, unit_id, seq) VALUES (?, ?, ?) "
            "ON CONFLICT (platform, unit_id) DO UPDATE SET seq = excluded.seq "
            "WHERE northbound_cursors.seq < excluded.seq",
            [(platform, u, q) for u, q in sorted(top.items())],
        )

    def dead_letter(
        self,
        lease: Lease,
        entry: HistoryEntry,
        key: str,
        kind: str,
        status: int | None,
        reason: str,
        body: str,
        now_us: int,
    ) -> None:
        """Record that the platform refused ``entry`` (its ``status`` and ``reason``) and
        move past it, in one transaction; a replay refused again updates its row."""
        s = self._store
        with s._transaction(durable=True):
            self._fence(
                lease,
                "rejected = rejected + 1, last_error = ?, last_error_us = ?",
                (f"rejected {entry.unit_id}#{entry.seq}: {reason}"[:500], now_us),
            )
            s._execute(
                "INSERT INTO northbound_dead_letters (platform, unit_id, seq, message_key, "
                "kind, status, reason, body, dead_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (platform, unit_id, seq) DO UPDATE SET state = 'dead', "
                "status = excluded.status, reason = excluded.reason, body = excluded.body, "
                "dead_us = excluded.dead_us",
                (lease.platform, entry.unit_id, entry.seq, key, kind, status, reason, body, now_us),
            )
            self._move(lease.platform, [entry])

    def replayed(self, lease: Lease, letter_id: int, now_us: int, *, sent: bool) -> None:
        """A replayed dead letter was delivered (``sent``), or the mapping now sends
        nothing for its entry (state ``skipped``)."""
        s = self._store
        with s._transaction():
            if sent:
                self._fence(lease, "sent = sent + 1, last_sent_us = ?", (now_us,))
            else:
                self._fence(lease, "epoch = epoch", ())
            s._execute(
                "UPDATE northbound_dead_letters SET state = ?, delivered_us = ? WHERE id = ?",
                ("delivered" if sent else "skipped", now_us, letter_id),
            )

    def note_error(self, platform: str, error: str, now_us: int) -> None:
        """Remember the last failed attempt (not fenced: it only informs)."""
        s = self._store
        with s._transaction():
            s._execute(
                "UPDATE northbound_platforms SET last_error = ?, last_error_us = ? "
                "WHERE platform = ?",
                (error[:500], now_us, platform),
            )

    # -- dead letters ----------------------------------------------------------------

    def dead_letters(self, platform: str | None, state: str | None, limit: int) -> list[DeadLetter]:
        """Dead letters, newest first, of one platform (None: all) in one state (None:
        any)."""
        where, params = ["1 = 1"], []
        if platform is not None:
            where.append("platform = ?")
            params.append(platform)
        if state is not None:
            where.append("state = ?")
            params.append(state)
        rows = self._store._execute(
            "SELECT id, platform, unit_id, seq, message_key, kind, status, reason, body, "
            f"dead_us, state, replays, delivered_us FROM northbound_dead_letters WHERE "
            f"{' AND '.join(where)} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [_dead_letter(r) for r in rows]

    def to_replay(self, platform: str, limit: int) -> list[DeadLetter]:
        """Dead letters of ``platform`` waiting to be replayed, oldest first."""
        rows = self._store._execute(
            "SELECT id, platform, unit_id, seq, message_key, kind, status, reason, body, "
            "dead_us, state, replays, delivered_us FROM northbound_dead_letters "
            "WHERE platform = ? AND state = 'replay' ORDER BY unit_id, seq LIMIT ?",
            (platform, limit),
        ).fetchall()
        return [_dead_letter(r) for r in rows]

    def request_replay(self, platform: str, ids: Sequence[int] | None) -> int:
        """Mark dead letters of ``platform`` (``ids``; None: every one in state ``dead``)
        to be sent again by the instance holding its lease; returns how many."""
        s = self._store
        with s._transaction():
            if ids is None:
                rows = s._execute(
                    "UPDATE northbound_dead_letters SET state = 'replay', replays = replays + 1 "
                    "WHERE platform = ? AND state = 'dead' RETURNING id",
                    (platform,),
                ).fetchall()
            else:
                rows = []
                for letter in ids:
                    rows += s._execute(
                        "UPDATE northbound_dead_letters SET state = 'replay', "
                        "replays = replays + 1 WHERE platform = ? AND id = ? AND state = 'dead' "
                        "RETURNING id",
                        (platform, letter),
                    ).fetchall()
        return len(rows)

    # -- heartbeats ------------------------------------------------------------------

    def unit_statuses(self, after: str, limit: int) -> list[tuple[str, str, int | None, str]]:
        """A page of units for a heartbeat, by unit_id after ``after``: (unit_id, coverage
        status as last recorded, last seen µs or None, agent_id)."""
        rows = self._store._execute(
            "SELECT unit_id, status, last_seen_us, agent_id FROM units WHERE unit_id > ? "
            "ORDER BY unit_id LIMIT ?",
            (after, limit),
        ).fetchall()
        return [
            (str(u), str(st), None if seen is None else int(seen), str(agent))
            for u, st, seen, agent in rows
        ]

    # -- status ----------------------------------------------------------------------

    def status(self, platform: str) -> PlatformStatus:
        """The platform's backlog, oldest unsent entry, counters and lease. A platform
        configured but never started (no row yet) has nothing behind: where it will start
        is decided by its first forwarder (``start``)."""
        s = self._store
        row = s._execute(
            "SELECT owner, lease_until_us, sent, rejected, last_sent_us, last_error, "
            "last_error_us FROM northbound_platforms WHERE platform = ?",
            (platform,),
        ).fetchone()
        if row is None:
            return PlatformStatus(platform, 0, None, 0, 0, 0, 0, 0, "", None, None, "", None)
        behind = s._execute(
            "SELECT COUNT(*), COALESCE(SUM(h.seq - COALESCE(c.seq, 0)), 0), MIN(x.at_us) "
            "FROM unit_history_head h "
            "LEFT JOIN northbound_cursors c ON c.platform = ? AND c.unit_id = h.unit_id "
            "JOIN unit_history x ON x.unit_id = h.unit_id AND x.seq = COALESCE(c.seq, 0) + 1 "
            "WHERE h.seq > COALESCE(c.seq, 0)",
            (platform,),
        ).fetchone()
        counts = dict(
            s._execute(
                "SELECT state, COUNT(*) FROM northbound_dead_letters WHERE platform = ? "
                "GROUP BY state",
                (platform,),
            ).fetchall()
        )
        units, backlog, oldest = behind if behind is not None else (0, 0, None)
        return PlatformStatus(
            platform=platform,
            backlog=int(backlog),
            oldest_unsent=_at(oldest),
            units_behind=int(units),
            sent=int(row[2]),
            rejected=int(row[3]),
            dead_letters=int(counts.get("dead", 0)),
            replaying=int(counts.get("replay", 0)),
            owner=str(row[0]) if int(row[1]) else "",
            lease_until=_at(row[1]) if int(row[1]) else None,
            last_sent=_at(row[4]),
            last_error=str(row[5]),
            last_error_at=_at(row[6]),
        )

    def platforms(self) -> list[str]:
        """Every platform the store has a row for (configured now or before)."""
        rows = self._store._execute(
            "SELECT platform FROM northbound_platforms ORDER BY platform"
        ).fetchall()
        return [str(r[0]) for r in rows]


def _at(us: Any) -> dt.datetime | None:
    return None if us is None else from_us(int(us))


def _entry(row: Sequence[Any]) -> HistoryEntry:
    return HistoryEntry(str(row[0]), int(row[1]), int(row[2]), str(row[3]), str(row[4]))


def _dead_letter(row: Sequence[Any]) -> DeadLetter:
    dead = _at(row[9])
    assert dead is not None
    return DeadLetter(
        id=int(row[0]),
        platform=str(row[1]),
        unit_id=str(row[2]),
        seq=int(row[3]),
        message_key=str(row[4]),
        kind=str(row[5]),
        status=None if row[6] is None else int(row[6]),
        reason=str(row[7]),
        body=str(row[8]),
        dead=dead,
        state=str(row[10]),
        replays=int(row[11]),
        delivered=_at(row[12]),
    )
