"""The PKI issues certificates that a real grpc.aio server and client use for mutual TLS."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from fleet.auth.pki import PkiError, common_name, init_ca, issue_agent, issue_server


def whoami_handler() -> Any:
    async def whoami(request: bytes, context: Any) -> bytes:
        identities = context.auth_context().get("x509_common_name", [])
        return b",".join(identities)

    return grpc.method_handlers_generic_handler(
        "test.Identity",
        {"WhoAmI": grpc.unary_unary_rpc_method_handler(whoami)},
    )


async def call(port: int, credentials: Any) -> bytes:
    async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
        method = channel.unary_unary("/test.Identity/WhoAmI")
        result: bytes = await method(b"", timeout=5)
        return result


def test_mutual_tls_names_the_agent_and_refuses_a_client_without_certificate(
    tmp_path: Path,
) -> None:
    ca = init_ca(tmp_path)
    server = issue_server(tmp_path, ["localhost", "127.0.0.1"])
    agent = issue_agent(tmp_path, "edge-0048")
    assert common_name(agent.certificate.read_bytes()) == "edge-0048"
    assert oct(agent.key.stat().st_mode & 0o777) == "0o600"

    async def scenario() -> tuple[bytes, grpc.StatusCode]:
        srv = grpc.aio.server()
        srv.add_generic_rpc_handlers((whoami_handler(),))
        creds = grpc.ssl_server_credentials(
            [(server.key.read_bytes(), server.certificate.read_bytes())],
            root_certificates=ca.certificate.read_bytes(),
            require_client_auth=True,
        )
        port = srv.add_secure_port("127.0.0.1:0", creds)
        await srv.start()
        try:
            with_cert = grpc.ssl_channel_credentials(
                root_certificates=ca.certificate.read_bytes(),
                private_key=agent.key.read_bytes(),
                certificate_chain=agent.certificate.read_bytes(),
            )
            identity = await call(port, with_cert)
            without_cert = grpc.ssl_channel_credentials(
                root_certificates=ca.certificate.read_bytes()
            )
            try:
                await call(port, without_cert)
            except grpc.aio.AioRpcError as exc:
                refused = exc.code()
            else:
                raise AssertionError("a client without a certificate was served")
            return identity, refused
        finally:
            await srv.stop(None)

    identity, refused = asyncio.run(scenario())
    assert identity == b"edge-0048"
    assert refused == grpc.StatusCode.UNAVAILABLE


def test_pki_refuses_to_overwrite_a_ca_and_bad_agent_ids(tmp_path: Path) -> None:
    init_ca(tmp_path)
    with pytest.raises(PkiError, match="already exists"):
        init_ca(tmp_path)
    with pytest.raises(PkiError, match="agent id"):
        issue_agent(tmp_path, "../../etc/passwd")
    with pytest.raises(PkiError, match="no CA here"):
        issue_agent(tmp_path / "elsewhere", "edge-1")
