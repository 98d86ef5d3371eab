"""Running the fleet manager: store, register import, group commit, coverage sweep, the
agent gRPC server (ingest, health, reflection), the operators' FleetQuery server, and the
JSON API on one event loop, and a graceful stop in the reverse order.

Agents and operators never share a port: the agent port (``[server] listen``, mutual TLS)
serves AgentGateway, and answers FleetQuery with PERMISSION_DENIED; FleetQuery is served on
``[query] listen`` to API tokens (`fleet.ingest.access`). A listener without TLS is refused on a
non-loopback address unless ``tls.plaintext`` is set (`fleet.ingest.access.plaintext_problems`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import signal
from collections.abc import Callable, Iterator, Mapping
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from starlette.applications import Starlette

from fleet.alarms.service import Lifecycle, running_lifecycle
from fleet.auth.throttle import ThrottleSettings
from fleet.clock import Clock, utc_now
from fleet.config import FleetConfig, HttpConfig, split_listen
from fleet.history.checkpoint import CheckpointError, load_private_key
from fleet.history.verify import run_checkpoints
from fleet.ingest.access import (
    AgentAccess,
    OperatorAccess,
    TlsMaterial,
    TlsSetupError,
    deny_on_agent_port,
    load_tls,
    plaintext_problems,
    query_credentials,
    server_credentials,
    watch_access_changes,
)
from fleet.ingest.committer import GroupCommitter, running_committer
from fleet.ingest.evidence import watch_evidence_requests
from fleet.ingest.gateway import AgentGateway, add_gateway_to_server
from fleet.ingest.sweeper import run_sweeper
from fleet.metrics import GatewayMetrics
from fleet.northbound.forwarder import running_northbound
from fleet.read.query import FleetQuery
from fleet.read.selection import Reads
from fleet.releases.desk import ReleaseDesk, RolloutMetrics, run_desk
from fleet.reports.maintenance import run_maintenance
from fleet.retention import RetentionMetrics, run_retention
from fleet.serve.roles import DISPATCH, ROLLOUTS, SWEEPER, running_roles
from fleet.store.open import open_store
from fleet.store.postgres import is_postgres_url
from fleet.store.worker import StoreWorker
from fleet.units.firmware import EMPTY_POLICY, Policy, load_policy
from fleet.units.registry import read_register
from fleet.web.api import build_app, metrics_app
from fleet.web.auth import Authenticator, AuthSettings
from fleet.web.dashboard import SiteSettings
from fleet.web.http import BodyLimits, HttpBindError, running_http
from fleet.web.live import LiveHub, StreamLimits, UnitContractors
from fleet.web.relay import LiveRelay, PipeTransport, PostgresTransport, Transport
from fleet.web.scope import FreshContractors
from protos.liftwatch.v1 import gateway_pb2, query_pb2, query_pb2_grpc

log = logging.getLogger(__name__)

# In-flight calls get this long to finish on shutdown; agents then resume from Welcome.
STOP_GRACE_S = 5.0
# Agents ping every 30 s (agent.uplink); a lower floor here keeps the server from
# answering their keepalives with GOAWAY "too_many_pings".
MIN_PING_INTERVAL_MS = 10_000
# Room above the batch limit so a slightly oversized batch gets a TOO_LARGE Reject
# instead of a bare RESOURCE_EXHAUSTED from the transport.
MESSAGE_HEADROOM_BYTES = 1024 * 1024
# What each port serves (and its reflection lists, with health and reflection itself).
AGENT_SERVICE_NAMES = (gateway_pb2.DESCRIPTOR.services_by_name["AgentGateway"].full_name,)
QUERY_SERVICE_NAMES = (query_pb2.DESCRIPTOR.services_by_name["FleetQuery"].full_name,)


class ServeError(Exception):
    """The server could not start (e.g. the listen address cannot be bound)."""


def server_options(config: FleetConfig) -> list[tuple[str, int]]:
    """gRPC server channel arguments for ``config``: fit for many thousand long-lived
    agent streams (keepalive both ways, bounded messages, connection ageing)."""
    max_message = config.ingest.max_batch_bytes + MESSAGE_HEADROOM_BYTES
    server = config.server
    options = [
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        # Pings from agents that have nothing to send are fine (their streams idle for
        # minutes between batches): never count them as abuse.
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.keepalive_time_ms", int(server.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(server.keepalive_timeout_s * 1000)),
        # gRPC sets SO_REUSEPORT by default: a second fleet on the same port would then
        # bind silently and take half of the agents. Fail loudly instead, unless this is
        # one of `serve --workers` processes, which share the port on purpose (the parent
        # checks that nobody else holds it, see fleet.serve.workers).
        ("grpc.so_reuseport", 1 if server.workers > 1 else 0),
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", 16 * 1024 * 1024),
        # No bandwidth-delay probing: it sent more PINGs than there were agent messages
        # (367 for 251 in a test), each one more frame for the fleet to write and read
        # back and for the agent to answer. A fixed window as large as the biggest batch
        # takes its place, so that a replay after an outage still sends a whole batch
        # without waiting for window updates on a slow uplink.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", max_message),
    ]
    if server.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(server.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(server.max_connection_age_grace_s * 1000)),
        ]
    return options


async def import_register(
    store: StoreWorker, path: Path, metrics: GatewayMetrics | None = None
) -> int:
    """Load the register CSV at ``path`` into ``store``; logs (and counts) each skipped
    row; returns the number of entries imported. Raises `fleet.units.registry.RegistryError`
    for an unusable file."""
    register = await asyncio.to_thread(read_register, path)
    for problem in register.problems:
        log.warning("register %s: %s (row skipped)", path, problem)
        if metrics is not None:
            metrics.bad_input.labels(kind="register_row").inc()
    count = await store.upsert_register(register.entries)
    await store.call(lambda s: s.upsert_register_details(register.details, register.optional))
    log.info(
        "register %s: imported %d unit(s), skipped %d row(s)",
        path,
        count,
        len(register.problems),
    )
    return count


Ready = Callable[[Mapping[str, str]], None]


async def serve(
    config: FleetConfig,
    ready: Ready | None = None,
    *,
    clock: Clock = utc_now,
    metrics: GatewayMetrics | None = None,
    sweep_trigger: asyncio.Event | None = None,
    relay_pipe: Connection | None = None,
) -> None:
    """Run the fleet manager until cancelled, SIGTERM or SIGINT, then stop gracefully.

    ``ready`` is called once with the bound addresses (``{"grpc": "host:port"}``, plus
    ``"http"`` unless the API is disabled) after the servers have started.
    ``sweep_trigger`` replaces the coverage sweep's timer (tests; see `fleet.ingest.sweeper`).
    ``relay_pipe``: a ``serve --workers`` worker's pipe to the parent, the way live updates
    reach the other workers on SQLite (`fleet.web.relay.PipeTransport`).
    Raises `fleet.store.base.StoreError`, `fleet.units.registry.RegistryError`,
    `fleet.units.firmware.PolicyError` or `ServeError` when startup fails; everything started
    is stopped on every exit path.
    """
    host, _ = split_listen(config.server.listen)
    refused = plaintext_problems(config)
    if refused:
        raise ServeError("; ".join(refused))
    if config.tls.plaintext:
        log.warning(
            "tls.plaintext = true (serve --insecure-plaintext): listeners without TLS serve "
            "plaintext on any address; anyone on the network may read and forge agent "
            "records and sessions. Fit only for a lab"
        )
    policy = load_policy(config.firmware.policy) if config.firmware.policy else EMPTY_POLICY
    tls: TlsMaterial | None = None
    if config.tls.enabled:
        try:
            tls = load_tls(config.tls)
        except TlsSetupError as exc:
            raise ServeError(str(exc)) from None
    else:
        log.warning(
            "no [tls] configured: gRPC on %s is plaintext and any client may claim any "
            "agent id; fit only for a demo or the rig on loopback",
            config.server.listen,
        )
    # Handlers go in before anything is announced: whoever reads the ready line may
    # send SIGTERM at once, and the default action would kill us without a clean stop.
    with _stop_on_signals() as stop:
        await _serve_until(
            config,
            host,
            stop,
            ready,
            clock,
            metrics or GatewayMetrics(),
            policy,
            sweep_trigger,
            tls,
            relay_pipe,
        )
    log.info("stopped")


async def _serve_until(
    config: FleetConfig,
    host: str,
    stop: asyncio.Event,
    ready: Ready | None,
    clock: Clock,
    metrics: GatewayMetrics,
    policy: Policy,
    sweep_trigger: asyncio.Event | None,
    tls: TlsMaterial | None = None,
    relay_pipe: Connection | None = None,
) -> None:
    store = await StoreWorker.open(lambda: open_store(config.store.target))
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(store.close)
        if config.registry.csv is not None:
            await import_register(store, config.registry.csv, metrics)
        committer = await stack.enter_async_context(
            running_committer(store, clock, metrics, config.ingest.max_group_records)
        )
        # The coverage sweep and alarm dispatch run on one instance of those sharing the
        # store at a time, the holder of their role's lease (fleet.serve.roles).
        roles = await stack.enter_async_context(running_roles(store, clock, metrics.registry))
        sweeper = asyncio.create_task(
            run_sweeper(
                store,
                clock,
                config.coverage,
                metrics,
                sweep_trigger,
                owns=lambda: roles.holds(SWEEPER),
            ),
            name="sweep",
        )
        stack.push_async_callback(_cancel, sweeper)
        history = config.history
        if history.checkpoint_file is not None and history.checkpoint_key is not None:
            try:
                signing_key = load_private_key(history.checkpoint_key)
            except CheckpointError as exc:
                raise ServeError(f"history.checkpoint_key: {exc}") from None
            checkpoints = asyncio.create_task(
                run_checkpoints(
                    store,
                    clock,
                    history.checkpoint_file,
                    signing_key,
                    history.checkpoint_interval_s,
                ),
                name="history-checkpoint",
            )
            stack.push_async_callback(_cancel, checkpoints)
        # Alarm dispatch and the fleet gauges (fleet.alarms.service), fed by the committer.
        lifecycle = await stack.enter_async_context(
            running_lifecycle(
                store,
                config.alarms,
                config.coverage,
                clock,
                metrics.registry,
                committer,
                owns_dispatch=lambda: roles.holds(DISPATCH),
            )
        )
        # Forwarding to regional platforms (fleet.northbound): a task per platform, each
        # sending only while this process holds that platform's lease in the store.
        await stack.enter_async_context(
            running_northbound(store, config.northbound, clock, metrics.registry)
        )
        # Maintenance visits derived from new car-state records, recent records judged
        # again, every [maintenance.verdicts] derive_interval_s (fleet.reports.maintenance).
        upkeep = asyncio.create_task(
            run_maintenance(store, clock, config.maintenance, metrics), name="maintenance"
        )
        stack.push_async_callback(_cancel, upkeep)
        # Raw records older than [retention] window_days folded into hourly aggregates,
        # every interval_s, by whichever instance holds the lease (fleet.retention).
        retention = asyncio.create_task(
            run_retention(store, clock, config.retention, RetentionMetrics(metrics.registry)),
            name="retention",
        )
        stack.push_async_callback(_cancel, retention)
        reads = Reads(store, config.coverage, policy, clock)
        access = AgentAccess.of_store(store) if tls is not None else None
        # Agent updates (issue 20): offers on the streams, FetchRelease, reports, and the
        # rollouts advanced every fleet.releases.desk.STEP_S by the rollouts role's holder.
        desk = ReleaseDesk(store, RolloutMetrics(metrics.registry), lambda: clock().timestamp())
        rollouts = asyncio.create_task(
            run_desk(desk, owns=lambda: roles.holds(ROLLOUTS)), name="rollouts"
        )
        stack.push_async_callback(_cancel, rollouts)
        gateway = AgentGateway(committer, config.ingest, metrics, access, releases=desk)
        addresses = {"grpc": await _start_grpc(stack, config, host, gateway, reads, tls)}
        # Dispatchers' evidence requests (taken by any process's web side) reach the agent
        # streams this process holds within fleet.ingest.evidence.EVIDENCE_POLL_S.
        requests = asyncio.create_task(
            watch_evidence_requests(store, gateway.evidence_outlets, clock, metrics),
            name="evidence-requests",
        )
        stack.push_async_callback(_cancel, requests)
        if access is not None:
            # `agents remove` / `agents revoke` end the agent's open streams within
            # fleet.ingest.access.ACCESS_POLL_S, whichever process wrote the change.
            watcher = asyncio.create_task(
                watch_access_changes(store, gateway.recheck), name="agent-access"
            )
            stack.push_async_callback(_cancel, watcher)
        if config.query.listen:
            addresses["query"] = await _start_query(stack, config, reads, store, tls)
        live: LiveHub | None = None
        if config.http.listen:
            app, hub = await _web_app(
                stack, config, store, reads, metrics, lifecycle, committer, clock
            )
            live = hub
            http = config.http
            try:
                addresses["http"] = await stack.enter_async_context(
                    running_http(
                        app,
                        http.listen,
                        http.cert,
                        http.key,
                        BodyLimits(body=http.max_body_bytes, upload=http.max_upload_bytes),
                        lambda kind: metrics.bad_input.labels(kind="request_body").inc(),
                    )
                )
            except HttpBindError as exc:
                raise ServeError(str(exc)) from None
            # Ends the open live streams before uvicorn's graceful stop waits for them
            # (the stack unwinds in reverse: this runs first).
            stack.callback(hub.close)
        if config.http.metrics_listen:
            # Also without the API: each `serve --workers` process serves its own metrics
            # (fleet.serve.workers gives each its port).
            http = config.http
            try:
                addresses["metrics"] = await stack.enter_async_context(
                    running_http(
                        metrics_app(metrics, _metrics_token(http.metrics_token_file), _hsts(http)),
                        http.metrics_listen,
                        http.cert,
                        http.key,
                    )
                )
            except HttpBindError as exc:
                raise ServeError(str(exc)) from None
        # Live updates from and to every instance on this database, or every worker of
        # this `serve --workers` (fleet.web.relay); an instance without pages only sends.
        transport: Callable[[], contextlib.AbstractAsyncContextManager[Transport]] | None = None
        if is_postgres_url(config.store.target):
            transport = functools.partial(PostgresTransport.connect, config.store.target)
        elif relay_pipe is not None:
            transport = functools.partial(PipeTransport.connect, relay_pipe)
        if transport is not None:
            relay = LiveRelay(transport, live, roles.owner)
            committer.observers.append(relay.observe)
            relaying = asyncio.create_task(relay.run(), name="live-relay")
            stack.push_async_callback(_cancel, relaying)
        log.info(
            "fleet manager serving gRPC (%s) on %s%s%s, store %s",
            "mutual TLS" if tls is not None else "plaintext",
            addresses["grpc"],
            f", FleetQuery on {addresses['query']}" if "query" in addresses else "",
            f", HTTP{'S' if config.http.tls else ''} on {addresses['http']}"
            if "http" in addresses
            else "",
            store.description,
        )
        if ready is not None:
            ready(addresses)
        await stop.wait()
        log.info("stopping (grace %.0f s)", STOP_GRACE_S)


async def _web_app(
    stack: contextlib.AsyncExitStack,
    config: FleetConfig,
    store: StoreWorker,
    reads: Reads,
    metrics: GatewayMetrics,
    lifecycle: Lifecycle,
    committer: GroupCommitter,
    clock: Clock,
) -> tuple[Starlette, LiveHub]:
    """The JSON API and the dashboard, with live updates fed by ``committer``; and the
    hub of those updates (the caller ends its streams when the server stops)."""
    http = config.http
    # The unit -> contractor map scoping contractors, current with every register import
    # (any process): checked before each contractor request, polled for open live streams.
    contractors = UnitContractors()
    fresh = FreshContractors(store, contractors)
    await fresh.refresh()
    hub = LiveHub(
        contractors,
        alarm_types=config.alarms.type_numbers,
        limits=StreamLimits(
            per_user=http.live_streams_per_user,
            per_session=http.live_streams_per_session,
            send_timeout_s=http.live_send_timeout_s,
        ),
    )
    committer.observers.append(hub.observe_soon)
    refresher = asyncio.create_task(fresh.watch(), name="contractors")
    stack.push_async_callback(_cancel, refresher)
    auth: Authenticator | None = None
    if http.auth:
        auth = Authenticator(
            store,
            clock,
            AuthSettings(
                session_ttl=dt.timedelta(seconds=http.session_ttl_s),
                secure_cookies=http.https_site,
                throttle=ThrottleSettings(
                    free_failures=http.login_free_failures,
                    lockout_s=http.login_lockout_s,
                    lockout_max_s=http.login_lockout_max_s,
                ),
            ),
            metrics,
        )
    else:
        log.warning(
            "[http] auth = false: everyone reaching %s acts as an administrator; fit only "
            "for a closed test network",
            http.listen,
        )
    app = build_app(
        reads,
        metrics,
        lifecycle,
        auth=auth,
        hub=hub,
        refresh_scope=fresh.refresh,
        site=SiteSettings(time_zone=http.time_zone, language=http.language),
        store=store,
        reports=config.reports,
        history=config.history,
        plan=config.maintenance.plan,
        publication=config.publication,
        maintenance=config.maintenance,
        clock=clock,
        hsts_max_age_s=_hsts(http),
        metrics_token=_metrics_token(http.metrics_token_file),
        serve_metrics=not http.metrics_listen,
    )
    return app, hub


def _hsts(http: HttpConfig) -> int:
    """The HSTS max-age to send: the configured one while the site is HTTPS, else none."""
    return http.hsts_max_age_s if http.https_site else 0


def _metrics_token(path: Path | None) -> str:
    """The token /metrics asks for ("" = none); `ServeError` naming the key when the file
    is unreadable or empty (serving /metrics open by mistake would be worse)."""
    if path is None:
        return ""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ServeError(f"http.metrics_token_file: cannot read {path}: {exc}") from None
    if not token or any(ch.isspace() for ch in token):
        raise ServeError(
            f"http.metrics_token_file: {path} must hold one token (no spaces), not "
            f"{'nothing' if not token else 'several words'}"
        )
    return token


async def _start_grpc(
    stack: contextlib.AsyncExitStack,
    config: FleetConfig,
    host: str,
    gateway: AgentGateway,
    reads: Reads,
    tls: TlsMaterial | None = None,
) -> str:
    server = grpc.aio.server(options=server_options(config))
    add_gateway_to_server(gateway, server)
    # Registered so that a caller learns why (PERMISSION_DENIED, pointing at [query]) rather
    # than UNIMPLEMENTED; reflection does not list it.
    query_pb2_grpc.add_FleetQueryServicer_to_server(FleetQuery(reads, deny_on_agent_port), server)
    credentials = server_credentials(tls) if tls is not None else None
    return await _serve_grpc(
        stack, server, config.server.listen, host, AGENT_SERVICE_NAMES, credentials, "agents"
    )


async def _start_query(
    stack: contextlib.AsyncExitStack,
    config: FleetConfig,
    reads: Reads,
    store: StoreWorker,
    tls: TlsMaterial | None,
) -> str:
    """FleetQuery for operators on ``[query] listen``; returns the bound host:port."""
    if not config.query.auth:
        log.warning(
            "[query] auth = false: everyone reaching %s reads the whole fleet over "
            "FleetQuery; fit only for a rig on loopback",
            config.query.listen,
        )
    server = grpc.aio.server(options=server_options(config))
    operators = OperatorAccess(store, config.query.auth)
    query_pb2_grpc.add_FleetQueryServicer_to_server(FleetQuery(reads, operators.principal), server)
    host, _ = split_listen(config.query.listen)
    credentials = query_credentials(tls) if tls is not None else None
    return await _serve_grpc(
        stack, server, config.query.listen, host, QUERY_SERVICE_NAMES, credentials, "query"
    )


async def _serve_grpc(
    stack: contextlib.AsyncExitStack,
    server: grpc.aio.Server,
    listen: str,
    host: str,
    services: tuple[str, ...],
    credentials: grpc.ServerCredentials | None,
    what: str,
) -> str:
    """Add health and reflection (listing ``services``) to ``server``, bind ``listen``
    (TLS with ``credentials``), start it and stop it when ``stack`` unwinds."""
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError as exc:
        raise ServeError(f"cannot listen on {listen} ({what}): {exc}") from None
    await server.start()
    # Stopped before the committer (the stack unwinds in reverse): in-flight streams
    # still get their last batches committed and acked during the grace period.
    stack.push_async_callback(server.stop, STOP_GRACE_S)
    for name in ("", *services):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    stack.push_async_callback(health_servicer.enter_graceful_shutdown)
    return f"{host}:{port}"


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


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
