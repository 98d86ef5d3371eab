"""The claims audit in the reader's language (issue 19, item 3): the rows that could not
be read say why in Chinese or English, and the evidence's times are the site's when the
page shows them; in English the reasons read as they always have."""

from __future__ import annotations

import io
import zoneinfo

from fleet.reports.claims import Reason, parse_claims, render

CSV = (
    "unit_id,time,fault_type\n"
    "U1,2026-03-01T08:00:00Z,ENTRAPMENT\n"
    ",2026-03-01T08:00:00Z,ENTRAPMENT\n"
    "U1,yesterday,ENTRAPMENT\n"
    "U1,2026-03-01T08:00:00Z,NO_SUCH_FAULT\n"
    "U1,2026-03-01T08:00:00Z\n"
)


def test_unreadable_rows_say_why_in_the_readers_language() -> None:
    _, zh = parse_claims(io.StringIO(CSV), "upload", lang="zh")
    assert [p.reason for p in zh] == [
        "unit_id 为空",
        "time 无法读取：'yesterday'",
        "fault_type 不是已知的故障类型：'NO_SUCH_FAULT'",
        "应有 3 列，实际 2 列",
    ]
    claims, en = parse_claims(io.StringIO(CSV), "upload")
    assert len(claims) == 1
    assert [p.reason for p in en][:2] == ["unit_id is empty", "time: cannot read 'yesterday'"]
    assert en[2].reason.startswith("fault_type: unknown event type 'NO_SUCH_FAULT'; known: ")
    assert "ENTRAPMENT" in en[2].reason


def test_evidence_times_in_the_site_zone_when_asked() -> None:
    reason = Reason(
        "event_recorded",
        {
            "type": "ENTRAPMENT",
            "phase": "RAISED",
            "event_id": "ev-1",
            "onset": "2026-03-01T08:00:00.000Z",
            "recorded": "2026-03-01T08:00:30.000Z",
        },
    )
    shanghai = zoneinfo.ZoneInfo("Asia/Shanghai")
    assert render(reason, "zh", zone=shanghai) == (
        "记录到困人（发生）事件 ev-1，开始于 2026-03-01 16:00:00，记录于 2026-03-01 16:00:30"
    )
    assert "onset 2026-03-01T08:00:00.000Z" in render(reason, "en")  # the CLI's, unchanged
