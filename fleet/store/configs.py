"""Migration "configs" (issue 20): agents' desired configuration, every version kept.

The same DDL on both backends but for ``{id}``:

- ``config_versions``: every version of every configuration document, never updated or
  deleted. A document is ``agent:ID`` (one agent's) or ``group:NAME`` (every agent in the
  group without a document of its own). ``version`` is one number across all documents,
  so that an agent's Hello.config_version names exactly one text; a rollback is a new
  version carrying an earlier one's text (``rollback_of`` says which).
- ``config_groups``: which group each agent belongs to (at most one).
- ``agent_configs``: per agent, the version last sent on its stream, the one it last
  reported applied, and its last report (applied or not, with the problems).

When an agent reports a version applied, each unit the change touched gets a ``config``
entry in its hash-chained history (`fleet.store.chain`), in the same transaction.

`ConfigStore` is used on the store's own thread (`StoreWorker.call`), like the rest of
the store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleet.configs.document import unit_ids
from fleet.store.base import Store
from fleet.store.sql import SqlStore

CONFIGS_MIGRATION = """
CREATE TABLE config_versions (
    version      {id},
    document_id  TEXT NOT NULL,
    toml         TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    created_us   BIGINT NOT NULL,
    author       TEXT NOT NULL DEFAULT '',
    note         TEXT NOT NULL DEFAULT '',
    rollback_of  BIGINT
);
CREATE INDEX config_versions_document ON config_versions (document_id, version);
CREATE TABLE config_groups (
    agent_id    TEXT PRIMARY KEY,
    group_name  TEXT NOT NULL
);
CREATE TABLE agent_configs (
    agent_id          TEXT PRIMARY KEY,
    sent_version      BIGINT NOT NULL DEFAULT 0,
    sent_us           BIGINT,
    applied_version   BIGINT NOT NULL DEFAULT 0,
    applied_us        BIGINT,
    report_version    BIGINT NOT NULL DEFAULT 0,
    report_applied    INTEGER NOT NULL DEFAULT 0,
    problems          TEXT NOT NULL DEFAULT '[]',
    report_us         BIGINT
);
"""


# The sha256 of a withdrawal: a version of an agent's document saying it no longer holds
# anything (`config unset`), so that the agent's group's document applies again. No text
# hashes to "", and `desired` never returns such a version.
WITHDRAWN = ""


def agent_document(agent_id: str) -> str:
    """The id of ``agent_id``'s own document."""
    return f"agent:{agent_id}"


def group_document(group: str) -> str:
    """The id of group ``group``'s document."""
    return f"group:{group}"


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """One version of a document, as kept."""

    version: int
    document_id: str
    toml: str
    sha256: str
    created_us: int
    author: str
    note: str
    rollback_of: int | None


@dataclass(frozen=True, slots=True)
class AgentConfigState:
    """Desired against applied for one agent: the version it should run (0: none), the
    one it runs by its last report (0: its own file), and what it last said."""

    agent_id: str
    desired_document: str
    desired_version: int
    sent_version: int
    applied_version: int
    report_version: int
    report_applied: bool
    problems: tuple[str, ...]
    report_us: int | None

    @property
    def in_sync(self) -> bool:
        """True when the agent runs what it should."""
        return self.desired_version == self.applied_version


_VERSION_COLUMNS = "version, document_id, toml, sha256, created_us, author, note, rollback_of"


def _version(row: Sequence[Any]) -> ConfigVersion:
    return ConfigVersion(
        int(row[0]),
        str(row[1]),
        str(row[2]),
        str(row[3]),
        int(row[4]),
        str(row[5]),
        str(row[6]),
        None if row[7] is None else int(row[7]),
    )


class ConfigStore:
    """The configuration tables of one open `SqlStore`; call only on the store's thread."""

    def __init__(self, store: Store) -> None:
        """``store``: an open store (both backends are a `SqlStore`)."""
        if not isinstance(store, SqlStore):
            raise TypeError(f"configuration documents need a SQL store, not {type(store)}")
        self._store = store

    def add_version(
        self,
        document_id: str,
        toml: str,
        sha256: str,
        now_us: int,
        *,
        author: str = "",
        note: str = "",
        rollback_of: int | None = None,
        group_agents: Sequence[str] = (),
    ) -> int:
        """Keep a new version of ``document_id`` (and, for a group document, put
        ``group_agents`` in that group); returns its version number."""
        s = self._store
        with s._transaction(durable=True):
            (version,) = s._execute(
                "INSERT INTO config_versions (document_id, toml, sha256, created_us, author, "
                "note, rollback_of) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING version",
                (document_id, toml, sha256, now_us, author, note, rollback_of),
            ).fetchone()
            if group_agents:
                group = document_id.removeprefix("group:")
                s._many(
                    "INSERT INTO config_groups (agent_id, group_name) VALUES (?, ?) "
                    "ON CONFLICT (agent_id) DO UPDATE SET group_name = excluded.group_name",
                    [(a, group) for a in group_agents],
                )
        return int(version)

    def version(self, version: int) -> ConfigVersion | None:
        """Version ``version`` of whichever document, or None."""
        row = self._store._execute(
            f"SELECT {_VERSION_COLUMNS} FROM config_versions WHERE version = ?", (version,)
        ).fetchone()
        return None if row is None else _version(row)

    def history(self, document_id: str) -> list[ConfigVersion]:
        """Every version of ``document_id``, oldest first."""
        rows = self._store._execute(
            f"SELECT {_VERSION_COLUMNS} FROM config_versions WHERE document_id = ? "
            "ORDER BY version",
            (document_id,),
        ).fetchall()
        return [_version(r) for r in rows]

    def latest_version(self) -> int:
        """The highest version of any document (0: none yet): a cheap way to see that
        something changed."""
        row = self._store._execute("SELECT max(version) FROM config_versions").fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def group_of(self, agent_id: str) -> str:
        """The group ``agent_id`` belongs to ("" for none)."""
        row = self._store._execute(
            "SELECT group_name FROM config_groups WHERE agent_id = ?", (agent_id,)
        ).fetchone()
        return "" if row is None else str(row[0])

    def documents_of(self, agent_id: str) -> list[str]:
        """The documents that may configure ``agent_id``: its own, then its group's."""
        documents = [agent_document(agent_id)]
        group = self.group_of(agent_id)
        if group:
            documents.append(group_document(group))
        return documents

    def desired(self, agent_id: str) -> ConfigVersion | None:
        """What ``agent_id`` should run: the newest version of its own document, else of
        its group's, else None (it runs its own file). A document whose newest version is
        a withdrawal (`WITHDRAWN`) counts as absent."""
        for document_id in self.documents_of(agent_id):
            row = self._store._execute(
                f"SELECT {_VERSION_COLUMNS} FROM config_versions WHERE document_id = ? "
                "ORDER BY version DESC LIMIT 1",
                (document_id,),
            ).fetchone()
            if row is not None and str(row[3]) != WITHDRAWN:
                return _version(row)
        return None

    def leave_group(self, group: str, agent_ids: Sequence[str]) -> list[str]:
        """Take ``agent_ids`` out of ``group``; returns those that were in it (sorted)."""
        s = self._store
        with s._transaction(durable=True):
            members = {
                str(r[0])
                for r in s._execute(
                    "SELECT agent_id FROM config_groups WHERE group_name = ?", (group,)
                ).fetchall()
            }
            leaving = sorted(members & set(agent_ids))
            s._many(
                "DELETE FROM config_groups WHERE agent_id = ? AND group_name = ?",
                [(a, group) for a in leaving],
            )
        return leaving

    def mark_sent(self, agent_id: str, version: int, now_us: int) -> None:
        """Note that ``version`` went out on ``agent_id``'s stream."""
        s = self._store
        with s._transaction():
            s._execute(
                "INSERT INTO agent_configs (agent_id, sent_version, sent_us) VALUES (?, ?, ?) "
                "ON CONFLICT (agent_id) DO UPDATE SET sent_version = excluded.sent_version, "
                "sent_us = excluded.sent_us",
                (agent_id, version, now_us),
            )

    def note_running(self, agent_id: str, version: int, now_us: int) -> None:
        """``agent_id``'s Hello says it runs ``version``. Kept only when that is 0 (it
        dropped a kept document it could no longer use: it runs its own file) and differs:
        a version applied comes with its report, which the agent sends again at the start
        of every session, and the report records it with its units' history."""
        if version != 0 or self.applied_version(agent_id) == 0:
            return
        s = self._store
        with s._transaction():
            s._execute(
                "INSERT INTO agent_configs (agent_id, applied_version, applied_us) "
                "VALUES (?, ?, ?) ON CONFLICT (agent_id) DO UPDATE SET "
                "applied_version = excluded.applied_version, applied_us = excluded.applied_us",
                (agent_id, version, now_us),
            )

    def applied_version(self, agent_id: str) -> int:
        """The version ``agent_id`` last reported applied (0: none)."""
        row = self._store._execute(
            "SELECT applied_version FROM agent_configs WHERE agent_id = ?", (agent_id,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def record_report(
        self,
        agent_id: str,
        version: int,
        applied: bool,
        problems: Sequence[str],
        now_us: int,
        history: Callable[[ConfigVersion | None, ConfigVersion], Mapping[str, str]],
    ) -> None:
        """Keep ``agent_id``'s report on ``version``. Applied and new to it: each unit
        ``history(previous, new)`` names (unit id -> added/changed/removed) gets a
        ``config`` entry in its history, in the same transaction."""
        s = self._store
        previous_version = self.applied_version(agent_id)
        entries: Mapping[str, str] = {}
        new = self.version(version) if applied else None
        if new is not None and new.document_id not in self.documents_of(agent_id):
            # Versions are numbered across documents: an agent (a stolen box) naming one
            # of another agent's documents has not applied anything of its own.
            new = None
        if new is not None and version != previous_version:
            previous = self.version(previous_version) if previous_version else None
            entries = self._its_units(agent_id, history(previous, new), previous, new)
        with s._transaction(durable=True):
            s._drop_history()
            s._execute(
                "INSERT INTO agent_configs (agent_id, report_version, report_applied, problems, "
                "report_us) VALUES (?, ?, ?, ?, ?) ON CONFLICT (agent_id) DO UPDATE SET "
                "report_version = excluded.report_version, "
                "report_applied = excluded.report_applied, problems = excluded.problems, "
                "report_us = excluded.report_us",
                (agent_id, version, 1 if applied else 0, json.dumps(list(problems)), now_us),
            )
            if new is not None and version != previous_version:
                s._execute(
                    "UPDATE agent_configs SET applied_version = ?, applied_us = ? "
                    "WHERE agent_id = ?",
                    (version, now_us, agent_id),
                )
                for unit_id, change in sorted(entries.items()):
                    detail = {
                        "agent_id": agent_id,
                        "document_id": new.document_id,
                        "version": version,
                        "previous_version": previous_version,
                        "change": change,
                        "sha256": new.sha256,
                    }
                    s._queue_history(unit_id, now_us, "config", detail)
                s._flush_history()

    def _its_units(
        self,
        agent_id: str,
        entries: Mapping[str, str],
        previous: ConfigVersion | None,
        new: ConfigVersion,
    ) -> dict[str, str]:
        """``entries`` (unit -> change, as the agent says) without the units that are not
        ``agent_id``'s to report: a unit another agent runs, or one neither this agent
        runs nor the documents name. The history chains of other units are no agent's
        to write into (tests/security/test_config_report_abuse.py)."""
        run = self._store._execute("SELECT unit_id FROM units WHERE agent_id = ?", (agent_id,))
        mine = {str(row[0]) for row in run.fetchall()}
        named = unit_ids(new.toml) | (unit_ids(previous.toml) if previous is not None else set())
        # Only the few named units this agent does not run are looked up (never one query
        # per id an agent sent: a report may name any number).
        asked = sorted(u for u in entries if u not in mine and u in named)
        others: set[str] = set()
        if asked:
            marks = ", ".join("?" * len(asked))
            found = self._store._execute(
                f"SELECT unit_id FROM units WHERE unit_id IN ({marks}) AND agent_id <> ''",
                asked,
            )
            others = {str(row[0]) for row in found.fetchall()}
        return {
            unit_id: change
            for unit_id, change in entries.items()
            if unit_id in mine or (unit_id in named and unit_id not in others)
        }

    def agent_ids(self) -> list[str]:
        """Every agent the fleet has heard from or holds a configuration for."""
        rows = self._store._execute(
            "SELECT agent_id FROM agents UNION SELECT agent_id FROM config_groups "
            "UNION SELECT substr(document_id, 7) FROM config_versions "
            "WHERE document_id LIKE 'agent:%' ORDER BY 1"
        ).fetchall()
        return [str(r[0]) for r in rows]

    def states(self, agent_ids: Sequence[str] | None = None) -> list[AgentConfigState]:
        """Desired against applied for ``agent_ids`` (None: every agent)."""
        wanted = self.agent_ids() if agent_ids is None else list(agent_ids)
        out: list[AgentConfigState] = []
        for agent_id in wanted:
            desired = self.desired(agent_id)
            row = self._store._execute(
                "SELECT sent_version, applied_version, report_version, report_applied, "
                "problems, report_us FROM agent_configs WHERE agent_id = ?",
                (agent_id,),
            ).fetchone()
            sent, applied, reported, ok, problems, report_us = (
                row if row is not None else (0, 0, 0, 0, "[]", None)
            )
            out.append(
                AgentConfigState(
                    agent_id=agent_id,
                    desired_document=desired.document_id if desired is not None else "",
                    desired_version=desired.version if desired is not None else 0,
                    sent_version=int(sent),
                    applied_version=int(applied),
                    report_version=int(reported),
                    report_applied=bool(ok),
                    problems=tuple(json.loads(problems)),
                    report_us=None if report_us is None else int(report_us),
                )
            )
        return out
