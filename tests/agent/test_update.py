"""The agent's side of releases (issue 20): an offer signed by a pinned key is fetched
and staged for the updater (READY last), each wheel checked against the signed manifest
as it arrives; an unsigned or wrongly signed offer is refused without a fetch; a fetch
that delivers other bytes stages nothing; the updater's outcomes are reported once per
state, again on a new stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import AgentConfig, UpdateSettings, parse_config
from agent.metrics import AgentMetrics
from agent.update import READY_ID, Updates
from fleet.releases.bundle import build, public_text
from protos.liftwatch.v1 import gateway_pb2
from tests.agent.wheels import make_wheel

KEY = Ed25519PrivateKey.generate()


def config(tmp: Path) -> AgentConfig:
    raw = {
        "agent": {"id": "edge-1", "data_dir": str(tmp / "data")},
        "fleet": {"insecure": True},
        "update": {"release_keys": [public_text(KEY)]},
        "bus": [{"name": "bus1", "url": "tcp://127.0.0.1:5020"}],
        "unit": [{"id": "u1", "bus": "bus1", "slave": 1}],
    }
    parsed = parse_config(raw, tmp)
    assert parsed.update == UpdateSettings(release_keys=(public_text(KEY),))
    return parsed


class Box:
    def __init__(self, tmp: Path, tamper: bool = False) -> None:
        self.sent: list[gateway_pb2.UpdateReport] = []
        self.fetched: list[str] = []
        self.tamper = tamper
        self.bundle = tmp / "bundle"
        self.wheel = make_wheel(tmp / "wheels", "2.0")
        manifest, signature = build(self.bundle, "r2", "2.0", [self.wheel], KEY)
        self.offer = gateway_pb2.ReleaseOffer(
            release_id="r2", version="2.0", manifest=manifest, signature=signature
        )
        self.metrics = AgentMetrics()
        self.updates = Updates(config(tmp), "1.0", self.fetch, self.send, lambda: 3, self.metrics)

    async def fetch(self, release_id: str, file: str) -> AsyncIterator[bytes]:
        self.fetched.append(file)
        data = (self.bundle / file).read_bytes()
        if self.tamper:
            data = data[:-1] + bytes([data[-1] ^ 1])
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    def send(self, frame: gateway_pb2.AgentFrame) -> None:
        self.sent.append(frame.update_report)

    def states(self) -> list[tuple[str, str]]:
        return [(r.release_id, r.state) for r in self.sent]


async def settle(box: Box) -> None:
    task = box.updates._task
    if task is not None:
        await task


def test_a_signed_offer_is_fetched_and_staged(tmp_path: Path) -> None:
    box = Box(tmp_path)

    async def main() -> None:
        box.updates.on_offer(box.offer)
        await settle(box)

    asyncio.run(main())
    staged = tmp_path / "data" / "updates" / "incoming" / "r2"
    assert (staged / "READY").exists()
    assert (staged / box.wheel.name).read_bytes() == box.wheel.read_bytes()
    assert (staged / "manifest.sig").read_bytes() == box.offer.signature
    assert box.states() == [("r2", "downloading"), ("r2", "staged")]


def test_unsigned_or_foreign_offers_are_refused_without_a_fetch(tmp_path: Path) -> None:
    box = Box(tmp_path)
    unsigned = gateway_pb2.ReleaseOffer()
    unsigned.CopyFrom(box.offer)
    unsigned.signature = b""
    foreign = gateway_pb2.ReleaseOffer()
    foreign.CopyFrom(box.offer)
    foreign.signature = Ed25519PrivateKey.generate().sign(box.offer.manifest)
    box.updates.on_offer(unsigned)
    box.updates.on_offer(foreign)
    assert box.states() == [("r2", "refused"), ("r2", "refused")]
    assert "unsigned" in box.sent[0].detail and "no pinned release key" in box.sent[1].detail
    assert box.fetched == []
    refused = box.metrics.registry.get_sample_value(
        "liftwatch_agent_update_reports_total", {"state": "refused"}
    )
    assert refused == 2


def test_bytes_that_differ_from_the_manifest_stage_nothing(tmp_path: Path) -> None:
    box = Box(tmp_path, tamper=True)

    async def main() -> None:
        box.updates.on_offer(box.offer)
        await settle(box)

    asyncio.run(main())
    assert box.states() == [("r2", "downloading"), ("r2", "failed")]
    assert "differs from the signed manifest" in box.sent[-1].detail
    assert list((tmp_path / "data" / "updates" / "incoming").iterdir()) == []


def test_updater_outcomes_are_reported_once_and_again_on_a_new_stream(tmp_path: Path) -> None:
    box = Box(tmp_path)
    status = tmp_path / "data" / "updates" / "status"
    status.mkdir(parents=True)
    (status / "r2.json").write_text(
        json.dumps({"release_id": "r2", "state": "rolled_back", "detail": "not healthy"})
    )
    box.updates.poll_status()
    box.updates.poll_status()
    assert box.states() == [("r2", "rolled_back")]
    box.updates.on_connected()
    assert box.states()[1:] == [(READY_ID, "health"), ("r2", "rolled_back")]
    assert json.loads(box.sent[1].detail) == {"version": "1.0", "detector_errors": 3}


def test_a_release_the_updater_gave_up_on_is_not_staged_again(tmp_path: Path) -> None:
    box = Box(tmp_path)
    status = tmp_path / "data" / "updates" / "status"
    status.mkdir(parents=True)
    (status / "r2.json").write_text(json.dumps({"release_id": "r2", "state": "rolled_back"}))
    box.updates.on_offer(box.offer)  # offered again on the stream after the switch back
    assert box.updates._task is None and box.fetched == []
    assert box.states() == [("r2", "rolled_back")]
