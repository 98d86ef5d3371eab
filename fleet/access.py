"""Who may connect, and for which units: mutual TLS and the agent registry.

With ``[tls]`` configured the gRPC port accepts only clients presenting a certificate that
``tls.client_ca`` signed (`server_credentials`). The agent's identity is the Common Name of
that verified certificate (`peer_agent_id`), never what its Hello claims; `AgentAccess`
then admits a Hello only when

- its agent_id is the certificate's (else ``UNKNOWN_AGENT``, naming both),
- the agent has units registered (``liftwatch-fleet agents add``; else ``UNKNOWN_AGENT``),
- every unit it declares is registered for it (else ``UNIT_NOT_PERMITTED``);

and records are then accepted only for those units (`fleet.gateway.check_batch`). The
registration is read at each Hello: a change takes effect when the agent next connects
(at the latest after ``server.max_connection_age_s``).

Without ``[tls]`` (demo, rig) there is no identity to check, and the units declared in
Hello are accepted as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleet.config import TlsConfig
from protos.liftwatch.v1 import gateway_pb2

# What gRPC's auth context calls the Common Name of the verified peer certificate.
COMMON_NAME_PROPERTY = "x509_common_name"


class TlsSetupError(Exception):
    """The ``[tls]`` files are unusable; the message names the key, the file and why."""


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """The PEM bytes of ``[tls]``, read and checked."""

    cert: bytes
    key: bytes
    client_ca: bytes


def _read(key: str, path: Path | None) -> bytes:
    if path is None:
        raise TlsSetupError(f"tls.{key}: not set")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsSetupError(f"tls.{key}: cannot read {path}: {exc.strerror or exc}") from None


def load_tls(tls: TlsConfig) -> TlsMaterial:
    """Read and check the ``[tls]`` files: PEM certificates, a PEM key that belongs to
    ``tls.cert``. Raises `TlsSetupError` naming the first problem.

    Checked here because gRPC would only report a bad file as a failed handshake, per
    connection, long after the fleet said it was ready.
    """
    material = TlsMaterial(
        _read("cert", tls.cert), _read("key", tls.key), _read("client_ca", tls.client_ca)
    )
    try:
        cert = x509.load_pem_x509_certificates(material.cert)[0]
    except ValueError as exc:
        raise TlsSetupError(f"tls.cert: {tls.cert} is not a PEM certificate ({exc})") from None
    try:
        x509.load_pem_x509_certificates(material.client_ca)
    except ValueError as exc:
        raise TlsSetupError(
            f"tls.client_ca: {tls.client_ca} is not a PEM certificate ({exc})"
        ) from None
    try:
        key = serialization.load_pem_private_key(material.key, None)
    except (ValueError, TypeError) as exc:
        # TypeError: an encrypted key; the fleet starts unattended and has no passphrase.
        raise TlsSetupError(f"tls.key: {tls.key} is not an unencrypted PEM key ({exc})") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != cert.public_key().public_bytes(
        encoding, public
    ):
        raise TlsSetupError(f"tls.key: {tls.key} is not the key of tls.cert {tls.cert}")
    return material


def server_credentials(material: TlsMaterial) -> grpc.ServerCredentials:
    """Server credentials that demand a client certificate signed by ``client_ca``."""
    return grpc.ssl_server_credentials(
        [(material.key, material.cert)],
        root_certificates=material.client_ca,
        require_client_auth=True,
    )


def peer_agent_id(context: Any) -> str:
    """The Common Name of the peer's verified certificate; "" when there is none."""
    names = context.auth_context().get(COMMON_NAME_PROPERTY, [])
    if not names:
        return ""
    first = names[0]
    return first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)


def _reject(code: gateway_pb2.RejectCode, reason: str) -> gateway_pb2.Reject:
    return gateway_pb2.Reject(code=code, reason=reason)


def unit_not_registered(unit_id: str, agent_id: str, seq: int | None = None) -> gateway_pb2.Reject:
    """The Reject for a Hello (``seq`` None) or record naming a unit not registered for
    ``agent_id``."""
    if seq is None:
        reason = (
            f"unit {unit_id!r} is not registered for agent {agent_id!r}: "
            f"liftwatch-fleet agents add {agent_id} --unit {unit_id}"
        )
    else:
        reason = (
            f"record seq {seq} is for unit {unit_id!r}, which is not registered for "
            f"agent {agent_id!r}"
        )
    return _reject(gateway_pb2.REJECT_CODE_UNIT_NOT_PERMITTED, reason)


Lookup = Callable[[str], Awaitable[tuple[str, ...]]]


class AgentAccess:
    """The mutual-TLS admission policy; ``lookup`` returns an agent's registered units."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup

    async def admit(
        self, hello: gateway_pb2.Hello, certified: str
    ) -> tuple[gateway_pb2.Reject | None, frozenset[str]]:
        """Check ``hello`` from a peer whose certificate names ``certified``: a Reject (and
        nothing) when refused, else None and the agent's registered units.

        Store errors from ``lookup`` propagate (the caller ends the stream as UNAVAILABLE).
        """
        claimed = hello.agent_id
        if not certified:
            return _reject(
                gateway_pb2.REJECT_CODE_UNKNOWN_AGENT,
                f"Hello says agent {claimed!r} but the client certificate names no agent "
                "(it has no Common Name)",
            ), frozenset()
        if certified != claimed:
            return _reject(
                gateway_pb2.REJECT_CODE_UNKNOWN_AGENT,
                f"Hello says agent {claimed!r} but the client certificate is agent {certified!r}",
            ), frozenset()
        registered = frozenset(await self._lookup(claimed))
        if not registered:
            return _reject(
                gateway_pb2.REJECT_CODE_UNKNOWN_AGENT,
                f"agent {claimed} is not registered: liftwatch-fleet agents add {claimed} "
                "--unit ...",
            ), frozenset()
        for unit in hello.units:
            if unit.unit_id not in registered:
                return unit_not_registered(unit.unit_id, claimed), frozenset()
        return None, registered
