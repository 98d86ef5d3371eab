"""check-config: every problem reported with its key, exit 1; a good config passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.config import ConfigError, load_config

GOOD = """
[agent]
id = "edge-1"
data_dir = "data"

[fleet]
endpoints = ["fleet.example:50051"]

[detect]
entrapment_between_floors_s = 20

[[bus]]
name = "bus1"
url = "tcp://127.0.0.1:5020"

[[unit]]
id = "31105001032025000048"
bus = "bus1"
slave = 1

[[unit]]
id = "31105001032025000049"
bus = "bus1"
slave = 2
[unit.detect]
door_close_failure_s = 30
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_config_loads_with_per_unit_overrides(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.outbox_path == tmp_path / "data" / "outbox.db"
    first, second = config.units
    assert first.detect.entrapment_between_floors_s == 20
    assert second.detect.entrapment_between_floors_s == 20  # [detect] applies to all
    assert second.detect.door_close_failure_s == 30
    assert first.detect.door_close_failure_s == 20.0  # the documented default
    assert main(["check-config", str(tmp_path / "agent.toml")]) == 0


BAD = """
[agent]
idd = "typo"

[detect]
entrapment_between_floor_s = 20

[[bus]]
name = "bus1"
url = "serial:/dev/ttyUSB0"
poll_hz = "fast"

[[unit]]
id = "u1"
bus = "bus1"
slave = 1

[[unit]]
id = "u2"
bus = "bus1"
slave = 1

[[unit]]
id = "u3"
bus = "bus9"
slave = 300
profile = "nope"
"""


def test_every_problem_is_reported_with_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BAD)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    keys = {p.key for p in caught.value.problems}
    assert {
        "agent.idd",
        "agent.id",
        "detect.entrapment_between_floor_s",
        "bus[0].url",
        "bus[0].poll_hz",
        "unit[1].slave",
        "unit[2].bus",
        "unit[2].slave",
        "unit[2].profile",
    } <= keys
    assert main(["check-config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "unit[1].slave: bus 'bus1' slave 1 is already unit 'u1'" in out
    assert "agent.idd: unknown key" in out


def test_syntax_error_and_missing_file_are_problems_not_tracebacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(write(tmp_path, "[agent\n"))]) == 1
    assert main(["check-config", str(tmp_path / "missing.toml")]) == 1
    out = capsys.readouterr().out
    assert "(syntax)" in out
    assert "(file)" in out


def test_the_shipped_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "agent" / "agent.example.toml"
    config = load_config(example)
    assert len(config.units) == 4
    assert config.units[3].detect.door_close_failure_s == 25.0
