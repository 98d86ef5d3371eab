"""A fleet served in-process on loopback ports the kernel picks, for the tests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc

from fleet.config import FleetConfig, QueryConfig, ServerConfig
from fleet.metrics import GatewayMetrics
from fleet.serve.server import serve
from protos.liftwatch.v1 import gateway_pb2, gateway_pb2_grpc, query_pb2_grpc
from tests.fleet.factories import T0


@dataclasses.dataclass
class FakeClock:
    """A settable clock: ``now`` is what the fleet sees."""

    now: dt.datetime = T0

    def __call__(self) -> dt.datetime:
        return self.now


@dataclasses.dataclass
class Fleet:
    """Handles on a running in-process fleet."""

    address: str
    http: str
    channel: Any
    metrics: GatewayMetrics
    clock: FakeClock
    sweep: asyncio.Event
    query_address: str = ""
    query_channel: Any = None

    async def connect(self, *frames: gateway_pb2.AgentFrame) -> Any:
        """Open a Connect stream and send ``frames``."""
        call = gateway_pb2_grpc.AgentGatewayStub(self.channel).Connect()
        for frame in frames:
            await call.write(frame)
        return call

    @property
    def query(self) -> Any:
        """A FleetQuery stub on the query listener (no token needed unless the config
        asks for one: see `running_fleet`)."""
        return query_pb2_grpc.FleetQueryStub(self.query_channel)

    async def get(self, path: str) -> tuple[int, Any]:
        """GET ``path`` from the JSON API: (status, parsed body)."""

        def fetch() -> tuple[int, Any]:
            try:
                with urllib.request.urlopen(f"http://{self.http}{path}", timeout=10) as reply:
                    return reply.status, json.loads(reply.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        return await asyncio.to_thread(fetch)


@contextlib.asynccontextmanager
async def running_fleet(
    config: FleetConfig, *, http: bool = False, auth: bool = False, query_auth: bool = False
) -> AsyncIterator[Fleet]:
    """Serve ``config`` (listen addresses replaced by loopback port 0) for the block; the
    HTTP side (``http``) asks for logins only with ``auth`` (the API tests of data
    leave it off; tests/fleet/test_web_auth.py turns it on), FleetQuery for an API token
    only with ``query_auth`` (tests/security turns it on)."""
    config = dataclasses.replace(
        config,
        server=dataclasses.replace(config.server, listen="127.0.0.1:0")
        if config.server.listen != ServerConfig().listen
        else ServerConfig(listen="127.0.0.1:0"),
        http=dataclasses.replace(config.http, listen="127.0.0.1:0" if http else "", auth=auth),
        # FleetQuery on its own loopback port, without a token unless ``query_auth``.
        query=QueryConfig(listen="127.0.0.1:0", auth=query_auth),
    )
    metrics = GatewayMetrics()
    clock = FakeClock()
    sweep = asyncio.Event()
    bound: asyncio.Future[Mapping[str, str]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(config, bound.set_result, clock=clock, metrics=metrics, sweep_trigger=sweep)
    )
    waiters: set[asyncio.Future[Any]] = {task, bound}
    done, _ = await asyncio.wait(waiters, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    assert bound in done, f"server did not start: {task.exception() if task.done() else 'timeout'}"
    address = bound.result()["grpc"]
    query_address = bound.result()["query"]
    try:
        async with (
            grpc.aio.insecure_channel(address) as channel,
            grpc.aio.insecure_channel(query_address) as query_channel,
        ):
            yield Fleet(
                address,
                bound.result().get("http", ""),
                channel,
                metrics,
                clock,
                sweep,
                query_address,
                query_channel,
            )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def run(
    config: FleetConfig, scenario: Callable[[Fleet], Awaitable[None]], *, http: bool = False
) -> None:
    """Run ``scenario`` against a fleet serving ``config``, within 30 s."""

    async def main() -> None:
        async with running_fleet(config, http=http) as fleet:
            await asyncio.wait_for(scenario(fleet), timeout=30)

    asyncio.run(main())
