"""Rescue dispatch end to end in one process: agent stream -> alarm -> a real local HTTP
webhook (signed, retried after a 500) and a real Mosquitto (QoS 1), escalation, the API's
disposal steps, and the CLI on the same database."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import queue
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.alarms.config import AlarmsConfig, TargetConfig
from fleet.alarms.dispatch import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from fleet.cli.main import main
from fleet.config import FleetConfig, StoreConfig
from protos.liftwatch.v1 import records_pb2
from tests.agent.test_mqtt import Broker, broker, next_message, subscriber  # noqa: F401
from tests.fleet.factories import T0, batch, hello, record
from tests.fleet.harness import Fleet, run

SECRET = "s3cret"


class Hook:
    """A local HTTP server recording every POST; answers the queued statuses, then 200."""

    def __init__(self, statuses: list[int]) -> None:
        self.received: queue.Queue[tuple[str, dict[str, str], bytes]] = queue.Queue()
        statuses = list(statuses)
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.put((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(statuses.pop(0) if statuses else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    async def next(self) -> tuple[str, dict[str, str], dict[str, Any]]:
        path, headers, body = await asyncio.to_thread(self.received.get, True, 10)
        stamp = headers[TIMESTAMP_HEADER.lower()]
        assert headers[SIGNATURE_HEADER.lower()] == signature(SECRET, stamp, body)
        return path, headers, json.loads(body)


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook([500])
    h.thread.start()
    yield h
    h.server.shutdown()
    h.server.server_close()


async def post(fleet: Fleet, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    def send() -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://{fleet.http}{path}", data=json.dumps(body).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    return await asyncio.to_thread(send)


def test_entrapment_is_dispatched_retried_escalated_and_disposed(
    tmp_path: Path,
    hook: Hook,
    broker: Broker,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "fleet.db"
    alarms = AlarmsConfig(
        targets=("rescue", "bus"),
        escalation_targets=("boss",),
        escalate_after_s=60,
        repeat_s=30,
        retry_initial_s=1,
        timeout_s=5,
        target={
            "rescue": TargetConfig("rescue", "webhook", url=f"{hook.url}/rescue", secret=SECRET),
            "boss": TargetConfig("boss", "webhook", url=f"{hook.url}/boss", secret=SECRET),
            "bus": TargetConfig("bus", "mqtt", port=broker.port, topic="lw/alarms"),
        },
    )
    config = FleetConfig(store=StoreConfig(path=str(db)), alarms=alarms)

    async def scenario(fleet: Fleet) -> None:
        async with subscriber(broker.port, "lw/alarms/#") as mqtt:
            call = await fleet.connect(hello("a1", "U1"))
            assert (await call.read()).WhichOneof("frame") == "welcome"
            trapped = record(1, "U1", event=records_pb2.EVENT_TYPE_ENTRAPMENT, event_id="t1")
            await call.write(batch(trapped))
            assert (await call.read()).ack.up_to_seq == 1  # the ack never waits for a send
            path, _, first = await hook.next()  # answered 500
            assert (path, first["type"], first["attempt"]) == ("/rescue", "ENTRAPMENT", 1)
            message = await next_message(mqtt)
            assert str(message.topic) == "lw/alarms/U1"
            assert json.loads(bytes(message.payload))["alarm_id"] == first["alarm_id"]
            fleet.clock.now = T0 + dt.timedelta(seconds=2)  # the back-off has passed
            path, _, second = await hook.next()
            assert (path, second["attempt"]) == ("/rescue", 2)
            fleet.clock.now = T0 + dt.timedelta(seconds=61)  # nobody acknowledged
            seen = {(await hook.next())[0] for _ in range(2)}  # escalation + the repeat
            assert seen == {"/boss", "/rescue"}
            alarm_id = first["alarm_id"]
            status, body = await post(fleet, f"/api/alarms/{alarm_id}/on-site", {"by": "W"})
            assert status == 409 and "acknowledged" in body["error"]
            status, body = await post(fleet, "/api/alarms/77/ack", {"by": "W"})
            assert status == 404 and body["error"] == "alarm 77 does not exist"
            status, body = await post(fleet, f"/api/alarms/{alarm_id}/ack", {"by": "Li"})
            assert (status, body["state"], body["acknowledged_by"]) == (200, "acknowledged", "Li")
            status, listed = await fleet.get("/api/alarms?open=true")
            assert [a["state"] for a in listed["alarms"]] == ["acknowledged"]
            assert listed["alarms"][0]["escalated"] is not None
            await call.done_writing()

    run(config, scenario, http=True)
    # A restart keeps the alarm; the CLI takes it through the remaining steps.
    assert main(["alarms", "on-site", "1", "--by", "rescuer Wang", "--db", str(db)]) == 0
    assert main(["alarms", "resolve", "1", "--db", str(db)]) == 2  # who?
    assert main(["alarms", "resolve", "9", "--by", "x", "--db", str(db)]) == 2
    # The entrapment never cleared: closing it takes a reason, which the alarm keeps.
    capsys.readouterr()
    assert main(["alarms", "resolve", "1", "--by", "rescuer Wang", "--db", str(db)]) == 2
    assert "event is still raised" in capsys.readouterr().err
    why = ["--reason", "released by hand, controller offline"]
    assert main(["alarms", "resolve", "1", "--by", "rescuer Wang", *why, "--db", str(db)]) == 0
    assert main(["alarms", "--json", "--db", str(db)]) == 0
    (shown,) = json.loads(capsys.readouterr().out.splitlines()[-1])["alarms"]
    assert (shown["state"], shown["close_reason"]) == ("resolved", why[1])
    assert (shown["closed_while_raised"], shown["rescue_s"]) == (True, None)
    assert main(["verify-history", "--db", str(db)]) == 0


def test_cli_lists_alarms_and_flags_a_broken_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fleet.store.sqlite import SqliteStore

    db = tmp_path / "fleet.db"
    store = SqliteStore.open(str(db))
    store.commit_batch(
        "a1", [record(1, "U1", event=records_pb2.EVENT_TYPE_ALARM_BUTTON, event_id="b")], T0
    )
    store._execute("UPDATE unit_history SET kind = 'register' WHERE seq = 1")
    store.close()
    assert main(["alarms", "--open", "--json", "--db", str(db)]) == 0
    (alarm,) = json.loads(capsys.readouterr().out)["alarms"]
    assert (alarm["type"], alarm["state"]) == ("ALARM_BUTTON", "raised")
    assert main(["alarms", "ack", "--by", "x", "--db", str(db)]) == 2
    assert "name the alarm by its number" in capsys.readouterr().err
    assert main(["verify-history", "--json", "--db", str(db)]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["problems"][0]["what"] == "edited" and result["problems"][0]["seq"] == 1


def test_claims_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fleet.store.base import ControllerIdentity, UnitClaim
    from fleet.store.sqlite import SqliteStore

    db = tmp_path / "fleet.db"
    store = SqliteStore.open(str(db))
    store.register_hello("a1", "0.1", [UnitClaim("U1", ControllerIdentity())], T0)
    # U1 watched from T0 for an hour (a sample every 10 s), a door fault at T0 + 10 min.
    samples = [record(i + 1, "U1", time=T0 + dt.timedelta(seconds=10 * i)) for i in range(360)]
    door = records_pb2.EVENT_TYPE_DOOR_CLOSE_FAILURE
    samples.append(record(400, "U1", time=T0 + dt.timedelta(minutes=10, seconds=1), event=door))
    store.commit_batch("a1", samples, T0)
    store.close()
    claims = tmp_path / "claims.csv"
    claims.write_text(
        "unit_id,time,fault_type\n"
        f"U1,{(T0 + dt.timedelta(minutes=10)).isoformat()},door_close_failure\n"
        f"U1,{(T0 + dt.timedelta(minutes=40)).isoformat()},OVERSPEED\n"
        f"U1,{(T0 + dt.timedelta(hours=5)).isoformat()},OVERSPEED\n"
        "U1,yesterday,OVERSPEED\n"
        "U1,2026-03-01T08:00:00Z,LEVITATION\n"
    )
    argv = ["audit", "claims", str(claims), "--window", "15", "--json", "--db", str(db)]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["verdict"] for c in out["claims"]] == ["supported", "contradicts", "cannot_tell"]
    assert [p["line"] for p in out["problems"]] == [5, 6]
    assert "time: cannot read 'yesterday'" in out["problems"][0]["reason"]
    assert main(["audit", "claims", str(tmp_path / "none.csv"), "--db", str(db)]) == 2


def test_the_api_follows_the_passenger(tmp_path: Path) -> None:
    """Cleared when the event's CLEARED record arrives: the open-for timer stops at the
    clear, the rescue time is onset to clear; closing a still-raised alarm needs a reason.
    Every alarm answer is validated against the OpenAPI spec."""
    from fleet.web.openapi import openapi_spec
    from tests.fleet.test_api import validate

    config = FleetConfig(store=StoreConfig(path=str(tmp_path / "fleet.db")))
    trap = records_pb2.EVENT_TYPE_ENTRAPMENT
    spec = openapi_spec()
    schema = {"$ref": "#/components/schemas/Alarm"}

    async def alarm(fleet: Fleet, alarm_id: int) -> dict[str, Any]:
        status, body = await fleet.get(f"/api/alarms/{alarm_id}")
        assert status == 200, body
        validate(body, schema, spec, f"alarm {alarm_id}")
        return dict(body)

    async def scenario(fleet: Fleet) -> None:
        call = await fleet.connect(hello("a1", "U1"))
        await call.read()
        raised = T0 + dt.timedelta(seconds=40)  # onset 30 s before (see factories.record)
        await call.write(batch(record(1, time=raised, event=trap, event_id="t1")))
        assert (await call.read()).ack.up_to_seq == 1
        (alarm_id,) = [a["alarm_id"] for a in (await fleet.get("/api/alarms"))[1]["alarms"]]
        assert (await post(fleet, f"/api/alarms/{alarm_id}/ack", {"by": "Li"}))[0] == 200
        fleet.clock.now = T0 + dt.timedelta(seconds=70)
        shown = await alarm(fleet, alarm_id)
        assert (shown["cleared"], shown["age_s"], shown["rescue_s"]) == (None, 60.0, None)
        status, body = await post(fleet, f"/api/alarms/{alarm_id}/resolve", {"by": "Li"})
        assert status == 400 and "still raised" in body["error"] and "reason" in body["error"]
        assert (await alarm(fleet, alarm_id))["state"] == "acknowledged"
        # The passenger is out at T0 + 130 s; the desk looks much later.
        out = T0 + dt.timedelta(seconds=130)
        cleared = record(2, time=out, event=trap, phase=records_pb2.PHASE_CLEARED, event_id="t1")
        await call.write(batch(cleared))
        assert (await call.read()).ack.up_to_seq == 2
        for later in (T0 + dt.timedelta(minutes=10), T0 + dt.timedelta(hours=2)):
            fleet.clock.now = later
            shown = await alarm(fleet, alarm_id)
            assert shown["state"] == "acknowledged"  # the desk still closes it
            assert dt.datetime.fromisoformat(shown["cleared"]) == out
            assert shown["age_s"] == shown["onset_to_cleared_s"] == shown["rescue_s"] == 120.0
        status, body = await post(fleet, f"/api/alarms/{alarm_id}/resolve", {"by": "Li"})
        assert status == 200, body
        validate(body, schema, spec, "resolved")
        assert (body["state"], body["closed_while_raised"], body["rescue_s"]) == (
            "resolved",
            False,
            120.0,
        )
        # A second entrapment, closed while raised: the reason is kept, no rescue time.
        await call.write(batch(record(3, time=out, event=trap, event_id="t2")))
        assert (await call.read()).ack.up_to_seq == 3
        second = max(a["alarm_id"] for a in (await fleet.get("/api/alarms"))[1]["alarms"])
        assert (await post(fleet, f"/api/alarms/{second}/ack", {"by": "Li"}))[0] == 200
        status, body = await post(fleet, f"/api/alarms/{second}/resolve", {"by": "Li", "reason": 7})
        assert status == 400 and '"reason" must be text' in body["error"]
        why = "rescued through the roof hatch; the car's door sensor still reports the fault"
        status, body = await post(
            fleet, f"/api/alarms/{second}/resolve", {"by": "Li", "reason": why}
        )
        assert status == 200, body
        validate(body, schema, spec, "closed while raised")
        assert (body["close_reason"], body["closed_while_raised"]) == (why, True)
        assert (body["rescue_s"], body["age_s"], body["cleared"]) == (None, None, None)
        await call.done_writing()

    run(config, scenario, http=True)


def test_a_dispatcher_records_who_was_sent_and_when(tmp_path: Path) -> None:
    """POST /api/alarms/{id}/dispatch: on an acknowledged alarm, who was sent (required,
    length-limited) and an ETA in minutes; the alarm stays acknowledged, the answer and the
    history carry both, a bad body is a 400 naming the field. Answers checked against the
    OpenAPI spec."""
    from fleet.web.openapi import openapi_spec
    from tests.fleet.test_api import validate

    config = FleetConfig(store=StoreConfig(path=str(tmp_path / "fleet.db")))
    trap = records_pb2.EVENT_TYPE_ENTRAPMENT
    spec = openapi_spec()

    async def scenario(fleet: Fleet) -> None:
        call = await fleet.connect(hello("a1", "U1"))
        await call.read()
        await call.write(batch(record(1, event=trap, event_id="t1")))
        assert (await call.read()).ack.up_to_seq == 1
        (alarm_id,) = [a["alarm_id"] for a in (await fleet.get("/api/alarms"))[1]["alarms"]]
        path = f"/api/alarms/{alarm_id}/dispatch"
        sent = {"by": "Li", "crew": "张三", "eta_minutes": 15, "reason": "north gate"}
        status, body = await post(fleet, path, sent)
        assert status == 409 and "dispatch needs it acknowledged" in body["error"]
        assert (await post(fleet, f"/api/alarms/{alarm_id}/ack", {"by": "Li"}))[0] == 200
        for bad, field in (
            ({"by": "Li", "eta_minutes": 15}, "crew: say who"),
            ({"by": "Li", "crew": "x" * 81, "eta_minutes": 15}, "longer than 80"),
            ({"by": "Li", "crew": "张三"}, "exactly one of eta_minutes"),
            ({"by": "Li", "crew": "张三", "eta_minutes": -1}, "eta_minutes: must be 0"),
            ({"by": "Li", "crew": "张三", "eta_minutes": 5, "eta_at": "17:00"}, "exactly one"),
            ({"by": "Li", "crew": "张三", "eta_at": "4pm"}, "eta_at: expected a clock time"),
            # Site time (Asia/Shanghai) is 16:00 at T0: 15:59 is earlier than now.
            (
                {"by": "Li", "crew": "张三", "eta_at": "15:59"},
                "eta_at: 2026-03-01 15:59 is earlier",
            ),
        ):
            status, body = await post(fleet, path, bad)
            assert status == 400 and field in body["error"], body
        fleet.clock.now = T0 + dt.timedelta(minutes=5)
        status, body = await post(fleet, path, sent)
        assert status == 200, body
        validate(body, {"$ref": "#/components/schemas/Alarm"}, spec, "dispatched")
        assert (body["state"], body["crew"], body["crew_dispatched_by"]) == (
            "acknowledged",
            "张三",
            "Li",
        )
        assert dt.datetime.fromisoformat(body["crew_eta"]) == T0 + dt.timedelta(minutes=20)
        status, history = await fleet.get("/api/units/U1/history")
        assert status == 200
        steps = [e["detail"] for e in history["entries"] if e["kind"] == "alarm"]
        assert steps[-1]["step"] == "crew_dispatched" and steps[-1]["crew"] == "张三"
        assert steps[-1]["reason"] == "north gate"
        # Again, with a clock time of the site's day: stored as the absolute time.
        again = {"by": "Li", "crew": "李四", "eta_at": "16:30"}
        status, body = await post(fleet, path, again)
        assert status == 200, body
        assert dt.datetime.fromisoformat(body["crew_eta"]) == T0 + dt.timedelta(minutes=30)
        assert body["crew"] == "李四"
        # The rescuers arrive: on-site follows as before.
        assert (await post(fleet, f"/api/alarms/{alarm_id}/on-site", {"by": "W"}))[0] == 200
        await call.done_writing()

    run(config, scenario, http=True)


def test_the_oldest_open_alarm_gauge_stops_when_the_passenger_is_out(tmp_path: Path) -> None:
    """An open entrapment whose event cleared still counts as open (the desk has to close
    it) but no longer ages: the "entrapment open too long" alert is about people inside."""
    from prometheus_client import CollectorRegistry

    from fleet.alarms.service import LifecycleMetrics, refresh_gauges
    from fleet.store.open import open_store
    from fleet.store.worker import StoreWorker
    from fleet.units.coverage import CoverageConfig

    trap = records_pb2.EVENT_TYPE_ENTRAPMENT
    early, late = T0, T0 + dt.timedelta(minutes=5)  # onsets 30 s before each
    now = T0 + dt.timedelta(hours=1)
    store = open_store(str(tmp_path / "fleet.db"))
    store.commit_batch("a1", [record(1, "U1", time=early, event=trap, event_id="old")], early)
    store.commit_batch("a1", [record(2, "U2", time=late, event=trap, event_id="new")], late)
    out = record(3, "U1", time=late, event=trap, phase=records_pb2.PHASE_CLEARED, event_id="old")
    store.commit_batch("a1", [out], late)
    store.close()

    async def scenario() -> CollectorRegistry:
        worker = await StoreWorker.open(lambda: open_store(str(tmp_path / "fleet.db")))
        registry = CollectorRegistry()
        try:
            await refresh_gauges(worker, LifecycleMetrics(registry), lambda: now, CoverageConfig())
        finally:
            await worker.close()
        return registry

    registry = asyncio.run(scenario())
    labels = {"type": "ENTRAPMENT"}
    assert registry.get_sample_value("liftwatch_fleet_open_alarms", labels) == 2
    oldest = registry.get_sample_value("liftwatch_fleet_open_alarm_oldest_seconds", labels)
    assert oldest == (now - (late - dt.timedelta(seconds=30))).total_seconds()


def test_cli_dispatch_checks_as_the_api_and_answers_its_alarm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`alarms dispatch` records who was sent and the ETA (minutes from now, or a time in
    the site's zone) with the API's checks, and --json answers the API's Alarm shape."""
    import zoneinfo

    from fleet.clock import utc_now
    from fleet.store.sqlite import SqliteStore
    from fleet.web.openapi import openapi_spec
    from tests.fleet.test_api import validate

    db = tmp_path / "fleet.db"
    store = SqliteStore.open(str(db))
    trap = records_pb2.EVENT_TYPE_ENTRAPMENT
    store.commit_batch("a1", [record(1, "U1", event=trap, event_id="t")], utc_now())
    store.close()
    on = ["--db", str(db)]
    dispatch = ["alarms", "dispatch", "1", "--by", "Li", *on]
    capsys.readouterr()
    assert main([*dispatch, "--crew", "张三", "--eta-minutes", "20"]) == 2
    assert "dispatch needs it acknowledged" in capsys.readouterr().err
    assert main(["alarms", "ack", "1", "--by", "Li", "--crew", "张三", *on]) == 2
    assert "go with `alarms dispatch`" in capsys.readouterr().err
    assert main(["alarms", "ack", "1", "--by", "Li", *on]) == 0
    assert main([*dispatch, "--eta-minutes", "20"]) == 2
    assert "crew: say who was sent" in capsys.readouterr().err
    assert main([*dispatch, "--crew", "张三", "--eta-minutes", "2000"]) == 2
    assert "eta_minutes: must be 0 to 1440" in capsys.readouterr().err
    site = zoneinfo.ZoneInfo("Asia/Shanghai")  # the default [http] time_zone
    past = (utc_now() - dt.timedelta(hours=2)).astimezone(site)
    assert main([*dispatch, "--crew", "张三", "--eta-at", f"{past:%Y-%m-%dT%H:%M}"]) == 2
    assert "is earlier than now" in capsys.readouterr().err
    before = utc_now()
    assert main([*dispatch, "--crew", "张三", "--eta-minutes", "20", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    validate(shown, {"$ref": "#/components/schemas/Alarm"}, openapi_spec(), "cli dispatch")
    assert (shown["state"], shown["crew"], shown["crew_dispatched_by"]) == (
        "acknowledged",
        "张三",
        "Li",
    )
    eta = dt.datetime.fromisoformat(shown["crew_eta"])
    assert before + dt.timedelta(minutes=20) <= eta <= utc_now() + dt.timedelta(minutes=20)
    later = (utc_now() + dt.timedelta(hours=1)).astimezone(site).replace(second=0, microsecond=0)
    assert main([*dispatch, "--crew", "李四", "--eta-at", f"{later:%Y-%m-%dT%H:%M}"]) == 0
    assert "is now acknowledged" in capsys.readouterr().out
    assert main(["alarms", "--json", *on]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["alarms"]
    assert listed["crew"] == "李四"
    assert dt.datetime.fromisoformat(listed["crew_eta"]) == later
    assert main(["verify-history", *on]) == 0
