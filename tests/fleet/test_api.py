"""The read side served: FleetQuery (gRPC) with health and reflection, the JSON API and
its OpenAPI spec, and the coverage sweep of a running fleet."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from starlette.applications import Starlette
from starlette.routing import Route

from fleet.config import FirmwareConfig, FleetConfig, StoreConfig
from fleet.metrics import GatewayMetrics
from fleet.web.api import build_app
from fleet.web.dashboard import SiteSettings
from fleet.web.live import LiveHub, UnitContractors
from fleet.web.openapi import REPORT_ROWS, openapi_spec
from protos.liftwatch.v1 import gateway_pb2, query_pb2, records_pb2
from tests.fleet.factories import T0, batch, hello, record
from tests.fleet.harness import Fleet, run
from tests.support import eventually

POLICY = Path(__file__).resolve().parents[2] / "deploy" / "fleet" / "firmware-policy.toml"


def _config(target: str) -> FleetConfig:
    return FleetConfig(
        store=StoreConfig(path=target) if "://" not in target else StoreConfig(url=target),
        firmware=FirmwareConfig(policy=POLICY),
    )


async def _ack(call: Any) -> int:
    frame = await call.read()
    assert frame.WhichOneof("frame") == "ack", frame
    return int(frame.ack.up_to_seq)


async def _populate(fleet: Fleet) -> None:
    """a1 watches U1..U3 (RC-3000 at 3.1.2 by Hello: below the policy minimum; U1's
    ControllerInfo confirms it); U3's link is down; an entrapment on U2."""
    call = await fleet.connect(hello("a1", "U1", "U2", "U3"))
    assert (await call.read()).WhichOneof("frame") == "welcome"
    await call.write(
        batch(
            record(1, "U1", firmware="3.1.2"),
            record(2, "U3", link_up=False),
            record(3, "U2", event=records_pb2.EVENT_TYPE_ENTRAPMENT),
        )
    )
    assert await _ack(call) == 3
    await call.done_writing()


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


def validate(value: Any, schema: dict[str, Any], spec: dict[str, Any], where: str = "$") -> None:
    """The JSON Schema subset the spec uses: type, enum, properties, required,
    additionalProperties (false, or the schema of a map's values), items, minimum, $ref."""
    schema = _resolve(schema, spec)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(
            isinstance(value, _TYPES[t])
            and not (t in ("integer", "number") and isinstance(value, bool))
            for t in types
        )
        assert ok, f"{where}: {value!r} is not {types}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if "minimum" in schema:
        assert value >= schema["minimum"], f"{where}: {value} < {schema['minimum']}"
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing {key}"
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(properties), f"{where}: extra {set(value) - set(properties)}"
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                validate(item, properties[key], spec, f"{where}.{key}")
            elif isinstance(extra, dict):  # a map: every value has this schema
                validate(item, extra, spec, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            validate(item, schema["items"], spec, f"{where}[{index}]")


def routes_only_app() -> Starlette:
    """The app with every route (dashboard too), to list them: nothing is served, so no
    store is needed behind them."""
    return build_app(
        None,  # type: ignore[arg-type]
        GatewayMetrics(),
        hub=LiveHub(UnitContractors(), ()),
        site=SiteSettings(),
        store=object(),  # type: ignore[arg-type]
    )


def test_every_route_is_in_the_spec() -> None:
    app = routes_only_app()
    routes = {r.path.replace(":str", "") for r in app.routes if isinstance(r, Route)}
    spec = openapi_spec()
    assert {r for r in routes if r.startswith("/api/")} == set(spec["paths"])
    for path, item in spec["paths"].items():
        for operation in item.values():
            for response in operation["responses"].values():
                # JSON, or one other declared type (the live stream's text/event-stream)
                content = response["content"]
                schema = content.get("application/json", next(iter(content.values())))["schema"]
                if schema:
                    _resolve(schema, spec)  # every $ref resolves
            assert operation["summary"], path


def test_json_api_matches_its_spec_on_both_stores(store_target: str) -> None:
    samples = [
        ("/api/units", 200),
        ("/api/units?status=blind&monitored=true", 200),
        ("/api/units?page_size=1", 200),
        ("/api/units/U1", 200),
        ("/api/units/nope", 404),
        ("/api/units?status=asleep", 400),
        ("/api/units?page_size=x", 400),
        ("/api/coverage", 200),
        ("/api/coverage?by=street", 200),
        ("/api/coverage?by=colour", 400),
        ("/api/coverage/history?unit=U3", 200),
        ("/api/firmware", 200),
        ("/api/firmware?violations=true&history=U1&model=RC-3000", 200),
        ("/api/firmware?violations=maybe", 400),
        ("/api/events?type=entrapment&limit=5", 200),
        ("/api/events?type=nap", 400),
        ("/api/openapi.json", 200),
        ("/api/site", 200),
    ]

    async def scenario(fleet: Fleet) -> None:
        await _populate(fleet)
        spec = openapi_spec()
        bodies: dict[str, Any] = {}
        for path, expected in samples:
            status, body = await fleet.get(path)
            assert status == expected, (path, body)
            bodies[path] = body
            template = urllib.parse.urlsplit(path).path
            template = "/api/units/{unit_id}" if template.startswith("/api/units/") else template
            content = spec["paths"][template]["get"]["responses"][str(status)]["content"]
            validate(body, content["application/json"]["schema"], spec, path)
        assert bodies["/api/openapi.json"] == spec
        assert [
            u["unit_id"] for u in bodies["/api/units?status=blind&monitored=true"]["units"]
        ] == ["U3"]
        page = bodies["/api/units?page_size=1"]
        assert (len(page["units"]), page["total"]) == (1, 3)
        status, rest = await fleet.get(
            f"/api/units?page_size=5&page_token={page['next_page_token']}"
        )
        assert [u["unit_id"] for u in rest["units"]] == ["U2", "U3"]
        assert rest["next_page_token"] == ""
        violations = bodies["/api/firmware?violations=true&history=U1&model=RC-3000"]
        assert {(v["unit_id"], v["rule"]) for v in violations["violations"]} == {
            (u, "below_minimum") for u in ("U1", "U2", "U3")
        }
        assert "error" in bodies["/api/units?status=asleep"]
        assert fleet.metrics.value("liftwatch_fleet_bad_input_total", {"kind": "api_request"}) == 5

    run(_config(store_target), scenario, http=True)


def test_grpc_query_health_and_reflection(tmp_path: Path) -> None:
    async def scenario(fleet: Fleet) -> None:
        await _populate(fleet)
        page = await fleet.query.ListUnits(query_pb2.ListUnitsRequest(page_size=2))
        assert ([u.unit_id for u in page.units], page.total) == (["U1", "U2"], 3)
        rest = await fleet.query.ListUnits(
            query_pb2.ListUnitsRequest(page_size=2, page_token=page.next_page_token)
        )
        assert ([u.unit_id for u in rest.units], rest.next_page_token) == (["U3"], "")
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await fleet.query.ListUnits(query_pb2.ListUnitsRequest(page_token="!!"))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        inv = await fleet.query.FirmwareInventory(
            query_pb2.FirmwareInventoryRequest(history_unit_id="U1")
        )
        assert [(c.model, c.version, c.units) for c in inv.firmware] == [("RC-3000", "3.1.2", 3)]
        assert {v.unit_id for v in inv.violations} == {"U1", "U2", "U3"}
        assert [h.new_firmware for h in inv.history] == ["3.1.2"]

        cover = await fleet.query.Coverage(query_pb2.CoverageRequest(by="contractor"))
        assert [(g.name, g.online, g.blind) for g in cover.groups] == [("", 2, 1)]

        # Agents and operators on separate ports, each with health and reflection for
        # its own service only (tests/security checks the agent port refuses FleetQuery).
        for channel, service in (
            (fleet.channel, "liftwatch.v1.AgentGateway"),
            (fleet.query_channel, "liftwatch.v1.FleetQuery"),
        ):
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", service):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            async for reply in stub.ServerReflectionInfo(iter([request])):
                names = {s.name for s in reply.list_services_response.service}
            assert names == {
                service,
                "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection",
            }

    run(_config(str(tmp_path / "fleet.db")), scenario)


def test_serve_sweeps_silent_units_into_the_coverage_history(tmp_path: Path) -> None:
    async def scenario(fleet: Fleet) -> None:
        await _populate(fleet)

        async def history() -> list[tuple[str, str, str]]:
            reply = await fleet.get("/api/coverage/history?unit=U1")
            return [(h["new_status"], h["cause"], h["at"]) for h in reply[1]["history"]]

        assert await history() == [("online", "hello", "2026-03-01T08:00:00.000Z")]
        fleet.clock.now = T0 + dt.timedelta(seconds=31)
        fleet.sweep.set()
        found = await eventually(history, lambda h: len(h) == 2)
        assert found[1] == ("stale", "sweep", "2026-03-01T08:00:31.000Z")
        fleet.clock.now = T0 + dt.timedelta(seconds=301)
        fleet.sweep.set()
        found = await eventually(history, lambda h: len(h) == 3)
        assert found[2][:2] == ("offline", "sweep")
        labels = {"status": "offline"}
        assert fleet.metrics.value("liftwatch_fleet_coverage_transitions_total", labels) == 3
        # Heard of again: online, recorded by the ingest path at once.
        call = await fleet.connect(hello("a1", "U1"))
        assert (await call.read()).welcome.committed_seq == 3
        await call.write(gateway_pb2.AgentFrame(heartbeat=gateway_pb2.Heartbeat()))
        await call.done_writing()
        found = await eventually(history, lambda h: len(h) == 4)
        assert found[3][:2] == ("online", "hello")

    run(_config(str(tmp_path / "fleet.db")), scenario, http=True)


def test_lifecycle_routes_match_the_spec(tmp_path: Path) -> None:
    """Reports, alarms and a unit's history over HTTP, each validated against the spec."""
    samples = [
        ("/api/reports/fault-rate?by=street", "/api/reports/{report}", 200),
        ("/api/reports/service-life", "/api/reports/{report}", 200),
        ("/api/reports/scorecard", "/api/reports/{report}", 200),
        ("/api/reports/horoscope", "/api/reports/{report}", 404),
        ("/api/alarms", "/api/alarms", 200),
        ("/api/units/U1/history", "/api/units/{unit_id}/history", 200),
    ]

    async def scenario(fleet: Fleet) -> None:
        await _populate(fleet)
        spec = openapi_spec()
        for path, template, expected in samples:
            status, body = await fleet.get(path)
            assert status == expected, (path, body)
            responses = spec["paths"][template]["get"]["responses"]
            if str(status) in responses:
                schema = responses[str(status)]["content"]["application/json"]["schema"]
                validate(body, schema, spec, path)
            report = urllib.parse.urlsplit(path).path.rsplit("/", 1)[1]
            if template == "/api/reports/{report}" and status == 200:
                # Each row against its report's own row definition.
                row = {"$ref": f"#/components/schemas/{REPORT_ROWS[report]}"}
                for index, item in enumerate(body["rows"]):
                    validate(item, row, spec, f"{path} rows[{index}]")
                assert body["rows"] or report != "fault-rate", path  # the others: registered only
        status, history = await fleet.get("/api/units/U1/history")
        assert history["entries"], history
        status, report = await fleet.get("/api/reports/fault-rate?by=street")
        assert isinstance(report["rows"], list)

    run(_config(str(tmp_path / "fleet.db")), scenario, http=True)
