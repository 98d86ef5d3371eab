"""The shape of agent/detect that keeps its rules readable (issue 15): no function over
80 lines, one definition of the time slack, an engine that knows no rule by name, and
one Rule per rule."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import agent.detect
from agent.detect import controller, engine
from agent.detect.engine import DetectionConfig
from agent.detect.events import EventType

DETECT = Path(agent.detect.__file__).parent
MAX_LINES = 80


def _modules() -> list[tuple[Path, ast.Module]]:
    paths = sorted(DETECT.glob("*.py"))
    assert len(paths) > 5, f"no detection modules found in {DETECT}"
    return [(path, ast.parse(path.read_text(encoding="utf-8"))) for path in paths]


def test_no_function_in_detect_is_over_80_lines() -> None:
    long = [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_LINES
    ]
    assert not long, "functions over 80 lines: " + ", ".join(long)


def test_the_time_slack_is_defined_once() -> None:
    definitions = [
        f"{path.name}:{node.lineno}"
        for path, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name) and "TIME_SLACK" in target.id
    ]
    assert definitions == ["latch.py:" + definitions[0].split(":")[1]], definitions


def test_the_engine_runs_every_rule_through_the_protocol() -> None:
    # The engine module names no rule's step or blind function: it loops over `rules`.
    source = Path(engine.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    by_name = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in {"step", "watch_step", "blind", "watch_blind"}
        and isinstance(node.value, ast.Name)
        and node.value.id in {"entrapment", "doors", "motion", "circuits", "controller"}
    ]
    assert by_name == []
    # Every family module with a step function has its rule among the engine's, but
    # link.py: link loss is decided by the poller (agent.monitor), not from samples.
    families = {
        path.stem
        for path, tree in _modules()
        if any(isinstance(n, ast.FunctionDef) and n.name == "step" for n in tree.body)
    } - {"link"}
    assert families == {"entrapment", "doors", "motion", "circuits", "controller"}
    ruled = {type(rule).__module__.rsplit(".", 1)[1] for rule in engine.rules(DetectionConfig())}
    assert ruled == families


def test_one_rule_per_rule() -> None:
    # Each Rule the engine runs decides one event type: its class names at most one
    # (an overtravel rule is told its type; the fault-code rule raises what the profile
    # maps a code to, else RESTART_PREVENTED), and there is one rule per sample-driven
    # event type (all but CONTROLLER_LINK_LOST, which the poller decides).
    config = DetectionConfig(rated_speed_mm_s=1000.0, top_landing=9, bottom_landing=0)
    ruled = engine.rules(config)
    for rule in ruled:
        source = inspect.getsource(type(rule))
        named = set(re.findall(r"EventType\.([A-Z_]+)", source))
        if type(rule) is controller.FaultCode:
            assert named == {"RESTART_PREVENTED"}, named
        else:
            assert len(named) <= 1, f"{type(rule).__name__} decides {sorted(named)}"
    assert len(ruled) == len(EventType) - 1
    assert len({type(rule).__name__ for rule in ruled}) == len(ruled) - 1  # two overtravels
