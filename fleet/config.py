"""Fleet manager configuration: a TOML file read into frozen dataclasses.

Every key, with its default (a missing file section or key takes the default)::

    [server]
    listen = "127.0.0.1:50051"   # host:port of the gRPC server; port 0 lets the kernel pick one
    max_connection_age_s = 3600  # close an agent's connection after this long (0 = never), so
                                 # that long-lived streams spread over replicas behind a
                                 # load balancer; the agent reconnects and resumes from Welcome
    max_connection_age_grace_s = 30  # in-flight calls get this long before the close
    keepalive_time_s = 60        # the server pings idle connections this often: a vanished
                                 # agent (4G NAT, power cut) is noticed and its stream freed
    keepalive_timeout_s = 20     # ... and drops a connection whose ping goes unanswered
    workers = 1                  # fleet processes serving this port and store (1 to 64); more
                                 # than 1 shares the port with SO_REUSEPORT (one Python
                                 # process tops out near one core) and needs a SQLite file or
                                 # PostgreSQL, not ":memory:"; with 1, a second fleet on the
                                 # same port fails to start. `serve --workers` overrides it

    [tls]                        # mutual TLS for the gRPC port: set all three, or none
    cert = ""                    # the fleet's certificate chain, PEM (`pki server`)
    key = ""                     # its private key, PEM
    client_ca = ""               # the CA that signs agent certificates (`pki init`): only
                                 # agents presenting a certificate it signed may connect, and
                                 # each only for the units `liftwatch-fleet agents` registered
                                 # for its Common Name. All three empty (the default): plaintext
                                 # and no identity, any client may claim any agent id; fit only
                                 # for a demo or the rig on loopback (serve warns at start).
                                 # Paths are relative to the config file's directory. The
                                 # FleetQuery listener ([query]) serves cert/key too, without
                                 # asking for a client certificate (operators send a token)
    plaintext = false            # true: serve plaintext gRPC, FleetQuery and HTTP on ANY
                                 # address where no TLS is configured (a lab behind its own
                                 # wall; serve warns at every start). false: plaintext only
                                 # on loopback (127.0.0.0/8, ::1, localhost), and serve
                                 # refuses a non-loopback listen address without TLS, naming
                                 # the key. `serve --insecure-plaintext` sets it

    [http]
    listen = "127.0.0.1:8080"    # host:port of the JSON API (/api/...); port 0 lets the kernel
                                 # pick one; "" disables the HTTP server. When this key is not
                                 # set and server.listen has port 0 (throwaway fleets: tests,
                                 # the rig), the API takes port 0 too, so they never collide
    auth = true                  # the dashboard and /api/ need a login (a session from the
                                 # login page, or `Authorization: Bearer` with a token from
                                 # `liftwatch-fleet users token`); false lets everyone act as
                                 # administrator: only for a closed test network (serve warns)
    session_ttl_s = 43200        # a dashboard login lasts this long (12 h: one shift)
    secure_cookies = "auto"      # whether the site is HTTPS for browsers: the session cookie
                                 # is marked Secure and HSTS is sent. "auto": exactly when
                                 # this server speaks HTTPS (cert/key); true: behind a proxy
                                 # that terminates TLS; false: never (plain HTTP on
                                 # loopback). Never taken from a request's Host header
    hsts_max_age_s = 31536000    # Strict-Transport-Security max-age sent on every response
                                 # while the site is HTTPS (see secure_cookies); 0 = none
    metrics_listen = ""          # host:port serving /metrics alone (e.g. "127.0.0.1:9464" for
                                 # a Prometheus on this machine; TLS with cert/key when set,
                                 # plaintext on loopback only like listen); "" = /metrics on
                                 # listen beside the API. With serve --workers N, worker i
                                 # serves its own /metrics on port + i (one scrape target
                                 # each; deploy/prometheus sums them)
    metrics_token_file = ""      # a file holding a token /metrics then requires as
                                 # `Authorization: Bearer TOKEN` (Prometheus'
                                 # bearer_token_file); "" = /metrics answers whoever reaches
                                 # its port. Relative to the config file's directory
    time_zone = "Asia/Shanghai"  # IANA time zone the dashboard shows times in (the site's)
    language = "zh"              # the dashboard's language for a new visitor: "zh" or "en"
                                 # (each user can switch; the choice is kept in the browser)
    cert = ""                    # HTTPS: the certificate chain (PEM) uvicorn serves; set with
    key = ""                     # key, or neither (plaintext HTTP: loopback only unless
                                 # tls.plaintext). Relative to the config file's directory
    live_streams_per_user = 8    # live-update streams (/api/live) one user may hold open at
                                 # once, all its sessions and API tokens together; one more is
                                 # refused with 429 (one page holds one stream). 0 = no limit
    live_streams_per_session = 4 # ... and one login session (a browser's tabs) or API token
    live_send_timeout_s = 10     # a page that takes longer to take one message (it stopped
                                 # reading) loses its stream; its queue is bounded as well
    max_body_bytes = 65536       # a request body (login, alarm steps, users) longer than this
                                 # is refused with 413 before it is read: by its declared
                                 # Content-Length, or once that much of a chunked body came
    max_upload_bytes = 2097152   # ... the same for an upload (POST /api/reports/claims and
                                 # /api/maintenance/records, CSV)
    login_free_failures = 5      # failed logins allowed per username and per client address
                                 # before each further attempt must wait (429, Retry-After)
    login_lockout_s = 30         # the first wait; it doubles with each further failure ...
    login_lockout_max_s = 900    # ... up to this. The count is forgotten after a good login
                                 # (the username's), or once this long has passed without a
                                 # failure since the last wait ended. An address may fail 4
                                 # times as often as a username (people share a NAT); behind
                                 # a reverse proxy every client has the proxy's address

    [query]                      # FleetQuery (gRPC reads) for operators, on its own port: the
                                 # agent port serves agents only (FleetQuery there answers
                                 # PERMISSION_DENIED, and its reflection does not list it)
    listen = "127.0.0.1:50052"   # host:port; "" disables FleetQuery. When this key is not set
                                 # and server.listen has port 0, it takes port 0 too. TLS with
                                 # [tls] cert/key when [tls] is set (server-side only)
    auth = true                  # every call needs `authorization: Bearer lwt_...` metadata,
                                 # a dashboard user's API token (`liftwatch-fleet users
                                 # token`), scoped by its role as the JSON API is (a contractor
                                 # sees only its units); false: anyone reaching the port reads
                                 # everything (a rig on loopback only; serve warns, and
                                 # refuses it on a non-loopback address unless tls.plaintext)

    [store]
    path = "fleet.db"            # SQLite file; relative to the config file's directory;
                                 # ":memory:" keeps everything in RAM (tests, demos)
    url = ""                     # postgresql://user@host/db: use PostgreSQL instead of path
                                 # (the scale-out backend; any number of fleets may share it)

    [coverage]
    stale_after_s = 30           # no news from a unit for this long: "stale"
    offline_after_s = 300        # no news for this long: "offline" (must exceed stale_after_s)
    sweep_interval_s = 10        # how often serve records online -> stale -> offline
                                 # transitions into the coverage history

    [reports]                    # the fault-rate report (fleet/reports/fault_rate.py)
    min_trips = 1000             # a unit with a trip count is ranked only after this many trips
                                 # in the period (the exposure its per-1,000-trips rate rests
                                 # on); below it the row is marked "low" and listed after
                                 # every ranked row, so 1 fault in 9 trips never tops the list
    min_watched_days = 30        # a unit without a trip count is ranked only after this many
                                 # days watched (half-hours in which its agent read the
                                 # controller, 48 to a day) in the period: about one month.
                                 # A group (building, street, contractor) is ranked on its
                                 # units' trips and watched days added up

    [history]                    # signed checkpoints of the history chains (fleet.history)
    checkpoint_file = ""         # serve checks the chains against this file, then rewrites it
                                 # with every unit's head, every checkpoint_interval_s (and once
                                 # at start); keep it apart from the database (another disk or
                                 # host). "" = no scheduled checkpoint. A failed check is kept
                                 # (dashboard, API) and the file is left as it was, evidence
                                 # for `verify-history --checkpoint`. Relative to this file
    checkpoint_key = ""          # the Ed25519 private key (PEM) that signs it, made by
                                 # `liftwatch-fleet history keygen KEY` (KEY.pub verifies);
                                 # required with checkpoint_file. Relative to this file
    checkpoint_interval_s = 3600 # how often (60 to 86400 s); one hour bounds what a rewrite
                                 # can hide to the last hour's entries

    [registry]
    csv = ""                     # district unit register CSV, imported when serve starts;
                                 # empty = no register; relative to the config file's directory

    [firmware]
    policy = ""                  # firmware policy TOML (minimum and known-bad versions per
                                 # controller model, see deploy/fleet/firmware-policy.toml);
                                 # empty = no policy; relative to the config file's directory

    [ingest]
    max_batch_records = 500      # records per RecordBatch an agent may send (told in Welcome)
    max_batch_bytes = 1048576    # serialized bytes per RecordBatch (told in Welcome)
    heartbeat_interval_s = 10    # how often agents send a Heartbeat (told in Welcome)
    max_group_records = 20000    # group commit: at most this many records (from any number
                                 # of agent streams) in one store transaction
    max_clock_skew_s = 300       # a record time further ahead of the fleet's clock than this
                                 # is refused as MALFORMED (the agent sets it aside)
    max_record_age_s = 31622400  # ... and one further behind (366 days: an outbox holds a
                                 # long outage's records; older means a wrong clock)
    max_streams_per_agent = 4    # open streams one agent certificate may hold (mutual TLS);
                                 # one more is refused (TOO_LARGE, the reason says why). An
                                 # agent needs one; the rest is room for a reconnect while a
                                 # dead connection of it is still being timed out
    admit_streams_per_s = 500    # new agent streams this instance takes a second (a token
                                 # bucket of one second's worth; 0 = no limit). Above it a
                                 # stream gets UNAVAILABLE with trailing metadata
                                 # retry-after-ms, its own slot later on, which agents
                                 # honour: after a restart the agents come back spread out
                                 # instead of slowing every ack (docs/scaling.md)

    [alarms]                     # rescue dispatch (fleet.alarms): alarms go out at once and
                                 # are re-sent until someone acknowledges them (EN 81-28)
    types = ["ENTRAPMENT", "DOOR_OPEN_WHILE_MOVING", "DOOR_LOCK_BYPASS",
             "UNINTENDED_MOVEMENT", "ALARM_BUTTON"]  # event types that raise an alarm
    targets = []                 # names of [alarms.target.NAME] tables each alarm goes to
    escalation_targets = []      # ... and these too when not acknowledged in time
    escalate_after_s = 300       # not acknowledged this long after it was raised: escalate
    repeat_s = 60                # re-send to a target that took it this often until the alarm
                                 # is acknowledged; 0 = send once
    retry_initial_s = 1          # back-off after a failed send, doubled per failure ...
    retry_max_s = 60             # ... up to this
    timeout_s = 5                # one send (HTTP request; MQTT connect and PUBACK)

    [alarms.target.NAME]         # one table per target
    kind = ""                    # "webhook" or "mqtt" (required)
    url = ""                     # webhook: the http(s) URL POSTed the alarm JSON
    secret = ""                  # webhook: HMAC-SHA256 key; the request then carries
                                 # X-LiftWatch-Signature: sha256=HEX over "TIMESTAMP.BODY"
                                 # with TIMESTAMP in X-LiftWatch-Timestamp
    host = "127.0.0.1"           # mqtt: broker host
    port = 1883                  # mqtt: broker port
    topic = "liftwatch/alarms"   # mqtt: published at QoS 1 to TOPIC/UNIT_ID
    username = ""                # mqtt: credentials, empty = anonymous
    password = ""

    [maintenance]                # maintenance truth (issue 17): one table per feature
                                 # ([maintenance.minimums], [maintenance.verdicts],
                                 # [maintenance.plan]); every key with its default is
                                 # documented in fleet/reports/maintenance_config.py and
                                 # fleet/reports/plan_config.py
    [publication]                # the district's published lists (issue 17): every key with
                                 # its default is documented in fleet/reports/plan_config.py

    [retention]                  # raw records' lifecycle (issue 18, fleet.store.retention)
    window_days = 14             # raw records are kept this long (1 to 3660); older ones are
                                 # folded into hourly per-unit aggregates kept for the lift's
                                 # life (trips, door cycles, run time, mode times, link,
                                 # counters) and deleted. Events, alarms, evidence, history,
                                 # maintenance records and audits are kept forever
    interval_s = 3600            # serve runs retention this often (0 = never; then only
                                 # `liftwatch-fleet retention run` does); one fleet instance
                                 # at a time (a lease in the store, as northbound's senders)
    compact_after_s = 3600       # raw records older than this (to the hour) that every
                                 # consumer has read are compacted into per-unit hourly
                                 # batches, about a tenth of the bytes (60 to 86400;
                                 # fleet.store.batches); each retention run does it
    batch_records = 2000         # raw records compacted, or folded and deleted, per
                                 # transaction: ingest's writes interleave between them
    lease_s = 120                # the retention lease lasts this long unless renewed; a dead
                                 # instance's is taken over after it ran out

    [northbound]                 # forwarding to regional platforms (issue 21): one
                                 # [northbound.platform.NAME] table per platform; every key
                                 # with its default is documented in fleet/northbound/config.py

Unknown keys and wrong types are errors. `load_config` collects every problem, each named
by its dotted key (``coverage.stale_after_s``), and raises one `ConfigError` listing them.
"""

from __future__ import annotations

import tomllib
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fleet.alarms.config import AlarmsConfig, parse_alarms
from fleet.northbound.config import NorthboundConfig, parse_northbound
from fleet.reports.maintenance_config import MaintenanceConfig, parse_maintenance
from fleet.reports.plan_config import PublicationConfig
from fleet.units.coverage import CoverageConfig
from liftconf.schema import Problem, bounded, out_of_range, read_section, type_name

MEMORY = ":memory:"
# Welcome carries the limits as uint32; far below that, one batch must fit a gRPC message.
MAX_BATCH_BYTES_CEILING = 64 * 1024 * 1024
_MONTH_S = 30 * 86_400
LANGUAGES = ("zh", "en")


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` lists every reason, one per key."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        # Problems (liftconf.schema.Problem: key and message) from parse_config; plain
        # text for a file that cannot be read at all.
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Where the gRPC server listens, and how it treats long-lived agent connections."""

    listen: str = "127.0.0.1:50051"
    max_connection_age_s: float = bounded(3600.0, 0, _MONTH_S)
    max_connection_age_grace_s: float = bounded(30.0, 0, _MONTH_S)
    keepalive_time_s: float = bounded(60.0, 1, _MONTH_S)
    keepalive_timeout_s: float = bounded(20.0, 1, _MONTH_S)
    workers: int = bounded(1, 1, 64)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """The fleet's certificate, key and the agents' CA; all None = plaintext (demo, rig).
    ``plaintext``: allow plaintext listeners on non-loopback addresses (a lab)."""

    cert: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None
    plaintext: bool = False

    @property
    def enabled(self) -> bool:
        """Whether the gRPC port serves mutual TLS."""
        return self.cert is not None


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """Where the JSON API and the dashboard listen (empty ``listen`` disables them), and
    how the dashboard admits and shows (see the module docstring for each key)."""

    listen: str = "127.0.0.1:8080"
    auth: bool = True
    session_ttl_s: float = bounded(43200.0, 60, _MONTH_S)
    secure_cookies: bool | None = None
    time_zone: str = "Asia/Shanghai"
    language: str = "zh"
    cert: Path | None = None
    key: Path | None = None
    hsts_max_age_s: int = bounded(31_536_000, 0, 2 * 366 * 86400)
    metrics_listen: str = ""
    metrics_token_file: Path | None = None
    live_streams_per_user: int = bounded(8, 0)
    live_streams_per_session: int = bounded(4, 0)
    live_send_timeout_s: float = bounded(10.0, 1)
    max_body_bytes: int = bounded(65536, 1024)
    max_upload_bytes: int = bounded(2 * 1024 * 1024, 1024)
    login_free_failures: int = bounded(5, 1)
    login_lockout_s: float = bounded(30.0, 1)
    login_lockout_max_s: float = bounded(900.0, 1)

    @property
    def tls(self) -> bool:
        """Whether the HTTP server speaks HTTPS."""
        return self.cert is not None

    @property
    def https_site(self) -> bool:
        """Whether browsers reach the site over HTTPS (this server's TLS, or a proxy's
        when ``secure_cookies`` says so): cookies are Secure and HSTS is sent."""
        return self.tls if self.secure_cookies is None else self.secure_cookies


@dataclass(frozen=True, slots=True)
class QueryConfig:
    """Where FleetQuery listens for operators ("" = not served), and whether it asks for
    an API token (see the module docstring)."""

    listen: str = "127.0.0.1:50052"
    auth: bool = True


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the store keeps its data: a PostgreSQL ``url``, else a SQLite ``path``."""

    path: str = "fleet.db"
    url: str = ""

    @property
    def target(self) -> str:
        """What `fleet.store.open.open_store` takes: the URL when set, else the path."""
        return self.url or self.path


@dataclass(frozen=True, slots=True)
class FirmwareConfig:
    """The firmware policy file, if any."""

    policy: Path | None = None


@dataclass(frozen=True, slots=True)
class ReportsConfig:
    """The exposure a unit (or group) needs before the fault-rate report ranks it."""

    min_trips: int = bounded(1000, 0)
    min_watched_days: float = bounded(30.0, 0, 3660)


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """The scheduled signed checkpoint of the history chains; no file = none."""

    checkpoint_file: Path | None = None
    checkpoint_key: Path | None = None
    checkpoint_interval_s: float = bounded(3600.0, 60, 86_400)


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """The district unit register to import at start, if any."""

    csv: Path | None = None


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Limits and pacing the fleet announces to agents in Welcome."""

    max_batch_records: int = bounded(500, 1, 100_000)
    max_batch_bytes: int = bounded(1_048_576, 1024, MAX_BATCH_BYTES_CEILING)
    heartbeat_interval_s: int = bounded(10, 1, 3600)
    max_group_records: int = bounded(20_000, 1, 1_000_000)
    max_clock_skew_s: int = bounded(300, 1, 86_400)
    max_record_age_s: int = bounded(366 * 86_400, 3600, 10 * 366 * 86_400)
    max_streams_per_agent: int = bounded(4, 1, 1000)
    admit_streams_per_s: float = bounded(500.0, 0, 1_000_000)


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """How long raw records are kept before they are folded, and the job that folds them."""

    window_days: int = bounded(14, 1, 3660)
    interval_s: float = bounded(3600.0, 0, 86_400)
    compact_after_s: float = bounded(3600.0, 60, 86_400)
    batch_records: int = bounded(2000, 1, 1_000_000)
    lease_s: float = bounded(120.0, 10, 86_400)


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """The whole fleet manager configuration."""

    server: ServerConfig = ServerConfig()
    tls: TlsConfig = TlsConfig()
    http: HttpConfig = HttpConfig()
    query: QueryConfig = QueryConfig()
    store: StoreConfig = StoreConfig()
    coverage: CoverageConfig = field(default_factory=CoverageConfig)
    registry: RegistryConfig = RegistryConfig()
    history: HistoryConfig = HistoryConfig()
    reports: ReportsConfig = ReportsConfig()
    firmware: FirmwareConfig = FirmwareConfig()
    ingest: IngestConfig = IngestConfig()
    alarms: AlarmsConfig = field(default_factory=AlarmsConfig)
    northbound: NorthboundConfig = field(default_factory=NorthboundConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    publication: PublicationConfig = field(default_factory=PublicationConfig)
    retention: RetentionConfig = RetentionConfig()


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


# Each section of the file and the dataclass whose fields are its keys ([alarms] holds
# tables of targets: it is read by its own loader, fleet.alarms.config).
_SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "tls": TlsConfig,
    "http": HttpConfig,
    "query": QueryConfig,
    "store": StoreConfig,
    "coverage": CoverageConfig,
    "registry": RegistryConfig,
    "history": HistoryConfig,
    "reports": ReportsConfig,
    "firmware": FirmwareConfig,
    "ingest": IngestConfig,
    "publication": PublicationConfig,
    "retention": RetentionConfig,
}


def parse_config(data: Mapping[str, object], base_dir: Path, *, source: str) -> FleetConfig:
    """Validate parsed TOML ``data``; raises `ConfigError` listing every problem at once.

    Each section is read against its dataclass (`liftconf.schema.read_section`: unknown keys,
    types, ranges); what relates keys to each other is checked here.
    """
    alarms, problems = parse_alarms(data.get("alarms", {}))
    # [northbound] holds a table per platform, each naming a mapping file it loads.
    northbound, found = parse_northbound(data.get("northbound", {}), base_dir)
    problems += found
    # [maintenance] holds one table per feature, read by its owner's loader.
    maintenance, found = parse_maintenance(data.get("maintenance", {}), base_dir)
    problems += found
    read: dict[str, dict[str, Any]] = {}
    for name, section in data.items():
        if name in ("alarms", "maintenance", "northbound"):
            continue
        if name not in _SECTIONS:
            problems.append(Problem(f"{name}", "unknown key"))
        elif not isinstance(section, Mapping):
            problems.append(Problem(f"{name}", f"expected a table, got {type_name(section)}"))
        else:
            read[name], found = read_section(_SECTIONS[name], name, section, base_dir)
            problems += found
    given = {name: read.get(name, {}) for name in _SECTIONS}
    server = replace(ServerConfig(), **given["server"])
    tls = replace(TlsConfig(), **given["tls"])
    http = replace(HttpConfig(), **given["http"])
    query = replace(QueryConfig(), **given["query"])
    store = replace(StoreConfig(), **given["store"])
    coverage = replace(CoverageConfig(), **given["coverage"])
    history = replace(HistoryConfig(), **given["history"])

    def ranges(name: str) -> list[Problem]:
        return out_of_range(_SECTIONS[name], name, given[name])

    problems += _check_listen("server.listen", server.listen)
    problems += ranges("server")
    if any((tls.cert, tls.key, tls.client_ca)):
        missing = [f"tls.{key}" for key in ("cert", "key", "client_ca") if not getattr(tls, key)]
        if missing:
            problems.append(
                Problem(
                    ", ".join(missing),
                    "must be set too (tls.cert, tls.key and tls.client_ca go together: "
                    "mutual TLS, or none of them for plaintext)",
                )
            )

    # A throwaway fleet (gRPC on port 0) without its own listen keys takes port 0 for the
    # API and FleetQuery too, so that throwaway fleets never collide.
    if "listen" not in given["http"] and server.listen.endswith(":0"):
        http = replace(http, listen=http.listen.rpartition(":")[0] + ":0")
    if http.listen:
        problems += _check_listen("http.listen", http.listen)
    try:
        zoneinfo.ZoneInfo(http.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.append(
            Problem("http.time_zone", f"{http.time_zone!r} is not an IANA time zone name")
        )
    if http.language not in LANGUAGES:
        problems.append(
            Problem(
                "http.language", f"must be one of {', '.join(LANGUAGES)}, got {http.language!r}"
            )
        )
    if (http.cert is None) != (http.key is None):
        absent = "http.cert" if http.cert is None else "http.key"
        problems.append(Problem(absent, "must be set too (http.cert and http.key go together)"))
    secure_cookies = given["http"].get("secure_cookies", "auto")
    if isinstance(secure_cookies, str):
        if secure_cookies != "auto":
            problems.append(
                Problem("http.secure_cookies", f'true, false or "auto", got {secure_cookies!r}')
            )
        http = replace(http, secure_cookies=None)
    if http.metrics_listen:
        problems += _check_listen("http.metrics_listen", http.metrics_listen)
    problems += ranges("http")
    if http.login_lockout_max_s < http.login_lockout_s:
        problems.append(
            Problem("http.login_lockout_max_s", "must be at least http.login_lockout_s")
        )

    if "listen" not in given["query"] and server.listen.endswith(":0"):
        query = replace(query, listen=query.listen.rpartition(":")[0] + ":0")
    if query.listen:
        problems += _check_listen("query.listen", query.listen)

    if not store.path:
        problems.append(Problem("store.path", "must not be empty"))
    elif store.path != MEMORY:
        store = replace(store, path=str(base_dir / store.path))
    if store.url and not store.url.startswith(("postgresql://", "postgres://")):
        problems.append(
            Problem("store.url", "expected a postgresql:// URL (SQLite files go in store.path)")
        )
    if server.workers > 1 and not store.url and store.path == MEMORY:
        problems.append(Problem("server.workers", "several workers cannot share a :memory: store"))
    problems += ranges("store")

    if coverage.offline_after_s <= coverage.stale_after_s:
        problems.append(
            Problem("coverage.offline_after_s", "must be greater than coverage.stale_after_s")
        )
    problems += ranges("coverage") + ranges("reports")

    if history.checkpoint_file is not None and history.checkpoint_key is None:
        problems.append(
            Problem("history.checkpoint_key", "must be set with history.checkpoint_file")
        )
    problems += ranges("history") + ranges("ingest") + ranges("publication")
    problems += ranges("retention")
    window = read.get("retention", {}).get("window_days", RetentionConfig().window_days)
    if isinstance(window, int) and window < maintenance.verdicts.rejudge_days:
        # A verdict judged again after its car-state records were folded would find them
        # gone: the window must hold every record a verdict may be judged again on.
        problems.append(
            Problem(
                "retention.window_days",
                f"{window} is shorter than maintenance.verdicts.rejudge_days "
                f"({maintenance.verdicts.rejudge_days:g}): verdicts are judged again on "
                "raw records, which must still be there",
            )
        )

    if problems:
        raise ConfigError(source, problems)
    return FleetConfig(
        server=server,
        tls=tls,
        http=http,
        query=query,
        store=store,
        coverage=coverage,
        registry=replace(RegistryConfig(), **given["registry"]),
        history=history,
        reports=replace(ReportsConfig(), **given["reports"]),
        firmware=replace(FirmwareConfig(), **given["firmware"]),
        ingest=replace(IngestConfig(), **given["ingest"]),
        alarms=alarms,
        northbound=northbound,
        maintenance=maintenance,
        publication=replace(PublicationConfig(), **given["publication"]),
        retention=replace(RetentionConfig(), **given["retention"]),
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


def _check_listen(key: str, listen: str) -> list[Problem]:
    try:
        split_listen(listen)
    except ValueError as exc:
        return [Problem(key, str(exc))]
    return []
