"""Who may connect, and for which units: mutual TLS and the agent registry.

With ``[tls]`` configured the gRPC port accepts only clients presenting a certificate that
``tls.client_ca`` signed (`server_credentials`). The agent's identity is the Common Name of
that verified certificate (`peer_agent_id`), never what its Hello claims; `AgentAccess`
then admits a Hello only when

- its agent_id is the certificate's (else ``UNKNOWN_AGENT``, naming both),
- the agent has units registered (``liftwatch-fleet agents add``; else ``UNKNOWN_AGENT``),
- every unit it declares is registered for it (else ``UNIT_NOT_PERMITTED``);

- its certificate is not on the revocation list, by serial or by agent id (``agents
  revoke``; else ``UNKNOWN_AGENT`` saying so);

and records are then accepted only for those units (`fleet.ingest.gateway.check_batch`). The
registration is read at each Hello, and `watch_access_changes` re-checks the open streams
of every agent whose registration or revocation changed (``agents remove``, ``agents
revoke``, from any process sharing the store): such a stream ends with a Reject within
`ACCESS_POLL_S` plus one store read.

Without ``[tls]`` (demo, rig) there is no identity to check, and the units declared in
Hello are accepted as before; `plaintext_problems` keeps that to loopback addresses
unless ``tls.plaintext`` says otherwise.

FleetQuery is for operators, not agents (`OperatorAccess`): it is served on its own
listener (``[query] listen``) and asks for a dashboard user's API token, scoped by role;
on the agent port every FleetQuery call is refused with PERMISSION_DENIED
(`deny_on_agent_port`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleet.auth.roles import Principal, Role
from fleet.config import FleetConfig, TlsConfig, split_listen
from fleet.store.agents import AccessChange, serial_text
from fleet.store.base import Store
from fleet.store.worker import StoreWorker
from protos.liftwatch.v1 import gateway_pb2

log = logging.getLogger(__name__)

# What gRPC's auth context calls the Common Name of the verified peer certificate, and
# the certificate itself (PEM).
COMMON_NAME_PROPERTY = "x509_common_name"
PEM_CERT_PROPERTY = "x509_pem_cert"
# How often a serving fleet looks for changes to who may connect (`watch_access_changes`):
# a removed or revoked agent's open streams end within this (plus one store read).
ACCESS_POLL_S = 0.5
# Changes re-read below the newest one seen: PostgreSQL may commit a lower id after a
# higher one (concurrent CLI runs), and a change must not be skipped for that.
ACCESS_OVERLAP = 64
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
# Who reads when [query] auth = false (a rig on loopback).
OPEN_OPERATOR = Principal(username="", role=Role.ADMIN, display_name="(query auth disabled)")


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


def query_credentials(material: TlsMaterial) -> grpc.ServerCredentials:
    """Server credentials of the FleetQuery listener: the fleet's certificate, no client
    certificate asked for (operators send an API token; agents have no business there)."""
    return grpc.ssl_server_credentials([(material.key, material.cert)])


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name from a listen key) is only reachable from this
    machine: 127.0.0.0/8, ::1 or localhost. Any other name counts as reachable."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_problems(config: FleetConfig) -> list[str]:
    """Why ``config`` may not be served: each listener that would speak plaintext on a
    non-loopback address, and FleetQuery without tokens there, naming the key, unless
    ``tls.plaintext`` (a lab) allows it."""
    if config.tls.plaintext:
        return []
    listeners = [("server.listen", config.server.listen, config.tls.enabled, "[tls]")]
    if config.query.listen:
        listeners.append(("query.listen", config.query.listen, config.tls.enabled, "[tls]"))
    if config.http.listen:
        listeners.append(
            ("http.listen", config.http.listen, config.http.tls, "http.cert and http.key")
        )
        if config.http.metrics_listen:
            listeners.append(
                (
                    "http.metrics_listen",
                    config.http.metrics_listen,
                    config.http.tls,
                    "http.cert and http.key",
                )
            )
    problems: list[str] = []
    if config.query.listen and not config.query.auth:
        host, _ = split_listen(config.query.listen)
        if not is_loopback(host):
            problems.append(
                f"query.auth = false on query.listen = {config.query.listen!r} would let anyone "
                "on the network read the whole fleet: turn query.auth on, listen on 127.0.0.1, "
                "or set tls.plaintext = true (serve --insecure-plaintext) for a lab"
            )
    for key, listen, secured, how in listeners:
        host, _ = split_listen(listen)
        if not secured and not is_loopback(host):
            problems.append(
                f"{key} = {listen!r} would serve plaintext beyond this machine: configure "
                f"{how}, listen on 127.0.0.1, or set tls.plaintext = true "
                "(serve --insecure-plaintext) for a lab"
            )
    return problems


def peer_serial(context: Any) -> str:
    """The serial number of the peer's verified certificate, in the revocation list's form
    (`fleet.store.agents.serial_text`); "" when there is none."""
    pems = context.auth_context().get(PEM_CERT_PROPERTY, [])
    if not pems:
        return ""
    try:
        return serial_text(x509.load_pem_x509_certificate(pems[0]).serial_number)
    except ValueError:  # gRPC verified it; unreadable here would be a gRPC bug
        return ""


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
RevokedLookup = Callable[[str, str], Awaitable[str | None]]


async def _never_revoked(agent_id: str, serial: str) -> str | None:
    return None


class AgentAccess:
    """The mutual-TLS admission policy; ``lookup`` returns an agent's registered units,
    ``revoked`` why a certificate (agent id, serial) is revoked, or None."""

    def __init__(self, lookup: Lookup, revoked: RevokedLookup = _never_revoked) -> None:
        self._lookup = lookup
        self._revoked = revoked

    @classmethod
    def of_store(cls, store: StoreWorker) -> AgentAccess:
        """The policy over ``store``'s agent registry and revocation list."""

        async def revoked(agent_id: str, serial: str) -> str | None:
            return await store.call(lambda s: s.revocation_reason(agent_id, serial))

        return cls(store.agent_units, revoked)

    async def admit(
        self, hello: gateway_pb2.Hello, certified: str, serial: str = ""
    ) -> tuple[gateway_pb2.Reject | None, frozenset[str]]:
        """Check ``hello`` from a peer whose certificate names ``certified`` and has serial
        ``serial``: a Reject (and nothing) when refused, else None and the agent's
        registered units.

        Store errors from the lookups propagate (the caller ends the stream as UNAVAILABLE).
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
        revoked = await self._revoked(certified, serial)
        if revoked is not None:
            return _reject(gateway_pb2.REJECT_CODE_UNKNOWN_AGENT, revoked), frozenset()
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


# -- who may have an open stream: re-checked when the registry or the revocation list changes


Recheck = Callable[[str, str], Awaitable[int]]


def _changes_after(after: int) -> Callable[[Store], list[AccessChange]]:
    return lambda store: store.access_changes(after)


async def watch_access_changes(
    store: StoreWorker, recheck: Recheck, interval_s: float = ACCESS_POLL_S
) -> None:
    """Until cancelled, poll ``store`` for changes to who may connect (``agents add``,
    ``remove``, ``revoke``, ``unrevoke``, by any process) and call ``recheck(agent_id,
    serial)`` for each, which ends the open streams no longer admitted. A store error is
    logged and the poll tried again (a change is never skipped: ids are re-read)."""
    seen: set[int] = set()
    newest = await store.call(lambda s: s.last_access_change())
    while True:
        await asyncio.sleep(interval_s)
        after = max(newest - ACCESS_OVERLAP, 0)
        try:
            changes = await store.call(_changes_after(after))
        except Exception as exc:  # the store may be briefly unreachable
            log.warning("reading changes to agent access failed: %s", exc)
            continue
        for change in changes:
            if change.id in seen or change.id <= newest - ACCESS_OVERLAP:
                continue
            try:
                ended = await recheck(change.agent_id, change.serial)
            except Exception as exc:  # retried at the next poll
                log.warning("re-checking agent %r failed: %s", change.agent_id, exc)
                break
            seen.add(change.id)
            newest = max(newest, change.id)
            if ended:
                what = change.agent_id or f"certificate serial {change.serial}"
                log.warning("ended %d open stream(s) of %s: no longer admitted", ended, what)
        floor = newest - ACCESS_OVERLAP
        seen = {i for i in seen if i > floor}


# -- FleetQuery is for operators -------------------------------------------------------

AUTHORIZATION_KEY = "authorization"


async def abort_call(context: Any, code: grpc.StatusCode, message: str) -> NoReturn:
    """End the gRPC call of ``context`` with ``code`` and ``message`` (never returns)."""
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # abort always raises


class OperatorAccess:
    """Who may call FleetQuery on the query listener: the dashboard user whose API token
    (``liftwatch-fleet users token``) the call carries as ``authorization: Bearer
    lwt_...`` metadata; everyone, as an administrator, with ``[query] auth = false``."""

    def __init__(self, store: StoreWorker, enabled: bool = True) -> None:
        self._store = store
        self._enabled = enabled

    async def principal(self, context: Any) -> Principal:
        """The caller's principal; aborts the call UNAUTHENTICATED without a valid token."""
        if not self._enabled:
            return OPEN_OPERATOR
        header = ""
        for key, value in context.invocation_metadata() or ():
            if key == AUTHORIZATION_KEY:
                header = value.decode() if isinstance(value, bytes) else str(value)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            await abort_call(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "FleetQuery needs 'authorization: Bearer lwt_...' metadata: an operator's API "
                "token (liftwatch-fleet users token)",
            )
        row = await self._store.call(lambda s: s.token_user(token.strip()))
        if row is None:
            await abort_call(
                context, grpc.StatusCode.UNAUTHENTICATED, "API token unknown or revoked"
            )
        return row.principal()


async def deny_on_agent_port(context: Any) -> Principal:
    """FleetQuery's answer on the agent port, to every caller (an agent certificate
    included): PERMISSION_DENIED."""
    await abort_call(
        context,
        grpc.StatusCode.PERMISSION_DENIED,
        "FleetQuery is for operators: it is not served on the agent port; use the "
        "[query] listen address with an operator's API token",
    )
