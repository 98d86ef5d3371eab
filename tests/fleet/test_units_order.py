"""The unit list by what matters first (issue 19, item 7): /api/units?order=urgency lists
units with an open alarm, then link down (blind), offline, stale, online, never seen, by
unit id within each; its pages continue in that order; order=unit (the default) and a
bad order or token are answered as before."""

from __future__ import annotations

from pathlib import Path

from tests.fleet.harness import Fleet, run
from tests.fleet.test_api import _config, _populate
from tests.support import eventually


def test_units_by_urgency_and_paged_in_that_order(tmp_path: Path) -> None:
    async def scenario(fleet: Fleet) -> None:
        await _populate(fleet)  # U1 online, U2 an entrapment (an open alarm), U3 blind

        async def alarm_open() -> bool:
            status, body = await fleet.get("/api/alarms?open=true")
            return status == 200 and [a["unit_id"] for a in body["alarms"]] == ["U2"]

        await eventually(alarm_open)
        status, body = await fleet.get("/api/units?order=urgency")
        assert status == 200
        assert [u["unit_id"] for u in body["units"]] == ["U2", "U3", "U1"]
        status, default = await fleet.get("/api/units")
        assert [u["unit_id"] for u in default["units"]] == ["U1", "U2", "U3"]
        # Pages continue in the same order, however small.
        seen: list[str] = []
        query = "/api/units?order=urgency&page_size=1"
        while True:
            status, page = await fleet.get(query)
            assert status == 200 and page["total"] == 3
            seen += [u["unit_id"] for u in page["units"]]
            if not page["next_page_token"]:
                break
            query = f"/api/units?order=urgency&page_size=1&page_token={page['next_page_token']}"
        assert seen == ["U2", "U3", "U1"]
        # A token of the unit-id order is not one of this order; a bad order is named.
        status, first = await fleet.get("/api/units?page_size=1")
        status, body = await fleet.get(
            f"/api/units?order=urgency&page_token={first['next_page_token']}"
        )
        assert status == 400 and "page_token" in body["error"]
        status, body = await fleet.get("/api/units?order=colour")
        assert status == 400 and "order" in body["error"]

    run(_config(str(tmp_path / "fleet.db")), scenario, http=True)
