"""Maintenance truth over HTTP (issue 17): records filed through the API and judged
against records an agent streamed through the real gateway; every answer validated
against the OpenAPI spec."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fleet.config import FleetConfig, RegistryConfig, StoreConfig
from fleet.reports.maintenance_config import MaintenanceConfig, VerdictRulesConfig
from fleet.web.openapi import openapi_spec
from protos.liftwatch.v1 import gateway_pb2, records_pb2
from tests.fleet.factories import T0, hello
from tests.fleet.harness import Fleet, run
from tests.fleet.test_api import validate
from tests.support import eventually

M = records_pb2


def _states(
    start: dt.datetime, minutes: int, mode: int, first_seq: int
) -> list[records_pb2.Record]:
    """Car states every 10 s of U1, counters and link status each minute."""
    out: list[records_pb2.Record] = []
    seq = first_seq
    for i in range(minutes * 6):
        at = start + dt.timedelta(seconds=10 * i)
        kinds = ["car_state"] + (["counters", "link_status"] if i % 6 == 0 else [])
        for kind in kinds:
            record = records_pb2.Record(seq=seq, unit_id="U1")
            record.time.FromDatetime(at)
            if kind == "car_state":
                record.car_state.mode = mode  # type: ignore[assignment]
                record.car_state.moving = i % 3 == 0
                record.car_state.door = M.DOOR_STATE_OPEN if i % 3 == 1 else M.DOOR_STATE_CLOSED
                record.car_state.floor = 1 + i % 4
            elif kind == "counters":
                record.counters.trips = 100 + i
            else:
                record.link_status.up = True
            out.append(record)
            seq += 1
    return out


async def _post(fleet: Fleet, path: str, body: bytes, kind: str) -> tuple[int, Any]:
    def send() -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://{fleet.http}{path}", data=body, headers={"Content-Type": kind}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    return await asyncio.to_thread(send)


def test_records_are_filed_judged_and_served_as_the_spec_says(tmp_path: Path) -> None:
    register = tmp_path / "register.csv"
    header = (
        "registration_code,building,address,street,use_unit,maintenance_contractor,"
        "install_date,rated_speed_m_s,rated_load_kg,landings,controller_model,car_in_group\n"
    )
    register.write_text(
        header + "U1,B,A,S,UU,C1,2020-01-01,1.0,800,6,RC-3000,1\n"
        "U2,B,A,S,UU,C2,2020-01-01,1.0,800,6,RC-3000,1\n",
        encoding="utf-8",
    )
    config = FleetConfig(
        store=StoreConfig(path=str(tmp_path / "fleet.db")),
        registry=RegistryConfig(csv=register),
        # serve's job derives the visit by itself, before any record is filed
        maintenance=MaintenanceConfig(verdicts=VerdictRulesConfig(derive_interval_s=0.2)),
    )
    # U1: normal 05:00-06:00, inspection 06:00-06:50, normal 06:50-08:00 (T0 is 08:00).
    start = T0 - dt.timedelta(hours=3)
    records = _states(start, 60, M.SERVICE_MODE_NORMAL, 1)
    records += _states(start + dt.timedelta(minutes=60), 50, M.SERVICE_MODE_INSPECTION, 10_000)
    records += _states(start + dt.timedelta(minutes=110), 70, M.SERVICE_MODE_NORMAL, 20_000)

    async def scenario(fleet: Fleet) -> None:
        greeting = hello("a1", "U1")
        greeting.hello.units[0].detectable.append(M.EVENT_TYPE_MODE_CHANGE)
        call = await fleet.connect(greeting)
        assert (await call.read()).WhichOneof("frame") == "welcome"
        for first in range(0, len(records), 400):
            chunk = records[first : first + 400]
            await call.write(gateway_pb2.AgentFrame(batch=gateway_pb2.RecordBatch(records=chunk)))
            frame = await call.read()
            assert frame.ack.up_to_seq == chunk[-1].seq
        await call.done_writing()
        found = await eventually(
            lambda: fleet.get("/api/units/U1/visits"),
            lambda answer: answer[1]["visits"] and answer[1]["visits"][0]["end"],
            "serve's job derives the visit",
        )
        assert found[1]["visits"][0]["inspection_runs"] == 100
        csv_body = (
            "unit_id,date,start,end,type,workers\n"
            "U1,2026-03-01,06:05Z,06:45Z,half_monthly,张三\n"  # the visit: supported
            "U1,2026-03-01,07:25Z,07:28Z,half_monthly,张三\n"  # watched normal: contradicted
            "U2,2026-03-01,06:05Z,06:45Z,half_monthly,李四\n"  # C2's unit: refused
            "U1,2026-03-01,bad,06:45Z,half_monthly,x\n"
        ).encode()
        spec = openapi_spec()
        status, filed = await _post(
            fleet, "/api/maintenance/records?contractor=C1&lang=en", csv_body, "text/csv"
        )
        assert status == 200, filed
        responses = spec["paths"]["/api/maintenance/records"]
        validate(
            filed,
            responses["post"]["responses"]["200"]["content"]["application/json"]["schema"],
            spec,
        )
        assert [(p["line"], p["reason"][:24]) for p in filed["problems"]] == [
            (4, "unit 'U2' unknown (not a"),
            (5, "cannot read the time: da"),
        ]
        assert [r["verdict"] for r in filed["records"]] == ["contradicted", "supported"]
        status, unfiled = await _post(
            fleet,
            "/api/maintenance/records",
            json.dumps({"records": [{}]}).encode(),
            "application/json",
        )
        assert status == 400 and "contractor" in unfiled["error"]
        for path, template in (
            ("/api/maintenance/records?verdict=supported", "/api/maintenance/records"),
            ("/api/maintenance/visits?unit=U1", "/api/maintenance/visits"),
            ("/api/units/U1/visits", "/api/units/{unit_id}/visits"),
            ("/api/maintenance/shares", "/api/maintenance/shares"),
        ):
            status, body = await fleet.get(path)
            assert status == 200, (path, body)
            content = spec["paths"][template]["get"]["responses"]["200"]["content"]
            validate(body, content["application/json"]["schema"], spec, path)
            if template == "/api/units/{unit_id}/visits":
                (visit,) = body["visits"]
                assert (visit["mode"], visit["duration_s"]) == ("inspection", 3000.0)
            if template == "/api/maintenance/shares":
                assert body["contractors"][0]["contradicted_pct"] == 50.0
        status, body = await fleet.get("/api/maintenance/records?verdict=maybe")
        assert status == 400

    run(config, scenario, http=True)
