"""The flight recorder at the fleet (issue 16, items 4 and 5): Evidence stored once per
(agent, seq), the final window superseding the one written at the raise, its hash in the
unit's history (a tampered row named by verify-history), served as JSON and CSV, refused
MALFORMED when it does not decode, and a dispatcher's on-demand request taken to the
agent's stream and answered, on both stores where the store is involved."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hashlib
import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.cli.main import main
from fleet.config import FleetConfig, StoreConfig
from fleet.reports.compute import verify_history
from fleet.store.open import open_store
from fleet.store.sql import SqlStore
from fleet.web.openapi import openapi_spec
from protos.liftwatch.v1 import gateway_pb2, records_pb2
from tests.fleet.factories import T0, batch, evidence_record, record
from tests.fleet.harness import Fleet, run, running_fleet
from tests.fleet.test_api import validate
from tests.support import eventually

ENTRAPMENT = records_pb2.EVENT_TYPE_ENTRAPMENT
RAISE = records_pb2.EVIDENCE_END_RAISE
LATER = T0 + dt.timedelta(seconds=30)


@pytest.fixture
def store(store_target: str) -> Iterator[SqlStore]:
    """A fresh store of each backend."""
    opened = open_store(store_target)
    assert isinstance(opened, SqlStore)
    yield opened
    opened.close()


def _trap(store: SqlStore) -> None:
    """a1's entrapment on U1 with the window written at the raise (seq 2) and the final
    one (seq 3)."""
    store.commit_batch(
        "a1",
        [
            record(1, "U1", event=ENTRAPMENT, event_id="trap"),
            evidence_record(2, "U1", event_id="trap", end=RAISE, samples=10),
        ],
        T0,
    )
    store.commit_batch("a1", [evidence_record(3, "U1", time=LATER, event_id="trap")], LATER)


def test_the_final_window_supersedes_the_raise_and_both_are_kept(store: SqlStore) -> None:
    _trap(store)
    found = store.event_evidence("trap")
    assert found is not None
    assert (found.seq, found.end, found.event_type) == (
        3,
        records_pb2.EVIDENCE_END_POST,
        ENTRAPMENT,
    )
    assert found.sha256 == hashlib.sha256(found.body).hexdigest()
    evidence = records_pb2.Evidence.FromString(found.body)
    assert evidence.samples == 20 and evidence.event_id == "trap"
    kept = store._execute("SELECT seq, end_kind FROM evidence ORDER BY seq").fetchall()
    assert [tuple(r) for r in kept] == [(2, RAISE), (3, records_pb2.EVIDENCE_END_POST)]
    assert store.event_evidence("no-such-event") is None


def test_a_replayed_evidence_is_stored_once(store: SqlStore) -> None:
    _trap(store)
    again = store.commit_batch("a1", [evidence_record(3, "U1", time=LATER, event_id="trap")], LATER)
    assert again.inserted == 0
    assert store._execute("SELECT count(*) FROM evidence").fetchone()[0] == 2
    entries = [r for r in store.history("U1")[0] if r.kind == "evidence"]
    assert len(entries) == 2


def test_the_evidence_hash_is_chained_with_the_event(store: SqlStore) -> None:
    _trap(store)
    rows = store.history("U1")[0]
    kinds = [r.kind for r in rows]
    # The event's entry first, then the window written with it in the same batch.
    assert kinds.index("event") < kinds.index("evidence")
    final = store.event_evidence("trap")
    assert final is not None
    chained = [json.loads(r.detail) for r in rows if r.kind == "evidence"]
    assert chained[-1]["sha256"] == final.sha256
    assert chained[-1]["end"] == "post" and chained[0]["end"] == "raise"
    assert verify_history(store)[2] == []


def test_an_altered_evidence_row_is_named(store: SqlStore) -> None:
    _trap(store)
    final = store.event_evidence("trap")
    assert final is not None
    forged = records_pb2.Evidence.FromString(final.body)
    forged.truncated = True  # a doctored window, its hash recomputed to match the row
    body = forged.SerializeToString(deterministic=True)
    store._execute(
        "UPDATE evidence SET body = ?, sha256 = ? WHERE agent_id = 'a1' AND seq = 3",
        (body, hashlib.sha256(body).hexdigest()),
    )
    problems = verify_history(store)[2]
    assert [(p.unit_id, p.table, p.what) for p in problems] == [("U1", "evidence", "edited")]
    assert "evidence row a1#3" in problems[0].reason and "sha256" in problems[0].reason


def test_a_deleted_evidence_row_is_named(store: SqlStore) -> None:
    _trap(store)
    store._execute("DELETE FROM evidence WHERE seq = 2")
    problems = verify_history(store)[2]
    assert [(p.table, p.what) for p in problems] == [("evidence", "deleted")]


def test_verify_history_names_an_altered_evidence_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "fleet.db")
    store = open_store(db)
    assert isinstance(store, SqlStore)
    _trap(store)
    store.close()
    assert main(["verify-history", "--db", db]) == 0
    capsys.readouterr()
    store = open_store(db)
    assert isinstance(store, SqlStore)
    store._execute("UPDATE evidence SET body = ? WHERE seq = 3", (b"\x08\x01",))
    store.close()
    assert main(["verify-history", "--json", "--db", db]) == 1
    shown = json.loads(capsys.readouterr().out)
    assert [(p["table"], p["what"]) for p in shown["problems"]] == [("evidence", "edited")]
    assert "a1#3" in shown["problems"][0]["reason"]


# -- through a running fleet ------------------------------------------------------------


def _config(target: str) -> FleetConfig:
    return FleetConfig(
        store=StoreConfig(path=target) if "://" not in target else StoreConfig(url=target)
    )


def _hello(agent_id: str, *units: str, records_evidence: bool = True) -> gateway_pb2.AgentFrame:
    frame = gateway_pb2.AgentFrame(
        hello=gateway_pb2.Hello(
            agent_id=agent_id,
            agent_version="0.2.0",
            units=[gateway_pb2.UnitDescriptor(unit_id=u) for u in units],
            records_evidence=records_evidence,
        )
    )
    return frame


async def _frame(call: Any) -> gateway_pb2.FleetFrame:
    frame = await call.read()
    assert isinstance(frame, gateway_pb2.FleetFrame), f"stream ended: {await call.code()}"
    return frame


def _http(
    fleet: Fleet, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, str, str]:
    """(status, content type, body text) of one request to the API."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://{fleet.http}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"} if data is not None else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:
            return reply.status, reply.headers["content-type"], reply.read().decode("utf-8-sig")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read().decode("utf-8-sig")


def test_evidence_is_served_as_json_and_csv(store_target: str) -> None:
    spec = openapi_spec()

    async def scenario(fleet: Fleet) -> None:
        call = await fleet.connect(_hello("a1", "U1"))
        welcome = await _frame(call)
        assert welcome.welcome.accepts_evidence
        await call.write(
            batch(
                record(1, "U1", event=ENTRAPMENT, event_id="trap"),
                evidence_record(2, "U1", event_id="trap", end=RAISE, samples=5),
                evidence_record(3, "U1", event_id="trap"),
            )
        )
        assert (await _frame(call)).ack.up_to_seq == 3
        await call.done_writing()
        status, kind, text = await asyncio.to_thread(
            _http, fleet, "GET", "/api/events/trap/evidence"
        )
        assert status == 200 and kind.startswith("application/json"), text
        body = json.loads(text)
        validate(body, spec["components"]["schemas"]["Evidence"], spec)
        assert (body["event_id"], body["unit_id"], body["event_type"], body["end"]) == (
            "trap",
            "U1",
            "ENTRAPMENT",
            "post",
        )
        assert body["request_id"] is None and body["raised"] == "2026-03-01T08:00:00.000Z"
        samples = body["samples"]
        assert len(samples) == 20 and samples[0]["t_ms"] == 0 and samples[-1]["t_ms"] == 1900
        assert samples[-1]["time"] == "2026-03-01T08:00:00.000Z"
        # The car stopped between floors, doors closed, occupied: what a reader replays.
        last = samples[-1]
        assert (last["speed_mm_s"], last["door"], last["door_zone"], last["occupied"]) == (
            0,
            "closed",
            False,
            True,
        )
        assert (last["direction"], last["mode"], last["fault_code"]) == ("none", "normal", None)
        status, kind, text = await asyncio.to_thread(
            _http, fleet, "GET", "/api/events/trap/evidence?format=csv"
        )
        assert status == 200 and kind.startswith("text/csv"), text
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == 20
        assert rows[0]["time"] == samples[0]["time"] and rows[-1]["door"] == "closed"
        assert rows[0]["fault_code"] == "" and rows[0]["occupied"] == "True"
        status, _, text = await asyncio.to_thread(_http, fleet, "GET", "/api/events/nope/evidence")
        assert status == 404 and "nope" in json.loads(text)["error"]
        status, _, text = await asyncio.to_thread(
            _http, fleet, "GET", "/api/events/trap/evidence?format=xml"
        )
        assert status == 400 and "format" in json.loads(text)["error"]

    run(_config(store_target), scenario, http=True)


def test_a_malformed_evidence_is_refused_and_nothing_acked_is_lost(tmp_path: Path) -> None:
    bad = evidence_record(2, "U1", event_id="trap")
    del bad.evidence.time_delta_ms[-1]  # one sample short of `samples`

    async def scenario(fleet: Fleet) -> None:
        call = await fleet.connect(_hello("a1", "U1"), batch(record(1, "U1")))
        assert (await _frame(call)).HasField("welcome")
        assert (await _frame(call)).ack.up_to_seq == 1
        await call.write(batch(bad))
        reject = (await _frame(call)).reject
        assert reject.code == gateway_pb2.REJECT_CODE_MALFORMED
        assert reject.reason.startswith("record seq 2 evidence: time_delta_ms"), reject.reason
        assert fleet.metrics.value("liftwatch_fleet_evidence_malformed_total") == 1
        assert fleet.metrics.value("liftwatch_fleet_rejects_total", {"code": "MALFORMED"}) == 1
        # What was acked stays; the agent resumes after it.
        again = await fleet.connect(_hello("a1", "U1"))
        assert (await _frame(again)).welcome.committed_seq == 1
        await again.done_writing()

    db = str(tmp_path / "fleet.db")
    run(_config(db), scenario)
    orphan = evidence_record(3, "U1", event_id="")
    from fleet.ingest.evidence import evidence_problem

    assert evidence_problem(orphan) == (
        "record seq 3 evidence names neither an event_id nor a request_id"
    )


def test_an_on_demand_request_reaches_the_agent_and_its_answer_is_served(
    store_target: str,
) -> None:
    spec = openapi_spec()

    async def scenario(fleet: Fleet) -> None:
        call = await fleet.connect(_hello("a1", "U1"))
        assert (await _frame(call)).welcome.accepts_evidence
        posted = asyncio.create_task(
            asyncio.to_thread(
                _http,
                fleet,
                "POST",
                "/api/units/U1/evidence-requests",
                {"seconds": 30, "by": "desk-7"},
            )
        )
        # The agent's side: the request arrives on its open stream, between its frames.
        asked = await asyncio.wait_for(_frame(call), 20)
        assert asked.WhichOneof("frame") == "evidence_request", asked
        request = asked.evidence_request
        assert (request.unit_id, request.seconds) == ("U1", 30) and request.request_id
        status, _, text = await posted
        assert status == 202, text
        sent = json.loads(text)
        validate(sent, spec["components"]["schemas"]["EvidenceRequest"], spec)
        assert (sent["request_id"], sent["status"], sent["requested_by"]) == (
            request.request_id,
            "sent",
            "desk-7",
        )
        assert sent["evidence"] is None
        answer = evidence_record(
            1,
            "U1",
            event_id="",
            request_id=request.request_id,
            end=records_pb2.EVIDENCE_END_REQUEST,
        )
        await call.write(batch(answer))
        assert (await _frame(call)).ack.up_to_seq == 1
        path = f"/api/evidence-requests/{request.request_id}"

        async def status_of() -> dict[str, Any]:
            answer: dict[str, Any] = json.loads(
                (await asyncio.to_thread(_http, fleet, "GET", path))[2]
            )
            return answer

        done = await eventually(status_of, lambda b: b["status"] == "answered", "the answer")
        validate(done, spec["components"]["schemas"]["EvidenceRequest"], spec)
        assert done["evidence"]["request_id"] == request.request_id
        assert done["evidence"]["end"] == "request" and len(done["evidence"]["samples"]) == 20
        await call.done_writing()
        missing = await asyncio.to_thread(_http, fleet, "GET", "/api/evidence-requests/nope")
        assert missing[0] == 404

    run(_config(store_target), scenario, http=True)
    store = open_store(store_target)
    try:
        details = [json.loads(r.detail) for r in store.history("U1")[0]]
        kinds = [r.kind for r in store.history("U1")[0]]
    finally:
        store.close()
    asked = [d for d, k in zip(details, kinds, strict=True) if k == "evidence_request"]
    assert len(asked) == 1 and asked[0]["by"] == "desk-7" and asked[0]["seconds"] == 30


def test_an_older_agent_or_none_connected_is_a_409_naming_why(tmp_path: Path) -> None:
    async def scenario(fleet: Fleet) -> None:
        # Known to the fleet, its agent gone: nobody takes the request.
        gone = await fleet.connect(_hello("a2", "U2"))
        assert (await _frame(gone)).HasField("welcome")
        await gone.done_writing()
        await eventually(
            lambda: asyncio.to_thread(_http, fleet, "GET", "/api/units/U2"),
            lambda reply: reply[0] == 200,
            "U2 known",
        )
        call = await fleet.connect(_hello("a1", "U1", records_evidence=False))
        welcome = await _frame(call)
        assert welcome.welcome.accepts_evidence
        status, _, text = await asyncio.to_thread(
            _http, fleet, "POST", "/api/units/U1/evidence-requests", {"by": "desk"}
        )
        assert status == 409, text
        error = json.loads(text)["error"]
        assert "does not record evidence" in error and "'a1'" in error
        assert (
            fleet.metrics.value("liftwatch_fleet_evidence_requests_total", {"outcome": "refused"})
            == 1
        )
        status, _, text = await asyncio.to_thread(
            _http, fleet, "POST", "/api/units/U2/evidence-requests", {"by": "desk"}
        )
        assert status == 409 and "not connected" in json.loads(text)["error"], text
        status, _, text = await asyncio.to_thread(
            _http, fleet, "POST", "/api/units/U9/evidence-requests", {"by": "desk"}
        )
        assert status == 404, text
        status, _, text = await asyncio.to_thread(
            _http, fleet, "POST", "/api/units/U1/evidence-requests", {"seconds": 0, "by": "d"}
        )
        assert status == 400 and "seconds" in json.loads(text)["error"], text
        await call.done_writing()

    run(_config(str(tmp_path / "fleet.db")), scenario, http=True)


def test_a_request_posted_to_another_process_reaches_the_agent(tmp_path: Path) -> None:
    """Two fleets on one database (as `serve --workers 2` is): the request is posted to
    the one that does not hold the agent's stream; the other takes it from the store."""
    config = _config(str(tmp_path / "fleet.db"))

    async def main_() -> None:
        async with (
            running_fleet(config, http=True) as holder,
            running_fleet(config, http=True) as other,
        ):
            call = await holder.connect(_hello("a1", "U1"))
            assert (await _frame(call)).HasField("welcome")
            posted = asyncio.create_task(
                asyncio.to_thread(
                    _http, other, "POST", "/api/units/U1/evidence-requests", {"by": "desk"}
                )
            )
            asked = await asyncio.wait_for(_frame(call), 20)
            assert asked.evidence_request.unit_id == "U1"
            assert asked.evidence_request.seconds == 60  # the default
            status, _, text = await posted
            assert status == 202, text
            assert json.loads(text)["request_id"] == asked.evidence_request.request_id
            sent = holder.metrics.value(
                "liftwatch_fleet_evidence_requests_total", {"outcome": "sent"}
            )
            assert sent == 1
            await call.done_writing()

    asyncio.run(asyncio.wait_for(main_(), 60))


def test_a_stored_evidence_altered_until_it_no_longer_decodes_is_a_500_naming_it(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "fleet.db")
    store = open_store(db)
    assert isinstance(store, SqlStore)
    _trap(store)
    store._execute("UPDATE evidence SET body = ? WHERE seq = 3", (b"\xff\xff",))
    store.close()

    async def scenario(fleet: Fleet) -> None:
        status, _, text = await asyncio.to_thread(_http, fleet, "GET", "/api/events/trap/evidence")
        assert status == 500, text
        error = json.loads(text)["error"]
        assert "a1#3" in error and "does not decode" in error and "verify-history" in error

    run(_config(db), scenario, http=True)
