"""Northbound forwarding (issue 21) by real ``serve`` processes, killed mid-backlog.

The store holds a backlog of events when ``python -m fleet serve`` starts; its forwarder
sends them to the reference platform (slowed down, so the backlog lasts), and the process
is killed with SIGKILL part-way: no clean stop, its lease left in the store. A second
``serve`` on the same store takes the platform over once that lease has run out and sends
the rest: every event arrives, in order per unit; the one message whose answer the dead
process may have had but not recorded can arrive a second time, with the same key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
from pathlib import Path

import pytest

from fleet.northbound.mapping import load_mapping, resolve
from fleet.store.base import ControllerIdentity, UnitClaim
from fleet.store.open import open_store
from hil_tests.northbound_platform import ReferencePlatform, running_platform
from hil_tests.processes import start
from protos.liftwatch.v1 import records_pb2
from tests.support import eventually

pytestmark = pytest.mark.e2e

UNITS = ("U1", "U2", "U3", "U4")
EVENTS = 120
T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)


def _backlog(db: Path) -> dict[str, list[int]]:
    """Commit EVENTS events into a fresh SQLite store; each unit's event history seqs."""
    return _backlog_at(str(db))


def _backlog_at(target: str) -> dict[str, list[int]]:
    """Commit EVENTS events into the fresh store ``target``; each unit's event seqs."""
    store = open_store(target)
    try:
        claims = [UnitClaim(u, ControllerIdentity(model="RC-3000")) for u in UNITS]
        store.register_hello("a1", "0.1.0", claims, T0)
        records = []
        for n in range(1, EVENTS + 1):
            message = records_pb2.Record(seq=n, unit_id=UNITS[n % len(UNITS)])
            message.time.FromDatetime(T0 + dt.timedelta(seconds=n))
            message.event.CopyFrom(
                records_pb2.Event(
                    event_id=f"ev-{n}",
                    type=records_pb2.EVENT_TYPE_DOOR_CLOSE_FAILURE,
                    phase=records_pb2.PHASE_RAISED,
                    floor=2,
                    reason="test",
                    gb_code=2,
                )
            )
            records.append(message)
        store.commit_batch("a1", records, T0)
        rows = store._execute(
            "SELECT unit_id, seq FROM unit_history WHERE kind = 'event' ORDER BY unit_id, seq"
        ).fetchall()
    finally:
        store.close()
    found: dict[str, list[int]] = {}
    for unit, seq in rows:
        found.setdefault(str(unit), []).append(int(seq))
    return found


def _serve_args(tmp_path: Path, store: str, platform_url: str) -> list[str]:
    """``serve`` arguments for a fleet with ``store`` (a [store] line) forwarding to the
    platform at ``platform_url``, quick to retry and to take over (a 6 s lease: room
    for a loaded machine)."""
    (tmp_path / "fleet.toml").write_text(
        '[server]\nlisten = "127.0.0.1:0"\n[http]\nlisten = ""\n[query]\nlisten = ""\n'
        f"[store]\n{store}\n"
        "[northbound.platform.region]\n"
        f'mapping = "gbt24476"\nurl = "{platform_url}"\nstart = "beginning"\n'
        "poll_s = 0.05\nretry_initial_s = 0.1\nretry_max_s = 0.5\n"
        "lease_s = 6\ntimeout_s = 2\n"
    )
    return ["serve", "--config", str(tmp_path / "fleet.toml")]


def _delivered(platform: ReferencePlatform) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for got in platform.log.snapshot():
        if got.path == "/events":
            _, unit, seq = got.key.rsplit(":", 2)
            found.setdefault(unit, []).append(int(seq))
    return found


def test_a_killed_serve_loses_nothing_and_the_next_one_takes_over(tmp_path: Path) -> None:
    mapping = load_mapping(resolve("gbt24476", Path()))
    by_name = mapping.json_schema()
    schemas = {m.path: by_name[m.name] for m in mapping.messages.values()}
    db = tmp_path / "fleet.db"
    want = _backlog(db)

    async def scenario() -> None:
        with running_platform(schemas, key_field=mapping.key_field) as platform:
            platform.delay_s = 0.05  # about 20 messages a second: the backlog lasts
            args = _serve_args(tmp_path, f'path = "{db}"', platform.url)
            first = await start("fleet-1", "fleet", args, tmp_path)
            try:
                await eventually(
                    lambda: sum(map(len, _delivered(platform).values())),
                    lambda n: n >= 20,
                    "a part of the backlog sent",
                    watching=[first],
                )
                first.process.send_signal(signal.SIGKILL)
                await first.process.wait()
            finally:
                await first.stop()
            sent_before = sum(map(len, _delivered(platform).values()))
            assert sent_before < EVENTS, "the backlog was drained before the kill"
            platform.delay_s = 0.0
            second = await start("fleet-2", "fleet", args, tmp_path)
            try:
                await eventually(
                    lambda: _delivered(platform),
                    lambda d: d == want,
                    "the rest sent by the second serve",
                    watching=[second],
                )
            finally:
                await second.stop()
            # At most the one message in flight at the kill came twice, with its key.
            assert len(platform.log.duplicates) <= 1, platform.log.duplicates
            assert platform.log.invalid == []

    asyncio.run(scenario())


def test_two_serves_on_one_postgresql_send_each_message_once(tmp_path: Path) -> None:
    """Two ``serve`` processes on one PostgreSQL database, both configured for the same
    platform: one holds the lease and sends, the other never does while it lives; the
    sender is killed with SIGKILL and the other takes over. Every event arrives, in order
    per unit; no message was sent by both (at most the one in flight at the kill twice)."""
    from tests.fleet.pgcluster import ClusterUnavailableError, require_cluster_policy
    from tests.fleet.pgcluster import throwaway_cluster as cluster_of

    try:
        with cluster_of() as cluster:
            _two_serves(cluster.create_database("northbound_two"), tmp_path)
    except ClusterUnavailableError as exc:
        require_cluster_policy(str(exc))


def _two_serves(url: str, tmp_path: Path) -> None:
    from fleet.store.northbound import NorthboundOutbox
    from fleet.store.sql import SqlStore

    mapping = load_mapping(resolve("gbt24476", Path()))
    by_name = mapping.json_schema()
    schemas = {m.path: by_name[m.name] for m in mapping.messages.values()}
    want = _backlog_at(url)

    def owner() -> str:
        store = open_store(url)
        try:
            assert isinstance(store, SqlStore)
            return NorthboundOutbox(store).status("region").owner
        finally:
            store.close()

    async def scenario() -> None:
        with running_platform(schemas, key_field=mapping.key_field) as platform:
            platform.delay_s = 0.05
            args = _serve_args(tmp_path, f'url = "{url}"', platform.url)
            one = await start("fleet-a", "fleet", args, tmp_path)
            two = await start("fleet-b", "fleet", args, tmp_path)
            try:
                await eventually(
                    lambda: sum(map(len, _delivered(platform).values())),
                    lambda n: n >= 20,
                    "a part of the backlog sent",
                    watching=[one, two],
                )
                sender = await asyncio.to_thread(owner)
                pids = {str(one.process.pid): one, str(two.process.pid): two}
                (killed,) = [s for pid, s in pids.items() if f":{pid}:" in sender]
                (other,) = [s for s in (one, two) if s is not killed]
                killed.process.send_signal(signal.SIGKILL)
                await killed.process.wait()
                sent_before = sum(map(len, _delivered(platform).values()))
                assert sent_before < EVENTS, "the backlog was drained before the kill"
                platform.delay_s = 0.0
                await eventually(
                    lambda: _delivered(platform),
                    lambda d: d == want,
                    "the rest sent by the other serve",
                    watching=[other],
                )
                taken = await asyncio.to_thread(owner)
                assert f":{other.process.pid}:" in taken
            finally:
                await one.stop()
                await two.stop()
            assert len(platform.log.duplicates) <= 1, platform.log.duplicates
            assert platform.log.invalid == []

    asyncio.run(scenario())
