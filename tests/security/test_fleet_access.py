"""Item 1 of issue 14: FleetQuery is for operators, and a removed or revoked agent is cut
off at once. Real fleets (`fleet.serve.server.serve`) under mutual TLS on loopback, real TLS
clients, the real `agents` command writing the store beside the serving fleet."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fleet.cli.main import main
from fleet.store.sqlite import SqliteStore
from protos.liftwatch.v1 import (
    gateway_pb2,
    gateway_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
    records_pb2,
)
from tests.fleet.factories import batch, evidence_record, hello, record
from tests.fleet.test_tls import Pki, first_frame
from tests.security.conftest import (
    District,
    agent_channel,
    bearer,
    query_channel,
    tls_fleet,
    with_timeout,
)

UNKNOWN_AGENT = gateway_pb2.REJECT_CODE_UNKNOWN_AGENT
# Every FleetQuery method with a harmless request.
QUERY_CALLS = (
    ("ListUnits", query_pb2.ListUnitsRequest()),
    ("GetUnit", query_pb2.GetUnitRequest(unit_id="U1")),
    ("Coverage", query_pb2.CoverageRequest()),
    ("FirmwareInventory", query_pb2.FirmwareInventoryRequest()),
    ("ListEvents", query_pb2.ListEventsRequest()),
    ("GetEvidence", query_pb2.GetEvidenceRequest(event_id="e-U1")),
)


def test_every_fleetquery_method_is_listed() -> None:
    service = query_pb2.DESCRIPTOR.services_by_name["FleetQuery"]
    assert {m.name for m in service.methods} == {name for name, _ in QUERY_CALLS}


async def _codes(channel: Any, metadata: Any = None) -> dict[str, grpc.StatusCode]:
    stub = query_pb2_grpc.FleetQueryStub(channel)
    codes: dict[str, grpc.StatusCode] = {}
    for name, request in QUERY_CALLS:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await getattr(stub, name)(request, metadata=metadata, timeout=10)
        codes[name] = refused.value.code()
    return codes


def test_agent_cert_cannot_query(pki: Pki, district: District) -> None:
    """A registered agent's certificate, an unregistered one's and a removed one's: every
    FleetQuery method is PERMISSION_DENIED on the agent port, and UNAUTHENTICATED on the
    query port (a certificate is no operator credential there), even with a Hello sent."""
    store = SqliteStore.open(str(district.db))
    store.add_agent_units("edge-3", ["U2"])
    store.remove_agent_units("edge-3")  # edge-3: removed
    store.close()

    async def main_() -> None:
        async with tls_fleet(pki, district) as fleet:
            for agent_id in ("edge-1", "edge-2", "edge-3"):
                async with agent_channel(fleet, pki, agent_id) as channel:
                    denied = await _codes(channel)
                    assert set(denied.values()) == {grpc.StatusCode.PERMISSION_DENIED}, agent_id
                async with query_channel(fleet, pki, agent_id) as channel:
                    unauthenticated = await _codes(channel)
                    assert set(unauthenticated.values()) == {grpc.StatusCode.UNAUTHENTICATED}
            # The denial names where operators go instead.
            async with agent_channel(fleet, pki, "edge-1") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await query_pb2_grpc.FleetQueryStub(channel).ListUnits(
                        query_pb2.ListUnitsRequest(), timeout=10
                    )
                assert "[query] listen" in str(refused.value.details())
            # A made-up token is no better than none.
            async with query_channel(fleet, pki) as channel:
                codes = await _codes(channel, bearer("lwt_not-a-real-token"))
                assert set(codes.values()) == {grpc.StatusCode.UNAUTHENTICATED}

    asyncio.run(with_timeout(main_(), 60))


def test_operator_tokens_query_and_a_contractor_sees_only_its_units(
    pki: Pki, district: District
) -> None:
    async def main_() -> None:
        async with tls_fleet(pki, district) as fleet:
            # Events on both units, streamed by their own agents.
            for agent_id, unit in (("edge-1", "U1"), ("edge-2", "U2")):
                async with agent_channel(fleet, pki, agent_id) as channel:
                    call = gateway_pb2_grpc.AgentGatewayStub(channel).Connect()
                    await call.write(hello(agent_id, unit))
                    assert (await first_frame(call)).HasField("welcome")
                    event = records_pb2.EVENT_TYPE_ENTRAPMENT
                    await call.write(
                        batch(
                            record(1, unit, event=event, event_id=f"e-{unit}"),
                            evidence_record(2, unit, event_id=f"e-{unit}"),
                        )
                    )
                    assert (await first_frame(call)).ack.up_to_seq == 2
                    await call.done_writing()
            async with query_channel(fleet, pki) as channel:
                stub = query_pb2_grpc.FleetQueryStub(channel)
                regulator = bearer(district.regulator_token)
                units = await stub.ListUnits(query_pb2.ListUnitsRequest(), metadata=regulator)
                assert [u.unit_id for u in units.units] == ["U1", "U2"]
                events = await stub.ListEvents(query_pb2.ListEventsRequest(), metadata=regulator)
                assert sorted(e.unit_id for e in events.events) == ["U1", "U2"]
                found = await stub.GetEvidence(
                    query_pb2.GetEvidenceRequest(event_id="e-U2"), metadata=regulator
                )
                assert (found.unit_id, found.evidence.event_id) == ("U2", "e-U2")
                assert found.event_type == records_pb2.EVENT_TYPE_ENTRAPMENT

                contractor = bearer(district.contractor_token)
                units = await stub.ListUnits(query_pb2.ListUnitsRequest(), metadata=contractor)
                assert [u.unit_id for u in units.units] == ["U1"]
                events = await stub.ListEvents(query_pb2.ListEventsRequest(), metadata=contractor)
                assert [e.unit_id for e in events.events] == ["U1"]
                cover = await stub.Coverage(query_pb2.CoverageRequest(), metadata=contractor)
                assert cover.registered == 1
                inventory = await stub.FirmwareInventory(
                    query_pb2.FirmwareInventoryRequest(), metadata=contractor
                )
                assert sum(c.units for c in inventory.firmware) == 1
                own = await stub.GetEvidence(
                    query_pb2.GetEvidenceRequest(event_id="e-U1"), metadata=contractor
                )
                assert own.unit_id == "U1" and len(own.sha256) == 64
                for name, request, code in (
                    ("GetUnit", query_pb2.GetUnitRequest(unit_id="U2"), "NOT_FOUND"),
                    ("ListEvents", query_pb2.ListEventsRequest(unit_id="U2"), "NOT_FOUND"),
                    (
                        "FirmwareInventory",
                        query_pb2.FirmwareInventoryRequest(history_unit_id="U2"),
                        "NOT_FOUND",
                    ),
                    ("ListUnits", query_pb2.ListUnitsRequest(contractor="C2"), "PERMISSION_DENIED"),
                    ("GetEvidence", query_pb2.GetEvidenceRequest(event_id="e-U2"), "NOT_FOUND"),
                    (
                        "GetEvidence",
                        query_pb2.GetEvidenceRequest(event_id="e-U1", request_id="r"),
                        "INVALID_ARGUMENT",
                    ),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await getattr(stub, name)(request, metadata=contractor)
                    assert refused.value.code().name == code, name
                # The same answer for another contractor's unit as for no unit at all.
                with pytest.raises(grpc.aio.AioRpcError) as unknown:
                    await stub.GetUnit(query_pb2.GetUnitRequest(unit_id="U9"), metadata=contractor)
                assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    asyncio.run(with_timeout(main_(), 60))


def test_reflection_on_the_agent_port_lists_no_fleetquery(pki: Pki, district: District) -> None:
    async def names(channel: Any) -> set[str]:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        found: set[str] = set()
        async for reply in stub.ServerReflectionInfo(iter([request])):
            found |= {s.name for s in reply.list_services_response.service}
        return found

    async def main_() -> None:
        async with (
            tls_fleet(pki, district) as fleet,
            agent_channel(fleet, pki, "edge-1") as channel,
        ):
            assert await names(channel) == {
                "liftwatch.v1.AgentGateway",
                "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection",
            }

    asyncio.run(with_timeout(main_()))


async def _open_stream(fleet: Any, pki: Pki, agent_id: str, unit: str) -> tuple[Any, Any]:
    """An admitted, acked stream of ``agent_id``: (channel, call)."""
    channel = agent_channel(fleet, pki, agent_id)
    call = gateway_pb2_grpc.AgentGatewayStub(channel).Connect()
    await call.write(hello(agent_id, unit))
    assert (await first_frame(call)).HasField("welcome")
    await call.write(batch(record(1, unit)))
    assert (await first_frame(call)).ack.up_to_seq >= 1
    return channel, call


async def _ended_with(call: Any) -> gateway_pb2.Reject:
    """The Reject that ends ``call`` (waits for it: the fleet must end the stream)."""
    frame = await first_frame(call)
    assert frame.WhichOneof("frame") == "reject", frame
    assert await call.read() is grpc.aio.EOF
    return frame.reject


async def _refused(fleet: Any, pki: Pki, agent_id: str, unit: str) -> gateway_pb2.Reject:
    async with agent_channel(fleet, pki, agent_id) as channel:
        call = gateway_pb2_grpc.AgentGatewayStub(channel).Connect()
        await call.write(hello(agent_id, unit))
        return await _ended_with(call)


async def _cli(*args: str) -> int:
    # The real command, writing the store from another connection, as an operator would.
    return await asyncio.to_thread(main, list(args))


def test_removed_agent_refused(pki: Pki, district: District) -> None:
    """`agents remove` ends the agent's open stream (no frame from the agent needed) and
    refuses the next; another agent's stream goes on."""

    async def main_() -> None:
        async with tls_fleet(pki, district) as fleet:
            channel, call = await _open_stream(fleet, pki, "edge-1", "U1")
            other_channel, other = await _open_stream(fleet, pki, "edge-2", "U2")
            assert await _cli("agents", "remove", "edge-1", "--db", str(district.db)) == 0
            reject = await _ended_with(call)
            assert reject.code == UNKNOWN_AGENT
            assert "agent edge-1 is not registered" in reject.reason
            assert (await _refused(fleet, pki, "edge-1", "U1")).code == UNKNOWN_AGENT
            await other.write(batch(record(2, "U2")))
            assert (await first_frame(other)).ack.up_to_seq == 2
            await other.done_writing()
            for c in (channel, other_channel):
                await c.close()

    asyncio.run(with_timeout(main_()))


def test_partial_removal_ends_a_stream_declaring_the_withdrawn_unit(
    pki: Pki, district: District
) -> None:
    store = SqliteStore.open(str(district.db))
    store.add_agent_units("edge-1", ["U3"])
    store.close()

    async def main_() -> None:
        async with tls_fleet(pki, district) as fleet:
            channel, call = await _open_stream(fleet, pki, "edge-1", "U1")
            _, keeps = await _open_stream(fleet, pki, "edge-1", "U3")
            db = str(district.db)
            assert await _cli("agents", "remove", "edge-1", "--unit", "U1", "--db", db) == 0
            reject = await _ended_with(call)
            assert reject.code == gateway_pb2.REJECT_CODE_UNIT_NOT_PERMITTED
            # The stream for U3 alone is still admitted.
            await keeps.write(batch(record(2, "U3")))
            assert (await first_frame(keeps)).ack.up_to_seq == 2
            await channel.close()

    asyncio.run(with_timeout(main_()))


def _serial(pki: Pki, agent_id: str) -> int:
    pem = (pki.dir / "agents" / f"{agent_id}.pem").read_bytes()
    return int(x509.load_pem_x509_certificate(pem).serial_number)


def test_revoked_certificate_refused_and_its_stream_ended(
    pki: Pki, district: District, capsys: Any
) -> None:
    """By serial (a stolen certificate) and by agent id: the open stream ends with a
    Reject saying so, the next Hello is refused; unrevoking admits it again."""
    db = str(district.db)

    async def main_() -> None:
        async with tls_fleet(pki, district) as fleet:
            _, call = await _open_stream(fleet, pki, "edge-1", "U1")
            _, other = await _open_stream(fleet, pki, "edge-2", "U2")
            serial = format(_serial(pki, "edge-1"), "X")  # upper case: normalized
            assert (
                await _cli("agents", "revoke", "--serial", serial, "--reason", "stolen", "--db", db)
                == 0
            )
            reject = await _ended_with(call)
            assert reject.code == UNKNOWN_AGENT
            assert reject.reason == (f"certificate serial {serial.lower()} is revoked: stolen")
            assert "is revoked" in (await _refused(fleet, pki, "edge-1", "U1")).reason
            # By agent id, read from the certificate file the other way.
            assert await _cli("agents", "revoke", "edge-2", "--db", db) == 0
            assert (await _ended_with(other)).reason == "agent edge-2 is revoked"
            cert = str(pki.dir / "agents" / "edge-1.pem")
            assert await _cli("agents", "unrevoke", "--cert", cert, "--db", db) == 0
            _, again = await _open_stream(fleet, pki, "edge-1", "U1")
            await again.done_writing()

    asyncio.run(with_timeout(main_()))
    capsys.readouterr()
    assert main(["agents", "revoked", "--db", db, "--json"]) == 0
    listed = capsys.readouterr().out
    assert '"agent_id": "edge-2"' in listed and "stolen" not in listed


def test_revoke_command_errors(tmp_path: Path, capsys: Any) -> None:
    db = str(tmp_path / "fleet.db")
    assert main(["agents", "revoke", "--serial", "xyz", "--db", db]) == 2
    assert "--serial: serial 'xyz': expected up to 40 hexadecimal digits" in capsys.readouterr().err
    assert main(["agents", "revoke", "--cert", str(tmp_path / "none.pem"), "--db", db]) == 2
    assert "--cert: cannot read" in capsys.readouterr().err
    assert main(["agents", "revoke", "--db", db]) == 2  # nothing named
    capsys.readouterr()
    assert main(["agents", "revoke", "edge-9", "--db", db]) == 0
    assert main(["agents", "revoke", "edge-9", "--db", db]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "agent edge-9: revoked",
        "agent edge-9: revoked (unchanged)",
    ]
