"""The ``[northbound]`` section of the fleet config: the regional platforms the fleet
forwards its history to, each with its transport, authentication and mapping file. The
mapping is loaded here, so that a mapping error stops the fleet at start, named by file
and key like every config problem. docs/northbound.md explains the whole.

Every key of a platform, with its default::

    [northbound.platform.NAME]   # one table per platform; NAME names it everywhere
    mapping = ""                 # required: "gbt24476" or "chongqing" (shipped beside this
                                 # module), or a mapping file relative to the config file
    transport = "http"           # "http": one JSON POST per message to url + the mapping's
                                 # path; "mqtt": a QoS 1 publish to the mapping's topic
    url = ""                     # http: the platform's base URL (http:// or https://)
    host = "127.0.0.1"           # mqtt: the broker
    port = 1883                  # mqtt: its port
    auth = "none"                # "token": Authorization: Bearer (http) or the MQTT password;
                                 # "hmac": X-LiftWatch-Signature over TIMESTAMP.BODY (http);
                                 # "mtls": a client certificate (https or MQTT over TLS)
    token_file = ""              # auth = "token": a file holding the token
    secret_file = ""             # auth = "hmac": a file holding the shared key
    cert = ""                    # auth = "mtls": our client certificate chain (PEM) ...
    key = ""                     # ... and its private key
    ca = ""                      # the CA that signs the platform's certificate; "" = the
                                 # system's CAs. Paths are relative to the config file
    username = ""                # mqtt: the user name ("" = anonymous)
    source_id = "liftwatch"      # first part of every idempotency key (SOURCE:UNIT:SEQ): tells
                                 # this fleet's messages from another's at the same platform
    start = "now"                # for a platform new to this store: "now" sends what happens
                                 # from now on; "beginning" sends every unit's whole history
    enabled = true               # false: configured (status, dead letters) but not sent to
    rate_per_s = 20              # at most this many messages a second (the platform's rate
                                 # limit); 0 = no limit. A 429 or 503 with Retry-After is
                                 # honoured on top of it
    timeout_s = 10               # one send (HTTP request; MQTT connect and PUBACK)
    retry_initial_s = 1          # back-off after a failed send, doubled per failure ...
    retry_max_s = 300            # ... up to this
    lease_s = 30                 # the sender's lease: with several fleet instances on one
                                 # database one sends for the platform; when it dies another
                                 # takes over after this long (at least 2 x timeout_s)
    poll_s = 1                   # with nothing to send, look for new history this often
    batch = 200                  # history entries read per round
    heartbeat_s = 0              # every this many seconds, each unit's status now, when the
                                 # mapping has a [message.heartbeat]; 0 = none. Not durable:
                                 # a beat missed while the platform is down is not sent
                                 # later (the next one supersedes it). Sent batch units a
                                 # round between the history's messages, at rate_per_s
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from fleet.northbound.mapping import MappingError, NorthboundMapping, load_mapping, resolve
from liftconf.schema import Problem, bounded, out_of_range, read_section

TRANSPORTS = ("http", "mqtt")
AUTHS = ("none", "token", "hmac", "mtls")
STARTS = ("now", "beginning")
_DAY_S = 86_400
_NOT_A_KEY = {"key": False}


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    """One upstream platform: where and how to send, in whose terms, and how hard."""

    name: str = field(metadata=_NOT_A_KEY)  # the NAME of [northbound.platform.NAME]
    mapping: str  # required: a shipped mapping's name or a file
    transport: str = "http"
    url: str = ""
    host: str = "127.0.0.1"
    port: int = bounded(1883, 1, 65535)
    auth: str = "none"
    token_file: Path | None = None
    secret_file: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    username: str = ""
    source_id: str = "liftwatch"
    start: str = "now"
    enabled: bool = True
    rate_per_s: float = bounded(20.0, 0, 10_000)
    timeout_s: float = bounded(10.0, 0.1, 600)
    retry_initial_s: float = bounded(1.0, 0.01, _DAY_S)
    retry_max_s: float = bounded(300.0, 0.01, _DAY_S)
    lease_s: float = bounded(30.0, 1, 3600)
    poll_s: float = bounded(1.0, 0.01, 3600)
    batch: int = bounded(200, 1, 100_000)
    heartbeat_s: float = bounded(0.0, 0, _DAY_S)
    # The loaded mapping file (not a key: built from ``mapping``).
    loaded: NorthboundMapping | None = field(default=None, metadata=_NOT_A_KEY)


@dataclass(frozen=True, slots=True)
class NorthboundConfig:
    """Every configured platform, by name."""

    platform: Mapping[str, PlatformConfig] = field(default_factory=dict, metadata=_NOT_A_KEY)


def parse_northbound(section: object, base_dir: Path) -> tuple[NorthboundConfig, list[Problem]]:
    """The ``[northbound]`` table as `NorthboundConfig` with each mapping loaded, and every
    problem (dotted key first; a mapping's problems name its file and key)."""
    if not isinstance(section, Mapping):
        return NorthboundConfig(), [Problem("northbound", "expected a table")]
    problems: list[Problem] = [
        Problem(f"northbound.{k}", "unknown key") for k in section if k != "platform"
    ]
    tables = section.get("platform", {})
    if not isinstance(tables, Mapping):
        return NorthboundConfig(), [Problem("northbound.platform", "expected a table of platforms")]
    found: dict[str, PlatformConfig] = {}
    for name, table in tables.items():
        where = f"northbound.platform.{name}"
        if not isinstance(table, Mapping):
            problems.append(Problem(where, "expected a table"))
            continue
        values, own = read_section(PlatformConfig, where, table, base_dir)
        own += out_of_range(PlatformConfig, where, values)
        if "mapping" not in values and not any(p.key == f"{where}.mapping" for p in own):
            own.append(Problem(f"{where}.mapping", "required (gbt24476, chongqing or a file)"))
        own += _relations(where, values)
        if own:
            problems += own
            continue
        platform = PlatformConfig(name=name, **values)
        try:
            loaded = load_mapping(resolve(platform.mapping, base_dir))
        except MappingError as exc:
            problems += [Problem(f"{where}.mapping {p.key}", p.message) for p in exc.problems]
            continue
        # Where each message goes: an http platform needs a path, an mqtt one a topic.
        needed = "path" if platform.transport == "http" else "topic"
        problems += [
            Problem(
                f"{where}.mapping {loaded.source}: message.{m.name}.{needed}",
                f"needed by an {platform.transport} platform",
            )
            for m in loaded.messages.values()
            if not getattr(m, needed)
        ]
        found[name] = replace(platform, loaded=loaded)
    if problems:
        return NorthboundConfig(), problems
    return NorthboundConfig(platform=found), []


def _relations(where: str, values: Mapping[str, object]) -> list[Problem]:
    problems: list[Problem] = []
    transport = values.get("transport", "http")
    auth = values.get("auth", "none")
    if transport not in TRANSPORTS:
        problems.append(Problem(f"{where}.transport", f"expected one of {', '.join(TRANSPORTS)}"))
    if auth not in AUTHS:
        problems.append(Problem(f"{where}.auth", f"expected one of {', '.join(AUTHS)}"))
    if values.get("start", "now") not in STARTS:
        problems.append(Problem(f"{where}.start", f"expected one of {', '.join(STARTS)}"))
    url = str(values.get("url", ""))
    if transport == "http" and not url.startswith(("http://", "https://")):
        problems.append(
            Problem(f"{where}.url", "an http platform needs an http:// or https:// URL")
        )
    if auth == "token" and values.get("token_file") is None:
        problems.append(Problem(f"{where}.token_file", 'required with auth = "token"'))
    if auth == "hmac":
        if values.get("secret_file") is None:
            problems.append(Problem(f"{where}.secret_file", 'required with auth = "hmac"'))
        if transport != "http":
            problems.append(
                Problem(f"{where}.auth", 'hmac signs HTTP requests: needs transport = "http"')
            )
    if auth == "mtls" and (values.get("cert") is None or values.get("key") is None):
        problems.append(Problem(f"{where}.cert", 'cert and key are required with auth = "mtls"'))
    if auth == "mtls" and transport == "http" and not url.startswith("https://"):
        problems.append(Problem(f"{where}.url", "mutual TLS needs an https:// URL"))
    initial = values.get("retry_initial_s", 1.0)
    most = values.get("retry_max_s", 300.0)
    if isinstance(initial, float | int) and isinstance(most, float | int) and most < initial:
        problems.append(Problem(f"{where}.retry_max_s", "must be at least retry_initial_s"))
    lease = values.get("lease_s", 30.0)
    timeout = values.get("timeout_s", 10.0)
    if isinstance(lease, float | int) and isinstance(timeout, float | int) and lease < 2 * timeout:
        problems.append(
            Problem(
                f"{where}.lease_s",
                "must be at least twice timeout_s (a send must end "
                "well inside the lease, or a second instance could send it again)",
            )
        )
    return problems
