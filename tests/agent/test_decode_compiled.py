"""The compiled decoder decides exactly what `Point.raw` and the documented signal rules
decide, for every shipped profile and for generated points of every shape (coils and
discrete inputs, bits, inversion, signedness, 32-bit word orders, scales and ranges),
over register blocks with items missing and values at the edges."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.bus.plan import Table
from agent.decode.decoder import Decoded, SampleRejectedError, decode
from agent.decode.model import (
    DirectionSignal,
    DoorSignal,
    ModeSignal,
    Point,
    Profile,
    Values,
    ValueSignal,
    ValueType,
)
from agent.decode.parser import load_profile, shipped_profiles
from agent.state import Direction, DoorState, ServiceMode

_DOOR = {
    "open": DoorState.OPEN,
    "closed": DoorState.CLOSED,
    "opening": DoorState.OPENING,
    "closing": DoorState.CLOSING,
}


def reference_decode(profile: Profile, values: Values) -> Decoded:
    """The decoding rules written out point by point with `Point.raw`: the specification
    the compiled decoder must agree with."""
    for expect in profile.expects:
        got = expect.point.raw(values)
        if got is not None and got != expect.value:
            raise SampleRejectedError(
                f"{profile.name}: {expect.what} ({expect.point.table.value} "
                f"{expect.point.address}) is {got}, expected {expect.value}"
            )
    out: dict[str, object] = {}
    implausible: list[str] = []
    for signal in profile.signals:
        if isinstance(signal, ValueSignal):
            raw = signal.point.raw(values)
            if raw is None:
                continue
            if signal.point.type is ValueType.BOOL:
                out[signal.name] = bool(raw)
                continue
            value = raw * signal.point.scale
            valid = signal.point.valid
            if valid is not None and not valid[0] <= value <= valid[1]:
                implausible.append(f"{signal.name}={value:g} outside {valid[0]:g}..{valid[1]:g}")
                out[signal.name] = None
                continue
            out[signal.name] = round(value)
        elif isinstance(signal, ModeSignal):
            raw = signal.point.raw(values)
            if raw is None:
                continue
            mode = dict(signal.values).get(raw)
            if mode is None:
                implausible.append(f"mode={raw} is not a mapped value")
                mode = ServiceMode.UNKNOWN
            out["mode"] = mode
        elif isinstance(signal, DirectionSignal):
            up, down = signal.up.raw(values), signal.down.raw(values)
            if up is None or down is None:
                continue
            out["direction"] = Direction.UP if up else Direction.DOWN if down else Direction.NONE
        else:
            seen, door = False, None
            for part, point in signal.parts:
                raw = point.raw(values)
                if raw is None:
                    continue
                seen = True
                if raw:
                    door = _DOOR[part]
                    break
            if door is None and seen:
                door = DoorState.PARTLY_OPEN
            if door is not None:
                out["door"] = door
    return Decoded(out, tuple(implausible))


def outcome(decoder: Any, profile: Profile, values: Values) -> object:
    """A decoder's result, or the message of the sample it refused."""
    try:
        return decoder(profile, values)
    except SampleRejectedError as exc:
        return ("refused", str(exc))


_ADDRESSES = st.integers(0, 7)
_WORDS = st.one_of(st.sampled_from([0, 1, 0x7FFF, 0x8000, 0xFFFF]), st.integers(0, 0xFFFF))


def _blocks() -> st.SearchStrategy[dict[tuple[Table, int], int]]:
    # Any table, any of the first 9 items, some missing (a read that did not cover them).
    keys = st.tuples(st.sampled_from(list(Table)), st.integers(0, 8))
    return st.dictionaries(keys, _WORDS, max_size=36)


@st.composite
def _points(draw: st.DrawFn, *, boolean: bool) -> Point:
    table = draw(st.sampled_from(list(Table)))
    bit = None if table.is_bits else draw(st.none() | st.integers(0, 15))
    if boolean:
        vtype = ValueType.BOOL
    else:
        vtype = draw(st.sampled_from([t for t in ValueType if t is not ValueType.BOOL]))
    valid = draw(st.none() | st.tuples(st.integers(-70000, 5), st.integers(5, 70000)))
    return Point(
        table,
        draw(_ADDRESSES),
        vtype,
        bit,
        invert=draw(st.booleans()),
        scale=draw(st.sampled_from([1.0, 0.1, 10.0, -2.0])),
        word_order=draw(st.sampled_from(["big", "little"])),
        valid=None if valid is None else (float(valid[0]), float(valid[1])),
    )


@st.composite
def _profiles(draw: st.DrawFn) -> Profile:
    signals: list[Any] = [
        ValueSignal(name, draw(_points(boolean=name == "moving")))
        for name in draw(st.sets(st.sampled_from(["floor", "moving", "speed_mm_s"])))
    ]
    if draw(st.booleans()):
        signals.append(
            ModeSignal(
                draw(_points(boolean=False)), ((0, ServiceMode.STOPPED), (1, ServiceMode.NORMAL))
            )
        )
    if draw(st.booleans()):
        signals.append(DirectionSignal(draw(_points(boolean=True)), draw(_points(boolean=True))))
    if draw(st.booleans()):
        parts = draw(st.lists(st.sampled_from(list(_DOOR)), min_size=1, max_size=4, unique=True))
        signals.append(DoorSignal(tuple((p, draw(_points(boolean=True))) for p in parts)))
    return Profile("generated", "<test>", "", "", tuple(signals))


def test_every_shipped_profile_decodes_as_its_points_say() -> None:
    blocks = [
        {(table, a): (a * 7919 + k * 104729) & 0xFFFF for table in Table for a in range(60)}
        for k in range(40)
    ]
    for name in shipped_profiles():
        profile = load_profile(name)
        for values in blocks:
            expected = outcome(reference_decode, profile, values)
            assert outcome(decode, profile, values) == expected
            # and with the map version right, so that the reference map is decoded too
            values[(Table.HOLDING, 0)] = 1
            assert outcome(decode, profile, values) == outcome(reference_decode, profile, values)


@settings(max_examples=300, deadline=None)
@given(_profiles(), _blocks())
def test_generated_profiles_decode_as_their_points_say(
    profile: Profile, values: dict[tuple[Table, int], int]
) -> None:
    assert outcome(decode, profile, values) == outcome(reference_decode, profile, values)
