"""The codec of `Evidence`: flight-recorder samples to the columnar wire form and back.

Both the agent (which encodes what its recorder froze) and the fleet (which decodes what
it stores and serves) use this one module, so it imports only the generated records
module and the standard library.

The wire form (records.proto, `message Evidence` and `enum EvidenceState`):

- times are milliseconds: ``start`` is the first sample's time, ``time_delta_ms[i]`` the
  milliseconds since the sample before (the first: since ``start``, so 0);
- the numeric columns (position, speed, load, floor, fault code) are deltas from the
  sample before (the first: from 0); a column no sample has a value for is left empty
  and its bit in ``present`` clear;
- everything else (door, direction, mode, eleven flags including link_up, and which
  filled columns have no value in a sample) is packed into one integer per sample and
  sent as runs (``state_value[k]`` holds for ``state_run[k]`` samples).

Measured (tests/protos/test_evidence_codec.py): a car standing still costs 6.0 bytes a
sample (a byte for the time delta and one per filled column, a zero delta included); a
car moving at 1 m/s, every number changing every poll, 7.4 bytes a sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, groupby, pairwise

from protos.liftwatch.v1 import records_pb2

__all__ = [
    "COLUMNS",
    "FLAGS",
    "EvidenceError",
    "EvidenceSample",
    "check_evidence",
    "decode_samples",
    "encode_columns",
    "encode_samples",
    "pack_state",
]


@dataclass(frozen=True, slots=True)
class EvidenceSample:
    """One decoded sample of one car, as the recorder keeps it and Evidence carries it."""

    time_us: int  # UTC microseconds since the epoch (ms resolution on the wire)
    link_up: bool  # False: the controller did not answer; every value below is None
    position_mm: int | None
    speed_mm_s: int | None
    load_percent: int | None
    floor: int | None
    fault_code: int | None
    door: int  # records_pb2.DoorState value (0 = unknown)
    direction: int  # records_pb2.Direction value
    mode: int  # records_pb2.ServiceMode value
    moving: bool | None
    door_zone: bool | None
    levelled: bool | None
    door_lock_closed: bool | None
    safety_circuit_closed: bool | None
    occupied: bool | None
    alarm_button: bool | None
    overload: bool | None
    mains_ok: bool | None
    reopen_active: bool | None


class EvidenceError(ValueError):
    """A malformed Evidence (or samples that cannot be encoded); the message names the
    column or field at fault and where."""


# The numeric columns in the order of Evidence.present's bits: (sample field, wire
# column, lowest value, highest value). The ranges are those of the CarState fields the
# columns come from (sint32 / uint32).
_INT32 = (-(2**31), 2**31 - 1)
_UINT32 = (0, 2**32 - 1)
COLUMNS: tuple[tuple[str, str, int, int], ...] = (
    ("position_mm", "position_mm_delta", *_INT32),
    ("speed_mm_s", "speed_mm_s_delta", *_UINT32),
    ("load_percent", "load_percent_delta", *_UINT32),
    ("floor", "floor_delta", *_INT32),
    ("fault_code", "fault_code_delta", *_UINT32),
)
# The flags in the order of EvidenceState (link_up, always known, comes last).
FLAGS = (
    "moving",
    "door_zone",
    "levelled",
    "door_lock_closed",
    "safety_circuit_closed",
    "occupied",
    "alarm_button",
    "overload",
    "mains_ok",
    "reopen_active",
)
_DOOR_SHIFT: int = int(records_pb2.EVIDENCE_STATE_DOOR_SHIFT)
_DIRECTION_SHIFT: int = int(records_pb2.EVIDENCE_STATE_DIRECTION_SHIFT)
_MODE_SHIFT: int = int(records_pb2.EVIDENCE_STATE_MODE_SHIFT)
_FLAGS_SHIFT: int = int(records_pb2.EVIDENCE_STATE_FLAGS_SHIFT)
_ABSENT_SHIFT: int = int(records_pb2.EVIDENCE_STATE_ABSENT_SHIFT)
_LINK_KNOWN = 1 << (_FLAGS_SHIFT + 2 * len(FLAGS))
_LINK_UP = _LINK_KNOWN << 1
# The enums' widths in the packed value and their highest defined value.
_DOOR_MASK, _DOOR_MAX = 0b111, max(records_pb2.DoorState.values())
_DIRECTION_MASK, _DIRECTION_MAX = 0b11, max(records_pb2.Direction.values())
_MODE_MASK, _MODE_MAX = 0b1111, max(records_pb2.ServiceMode.values())
_SINT32 = _INT32  # a delta must fit the wire's sint32
_ALL_COLUMNS = (1 << len(COLUMNS)) - 1
_UINT32_MAX = _UINT32[1]


def pack_state(
    door: int,
    direction: int,
    mode: int,
    link_up: bool,
    flags: Sequence[bool | None],
    absent: int = 0,
) -> int:
    """The EvidenceState integer of one sample: ``flags`` in the order of `FLAGS`,
    ``absent`` with bit n set when column n (`COLUMNS`) has no value in the sample.

    The enum values are not checked here (`encode_samples` checks them)."""
    value = (
        (door << _DOOR_SHIFT)
        | (direction << _DIRECTION_SHIFT)
        | (mode << _MODE_SHIFT)
        | _LINK_KNOWN
        | (absent << _ABSENT_SHIFT)
    )
    if link_up:
        value |= _LINK_UP
    bit = 1 << _FLAGS_SHIFT
    for flag in flags:
        if flag is not None:
            value |= bit
            if flag:
                value |= bit << 1
        bit <<= 2
    return value


def encode_samples(samples: Sequence[EvidenceSample], into: records_pb2.Evidence) -> None:
    """Fill ``into.start``, ``samples``, ``present`` and every column from ``samples``
    (oldest first), replacing what those fields held; the other fields of ``into`` (ids,
    onset, end, ...) are left as they are.

    Raises `EvidenceError` (naming the field and the sample's index) when the samples go
    back in time, a value is outside its wire range, or an enum value does not fit its
    bits: samples that `decode_samples` could not give back are never written.
    """
    numbers: list[list[int]] = [[] for _ in COLUMNS]
    states: list[int] = []
    for i, sample in enumerate(samples):
        for field, top in (
            ("door", _DOOR_MAX),
            ("direction", _DIRECTION_MAX),
            ("mode", _MODE_MAX),
        ):
            got = getattr(sample, field)
            if not 0 <= got <= top:
                raise EvidenceError(f"{field} of sample {i} is {got}, not a value of its enum")
        absent = 0
        for n, (name, _, low, high) in enumerate(COLUMNS):
            value = getattr(sample, name)
            if value is None:
                absent |= 1 << n
                value = 0
            elif not low <= value <= high:
                raise EvidenceError(f"{name} of sample {i} is {value}, outside [{low}, {high}]")
            numbers[n].append(value)
        states.append(
            pack_state(
                sample.door,
                sample.direction,
                sample.mode,
                sample.link_up,
                [getattr(sample, name) for name in FLAGS],
                absent,
            )
        )
    encode_columns([s.time_us for s in samples], numbers, states, into)


def encode_columns(
    times_us: Sequence[int],
    numbers: Sequence[Sequence[int]],
    states: Sequence[int],
    into: records_pb2.Evidence,
) -> None:
    """`encode_samples` for samples kept as columns (the agent's recorder keeps them so):
    ``times_us`` oldest first, ``numbers[n]`` the values of column n (`COLUMNS`; any value
    where the sample has none), ``states`` the samples' `pack_state` integers, whose
    absent bits say which numbers are none. Values are trusted to be in range; raises
    `EvidenceError` when the times go back or a change does not fit the wire's delta.
    """
    for name in ("start", "time_delta_ms", "state_run", "state_value"):
        into.ClearField(name)
    for _, column, _, _ in COLUMNS:
        into.ClearField(column)
    count = len(times_us)
    into.samples = count
    into.present = 0
    if not count:
        return
    # Comprehensions rather than one loop per sample: the agent cuts windows of thousands
    # of samples on a Raspberry Pi while it polls (a 9,000-sample window: ~33 ms on the
    # loaded 2-core test machine, of which half is the list work below).
    times_ms = [t // 1000 for t in times_us]
    into.start.FromMilliseconds(times_ms[0])
    deltas = [b - a for a, b in pairwise(times_ms)]
    deltas.insert(0, 0)
    if min(deltas) < 0 or max(deltas) > _UINT32_MAX:
        i = next(i for i, d in enumerate(deltas) if not 0 <= d <= _UINT32_MAX)
        raise EvidenceError(
            f"time_us of sample {i} is {deltas[i]} ms after the sample before "
            f"(samples must be oldest first, less than 49 days apart)"
        )
    into.time_delta_ms.extend(deltas)
    # Which columns every sample lacks (left out: an empty column says it for all), and
    # which some sample lacks (those take the slow path that carries the running value).
    absent_all = absent_any = (states[0] >> _ABSENT_SHIFT) & _ALL_COLUMNS
    for state in states:
        absent = state >> _ABSENT_SHIFT
        absent_all &= absent
        absent_any |= absent
    present = _ALL_COLUMNS & ~absent_all
    for n, (name, column, _, _) in enumerate(COLUMNS):
        if not present >> n & 1:
            continue
        values = numbers[n]
        if not absent_any >> n & 1:
            out = [b - a for a, b in pairwise(values)]
            out.insert(0, values[0])
        else:
            out = _deltas_with_gaps(values, states, 1 << (_ABSENT_SHIFT + n))
        if min(out) < _SINT32[0] or max(out) > _SINT32[1]:
            i = next(i for i, d in enumerate(out) if not _SINT32[0] <= d <= _SINT32[1])
            raise EvidenceError(
                f"{name} of sample {i} changes by {out[i]}, more than {column} can carry"
            )
        getattr(into, column).extend(out)
    into.present = present
    masked = states if not absent_all else [s & ~(absent_all << _ABSENT_SHIFT) for s in states]
    runs: list[int] = []
    run_values: list[int] = []
    for value, run in groupby(masked):
        run_values.append(value)
        runs.append(sum(1 for _ in run))
    into.state_run.extend(runs)
    into.state_value.extend(run_values)


def _deltas_with_gaps(values: Sequence[int], states: Sequence[int], bit: int) -> list[int]:
    """The deltas of a column some samples have no value in (their absent ``bit`` set):
    0 there, and the running value carried over them."""
    running = 0
    out: list[int] = []
    for value, state in zip(values, states, strict=True):
        if state & bit:
            out.append(0)
            continue
        out.append(value - running)
        running = value
    return out


def check_evidence(evidence: records_pb2.Evidence) -> None:
    """Raise `EvidenceError` exactly when `decode_samples` would, without building the
    samples: the fleet checks every Evidence an agent sends with this, at a cost linear
    in the columns' lengths but with no object per sample (a 1 MB batch of a million
    one-byte samples took the full decode 10 s and 280 MB; tests/security/
    test_evidence_abuse.py)."""
    _checked_columns(evidence)


def _checked_columns(evidence: records_pb2.Evidence) -> list[list[int] | None]:
    """The numeric columns' values of ``evidence`` (None for a column it does not fill),
    after every check `decode_samples` promises; raises `EvidenceError`."""
    count = evidence.samples
    if len(evidence.time_delta_ms) != count:
        raise EvidenceError(
            f"time_delta_ms has {len(evidence.time_delta_ms)} values for {count} samples"
        )
    # The cheap checks (lengths, runs, the state values: one per run) come before the
    # columns' sums, so a batch lying about its sample count costs no arithmetic.
    if len(evidence.state_run) != len(evidence.state_value):
        raise EvidenceError(
            f"state_run has {len(evidence.state_run)} runs but state_value "
            f"{len(evidence.state_value)} values"
        )
    if any(run == 0 for run in evidence.state_run):
        raise EvidenceError("state_run holds a run of 0 samples")
    total = sum(evidence.state_run)
    if total != count:
        raise EvidenceError(f"state_run adds up to {total} samples, not {count}")
    for k, value in enumerate(evidence.state_value):
        for field, got, top in (
            ("door", value >> _DOOR_SHIFT & _DOOR_MASK, _DOOR_MAX),
            ("direction", value >> _DIRECTION_SHIFT & _DIRECTION_MASK, _DIRECTION_MAX),
            ("mode", value >> _MODE_SHIFT & _MODE_MASK, _MODE_MAX),
        ):
            if got > top:
                raise EvidenceError(
                    f"state_value[{k}] holds {field} {got}, not a value of its enum"
                )
        if not value & _LINK_KNOWN:
            raise EvidenceError(f"state_value[{k}] has link_up unknown (it is always known)")
    columns: list[list[int] | None] = []
    for n, (name, column, low, high) in enumerate(COLUMNS):
        deltas = getattr(evidence, column)
        if not evidence.present >> n & 1:
            if len(deltas):
                raise EvidenceError(
                    f"{column} has {len(deltas)} values but present does not fill it"
                )
            columns.append(None)
            continue
        if len(deltas) != count:
            raise EvidenceError(f"{column} has {len(deltas)} values for {count} samples")
        values = list(accumulate(deltas))
        if values and (min(values) < low or max(values) > high):
            i, value = next((i, v) for i, v in enumerate(values) if not low <= v <= high)
            raise EvidenceError(
                f"{column} gives {name} {value} at sample {i}, outside [{low}, {high}]"
            )
        columns.append(values)
    return columns


def decode_samples(evidence: records_pb2.Evidence) -> list[EvidenceSample]:
    """The samples of ``evidence``, oldest first.

    Raises `EvidenceError` (never anything else) when a column's length differs from
    ``samples``, the state runs do not add up to ``samples``, or a value is out of range
    (an enum value that is not defined, a number outside its CarState field's range):
    a malformed record, named, never a crash. Bits of ``present`` and of the state values
    that this version does not define are ignored (a later writer's additions).
    """
    columns = _checked_columns(evidence)
    start_us = evidence.start.seconds * 1_000_000 + evidence.start.nanos // 1000
    times = [start_us + 1000 * ms for ms in accumulate(evidence.time_delta_ms)]
    out: list[EvidenceSample] = []
    i = 0
    for run, value in zip(evidence.state_run, evidence.state_value, strict=True):
        door = value >> _DOOR_SHIFT & _DOOR_MASK
        direction = value >> _DIRECTION_SHIFT & _DIRECTION_MASK
        mode = value >> _MODE_SHIFT & _MODE_MASK
        link_up = bool(value & _LINK_UP)
        flags: list[bool | None] = []
        bit = 1 << _FLAGS_SHIFT
        for _ in FLAGS:
            flags.append(bool(value & bit << 1) if value & bit else None)
            bit <<= 2
        absent = [bool(value >> (_ABSENT_SHIFT + n) & 1) for n in range(len(COLUMNS))]
        for j in range(i, i + run):
            position, speed, load, floor, fault = (
                None if col is None or absent[n] else col[j] for n, col in enumerate(columns)
            )
            out.append(
                EvidenceSample(
                    times[j],
                    link_up,
                    position,
                    speed,
                    load,
                    floor,
                    fault,
                    door,
                    direction,
                    mode,
                    *flags,
                )
            )
        i += run
    return out
