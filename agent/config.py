"""The agent's TOML configuration: parsed into frozen dataclasses, every problem reported.

Every key, with its default (a key without a default is required)::

    [agent]
    id = "..."                  # required: this box's agent id, as registered with the fleet
    data_dir = "."              # where outbox.db lives; relative paths are relative to this file
    state_interval_s = 10.0     # a CarState is recorded on every change and at least this often
    counters_interval_s = 60.0  # Counters records (trips, door cycles, run hours) this often

    [fleet]
    endpoints = ["127.0.0.1:50051"]  # host:port of fleet managers, tried in order
    insecure = true             # plaintext gRPC; mutual TLS arrives with the security work
    max_batch_records = 500     # upper bound; the fleet's Welcome may lower it

    [detect]                    # defaults for every unit; see docs/events.md for each key
    entrapment_between_floors_s = 30.0
    # ... any DetectionConfig key

    [[bus]]
    name = "bus1"               # required, unique
    url = "tcp://127.0.0.1:502" # required: tcp://HOST:PORT (Modbus TCP)
    poll_hz = 10.0              # fast-signal polls per second for every unit on this bus
    timeout_s = 0.5             # per request
    retries = 0                 # per request; the poller owns back-off, so keep this low
    link_lost_after_s = 5.0     # no valid answer for this long: CONTROLLER_LINK_LOST

    [[unit]]
    id = "..."                  # required: the unit's registration code
    bus = "bus1"                # required: name of a [[bus]]
    slave = 1                   # required: Modbus device id, 1..247
    profile = "reference"       # register map; only "reference" for now
    [unit.detect]               # per-unit overrides of [detect]

Unknown keys are errors: a typo must never silently fall back to a default.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.detect.engine import DetectionConfig

KNOWN_PROFILES = frozenset({"reference"})


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config, with the dotted key that has it."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class ConfigError(Exception):
    """A config with problems; ``problems`` lists every one of them."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


@dataclass(frozen=True, slots=True)
class FleetConfig:
    endpoints: tuple[str, ...] = ("127.0.0.1:50051",)
    insecure: bool = True
    max_batch_records: int = 500


@dataclass(frozen=True, slots=True)
class BusConfig:
    name: str
    host: str
    port: int
    poll_hz: float = 10.0
    timeout_s: float = 0.5
    retries: int = 0
    link_lost_after_s: float = 5.0


@dataclass(frozen=True, slots=True)
class UnitConfig:
    id: str
    bus: str
    slave: int
    profile: str = "reference"
    detect: DetectionConfig = field(default_factory=DetectionConfig)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    id: str
    data_dir: Path
    fleet: FleetConfig
    buses: tuple[BusConfig, ...]
    units: tuple[UnitConfig, ...]
    state_interval_s: float = 10.0
    counters_interval_s: float = 60.0

    @property
    def outbox_path(self) -> Path:
        """Where the outbox database lives."""
        return self.data_dir / "outbox.db"


class _Reader:
    """Reads typed values out of a TOML table, recording every problem instead of stopping."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems

    def table(self, raw: object, key: str, known: set[str] | None) -> dict[str, Any]:
        """``raw`` as a table; unknown keys are reported unless ``known`` is None."""
        if not isinstance(raw, dict):
            self.problems.append(ConfigProblem(key, f"must be a table, got {_kind(raw)}"))
            return {}
        for name in sorted(set(raw) - known if known is not None else ()):
            self.problems.append(ConfigProblem(_join(key, name), "unknown key"))
        return raw

    def get(
        self,
        table: Mapping[str, Any],
        key: str,
        name: str,
        kind: type | tuple[type, ...],
        default: Any = None,
        *,
        required: bool = False,
    ) -> Any:
        dotted = _join(key, name)
        if name not in table:
            if required:
                self.problems.append(ConfigProblem(dotted, "is required"))
            return default
        value = table[name]
        # bool is an int in Python; a config that says `slave = true` is still wrong.
        wrong_bool = isinstance(value, bool) and bool not in _as_tuple(kind)
        if wrong_bool or not isinstance(value, kind):
            want = " or ".join(t.__name__ for t in _as_tuple(kind))
            self.problems.append(ConfigProblem(dotted, f"must be {want}, got {_kind(value)}"))
            return default
        return value

    def positive(self, value: float, key: str) -> None:
        if value <= 0:
            self.problems.append(ConfigProblem(key, f"must be > 0, got {value}"))


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind(value: object) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def parse_config(raw: Mapping[str, Any], base_dir: Path, source: str = "<config>") -> AgentConfig:
    """Build an `AgentConfig` from parsed TOML, or raise `ConfigError` listing every problem."""
    problems: list[ConfigProblem] = []
    r = _Reader(problems)
    top = r.table(dict(raw), "", {"agent", "fleet", "detect", "bus", "unit"})

    agent = r.table(
        top.get("agent", {}), "agent", {"id", "data_dir", "state_interval_s", "counters_interval_s"}
    )
    agent_id = r.get(agent, "agent", "id", str, "", required=True)
    data_dir = Path(r.get(agent, "agent", "data_dir", str, "."))
    state_interval = float(r.get(agent, "agent", "state_interval_s", (int, float), 10.0))
    counters_interval = float(r.get(agent, "agent", "counters_interval_s", (int, float), 60.0))
    r.positive(state_interval, "agent.state_interval_s")
    r.positive(counters_interval, "agent.counters_interval_s")

    fleet_raw = r.table(
        top.get("fleet", {}), "fleet", {"endpoints", "insecure", "max_batch_records"}
    )
    endpoints = r.get(fleet_raw, "fleet", "endpoints", list, ["127.0.0.1:50051"])
    for i, endpoint in enumerate(endpoints):
        if not isinstance(endpoint, str) or _host_port(endpoint) is None:
            problems.append(
                ConfigProblem(f"fleet.endpoints[{i}]", f"must be 'host:port', got {endpoint!r}")
            )
    if not endpoints:
        problems.append(ConfigProblem("fleet.endpoints", "must name at least one fleet manager"))
    insecure = r.get(fleet_raw, "fleet", "insecure", bool, True)
    max_batch = r.get(fleet_raw, "fleet", "max_batch_records", int, 500)
    r.positive(max_batch, "fleet.max_batch_records")

    default_detect = r.table(top.get("detect", {}), "detect", None)
    problems.extend(
        ConfigProblem(f"detect.{k}", m) for k, m in DetectionConfig.problems(default_detect)
    )

    buses: list[BusConfig] = []
    bus_names: set[str] = set()
    raw_buses = top.get("bus", [])
    if not isinstance(raw_buses, list):
        problems.append(ConfigProblem("bus", "must be an array of tables: [[bus]]"))
        raw_buses = []
    for i, raw_bus in enumerate(raw_buses):
        key = f"bus[{i}]"
        b = r.table(
            raw_bus, key, {"name", "url", "poll_hz", "timeout_s", "retries", "link_lost_after_s"}
        )
        name = r.get(b, key, "name", str, f"bus{i}", required=True)
        if name in bus_names:
            problems.append(ConfigProblem(f"{key}.name", f"duplicate bus name {name!r}"))
        bus_names.add(name)
        url = r.get(b, key, "url", str, "", required=True)
        host_port = _bus_url(url)
        if url and host_port is None:
            problems.append(ConfigProblem(f"{key}.url", f"must be tcp://HOST:PORT, got {url!r}"))
        poll_hz = float(r.get(b, key, "poll_hz", (int, float), 10.0))
        timeout_s = float(r.get(b, key, "timeout_s", (int, float), 0.5))
        retries = r.get(b, key, "retries", int, 0)
        link_lost = float(r.get(b, key, "link_lost_after_s", (int, float), 5.0))
        r.positive(poll_hz, f"{key}.poll_hz")
        r.positive(timeout_s, f"{key}.timeout_s")
        r.positive(link_lost, f"{key}.link_lost_after_s")
        if retries < 0:
            problems.append(ConfigProblem(f"{key}.retries", f"must be >= 0, got {retries}"))
        if poll_hz > 0 and timeout_s * (retries + 1) > link_lost:
            problems.append(
                ConfigProblem(
                    f"{key}.link_lost_after_s",
                    f"{link_lost} s is shorter than one failed request "
                    f"({timeout_s} s x {retries + 1} tries)",
                )
            )
        host, port = host_port or ("", 0)
        buses.append(BusConfig(name, host, port, poll_hz, timeout_s, retries, link_lost))

    units: list[UnitConfig] = []
    unit_ids: set[str] = set()
    slaves: dict[tuple[str, int], str] = {}
    raw_units = top.get("unit", [])
    if not isinstance(raw_units, list):
        problems.append(ConfigProblem("unit", "must be an array of tables: [[unit]]"))
        raw_units = []
    if not raw_units:
        problems.append(ConfigProblem("unit", "no [[unit]] configured: nothing to watch"))
    for i, raw_unit in enumerate(raw_units):
        key = f"unit[{i}]"
        u = r.table(raw_unit, key, {"id", "bus", "slave", "profile", "detect"})
        unit_id = r.get(u, key, "id", str, "", required=True)
        if unit_id in unit_ids:
            problems.append(ConfigProblem(f"{key}.id", f"duplicate unit id {unit_id!r}"))
        unit_ids.add(unit_id)
        bus = r.get(u, key, "bus", str, "", required=True)
        if bus and bus not in bus_names:
            known = ", ".join(sorted(bus_names)) or "none"
            problems.append(
                ConfigProblem(f"{key}.bus", f"no [[bus]] named {bus!r} (known: {known})")
            )
        slave = r.get(u, key, "slave", int, 0, required=True)
        if "slave" in u and isinstance(slave, int) and not 1 <= slave <= 247:
            problems.append(ConfigProblem(f"{key}.slave", f"must be 1..247, got {slave}"))
        elif (bus, slave) in slaves:
            problems.append(
                ConfigProblem(
                    f"{key}.slave",
                    f"bus {bus!r} slave {slave} is already unit {slaves[(bus, slave)]!r}",
                )
            )
        slaves[(bus, slave)] = unit_id
        profile = r.get(u, key, "profile", str, "reference")
        if profile not in KNOWN_PROFILES:
            problems.append(
                ConfigProblem(
                    f"{key}.profile",
                    f"unknown profile {profile!r} (known: {', '.join(sorted(KNOWN_PROFILES))})",
                )
            )
        overrides = r.table(u.get("detect", {}), f"{key}.detect", None)
        problems.extend(
            ConfigProblem(f"{key}.detect.{k}", m) for k, m in DetectionConfig.problems(overrides)
        )
        merged = {**default_detect, **overrides}
        detect = (
            DetectionConfig()
            if DetectionConfig.problems(merged)
            else (DetectionConfig.from_mapping(merged))
        )
        units.append(UnitConfig(unit_id, bus, slave, profile, detect))

    if problems:
        raise ConfigError(source, problems)
    return AgentConfig(
        id=agent_id,
        data_dir=data_dir if data_dir.is_absolute() else base_dir / data_dir,
        fleet=FleetConfig(tuple(endpoints), insecure, max_batch),
        buses=tuple(buses),
        units=tuple(units),
        state_interval_s=state_interval,
        counters_interval_s=counters_interval,
    )


def load_config(path: Path) -> AgentConfig:
    """Read and validate the TOML file at ``path``; `ConfigError` names every problem."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), [ConfigProblem("(file)", exc.strerror or str(exc))]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [ConfigProblem("(syntax)", str(exc))]) from exc
    return parse_config(raw, path.resolve().parent, str(path))


def _host_port(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _bus_url(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
        return None
    return parts.hostname, parts.port
