"""check-config: every problem reported with its key, exit 1; a good config passes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import agent.config as agent_config
from agent.cli import main
from agent.config import ConfigError, load_config, parse_config
from agent.detect import circuits, controller, doors, entrapment, motion
from agent.detect.engine import DetectionConfig
from tests.support import documented_defaults

GOOD = """
[agent]
id = "edge-1"
data_dir = "data"

[fleet]
endpoints = ["fleet.example:50051"]
insecure = true

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


def installed(example: str, tmp_path: Path) -> Path:
    """The shipped example as installed: in its directory with the TLS files it names,
    where `liftwatch-fleet pki init tls` and `pki agent tls ID` write them (README)."""
    source = Path(__file__).resolve().parents[2] / "deploy" / "agent" / example
    target = tmp_path / "agent.toml"
    text = source.read_text(encoding="utf-8")
    target.write_text(text, encoding="utf-8")
    agent_id = re.search(r'^id = "([^"]+)"', text, re.M)
    assert agent_id is not None
    (tmp_path / "tls" / "agents").mkdir(parents=True)
    for name in ("ca.pem", f"agents/{agent_id[1]}.pem", f"agents/{agent_id[1]}.key"):
        (tmp_path / "tls" / name).write_text("PEM")
    return target


def test_mutual_tls_is_the_default_and_its_files_are_checked(tmp_path: Path) -> None:
    text = GOOD.replace("insecure = true\n", 'ca = "tls/ca.pem"\ncert = "tls/a.pem"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    problems = {p.key: p.message for p in caught.value.problems}
    assert problems["fleet.key"].startswith("is required for mutual TLS")
    # The missing file, and the command that makes it.
    assert problems["fleet.ca"].startswith(f"no such file: {tmp_path / 'tls' / 'ca.pem'} (")
    assert "`liftwatch-fleet pki init DIR`" in problems["fleet.ca"]
    assert "`liftwatch-fleet pki agent DIR " in problems["fleet.cert"]
    insecure_with_cert = GOOD.replace("insecure = true\n", 'insecure = true\ncert = "x.pem"\n')
    with pytest.raises(ConfigError, match=r"fleet\.cert: is set but fleet\.insecure = true"):
        load_config(write(tmp_path, insecure_with_cert))


def test_the_shipped_example_config_is_valid(tmp_path: Path) -> None:
    config = load_config(installed("agent.example.toml", tmp_path))
    assert not config.fleet.insecure
    assert config.fleet.cert == tmp_path / "tls" / "agents" / f"{config.id}.pem"
    assert len(config.units) == 4
    assert config.units[3].detect.door_close_failure_s == 25.0


def test_the_shipped_rtu_example_is_valid_and_fits_its_line(tmp_path: Path) -> None:
    config = load_config(installed("agent.rtu.example.toml", tmp_path))
    (bus,) = config.buses
    assert (bus.device, bus.baudrate, str(bus.serial_format)) == ("/dev/ttyUSB0", 19200, "8E1")
    assert bus.frame_gap_s == pytest.approx(3.5 * 11 / 19200)
    assert len(config.units) == 4
    car4 = config.units[3]
    assert [s.slave for s in car4.sources] == [4, 9]
    assert car4.sources[1].signals == {"door_lock_closed", "safety_circuit_closed"}


RTU_BAD = """
[agent]
id = "edge-1"

[[bus]]
name = "line"
url = "rtu://"
baudrate = 12345
format = "9X1"
poll_hz = 10
host = "oops"

[[bus]]
name = "slow"
url = "rtu:///dev/ttyAMA0"
baudrate = 9600
poll_hz = 10

[[unit]]
id = "u1"
bus = "slow"
slave = 1
profile = "missing-profile"

[[unit]]
id = "u2"
bus = "slow"
slave = 2
[[unit.extra]]
slave = 1
profile = "io-module"
signals = ["floor"]

[[unit]]
id = "u3"
bus = "slow"
slave = 3

[[unit]]
id = "u4"
bus = "slow"
slave = 4
"""


def test_rtu_problems_are_each_reported_with_their_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, RTU_BAD)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = {p.key: p.message for p in caught.value.problems}
    assert "serial port" in problems["bus[0].url"]
    assert "baudrate" in str(caught.value) and "bus[0].format" in problems
    assert problems["bus[0].host"] == "unknown key"
    assert "no shipped profile 'missing-profile'" in problems["unit[0].profile"]
    assert "already unit 'u1'" in problems["unit[1].extra[0].slave"]
    assert "'floor' not provided by profile 'io-module'" in problems["unit[1].extra[0].signals"]
    # 9600 8E1: three 10-register reads and the module's 6 inputs (u1's profile failed).
    rate = problems["bus[1].poll_hz"]
    assert "at 9600 8E1 this line carries at most 24.8 of these requests/s" in rate
    assert "poll_hz <= 6.1" in rate
    assert main(["check-config", str(path)]) == 1
    assert "bus[1].poll_hz" in capsys.readouterr().out


def test_check_config_reports_a_missing_serial_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD.replace('url = "tcp://127.0.0.1:5020"', f'url = "rtu://{tmp_path}/ttyNONE"')
    path = write(tmp_path, text)
    assert main(["check-config", str(path)]) == 1
    assert f"bus[0].url: serial port {tmp_path}/ttyNONE does not exist" in capsys.readouterr().out


def test_a_wrong_profile_file_is_reported_with_its_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "acme.toml").write_text(
        '[profile]\nname = "acme"\n[signals]\nfloor = { adress = 1 }\n', encoding="utf-8"
    )
    text = GOOD.replace("slave = 1\n", 'slave = 1\nprofile = "acme.toml"\n', 1)
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert {p.key for p in caught.value.problems} == {"unit[0].profile"}
    messages = [p.message for p in caught.value.problems]
    assert any("acme.toml: signals.floor.adress: unknown key" in m for m in messages)
    assert any("acme.toml: signals.floor.address: is required" in m for m in messages)


def test_fleet_linger_defaults_to_a_second_and_is_bounded(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, GOOD)).fleet.linger_s == 1.0
    text = GOOD.replace("insecure = true", "insecure = true\nlinger_s = 0")
    assert load_config(write(tmp_path, text)).fleet.linger_s == 0.0
    for bad in ("-1", "60", '"soon"'):
        text = GOOD.replace("insecure = true", f"insecure = true\nlinger_s = {bad}")
        with pytest.raises(ConfigError) as caught:
            load_config(write(tmp_path, text))
        assert {p.key for p in caught.value.problems} == {"fleet.linger_s"}


def test_every_documented_default_is_the_default_applied(tmp_path: Path) -> None:
    """The docs block of agent/config.py quotes each key's default: writing every quoted
    default out must give the same config as leaving every key out."""
    docs = documented_defaults(agent_config.__doc__ or "")
    rtu = "rtu:///dev/ttyUSB0"  # the docs' RTU-only keys are unknown keys on a tcp:// bus
    bare: dict[str, Any] = {
        "agent": {"id": "edge-1"},
        "fleet": {"insecure": True},
        "bus": [{"name": "bus1", "url": rtu}],
        "unit": [{"id": "u1", "bus": "bus1", "slave": 1}],
    }
    documented: dict[str, Any] = {
        "agent": {**docs["agent"], "id": "edge-1"},
        "fleet": {**docs["fleet"], "insecure": True},
        "mqtt": docs["mqtt"],
        "update": docs["update"],
        "recorder": docs["recorder"],
        "detect": docs["detect"],
        "bus": [{**docs["bus"], "url": rtu}],
        "unit": [{**docs["unit"], "id": "u1"}],
    }
    assert len(documented["agent"]) + len(documented["bus"][0]) > 15  # the block was read
    assert parse_config(documented, tmp_path) == parse_config(bare, tmp_path)


def test_docs_events_config_table_quotes_every_detection_default() -> None:
    """docs/events.md's "Config keys" table lists every DetectionConfig key with the
    dataclass field default (the one place it is written); "none" is a None default."""
    text = (Path(__file__).parents[2] / "docs" / "events.md").read_text(encoding="utf-8")
    table = text.split("## Config keys", 1)[1].split("\n## ", 1)[0]
    quoted: dict[str, float | None] = {}
    for row in table.splitlines():
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            default = cells[1].split()[0]
            quoted[cells[0].strip("`")] = None if default == "none" else float(default)
    defaults, keys = DetectionConfig(), DetectionConfig.keys()
    assert set(quoted) == set(keys)
    assert quoted == {key: getattr(defaults, key) for key in keys}


def test_detect_tables_valid_alone_but_not_together_are_a_problem(tmp_path: Path) -> None:
    """A unit's overrides are checked merged with [detect]: a landing range split over the
    two that is upside down is reported on the unit, never replaced by the defaults."""
    text = GOOD.replace(
        "entrapment_between_floors_s = 20", "entrapment_between_floors_s = 20\ntop_landing = 5"
    ).replace("door_close_failure_s = 30", "door_close_failure_s = 30\nbottom_landing = 10")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert [str(p) for p in caught.value.problems] == [
        "unit[1].detect.top_landing: must be above bottom_landing (10)"
    ]
    fixed = load_config(write(tmp_path, text.replace("bottom_landing = 10", "bottom_landing = -2")))
    assert [(u.detect.top_landing, u.detect.bottom_landing) for u in fixed.units] == [
        (5, None),
        (5, -2),
    ]


def test_a_zero_slow_poll_on_an_rtu_bus_is_a_problem_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The RTU wire check divides by slow_poll_s: with an invalid one it stays out (it
    raised ZeroDivisionError out of check-config before)."""
    text = GOOD.replace(
        'url = "tcp://127.0.0.1:5020"', 'url = "rtu:///dev/ttyUSB0"\nslow_poll_s = 0'
    )
    assert main(["check-config", str(write(tmp_path, text))]) == 1
    assert "bus[0].slow_poll_s: must be > 0, got 0" in capsys.readouterr().out


def test_an_extra_signal_that_is_not_a_name_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """signals = [{}] raised TypeError out of the loader before; now the element is named."""
    extra = '\n[[unit.extra]]\nslave = 9\nprofile = "io-module"\nsignals = ["door", {}]\n'
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, GOOD + extra))
    assert [str(p) for p in caught.value.problems] == [
        "unit[1].extra[0].signals[1]: expected a string, got a table"
    ]


def test_each_rule_family_default_is_the_detection_config_default() -> None:
    """The rule families' own configs keep defaults for their unit tests; they must be
    DetectionConfig's (the one definition of every threshold), never drift from them."""
    made = DetectionConfig()
    assert made.entrapment_config() == entrapment.EntrapmentConfig()
    assert made.doors_config() == doors.DoorsConfig()
    assert made.door_watch_config() == doors.DoorWatchConfig()
    assert made.motion_config() == motion.MotionConfig()
    assert made.circuits_config() == circuits.CircuitsConfig()
    assert made.controller_config() == controller.ControllerConfig()
