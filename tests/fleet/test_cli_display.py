"""How the fleet's CLI shows things (issue 19, item 9): columns aligned by display width
(a Chinese character takes two terminal columns), times in the site's time zone, and a
read command given no store says which option to give."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.cli.main import main
from fleet.read.views import display_width, table


def test_columns_align_by_display_width_with_chinese_text() -> None:
    shown = table(("BUILDING", "UNITS"), [("菜袁路77号学校楼", 2), ("Tower A", 10)])
    lines = shown.splitlines()
    # The second column starts at the same terminal column on every line.
    starts = [display_width(line[: line.rindex(" ") + 1]) for line in lines]
    assert len(set(starts)) == 1, shown
    assert display_width("菜袁路") == 6 and display_width("abc") == 3


def test_times_are_shown_in_the_site_time_zone() -> None:
    shown = table(("AT",), [("2026-03-01T08:00:00.000Z",)], time_zone="Asia/Shanghai")
    assert shown.splitlines()[1] == "2026-03-01T16:00:00+08:00"
    # Without a zone (and in --json) the UTC text stays as it is.
    assert table(("AT",), [("2026-03-01T08:00:00.000Z",)]).splitlines()[1].endswith("Z")


@pytest.mark.parametrize("command", [["units"], ["events"], ["alarms"], ["verify-history"]])
def test_no_store_given_says_which_option_to_give(
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(command) == 2
    said = capsys.readouterr().err
    assert "--db" in said and "--config" in said, said
    assert not (tmp_path / "fleet.db").exists()  # nothing created on the way
