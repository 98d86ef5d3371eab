"""Release files go only to the agent they were offered to (issue 20), under mutual TLS:
the agent is its certificate's, whatever the call's metadata claims. edge-1 (the canary)
fetches its wheel; edge-2, whose wave has not started, is refused even when it names
edge-1 in the agent-id metadata; a file outside the manifest is refused to edge-1 too."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.releases import desk
from fleet.releases.bundle import build, public_text
from fleet.releases.rollout import Plan
from fleet.releases.service import add_release, start_rollout
from fleet.store.releases import ReleaseStore
from fleet.store.sqlite import SqliteStore
from protos.liftwatch.v1 import gateway_pb2, gateway_pb2_grpc
from tests.agent.wheels import make_wheel
from tests.fleet.factories import T0
from tests.fleet.harness import Fleet
from tests.fleet.test_tls import Pki, pki, run_tls  # noqa: F401 (pki: the fixture)
from tests.support import eventually

KEY = Ed25519PrivateKey.generate()


async def fetch(fleet: Fleet, credentials: object, file: str, claim: str) -> bytes:
    async with grpc.aio.secure_channel(fleet.address, credentials) as channel:
        call = gateway_pb2_grpc.AgentGatewayStub(channel).FetchRelease(
            gateway_pb2.FetchReleaseRequest(release_id="r2", file=file),
            metadata=(("agent-id", claim),),
        )
        return b"".join([chunk.data async for chunk in call])


async def refused(fleet: Fleet, credentials: object, file: str, claim: str) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fetch(fleet, credentials, file, claim)
    code: grpc.StatusCode = caught.value.code()
    return code


def test_release_files_go_to_the_certificate_they_were_offered_to(
    pki: Pki,  # noqa: F811 (the fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(desk, "STEP_S", 0.05)
    db = tmp_path / "fleet.db"
    wheel = make_wheel(tmp_path / "w", "2.0")
    build(tmp_path / "bundle", "r2", "2.0", [wheel], KEY)
    store = SqliteStore.open(str(db))
    releases = ReleaseStore(store)
    (tmp_path / "kept").mkdir()
    add_release(releases, tmp_path / "bundle", tmp_path / "kept", public_text(KEY), 0)
    agents = [("edge-1", "1.0"), ("edge-2", "1.0")]
    start_rollout(releases, "r2", agents, Plan(waves=("1", "100%")), T0.timestamp())
    store.close()

    async def scenario(fleet: Fleet) -> None:
        async def canary() -> bytes | None:
            try:
                return await fetch(fleet, pki.credentials("edge-1"), wheel.name, "edge-1")
            except grpc.aio.AioRpcError:
                return None  # the offers are not loaded yet

        await eventually(canary, lambda got: got == wheel.read_bytes(), "edge-1 fetches its wheel")
        assert await refused(fleet, pki.credentials("edge-2"), wheel.name, "edge-1") == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert await refused(fleet, pki.credentials("edge-1"), "fleet.db", "edge-1") == (
            grpc.StatusCode.PERMISSION_DENIED
        )

    run_tls(pki, db, scenario, edge_1=["U1"], edge_2=["U2"])
