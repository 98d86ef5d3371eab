"""The dashboard's "Agent updates" page (issue 20, item 5) in a real browser: a fleet
whose store holds two releases and a rollout of the broken one halted after its canary;
the page (Playwright, Debian's headless Chromium) shows its waves, the halt's reason as an
alert and the releases, in Chinese and in English, and axe-core finds no serious or
critical violation. A screenshot is kept beside the dashboard's others."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.config import FleetConfig, StoreConfig
from fleet.releases.bundle import build, public_text
from fleet.releases.rollout import Plan
from fleet.releases.service import add_release, start_rollout, tick
from fleet.store.releases import ReleaseStore
from fleet.store.sqlite import SqliteStore
from hil_tests.test_dashboard import ARTIFACTS, CHROMIUM_ARGS, WAIT_MS, _axe, _shot
from tests.agent.wheels import make_wheel
from tests.conftest import require_binary, require_module
from tests.fleet.harness import running_fleet

playwright_api = require_module("playwright.async_api")
KEY = Ed25519PrivateKey.generate()


def seed(db: Path, tmp: Path) -> None:
    """Releases 2.0 and 3.0, and 3.0's rollout halted: its canary switched back."""
    store = SqliteStore.open(str(db))
    releases = ReleaseStore(store)
    (tmp / "kept").mkdir()
    for release_id, version in (("agent-2.0", "2.0"), ("agent-3.0", "3.0")):
        build(
            tmp / release_id, release_id, version, [make_wheel(tmp / "w" / version, version)], KEY
        )
        add_release(releases, tmp / release_id, tmp / "kept", public_text(KEY), 0)
    agents = [(f"edge-{i:02d}", "1.0") for i in range(6)]
    plan = Plan(waves=("1", "50%", "100%"))
    start_rollout(releases, "agent-3.0", agents, plan, 0.0)
    detail = "not healthy within 600 s; back on 2.0"
    releases.record_report("edge-00", "agent-3.0", "rolled_back", detail, 0, 1)
    tick(releases, 10.0)
    store.close()


def test_the_agent_updates_page_shows_waves_and_the_halt(tmp_path: Path) -> None:
    chromium = require_binary("chromium")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    db = tmp_path / "fleet.db"
    seed(db, tmp_path)

    async def scenario() -> list[dict[str, Any]]:
        config = FleetConfig(store=StoreConfig(path=str(db)))
        async with (
            running_fleet(config, http=True) as fleet,
            playwright_api.async_playwright() as pw,
        ):
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(f"http://{fleet.http}/#/rollouts")
                await page.wait_for_selector("main h1", timeout=WAIT_MS)
                text = await page.inner_text("main")
                assert "agent-3.0" in text and "第 1 批" in text
                alert = await page.inner_text("main [role=alert]")
                assert "edge-00 (rolled_back: not healthy within 600 s; back on 2.0)" in alert
                assert "健康检查未通过" in text
                zh = await page.inner_text("main h1")
                violations = await _axe(page, "rollouts")
                await _shot(page, "rollouts")
                await page.click("#lang")
                await page.wait_for_function(
                    "h => document.querySelector('main h1').textContent !== h", arg=zh
                )
                english = await page.inner_text("main")
                assert "Agent updates" in english and "halted on a failed gate" in english
                assert "Wave 2" in english and "Releases" in english
            finally:
                await browser.close()
        return violations

    violations = asyncio.run(asyncio.wait_for(scenario(), 180))
    assert violations == [], f"accessibility violations (see {ARTIFACTS}): {violations}"
