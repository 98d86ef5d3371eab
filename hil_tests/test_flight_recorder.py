"""The flight recorder on the dashboard (issue 16, items 5 and 6) in a real browser:
Playwright driving Debian's headless Chromium against a real fleet (served in-process on
loopback, logins on) that an agent's stream has given an entrapment with its Evidence.

The agent is this test speaking the agent's gRPC stream (Hello with records_evidence, a
batch with the Event and its Evidence encoded by `protos.evidence`), so the samples are
known to the sample and go through the fleet's real ingest, store and
``GET /api/events/{id}/evidence``. Checked on the page: the SVG has every lane and the
right number of samples, the link-down samples are a gap (never a zero), onset and raise
are marked, the table view lists every sample, hover shows the values at that time, a drag
zooms into a narrower time range and reset restores it, PNG is drawn in the browser and
CSV comes from the API, an event without evidence says so plainly, the alarm lifecycle
links to it, "what is this car doing?" asks the agent and draws its answer (and shows a
409's reason for a car whose agent is away), the Chinese timeline has no English word
left, and axe finds no serious or critical violation.

Screenshots and axe reports go where the dashboard test keeps them
(``$LIFTWATCH_ARTIFACTS/dashboard``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
from pathlib import Path
from typing import Any

import grpc

from fleet.auth.passwords import hash_password
from fleet.auth.roles import Role
from fleet.config import FleetConfig, StoreConfig
from fleet.store.base import RegisterEntry
from fleet.store.sqlite import SqliteStore
from hil_tests.system import SystemUser
from hil_tests.test_dashboard import ARTIFACTS, CHROMIUM_ARGS, WAIT_MS, _axe, _login, _shot
from protos.evidence import EvidenceSample, encode_samples
from protos.liftwatch.v1 import gateway_pb2, records_pb2
from tests.conftest import require_binary, require_module
from tests.fleet.factories import T0, batch, hello
from tests.fleet.harness import Fleet, running_fleet
from tests.support import eventually

playwright_api = require_module("playwright.async_api")

PASSWORD = "flight recorder 16"
TRAPPED = "U1"
AWAY = "U2"  # registered, no agent connected: an on-demand request is refused (409)
FLOOR_MM = 3000
RATE_HZ = 10
SECONDS = 40
START = T0 - dt.timedelta(seconds=60)
ONSET_S = 12.6
RAISED_S = 22.0
LINK_DOWN_S = (20.0, 21.0)
# timeline.js's SVG layout: width, left margin (lane labels), plot width.
SVG_W, SVG_LEFT, SVG_PLOT_W = 960, 96, 960 - 96 - 16
# What a Chinese page may show in Latin letters: the names of the export formats.
LATIN_ALLOWED = {"CSV", "PNG"}


def _sample(i: int, start: dt.datetime = START) -> EvidenceSample:
    """Sample ``i`` of a car that leaves floor 1 with its doors closed and a passenger
    in, and stops dead between floors 2 and 3 (safety circuit broken) at 12.5 s; its
    controller does not answer from 20 s to 21 s."""
    t = i / RATE_HZ
    time_us = int(start.timestamp() * 1_000_000) + i * 100_000
    if LINK_DOWN_S[0] <= t < LINK_DOWN_S[1]:
        return EvidenceSample(
            time_us, False, None, None, None, None, None, 0, 0, 0,
            None, None, None, None, None, None, None, None, None, None,
        )  # fmt: skip
    if t < 8.0:
        position, speed = 0, 0
    elif t < 12.5:
        speed = min(1000, int((t - 8.0) * 1000))
        position = int(sum(min(1000, (k / RATE_HZ - 8.0) * 1000) / RATE_HZ for k in range(80, i)))
    else:
        speed = 0
        position = int(sum(min(1000, (k / RATE_HZ - 8.0) * 1000) / RATE_HZ for k in range(80, 125)))
    door = (
        records_pb2.DOOR_STATE_OPEN
        if t < 3.0
        else records_pb2.DOOR_STATE_CLOSING
        if t < 4.0
        else records_pb2.DOOR_STATE_CLOSED
    )
    landing = round(position / FLOOR_MM)
    off = abs(position - landing * FLOOR_MM)
    return EvidenceSample(
        time_us=time_us,
        link_up=True,
        position_mm=position,
        speed_mm_s=speed,
        load_percent=0 if t < 1.0 else 30,
        floor=landing + 1,
        fault_code=17 if t >= 12.5 else 0,
        door=door,
        direction=records_pb2.DIRECTION_UP if speed > 0 else records_pb2.DIRECTION_NONE,
        mode=records_pb2.SERVICE_MODE_NORMAL,
        moving=speed > 0,
        door_zone=off < 150,
        levelled=speed == 0 and off <= 10,
        door_lock_closed=door == records_pb2.DOOR_STATE_CLOSED,
        safety_circuit_closed=t < 12.5,
        occupied=t >= 1.0,
        alarm_button=t >= 15.0,
        overload=False,
        mains_ok=True,
        reopen_active=False,
    )


SAMPLES = [_sample(i) for i in range(SECONDS * RATE_HZ)]


def _at(seconds: float, start: dt.datetime = START) -> dt.datetime:
    return start + dt.timedelta(seconds=seconds)


def _event_record(
    seq: int, event_id: str, kind: records_pb2.EventType, onset: dt.datetime
) -> records_pb2.Record:
    message = records_pb2.Record(seq=seq, unit_id=TRAPPED)
    message.time.FromDatetime(_at(RAISED_S))
    message.event.CopyFrom(
        records_pb2.Event(event_id=event_id, type=kind, phase=records_pb2.PHASE_RAISED, floor=2)
    )
    message.event.onset.FromDatetime(onset)
    return message


def _evidence_record(
    seq: int, samples: list[EvidenceSample], *, event_id: str = "", request_id: str = ""
) -> records_pb2.Record:
    message = records_pb2.Record(seq=seq, unit_id=TRAPPED)
    message.time.FromMicroseconds(samples[-1].time_us)
    evidence = message.evidence
    evidence.event_id = event_id
    evidence.request_id = request_id
    encode_samples(samples, evidence)
    if event_id:
        evidence.onset.FromDatetime(_at(ONSET_S))
        evidence.raised.FromDatetime(_at(RAISED_S))
        evidence.end = records_pb2.EVIDENCE_END_POST
    else:
        evidence.end = records_pb2.EVIDENCE_END_REQUEST
    evidence.pre_s, evidence.post_s, evidence.max_s = 60, 30, 600
    return message


def _prepare(db: Path) -> None:
    store = SqliteStore.open(str(db))
    try:
        store.upsert_register(
            [
                RegisterEntry(TRAPPED, building="甲楼", street="大坪街道", contractor="甲维保"),
                RegisterEntry(AWAY, building="乙楼", street="大坪街道", contractor="甲维保"),
            ]
        )
        store.add_user(
            "disp", Role.DISPATCHER, hash_password(PASSWORD), now=dt.datetime.now(dt.UTC)
        )
    finally:
        store.close()


class Agent:
    """The agent side of one Connect stream: sends the entrapment with its evidence, and
    answers the fleet's EvidenceRequests with the last seconds it was asked for."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.call: Any = None
        self.seq = 0
        self.requests: list[gateway_pb2.EvidenceRequest] = []
        self.reader: asyncio.Task[None] | None = None
        self.acked = 0

    async def start(self) -> None:
        frame = hello("agent-16", TRAPPED)
        frame.hello.records_evidence = True
        self.call = await self.fleet.connect(frame)
        welcome = await self.call.read()
        assert welcome.WhichOneof("frame") == "welcome", welcome
        assert welcome.welcome.accepts_evidence, "the fleet does not say it stores evidence"
        self.reader = asyncio.create_task(self._read())

    async def send(self, *records: records_pb2.Record) -> None:
        await self.call.write(batch(*records))

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def _read(self) -> None:
        while True:
            frame = await self.call.read()
            if frame is grpc.aio.EOF:
                return
            if frame.WhichOneof("frame") == "ack":
                self.acked = frame.ack.up_to_seq
            if frame.WhichOneof("frame") == "evidence_request":
                request = frame.evidence_request
                self.requests.append(request)
                # The last seconds up to now, by the fleet's (fake) clock, as the agent's
                # would be: a record from the future is refused.
                now = self.fleet.clock().replace(microsecond=0)
                start = now - dt.timedelta(seconds=request.seconds)
                samples = [_sample(i, start) for i in range(request.seconds * RATE_HZ)]
                await self.send(
                    _evidence_record(self.next_seq(), samples, request_id=request.request_id)
                )

    async def stop(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        with contextlib.suppress(Exception):
            await self.call.done_writing()


def test_the_flight_recorder_in_a_real_browser(tmp_path: Path) -> None:
    chromium = require_binary("chromium")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    db = tmp_path / "fleet.db"
    _prepare(db)
    config = FleetConfig(store=StoreConfig(path=str(db)))
    asyncio.run(asyncio.wait_for(_scenario(config, chromium, tmp_path), 240))


async def _scenario(config: FleetConfig, chromium: str, tmp_path: Path) -> None:
    async with (
        running_fleet(config, http=True, auth=True) as fleet,
        playwright_api.async_playwright() as pw,
    ):
        agent = Agent(fleet)
        await agent.start()
        await agent.send(
            _event_record(
                agent.next_seq(), "e-trap", records_pb2.EVENT_TYPE_ENTRAPMENT, _at(ONSET_S)
            ),
            _evidence_record(agent.next_seq(), SAMPLES, event_id="e-trap"),
            _event_record(
                agent.next_seq(), "e-door", records_pb2.EVENT_TYPE_DOOR_CLOSE_FAILURE, _at(5.0)
            ),
        )
        await eventually(lambda: agent.acked >= 3, what="the fleet's ack of the records")
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        base = f"http://{fleet.http}/"
        try:
            violations = await _pages(browser, base, agent, tmp_path)
        finally:
            await browser.close()
            await agent.stop()
    assert violations == [], f"accessibility violations (see {ARTIFACTS}): {violations}"


async def _pages(browser: Any, base: str, agent: Agent, tmp_path: Path) -> list[dict[str, Any]]:
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    page = await context.new_page()
    await _login(page, base, SystemUser("disp", "dispatcher", PASSWORD))
    violations: list[dict[str, Any]] = []

    # The unit page: the event's button draws its evidence.
    await page.goto(f"{base}#/unit/{TRAPPED}")
    await page.click("#past-events [data-recorder=e-trap]")
    figure = page.locator("#recorder figure.timeline")
    await figure.wait_for(timeout=WAIT_MS)
    svg = figure.locator("svg.timeline-svg")
    assert await svg.get_attribute("data-samples") == str(len(SAMPLES))
    assert await svg.get_attribute("role") == "img"
    assert "飞行记录" in await svg.locator("title").text_content()
    assert await svg.locator("desc").text_content()
    for lane in ("position", "speed", "door", "lock", "safety", "mode", "load", "occupied"):
        assert await svg.locator(f"g[data-lane={lane}]").count() == 1, lane
    # Every answered sample with a position is a point of the line; the ten the
    # controller did not answer are a gap across the lanes, not zeros.
    answered = [s for s in SAMPLES if s.link_up and s.position_mm is not None]
    points = await svg.locator("polyline[data-series=position_mm]").evaluate_all(
        "ns => ns.map(n => Number(n.dataset.points))"
    )
    assert sum(points) == len(answered) and len(points) == 2, points
    assert await svg.locator("[data-gap]").count() == 1
    assert await svg.locator("line[data-marker=onset]").count() == 1
    assert await svg.locator("line[data-marker=raised]").count() == 1
    assert await svg.locator("line[data-marker=cleared]").count() == 0
    # Floor 1 is the only landing it stood levelled at; its door zone is shaded.
    assert await svg.locator("[data-landing='1']").count() == 1
    # Door zones: floor 1's, where it stood, and floor 2's, which it passed.
    assert await svg.locator("[data-zone=position]").count() == 2
    assert await svg.locator("[data-door=closed]").count() >= 1
    assert await svg.locator("[data-safety=false]").count() >= 1

    # The table view: one row per sample, the link-down ones said as such.
    await figure.locator("[data-toggle=table]").click()
    rows = figure.locator(".tl-table tbody tr")
    assert await rows.count() == len(SAMPLES)
    assert await figure.locator(".tl-table tbody tr[data-link=down]").count() == 10
    assert await figure.locator("[data-toggle=table]").get_attribute("aria-expanded") == "true"

    # Hover: the crosshair and the values of the sample under the pointer.
    await svg.scroll_into_view_if_needed()
    box = await svg.bounding_box()
    assert box is not None
    scale = box["width"] / SVG_W

    def plot_x(seconds: float) -> float:
        """The page x of ``seconds`` into the window, unzoomed (timeline.js's layout)."""
        return float(box["x"] + (SVG_LEFT + seconds / SECONDS * SVG_PLOT_W) * scale)

    mid_y = box["y"] + 100 * scale
    await page.mouse.move(plot_x(14.0), mid_y)
    readout = figure.locator(".tl-readout")
    await eventually(
        lambda: readout.get_attribute("data-sample"), lambda v: v is not None, "the readout"
    )
    index = int(await readout.get_attribute("data-sample") or "-1")
    assert abs(index - 140) <= 2, index
    text = await readout.inner_text()
    assert "安全回路：断开" in text and "门：已关" in text and "轿内有人：有人" in text, text
    assert await svg.locator("[data-crosshair]").get_attribute("visibility") == "visible"
    await _shot(page, "flight-recorder-unit")

    # Zoom: drag over 10 s..20 s; the range narrows; reset restores it.
    await page.mouse.move(plot_x(10.0), mid_y)
    await page.mouse.down()
    await page.mouse.move(plot_x(15.0), mid_y, steps=4)
    await page.mouse.move(plot_x(20.0), mid_y, steps=4)
    await page.mouse.up()
    range_ = figure.locator(".tl-range")
    await eventually(lambda: range_.get_attribute("data-from"), lambda v: v != "0", "the zoom")
    frm = int(await range_.get_attribute("data-from") or "0")
    to = int(await range_.get_attribute("data-to") or "0")
    assert 9_500 <= frm <= 10_500 and 19_500 <= to <= 20_500, (frm, to)
    visible = int(await figure.locator("svg.timeline-svg").get_attribute("data-visible") or "0")
    assert 95 <= visible <= 105, visible
    assert "已放大" in await range_.inner_text()
    await _shot(page, "flight-recorder-zoomed")
    await figure.locator("[data-zoom=reset]").click()
    assert await range_.get_attribute("data-from") == "0"
    assert int(await range_.get_attribute("data-to") or "0") >= 40_000
    # From the keyboard: focus the plot, step with the arrows, zoom with +.
    await figure.locator(".tl-plot").focus()
    await page.keyboard.press("ArrowRight")
    await page.keyboard.press("+")
    assert int(await range_.get_attribute("data-to") or "0") < 40_000

    # No English word left on the Chinese timeline (the evidence hash is hex, not words).
    words = await figure.evaluate(
        """f => { const c = f.cloneNode(true);
                  c.querySelectorAll('.tl-hash').forEach(n => n.remove());
                  return c.textContent.match(/[A-Za-z]{2,}/g) || []; }"""
    )
    assert set(words) <= LATIN_ALLOWED, sorted(set(words) - LATIN_ALLOWED)

    # Exports: PNG drawn in the browser, CSV from the API.
    async with page.expect_download() as png_download:
        await figure.locator("[data-export=png]").click()
    png = tmp_path / "recorder.png"
    await (await png_download.value).save_as(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    csv_href = await figure.locator("a[data-export=csv]").get_attribute("href")
    assert csv_href == "/api/events/e-trap/evidence?format=csv"
    csv_text = await page.evaluate(
        "h => fetch(h).then(r => r.ok ? r.text() : 'status ' + r.status)", csv_href
    )
    assert len(csv_text.strip().splitlines()) == len(SAMPLES) + 1, csv_text[:200]
    violations += await _axe(page, "flight-recorder-unit")

    # An event without evidence says so, plainly.
    await page.click("#past-events [data-recorder=e-door]")
    await eventually(
        lambda: page.inner_text("#recorder"), lambda s: "没有飞行记录" in s, "no evidence"
    )

    # "What is this car doing?": asked, answered by the agent, drawn.
    await page.click("#rec-ask")
    await page.locator(
        "#recorder figure.timeline[data-request-id]:not([data-request-id=''])"
    ).wait_for(timeout=WAIT_MS)
    assert len(agent.requests) == 1 and agent.requests[0].seconds == 60
    asked = page.locator("#recorder svg.timeline-svg")
    assert await asked.get_attribute("data-samples") == str(60 * RATE_HZ)
    assert "即时记录" in await asked.locator("title").text_content()
    await _shot(page, "flight-recorder-on-demand")
    # Its 600 samples in the table view: a page of 500, then the other 100.
    answer = page.locator("#recorder figure.timeline")
    await answer.locator("[data-toggle=table]").click()
    assert await answer.locator(".tl-table tbody tr").count() == 500
    await answer.locator("button[data-page=next]").click()
    assert await answer.locator(".tl-table tbody tr").count() == 100
    assert "第 501–600 个采样，共 600 个" in await answer.locator(".tl-page").inner_text()
    # The unit's history names both, in words: the stored window with its hash, the request.
    await page.reload()
    history = await page.locator("#history-panel").inner_text(timeout=WAIT_MS)
    assert "400 个采样" in history and "请求最近 60 秒" in history, history
    assert '"sha256"' not in history, history

    # A car whose agent is away: the fleet's 409 and its reason.
    await page.goto(f"{base}#/unit/{AWAY}")
    await page.click("#rec-ask")
    await eventually(
        lambda: page.inner_text("#rec-ask-status"), lambda s: "无法请求" in s, "the 409"
    )

    # The claims audit links the event it cites to its recorder, on the unit page.
    claims = tmp_path / "claims.csv"
    claims.write_text(
        f"unit_id,time,fault_type\n{TRAPPED},{_at(ONSET_S).isoformat()},ENTRAPMENT\n",
        encoding="utf-8",
    )
    await page.goto(f"{base}#/reports?report=claims")
    await page.set_input_files("#c-file", str(claims))
    await page.click("form.filters button[type=submit]")
    await page.wait_for_selector("#claims-table [data-verdict]", timeout=WAIT_MS)
    cited = page.locator("#claims-table a[data-recorder=e-trap]")
    assert await cited.count() == 1, await page.inner_text("#claims-results")
    await cited.click()
    await page.locator("#recorder figure.timeline[data-event-id=e-trap]").wait_for(timeout=WAIT_MS)

    # The alarm lifecycle links to the recorder, drawn on the alarm page.
    await page.goto(f"{base}#/alarms")
    link = page.locator("[data-alarm-id] .lifecycle a[data-recorder=e-trap]")
    await link.first.wait_for(state="attached", timeout=WAIT_MS)
    await page.locator("[data-alarm-id] .lifecycle summary").first.click()
    await link.first.click()
    await page.locator("#recorder-panel figure.timeline[data-event-id=e-trap]").wait_for(
        timeout=WAIT_MS
    )
    violations += await _axe(page, "flight-recorder-alarm")
    await _shot(page, "flight-recorder-alarm")

    # English: the same figure, in English words.
    await page.click("#lang")
    await page.wait_for_function("() => document.documentElement.lang === 'en'")
    await page.locator("#recorder-panel figure.timeline").wait_for(timeout=WAIT_MS)
    assert "Flight recorder" in await page.inner_text("#recorder-panel")
    assert re.search(r"Showing .* 400 samples", await page.inner_text("#recorder-panel .tl-range"))
    await context.close()

    # On a phone the page fits the width (the plot and the table scroll in their frames).
    phone = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = await phone.new_page()
    await _login(page, base, SystemUser("disp", "dispatcher", PASSWORD))
    await page.goto(f"{base}#/unit/{TRAPPED}?evidence=e-trap")
    await page.locator("#recorder figure.timeline").wait_for(timeout=WAIT_MS)
    await page.locator("#recorder [data-toggle=table]").click()
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the unit page with its recorder is {overflow} px wider than a phone"
    shot = ARTIFACTS / "flight-recorder-phone.png"
    await page.locator("#recorder-panel").screenshot(path=str(shot))
    await phone.close()
    return violations
