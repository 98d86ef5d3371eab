"""From the fleet's ingest to the engineer's screen: how long a live update takes.

Runs the real fleet manager as a process (auth on, a dispatcher account), a headless
Chromium (Debian's, driven by Playwright) logged in on a unit page, and a synthetic
agent in this process that sends the unit's events over the gRPC gateway, one at a
time, each with a unique reason. A MutationObserver in the page stamps the wall clock
when each event's row appears in the page's event table: what the engineer sees, after
the server-sent event, the parsing and the rendering. Measured per event:

    send_to_page   = row rendered - batch sent by the agent
    commit_to_page = row rendered - the fleet's commit time (stored with the event)

Optionally ``--background-rps`` CarState records per second for other units flow from a
second agent meanwhile, so that the stream is measured under ingest load. Prints one
JSON object: ``{"events", "background_rps", "send_to_page_ms": {"p50", "p99", "max"},
"commit_to_page_ms": {...}}``. Target (issue 9): the page within a second of ingest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from hil_tests.processes import start
from hil_tests.system import SystemUser, add_user
from protos.liftwatch.v1 import gateway_pb2, gateway_pb2_grpc, records_pb2

UNIT = "BENCH-U1"
USER = SystemUser("dispatcher", "dispatcher", "bench-password")
OBSERVER = """
() => {
  window.__rows = {};
  const box = document.getElementById('past-events');
  new MutationObserver(() => {
    const now = Date.now();
    for (const td of box.querySelectorAll('td')) {
      const m = td.textContent.match(/^bench (\\d+)$/);
      if (m && !(m[1] in window.__rows)) window.__rows[m[1]] = now;
    }
  }).observe(box, { childList: true, subtree: true });
}
"""


def _hello(agent_id: str, units: list[str]) -> gateway_pb2.AgentFrame:
    return gateway_pb2.AgentFrame(
        hello=gateway_pb2.Hello(
            agent_id=agent_id,
            agent_version="bench",
            units=[
                gateway_pb2.UnitDescriptor(
                    unit_id=u, controller=records_pb2.ControllerInfo(model="RC-3000")
                )
                for u in units
            ],
        )
    )


def _event(seq: int, index: int) -> records_pb2.Record:
    record = records_pb2.Record(seq=seq, unit_id=UNIT)
    record.time.GetCurrentTime()
    record.event.CopyFrom(
        records_pb2.Event(
            event_id=f"bench-{index}",
            type=records_pb2.EVENT_TYPE_DOOR_SLOWING,
            phase=records_pb2.PHASE_RAISED,
            floor=1,
            reason=f"bench {index}",
        )
    )
    return record


async def _agent_stream(channel: grpc.aio.Channel, agent_id: str, units: list[str]) -> Any:
    call = gateway_pb2_grpc.AgentGatewayStub(channel).Connect()
    await call.write(_hello(agent_id, units))
    frame = await call.read()
    if frame.WhichOneof("frame") != "welcome":
        raise RuntimeError(f"the fleet did not welcome {agent_id}: {frame}")
    return call


async def _background(channel: grpc.aio.Channel, rps: float, stop: asyncio.Event) -> None:
    units = [f"BENCH-BG{n:02d}" for n in range(64)]  # the Hello limit
    call = await _agent_stream(channel, "bench-background", units)
    seq = int(time.time() * 1000)
    period = 0.1
    per_batch = max(1, round(rps * period))
    while not stop.is_set():
        batch = gateway_pb2.RecordBatch()
        for _ in range(per_batch):
            seq += 1
            record = batch.records.add(seq=seq, unit_id=units[seq % len(units)])
            record.time.GetCurrentTime()
            record.car_state.floor = seq % 20
        await call.write(gateway_pb2.AgentFrame(batch=batch))
        await call.read()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period)
    await call.done_writing()


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50": at(0.50), "p99": at(0.99), "max": round(ordered[-1], 1)}


async def measure(events: int, background_rps: float, work: Path) -> dict[str, Any]:
    """Run the fleet, the browser and the agents; the latencies as the docstring says."""
    from playwright.async_api import async_playwright

    config = work / "fleet.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:0"\n[http]\nlisten = "127.0.0.1:0"\n'
        f'[store]\npath = "{work / "fleet.db"}"\n',
        encoding="utf-8",
    )
    await add_user(config, USER, work)
    fleet = await start("fleet", "fleet", ["serve", "--config", str(config)], work)
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("dashboard_live: needs Debian's chromium (apt-get install chromium)")
    stop = asyncio.Event()
    sent: dict[int, float] = {}
    try:
        async with grpc.aio.insecure_channel(str(fleet.ready["grpc"])) as channel:
            call = await _agent_stream(channel, "bench-agent", [UNIT])
            background = (
                asyncio.create_task(_background(channel, background_rps, stop))
                if background_rps > 0
                else None
            )
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=chromium,
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
                )
                page = await browser.new_page()
                base = f"http://{fleet.ready['http']}/"
                await page.goto(base)
                await page.fill("#username", USER.username)
                await page.fill("#password", USER.password)
                await page.click("#login-form button[type=submit]")
                await page.wait_for_selector("#coverage-cards")
                await page.goto(f"{base}#/unit/{UNIT}")
                await page.wait_for_selector("#past-events")
                await page.wait_for_function(
                    "() => document.getElementById('live').dataset.live === 'up'"
                )
                await page.evaluate(OBSERVER)
                seq = int(time.time() * 1000)
                for index in range(events):
                    seq += 1
                    batch = gateway_pb2.RecordBatch(records=[_event(seq, index)])
                    sent[index] = time.time()
                    await call.write(gateway_pb2.AgentFrame(batch=batch))
                    await call.read()  # the ack: committed
                    await page.wait_for_function("i => String(i) in window.__rows", arg=index)
                rows: dict[str, float] = await page.evaluate("window.__rows")
                await browser.close()
            stop.set()
            if background is not None:
                await background
            await call.done_writing()
        events_json = _events(str(fleet.ready["http"]))
    finally:
        await fleet.stop()
    committed = {
        int(e["reason"].split()[1]): dt.datetime.fromisoformat(e["committed"]).timestamp()
        for e in events_json
        if e["reason"].startswith("bench ")
    }
    shown = {int(k): v / 1000 for k, v in rows.items()}
    return {
        "events": len(shown),
        "background_rps": background_rps,
        "send_to_page_ms": _percentiles([(shown[i] - sent[i]) * 1000 for i in shown]),
        "commit_to_page_ms": _percentiles(
            [(shown[i] - committed[i]) * 1000 for i in shown if i in committed]
        ),
    }


def _events(http: str) -> list[dict[str, Any]]:
    # The fleet's stored commit times, read back with a session of the bench user.
    body = json.dumps({"username": USER.username, "password": USER.password}).encode()
    login = urllib.request.Request(
        f"http://{http}/auth/login", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(login, timeout=10) as reply:
        cookie = reply.headers["Set-Cookie"].split(";", 1)[0]
    query = urllib.request.Request(
        f"http://{http}/api/events?unit={UNIT}&limit=10000", headers={"Cookie": cookie}
    )
    with urllib.request.urlopen(query, timeout=10) as reply:
        events: list[dict[str, Any]] = json.loads(reply.read())["events"]
    return events


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python bench/dashboard_live.py [--events N] [--background-rps R]``."""
    parser = argparse.ArgumentParser(
        prog="dashboard_live",
        description="Latency from the fleet's ingest to a row rendered in the dashboard.",
    )
    parser.add_argument("--events", type=int, default=100, help="events to send (default 100)")
    parser.add_argument(
        "--background-rps",
        type=float,
        default=0.0,
        help="CarState records per second of other units meanwhile (default 0)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    if args.events < 1 or args.background_rps < 0:
        parser.error("--events must be >= 1 and --background-rps >= 0")
    with tempfile.TemporaryDirectory(prefix="liftwatch-bench-") as tmp:
        result = asyncio.run(measure(args.events, args.background_rps, Path(tmp)))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
