"""The metrics endpoint: prometheus_client's exposition server, each scrape collected on the
agent's loop."""

from __future__ import annotations

import asyncio
import threading

from agent.metrics import AgentMetrics, serve_metrics


async def http_get(port: int, path: str, method: str = "GET") -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
    await writer.drain()
    response = (await reader.read()).decode()
    writer.close()
    head, _, body = response.partition("\r\n\r\n")
    return head.split("\r\n")[0], body


def test_metrics_are_served_with_conventional_names() -> None:
    async def scenario() -> tuple[tuple[str, str], tuple[str, str]]:
        metrics = AgentMetrics()
        metrics.events.labels("ENTRAPMENT", "RAISED").inc()
        metrics.link_errors.labels("u1", "timeout").inc(3)
        metrics.outbox_depth.set(42)
        server = await serve_metrics(metrics, "127.0.0.1", 0)
        port = server.address[1]
        try:
            return await http_get(port, "/metrics"), await http_get(port, "/metrics", "POST")
        finally:
            await server.stop()

    (status, body), (refused, _) = asyncio.run(scenario())
    assert status.endswith("200 OK")
    assert 'liftwatch_agent_events_total{phase="RAISED",type="ENTRAPMENT"} 1.0' in body
    assert 'liftwatch_agent_link_errors_total{kind="timeout",unit="u1"} 3.0' in body
    assert "liftwatch_agent_outbox_depth 42.0" in body
    assert "liftwatch_agent_poll_latency_seconds_bucket" in body or (
        "# TYPE liftwatch_agent_poll_latency_seconds histogram" in body
    )
    # prometheus_client's server: GET and OPTIONS only.
    assert refused.endswith("405 Method Not Allowed")


def test_a_scrape_collects_on_the_agents_loop() -> None:
    """The outbox gauges read SQLite owned by the loop's thread: a scrape, served on
    prometheus_client's thread, must call them on the loop's."""

    async def scenario() -> tuple[int, list[int], str]:
        metrics = AgentMetrics()
        called_on: list[int] = []

        def depth() -> float:
            called_on.append(threading.get_ident())
            return 7.0

        metrics.outbox_depth.set_function(depth)
        server = await serve_metrics(metrics, "127.0.0.1", 0)
        try:
            _, body = await http_get(server.address[1], "/metrics")
        finally:
            await server.stop()
        return threading.get_ident(), called_on, body

    loop_thread, called_on, body = asyncio.run(scenario())
    assert "liftwatch_agent_outbox_depth 7.0" in body
    assert called_on == [loop_thread]


def test_the_detection_histogram_reads_as_prometheus_clients_own() -> None:
    from prometheus_client import CollectorRegistry, Histogram
    from prometheus_client.exposition import generate_latest

    metrics = AgentMetrics()
    registry = CollectorRegistry()
    reference = Histogram(
        "liftwatch_agent_detection_seconds",
        "Cost of all detectors on one sample",
        buckets=(1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3),
        registry=registry,
    )
    for seconds in (5e-7, 1e-6, 3e-6, 2e-5, 2.5e-5, 1e-3, 0.5):
        metrics.detection.observe(seconds)
        reference.observe(seconds)

    def lines(text: bytes) -> list[str]:
        return [
            line
            for line in text.decode().splitlines()
            if "detection_seconds" in line and "_created" not in line
        ]

    assert lines(metrics.exposition()) == lines(generate_latest(registry))
