"""The agent's TOML configuration: parsed into frozen dataclasses, every problem reported.

Every key, with its default (a key without a default is required)::

    [agent]
    id = "..."                  # required: this box's agent id, as registered with the fleet
    data_dir = "."              # where outbox.db lives; relative paths are relative to this file
    state_interval_s = 10.0     # a CarState is recorded on every change and at least this often
    counters_interval_s = 60.0  # Counters records (trips, door cycles, run hours) this often
    outbox_max_mb = 256.0       # outbox bound on the SD card: past it, the oldest state
                                #   samples are thinned (events are never dropped)
    outbox_reserve_mb = 8.0     # space pre-allocated beside the outbox (outbox.db.reserve)
                                #   and released only to keep an event when the disk is
                                #   full; put back once the disk has twice that free; 0: none
    outbox_fail_restart_s = 120.0  # appends failing (disk full, I/O error) this long: the
                                #   agent stops pinging systemd's watchdog, which restarts
                                #   it after WatchdogSec; records wait in memory meanwhile
    metrics_listen = "127.0.0.1:9108"  # Prometheus /metrics; "" turns it off; port 0 picks
                                #   a free one. Loopback by default: the box's metrics are
                                #   not for the 4G network

    [fleet]
    endpoints = ["127.0.0.1:50051"]  # host:port of fleet managers, tried in turn (fail-over)
    insecure = false            # true: plaintext gRPC, for the demo and the rig only
    ca = ""                     # mutual TLS (required unless insecure): the CA that signed
    cert = ""                   #   the fleet's certificate, this agent's certificate and
    key = ""                    #   its key (`liftwatch-fleet pki agent`); relative to this file
    max_batch_records = 500     # upper bound; the fleet's Welcome may lower it
    linger_s = 1.0              # telemetry (state samples, counters, link status) waits
                                #   up to this long so that one message carries several
                                #   records; events are sent at once; 0 sends every
                                #   poll cycle's records as soon as they are committed

    [mqtt]                      # optional side output; leave host empty to turn it off
    host = ""
    port = 1883
    prefix = "liftwatch"        # topics: docs/mqtt.md
    username = ""
    password = ""
    queue_size = 10000          # messages held while the broker is away; oldest dropped first

    [update]                    # signed releases and the updater (docs/updates.md)
    release_keys = []           # base64 ed25519 public keys; none: every release refused
    spool_dir = ""              # where verified bundles are staged; "": data_dir/updates
    root = "/opt/liftwatch"     # the updater's versions/ and `current` symlink
    health_timeout_s = 600.0    # not healthy by then: the updater switches back itself
    healthy_for_s = 300.0       # healthy this long (no watchdog restart) to be kept
    keep_versions = 1           # old versions kept beside the running one
    min_free_mb = 100.0         # free space needed beyond twice the bundle's size

    [recorder]                  # the flight recorder's evidence windows (agent/recorder.py)
    pre_s = 60                  # seconds kept before an event's onset
    post_s = 30                 # seconds after the raise, the event still raised
    max_s = 600                 # a window runs to the clear if it comes within this many
                                #   seconds of the raise; 600: pre_s + the longest detection
                                #   threshold + max_s at 10 Hz stays under 64 kB of evidence.
                                #   Not set: lowered per unit to fit 64 kB when a threshold
                                #   is longer (300 s: 510); set: check-config refuses past it

    [detect]                    # defaults for every unit; see docs/events.md for each key
    entrapment_between_floors_s = 30.0
    # ... any DetectionConfig key

    [[bus]]                     # one physical line (RTU) or one TCP endpoint
    name = "bus1"               # required, unique
    url = "tcp://127.0.0.1:502" # required: tcp://HOST:PORT (Modbus TCP, one connection)
                                #   or rtu:///dev/ttyUSB0 (Modbus RTU on a serial port)
    poll_hz = 10.0              # fast-signal polls per second for every unit on this bus
    slow_poll_s = 5.0           # counters (rate "slow" in the profile) this often
    identity_poll_s = 3600.0    # identity strings this often (also at start and after
                                #   every link recovery)
    timeout_s = 0.5             # per request; keep it short on RTU (0.1-0.2 s)
    retries = 0                 # per request; the scheduler owns back-off, so keep this low
    backoff_max_s = 2.0         # a silent slave is retried after 1, 2, 4 ... cycles, at
                                #   most this far apart, so it cannot starve the others
    link_lost_after_s = 5.0     # no valid answer for this long: CONTROLLER_LINK_LOST
    # RTU only (unknown keys on a tcp:// bus):
    baudrate = 19200
    format = "8E1"              # data bits, parity N/E/O, stop bits
    inter_frame_delay_ms = ...  # silence before each request; default the 3.5-character
                                #   time (1.75 ms above 19200 baud)

    [[unit]]
    id = "..."                  # required: the unit's registration code
    bus = "bus1"                # required: name of a [[bus]]
    slave = 1                   # required: Modbus device id, 1..247
    profile = "reference"       # a shipped profile (agent/profiles/NAME.toml) or a path to
                                #   a .toml file, relative to this config
    [unit.detect]               # per-unit overrides of [detect]
    [unit.recorder]             # per-unit overrides of [recorder]

    [[unit.extra]]              # more slaves on the same bus that feed this unit
    slave = 9                   # required: e.g. a retrofit discrete-input module
    profile = "io-module"       # required
    signals = ["door_lock_closed"]  # optional: take only these of the profile's signals

A unit's sample merges its sources: the extras' signals replace the same signals of the
primary ``slave`` (a module wired to the real contacts is the better witness), so a unit
may be an I/O module alone or a controller plus a module. CONTROLLER_LINK_LOST follows
the primary slave; a silent extra leaves its signals unknown (None) and is counted. Each
slave id appears once per bus, whether as a unit's ``slave`` or an extra.

On an RTU bus check-config also checks that the planned requests of every slave fit the
wire at ``poll_hz`` (frame sizes and silent intervals as in DESIGN.md's field notes) and
says how many requests per second the line can carry.

Unknown keys are errors: a typo must never silently fall back to a default.

Each section has one schema, a frozen dataclass whose fields are its keys and whose field
defaults are THE defaults quoted above (a test checks the quotes): `AgentSection`,
`UplinkConfig` ([fleet]), `MqttSettings`, `UpdateSettings`, `BusSection`; ``[detect]`` is
`agent.detect.engine.DetectionConfig`. The one validator, `liftconf.schema`, reads them
(keys, types, ranges) and reports a `liftconf.schema.Problem` per key; this module checks
what relates keys (addresses, TLS files, slaves, profiles, the RTU wire budget).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from agent.bus.plan import RTU_COST, TCP_COST, CostModel, Read
from agent.bus.wire import FormatError, SerialFormat, silent_interval_s, transaction_time_s
from agent.decode.model import Profile
from agent.decode.parser import ProfileError, load_profile
from agent.detect.engine import DetectionConfig
from agent.detect.events import EventType
from agent.recorder import RecorderConfig, onset_lag_s, window_problems
from agent.recorder import fitted as fitted_recorder
from agent.release import ReleaseError
from agent.release import key_bytes as release_key_bytes
from liftconf.schema import Problem, bounded, out_of_range, read_section, type_name

# Telemetry reaches the fleet's live view up to fleet.linger_s late; more than this would
# leave the view behind the car.
MAX_LINGER_S = 5.0


# The one problem type of every config (the dotted key and the message).
ConfigProblem = Problem


class ConfigError(Exception):
    """A config with problems; ``problems`` lists every one of them."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    """The ``[fleet]`` section: where the fleet managers are and how to talk to them.

    Named for its job (the agent's uplink), so that ``FleetConfig`` means only the fleet
    manager's own configuration (`fleet.config.FleetConfig`)."""

    endpoints: tuple[str, ...] = ("127.0.0.1:50051",)
    insecure: bool = False
    max_batch_records: int = bounded(500, 1)
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    linger_s: float = 1.0


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """The optional MQTT side output (host empty: off); `agent.mqtt.MqttPublisher` takes
    it as it is (an empty username or password is none)."""

    host: str = ""
    port: int = bounded(1883, 1, 65535)
    prefix: str = "liftwatch"
    username: str = ""
    password: str = ""
    queue_size: int = bounded(10_000, 1)


@dataclass(frozen=True, slots=True)
class UpdateSettings:
    """[update]: signed releases and the on-box updater (issue 20, docs/updates.md)."""

    # base64 of each raw 32-byte ed25519 release public key; a release verifying with
    # any one is accepted (two during a key rotation); none pinned: every release refused.
    release_keys: tuple[str, ...] = ()
    # Where the agent stages a verified bundle for the updater ("": data_dir/updates).
    spool_dir: str = ""
    # The updater's tree: versions/<version>/ virtualenvs and the `current` symlink.
    root: str = "/opt/liftwatch"
    # A new version not healthy by then is switched back by the updater on its own.
    health_timeout_s: float = bounded(600.0, 0, low_open=True)
    # ... and it must stay healthy this long (the watchdog never firing) to be kept.
    healthy_for_s: float = bounded(300.0, 0)
    # Versions kept on disk besides the running one (for switching back).
    keep_versions: int = bounded(1, 1, 10)
    # Free space needed beyond twice the bundle's size before an install starts.
    min_free_mb: float = bounded(100.0, 0)


@dataclass(frozen=True, slots=True)
class BusSection:
    """A ``[[bus]]`` table as written: its keys, defaults and ranges (`BusConfig` holds
    them resolved). ``baudrate``, ``format`` and ``inter_frame_delay_ms`` are RTU only."""

    name: str = ""  # required, like url: checked by _parse_bus
    url: str = ""
    poll_hz: float = bounded(10.0, 0, low_open=True)
    slow_poll_s: float = bounded(5.0, 0, low_open=True)
    identity_poll_s: float = bounded(3600.0, 0, low_open=True)
    timeout_s: float = bounded(0.5, 0, low_open=True)
    retries: int = bounded(0, 0)
    backoff_max_s: float = bounded(2.0, 0, low_open=True)
    link_lost_after_s: float = bounded(5.0, 0, low_open=True)
    baudrate: int = 19200  # one of _BAUD_RATES
    format: str = "8E1"
    inter_frame_delay_ms: float | None = bounded(None, 0, 1000)


_SERIAL_KEYS = frozenset({"baudrate", "format", "inter_frame_delay_ms"})


@dataclass(frozen=True, slots=True)
class BusConfig:
    """One physical bus: a Modbus TCP endpoint (``host``/``port``) or a serial ``device``
    (defaults: `BusSection`'s, resolved)."""

    name: str
    host: str
    port: int
    poll_hz: float
    timeout_s: float
    retries: int
    link_lost_after_s: float
    device: str
    baudrate: int
    serial_format: SerialFormat
    inter_frame_delay_s: float | None
    slow_poll_s: float
    identity_poll_s: float
    backoff_max_s: float

    @property
    def is_rtu(self) -> bool:
        """True for a serial (RTU) bus, False for Modbus TCP."""
        return bool(self.device)

    @property
    def cost_model(self) -> CostModel:
        """The planner's cost of one request on this kind of bus."""
        return RTU_COST if self.is_rtu else TCP_COST

    @property
    def frame_gap_s(self) -> float:
        """Silence kept before each request: configured, or the standard RTU interval."""
        if not self.is_rtu:
            return 0.0
        if self.inter_frame_delay_s is not None:
            return self.inter_frame_delay_s
        return silent_interval_s(self.baudrate, self.serial_format)


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One slave feeding a unit, with its loaded profile and the signals taken from it."""

    slave: int
    profile_ref: str
    profile: Profile
    signals: frozenset[str]


@dataclass(frozen=True, slots=True)
class UnitSection:
    """A ``[[unit]]`` table as written (its ``detect`` and ``extra`` tables aside): keys
    and defaults. id, bus and slave are required; slave is 1..247 (checked with the
    extras' slaves, which share the bus)."""

    id: str = ""
    bus: str = ""
    slave: int = 0
    profile: str = "reference"


@dataclass(frozen=True, slots=True)
class ExtraSection:
    """A ``[[unit.extra]]`` table as written: slave and profile required."""

    slave: int = 0
    profile: str = ""
    signals: tuple[str, ...] | None = None  # None: every signal of the profile


@dataclass(frozen=True, slots=True)
class UnitConfig:
    """One watched car: its primary slave and profile, extra sources, and thresholds."""

    id: str
    bus: str
    slave: int
    profile: str
    detect: DetectionConfig = field(default_factory=DetectionConfig)
    sources: tuple[SourceConfig, ...] = ()
    recorder: RecorderConfig = field(default_factory=RecorderConfig)

    @property
    def signals(self) -> frozenset[str]:
        """The CarState fields this unit's sources provide together."""
        return frozenset().union(*(s.signals for s in self.sources))


@dataclass(frozen=True, slots=True)
class AgentSection:
    """The ``[agent]`` section as written: its keys, defaults and ranges (`AgentConfig`
    holds them resolved: paths, bytes, an address)."""

    id: str = ""  # required: checked by parse_config
    data_dir: str = "."
    state_interval_s: float = bounded(10.0, 0, low_open=True)
    counters_interval_s: float = bounded(60.0, 0, low_open=True)
    outbox_max_mb: float = bounded(256.0, 0, low_open=True)
    outbox_reserve_mb: float = bounded(8.0, 0)
    outbox_fail_restart_s: float = bounded(120.0, 0, low_open=True)
    metrics_listen: str = "127.0.0.1:9108"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The whole validated config of one agent (defaults: `AgentSection`'s, resolved)."""

    id: str
    data_dir: Path
    fleet: UplinkConfig
    buses: tuple[BusConfig, ...]
    units: tuple[UnitConfig, ...]
    state_interval_s: float
    counters_interval_s: float
    outbox_max_bytes: int
    outbox_reserve_bytes: int
    outbox_fail_restart_s: float
    metrics_listen: tuple[str, int] | None
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    update: UpdateSettings = field(default_factory=UpdateSettings)

    @property
    def outbox_path(self) -> Path:
        """Where the outbox database lives."""
        return self.data_dir / "outbox.db"


_MIB = 1024 * 1024
_S = TypeVar(
    "_S",
    AgentSection,
    UplinkConfig,
    MqttSettings,
    UpdateSettings,
    BusSection,
    UnitSection,
    ExtraSection,
    RecorderConfig,
)


def _read(
    cls: type[_S],
    key: str,
    table: Mapping[str, Any],
    required: tuple[str, ...],
    problems: list[ConfigProblem],
    tables: tuple[str, ...] = (),
    base_dir: Path = Path(),
) -> _S:
    """``table`` read against the schema ``cls`` by the one validator (its sub-``tables``
    aside, read by the caller; paths relative to ``base_dir``), with the ``required``
    keys that are missing reported."""
    values, found = read_section(
        cls, key, {k: v for k, v in table.items() if k not in tables}, base_dir
    )
    problems += found + out_of_range(cls, key, values)
    problems += [
        ConfigProblem(f"{key}.{name}", "is required") for name in required if name not in table
    ]
    return replace(cls(), **values)


class _Reader:
    """Takes the tables of a config apart, recording every problem instead of stopping
    (their keys are read by `_read`, the one validator)."""

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


def _kind(value: object) -> str:
    return type_name(value)


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def parse_config(raw: Mapping[str, Any], base_dir: Path, source: str = "<config>") -> AgentConfig:
    """Build an `AgentConfig` from parsed TOML, or raise `ConfigError` listing every problem."""
    problems: list[ConfigProblem] = []
    r = _Reader(problems)
    top = r.table(
        dict(raw), "", {"agent", "fleet", "detect", "bus", "unit", "mqtt", "recorder", "update"}
    )

    agent_raw = r.table(top.get("agent", {}), "agent", None)
    agent = _read(AgentSection, "agent", agent_raw, ("id",), problems)
    data_dir = Path(agent.data_dir)
    metrics_listen = (
        _host_port(agent.metrics_listen, allow_any_port=True) if agent.metrics_listen else None
    )
    if agent.metrics_listen and metrics_listen is None:
        problems.append(
            ConfigProblem(
                "agent.metrics_listen", f"must be 'host:port' or '', got {agent.metrics_listen!r}"
            )
        )

    # [fleet] and [mqtt] are read against their dataclasses by the one validator.
    fleet_raw = r.table(top.get("fleet", {}), "fleet", None)
    uplink = _read(UplinkConfig, "fleet", fleet_raw, (), problems, base_dir=base_dir)
    for i, endpoint in enumerate(uplink.endpoints):
        if _host_port(endpoint) is None:
            problems.append(
                ConfigProblem(f"fleet.endpoints[{i}]", f"must be 'host:port', got {endpoint!r}")
            )
    if not uplink.endpoints:
        problems.append(ConfigProblem("fleet.endpoints", "must name at least one fleet manager"))
    if not 0 <= uplink.linger_s <= MAX_LINGER_S:
        problems.append(
            ConfigProblem(
                "fleet.linger_s",
                f"must be 0..{MAX_LINGER_S:g} s (the live view waits for it), "
                f"got {uplink.linger_s}",
            )
        )
    for name in ("ca", "cert", "key"):
        path = getattr(uplink, name)
        if uplink.insecure:
            if path is not None:
                problems.append(
                    ConfigProblem(f"fleet.{name}", "is set but fleet.insecure = true ignores it")
                )
        elif path is None:
            problems.append(
                ConfigProblem(
                    f"fleet.{name}",
                    "is required for mutual TLS (or set fleet.insecure = true for a demo)",
                )
            )
        elif not path.is_file():
            # Name the command that makes the file: a missing certificate is the usual
            # first-install slip, and the fix is one command on the fleet's host.
            issue = (
                "`liftwatch-fleet pki init DIR` writes DIR/ca.pem"
                if name == "ca"
                else f"`liftwatch-fleet pki agent DIR {agent.id or 'AGENT_ID'}` writes "
                f"DIR/agents/{agent.id or 'AGENT_ID'}.{'pem' if name == 'cert' else 'key'}"
            )
            problems.append(
                ConfigProblem(f"fleet.{name}", f"no such file: {path} ({issue}; copy it here)")
            )

    mqtt_raw = r.table(top.get("mqtt", {}), "mqtt", None)
    mqtt = _read(MqttSettings, "mqtt", mqtt_raw, (), problems)
    update_raw = r.table(top.get("update", {}), "update", None)
    update = _read(UpdateSettings, "update", update_raw, (), problems)
    for i, key in enumerate(update.release_keys):
        try:
            release_key_bytes(key)
        except ReleaseError as exc:
            problems.append(ConfigProblem(f"update.release_keys[{i}]", str(exc)))

    recorder_raw = r.table(top.get("recorder", {}), "recorder", None)
    default_recorder = _read(RecorderConfig, "recorder", recorder_raw, (), problems)

    default_detect = r.table(top.get("detect", {}), "detect", None)
    default_problems = DetectionConfig.problems(default_detect)
    problems.extend(ConfigProblem(f"detect.{k}", m) for k, m in default_problems)

    buses: list[BusConfig] = []
    bus_names: set[str] = set()
    raw_buses = top.get("bus", [])
    if not isinstance(raw_buses, list):
        problems.append(ConfigProblem("bus", "must be an array of tables: [[bus]]"))
        raw_buses = []
    for i, raw_bus in enumerate(raw_buses):
        buses.append(_parse_bus(r, raw_bus, f"bus[{i}]", i, bus_names))

    units: list[UnitConfig] = []
    unit_ids: set[str] = set()
    slaves: dict[tuple[str, int], str] = {}
    raw_units = top.get("unit", [])
    if not isinstance(raw_units, list):
        problems.append(ConfigProblem("unit", "must be an array of tables: [[unit]]"))
        raw_units = []
    if not raw_units:
        problems.append(ConfigProblem("unit", "no [[unit]] configured: nothing to watch"))
    profiles: dict[str, Profile | None] = {}
    for i, raw_unit in enumerate(raw_units):
        key = f"unit[{i}]"
        u = r.table(raw_unit, key, None)
        unit = _read(
            UnitSection, key, u, ("id", "bus", "slave"), problems, ("detect", "extra", "recorder")
        )
        unit_id, bus, slave, profile_ref = unit.id, unit.bus, unit.slave, unit.profile
        if unit_id in unit_ids:
            problems.append(ConfigProblem(f"{key}.id", f"duplicate unit id {unit_id!r}"))
        unit_ids.add(unit_id)
        if bus and bus not in bus_names:
            known = ", ".join(sorted(bus_names)) or "none"
            problems.append(
                ConfigProblem(f"{key}.bus", f"no [[bus]] named {bus!r} (known: {known})")
            )
        sources: list[SourceConfig] = []
        primary = _source(r, key, slave, profile_ref, None, profiles, base_dir)
        if primary is not None:
            sources.append(primary)
        raw_extras = u.get("extra", [])
        if not isinstance(raw_extras, list):
            problems.append(ConfigProblem(f"{key}.extra", "must be an array of tables"))
            raw_extras = []
        extra_slaves = []
        for j, raw_extra in enumerate(raw_extras):
            ekey = f"{key}.extra[{j}]"
            e = r.table(raw_extra, ekey, None)
            extra_table = _read(ExtraSection, ekey, e, ("slave", "profile"), problems)
            extra_slaves.append((f"{ekey}.slave", extra_table.slave))
            if extra_table.profile:
                extra = _source(
                    r,
                    ekey,
                    extra_table.slave,
                    extra_table.profile,
                    extra_table.signals,
                    profiles,
                    base_dir,
                )
                if extra is not None:
                    sources.append(extra)
        for slave_key, number in [(f"{key}.slave", slave), *extra_slaves]:
            if not 1 <= number <= 247:
                if number or slave_key != f"{key}.slave" or "slave" in u:
                    problems.append(ConfigProblem(slave_key, f"must be 1..247, got {number}"))
            elif (bus, number) in slaves:
                problems.append(
                    ConfigProblem(
                        slave_key,
                        f"bus {bus!r} slave {number} is already unit {slaves[(bus, number)]!r}",
                    )
                )
            else:
                slaves[(bus, number)] = unit_id
        overrides = r.table(u.get("detect", {}), f"{key}.detect", None)
        found = DetectionConfig.problems(overrides)
        merged = {**default_detect, **overrides}
        if not default_problems and not found:
            # Each table may be fine alone and wrong together (top_landing from [detect]
            # below the unit's bottom_landing): say so rather than fall back to defaults.
            found = DetectionConfig.problems(merged)
        problems.extend(ConfigProblem(f"{key}.detect.{k}", m) for k, m in found)
        valid = not default_problems and not found
        detect = DetectionConfig.from_mapping(merged) if valid else DetectionConfig()
        detect = replace(detect, fault_events=_fault_events(sources))
        recorder = _unit_recorder(
            r, u, key, default_recorder, detect, "max_s" in (recorder_raw or {})
        )
        units.append(UnitConfig(unit_id, bus, slave, profile_ref, detect, tuple(sources), recorder))

    for i, bus_config in enumerate(buses):
        problems.extend(_wire_problems(f"bus[{i}]", bus_config, units))

    if problems:
        raise ConfigError(source, problems)
    return AgentConfig(
        id=agent.id,
        data_dir=data_dir if data_dir.is_absolute() else base_dir / data_dir,
        fleet=uplink,
        buses=tuple(buses),
        units=tuple(units),
        state_interval_s=agent.state_interval_s,
        counters_interval_s=agent.counters_interval_s,
        outbox_max_bytes=int(agent.outbox_max_mb * _MIB),
        outbox_reserve_bytes=int(agent.outbox_reserve_mb * _MIB),
        outbox_fail_restart_s=agent.outbox_fail_restart_s,
        metrics_listen=metrics_listen,
        mqtt=mqtt,
        update=update,
    )


def load_config(path: Path) -> AgentConfig:
    """Read and validate the TOML file at ``path``; `ConfigError` names every problem."""
    return parse_config(read_toml(path), path.resolve().parent, str(path))


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML at ``path``; `ConfigError` names a file or syntax problem."""
    try:
        return parse_toml(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise ConfigError(str(path), [ConfigProblem("(file)", exc.strerror or str(exc))]) from exc


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """``text`` parsed as TOML; `ConfigError` from ``source`` names a syntax problem."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [ConfigProblem("(syntax)", str(exc))]) from exc


def check_config(raw: Mapping[str, Any], base_dir: Path, source: str) -> AgentConfig:
    """Exactly the checks of ``liftwatch-agent check-config``: `parse_config` and then
    `port_problems`; `ConfigError` from ``source`` lists every problem. The agent runs the
    same function on a configuration the fleet sends (agent.remote_config)."""
    config = parse_config(raw, base_dir, source)
    missing = port_problems(config)
    if missing:
        raise ConfigError(source, missing)
    return config


def port_problems(config: AgentConfig) -> list[ConfigProblem]:
    """Serial ports of RTU buses that do not exist on this machine (for check-config; the
    agent itself starts anyway and keeps retrying, as a USB adapter may appear later)."""
    return [
        ConfigProblem(f"bus[{i}].url", f"serial port {bus.device} does not exist")
        for i, bus in enumerate(config.buses)
        if bus.is_rtu and not Path(bus.device).exists()
    ]


def _parse_bus(r: _Reader, raw_bus: object, key: str, index: int, names: set[str]) -> BusConfig:
    problems = r.problems
    table = r.table(raw_bus, key, None)
    url_given = table.get("url", "")
    is_rtu = isinstance(url_given, str) and url_given.startswith("rtu:")
    if not is_rtu:  # the serial keys are unknown keys on a tcp:// bus
        problems += [
            ConfigProblem(f"{key}.{k}", "unknown key") for k in sorted(_SERIAL_KEYS & set(table))
        ]
        table = {k: v for k, v in table.items() if k not in _SERIAL_KEYS}
    bus = _read(BusSection, key, table, ("name", "url"), problems)
    if "name" not in table:
        bus = replace(bus, name=f"bus{index}")
    if bus.name in names:
        problems.append(ConfigProblem(f"{key}.name", f"duplicate bus name {bus.name!r}"))
    names.add(bus.name)
    host, port, device = "", 0, ""
    if is_rtu:
        device = urlsplit(bus.url).path
        if not device or device == "/":
            problems.append(
                ConfigProblem(
                    f"{key}.url",
                    f"an rtu URL needs the serial port: rtu:///dev/ttyUSB0, got {bus.url!r}",
                )
            )
    elif bus.url:
        host_port = _bus_url(bus.url)
        if host_port is None:
            problems.append(
                ConfigProblem(
                    f"{key}.url", f"must be tcp://HOST:PORT or rtu:///dev/PORT, got {bus.url!r}"
                )
            )
        else:
            host, port = host_port
    tries = bus.retries + 1
    if bus.poll_hz > 0 and bus.timeout_s * tries > bus.link_lost_after_s:
        problems.append(
            ConfigProblem(
                f"{key}.link_lost_after_s",
                f"{bus.link_lost_after_s} s is shorter than one failed request "
                f"({bus.timeout_s} s x {tries} tries)",
            )
        )
    baudrate = bus.baudrate
    if baudrate not in _BAUD_RATES:
        problems.append(
            ConfigProblem(
                f"{key}.baudrate",
                f"must be a standard rate ({', '.join(map(str, _BAUD_RATES))}), got {baudrate}",
            )
        )
        baudrate = BusSection().baudrate
    serial_format = SerialFormat()
    try:
        serial_format = SerialFormat.parse(bus.format)
    except FormatError as exc:
        problems.append(ConfigProblem(f"{key}.format", str(exc)))
    gap_ms = bus.inter_frame_delay_ms
    return BusConfig(
        name=bus.name,
        host=host,
        port=port,
        poll_hz=bus.poll_hz,
        timeout_s=bus.timeout_s,
        retries=bus.retries,
        link_lost_after_s=bus.link_lost_after_s,
        device=device,
        baudrate=baudrate,
        serial_format=serial_format,
        inter_frame_delay_s=None if gap_ms is None else gap_ms / 1000.0,
        slow_poll_s=bus.slow_poll_s,
        identity_poll_s=bus.identity_poll_s,
        backoff_max_s=bus.backoff_max_s,
    )


_BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)


def _unit_recorder(
    r: _Reader,
    u: Mapping[str, Any],
    key: str,
    default: RecorderConfig,
    detect: DetectionConfig,
    max_s_given: bool,
) -> RecorderConfig:
    """The unit's evidence windows: ``[recorder]`` with its ``[unit.recorder]`` over it,
    checked against the 64 kB bound with the unit's longest threshold. A ``max_s`` set in
    neither table is fitted to that bound (`agent.recorder.fitted`)."""
    overrides = r.table(u.get("recorder", {}), f"{key}.recorder", None)
    given = _read(RecorderConfig, f"{key}.recorder", overrides, (), r.problems)
    recorder = replace(
        default, **{k: getattr(given, k) for k in overrides if hasattr(RecorderConfig, k)}
    )
    if not max_s_given and "max_s" not in overrides:
        recorder = fitted_recorder(recorder, onset_lag_s(detect))
    r.problems.extend(
        ConfigProblem(f"{key}.recorder.{k}", m)
        for k, m in window_problems(recorder, onset_lag_s(detect))
    )
    return recorder


def _fault_events(sources: list[SourceConfig]) -> tuple[tuple[int, EventType], ...]:
    """The fault-code map of the profile whose ``fault_code`` the unit reads: the last
    source giving it, as extras replace the primary's signals; none without one."""
    for source in reversed(sources):
        if "fault_code" in source.signals:
            return tuple((code, EventType[name]) for code, name in source.profile.fault_events)
    return ()


def _source(
    r: _Reader,
    key: str,
    slave: int,
    ref: str,
    wanted: tuple[str, ...] | None,
    cache: dict[str, Profile | None],
    base_dir: Path,
) -> SourceConfig | None:
    if ref not in cache:
        try:
            cache[ref] = load_profile(ref, base_dir)
        except ProfileError as exc:
            cache[ref] = None
            for pkey, message in exc.problems:
                r.problems.append(
                    ConfigProblem(f"{key}.profile", f"{exc.source}: {pkey}: {message}")
                )
            return None
    profile = cache[ref]
    if profile is None:
        r.problems.append(ConfigProblem(f"{key}.profile", f"profile {ref!r} has problems (above)"))
        return None
    signals = profile.signal_names
    if wanted is not None:
        bad = [w for w in wanted if not isinstance(w, str) or w not in signals]
        if bad:
            r.problems.append(
                ConfigProblem(
                    f"{key}.signals",
                    f"{', '.join(map(repr, bad))} not provided by profile {profile.name!r} "
                    f"(it has: {', '.join(sorted(signals))})",
                )
            )
        signals = frozenset(w for w in wanted if w in signals)
    return SourceConfig(slave, ref, profile, signals)


def _wire_problems(key: str, bus: BusConfig, units: list[UnitConfig]) -> list[ConfigProblem]:
    """On an RTU bus: does every planned request, at poll_hz, fit the wire?"""
    if not bus.is_rtu or bus.poll_hz <= 0 or bus.slow_poll_s <= 0:  # (reported already)
        return []
    reads: list[Read] = []
    slow_reads: list[Read] = []
    for unit in units:
        if unit.bus != bus.name:
            continue
        for source in unit.sources:
            plan = source.profile.plan(bus.cost_model)
            reads.extend(plan.fast)
            slow_reads.extend(plan.slow_cycle)
    if not reads:
        return []
    extra_gap = max(0.0, bus.frame_gap_s - silent_interval_s(bus.baudrate, bus.serial_format))

    def wire(read: Read) -> float:
        t = transaction_time_s(read.count, bus.baudrate, bus.serial_format, bits=read.table.is_bits)
        return t + extra_gap

    cycle_s = sum(map(wire, reads))
    # Slow cycles come once per slow_poll_s for each slave; count their extra time.
    slow_extra_s = (sum(map(wire, slow_reads)) - cycle_s) / bus.slow_poll_s
    busy = cycle_s * bus.poll_hz + slow_extra_s
    if busy <= 1.0:
        return []
    per_s = len(reads) / cycle_s
    max_hz = (1.0 - slow_extra_s) / cycle_s
    return [
        ConfigProblem(
            f"{key}.poll_hz",
            f"{bus.poll_hz:g} Hz x {len(reads)} request(s) per cycle needs "
            f"{busy:.2f} s of wire time per second; at {bus.baudrate} {bus.serial_format} "
            f"this line carries at most {per_s:.1f} of these requests/s "
            f"({cycle_s * 1000:.1f} ms per cycle): poll_hz <= {max(max_hz, 0):.1f}",
        )
    ]


def _host_port(text: str, *, allow_any_port: bool = False) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port``; port 0 (any free port) only when allowed."""
    host, sep, port = text.rpartition(":")
    lowest = 0 if allow_any_port else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) < 65536:
        return None
    return host, int(port)


def _bus_url(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
        return None
    return parts.hostname, parts.port
