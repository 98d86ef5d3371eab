"""Bad numbers to the JSON API are a 400 naming the parameter, never a 500 (probe
``bad_numbers_400``): every numeric parameter the OpenAPI spec declares, with numbers a
careless parser lets through (``²`` passes ``str.isdigit``, ``1e999`` is ``float``'s
infinity, 23 digits overflow SQLite)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fleet.cli.main import main
from fleet.config import FleetConfig, StoreConfig
from fleet.read.selection import BadRequestError
from fleet.store.sqlite import SqliteStore
from fleet.units.firmware import version_key
from fleet.web.openapi import openapi_spec
from fleet.web.params import integer_param, positive_param
from tests.fleet.harness import running_fleet

BAD_NUMBERS = (
    "99999999999999999999999",
    "²",
    "٣",
    "-1",
    "1e999",
    "inf",
    "nan",
    " 5",
    "0x10",
    "1.5.2",
)


def numeric_parameters() -> list[tuple[str, str, str, str]]:
    """(method, path, parameter, where) for every integer or number parameter in the
    spec: the list the probe walks, so a new numeric parameter is probed too."""
    found = []
    for path, operations in openapi_spec()["paths"].items():
        for method, operation in operations.items():
            for param in operation.get("parameters", []):
                if param["schema"].get("type") in ("integer", "number"):
                    found.append((method.upper(), path, param["name"], param["in"]))
    return found


def test_the_spec_declares_every_numeric_parameter() -> None:
    """The routes that read numbers say so in the spec (else the probe would skip them)."""
    names = {(path, name) for _, path, name, _ in numeric_parameters()}
    assert {
        ("/api/units", "page_size"),
        ("/api/coverage/history", "limit"),
        ("/api/events", "limit"),
        ("/api/alarms", "limit"),
        ("/api/alarms/{alarm_id}", "alarm_id"),
        ("/api/alarms/{alarm_id}/{action}", "alarm_id"),
        ("/api/reports/claims", "window_min"),
        ("/api/reports/claims", "max_gap_s"),
    } <= names


def _request(base: str, method: str, path: str, name: str, where: str, value: str) -> str:
    """The URL (path parameters filled) that sends ``value`` as ``name``."""
    filled = path.replace("{action}", "acknowledge").replace("{unit_id}", "U1")
    quoted = urllib.parse.quote(value, safe="")
    if where == "path":
        return f"http://{base}{filled.replace('{' + name + '}', quoted)}"
    return f"http://{base}{filled}?{name}={quoted}"


def _send(url: str, method: str) -> tuple[int, Any]:
    body = b"unit_id,time\nU1,2026-01-01T00:00:00Z\n" if method == "POST" else None
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": "text/csv"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bad_numbers_400(tmp_path: Path) -> None:
    """Each numeric parameter of each route, each bad number: 400, the parameter named."""
    config = FleetConfig(store=StoreConfig(path=str(tmp_path / "fleet.db")))
    params = numeric_parameters()

    async def main_() -> list[str]:
        failures = []
        async with running_fleet(config, http=True) as fleet:
            for method, path, name, where in params:
                for value in BAD_NUMBERS:
                    url = _request(fleet.http, method, path, name, where, value)
                    status, body = await asyncio.to_thread(_send, url, method)
                    named = name.replace("_", " ") if name == "alarm_id" else name
                    if status != 400 or named not in str(body.get("error", "")):
                        failures.append(f"{method} {url}: {status} {body}")
        return failures

    assert asyncio.run(main_()) == []


@pytest.mark.parametrize("text", BAD_NUMBERS)
def test_integer_param_refuses(text: str) -> None:
    with pytest.raises(BadRequestError, match=r"^limit: "):
        integer_param("limit", text, 0, maximum=1000)


@pytest.mark.parametrize("text", (*BAD_NUMBERS, "0", "1e3"))
def test_positive_param_refuses(text: str) -> None:
    with pytest.raises(BadRequestError, match=r"^window_min: "):
        positive_param("window_min", text, 30.0, maximum=1e6)


def test_good_numbers_pass() -> None:
    assert integer_param("limit", "", 7) == 7
    assert integer_param("limit", "0042", 0, maximum=100) == 42
    assert positive_param("window_min", "1.5", 30.0, maximum=100) == 1.5
    assert positive_param("window_min", "", 30.0, maximum=100) == 30.0


@pytest.mark.parametrize("alarm_id", ["²", "99999999999999999999999", "0", "-1"])
def test_the_cli_names_a_bad_alarm_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], alarm_id: str
) -> None:
    db = tmp_path / "fleet.db"
    SqliteStore.open(str(db)).close()
    assert main(["alarms", "ack", alarm_id, "--by", "W", "--db", str(db)]) == 2
    assert "alarm id: " in capsys.readouterr().err


def test_a_firmware_version_with_odd_digits_sorts_as_text() -> None:
    """An agent's firmware text ("1.²") is compared, never a crash of the inventory."""
    assert version_key("1.²") == ((0, 1, ""), (1, 0, "²"))
    assert version_key("v2.10") > version_key("v2.9")
