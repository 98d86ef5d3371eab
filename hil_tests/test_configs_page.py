"""The dashboard's "Agent configuration" page (issue 20) in a real browser: a serving
fleet holds three agents' configuration states (one in sync, one that rejected its
document with check-config's problems, one on its own file); the page (Playwright,
Debian's headless Chromium) shows each with its versions, state and problems, in Chinese
and in English, and axe-core finds no serious or critical violation. A screenshot is
kept beside the dashboard's others."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fleet.config import FleetConfig, StoreConfig
from fleet.configs.service import set_document
from fleet.store.configs import ConfigStore, agent_document
from fleet.store.open import open_store
from hil_tests.test_dashboard import ARTIFACTS, CHROMIUM_ARGS, WAIT_MS, _axe, _shot
from tests.conftest import require_binary, require_module
from tests.fleet.harness import running_fleet

playwright_api = require_module("playwright.async_api")

DOC = (
    '[[bus]]\nname = "line"\nurl = "tcp://10.0.0.5:502"\n'
    '[[unit]]\nid = "U1"\nbus = "line"\nslave = 1\n'
)
PROBLEM = "unit[0].detect.door_close_failure_s: must be > 0, got -5"


def _states(db: Path) -> None:
    store = open_store(str(db))
    try:
        configs = ConfigStore(store)
        good = set_document(store, agent_document("edge-ok"), DOC, 1)
        configs.record_report("edge-ok", good, True, [], 2, lambda _a, _b: {"U1": "changed"})
        bad = set_document(store, agent_document("edge-bad"), DOC, 3)
        configs.record_report("edge-bad", bad, False, [PROBLEM], 4, lambda _a, _b: {})
        with store._transaction():  # an agent heard from, on its own file
            store._execute("INSERT INTO agents (agent_id) VALUES ('edge-own')")
    finally:
        store.close()


def test_the_agent_configuration_page_shows_desired_against_applied(tmp_path: Path) -> None:
    chromium = require_binary("chromium")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    db = tmp_path / "fleet.db"
    open_store(str(db)).close()
    _states(db)

    async def scenario() -> list[dict[str, Any]]:
        config = FleetConfig(store=StoreConfig(path=str(db)))
        async with (
            running_fleet(config, http=True) as fleet,
            playwright_api.async_playwright() as pw,
        ):
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(f"http://{fleet.http}/#/configs")
                await page.wait_for_selector("main table", timeout=WAIT_MS)
                text = await page.inner_text("main")
                assert "edge-bad" in text and PROBLEM in text
                assert "已拒收" in text and "已一致" in text and "仅本机配置" in text
                zh = await page.inner_text("main h1")
                violations = await _axe(page, "configs")
                await _shot(page, "configs")
                await page.click("#lang")
                await page.wait_for_function(
                    "h => document.querySelector('main h1').textContent !== h", arg=zh
                )
                english = await page.inner_text("main")
                assert "rejected" in english and "in sync" in english
                assert "3 agent(s), 0 pending, 1 rejected" in english
            finally:
                await browser.close()
        return violations

    violations = asyncio.run(asyncio.wait_for(scenario(), 180))
    assert violations == [], f"accessibility violations (see {ARTIFACTS}): {violations}"
