"""Northbound forwarding (issue 21) against the reference platform of hil_tests: a real
HTTP server that validates every message against the JSON Schema derived from the
mapping, on real stores (SQLite and PostgreSQL).

Time: the forwarder's back-off and poll waits run on a virtual clock (`VirtualTime`):
"ten minutes down" is ten minutes of the forwarder's clock, with real HTTP attempts in
between, so the test takes seconds. Nothing here sleeps to hope a race away.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from fleet.clock import utc_now
from fleet.config import ConfigError, FleetConfig, parse_config
from fleet.northbound.config import NorthboundConfig, PlatformConfig
from fleet.northbound.forwarder import Forwarder, NorthboundMetrics
from fleet.northbound.mapping import load_mapping, resolve
from fleet.store.base import ControllerIdentity, UnitClaim
from fleet.store.northbound import NorthboundOutbox
from fleet.store.open import open_store
from fleet.store.sql import SqlStore
from fleet.store.worker import StoreWorker
from hil_tests.northbound_platform import Auth, ReferencePlatform, running_platform, validate
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import T0, record
from tests.support import documented_defaults, eventually

TYPES = (
    records_pb2.EVENT_TYPE_ENTRAPMENT,
    records_pb2.EVENT_TYPE_DOOR_CLOSE_FAILURE,
    records_pb2.EVENT_TYPE_OVERTRAVEL_TOP,
    records_pb2.EVENT_TYPE_SAFETY_CIRCUIT_OPEN,
)
UNITS = ("U1", "U2", "U3")


class VirtualTime:
    """The forwarder's clock and sleep: a wait moves the clock on at once (after letting
    the event loop run), so back-offs of minutes take no real time."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start
        self.waits: list[float] = []

    def clock(self) -> dt.datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += dt.timedelta(seconds=seconds)
        await asyncio.sleep(0.002)


def platform_config(
    url: str, mapping: str = "gbt24476", base: Path = Path(), **keys: Any
) -> PlatformConfig:
    """A platform as the config loader builds it (mapping loaded)."""
    values: dict[str, Any] = {"retry_initial_s": 1.0, "retry_max_s": 300.0, "rate_per_s": 0.0}
    values.update(keys)
    platform = PlatformConfig(name="region", mapping=mapping, url=url, **values)
    return dataclasses.replace(platform, loaded=load_mapping(resolve(mapping, base)))


def schemas(mapping: str = "gbt24476") -> dict[str, Mapping[str, Any]]:
    """The reference platform's schemas: by message path, from the mapping."""
    loaded = load_mapping(resolve(mapping, Path()))
    by_name = loaded.json_schema()
    return {m.path: by_name[m.name] for m in loaded.messages.values()}


class Fleet:
    """A store with a1 watching UNITS, and a way to commit events into it."""

    def __init__(self, worker: StoreWorker) -> None:
        self.worker = worker
        self.seq = 0

    async def hello(self) -> None:
        claims = [UnitClaim(u, ControllerIdentity(model="RC-3000")) for u in UNITS]
        await self.worker.register_hello("a1", "0.1.0", claims, T0)

    async def events(self, count: int) -> None:
        """Commit ``count`` RAISED events, round-robin over the units and types."""
        records = []
        for _ in range(count):
            self.seq += 1
            n = self.seq
            records.append(
                record(
                    n,
                    UNITS[n % len(UNITS)],
                    time=T0 + dt.timedelta(seconds=n),
                    event=TYPES[n % len(TYPES)],
                    event_id=f"ev-{n}",
                )
            )
        await self.worker.commit_batch("a1", records, T0 + dt.timedelta(seconds=self.seq))

    async def outbox(self, fn: Callable[[NorthboundOutbox], Any]) -> Any:
        def run(store: Any) -> Any:
            assert isinstance(store, SqlStore)
            return fn(NorthboundOutbox(store))

        return await self.worker.call(run)

    async def history_events(self) -> dict[str, list[int]]:
        """Each unit's ``event`` history seqs, in order: what must reach the platform."""

        def read(store: Any) -> dict[str, list[int]]:
            rows = store._execute(
                "SELECT unit_id, seq FROM unit_history WHERE kind = 'event' ORDER BY unit_id, seq"
            ).fetchall()
            found: dict[str, list[int]] = {}
            for unit, seq in rows:
                found.setdefault(str(unit), []).append(int(seq))
            return found

        return dict(await self.worker.call(read))


def serving_config(platform_url: str, tmp_path: Path) -> FleetConfig:
    """A fleet config (SQLite in ``tmp_path``) forwarding to the platform at
    ``platform_url`` as "gbt" with the GB/T mapping, from the start, polling often."""
    platform = {"mapping": "gbt24476", "url": platform_url, "start": "beginning", "poll_s": 0.05}
    data = {
        "store": {"path": str(tmp_path / "fleet.db")},
        "northbound": {"platform": {"gbt": platform}},
    }
    return parse_config(data, tmp_path, source="test")


def delivered(platform: ReferencePlatform, path: str = "/events") -> dict[str, list[int]]:
    """Each unit's history seqs as the platform took them, in arrival order."""
    found: dict[str, list[int]] = {}
    for got in platform.log.snapshot():
        if got.path == path:
            _, unit, seq = got.key.rsplit(":", 2)
            found.setdefault(unit, []).append(int(seq))
    return found


def in_order(per_unit: Mapping[str, Sequence[int]]) -> bool:
    return all(list(seqs) == sorted(seqs) for seqs in per_unit.values())


@pytest.fixture
def target(store_target: str) -> str:
    return store_target


def run(scenario: Callable[[], Any]) -> Any:
    return asyncio.run(scenario())


async def _start(
    target: str, platform: PlatformConfig, time: VirtualTime | None, **kw: Any
) -> tuple[Fleet, Forwarder, asyncio.Task[None]]:
    """A store, and a forwarder on it running on ``time`` (None: the real clock)."""
    worker = await StoreWorker.open(lambda: open_store(target))
    fleet = Fleet(worker)
    await fleet.hello()
    metrics = NorthboundMetrics(CollectorRegistry())
    if time is not None:
        kw.update(sleep=time.sleep)
    clock = utc_now if time is None else time.clock
    forwarder = Forwarder(worker, platform, clock, metrics, **kw)
    task = asyncio.create_task(forwarder.run())
    return fleet, forwarder, task


async def _stop(fleet: Fleet, task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fleet.worker.close()


def test_a_ten_minute_outage_is_retried_with_back_off_then_the_backlog_drains(target: str) -> None:
    """Down for ten minutes (of the forwarder's clock) while records keep coming: the
    backlog and its age grow, retries back off up to retry_max_s, and once the platform is
    back everything arrives, once each, in order per unit, every message valid."""

    async def scenario() -> None:
        time = VirtualTime(T0)
        with running_platform(schemas(), key_field="messageId") as platform:
            config = platform_config(platform.url, start="beginning")
            fleet, forwarder, task = await _start(target, config, time)
            await fleet.events(12)
            await eventually(lambda: sum(map(len, delivered(platform).values())), lambda n: n == 12)
            platform.down()
            down_at = time.now
            await fleet.events(30)
            await eventually(
                lambda: time.now - down_at, lambda d: d >= dt.timedelta(minutes=10), "10 minutes"
            )
            status = await fleet.outbox(lambda o: o.status("region"))
            assert status.backlog >= 30
            retries = forwarder._metrics.retries.labels(platform="region")._value.get()
            # 1 + 2 + 4 + ... + 256 + 300 s: about ten tries in ten minutes, not thousands.
            assert 5 <= retries <= 15, retries
            platform.up()
            want = await fleet.history_events()
            await eventually(
                lambda: delivered(platform), lambda d: d == want, "the backlog drained"
            )
            await eventually(
                lambda: fleet.outbox(lambda o: o.status("region")), lambda s: s.backlog == 0
            )
            await _stop(fleet, task)
        assert platform.log.duplicates == []
        assert platform.log.invalid == []
        assert in_order(delivered(platform))

    run(scenario)


def test_rejections_go_to_dead_letters_and_are_replayed_after_a_mapping_fix(
    target: str, tmp_path: Path
) -> None:
    """A mapping that writes a field the platform does not take: every event is refused
    (422, with the schema problem as the reason) into the dead letters, the rest moves on;
    after the fix a replay delivers them."""
    broken = tmp_path / "broken.toml"
    text = resolve("gbt24476", Path()).read_text()
    event_reason = 'reason = "detail.reason"\n\n# Clause 11 alarms'
    assert event_reason in text
    broken.write_text(
        text.replace(event_reason, 'reasonText = "detail.reason"\n\n# Clause 11 alarms')
    )

    async def scenario() -> None:
        time = VirtualTime(T0)
        with running_platform(schemas(), key_field="messageId") as platform:
            config = platform_config(platform.url, str(broken), start="beginning")
            fleet, _, task = await _start(target, config, time)
            await fleet.events(8)
            letters = await eventually(
                lambda: fleet.outbox(lambda o: o.dead_letters("region", "dead", 100)),
                lambda found: len(found) == 8,
                "8 dead letters",
            )
            assert all(d.status == 422 and "reasonText: not allowed" in d.reason for d in letters)
            assert all('"reasonText"' in d.body for d in letters)
            # Not held back: the register and status messages went through.
            assert delivered(platform, "/events") == {}
            await eventually(
                lambda: fleet.outbox(lambda o: o.status("region")), lambda s: s.backlog == 0
            )
            await _stop(fleet, task)
            # The mapping is fixed; the operator replays the dead letters.
            fixed = platform_config(platform.url, "gbt24476")
            fleet, _, task = await _start(target, fixed, time)
            assert await fleet.outbox(lambda o: o.request_replay("region", None)) == 8
            want = await fleet.history_events()
            await eventually(lambda: delivered(platform), lambda d: d == want, "replayed")
            await eventually(
                lambda: fleet.outbox(lambda o: o.dead_letters("region", None, 100)),
                lambda left: {d.state for d in left} == {"delivered"},
                "every dead letter delivered",
            )
            await _stop(fleet, task)
        assert len(platform.log.invalid) == 8  # the broken sends, and nothing else
        assert platform.log.duplicates == []

    run(scenario)


def test_a_restart_mid_backlog_loses_nothing(target: str) -> None:
    """The fleet stops (its task cancelled mid-backlog, the store closed) and starts again
    on the same store: everything arrives, in order per unit. A message whose answer was
    in flight at the stop may arrive a second time, with the same idempotency key."""

    async def scenario() -> None:
        time = VirtualTime(T0)
        with running_platform(schemas(), key_field="messageId") as platform:
            config = platform_config(platform.url, start="beginning")
            platform.delay_s = 0.02
            fleet, _, task = await _start(target, config, time)
            await fleet.events(60)
            await eventually(lambda: sum(map(len, delivered(platform).values())), lambda n: n >= 10)
            await _stop(fleet, task)
            got_before = sum(map(len, delivered(platform).values()))
            assert got_before < 60, "the backlog should not be drained yet"
            platform.delay_s = 0
            fleet, _, task = await _start(target, config, time)
            want = await fleet.history_events()
            await eventually(
                lambda: delivered(platform), lambda d: d == want, "the backlog drained"
            )
            await _stop(fleet, task)
        assert len(platform.log.duplicates) <= 1
        assert platform.log.invalid == []
        assert in_order(delivered(platform))

    run(scenario)


def test_two_instances_share_one_platform_and_send_each_message_once(pg_url: str) -> None:
    """Two fleet instances on one PostgreSQL: one holds the lease and sends, the other
    waits (never both: no message is sent by both); when the sender dies (its database
    connection gone, no clean release) the other takes over once the lease has run out.
    Every message arrives, in order per unit; the platform keeps each once."""

    async def scenario() -> None:
        # Real time here: the two instances' leases must run out on one shared clock.
        with running_platform(schemas(), key_field="messageId") as platform:
            config = platform_config(
                platform.url, start="beginning", lease_s=2.0, timeout_s=1.0, poll_s=0.05
            )
            fleet_a, fwd_a, task_a = await _start(pg_url, config, None, owner="A")
            fleet_b, fwd_b, task_b = await _start(pg_url, config, None, owner="B")
            await fleet_a.events(30)
            await eventually(lambda: sum(map(len, delivered(platform).values())), lambda n: n >= 5)
            senders = [f.owner for f in (fwd_a, fwd_b) if f._lease is not None]
            assert len(senders) == 1
            first = fwd_a if senders == ["A"] else fwd_b
            first_fleet, first_task = (fleet_a, task_a) if first is fwd_a else (fleet_b, task_b)
            other_fleet = fleet_b if first is fwd_a else fleet_a
            # The sender dies: its connection first (so it cannot give the lease back).
            await first_fleet.worker.close()
            first_task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first_task
            await other_fleet.events(30)
            want = await other_fleet.history_events()
            await eventually(lambda: delivered(platform), lambda d: d == want, "taken over")
            status = await eventually(
                lambda: other_fleet.outbox(lambda o: o.status("region")),
                lambda s: s.backlog == 0,
            )
            assert status.owner not in ("", first.owner)
            other_task = task_b if first is fwd_a else task_a
            await _stop(other_fleet, other_task)
        # The one send the dead instance had answered but not yet recorded may come again
        # from the new sender, with the same key (the platform keeps one): nothing else.
        assert len(platform.log.duplicates) <= 1
        assert platform.log.invalid == []
        assert in_order(delivered(platform))

    run(scenario)


def test_retry_after_and_auth_are_honoured(target: str, tmp_path: Path) -> None:
    """A 429 with Retry-After: 7 makes the forwarder wait 7 s (not its own back-off);
    a token and an HMAC signature are sent as the platform demands."""
    (tmp_path / "token").write_text("s3cret\n")
    (tmp_path / "key").write_text("hm4c\n")

    async def scenario() -> None:
        time = VirtualTime(T0)
        auth = Auth(token="s3cret")
        with running_platform(schemas(), key_field="messageId", auth=auth) as platform:
            config = platform_config(
                platform.url, start="beginning", auth="token", token_file=tmp_path / "token"
            )
            platform.throttle(1, "7")
            fleet, _, task = await _start(target, config, time)
            await fleet.events(3)
            want = await fleet.history_events()
            await eventually(lambda: delivered(platform), lambda d: d == want)
            assert 7.0 in time.waits
            await eventually(
                lambda: fleet.outbox(lambda o: o.status("region")), lambda s: s.backlog == 0
            )
            await _stop(fleet, task)
        assert platform.log.throttled == 1 and platform.log.unauthorized == 0
        with running_platform(schemas(), key_field="messageId", auth=Auth(hmac_key="hm4c")) as p2:
            config = platform_config(
                p2.url, start="beginning", auth="hmac", secret_file=tmp_path / "key"
            )
            fleet, _, task = await _start(target, config, time)
            before = await fleet.history_events()  # sent to the first platform
            fleet.seq = 3
            await fleet.events(2)
            after = await fleet.history_events()
            want = {u: [q for q in qs if q not in before.get(u, [])] for u, qs in after.items()}
            want = {u: qs for u, qs in want.items() if qs}
            await eventually(lambda: delivered(p2), lambda d: d == want)
            await _stop(fleet, task)
        assert p2.log.unauthorized == 0 and p2.log.invalid == []

    run(scenario)


def test_a_new_platform_starts_at_the_present_unless_told_otherwise(target: str) -> None:
    """start = "now" (the default): history from before the platform was configured is
    not sent; what happens after is."""

    async def scenario() -> None:
        time = VirtualTime(T0)
        with running_platform(schemas(), key_field="messageId") as platform:
            worker = await StoreWorker.open(lambda: open_store(target))
            early = Fleet(worker)
            await early.hello()
            await early.events(5)
            before = await early.history_events()
            await worker.close()
            fleet, _, task = await _start(target, platform_config(platform.url), time)
            fleet.seq = early.seq
            await eventually(lambda: fleet.outbox(lambda o: o.platforms()), lambda p: p)
            await fleet.events(4)
            after = await fleet.history_events()
            want = {u: [s for s in seqs if s not in before.get(u, [])] for u, seqs in after.items()}
            await eventually(lambda: delivered(platform), lambda d: d == want)
            await _stop(fleet, task)

    run(scenario)


def test_mapping_errors_are_named_by_file_and_key(tmp_path: Path) -> None:
    """A broken mapping stops the config at load, each problem named by the platform key,
    the mapping file and the key in it."""
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[mapping]\ntime_zone = "Mars/Olympus"\n'
        '[message.event]\npath = "events"\n[message.event.fields]\n'
        'code = { source = "code.nope" }\nwhen = "detail.type"\n'
        '[message.nonsense]\npath = "/x"\n[message.nonsense.fields]\na = "unit_id"\n'
    )
    data: dict[str, object] = {
        "northbound": {"platform": {"cq": {"mapping": "bad.toml", "url": "http://x"}}}
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data, tmp_path, source="fleet.toml")
    where = f"northbound.platform.cq.mapping {bad}"
    assert caught.value.problems == [
        f"{where}: mapping.time_zone: 'Mars/Olympus' is not an IANA time zone name",
        f"{where}: message.event.path: must start with /",
        f"{where}: message.event.fields.code.source: unknown source 'code.nope'",
        f"{where}: message.nonsense.kind: unknown kind 'nonsense' (one of event, alarm, "
        "coverage, register, firmware, visit, maintenance_record, maintenance_verdict, "
        "heartbeat)",
    ]
    platform: dict[str, object] = {"url": "ftp://x", "auth": "hmac", "port": 0}
    data = {"northbound": {"platform": {"cq": platform}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(data, tmp_path, source="fleet.toml")
    assert caught.value.problems == [
        "northbound.platform.cq.port: must be between 1 and 65535, got 0",
        "northbound.platform.cq.mapping: required (gbt24476, chongqing or a file)",
        "northbound.platform.cq.url: an http platform needs an http:// or https:// URL",
        'northbound.platform.cq.secret_file: required with auth = "hmac"',
    ]


def test_every_documented_platform_key_is_a_key_with_that_default(tmp_path: Path) -> None:
    """The docs block of fleet/northbound/config.py quotes each key and its default."""
    import fleet.northbound.config as module

    docs = documented_defaults(module.__doc__ or "")["northbound.platform.NAME"]
    keys = {f.name for f in dataclasses.fields(PlatformConfig) if f.metadata.get("key", True)}
    assert set(docs) == keys
    docs["mapping"] = "gbt24476"
    docs["url"] = "http://platform.example"
    loaded = parse_config({"northbound": {"platform": {"p": docs}}}, tmp_path, source="docs")
    bare = {"mapping": "gbt24476", "url": "http://platform.example"}
    plain = parse_config({"northbound": {"platform": {"p": bare}}}, tmp_path, source="-")
    assert loaded.northbound == plain.northbound
    assert isinstance(plain.northbound, NorthboundConfig)


@pytest.mark.parametrize("name", ["gbt24476", "chongqing"])
def test_no_shipped_mapping_forwards_who_was_sent(name: str) -> None:
    """The crew dispatched step names a person (issue 19): a shipped mapping, which codes
    its rescue steps with skip_when_missing, sends no message for it, while the steps it
    codes still go."""
    import json

    mapping = load_mapping(resolve(name, Path()))
    step = {"alarm_id": 1, "step": "crew_dispatched", "by": "Li", "reason": "north gate"}
    step |= {"crew": "张三", "eta": "2026-03-01T08:20:00Z"}
    assert mapping.render("lw", "U1", 2, 0, "alarm", json.dumps(step)) is None
    acked = {"alarm_id": 1, "step": "acknowledged", "by": "Li"}
    assert mapping.render("lw", "U1", 1, 0, "alarm", json.dumps(acked)) is not None


@pytest.mark.parametrize("name", ["gbt24476", "chongqing"])
def test_every_shipped_mapping_renders_valid_messages(name: str) -> None:
    """Each shipped mapping's messages meet the schema derived from it, for every event
    type at a landing, between floors and unknown, and Chongqing's codes are its own."""
    import json

    mapping = load_mapping(resolve(name, Path()))
    by_name = mapping.json_schema()
    codes: dict[tuple[str, object], object] = {}
    for type_name in records_pb2.EventType.keys()[1:]:
        for landing in (True, False, None):
            short = type_name.removeprefix("EVENT_TYPE_")
            detail: dict[str, object] = {
                "agent_id": "a1",
                "seq": 1,
                "event_id": "e",
                "type": short,
                "phase": "RAISED",
                "time": "2026-03-01T08:00:00Z",
                "onset": None,
                "floor": 2,
                "reason": "",
                "gb_code": None,
                "at_landing": landing,
            }
            got = mapping.render("lw", "U1", 1, 0, "event", json.dumps(detail))
            if got is None:
                continue
            assert validate(by_name[got.name], dict(got.body)) == [], got
            codes[(short, landing)] = got.body.get("faultCode", got.body.get("eventCode"))
    if name == "chongqing":
        assert codes[("OVERTRAVEL_TOP", None)] == 92
        assert codes[("OVERTRAVEL_BOTTOM", True)] == 91
        assert codes[("ENTRAPMENT", True)] == 93
        assert ("ENTRAPMENT", False) not in codes  # between floors: no Chongqing code
        assert ("DOOR_SLOWING", None) not in codes  # no code at all: not sent
    else:
        assert codes[("DOOR_CLOSE_FAILURE", None)] == 2
        assert codes[("ENTRAPMENT", True)] is None  # sent, without a GB/T code


def test_the_cli_shows_status_and_dead_letters_and_asks_for_a_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``northbound status``, ``dead-letters`` and ``replay`` on a store with one platform,
    one refused entry and one not yet sent."""
    import json

    from fleet.cli.main import main

    db = str(tmp_path / "fleet.db")
    store = open_store(db)
    assert isinstance(store, SqlStore)
    claims = [UnitClaim("U1", ControllerIdentity(model="RC-3000"))]
    store.register_hello("a1", "0.1.0", claims, T0)
    outbox = NorthboundOutbox(store)
    outbox.ensure_platform("region", 0, from_start=True)
    lease = outbox.acquire("region", "me", 0, 30)
    assert lease is not None
    first = outbox.pending("region", 10, 10)[0]
    outbox.dead_letter(lease, first, "k", "register", 422, "no such street", "{}", 1)
    # Configured but never started: nothing behind yet (its first forwarder decides).
    assert outbox.status("configured-later").backlog == 0
    store.close()
    # Each --json is its definition, made of the API's (one definition per response).
    from fleet.cli.northbound import DeadLettersView, PlatformsView
    from fleet.read.shape import schema_of
    from fleet.web.openapi import openapi_spec
    from tests.fleet.test_api import validate as validate_spec

    spec = openapi_spec()
    assert main(["northbound", "status", "--db", db, "--json"]) == 0
    platforms = json.loads(capsys.readouterr().out)
    validate_spec(platforms, schema_of(PlatformsView), spec, "northbound status --json")
    status = platforms["platforms"][0]
    assert status["platform"] == "region" and status["rejected"] == 1
    assert status["dead_letters"] == 1 and status["backlog"] >= 1 and status["sender"] == "me"
    assert main(["northbound", "dead-letters", "--db", db, "--json"]) == 0
    letters = json.loads(capsys.readouterr().out)
    validate_spec(letters, schema_of(DeadLettersView), spec, "northbound dead-letters --json")
    (letter,) = letters["dead_letters"]
    assert (letter["reason"], letter["status"], letter["state"]) == ("no such street", 422, "dead")
    assert main(["northbound", "replay", "region", "--id", str(letter["id"]), "--db", db]) == 0
    assert "1 dead letter(s)" in capsys.readouterr().out
    assert main(["northbound", "dead-letters", "--db", db, "--state", "replay"]) == 0
    assert "no such street" in capsys.readouterr().out
    assert main(["northbound", "replay", "elsewhere", "--all", "--db", db]) == 2


def test_serve_forwards_what_agents_send_and_the_api_shows_it(tmp_path: Path) -> None:
    """The whole path in one serving fleet: an agent's entrapment over gRPC is committed,
    chained, forwarded by serve's own forwarder to the platform (schema-valid, with its
    alarm's steps), and GET /api/northbound shows the platform with nothing behind; the
    metrics carry the platform's counters."""
    from tests.fleet.factories import batch, hello
    from tests.fleet.harness import running_fleet

    with running_platform(schemas(), key_field="messageId") as platform:
        config = serving_config(platform.url, tmp_path)

        async def scenario() -> None:
            async with running_fleet(config, http=True) as fleet:
                call = await fleet.connect(
                    hello("a1", "U1"),
                    batch(record(1, "U1", event=records_pb2.EVENT_TYPE_ENTRAPMENT)),
                )
                await eventually(
                    lambda: delivered(platform), lambda d: d.get("U1"), "the event forwarded"
                )
                await eventually(
                    lambda: delivered(platform, "/rescues"), lambda d: d.get("U1"), "the alarm"
                )

                async def shown() -> Any:
                    return (await fleet.get("/api/northbound"))[1]

                view = await eventually(
                    shown, lambda v: v["platforms"] and v["platforms"][0]["backlog"] == 0
                )
                assert view["platforms"][0]["platform"] == "gbt"
                assert view["platforms"][0]["sent"] >= 2 and view["dead_letters"] == []
                assert (
                    fleet.metrics.value(
                        "liftwatch_fleet_northbound_sent_total", {"platform": "gbt"}
                    )
                    >= 2
                )
                await call.done_writing()

        asyncio.run(asyncio.wait_for(scenario(), 60))
    assert platform.log.invalid == [] and platform.log.duplicates == []


def test_mqtt_platform_gets_every_message_at_qos1_in_order(tmp_path: Path) -> None:
    """The MQTT transport against a real Mosquitto: the reference platform subscribes to
    the mapping's topics and validates each message against the derived schema."""
    from hil_tests.northbound_platform import MqttPlatform
    from tests.agent.test_mqtt import Broker
    from tests.conftest import require_binary

    broker = Broker(require_binary("mosquitto"), tmp_path)
    broker.start()
    mapping = load_mapping(resolve("gbt24476", Path()))
    by_name = mapping.json_schema()
    topics = {m.topic.replace("{unit_id}", ""): by_name[m.name] for m in mapping.messages.values()}

    async def scenario() -> None:
        listener = MqttPlatform("127.0.0.1", broker.port, topics, mapping.key_field)
        subscribed = asyncio.Event()

        async def listen() -> None:
            while True:  # the broker may still be starting
                try:
                    await listener.listen("liftwatch/#", subscribed.set)
                except Exception:
                    await asyncio.sleep(0.1)

        listening = asyncio.create_task(listen())
        await asyncio.wait_for(subscribed.wait(), 30)
        time = VirtualTime(T0)
        config = platform_config(
            "", start="beginning", transport="mqtt", host="127.0.0.1", port=broker.port
        )
        fleet, _, task = await _start(str(tmp_path / "fleet.db"), config, time)
        await fleet.events(9)
        want = await fleet.history_events()

        def got() -> dict[str, list[int]]:
            found: dict[str, list[int]] = {}
            for r in listener.log.snapshot():
                if r.path.startswith("liftwatch/events/"):
                    _, unit, seq = r.key.rsplit(":", 2)
                    found.setdefault(unit, []).append(int(seq))
            return found

        await eventually(got, lambda d: d == want, "every event over MQTT")
        await _stop(fleet, task)
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening

    try:
        asyncio.run(scenario())
    finally:
        broker.stop()


def test_mutual_tls_presents_the_client_certificate(tmp_path: Path) -> None:
    """auth = "mtls": the platform asks for a client certificate signed by its CA and
    verifies it; the fleet verifies the platform's certificate against ``ca``. Without the
    client certificate the TLS handshake fails, and the forwarder retries (not a refusal:
    nothing goes to the dead letters)."""
    import ssl

    from fleet.auth.pki import init_ca, issue_agent, issue_server

    ca = init_ca(tmp_path)
    server = issue_server(tmp_path, ["127.0.0.1"])
    client = issue_agent(tmp_path, "district-7")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.certificate))
    tls.load_cert_chain(str(server.certificate), str(server.key))
    tls.verify_mode = ssl.CERT_REQUIRED

    async def scenario() -> None:
        time = VirtualTime(T0)
        with running_platform(schemas(), key_field="messageId", tls=tls) as platform:
            assert platform.url.startswith("https://")
            bare = platform_config(platform.url, start="beginning", ca=ca.certificate)
            fleet, forwarder, task = await _start(str(tmp_path / "a.db"), bare, time)
            await fleet.events(2)
            await eventually(
                lambda: forwarder._metrics.retries.labels(platform="region")._value.get(),
                lambda n: n >= 2,
                "handshakes refused",
            )
            assert delivered(platform) == {}
            assert await fleet.outbox(lambda o: o.dead_letters("region", None, 10)) == []
            await _stop(fleet, task)
            config = platform_config(
                platform.url,
                start="beginning",
                auth="mtls",
                cert=client.certificate,
                key=client.key,
                ca=ca.certificate,
            )
            fleet, _, task = await _start(str(tmp_path / "b.db"), config, time)
            await fleet.events(3)
            want = await fleet.history_events()
            await eventually(lambda: delivered(platform), lambda d: d == want, "sent over mTLS")
            await _stop(fleet, task)
        assert platform.log.invalid == []

    run(scenario)


def test_maintenance_records_and_verdicts_are_forwarded(target: str) -> None:
    """Issue 17's maintenance records and the fleet's verdicts on them, as the store
    chains them, reach the platform in the mapping's terms, schema-valid."""
    from fleet.store.maintenance import NewRecord, VerdictChange

    async def scenario() -> None:
        time = VirtualTime(T0)
        with running_platform(schemas(), key_field="messageId") as platform:
            config = platform_config(platform.url, start="beginning")
            fleet, _, task = await _start(target, config, time)
            start = int(T0.timestamp() * 1_000_000)
            record_ = NewRecord(
                "U1", "C1", "quarterly", start, start + 3_600_000_000, "", "csv", "c1", start
            )

            def file_and_judge(store: Any) -> None:
                (record_id,) = store.add_maintenance_records([record_], T0)
                change = VerdictChange(record_id, "too_short", "20 of 60 minutes", "{}", None)
                store.set_verdicts([change], T0)

            await fleet.worker.call(file_and_judge)
            await eventually(
                lambda: delivered(platform, "/maintenance/verdicts"),
                lambda d: d.get("U1"),
                "the verdict forwarded",
            )
            (filed,) = [r for r in platform.log.snapshot() if r.path == "/maintenance/records"]
            assert filed.body["maintenanceType"] == "quarterly"
            assert filed.body["startedAt"] == "2026-03-01T08:00:00.000Z"
            (judged,) = [r for r in platform.log.snapshot() if r.path == "/maintenance/verdicts"]
            assert (judged.body["verdict"], judged.body["verdictCode"]) == ("too_short", 2)
            await _stop(fleet, task)
        assert platform.log.invalid == []

    run(scenario)


def test_heartbeats_go_every_heartbeat_s_and_a_missed_one_is_not_sent_later(
    target: str,
) -> None:
    """heartbeat_s = 60: each unit's status goes out every minute (of the forwarder's
    clock), each beat with its own key; a beat due while the platform is down is
    superseded by the next one, not queued."""

    async def scenario() -> None:
        time = VirtualTime(T0)
        with running_platform(schemas(), key_field="messageId") as platform:
            config = platform_config(platform.url, heartbeat_s=60.0, retry_max_s=10.0)
            fleet, _, task = await _start(target, config, time)

            def beats() -> dict[str, list[str]]:
                found: dict[str, list[str]] = {}
                for got in platform.log.snapshot():
                    if got.path == "/heartbeat":
                        found.setdefault(got.key.split(":")[-1], []).append(
                            got.body["registrationCode"]
                        )
                return found

            await eventually(beats, lambda b: len(b) >= 2, "two beats")
            first, second = sorted(beats(), key=int)[:2]
            assert sorted(beats()[first]) == list(UNITS)
            assert int(second) - int(first) >= 60_000
            platform.down()
            down_at = time.now
            await eventually(lambda: time.now - down_at, lambda d: d >= dt.timedelta(minutes=5))
            platform.up()
            await eventually(
                beats, lambda b: any(int(k) > int(second) for k in b), "a beat after the outage"
            )
            await _stop(fleet, task)
            # Beats are one minute apart at least, and the ones due while it was down were
            # not sent afterwards: at most one beat of the outage's five came through.
            stamps = sorted(int(k) for k in beats())
            assert all(b - a >= 60_000 for a, b in itertools.pairwise(stamps))
            down_ms = int(down_at.timestamp() * 1000)
            during = [s for s in stamps if down_ms < s < down_ms + 300_000]
            assert len(during) <= 1
        assert platform.log.invalid == [] and platform.log.duplicates == []

    run(scenario)


def test_an_unexpected_failure_restarts_the_forwarder_and_loses_nothing(target: str) -> None:
    """A bug in a send (an exception no outcome covers) ends that run of the forwarder,
    not the fleet: `supervised` logs it and starts it again with a fresh transport, and
    the entry is sent then."""
    from fleet.northbound.forwarder import supervised
    from fleet.northbound.mapping import Rendered
    from fleet.northbound.transport import SendResult

    class Broken:
        async def send(self, message: Rendered) -> SendResult:
            raise RuntimeError("a bug in a transport")

        async def aclose(self) -> None:
            return None

    async def scenario() -> None:
        time = VirtualTime(T0)
        with running_platform(schemas(), key_field="messageId") as platform:
            config = platform_config(platform.url, start="beginning")
            worker = await StoreWorker.open(lambda: open_store(target))
            fleet = Fleet(worker)
            await fleet.hello()
            await fleet.events(3)
            metrics = NorthboundMetrics(CollectorRegistry())
            forwarder = Forwarder(
                worker, config, time.clock, metrics, sleep=time.sleep, transport=Broken()
            )
            task = asyncio.create_task(supervised(forwarder, time.sleep))
            want = await fleet.history_events()
            await eventually(lambda: delivered(platform), lambda d: d == want, "sent after all")
            await _stop(fleet, task)
            assert metrics.failures.labels(platform="region")._value.get() == 1
        assert platform.log.duplicates == []

    run(scenario)


def test_sends_are_paced_to_the_platforms_rate(target: str) -> None:
    """rate_per_s = 5: each send starts 0.2 s (of the forwarder's clock) after the one
    before, however much is waiting."""

    async def scenario() -> None:
        time = VirtualTime(T0)
        with running_platform(schemas(), key_field="messageId") as platform:
            config = platform_config(platform.url, start="beginning", rate_per_s=5.0)
            fleet, _, task = await _start(target, config, time)
            await fleet.events(10)
            want = await fleet.history_events()
            await eventually(lambda: delivered(platform), lambda d: d == want)
            await _stop(fleet, task)
        sent = len(platform.log.snapshot())
        paced = [w for w in time.waits if abs(w - 0.2) < 1e-6]
        assert sent > 10 and len(paced) >= sent - 1, (sent, time.waits)
        assert not [w for w in time.waits if 0 < w < 0.2 - 1e-6]

    run(scenario)
