"""The shipped Prometheus alert rules are valid and behave as their unit tests say."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.conftest import require_binary

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args],
        cwd=RULES,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_rules_check() -> None:
    result = promtool("check", "rules", "liftwatch-rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 15 rules found" in result.stdout


def test_rules_unit_tests_pass() -> None:
    result = promtool("test", "rules", "liftwatch-rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_expectation_is_caught(tmp_path: Path) -> None:
    text = (RULES / "liftwatch-rules.test.yml").read_text()
    broken = tmp_path / "broken.test.yml"
    broken.write_text(
        text.replace("- liftwatch-rules.yml", f"- {RULES / 'liftwatch-rules.yml'}").replace(
            "instance: fleet-1\n", "instance: fleet-2\n", 1
        )
    )
    result = promtool("test", "rules", str(broken))
    assert result.returncode != 0
    assert "LiftWatchEntrapmentOpenTooLong" in result.stdout + result.stderr


def test_grafana_dashboard_queries_only_metrics_the_code_exports() -> None:
    dashboard = json.loads((RULES.parent / "grafana" / "liftwatch-fleet.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"liftwatch_[a-z_]+", e)}
    sources = "".join(
        p.read_text()
        for folder in ("fleet", "agent")
        for p in (RULES.parents[1] / folder).rglob("*.py")
    )
    for name in names:
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert f'"{base}' in sources or f"{{p}}{base.split('_', 2)[2]}" in sources, name
