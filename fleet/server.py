"""Running the fleet manager: store, register import, gRPC server, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from fleet.clock import Clock, utc_now
from fleet.config import FleetConfig, split_listen
from fleet.gateway import AgentGateway
from fleet.metrics import GatewayMetrics
from fleet.query import FleetQuery
from fleet.registry import read_register
from fleet.store.sqlite import SqliteStore
from fleet.store.worker import StoreWorker
from protos.liftwatch.v1 import gateway_pb2_grpc, query_pb2_grpc

log = logging.getLogger(__name__)

# In-flight calls get this long to finish on shutdown; agents then resume from Welcome.
STOP_GRACE_S = 5.0
# Agents ping every 30 s (agent.uplink); a lower floor here keeps the server from
# answering their keepalives with GOAWAY "too_many_pings".
MIN_PING_INTERVAL_MS = 10_000
# Room above the batch limit so a slightly oversized batch gets a TOO_LARGE Reject
# instead of a bare RESOURCE_EXHAUSTED from the transport.
MESSAGE_HEADROOM_BYTES = 1024 * 1024


class ServeError(Exception):
    """The server could not start (e.g. the listen address cannot be bound)."""


def server_options(config: FleetConfig) -> list[tuple[str, int]]:
    """gRPC server channel arguments for ``config``."""
    max_message = config.ingest.max_batch_bytes + MESSAGE_HEADROOM_BYTES
    return [
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        # gRPC sets SO_REUSEPORT by default: a second fleet on the same port would then
        # bind silently and take half of the agents. Fail loudly instead.
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ]


async def import_register(store: StoreWorker, path: Path) -> int:
    """Load the register CSV at ``path`` into ``store``; logs each skipped row; returns the
    number of entries imported. Raises `fleet.registry.RegistryError` for an unusable file."""
    register = await asyncio.to_thread(read_register, path)
    for problem in register.problems:
        log.warning("register %s: %s (row skipped)", path, problem)
    count = await store.upsert_register(register.entries)
    log.info(
        "register %s: imported %d unit(s), skipped %d row(s)",
        path,
        count,
        len(register.problems),
    )
    return count


async def serve(
    config: FleetConfig,
    ready: Callable[[str], None] | None = None,
    *,
    clock: Clock = utc_now,
    metrics: GatewayMetrics | None = None,
) -> None:
    """Run the fleet manager until cancelled, SIGTERM or SIGINT, then stop gracefully.

    ``ready`` is called once with the bound ``host:port`` after the server has started.
    Raises `fleet.store.base.StoreError`, `fleet.registry.RegistryError` or `ServeError`
    when startup fails; the store is closed on every exit path.
    """
    host, _ = split_listen(config.server.listen)
    # Handlers go in before anything is announced: whoever reads the ready line may
    # send SIGTERM at once, and the default action would kill us without a clean stop.
    with _stop_on_signals() as stop:
        await _serve_until(config, host, stop, ready, clock, metrics)
    log.info("stopped")


async def _serve_until(
    config: FleetConfig,
    host: str,
    stop: asyncio.Event,
    ready: Callable[[str], None] | None,
    clock: Clock,
    metrics: GatewayMetrics | None,
) -> None:
    store = await StoreWorker.open(lambda: SqliteStore.open(config.store.path))
    try:
        if config.registry.csv is not None:
            await import_register(store, config.registry.csv)
        server = grpc.aio.server(options=server_options(config))
        gateway_pb2_grpc.add_AgentGatewayServicer_to_server(
            AgentGateway(store, config.ingest, metrics or GatewayMetrics(), clock), server
        )
        query_pb2_grpc.add_FleetQueryServicer_to_server(
            FleetQuery(store, config.coverage, clock), server
        )
        try:
            port = server.add_insecure_port(config.server.listen)
        except RuntimeError as exc:
            raise ServeError(f"cannot listen on {config.server.listen}: {exc}") from None
        await server.start()
        try:
            address = f"{host}:{port}"
            log.info("fleet manager serving gRPC on %s, store %s", address, config.store.path)
            if ready is not None:
                ready(address)
            await stop.wait()
            log.info("stopping (grace %.0f s)", STOP_GRACE_S)
        finally:
            await server.stop(STOP_GRACE_S)
    finally:
        await store.close()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGTERM/SIGINT while the block runs (default handlers after it)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Outside the main thread there are no signal handlers; cancellation still works.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield stop
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
