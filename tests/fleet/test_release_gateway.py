"""Releases on the agent stream (issue 20), `serve` on a loopback port and a real
grpc.aio client as the agent: an agent that said it takes offers (an UpdateReport) is
offered the release of its rollout, fetches its wheel over FetchRelease (another agent,
or a file not in the manifest, is refused), and its report of a switch-back halts the
rollout, counted on the halted gauge; an agent that sent no report is offered nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.config import FleetConfig, IngestConfig, StoreConfig
from fleet.releases import desk
from fleet.releases.bundle import build, public_text
from fleet.releases.rollout import Plan, RolloutState
from fleet.releases.service import add_release, start_rollout
from fleet.store.releases import ReleaseStore
from fleet.store.sqlite import SqliteStore
from protos.liftwatch.v1 import gateway_pb2, gateway_pb2_grpc
from tests.agent.wheels import make_wheel
from tests.fleet import harness
from tests.fleet.factories import T0, batch, hello, record
from tests.fleet.harness import Fleet
from tests.support import eventually

KEY = Ed25519PrivateKey.generate()


def report(release_id: str, state: str, detail: str = "") -> gateway_pb2.AgentFrame:
    return gateway_pb2.AgentFrame(
        update_report=gateway_pb2.UpdateReport(release_id=release_id, state=state, detail=detail)
    )


async def fetch(fleet: Fleet, agent_id: str, release_id: str, file: str) -> bytes:
    stub = gateway_pb2_grpc.AgentGatewayStub(fleet.channel)
    call = stub.FetchRelease(
        gateway_pb2.FetchReleaseRequest(release_id=release_id, file=file),
        metadata=(("agent-id", agent_id),),
    )
    return b"".join([chunk.data async for chunk in call])


def test_offer_fetch_report_and_halt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(desk, "STEP_S", 0.05)
    db = tmp_path / "fleet.db"
    wheel = make_wheel(tmp_path / "wheels", "2.0")
    build(tmp_path / "bundle", "r2", "2.0", [wheel], KEY)
    store = SqliteStore.open(str(db))
    releases = ReleaseStore(store)
    (tmp_path / "kept").mkdir()
    add_release(releases, tmp_path / "bundle", tmp_path / "kept", public_text(KEY), 0)
    plan = Plan(waves=("2", "100%"), gate_s=60.0)
    agents = [("a1", "1.0"), ("a3", "1.0"), ("a4", "1.0")]
    # The fleet's clock in the harness stands at T0 (tests.fleet.harness.FakeClock).
    rollout_id = start_rollout(releases, "r2", agents, plan, T0.timestamp())
    store.close()
    config = FleetConfig(
        store=StoreConfig(path=str(db)), ingest=IngestConfig(heartbeat_interval_s=7)
    )

    async def scenario(fleet: Fleet) -> None:
        call = await fleet.connect(hello("a1", "U1"))
        assert (await call.read()).WhichOneof("frame") == "welcome"
        await call.write(report("-", "health", json.dumps({"detector_errors": 0})))
        frame = await call.read()
        offer = frame.release_offer
        assert (offer.release_id, offer.version) == ("r2", "2.0")
        manifest = json.loads(offer.manifest)
        assert KEY.public_key().verify(offer.signature, offer.manifest) is None
        name = manifest["wheels"][0]["file"]
        assert await fetch(fleet, "a1", "r2", name) == wheel.read_bytes()
        for agent_id, file in (("a2", name), ("a1", "../fleet.db")):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await fetch(fleet, agent_id, "r2", file)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # An agent that never reported (an older one) gets acks, never an offer.
        old = await fleet.connect(hello("a3", "U3"))
        assert (await old.read()).WhichOneof("frame") == "welcome"
        await old.write(batch(record(1, "U3")))
        assert (await old.read()).WhichOneof("frame") == "ack"
        # a1's updater switched back by itself: the rollout halts.
        await call.write(report("r2", "rolled_back", "not healthy within 600 s; back on 1.0"))

        def halted() -> Any:
            value = fleet.metrics.registry.get_sample_value("liftwatch_fleet_rollouts_halted")
            return value == 1

        await eventually(halted, what="the rollout halted")
        await call.done_writing()
        await old.done_writing()

    harness.run(config, scenario)
    store = SqliteStore.open(str(db))
    halted = ReleaseStore(store).rollout(rollout_id)
    store.close()
    assert halted is not None and halted.state == RolloutState.HALTED
    assert "a1 (rolled_back: not healthy within 600 s; back on 1.0)" in halted.reason
