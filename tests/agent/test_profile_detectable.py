"""A unit whose profile lacks signals still runs, and says what it cannot detect: in the
start-up log and in the Hello the fleet receives."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from agent.app import Agent
from agent.config import load_config
from protos.liftwatch.v1 import records_pb2

CONFIG = """
[agent]
id = "edge-1"
data_dir = "data"
[fleet]
insecure = true

[[bus]]
name = "line"
url = "rtu:///dev/ttyUSB0"
baudrate = 115200
format = "8N1"

[[unit]]
id = "controller-car"
bus = "line"
slave = 1

[[unit]]
id = "retrofit-car"
bus = "line"
slave = 9
profile = "io-module"
"""


def test_hello_and_log_name_what_each_profile_can_and_cannot_detect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG, encoding="utf-8")
    app = Agent(load_config(path))
    try:
        hello = app.hello()
        with caplog.at_level(logging.INFO):
            app.describe()
    finally:
        app.outbox.close()
    by_unit = {u.unit_id: u for u in hello.units}
    full, retrofit = by_unit["controller-car"], by_unit["retrofit-car"]
    assert records_pb2.EVENT_TYPE_ENTRAPMENT in full.detectable
    assert records_pb2.EVENT_TYPE_DOOR_LOCK_BYPASS in retrofit.detectable
    for lacking in (records_pb2.EVENT_TYPE_POSITION_LOST, records_pb2.EVENT_TYPE_OVERSPEED):
        assert lacking in retrofit.undetectable
    assert records_pb2.EVENT_TYPE_CONTROLLER_LINK_LOST in retrofit.detectable
    assert retrofit.controller.profile == "io-module"
    log = caplog.text
    assert "unit retrofit-car (io-module@9) detects:" in log
    assert re.search(r"POSITION_LOST \([^)]*floor", log)
