"""A northbound mapping: how one platform's interface says what LiftWatch's history says.

A mapping is a TOML file (two ship beside this module: ``gbt24476.toml``, the GB/T
24476-2017 data items, and ``chongqing.toml``, Chongqing's platform codes; docs/northbound.md
explains how to write one). It holds:

- ``[mapping]``: ``name``, ``time_zone`` (for ``at_local``) and ``key_field`` (the body
  field that carries the message's idempotency key, "" for the header only);
- ``[message.NAME]``: one message per kind of history entry it renders (``kind``, by
  default NAME; ``status`` renders ``coverage``): ``path`` (HTTP, under the platform's
  url), ``topic`` (MQTT; ``{unit_id}`` is replaced), ``when`` (only entries whose sources
  have one of the listed values) and ``fields`` (each body field from a source);
- ``[codes.TABLE]``: code tables, looked up by a field's ``code.TABLE`` source.

A field is a source name, or a table ``{source = NAME or [NAME, ...], codes = TABLE,
time = "iso"|"local"|"ms", skip_when_missing = bool, type = "string"|...}``: the first
source with a value wins (translated through the code table ``codes`` when given:
``{source = "detail.phase", codes = "phase"}``; a time in µs written as ``time`` says:
``{source = "detail.start_us", time = "iso"}``); with
``skip_when_missing`` an entry none of whose sources has a value is not sent (Chongqing's
platform takes only coded events), otherwise the field is null. ``{const = VALUE}`` is a
constant. Sources: ``key``, ``unit_id``, ``seq``, ``kind``, ``at`` (ISO 8601 UTC),
``at_ms`` (ms since the epoch), ``at_local`` (``YYYY-MM-DD HH:MM:SS`` in ``time_zone``),
``detail.NAME`` (what the history entry recorded; `DETAIL_TYPES` gives the known ones'
JSON types, any other needs ``type``), ``code.TABLE`` (the entry's code in that table:
an event's type, tried first as ``TYPE@landing`` or ``TYPE@between`` by where the car
stood at onset; a status entry's new status; an alarm's step).

`load_mapping` names every problem by file and dotted key. `json_schema` derives, per
message, the JSON Schema every body it renders satisfies: the reference platform in
hil_tests validates each message it receives against it.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liftconf.schema import Problem, type_name

SHIPPED = Path(__file__).resolve().parent
SHIPPED_MAPPINGS = ("gbt24476", "chongqing")

# Not history: the unit's status now, sent every ``heartbeat_s`` (forwarder). A beat
# missed during an outage is not sent later; the next one supersedes it.
HEARTBEAT = "heartbeat"
# Message names that render another history kind by default.
KIND_OF_NAME = {"status": "coverage"}
# The JSON types of what each history kind records (fleet.store.chain, lifecycle, and
# fleet.store.maintenance for the maintenance kinds once they are chained); "?" = null too.
DETAIL_TYPES: Mapping[str, Mapping[str, str]] = {
    "event": {
        "agent_id": "string",
        "seq": "integer",
        "event_id": "string",
        "type": "string",
        "phase": "string",
        "time": "string",
        "onset": "string?",
        "floor": "integer?",
        "reason": "string",
        "gb_code": "integer?",
        "at_landing": "boolean?",
    },
    "alarm": {
        "alarm_id": "integer",
        "step": "string",
        "type": "string?",
        "event_id": "string?",
        "by": "string?",
        "reason": "string?",
        "target": "string?",
        "event": "string?",
    },
    "coverage": {"old_status": "string", "new_status": "string", "cause": "string"},
    HEARTBEAT: {"status": "string", "last_seen": "string?", "agent_id": "string"},
    "register": {
        "building": "string",
        "address": "string",
        "street": "string",
        "use_unit": "string",
        "contractor": "string",
        "install_date": "string?",
        "rated_speed_m_s": "number?",
        "rated_load_kg": "integer?",
        "landings": "integer?",
        "controller_model": "string?",
        "car_in_group": "integer?",
        "new": "boolean?",
    },
    # Issue 17 (fleet.store.maintenance): a contractor's maintenance record, the fleet's
    # verdict on it, and a watched visit (times in µs since the epoch: see ``time``).
    "maintenance_record": {
        "record_id": "integer",
        "contractor": "string",
        "kind": "string",
        "start_us": "integer",
        "end_us": "integer",
        "source": "string",
        "uploaded_by": "string",
    },
    "maintenance_verdict": {
        "record_id": "integer",
        "verdict": "string",
        "reason": "string",
        "visit_id": "integer?",
    },
    "visit": {
        "visit_id": "integer",
        "start_us": "integer",
        "end_us": "integer?",
        "duration_s": "number",
        "unwatched_s": "number",
        "mode": "string",
        "inspection_runs": "integer",
        "landings_visited": "integer",
        "door_cycles": "integer",
    },
    "firmware": {
        "agent_id": "string?",
        "model": "string?",
        "old_firmware": "string?",
        "new_firmware": "string?",
        "old_agent_version": "string?",
        "new_agent_version": "string?",
    },
}
HISTORY_KINDS = (
    "event",
    "alarm",
    "coverage",
    "register",
    "firmware",
    "visit",
    "maintenance_record",
    "maintenance_verdict",
)
# What ``time = ...`` makes of a µs value: ISO 8601 UTC, local text, ms since the epoch.
TIME_FORMATS = {"iso": "string", "local": "string", "ms": "integer"}
ENTRY_SOURCES: Mapping[str, str] = {
    "key": "string",
    "unit_id": "string",
    "seq": "integer",
    "kind": "string",
    "at": "string",
    "at_ms": "integer",
    "at_local": "string",
}
JSON_TYPES = ("string", "integer", "number", "boolean")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class MappingError(Exception):
    """A mapping file is unusable; ``problems`` names each by file and key."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Field:
    """One body field: its sources in order (or a constant), and whether an entry none of
    whose sources has a value is skipped."""

    name: str
    sources: tuple[str, ...]
    const: object = None
    is_const: bool = False
    skip_when_missing: bool = False
    declared_type: str = ""
    codes: str = ""  # a code table the sources' value is translated through
    time: str = ""  # the value is µs since the epoch, written as TIME_FORMATS says


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the mapping: which history kind it renders, where it goes, when,
    and its fields."""

    name: str
    kind: str
    path: str
    topic: str
    when: Mapping[str, tuple[object, ...]]
    fields: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class Rendered:
    """One message ready to send: the mapping message's name, the idempotency key, the
    HTTP path and MQTT topic, and the body."""

    name: str
    key: str
    path: str
    topic: str
    body: Mapping[str, Any]

    def encoded(self) -> bytes:
        """The body as sent: compact UTF-8 JSON, keys in the mapping's order."""
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class NorthboundMapping:
    """A loaded mapping (see the module docstring)."""

    source: str  # the file it came from
    name: str
    time_zone: str
    key_field: str
    messages: Mapping[str, Message]  # by history kind
    codes: Mapping[str, Mapping[str, object]]

    def render(
        self, source_id: str, unit_id: str, seq: int, at_us: int, kind: str, detail: str
    ) -> Rendered | None:
        """The message for one history entry, or None when the mapping sends none for it
        (no message for its kind, ``when`` not met, a ``skip_when_missing`` field with no
        value). Raises ValueError when the entry's detail is not a JSON object."""
        if kind not in self.messages:
            return None
        parsed = json.loads(detail)
        if not isinstance(parsed, dict):
            raise ValueError(f"history entry {unit_id}#{seq}: detail is not an object")
        key = message_key(source_id, unit_id, seq)
        return self._render(_Values(self, key, unit_id, seq, at_us, kind, parsed))

    def render_heartbeat(
        self, source_id: str, unit_id: str, at_us: int, detail: Mapping[str, Any]
    ) -> Rendered | None:
        """The heartbeat message of one unit at ``at_us`` (``detail``: status, last_seen,
        agent_id), or None when the mapping has none. Its key names the beat
        (``SOURCE:UNIT:hb:MS``): the same beat sent again is the same message."""
        if HEARTBEAT not in self.messages:
            return None
        key = f"{source_id}:{unit_id}:hb:{at_us // 1000}"
        return self._render(_Values(self, key, unit_id, 0, at_us, HEARTBEAT, detail))

    def _render(self, values: _Values) -> Rendered | None:
        message = self.messages[values.kind]
        for source, allowed in message.when.items():
            if values.get(source) not in allowed:
                return None
        body: dict[str, Any] = {}
        if self.key_field:
            body[self.key_field] = values.key
        for f in message.fields:
            if f.is_const:
                body[f.name] = f.const
                continue
            value = next((v for v in map(values.get, f.sources) if v is not None), None)
            if f.codes and value is not None:
                value = self.codes[f.codes].get(str(value))
            if f.time and isinstance(value, int) and not isinstance(value, bool):
                value = values.time(value, f.time)
            if value is None and f.skip_when_missing:
                return None
            body[f.name] = value
        topic = message.topic.replace("{unit_id}", values.unit_id)
        return Rendered(message.name, values.key, message.path, topic, body)

    def json_schema(self) -> dict[str, dict[str, Any]]:
        """Per message name, the JSON Schema (draft 2020-12 subset: type, enum, const,
        properties, required, additionalProperties) that every body it renders meets."""
        schemas: dict[str, dict[str, Any]] = {}
        for message in self.messages.values():
            properties: dict[str, Any] = {}
            if self.key_field:
                properties[self.key_field] = {"type": "string", "minLength": 1}
            for f in message.fields:
                properties[f.name] = self._field_schema(message.kind, f)
            schemas[message.name] = {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "title": f"{self.name}: {message.name}",
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            }
        return schemas

    def _field_schema(self, kind: str, f: Field) -> dict[str, Any]:
        if f.is_const:
            return {"const": f.const}
        types: list[str] = []
        enum: list[object] = []
        only_codes = True
        # Null only when every source can be: a code table may lack the entry's key, a
        # detail field typed "?" may be null; the entry's own sources never are.
        nullable = not f.skip_when_missing
        tables = [self.codes[f.codes]] if f.codes else []
        for source in f.sources:
            if source.startswith("code."):
                tables.append(self.codes[source.removeprefix("code.")])
                continue
            declared = f.declared_type or source_type(kind, source) or "string?"
            if f.time:
                declared = TIME_FORMATS[f.time] + ("?" if declared.endswith("?") else "")
            if f.codes:  # the value is the table's: its type, and null when not in it
                continue
            only_codes = False
            nullable = nullable and declared.endswith("?")
            base = declared.rstrip("?")
            if base not in types:
                types.append(base)
        for table in tables:
            for value in table.values():
                if value not in enum:
                    enum.append(value)
                if _json_type(value) not in types:
                    types.append(_json_type(value))
        if "integer" in types and "number" in types:
            types.remove("integer")
        if nullable:
            types.append("null")
        schema: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
        if only_codes and enum:
            schema["enum"] = [*enum, None] if nullable else enum
        return schema


def message_key(source_id: str, unit_id: str, seq: int) -> str:
    """The idempotency key of a unit's history entry ``seq``: the same on every retry, after
    a restart, from any instance, and never the same for two entries of one fleet's
    store (``source_id`` tells fleets apart at a platform several report to)."""
    return f"{source_id}:{unit_id}:{seq}"


def source_type(kind: str, source: str) -> str | None:
    """The JSON type of a source for entries of ``kind`` (``?`` suffix: may be null);
    None when not known (a ``detail.NAME`` of a kind without a catalogue needs ``type``)."""
    if source in ENTRY_SOURCES:
        return ENTRY_SOURCES[source]
    if source.startswith("detail."):
        return DETAIL_TYPES.get(kind, {}).get(source.removeprefix("detail."))
    return None


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


class _Values:
    """The sources of one history entry, computed when asked."""

    def __init__(
        self,
        mapping: NorthboundMapping,
        key: str,
        unit_id: str,
        seq: int,
        at_us: int,
        kind: str,
        detail: Mapping[str, Any],
    ) -> None:
        self._mapping = mapping
        self.key, self.unit_id, self._seq, self._at_us = key, unit_id, seq, at_us
        self.kind, self._detail = kind, detail

    def time(self, us: int, form: str) -> object:
        """``us`` (µs since the epoch) as ``form`` (`TIME_FORMATS`)."""
        moment = _EPOCH + dt.timedelta(microseconds=us)
        if form == "ms":
            return us // 1000
        if form == "local":
            local = moment.astimezone(zoneinfo.ZoneInfo(self._mapping.time_zone))
            return local.strftime("%Y-%m-%d %H:%M:%S")
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def get(self, source: str) -> object:
        if source == "key":
            return self.key
        if source == "unit_id":
            return self.unit_id
        if source == "seq":
            return self._seq
        if source == "kind":
            return self.kind
        if source == "at":
            return self.time(self._at_us, "iso")
        if source == "at_ms":
            return self.time(self._at_us, "ms")
        if source == "at_local":
            return self.time(self._at_us, "local")
        if source.startswith("detail."):
            return self._detail.get(source.removeprefix("detail."))
        if source.startswith("code."):
            table = self._mapping.codes[source.removeprefix("code.")]
            return next((table[k] for k in self._code_keys() if k in table), None)
        raise KeyError(source)  # load_mapping refuses unknown sources

    def _code_keys(self) -> list[str]:
        d = self._detail
        if self.kind == "event":
            name = str(d.get("type", ""))
            where = d.get("at_landing")
            if where is None:
                return [name]
            return [f"{name}@{'landing' if where else 'between'}", name]
        if self.kind == "coverage":
            return [str(d.get("new_status", ""))]
        if self.kind == HEARTBEAT:
            return [str(d.get("status", ""))]
        if self.kind == "alarm":
            return [str(d.get("step", ""))]
        return []


def resolve(name: str, base_dir: Path) -> Path:
    """The file a platform's ``mapping`` key names: a shipped mapping by its name
    (`SHIPPED_MAPPINGS`), else a path relative to the config file's directory."""
    if name in SHIPPED_MAPPINGS:
        return SHIPPED / f"{name}.toml"
    return base_dir / name


def load_mapping(path: Path) -> NorthboundMapping:
    """Read and check the mapping file at ``path``; raises `MappingError` naming every
    problem by the file and its dotted key."""
    where = str(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise MappingError([Problem(where, "file not found")]) from None
    except OSError as exc:
        raise MappingError([Problem(where, f"cannot read: {exc.strerror or exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise MappingError([Problem(where, f"not valid TOML: {exc}")]) from None
    return parse_mapping(data, where)


def parse_mapping(data: Mapping[str, Any], where: str) -> NorthboundMapping:
    """Check parsed mapping TOML ``data`` (from the file ``where``); raises `MappingError`."""
    problems: list[Problem] = []

    def bad(key: str, message: str) -> None:
        problems.append(Problem(f"{where}: {key}", message))

    for key in data:
        if key not in ("mapping", "message", "codes"):
            bad(key, "unknown key (expected mapping, message, codes)")
    head = _table(data.get("mapping", {}), "mapping", bad)
    name = _text(head, "mapping", "name", "", bad) or Path(where).stem
    time_zone = _text(head, "mapping", "time_zone", "Asia/Shanghai", bad)
    key_field = _text(head, "mapping", "key_field", "", bad)
    for key in head:
        if key not in ("name", "time_zone", "key_field"):
            bad(f"mapping.{key}", "unknown key")
    try:
        zoneinfo.ZoneInfo(time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        bad("mapping.time_zone", f"{time_zone!r} is not an IANA time zone name")
    codes: dict[str, dict[str, object]] = {}
    for table, entries in _table(data.get("codes", {}), "codes", bad).items():
        found = _table(entries, f"codes.{table}", bad)
        for code_key, value in found.items():
            if isinstance(value, bool) or not isinstance(value, int | str):
                bad(
                    f"codes.{table}.{code_key}",
                    f"expected an integer or a string, got {type_name(value)}",
                )
        codes[table] = dict(found)
    messages: dict[str, Message] = {}
    for msg_name, raw in _table(data.get("message", {}), "message", bad).items():
        message = _message(msg_name, _table(raw, f"message.{msg_name}", bad), codes, key_field, bad)
        if message is None:
            continue
        if message.kind in messages:
            bad(f"message.{msg_name}.kind", f"a second message for {message.kind!r}")
        messages[message.kind] = message
    if not messages and not problems:
        bad("message", "no [message.NAME] table: the mapping would send nothing")
    if problems:
        raise MappingError(problems)
    return NorthboundMapping(where, name, time_zone, key_field, messages, codes)


def _message(
    name: str,
    raw: Mapping[str, Any],
    codes: Mapping[str, Mapping[str, object]],
    key_field: str,
    bad: Any,
) -> Message | None:
    at = f"message.{name}"
    kind = _text(raw, at, "kind", KIND_OF_NAME.get(name, name), bad)
    if kind not in (*HISTORY_KINDS, HEARTBEAT):
        kinds = ", ".join((*HISTORY_KINDS, HEARTBEAT))
        bad(f"{at}.kind", f"unknown kind {kind!r} (one of {kinds})")
        return None
    path = _text(raw, at, "path", "", bad)
    if path and not path.startswith("/"):
        bad(f"{at}.path", "must start with /")
    topic = _text(raw, at, "topic", "", bad)
    for key in raw:
        if key not in ("kind", "path", "topic", "when", "fields"):
            bad(f"{at}.{key}", "unknown key")
    when: dict[str, tuple[object, ...]] = {}
    for source, allowed in _table(raw.get("when", {}), f"{at}.when", bad).items():
        if not _known_source(kind, source, codes):
            bad(f"{at}.when.{source}", f"unknown source {source!r}")
        values = allowed if isinstance(allowed, list) else [allowed]
        when[source] = tuple(values)
    fields: list[Field] = []
    raw_fields = _table(raw.get("fields", {}), f"{at}.fields", bad)
    if not raw_fields:
        bad(f"{at}.fields", "no fields")
    for field_name, spec in raw_fields.items():
        where = f"{at}.fields.{field_name}"
        if field_name == key_field:
            bad(where, "is mapping.key_field: the key is written there already")
        made = _field(field_name, spec, kind, codes, where, bad)
        if made is not None:
            fields.append(made)
    return Message(name, kind, path, topic, when, tuple(fields))


def _field(
    name: str,
    spec: object,
    kind: str,
    codes: Mapping[str, Mapping[str, object]],
    where: str,
    bad: Any,
) -> Field | None:
    if isinstance(spec, str):
        spec = {"source": spec}
    if not isinstance(spec, Mapping):
        bad(where, f"expected a source name or a table, got {type_name(spec)}")
        return None
    for key in spec:
        if key not in ("source", "const", "skip_when_missing", "type", "codes", "time"):
            bad(f"{where}.{key}", "unknown key")
    if "const" in spec:
        if "source" in spec:
            bad(where, "either source or const, not both")
        return Field(name, (), const=spec["const"], is_const=True)
    raw = spec.get("source")
    sources = [raw] if isinstance(raw, str) else raw
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
        bad(f"{where}.source", "expected a source name or a list of them")
        return None
    declared = spec.get("type", "")
    if declared and declared.rstrip("?") not in JSON_TYPES:
        bad(f"{where}.type", f"expected one of {', '.join(JSON_TYPES)}")
    for source in sources:
        if not _known_source(kind, source, codes):
            bad(f"{where}.source", f"unknown source {source!r}")
        elif source_type(kind, source) is None and not source.startswith("code.") and not declared:
            bad(f"{where}.type", f"needed: the type of {source!r} is not known for {kind!r}")
    table = spec.get("codes", "")
    if not isinstance(table, str) or (table and table not in codes):
        bad(f"{where}.codes", f"no [codes.{table}] table")
        table = ""
    time = spec.get("time", "")
    if time not in ("", *TIME_FORMATS):
        bad(f"{where}.time", f"expected one of {', '.join(TIME_FORMATS)}")
        time = ""
    skip = spec.get("skip_when_missing", False)
    if not isinstance(skip, bool):
        bad(f"{where}.skip_when_missing", f"expected a boolean, got {type_name(skip)}")
    return Field(
        name,
        tuple(sources),
        skip_when_missing=bool(skip),
        declared_type=str(declared),
        codes=table,
        time=str(time),
    )


def _known_source(kind: str, source: str, codes: Mapping[str, Mapping[str, object]]) -> bool:
    if source in ENTRY_SOURCES:
        return True
    if source.startswith("code."):
        return source.removeprefix("code.") in codes and kind in (
            "event",
            "coverage",
            "alarm",
            HEARTBEAT,
        )
    return source.startswith("detail.") and len(source) > len("detail.")


def _table(value: object, key: str, bad: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    bad(key, f"expected a table, got {type_name(value)}")
    return {}


def _text(table: Mapping[str, Any], at: str, key: str, default: str, bad: Any) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        bad(f"{at}.{key}", f"expected a string, got {type_name(value)}")
        return default
    return value
