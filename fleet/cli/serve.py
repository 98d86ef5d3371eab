"""``liftwatch-fleet serve``: run the fleet (gRPC, JSON API, FleetQuery) until a signal."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from fleet.cli.common import (
    UsageError,
    config_or_default,
    positive_int,
)
from fleet.config import (
    MEMORY,
    QueryConfig,
    split_listen,
)
from fleet.serve.runtime import tune_gc
from fleet.serve.server import ServeError, serve
from fleet.serve.workers import WorkerError, serve_workers
from fleet.store.postgres import is_postgres_url


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `serve` command."""
    serve_cmd = commands.add_parser(
        "serve",
        help="run the gRPC server and the JSON API until SIGTERM/SIGINT",
        description="Run the fleet manager. Prints one JSON line "
        '{"ready": true, "grpc": "HOST:PORT", "http": "HOST:PORT"} on stdout once the '
        "ports are bound (no http when [http] listen is empty); logs go to stderr.",
    )
    serve_cmd.add_argument("--config", type=Path, help="TOML config (default: built-in)")
    serve_cmd.add_argument("--listen", help="HOST:PORT for gRPC, overrides server.listen")
    serve_cmd.add_argument(
        "--http", help='HOST:PORT for the JSON API, overrides http.listen ("" disables)'
    )
    serve_cmd.add_argument(
        "--query",
        help='HOST:PORT for FleetQuery (operators), overrides query.listen ("" disables); '
        "with --listen on port 0 and no query.listen, port 0 too",
    )
    serve_cmd.add_argument(
        "--insecure-plaintext",
        action="store_true",
        help="allow plaintext listeners on non-loopback addresses (sets tls.plaintext; a "
        "lab only, warned at start)",
    )
    serve_cmd.add_argument(
        "--db", help="SQLite file, :memory: or postgresql:// URL; overrides [store]"
    )
    serve_cmd.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    serve_cmd.add_argument(
        "--workers",
        type=positive_int,
        help="fleet processes sharing the port and the store, overrides server.workers "
        "(the ready line then also lists their pids)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve with the config and overrides in ``args`` until a signal; returns the exit status."""
    """Serve with the config and overrides in ``args``; returns the exit status."""
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = config_or_default(args.config)
    if args.listen is not None:
        try:
            split_listen(args.listen)
        except ValueError as exc:
            raise UsageError(f"--listen: {exc}") from None
        config = dataclasses.replace(
            config, server=dataclasses.replace(config.server, listen=args.listen)
        )
        if args.listen.endswith(":0") and config.query.listen == QueryConfig().listen:
            # A throwaway fleet (tests, the rig) must not collide on the default port.
            config = dataclasses.replace(
                config, query=dataclasses.replace(config.query, listen="127.0.0.1:0")
            )
    if args.query is not None:
        if args.query:
            try:
                split_listen(args.query)
            except ValueError as exc:
                raise UsageError(f"--query: {exc}") from None
        config = dataclasses.replace(
            config, query=dataclasses.replace(config.query, listen=args.query)
        )
    if args.insecure_plaintext:
        config = dataclasses.replace(config, tls=dataclasses.replace(config.tls, plaintext=True))
    if args.http is not None:
        if args.http:
            try:
                split_listen(args.http)
            except ValueError as exc:
                raise UsageError(f"--http: {exc}") from None
        config = dataclasses.replace(
            config, http=dataclasses.replace(config.http, listen=args.http)
        )
    if args.db is not None:
        if is_postgres_url(args.db):
            store = dataclasses.replace(config.store, url=args.db)
        else:
            db = args.db if args.db == MEMORY else str(Path(args.db).resolve())
            store = dataclasses.replace(config.store, path=db, url="")
        config = dataclasses.replace(config, store=store)

    if args.workers is not None:
        config = dataclasses.replace(
            config, server=dataclasses.replace(config.server, workers=args.workers)
        )

    def ready(addresses: Mapping[str, object]) -> None:
        print(json.dumps({"ready": True, **addresses}), flush=True)
        tune_gc()  # after startup: see fleet.serve.runtime

    if config.server.workers > 1:
        if config.store.target == MEMORY:
            raise UsageError("several workers cannot share a :memory: store; use a file or URL")
        try:
            serve_workers(config, ready, args.log_level)
        except WorkerError as exc:
            raise ServeError(str(exc)) from None
        return 0
    asyncio.run(serve(config, ready))
    return 0
