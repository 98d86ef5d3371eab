"""The dashboard's shipped assets: both languages complete, every label the script asks
for exists, nothing loaded from outside the package, and the assets are package data."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from fleet.taxonomy import EventClass, platform_codes
from fleet.web.dashboard import STATIC_DIR
from protos.liftwatch.v1 import records_pb2

REPO = Path(__file__).resolve().parents[2]


def _catalogues() -> dict[str, dict[str, str]]:
    text = (STATIC_DIR / "i18n.js").read_text(encoding="utf-8")
    body = text[text.index("window.LW_I18N = ") + len("window.LW_I18N = ") : text.rindex(";")]
    catalogues: dict[str, dict[str, str]] = json.loads(body)
    return catalogues


def test_both_languages_have_the_same_labels_and_none_is_empty() -> None:
    catalogues = _catalogues()
    assert set(catalogues) == {"zh", "en"}
    assert set(catalogues["zh"]) == set(catalogues["en"])
    for language, labels in catalogues.items():
        assert all(text.strip() for text in labels.values()), language
        # Chinese labels are Chinese: an English text left in the zh catalogue is a miss.
        if language == "zh":
            untranslated = [k for k, v in labels.items() if v == catalogues["en"][k]]
            assert set(untranslated) <= {"lang.switch", "age.s"} | {
                k for k in untranslated if re.fullmatch(r"[\W\d{}a-z_ ]*", labels[k])
            }, untranslated


def test_every_label_the_script_uses_exists() -> None:
    labels = _catalogues()["en"]
    # app.js, the flight recorder's timeline.js and the plan's plan.js beside it
    script = "".join(
        (STATIC_DIR / name).read_text(encoding="utf-8")
        for name in ("app.js", "timeline.js", "plan.js", "notify.js", "crew.js")
    )
    groups = "|".join(sorted({key.split(".")[0] for key in labels}))
    # (file names such as "units.csv" look like labels but are not)
    used = {k for k in re.findall(rf'"((?:{groups})\.[a-z_\-]+)"', script) if k[-4:] != ".csv"}
    assert len(used) > 50, "the pattern no longer finds the script's labels"
    assert sorted(used - set(labels)) == []
    # Report columns are looked up as "rep." + column name.
    columns = re.search(r"const REPORT_COLUMNS = \{(.*?)\};", script, re.S)
    assert columns is not None
    names = set(re.findall(r'"([a-z_0-9]+)"', columns.group(1))) - {"fault-rate", "service-life"}
    assert sorted(f"rep.{n}" for n in names if f"rep.{n}" not in labels) == []


def test_every_event_type_and_service_mode_has_a_label() -> None:
    labels = _catalogues()["zh"]
    for name, number in records_pb2.EventType.items():
        if number:
            assert f"event.{name.removeprefix('EVENT_TYPE_')}" in labels, name
    for name, number in records_pb2.ServiceMode.items():
        if number:
            assert f"mode.{name.removeprefix('SERVICE_MODE_')}" in labels, name


def test_every_event_class_and_platform_has_a_label() -> None:
    # The unit page shows each event's class and regional platform codes by these keys.
    labels = _catalogues()["zh"]
    assert sorted(f"class.{c.value}" for c in EventClass if f"class.{c.value}" not in labels) == []
    platforms = {p for n in records_pb2.EventType.values() for p in platform_codes(n, True)}
    assert platforms, "no platform codes found"
    assert sorted(f"platform.{p}" for p in platforms if f"platform.{p}" not in labels) == []


def test_nothing_is_loaded_from_outside_the_package() -> None:
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        # The SVG namespace is an identifier, not a download.
        urls = re.findall(r"https?://[^\s\"')]+", text.replace("http://www.w3.org/2000/svg", ""))
        assert urls == [], (path.name, urls)


def test_the_assets_are_package_data() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["fleet.web"]
    shipped = {p.name for pattern in patterns for p in STATIC_DIR.parent.glob(pattern)}
    assert shipped == {p.name for p in STATIC_DIR.iterdir()}
