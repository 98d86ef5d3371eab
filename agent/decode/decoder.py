"""Profile decoder: raw values of one slave into `CarState` fields, as a profile says.

Decoding policy for bad values (decided here, documented in the template):

- a signal whose value lies outside its declared ``range`` (or a ``mode`` value the
  profile does not map) is set to ``None`` for that sample and counted as implausible;
  the other signals of the sample still reach the detectors, which treat ``None`` as
  "not known" and degrade as documented in agent/detect;
- an ``[[expect]]`` register (such as a map version) with another value means the whole
  block is not what the profile describes: the whole sample is refused (`SampleRejectedError`)
  and counted, and nothing of it reaches the detectors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.bus.plan import Table
from agent.decode.model import (
    DirectionSignal,
    ModeSignal,
    Point,
    Profile,
    Values,
    ValueSignal,
    ValueType,
)
from agent.state import CarState, ControllerIdentity, Direction, DoorState, ServiceMode


class SampleRejectedError(ValueError):
    """A block that is not what its profile describes (an ``[[expect]]`` failed)."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """The CarState fields one slave's values gave, and the signals refused as implausible."""

    fields: dict[str, object]
    implausible: tuple[str, ...]


def decode(profile: Profile, values: Values) -> Decoded:
    """Decode what was read from one slave into CarState fields.

    Signals whose items were not read this time (slow signals on a fast cycle) are left
    out. A value outside its declared range is left out too and named in
    ``implausible``. Raises `SampleRejectedError` when an ``[[expect]]`` does not hold.
    """
    decoder = profile._decoder
    if decoder is None:
        # Frozen: the compiled form is a cache, not part of the profile's value.
        decoder = Decoder(profile)
        object.__setattr__(profile, "_decoder", decoder)
    return decoder.decode(values)


@dataclass(frozen=True, slots=True)
class _Raw:
    """A `Point` compiled against its decoder's word list: `Point.raw` without the
    (table, address) lookups, which the decoder does once per item and sample."""

    first: int  # index of the point's (first) item in the word list
    second: int  # index of the low or high word of a 32-bit value, else -1
    mask: int  # a bit of a register, or -1 for a coil or discrete input; 0: a number
    invert: bool
    signed: bool  # int16 or int32
    big: bool  # high word first

    def get(self, words: Sequence[int | None]) -> int | None:
        """The point's integer value, or None when its items were not read this time."""
        first = words[self.first]
        if first is None:
            return None
        if self.mask:
            return int(bool(first & self.mask) != self.invert)
        if self.second < 0:
            if self.signed and first & 0x8000:
                return first - 0x10000
            return first
        second = words[self.second]
        if second is None:
            return None
        high, low = (first, second) if self.big else (second, first)
        value = high << 16 | low
        if self.signed and value & 0x8000_0000:
            value -= 0x1_0000_0000
        return value


# A bool signal read from one bit: (field name, word index, bit mask, invert).
_Flag = tuple[str, int, int, bool]
# A number in one register: (position among the signals, field name, word index, int16,
# scale, declared range); the position keeps implausible messages in signal order.
_Word = tuple[int, str, int, bool, float, tuple[float, float] | None]
# Any other value signal: (position, field name, raw value, bool, scale, declared range).
_Value = tuple[int, str, _Raw, bool, float, tuple[float, float] | None]


class Decoder:
    """A profile compiled into flat extractors over the distinct items it reads.

    `decode` looks each item up once per sample, then every signal is plain integer work
    on a list: no enum hashing, no properties, no per-point method calls for the bits that
    make up most of a register map. It decides exactly what `Point.raw` and the signal
    rules in the module docstring decide.
    """

    __slots__ = (
        "_direction",
        "_door",
        "_expects",
        "_flags",
        "_keys",
        "_mode",
        "_profile_name",
        "_values",
        "_words",
    )

    def __init__(self, profile: Profile) -> None:
        self._profile_name = profile.name
        index: dict[tuple[Table, int], int] = {}

        def slot(table: Table, address: int) -> int:
            return index.setdefault((table, address), len(index))

        def compiled(p: Point) -> _Raw:
            first = slot(p.table, p.address)
            second = slot(p.table, p.address + 1) if p.type.words == 2 else -1
            if p.table.is_bits:
                mask = -1  # a coil or input is one item: true when non-zero
            elif p.bit is not None:
                mask = 1 << p.bit
            else:
                mask = 0
            signed = p.type in (ValueType.INT16, ValueType.INT32)
            return _Raw(first, second, mask, p.invert, signed, p.word_order == "big")

        self._expects = tuple((e, compiled(e.point)) for e in profile.expects)
        flags: list[_Flag] = []
        words: list[_Word] = []
        values: list[_Value] = []
        self._mode: tuple[int, _Raw, dict[int, ServiceMode]] | None = None
        self._direction: tuple[_Raw, _Raw] | None = None
        self._door: tuple[tuple[DoorState, _Raw], ...] | None = None
        for position, signal in enumerate(profile.signals):
            if isinstance(signal, ValueSignal):
                raw = compiled(signal.point)
                is_bool = signal.point.type is ValueType.BOOL
                point = signal.point
                if is_bool and raw.mask:
                    flags.append((signal.name, raw.first, raw.mask, raw.invert))
                elif not is_bool and not raw.mask and raw.second < 0:
                    words.append(
                        (position, signal.name, raw.first, raw.signed, point.scale, point.valid)
                    )
                else:
                    values.append((position, signal.name, raw, is_bool, point.scale, point.valid))
            elif isinstance(signal, ModeSignal):
                self._mode = (position, compiled(signal.point), dict(signal.values))
            elif isinstance(signal, DirectionSignal):
                self._direction = (compiled(signal.up), compiled(signal.down))
            else:
                self._door = tuple((_DOOR_STATES[part], compiled(p)) for part, p in signal.parts)
        self._flags = tuple(flags)
        self._words = tuple(words)
        self._values = tuple(values)
        self._keys = tuple(index)

    def decode(self, values: Values) -> Decoded:
        """See the module function `decode`."""
        words = list(map(values.get, self._keys))
        for expect, raw in self._expects:
            got = raw.get(words)
            if got is not None and got != expect.value:
                raise SampleRejectedError(
                    f"{self._profile_name}: {expect.what} ({expect.point.table.value} "
                    f"{expect.point.address}) is {got}, expected {expect.value}"
                )
        out: dict[str, object] = {}
        for name, i, mask, invert in self._flags:
            word = words[i]
            if word is not None:
                out[name] = bool(word & mask) != invert
        implausible: list[tuple[int, str]] = []
        for position, name, i, signed, scale, valid in self._words:
            got = words[i]
            if got is None:
                continue
            if signed and got & 0x8000:
                got -= 0x10000
            value = got * scale
            if valid is not None and not valid[0] <= value <= valid[1]:
                implausible.append(
                    (position, f"{name}={value:g} outside {valid[0]:g}..{valid[1]:g}")
                )
                out[name] = None
                continue
            out[name] = round(value)
        for position, name, raw, is_bool, scale, valid in self._values:
            got = raw.get(words)
            if got is None:
                continue
            if is_bool:
                out[name] = bool(got)
                continue
            value = got * scale
            if valid is not None and not valid[0] <= value <= valid[1]:
                implausible.append(
                    (position, f"{name}={value:g} outside {valid[0]:g}..{valid[1]:g}")
                )
                out[name] = None
                continue
            out[name] = round(value)
        if self._mode is not None:
            position, raw, modes = self._mode
            got = raw.get(words)
            if got is not None:
                mode = modes.get(got)
                if mode is None:
                    implausible.append((position, f"mode={got} is not a mapped value"))
                    mode = ServiceMode.UNKNOWN
                out["mode"] = mode
        if self._direction is not None:
            up, down = _flag(self._direction[0], words), _flag(self._direction[1], words)
            if up is not None and down is not None:
                out["direction"] = (
                    Direction.UP if up else Direction.DOWN if down else Direction.NONE
                )
        if self._door is not None:
            door = _door(self._door, words)
            if door is not None:
                out["door"] = door
        if not implausible:
            return Decoded(out, ())
        implausible.sort()
        return Decoded(out, tuple(message for _, message in implausible))


_DOOR_STATES = {
    "open": DoorState.OPEN,
    "closed": DoorState.CLOSED,
    "opening": DoorState.OPENING,
    "closing": DoorState.CLOSING,
}


def _flag(raw: _Raw, words: list[int | None]) -> bool | None:
    """Whether ``raw`` reads non-zero, None when it was not read: the bit itself for the
    one-bit points that door and direction signals nearly always are."""
    if raw.mask:
        word = words[raw.first]
        return None if word is None else bool(word & raw.mask) != raw.invert
    got = raw.get(words)
    return None if got is None else bool(got)


def _door(parts: tuple[tuple[DoorState, _Raw], ...], words: list[int | None]) -> DoorState | None:
    seen = False
    for state, raw in parts:
        on = _flag(raw, words)
        if on is None:
            continue
        seen = True
        if on:
            return state
    return DoorState.PARTLY_OPEN if seen else None


def car_state(t: float, decoded_fields: Iterable[Mapping[str, object]]) -> CarState:
    """A CarState at ``t`` from the fields of one or more sources, later ones winning."""
    merged: dict[str, Any] = {}
    for f in decoded_fields:
        merged.update(f)
    return CarState(t=t, **merged)


def decode_identity(profile: Profile, values: Values) -> ControllerIdentity | None:
    """The identity strings of ``profile`` from ``values``; None when it declares none."""
    if not profile.identity:
        return None
    texts = {"firmware": "", "model": "", "serial": ""}
    for item in profile.identity:
        words = [values.get((item.table, item.address + i), 0) for i in range(item.count)]
        raw = b"".join(w.to_bytes(2, "big") for w in words)
        texts[item.name] = raw.decode("ascii", errors="replace").strip("\x00 ")
    return ControllerIdentity(
        firmware=texts["firmware"],
        model=texts["model"],
        serial=texts["serial"],
        vendor=profile.vendor,
    )
