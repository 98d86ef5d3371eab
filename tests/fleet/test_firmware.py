from __future__ import annotations

from pathlib import Path

import pytest

from fleet.store.base import ControllerIdentity, RegisterEntry, UnitRow
from fleet.units.firmware import (
    ModelPolicy,
    Policy,
    PolicyError,
    VersionCount,
    inventory,
    load_policy,
    parse_policy,
    version_key,
    violations_of,
)

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "fleet" / "firmware-policy.toml"


def _unit(unit_id: str, model: str, firmware: str, agent_version: str = "0.1.0") -> UnitRow:
    return UnitRow(
        unit_id=unit_id,
        registered=True,
        register=RegisterEntry(unit_id, controller_model=model),
        agent_id="a1" if agent_version else "",
        agent_version=agent_version,
        controller=ControllerIdentity(firmware=firmware),
        last_seen=None,
        link_up=None,
    )


def test_versions_compare_by_numeric_parts() -> None:
    assert version_key("3.1.10") > version_key("3.1.4")
    assert version_key("v3.2") > version_key("3.1.99")
    assert version_key("3.1.4") == version_key("3.1.4")
    assert version_key("3.1.4") < version_key("3.1.4.1")
    assert version_key("3.1.4") < version_key("3.1.beta")  # text parts after numbers


def test_the_shipped_policy_matches_the_field_table() -> None:
    policy = load_policy(SHIPPED)
    found = {
        (u.unit_id, v.rule)
        for u in (
            _unit("A", "RC-3000", "3.1.2"),
            _unit("B", "RC-3000", "3.1.4"),
            _unit("C", "RC-3000", "3.2.0"),
            _unit("D", "RC-5000", "5.0.1"),
            _unit("E", "RC-5000", "5.1.3"),
            _unit("F", "VX-220", "2.2.9"),
            _unit("G", "VX-220", "2.3.1"),
            _unit("H", "LEGACY-88", "1.0.7"),
            _unit("I", "LEGACY-88", ""),
            _unit("J", "RC-3000", ""),  # firmware not known yet: not judged
            _unit("K", "OTHER", "0.1"),  # model without rules
        )
        for v in violations_of(u, policy)
    }
    assert found == {
        ("A", "below_minimum"),
        ("D", "known_bad"),
        ("F", "known_bad"),
        ("H", "no_updates"),
        ("I", "no_updates"),
    }


def test_inventory_counts_versions_by_model() -> None:
    policy = Policy({"RC-3000": ModelPolicy(minimum="3.1.4", note="upgrade")})
    units = [
        _unit("A", "RC-3000", "3.1.10", "0.2.0"),
        _unit("B", "RC-3000", "3.1.2", "0.1.0"),
        _unit("C", "RC-3000", "3.1.2", "0.2.0"),
        _unit("D", "VX-220", "2.3.1", ""),
    ]
    inv = inventory(units, policy)
    assert inv.firmware == (
        VersionCount("RC-3000", "3.1.2", 2),
        VersionCount("RC-3000", "3.1.10", 1),
        VersionCount("VX-220", "2.3.1", 1),
    )
    assert inv.agent_versions == (
        VersionCount("RC-3000", "0.1.0", 1),
        VersionCount("RC-3000", "0.2.0", 2),
    )
    assert [(v.unit_id, v.reason) for v in inv.violations] == [
        ("B", "3.1.2 is below the minimum 3.1.4 (upgrade)"),
        ("C", "3.1.2 is below the minimum 3.1.4 (upgrade)"),
    ]
    assert [c.model for c in inventory(units, policy, "VX-220").firmware] == ["VX-220"]


def test_policy_problems_are_all_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(
            {
                "extra": 1,
                "model": {
                    "RC-3000": {"minimum": 3, "known_bad": "5.0.1", "colour": "red"},
                    "VX-220": "x",
                },
            },
            "p.toml",
        )
    message = str(caught.value)
    for part in (
        "extra: unknown key",
        "model.RC-3000.minimum: expected a string",
        "model.RC-3000.known_bad: expected an array of strings",
        "model.RC-3000.colour: unknown key",
        "model.VX-220: expected a table",
    ):
        assert part in message
    with pytest.raises(PolicyError, match="file not found"):
        load_policy(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n", encoding="utf-8")
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(bad)
