"""One definition per response: a frozen dataclass per JSON object the fleet answers with,
and from it both the JSON (`to_json`) and the OpenAPI schema (`schema_of`).

A response dataclass holds JSON-ready values (times already ISO strings, enums as their
``enum.Enum``), so the two cannot disagree: the schema is read from the field's type hint
(``str``, ``int``, ``float``, ``bool``, ``datetime.date`` as YYYY-MM-DD, ``X | None``,
``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, an ``Enum`` or ``Literal`` for a closed
set of strings, another response dataclass as a ``$ref`` (one not registered with
`response`, such as the CLI's own outputs, in place), a union of several as ``anyOf``
their ``$ref``s) and from what `out` declares on
the field: its documentation, the JSON key when it is not the field's name (``class``), a
minimum, a format, whether a None leaves the key out, and (``shape``) the definition that
JSON kept as it was made (a draft's stored lists) came from. Every other key is required, and
no key beyond the fields is allowed, so the generated schema is as strict as the old
hand-written one. Written here rather than taken from a library (pydantic, msgspec): the
rules fit in this module, and the response types stay plain dataclasses the CLI and the web share.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

_NAMES: dict[type, str] = {}
T = TypeVar("T")


def response(name: str) -> Callable[[type[T]], type[T]]:
    """Register a response dataclass under its OpenAPI component ``name``: fields of this
    type elsewhere become ``{"$ref": "#/components/schemas/<name>"}``."""

    def register(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__}: a response must be a dataclass")
        _NAMES[cls] = name
        return cls

    return register


def name_of(cls: type) -> str:
    """The OpenAPI component name response dataclass ``cls`` was registered under."""
    return _NAMES[cls]


def out(
    description: str = "",
    *,
    key: str | None = None,
    minimum: int | None = None,
    fmt: str | None = None,
    omit_none: bool = False,
    flatten: bool = False,
    default: Any = dataclasses.MISSING,
    default_factory: Callable[[], Any] | None = None,
    shape: type | None = None,
) -> Any:
    """A response field's declaration: ``description`` (the schema's per-field docs),
    ``key`` (its JSON name, where the field's name cannot be it, e.g. ``class``),
    ``minimum`` and ``fmt`` (JSON Schema ``minimum`` / ``format``), and ``omit_none``:
    a None leaves the key out of the JSON and out of ``required``; ``flatten``: a field
    holding another response dataclass gives its keys in its place (shared key sets);
    ``default`` / ``default_factory`` as for `dataclasses.field` (the key is still always
    written, so still required); ``shape``: the field holds JSON made earlier from that
    response dataclass and kept as it is (a draft's stored lists): its schema is
    ``shape``'s."""
    meta: dict[str, Any] = {"description": description, "key": key, "minimum": minimum}
    meta.update({"format": fmt, "shape": shape})
    metadata = {"out": meta, "omit_none": omit_none, "flatten": flatten}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    if default is not dataclasses.MISSING:
        return dataclasses.field(default=default, metadata=metadata)
    return dataclasses.field(metadata=metadata)


def _key(f: dataclasses.Field[Any]) -> str:
    meta = f.metadata.get("out")
    return (meta and meta["key"]) or f.name


def keys_of(cls: type) -> tuple[str, ...]:
    """The JSON keys of response dataclass ``cls`` in the order `to_json` writes them
    (flattened fields' keys in their place): what a CSV writer picks its columns from."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        keys.extend(keys_of(hints[f.name]) if f.metadata.get("flatten") else (_key(f),))
    return tuple(keys)


@typing.overload
def iso(moment: dt.datetime) -> str: ...
@typing.overload
def iso(moment: None) -> None: ...
@typing.overload
def iso(moment: dt.datetime | None) -> str | None: ...
def iso(moment: dt.datetime | None) -> str | None:
    """``moment`` as ISO 8601 UTC with a ``Z`` (millisecond precision), None stays None."""
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def view_from(cls: type[T], source: object, **given: Any) -> T:
    """Response dataclass ``cls`` with the ``given`` fields, every other field being
    ``source``'s attribute of the same name (a datetime as its `iso` string): the one
    copy rule of the views whose fields are named as the stored row or record's."""
    taken = {
        f.name: getattr(source, f.name)
        for f in dataclasses.fields(typing.cast(Any, cls))
        if f.name not in given
    }
    shown = {k: iso(v) if isinstance(v, dt.datetime) else v for k, v in taken.items()}
    return cls(**shown, **given)


def to_json(value: Any) -> Any:
    """``value`` as JSON-ready data: a response dataclass as a dict in field order (keys as
    declared, None left out where the field says so), enums as their values, tuples and
    lists as lists, mappings as dicts; anything else as is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        shown: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item is None and f.metadata.get("omit_none"):
                continue
            if f.metadata.get("flatten"):
                shown.update(to_json(item))
            else:
                shown[_key(f)] = to_json(item)
        return shown
    if isinstance(value, enum.Enum):
        return value.value
    if type(value) is dt.date:  # a day; an instant is an ISO string already (views.iso)
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_json(v) for k, v in value.items()}
    return value


_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _type_schema(hint: Any) -> dict[str, Any]:
    """The JSON Schema of one type hint (see the module docstring for the ones known)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(members) > 1 and len(members) == len(typing.get_args(hint)):
            # One of several response objects (a report's rows): each by its own $ref.
            if not all(m in _NAMES for m in members):
                raise TypeError(f"{hint}: a union of several must be of response dataclasses")
            return {"type": "object", "anyOf": [_type_schema(m) for m in members]}
        if len(members) != 1:
            raise TypeError(f"{hint}: only X | None unions are supported")
        schema = _type_schema(members[0])
        if "$ref" in schema:  # a nullable object: inlined, since $ref takes no siblings
            schema = schema_of(members[0])
        if "type" in schema:
            schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
        return schema
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    if hint is dt.date:
        return {"type": "string", "format": "date"}
    if hint is typing.Any or hint is object:
        return {}
    if origin is typing.Literal:
        return {"type": "string", "enum": list(typing.get_args(hint))}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"type": "string", "enum": [m.value for m in hint]}
    if origin in (list, tuple):
        args = typing.get_args(hint)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"{hint}: only tuple[X, ...] is supported")
        return {"type": "array", "items": _type_schema(args[0])}
    if origin in (dict, Mapping, typing.get_origin(Mapping[str, int])):
        key, item = typing.get_args(hint)
        if key is not str:
            raise TypeError(f"{hint}: JSON object keys are strings")
        return {"type": "object", "additionalProperties": _type_schema(item)}
    if isinstance(hint, type) and hint in _NAMES:
        return {"$ref": f"#/components/schemas/{_NAMES[hint]}"}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        # Not an API component (the CLI's own outputs): its schema in place.
        return schema_of(hint)
    raise TypeError(f"{hint!r}: no JSON Schema for this type; register it with @response")


def schema_of(cls: type) -> dict[str, Any]:
    """The JSON Schema of response dataclass ``cls``: an object of exactly its fields,
    each typed from its hint and documented from its `out` declaration; every key
    required but the ``omit_none`` ones."""
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("flatten"):
            inner = schema_of(hints[f.name])
            properties.update(inner["properties"])
            required.extend(inner["required"])
            continue
        hint = hints[f.name]
        if f.metadata.get("omit_none"):  # left out rather than null: the key's own type
            (hint,) = (a for a in typing.get_args(hint) if a is not type(None))
        meta = f.metadata.get("out") or {}
        schema = _type_schema(meta["shape"] if meta.get("shape") else hint)
        for name, attr in (("description", "description"), ("minimum", "minimum")):
            if meta.get(attr) not in (None, ""):
                schema[name] = meta[attr]
        if meta.get("format"):
            schema["format"] = meta["format"]
        properties[_key(f)] = schema
        if not f.metadata.get("omit_none"):
            required.append(_key(f))
    return {
        "type": "object",
        "properties": properties,
        "required": sorted(required),
        "additionalProperties": False,
    }


def component_schemas() -> dict[str, Any]:
    """Every registered response's schema by component name (the OpenAPI
    ``components.schemas``)."""
    return {name: schema_of(cls) for cls, name in _NAMES.items()}
