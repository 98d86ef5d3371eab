"""Fleet manager configuration: a TOML file read into frozen dataclasses.

Every key, with its default (a missing file section or key takes the default)::

    [server]
    listen = "127.0.0.1:50051"   # host:port of the gRPC server; port 0 lets the kernel pick one

    [store]
    path = "fleet.db"            # SQLite file; relative to the config file's directory;
                                 # ":memory:" keeps everything in RAM (tests, demos)

    [coverage]
    stale_after_s = 30           # no news from a unit for this long: "stale"
    offline_after_s = 300        # no news for this long: "offline" (must exceed stale_after_s)

    [registry]
    csv = ""                     # district unit register CSV, imported when serve starts;
                                 # empty = no register; relative to the config file's directory

    [ingest]
    max_batch_records = 500      # records per RecordBatch an agent may send (told in Welcome)
    max_batch_bytes = 1048576    # serialized bytes per RecordBatch (told in Welcome)
    heartbeat_interval_s = 10    # how often agents send a Heartbeat (told in Welcome)

Unknown keys and wrong types are errors. `load_config` collects every problem, each named
by its dotted key (``coverage.stale_after_s``), and raises one `ConfigError` listing them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MEMORY = ":memory:"
# Welcome carries the limits as uint32; far below that, one batch must fit a gRPC message.
MAX_BATCH_BYTES_CEILING = 64 * 1024 * 1024


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` lists every reason, one per key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Where the gRPC server listens."""

    listen: str = "127.0.0.1:50051"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the store keeps its data: an absolute SQLite path or ``:memory:``."""

    path: str = "fleet.db"


@dataclass(frozen=True, slots=True)
class CoverageConfig:
    """Liveness thresholds, in seconds since a unit was last heard of."""

    stale_after_s: float = 30.0
    offline_after_s: float = 300.0


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """The district unit register to import at start, if any."""

    csv: Path | None = None


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Limits and pacing the fleet announces to agents in Welcome."""

    max_batch_records: int = 500
    max_batch_bytes: int = 1_048_576
    heartbeat_interval_s: int = 10


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """The whole fleet manager configuration."""

    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    coverage: CoverageConfig = CoverageConfig()
    registry: RegistryConfig = RegistryConfig()
    ingest: IngestConfig = IngestConfig()


def default_config(base_dir: Path) -> FleetConfig:
    """The embedded defaults, with relative paths resolved against ``base_dir``."""
    return parse_config({}, base_dir, source="<defaults>")


def load_config(path: Path) -> FleetConfig:
    """Read and validate the TOML file at ``path``; raises `ConfigError` listing all problems."""
    source = str(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(source, ["file not found"]) from None
    except OSError as exc:
        raise ConfigError(source, [f"cannot read: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    return parse_config(data, path.resolve().parent, source=source)


_SECTIONS: dict[str, dict[str, tuple[type, ...]]] = {
    "server": {"listen": (str,)},
    "store": {"path": (str,)},
    "coverage": {"stale_after_s": (int, float), "offline_after_s": (int, float)},
    "registry": {"csv": (str,)},
    "ingest": {
        "max_batch_records": (int,),
        "max_batch_bytes": (int,),
        "heartbeat_interval_s": (int,),
    },
}


def parse_config(data: Mapping[str, object], base_dir: Path, *, source: str) -> FleetConfig:
    """Validate parsed TOML ``data``; raises `ConfigError` listing every problem at once."""
    problems: list[str] = []
    values: dict[str, dict[str, object]] = {}
    for name, section in data.items():
        if name not in _SECTIONS:
            problems.append(f"{name}: unknown key")
            continue
        if not isinstance(section, Mapping):
            problems.append(f"{name}: expected a table, got {_type_name(section)}")
            continue
        values[name] = {}
        for key, value in section.items():
            dotted = f"{name}.{key}"
            expected = _SECTIONS[name].get(key)
            if expected is None:
                problems.append(f"{dotted}: unknown key")
            # bool is an int subclass in Python, but `true` is never a valid count here.
            elif isinstance(value, bool) or not isinstance(value, expected):
                wanted = " or ".join(_TOML_NAMES[t] for t in expected)
                problems.append(f"{dotted}: expected {wanted}, got {_type_name(value)}")
            else:
                values[name][key] = value

    def get(section: str, key: str, default: object) -> object:
        return values.get(section, {}).get(key, default)

    defaults = FleetConfig()
    listen = str(get("server", "listen", defaults.server.listen))
    problems += _check_listen(listen)

    store_path = str(get("store", "path", defaults.store.path))
    if not store_path:
        problems.append("store.path: must not be empty")
    elif store_path != MEMORY:
        store_path = str(base_dir / store_path)

    stale = float(_number(get("coverage", "stale_after_s", defaults.coverage.stale_after_s)))
    offline = float(_number(get("coverage", "offline_after_s", defaults.coverage.offline_after_s)))
    if stale <= 0:
        problems.append("coverage.stale_after_s: must be > 0")
    if offline <= stale:
        problems.append("coverage.offline_after_s: must be greater than coverage.stale_after_s")

    csv_text = str(get("registry", "csv", ""))
    csv_path = base_dir / csv_text if csv_text else None

    ingest_values: dict[str, int] = {}
    for key, low, high in (
        ("max_batch_records", 1, 100_000),
        ("max_batch_bytes", 1024, MAX_BATCH_BYTES_CEILING),
        ("heartbeat_interval_s", 1, 3600),
    ):
        number = int(_number(get("ingest", key, getattr(defaults.ingest, key))))
        if not low <= number <= high:
            problems.append(f"ingest.{key}: must be between {low} and {high}, got {number}")
        ingest_values[key] = number

    if problems:
        raise ConfigError(source, problems)
    return FleetConfig(
        server=ServerConfig(listen=listen),
        store=StoreConfig(path=store_path),
        coverage=CoverageConfig(stale_after_s=stale, offline_after_s=offline),
        registry=RegistryConfig(csv=csv_path),
        ingest=IngestConfig(**ingest_values),
    )


def split_listen(listen: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 hosts in brackets) into host and port; raises ValueError."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {listen!r}")
    if not port_text.isdigit():
        raise ValueError(f"port must be a number, got {listen!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {listen!r}")
    return host, port


def _check_listen(listen: str) -> list[str]:
    try:
        split_listen(listen)
    except ValueError as exc:
        return [f"server.listen: {exc}"]
    return []


def _number(value: object) -> int | float:
    # Only reached with values already type-checked (or defaults); anything else is a bug.
    assert isinstance(value, int | float)
    return value


_TOML_NAMES: dict[type, str] = {str: "a string", int: "an integer", float: "a float"}


def _type_name(value: object) -> str:
    names = {bool: "a boolean", str: "a string", int: "an integer", float: "a float"}
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return names.get(type(value), type(value).__name__)
