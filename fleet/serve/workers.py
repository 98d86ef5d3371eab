"""``serve --workers N``: N fleet processes on one gRPC port and one store.

One Python process tops out near one core: gRPC's per-message work and the store thread
share one GIL. Several processes share a port through SO_REUSEPORT (the kernel spreads new
connections over them) and a store the way stateless replicas already do (PostgreSQL), or
one SQLite file in WAL mode (one writer at a time, which group commit keeps to a few
transactions per second per process; `fleet.store.sqlite` serializes them across
processes).

The parent creates no gRPC object, and the workers are started with ``spawn`` (a fresh
interpreter each, nothing inherited across a fork: grpc.aio must never cross one); the
parent only supervises:

- worker 0 starts first, alone: it migrates the store, imports the register, binds the
  port (the kernel's pick when it is 0) and serves the JSON API; the others then bind the
  same port, without register and API. Every worker runs the coverage sweep (idempotent:
  the status UPDATE records each transition once, as with replicas).
- one ready line for all, with the bound addresses and the workers' pids;
- SIGTERM/SIGINT: forwarded to every worker, each stops gracefully (in-flight batches are
  committed and acked), then the parent exits 0;
- live updates: on PostgreSQL each worker relays what it commits to the others by
  LISTEN/NOTIFY (`fleet.web.relay`); on SQLite through the parent instead: each worker has
  a pipe to the parent, and a relay thread in the parent passes every message on to the
  other workers, so the pages of worker 0 see what every worker ingests;
- a worker that dies stops the whole set (exit status 1): the service manager restarts it
  and the agents resume from their Welcome; a parent that dies (even by SIGKILL) takes its
  workers with it, through a lifeline pipe, so no orphan keeps serving on the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection, wait
from typing import Any

from fleet.config import (
    MEMORY,
    FleetConfig,
    HistoryConfig,
    HttpConfig,
    RegistryConfig,
    split_listen,
)
from fleet.serve.runtime import tune_gc
from fleet.serve.server import ServeError, serve
from fleet.store.base import StoreError
from fleet.store.postgres import is_postgres_url
from fleet.units.firmware import PolicyError
from fleet.units.registry import RegistryError

log = logging.getLogger(__name__)

MAX_WORKERS = 64
# Worker startup (interpreter, imports, store open, bind) takes a second or two; a store
# migration on a big database may take longer.
START_TIMEOUT_S = 120.0
# Each worker gives in-flight calls `fleet.serve.server.STOP_GRACE_S` (5 s); then the store closes.
STOP_TIMEOUT_S = 30.0
POLL_S = 0.2

# Startup errors cross the process boundary as (class name, message) and are raised again
# in the parent, so the CLI reports them (and picks the exit status) as in one process.
_ERRORS: dict[str, type[Exception]] = {
    "StoreError": StoreError,
    "RegistryError": RegistryError,
    "PolicyError": PolicyError,
    "ServeError": ServeError,
}


class WorkerError(Exception):
    """A worker could not start, or died; the message says which and why."""


Ready = Callable[[Mapping[str, Any]], None]


def worker_config(config: FleetConfig, index: int, listen: str) -> FleetConfig:
    """The configuration of worker ``index``: every worker listens on ``listen``; only
    worker 0 imports the register, serves the JSON API and writes the history checkpoint
    (one port, one importer, one writer). With ``[http] metrics_listen`` each worker
    serves its own /metrics (`worker_metrics_listen`), scraped as an instance of its own."""
    config = dataclasses.replace(config, server=dataclasses.replace(config.server, listen=listen))
    if index == 0:
        return config
    http = HttpConfig(listen="")
    if config.http.metrics_listen:
        http = dataclasses.replace(
            config.http,
            listen="",
            metrics_listen=worker_metrics_listen(config.http.metrics_listen, index),
        )
    # One checkpoint writer too: the file is the fleet's, not each worker's.
    return dataclasses.replace(
        config, http=http, registry=RegistryConfig(), history=HistoryConfig()
    )


def worker_metrics_listen(metrics_listen: str, index: int) -> str:
    """Where worker ``index`` serves /metrics: port + ``index`` (port 0: the kernel's
    pick for each; the ready line lists them as ``metrics_workers``)."""
    host, port = split_listen(metrics_listen)
    return f"{host}:{port + index if port else 0}"


def serve_workers(config: FleetConfig, ready: Ready, log_level: int | str = logging.INFO) -> None:
    """Run ``config.server.workers`` fleet processes until SIGTERM/SIGINT.

    ``ready`` gets ``{"grpc": ..., ["http": ...], "workers": [pid, ...]}`` once all are
    serving. Raises `StoreError`, `RegistryError`, `PolicyError` (as the one-process serve
    would) or `WorkerError` when a worker fails to start or dies; every worker started is
    stopped on every exit path.
    """
    count = config.server.workers
    if not 1 <= count <= MAX_WORKERS:
        raise WorkerError(f"workers must be between 1 and {MAX_WORKERS}, got {count}")
    if config.store.target == MEMORY:
        raise WorkerError("several workers cannot share a :memory: store; use a file or URL")
    _check_port_free(config.server.listen)
    ctx = multiprocessing.get_context("spawn")
    workers: list[_Worker] = []
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()
        for worker in workers:
            worker.terminate()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        first = _Worker.start(ctx, config, 0, config.server.listen, log_level)
        workers.append(first)
        addresses = first.wait_ready(stopping)
        if addresses is None:
            return  # asked to stop while starting
        for index in range(1, count):
            workers.append(_Worker.start(ctx, config, index, addresses["grpc"], log_level))
        metrics = [addresses.get("metrics", "")]
        for worker in workers[1:]:
            bound = worker.wait_ready(stopping)
            if bound is None:
                return
            metrics.append(bound.get("metrics", ""))
        log.info("%d workers serving gRPC on %s", count, addresses["grpc"])
        if not is_postgres_url(config.store.target):
            threading.Thread(
                target=_relay, args=(workers, stopping), name="live-relay", daemon=True
            ).start()
        extra: dict[str, Any] = {"metrics_workers": metrics} if any(metrics) else {}
        ready({**addresses, "workers": [w.pid for w in workers], **extra})
        _supervise(workers, stopping)
    finally:
        _stop_all(workers)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _supervise(workers: list[_Worker], stopping: threading.Event) -> None:
    while not stopping.is_set():
        wait([w.process.sentinel for w in workers], timeout=POLL_S)
        dead = [w for w in workers if not w.process.is_alive()]
        if dead and not stopping.is_set():
            names = ", ".join(f"worker {w.index} (exit {w.process.exitcode})" for w in dead)
            raise WorkerError(f"{names} died; stopping the others")


def _relay(workers: list[_Worker], stopping: threading.Event) -> None:
    """Pass every live-update message a worker sends on to every other worker, until
    ``stopping`` (SQLite's stand-in for LISTEN/NOTIFY, see `fleet.web.relay`)."""
    pipes = {worker.relay: worker for worker in workers}
    while not stopping.is_set() and pipes:
        try:
            ready = wait(list(pipes), timeout=POLL_S)
        except (OSError, ValueError):
            return  # the pipes were closed: the set is stopping
        for pipe in ready:
            assert isinstance(pipe, Connection)
            try:
                message = pipe.recv()
            except (EOFError, OSError):
                del pipes[pipe]  # that worker is gone; the supervisor handles it
                continue
            for other in pipes:
                if other is not pipe:
                    with contextlib.suppress(OSError):
                        other.send(message)


def _stop_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            log.error("worker %d did not stop in %.0f s; killing it", worker.index, STOP_TIMEOUT_S)
            worker.process.kill()
            worker.process.join()
        worker.close()


def _check_port_free(listen: str) -> None:
    """Fail when something listens on ``listen`` already. The workers bind with
    SO_REUSEPORT, which would otherwise let them join another fleet's port silently."""
    host, port = split_listen(listen)
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise WorkerError(f"cannot listen on {listen}: {exc}") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # Plain bind, no SO_REUSEPORT: it fails exactly when another socket holds it.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise WorkerError(f"cannot listen on {listen}: {exc.strerror or exc}") from None


@dataclasses.dataclass
class _Worker:
    index: int
    process: Any  # multiprocessing's SpawnProcess (its type is not public)
    messages: Connection  # worker -> parent: ("ready", addresses) or ("error", kind, text)
    lifeline: Connection  # parent's end; the worker stops when it closes
    relay: Connection  # live updates both ways (`_relay`)

    @classmethod
    def start(
        cls, ctx: Any, config: FleetConfig, index: int, listen: str, log_level: int | str
    ) -> _Worker:
        parent_end, child_end = ctx.Pipe(duplex=False)
        life_read, life_write = ctx.Pipe(duplex=False)
        relay_parent, relay_child = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=_worker_main,
            args=(
                worker_config(config, index, listen),
                index,
                child_end,
                life_read,
                log_level,
                relay_child,
            ),
            name=f"fleet-worker-{index}",
        )
        process.start()
        # The child holds its own copies now; ours would keep EOF from ever arriving.
        child_end.close()
        life_read.close()
        relay_child.close()
        return cls(index, process, parent_end, life_write, relay_parent)

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def wait_ready(self, stopping: threading.Event) -> dict[str, str] | None:
        """The worker's bound addresses; None when ``stopping`` was set meanwhile."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not stopping.is_set():
            if self.messages.poll(POLL_S):
                try:
                    message = self.messages.recv()
                except EOFError:
                    break  # it died before saying anything: reported below
                if message[0] == "ready":
                    return dict(message[1])
                _, kind, text = message
                raise _ERRORS.get(kind, WorkerError)(text)
            if not self.process.is_alive() or time.monotonic() > deadline:
                break
        if stopping.is_set():
            return None
        raise WorkerError(
            f"worker {self.index} did not become ready (exit status {self.process.exitcode})"
        )

    def terminate(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def close(self) -> None:
        self.messages.close()
        self.lifeline.close()
        self.relay.close()


def _worker_main(
    config: FleetConfig,
    index: int,
    messages: Connection,
    lifeline: Connection,
    log_level: int | str,
    relay: Connection,
) -> None:
    """One worker process: serve ``config`` until SIGTERM, SIGINT or the parent's death."""
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s [worker {index}] %(name)s: %(message)s",
    )
    threading.Thread(target=_watch_parent, args=(lifeline,), daemon=True).start()

    def ready(addresses: Mapping[str, str]) -> None:
        messages.send(("ready", dict(addresses)))
        tune_gc()  # after startup: see fleet.serve.runtime

    try:
        asyncio.run(serve(config, ready, relay_pipe=relay))
    except (StoreError, RegistryError, PolicyError, ServeError) as exc:
        messages.send(("error", type(exc).__name__, str(exc)))
        raise SystemExit(1) from None


def _watch_parent(lifeline: Connection) -> None:
    # Blocks until the parent's end closes: the parent exited or was killed.
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv()
    os.kill(os.getpid(), signal.SIGTERM)
