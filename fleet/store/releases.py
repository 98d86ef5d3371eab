"""Migration "releases" (issue 20): signed releases, rollouts and what agents report.

The same DDL on both backends but for ``{id}``:

- ``releases``: each release added (`liftwatch-fleet releases add`): its version, the
  signed manifest and signature exactly as the agents get them, and the bundle directory
  the fleet serves its files from (FetchRelease).
- ``rollouts``: one row per rollout: its release, plan (JSON), state, the wave under way
  and why it halted or was aborted.
- ``rollout_members``: per rollout and agent, its wave and state in the gate
  (`fleet.releases.rollout.Member`).
- ``agent_releases``: the release each agent should be offered now (a rollout's, or the
  previous one on a roll-back); the gateway offers it on the agent's stream.
- ``update_reports``: each agent's latest `UpdateReport` per release, with the detector
  exceptions it counted (the gate's second signal, besides the link errors of its units).

`ReleaseStore` is used on the store's own thread (`StoreWorker.call`), like the rest of
the store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from fleet.releases.rollout import AgentView, Member, MemberState, Plan, Rollout, RolloutState
from fleet.store.sql import SqlStore
from protos.liftwatch.v1 import records_pb2

RELEASES_MIGRATION = """
CREATE TABLE releases (
    release_id  TEXT PRIMARY KEY,
    version     TEXT NOT NULL,
    manifest    TEXT NOT NULL,
    signature   TEXT NOT NULL,
    bundle      TEXT NOT NULL,
    added_us    BIGINT NOT NULL
);
CREATE TABLE rollouts (
    rollout_id  {id},
    release_id  TEXT NOT NULL,
    version     TEXT NOT NULL,
    plan        TEXT NOT NULL,
    state       TEXT NOT NULL,
    wave        INTEGER NOT NULL DEFAULT 0,
    reason      TEXT NOT NULL DEFAULT '',
    created_us  BIGINT NOT NULL,
    updated_us  BIGINT NOT NULL
);
CREATE TABLE rollout_members (
    rollout_id        BIGINT NOT NULL,
    agent_id          TEXT NOT NULL,
    wave              INTEGER NOT NULL,
    previous_version  TEXT NOT NULL,
    state             TEXT NOT NULL,
    since_us          BIGINT NOT NULL,
    link_errors       BIGINT NOT NULL DEFAULT 0,
    detector_errors   BIGINT NOT NULL DEFAULT 0,
    rate_before       REAL NOT NULL DEFAULT 0,
    detail            TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (rollout_id, agent_id)
);
CREATE TABLE agent_releases (
    agent_id    TEXT PRIMARY KEY,
    release_id  TEXT NOT NULL,
    since_us    BIGINT NOT NULL
);
CREATE TABLE update_reports (
    agent_id         TEXT NOT NULL,
    release_id       TEXT NOT NULL,
    state            TEXT NOT NULL,
    detail           TEXT NOT NULL DEFAULT '',
    detector_errors  BIGINT NOT NULL DEFAULT 0,
    at_us            BIGINT NOT NULL,
    PRIMARY KEY (agent_id, release_id)
);
"""

_US = 1_000_000


@dataclass(frozen=True, slots=True)
class Release:
    """A release as added: what agents are offered, and where its files are."""

    release_id: str
    version: str
    manifest: bytes
    signature: bytes
    bundle: str
    added_us: int


class ReleaseStore:
    """The release tables of one open `SqlStore`; call only on the store's thread."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    # -- releases ------------------------------------------------------------------------

    def add_release(self, release: Release) -> bool:
        """Store ``release``; False when its id is taken (a release is never replaced)."""
        s = self._store
        with s._transaction(durable=True):
            found = s._execute(
                "INSERT INTO releases (release_id, version, manifest, signature, bundle, "
                "added_us) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING release_id",
                (
                    release.release_id,
                    release.version,
                    release.manifest.decode(),
                    release.signature.hex(),
                    release.bundle,
                    release.added_us,
                ),
            ).fetchall()
        return bool(found)

    def releases(self) -> list[Release]:
        """Every release, newest first."""
        rows = self._store._execute(
            "SELECT release_id, version, manifest, signature, bundle, added_us FROM releases "
            "ORDER BY added_us DESC, release_id"
        ).fetchall()
        return [_release(r) for r in rows]

    def release(self, release_id: str) -> Release | None:
        """The release ``release_id``, or None."""
        return next((r for r in self.releases() if r.release_id == release_id), None)

    def release_of_version(self, version: str) -> Release | None:
        """The newest release of ``version`` (a roll-back's target), or None."""
        return next((r for r in self.releases() if r.version == version), None)

    # -- rollouts ------------------------------------------------------------------------

    def create_rollout(self, rollout: Rollout, members: Sequence[Member], now_us: int) -> int:
        """Store a new rollout with its members; return its id."""
        s = self._store
        with s._transaction(durable=True):
            (rollout_id,) = s._execute(
                "INSERT INTO rollouts (release_id, version, plan, state, wave, reason, "
                "created_us, updated_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING rollout_id",
                (
                    rollout.release_id,
                    rollout.version,
                    json.dumps(asdict(rollout.plan)),
                    rollout.state.value,
                    rollout.wave,
                    rollout.reason,
                    now_us,
                    now_us,
                ),
            ).fetchone()
            self._put_members(int(rollout_id), members)
        return int(rollout_id)

    def save(self, rollout: Rollout, members: Sequence[Member], now_us: int) -> None:
        """Store the rollout's new state and its members' (after `advance`)."""
        s = self._store
        with s._transaction(durable=True):
            s._execute(
                "UPDATE rollouts SET state = ?, wave = ?, reason = ?, updated_us = ? "
                "WHERE rollout_id = ?",
                (rollout.state.value, rollout.wave, rollout.reason, now_us, rollout.rollout_id),
            )
            s._execute("DELETE FROM rollout_members WHERE rollout_id = ?", (rollout.rollout_id,))
            self._put_members(rollout.rollout_id, members)

    def _put_members(self, rollout_id: int, members: Sequence[Member]) -> None:
        self._store._many(
            "INSERT INTO rollout_members (rollout_id, agent_id, wave, previous_version, state, "
            "since_us, link_errors, detector_errors, rate_before, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    rollout_id,
                    m.agent_id,
                    m.wave,
                    m.previous_version,
                    m.state.value,
                    int(m.since * _US),
                    m.link_errors,
                    m.detector_errors,
                    m.rate_before,
                    m.detail,
                )
                for m in members
            ],
        )

    def rollouts(self, *, active_only: bool = False) -> list[Rollout]:
        """Rollouts, newest first (only running and paused ones with ``active_only``)."""
        where = " WHERE state IN ('running', 'paused')" if active_only else ""
        rows = self._store._execute(
            "SELECT rollout_id, release_id, version, plan, state, wave, reason FROM rollouts"
            + where
            + " ORDER BY rollout_id DESC"
        ).fetchall()
        return [
            Rollout(
                int(r[0]),
                str(r[1]),
                str(r[2]),
                _plan(str(r[3])),
                RolloutState(str(r[4])),
                int(r[5]),
                str(r[6]),
            )
            for r in rows
        ]

    def rollout(self, rollout_id: int) -> Rollout | None:
        """The rollout ``rollout_id``, or None."""
        return next((r for r in self.rollouts() if r.rollout_id == rollout_id), None)

    def members(self, rollout_id: int) -> list[Member]:
        """The rollout's members in wave order."""
        rows = self._store._execute(
            "SELECT agent_id, wave, previous_version, state, since_us, link_errors, "
            "detector_errors, rate_before, detail FROM rollout_members WHERE rollout_id = ? "
            "ORDER BY wave, agent_id",
            (rollout_id,),
        ).fetchall()
        return [
            Member(
                str(r[0]),
                int(r[1]),
                str(r[2]),
                MemberState(str(r[3])),
                int(r[4]) / _US,
                int(r[5]),
                int(r[6]),
                float(r[7]),
                str(r[8]),
            )
            for r in rows
        ]

    def set_state(self, rollout_id: int, state: RolloutState, reason: str, now_us: int) -> None:
        """Pause, resume or abort (the caller checked the transition)."""
        s = self._store
        with s._transaction(durable=True):
            s._execute(
                "UPDATE rollouts SET state = ?, reason = ?, updated_us = ? WHERE rollout_id = ?",
                (state.value, reason, now_us, rollout_id),
            )

    def agents(self) -> list[tuple[str, str]]:
        """Every agent the fleet has heard from: (agent id, version of its latest Hello)."""
        rows = self._store._execute(
            "SELECT agent_id, agent_version FROM agents ORDER BY agent_id"
        ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    # -- what agents are offered, and what they say -----------------------------------

    def offer(self, agent_ids: Sequence[tuple[str, str]], now_us: int) -> None:
        """From now on offer each agent (agent id, release id) that release."""
        s = self._store
        with s._transaction(durable=True):
            s._many(
                "INSERT INTO agent_releases (agent_id, release_id, since_us) VALUES (?, ?, ?) "
                "ON CONFLICT (agent_id) DO UPDATE SET release_id = excluded.release_id, "
                "since_us = excluded.since_us",
                [(a, r, now_us) for a, r in agent_ids],
            )

    def withdraw(self, agent_ids: Sequence[str], release_id: str) -> None:
        """Stop offering ``release_id`` to these agents (an aborted rollout)."""
        s = self._store
        with s._transaction(durable=True):
            s._many(
                "DELETE FROM agent_releases WHERE agent_id = ? AND release_id = ?",
                [(a, release_id) for a in agent_ids],
            )

    def offered(self, agent_id: str) -> Release | None:
        """The release the agent should be offered now, or None."""
        row = self._store._execute(
            "SELECT r.release_id, r.version, r.manifest, r.signature, r.bundle, r.added_us "
            "FROM agent_releases a JOIN releases r ON r.release_id = a.release_id "
            "WHERE a.agent_id = ?",
            (agent_id,),
        ).fetchone()
        return _release(row) if row else None

    def record_report(
        self,
        agent_id: str,
        release_id: str,
        state: str,
        detail: str,
        detector_errors: int,
        now_us: int,
    ) -> None:
        """Keep the agent's latest report about ``release_id`` (a final one, rolled_back,
        failed or refused, is replaced only by another final one)."""
        s = self._store
        with s._transaction():
            s._execute(
                "INSERT INTO update_reports (agent_id, release_id, state, detail, "
                "detector_errors, at_us) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (agent_id, release_id) DO UPDATE SET state = excluded.state, "
                "detail = excluded.detail, detector_errors = excluded.detector_errors, "
                "at_us = excluded.at_us "
                # A box's last word on a release (it switched back, failed, refused) is not
                # overwritten by a later progress report, which the gate would then miss.
                "WHERE update_reports.state NOT IN ('rolled_back', 'failed', 'refused') "
                "OR excluded.state IN ('rolled_back', 'failed', 'refused')",
                (agent_id, release_id, state, detail, detector_errors, now_us),
            )

    def views(
        self, release_id: str, agent_ids: Sequence[str], now_us: int, connected_s: float
    ) -> dict[str, AgentView]:
        """What the fleet sees of each agent (for `fleet.releases.rollout.advance`): the
        version of its latest Hello, whether it was seen within ``connected_s``, the link
        errors of its units' newest LinkStatus records, and its report on the release."""
        s = self._store
        out: dict[str, AgentView] = {}
        for agent_id in agent_ids:
            row = s._execute(
                "SELECT agent_version, last_seen_us FROM agents WHERE agent_id = ?", (agent_id,)
            ).fetchone()
            # An agent never heard from has no version and is not connected; its reports
            # (if any) still count.
            version, seen = (str(row[0]), row[1]) if row is not None else ("", None)
            link_errors = 0
            units = s._execute(
                "SELECT unit_id FROM units WHERE agent_id = ?", (agent_id,)
            ).fetchall()
            for (unit_id,) in units:
                newest = s.health_records(str(unit_id), "link_status", 1)
                for _, payload in newest:
                    link = records_pb2.Record.FromString(payload).link_status
                    link_errors += link.timeouts + link.crc_errors + link.exception_responses
            report = s._execute(
                "SELECT state, detail, detector_errors FROM update_reports "
                "WHERE agent_id = ? AND release_id = ?",
                (agent_id, release_id),
            ).fetchone()
            # The newest report of any release (the "health" one sent at each connection
            # included): the count since the agent's process started.
            detector = s._execute(
                "SELECT detector_errors FROM update_reports WHERE agent_id = ? "
                "ORDER BY at_us DESC LIMIT 1",
                (agent_id,),
            ).fetchone()
            out[agent_id] = AgentView(
                version=version,
                connected=seen is not None and now_us - int(seen) <= connected_s * _US,
                link_errors=link_errors,
                detector_errors=int(detector[0] or 0) if detector else 0,
                report=str(report[0]) if report else "",
                report_detail=str(report[1]) if report else "",
            )
        return out


def _release(row: Sequence[object]) -> Release:
    return Release(
        str(row[0]),
        str(row[1]),
        str(row[2]).encode(),
        bytes.fromhex(str(row[3])),
        str(row[4]),
        int(str(row[5])),
    )


def _plan(text: str) -> Plan:
    raw = json.loads(text)
    raw["waves"] = tuple(raw["waves"])
    return Plan(**raw)
