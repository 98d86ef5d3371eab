"""The dashboard's "Regional platforms" page (issue 21) in a real browser: a serving
fleet forwards to the reference platform, which refuses one kind of message; the page
(Playwright, Debian's headless Chromium) shows the platform with its counts and the
refusal with the platform's reason, in Chinese and in English, and axe-core finds no
serious or critical violation. A screenshot is kept beside the dashboard's others."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleet.northbound.mapping import load_mapping, resolve
from hil_tests.northbound_platform import running_platform
from hil_tests.test_dashboard import ARTIFACTS, CHROMIUM_ARGS, WAIT_MS, _axe, _shot
from protos.liftwatch.v1 import records_pb2
from tests.conftest import require_binary, require_module
from tests.fleet.factories import batch, hello, record
from tests.fleet.harness import running_fleet
from tests.fleet.test_northbound import serving_config
from tests.support import eventually

playwright_api = require_module("playwright.async_api")


def _refuse_door_faults(path: str, body: Mapping[str, Any]) -> str | None:
    if body.get("eventType") == "DOOR_CLOSE_FAILURE":
        return "故障代码与登记的电梯型号不符 (code does not match the registered model)"
    return None


def test_the_regional_platforms_page_shows_status_and_refusals(tmp_path: Path) -> None:
    chromium = require_binary("chromium")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    mapping = load_mapping(resolve("gbt24476", Path()))
    by_name = mapping.json_schema()
    schemas = {m.path: by_name[m.name] for m in mapping.messages.values()}

    async def scenario() -> list[dict[str, Any]]:
        with running_platform(schemas, key_field=mapping.key_field) as platform:
            platform.refuse = _refuse_door_faults
            config = serving_config(platform.url, tmp_path)
            async with (
                running_fleet(config, http=True) as fleet,
                playwright_api.async_playwright() as pw,
            ):
                call = await fleet.connect(
                    hello("a1", "U1"),
                    batch(
                        record(1, "U1", event=records_pb2.EVENT_TYPE_ENTRAPMENT, event_id="t"),
                        record(2, "U1", event=records_pb2.EVENT_TYPE_DOOR_CLOSE_FAILURE),
                    ),
                )

                async def view() -> Any:
                    return (await fleet.get("/api/northbound"))[1]

                await eventually(
                    view,
                    lambda v: v["dead_letters"] and v["platforms"][0]["backlog"] == 0,
                    "the refusal recorded",
                )
                browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page()
                    await page.goto(f"http://{fleet.http}/#/northbound")
                    await page.wait_for_selector("main h1", timeout=WAIT_MS)
                    text = await page.inner_text("main")
                    assert "gbt" in text
                    assert "故障代码与登记的电梯型号不符" in text
                    zh = await page.inner_text("main h1")
                    violations = await _axe(page, "northbound")
                    await _shot(page, "northbound")
                    await page.click("#lang")
                    await page.wait_for_function(
                        "h => document.querySelector('main h1').textContent !== h", arg=zh
                    )
                    english = await page.inner_text("main")
                    assert "Refused messages" in english and "Backlog" in english
                finally:
                    await browser.close()
                await call.done_writing()
        return violations

    violations = asyncio.run(asyncio.wait_for(scenario(), 180))
    assert violations == [], f"accessibility violations (see {ARTIFACTS}): {violations}"
