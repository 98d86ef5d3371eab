"""Mutual TLS and the agent registry: a real grpc.aio fleet (`fleet.serve.server.serve`) with
certificates from `fleet.auth.pki`, real TLS clients, the `pki` and `agents` commands."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from fleet.auth.pki import init_ca, issue_agent, issue_server
from fleet.cli.main import main
from fleet.config import (
    ConfigError,
    FleetConfig,
    StoreConfig,
    TlsConfig,
    load_config,
    parse_config,
)
from fleet.ingest.access import TlsSetupError, load_tls
from fleet.serve.server import ServeError, serve
from fleet.store.agents import normalize_serial, serial_text
from fleet.store.open import open_store
from fleet.store.sqlite import SqliteStore
from protos.liftwatch.v1 import gateway_pb2, gateway_pb2_grpc
from tests.fleet import harness
from tests.fleet.factories import batch, hello, record
from tests.fleet.harness import Fleet

UNKNOWN_AGENT = gateway_pb2.REJECT_CODE_UNKNOWN_AGENT
UNIT_NOT_PERMITTED = gateway_pb2.REJECT_CODE_UNIT_NOT_PERMITTED


@dataclasses.dataclass(frozen=True)
class Pki:
    """A CA, the fleet's pair and agents edge-1, edge-2 (and a stranger's CA) on disk."""

    dir: Path
    foreign: Path

    @property
    def tls(self) -> TlsConfig:
        return TlsConfig(
            cert=self.dir / "server.pem",
            key=self.dir / "server.key",
            client_ca=self.dir / "ca.pem",
        )

    def credentials(self, agent_id: str | None, *, ca_dir: Path | None = None) -> Any:
        """Channel credentials trusting our CA, with ``agent_id``'s pair (None: no
        client certificate) issued by the CA in ``ca_dir`` (default: ours)."""
        root = (self.dir / "ca.pem").read_bytes()
        if agent_id is None:
            return grpc.ssl_channel_credentials(root_certificates=root)
        agents = (ca_dir or self.dir) / "agents"
        return grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=(agents / f"{agent_id}.key").read_bytes(),
            certificate_chain=(agents / f"{agent_id}.pem").read_bytes(),
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates shared by the module's tests (key generation is the slow part)."""
    directory = tmp_path_factory.mktemp("pki")
    init_ca(directory)
    issue_server(directory, ["localhost", "127.0.0.1"])
    for agent_id in ("edge-1", "edge-2"):
        issue_agent(directory, agent_id)
    foreign = tmp_path_factory.mktemp("foreign-pki")
    init_ca(foreign, "Somebody Else's CA")
    issue_agent(foreign, "edge-1")
    return Pki(directory, foreign)


def run_tls(
    pki: Pki, db: Path, scenario: Callable[[Fleet], Awaitable[None]], **registered: list[str]
) -> None:
    """Register ``agent=[units]`` (dashes as underscores) in ``db``, then serve it under
    mutual TLS for ``scenario``."""
    store = SqliteStore.open(str(db))
    for agent_id, units in registered.items():
        store.add_agent_units(agent_id.replace("_", "-"), units)
    store.close()
    harness.run(FleetConfig(store=StoreConfig(path=str(db)), tls=pki.tls), scenario)


async def connect(fleet: Fleet, credentials: Any, *frames: gateway_pb2.AgentFrame) -> Any:
    """A Connect stream over a new TLS channel (closed with the stream's task)."""
    channel = grpc.aio.secure_channel(fleet.address, credentials)
    call = gateway_pb2_grpc.AgentGatewayStub(channel).Connect()
    for frame in frames:
        await call.write(frame)
    return call


async def first_frame(call: Any) -> gateway_pb2.FleetFrame:
    frame = await call.read()
    assert frame is not grpc.aio.EOF, f"stream ended: {await call.code()}"
    assert isinstance(frame, gateway_pb2.FleetFrame)
    return frame


async def refusal(call: Any) -> gateway_pb2.Reject:
    """The Reject that ends ``call``."""
    frame = await first_frame(call)
    assert frame.WhichOneof("frame") == "reject", frame
    assert await call.read() is grpc.aio.EOF
    return frame.reject


def rejects(fleet: Fleet, code: str) -> float:
    value: float = fleet.metrics.value("liftwatch_fleet_rejects_total", {"code": code})
    return value


def test_a_registered_agent_streams_and_gets_acks(pki: Pki, tmp_path: Path) -> None:
    async def scenario(fleet: Fleet) -> None:
        call = await connect(fleet, pki.credentials("edge-1"), hello("edge-1", "U1", "U2"))
        assert (await first_frame(call)).welcome.committed_seq == 0
        await call.write(batch(record(1), record(2, "U2")))
        assert (await first_frame(call)).ack.up_to_seq == 2
        await call.write(batch(record(3)))
        assert (await first_frame(call)).ack.up_to_seq == 3
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF

    run_tls(pki, tmp_path / "fleet.db", scenario, edge_1=["U1", "U2"])
    store = SqliteStore.open(str(tmp_path / "fleet.db"), readonly=True)
    assert store.committed_seq("edge-1") == 3
    store.close()


def test_a_certificate_for_another_agent_than_hello_is_refused(pki: Pki, tmp_path: Path) -> None:
    async def scenario(fleet: Fleet) -> None:
        # edge-2's certificate, claiming to be the registered edge-1.
        call = await connect(fleet, pki.credentials("edge-2"), hello("edge-1", "U1"))
        reject = await refusal(call)
        assert reject.code == UNKNOWN_AGENT
        assert reject.reason == (
            "Hello says agent 'edge-1' but the client certificate is agent 'edge-2'"
        )
        assert rejects(fleet, "UNKNOWN_AGENT") == 1

    run_tls(pki, tmp_path / "fleet.db", scenario, edge_1=["U1"], edge_2=["U2"])
    store = SqliteStore.open(str(tmp_path / "fleet.db"), readonly=True)
    assert store.get_unit("U1") is None, "a refused Hello must not be recorded"
    store.close()


def test_an_unregistered_agent_is_refused(pki: Pki, tmp_path: Path) -> None:
    async def scenario(fleet: Fleet) -> None:
        call = await connect(fleet, pki.credentials("edge-2"), hello("edge-2", "U2"))
        reject = await refusal(call)
        assert reject.code == UNKNOWN_AGENT
        assert reject.reason == (
            "agent edge-2 is not registered: liftwatch-fleet agents add edge-2 --unit ..."
        )
        assert rejects(fleet, "UNKNOWN_AGENT") == 1

    run_tls(pki, tmp_path / "fleet.db", scenario, edge_1=["U1"])


def test_units_outside_the_registration_are_refused_and_not_stored(
    pki: Pki, tmp_path: Path
) -> None:
    async def scenario(fleet: Fleet) -> None:
        # In Hello: refused before anything is recorded.
        call = await connect(fleet, pki.credentials("edge-1"), hello("edge-1", "U1", "U3"))
        reject = await refusal(call)
        assert reject.code == UNIT_NOT_PERMITTED
        assert reject.reason == (
            "unit 'U3' is not registered for agent 'edge-1': "
            "liftwatch-fleet agents add edge-1 --unit U3"
        )
        # In a record: the whole batch is refused, the good record with it.
        call = await connect(fleet, pki.credentials("edge-1"), hello("edge-1", "U1"))
        assert (await first_frame(call)).welcome.committed_seq == 0
        await call.write(batch(record(1), record(2, "U3")))
        reject = await refusal(call)
        assert reject.code == UNIT_NOT_PERMITTED
        assert reject.reason == (
            "record seq 2 is for unit 'U3', which is not registered for agent 'edge-1'"
        )
        call = await connect(fleet, pki.credentials("edge-1"), hello("edge-1", "U1"))
        assert (await first_frame(call)).welcome.committed_seq == 0
        await call.done_writing()
        assert rejects(fleet, "UNIT_NOT_PERMITTED") == 2

    db = tmp_path / "fleet.db"
    run_tls(pki, db, scenario, edge_1=["U1"], edge_2=["U3"])
    store = SqliteStore.open(str(db), readonly=True)
    assert store.committed_seq("edge-1") == 0
    assert store.get_unit("U3") is None
    store.close()


def test_clients_without_a_certificate_of_our_ca_cannot_connect(pki: Pki, tmp_path: Path) -> None:
    async def refused(fleet: Fleet, channel: Any) -> grpc.StatusCode:
        async with channel:
            call = gateway_pb2_grpc.AgentGatewayStub(channel).Connect()
            # The handshake fails before any frame: the write or the read reports it.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call.write(hello("edge-1", "U1"))
                await call.read()
            code: grpc.StatusCode = caught.value.code()
            return code

    async def scenario(fleet: Fleet) -> None:
        without = grpc.aio.secure_channel(fleet.address, pki.credentials(None))
        assert await refused(fleet, without) == grpc.StatusCode.UNAVAILABLE
        stranger = pki.credentials("edge-1", ca_dir=pki.foreign)
        other_ca = grpc.aio.secure_channel(fleet.address, stranger)
        assert await refused(fleet, other_ca) == grpc.StatusCode.UNAVAILABLE
        plaintext = grpc.aio.insecure_channel(fleet.address)
        assert await refused(fleet, plaintext) == grpc.StatusCode.UNAVAILABLE
        # The fleet saw no Hello at all: the handshake failed before any frame.
        assert fleet.metrics.value("liftwatch_fleet_frames_total", {"kind": "hello"}) == 0

    run_tls(pki, tmp_path / "fleet.db", scenario, edge_1=["U1"])


def test_plaintext_keeps_hello_units_and_warns(tmp_path: Path, caplog: Any) -> None:
    async def scenario(fleet: Fleet) -> None:
        call = await fleet.connect(hello("anyone", "U7"))
        assert (await first_frame(call)).welcome.committed_seq == 0
        await call.write(batch(record(1, "U7")))
        assert (await first_frame(call)).ack.up_to_seq == 1
        await call.done_writing()

    with caplog.at_level(logging.WARNING, logger="fleet.serve.server"):
        harness.run(FleetConfig(store=StoreConfig(path=str(tmp_path / "f.db"))), scenario)
    assert any(
        "plaintext" in r.getMessage() and "demo or the rig on loopback" in r.getMessage()
        for r in caplog.records
    )


def test_tls_config_keys_go_together_and_bad_files_stop_serve(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tls\.key, tls\.client_ca: must be set too"):
        parse_config({"tls": {"cert": "server.pem"}}, tmp_path, source="t.toml")
    config = parse_config(
        {"tls": {"cert": "s.pem", "key": "s.key", "client_ca": "ca.pem"}}, tmp_path, source="t"
    )
    assert config.tls == TlsConfig(tmp_path / "s.pem", tmp_path / "s.key", tmp_path / "ca.pem")
    assert not parse_config({}, tmp_path, source="t").tls.enabled
    example = Path(__file__).resolve().parents[2] / "deploy" / "fleet" / "fleet.example.toml"
    shipped = load_config(example).tls  # mutual TLS by default outside the demo
    assert shipped.client_ca == example.parent / "pki" / "ca.pem"

    load_tls(pki.tls)  # the good set loads
    with pytest.raises(TlsSetupError, match=r"tls\.cert: cannot read .*s\.pem"):
        load_tls(config.tls)
    wrong_key = dataclasses.replace(pki.tls, key=pki.dir / "agents" / "edge-1.key")
    with pytest.raises(TlsSetupError, match=r"tls\.key: .* is not the key of tls\.cert"):
        load_tls(wrong_key)
    not_a_cert = dataclasses.replace(pki.tls, client_ca=pki.dir / "ca.key")
    with pytest.raises(TlsSetupError, match=r"tls\.client_ca: .* is not a PEM certificate"):
        load_tls(not_a_cert)

    bad = FleetConfig(store=StoreConfig(path=":memory:"), tls=wrong_key)
    with pytest.raises(ServeError, match="is not the key of"):
        asyncio.run(serve(bad))


def test_agent_registry_on_both_backends(store_target: str) -> None:
    store = open_store(store_target)
    try:
        assert store.agent_registrations() == {}
        assert store.add_agent_units("edge-1", ["U2", "U1", "U1"]) == 2
        assert store.add_agent_units("edge-1", ["U1", "U3"]) == 1
        assert store.add_agent_units("edge-2", ["U3"]) == 1  # a unit may have two boxes
        assert store.agent_units("edge-1") == ("U1", "U2", "U3")
        assert store.agent_units("nobody") == ()
        assert store.remove_agent_units("edge-1", ["U3", "U9"]) == 1
        assert store.agent_registrations() == {"edge-1": ("U1", "U2"), "edge-2": ("U3",)}
        assert store.remove_agent_units("edge-1") == 2
        assert store.agent_registrations() == {"edge-2": ("U3",)}
    finally:
        store.close()


def test_pki_commands(tmp_path: Path, capsys: Any) -> None:
    directory = tmp_path / "pki"
    assert main(["pki", "init", str(directory)]) == 0
    assert "ca.pem" in capsys.readouterr().out
    assert main(["pki", "init", str(directory)]) == 2
    assert "a CA already exists" in capsys.readouterr().err

    assert main(["pki", "server", str(directory), "--host", "fleet.example", "--json"]) == 0
    issued = json.loads(capsys.readouterr().out)
    pem = (directory / "server.pem").read_bytes()
    assert issued == {
        "certificate": str(directory / "server.pem"),
        "key": str(directory / "server.key"),
        "serial": format(x509.load_pem_x509_certificate(pem).serial_number, "x"),
    }
    assert main(["pki", "server", str(directory), "--host", "fleet.example"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["pki", "server", str(directory), "--host", "other", "--force"]) == 0
    capsys.readouterr()

    assert main(["pki", "agent", str(directory), "edge-1"]) == 0
    assert (directory / "agents" / "edge-1.key").stat().st_mode & 0o077 == 0
    assert re.fullmatch(
        r"wrote .*edge-1\.pem and .*edge-1\.key \(serial [0-9a-f]+\)\n", capsys.readouterr().out
    )
    assert main(["pki", "agent", str(directory), "../evil"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("liftwatch-fleet: error: pki agent: agent id '../evil'")
    assert len(err.strip().splitlines()) == 1
    assert main(["pki", "agent", str(tmp_path / "none"), "edge-1"]) == 2
    assert "run `pki init` first" in capsys.readouterr().err
    assert main(["pki", "server", str(directory)]) == 2  # --host is required
    capsys.readouterr()
    for args in (["pki"], ["pki", "init"], ["pki", "server"], ["pki", "agent"]):
        assert main([*args, "--help"]) == 0
        assert "usage: liftwatch-fleet pki" in capsys.readouterr().out


def test_agents_commands(tmp_path: Path, capsys: Any) -> None:
    db = str(tmp_path / "fleet.db")
    assert main(["agents", "add", "edge-1", "--unit", "U1", "--unit", "U2", "--db", db]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "agent edge-1: 2 unit(s) added; registered for U1, U2"
    assert "unit 'U1' is not in the district register" in err
    assert main(["agents", "add", "edge-2", "--unit", "U3", "--db", db, "--json"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added == {"agent_id": "edge-2", "added": 1, "units": ["U3"]}

    assert main(["agents", "list", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "agents": [
            {"agent_id": "edge-1", "units": ["U1", "U2"]},
            {"agent_id": "edge-2", "units": ["U3"]},
        ]
    }
    assert main(["agents", "list", "--db", db]) == 0
    assert capsys.readouterr().out.split() == [
        "AGENT_ID",
        "UNITS",
        "edge-1",
        "U1,U2",
        "edge-2",
        "U3",
    ]

    assert main(["agents", "remove", "edge-1", "--unit", "U9", "--db", db]) == 2
    assert "agent 'edge-1' is not registered for unit(s) 'U9'" in capsys.readouterr().err
    assert main(["agents", "remove", "edge-1", "--unit", "U1", "--db", db]) == 0
    assert capsys.readouterr().out.strip() == "agent edge-1: 1 unit(s) removed; registered for U2"
    assert main(["agents", "remove", "edge-2", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"agent_id": "edge-2", "removed": 1, "units": []}
    assert main(["agents", "remove", "edge-2", "--db", db]) == 2
    assert "agent 'edge-2' is not registered" in capsys.readouterr().err

    assert main(["agents", "add", "bad id", "--unit", "U1", "--db", db]) == 2
    assert "contains whitespace" in capsys.readouterr().err
    assert main(["agents", "add", "edge-3", "--db", db]) == 2  # --unit is required
    capsys.readouterr()
    assert main(["agents", "list", "--db", ":memory:"]) == 2
    capsys.readouterr()
    for args in (["agents"], ["agents", "add"], ["agents", "list"], ["agents", "remove"]):
        assert main([*args, "--help"]) == 0
        assert "usage: liftwatch-fleet agents" in capsys.readouterr().out


def test_revocation_list_and_access_changes_on_both_backends(store_target: str) -> None:
    store = open_store(store_target)
    try:
        start = store.last_access_change()
        at = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
        assert store.revocation_reason("edge-1", "abc") is None
        assert store.revoke_agent(at, serial="abc", reason="stolen")
        assert not store.revoke_agent(at, serial="abc")  # already on the list
        assert (
            store.revocation_reason("edge-1", "abc") == "certificate serial abc is revoked: stolen"
        )
        assert store.revocation_reason("edge-1", "abd") is None
        assert store.revoke_agent(at, agent_id="edge-2")
        assert store.revocation_reason("edge-2", "fff") == "agent edge-2 is revoked"
        with pytest.raises(ValueError, match="one agent id or one certificate serial"):
            store.revoke_agent(at, agent_id="edge-3", serial="abc")
        assert [(r.agent_id, r.serial, r.reason, r.revoked) for r in store.revocations()] == [
            ("", "abc", "stolen", at),
            ("edge-2", "", "", at),
        ]
        store.add_agent_units("edge-1", ["U1"])
        assert store.unrevoke_agent(serial="abc")
        assert not store.unrevoke_agent(serial="abc")
        assert store.revocation_reason("edge-1", "abc") is None
        changes = store.access_changes(start)
        # Every change, in order: the two revocations, the registration, the unrevocation.
        assert [(c.agent_id, c.serial) for c in changes] == [
            ("", "abc"),
            ("edge-2", ""),
            ("edge-1", ""),
            ("", "abc"),
        ]
        assert store.last_access_change() == changes[-1].id
        assert store.access_changes(changes[-1].id) == []
    finally:
        store.close()


def test_serials_are_normalized() -> None:
    assert normalize_serial("0x00AB:CD ef") == "abcdef"
    assert normalize_serial("0") == "0"
    assert serial_text(0xABCDEF) == "abcdef"
    for bad in ("", "xyz", "1" * 41):
        with pytest.raises(ValueError, match="expected up to 40 hexadecimal digits"):
            normalize_serial(bad)
