"""Anonymous visitors flooding the published lists (probe ``public_lists_flood``).

``/public/`` needs no login, so anyone may ask it as often as they like. The answers are
kept per process for `PUBLIC_CACHE_S`; visitors arriving together when they are stale
(at the start, or each time they expire) must cost one store read, not one each, and
every visitor gets the same answer whatever the query string or headers it sends (one
kept answer: nothing a visitor sends can poison what the next one gets).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import urllib.request
from pathlib import Path

from fleet.config import FleetConfig, StoreConfig
from fleet.store.publication import Publication
from fleet.store.sqlite import SqliteStore
from fleet.store.worker import StoreWorker
from fleet.web.publication import PUBLIC_CACHE_S, PublicCache
from tests.fleet.harness import FakeClock, running_fleet
from tests.security.conftest import District, with_timeout

VISITORS = 200


class CountingStore(SqliteStore):
    """The real SQLite store, counting its reads of the published lists."""

    reads = 0
    lock = threading.Lock()

    def current_publication(self) -> Publication | None:
        """`SqliteStore.current_publication`, counted."""
        with CountingStore.lock:
            CountingStore.reads += 1
        return super().current_publication()


def test_visitors_arriving_together_cost_one_store_read(tmp_path: Path) -> None:
    db = str(tmp_path / "fleet.db")
    clock = FakeClock()
    CountingStore.reads = 0

    async def main_() -> list[int]:
        worker = await StoreWorker.open(lambda: CountingStore.open(db))
        try:
            cache = PublicCache(worker, clock)
            reads = []
            for _ in range(2):
                answers = await asyncio.gather(*(cache.answer() for _ in range(VISITORS)))
                assert len({a.etag for a in answers}) == 1
                reads.append(CountingStore.reads)
                clock.now += dt.timedelta(seconds=PUBLIC_CACHE_S)  # stale again
            return reads
        finally:
            await worker.close()

    assert asyncio.run(with_timeout(main_(), 60)) == [1, 2]


def test_anonymous_requests_all_get_the_one_kept_answer(district: District) -> None:
    config = FleetConfig(store=StoreConfig(path=str(district.db)))
    paths = [
        "/public/lists.json",
        "/public/lists.json?lang=en&x=%00",
        "/public/lists.json?" + "a" * 4000,
    ]

    def fetch(path: str, n: int) -> tuple[int, str, bytes]:
        request = urllib.request.Request(
            path, headers={"Accept-Language": f"xx-{n}", "X-Forwarded-Host": f"evil-{n}"}
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.headers["ETag"], reply.read()

    async def main_() -> list[tuple[int, str, bytes]]:
        async with running_fleet(config, http=True, auth=True) as fleet:
            base = f"http://{fleet.http}"
            return await asyncio.gather(
                *(asyncio.to_thread(fetch, base + paths[n % len(paths)], n) for n in range(60))
            )

    answers = asyncio.run(with_timeout(main_(), 90))
    assert {status for status, _, _ in answers} == {200}
    assert len({(etag, body) for _, etag, body in answers}) == 1
    assert answers[0][2] == b'{"published":null,"lists":{}}'
