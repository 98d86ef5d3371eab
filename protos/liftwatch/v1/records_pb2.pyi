import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_NONE: _ClassVar[Direction]
    DIRECTION_UP: _ClassVar[Direction]
    DIRECTION_DOWN: _ClassVar[Direction]

class DoorState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOOR_STATE_UNSPECIFIED: _ClassVar[DoorState]
    DOOR_STATE_OPEN: _ClassVar[DoorState]
    DOOR_STATE_CLOSED: _ClassVar[DoorState]
    DOOR_STATE_OPENING: _ClassVar[DoorState]
    DOOR_STATE_CLOSING: _ClassVar[DoorState]
    DOOR_STATE_PARTLY_OPEN: _ClassVar[DoorState]

class ServiceMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVICE_MODE_UNSPECIFIED: _ClassVar[ServiceMode]
    SERVICE_MODE_STOPPED: _ClassVar[ServiceMode]
    SERVICE_MODE_NORMAL: _ClassVar[ServiceMode]
    SERVICE_MODE_INSPECTION: _ClassVar[ServiceMode]
    SERVICE_MODE_FIRE_RETURN: _ClassVar[ServiceMode]
    SERVICE_MODE_FIREFIGHTER: _ClassVar[ServiceMode]
    SERVICE_MODE_EMERGENCY_POWER: _ClassVar[ServiceMode]
    SERVICE_MODE_EARTHQUAKE: _ClassVar[ServiceMode]
    SERVICE_MODE_UNKNOWN: _ClassVar[ServiceMode]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_SAFETY_CIRCUIT_OPEN: _ClassVar[EventType]
    EVENT_TYPE_DOOR_CLOSE_FAILURE: _ClassVar[EventType]
    EVENT_TYPE_DOOR_OPEN_FAILURE: _ClassVar[EventType]
    EVENT_TYPE_STOPPED_OUTSIDE_DOOR_ZONE: _ClassVar[EventType]
    EVENT_TYPE_UNINTENDED_MOVEMENT: _ClassVar[EventType]
    EVENT_TYPE_RUN_TIME_EXCEEDED: _ClassVar[EventType]
    EVENT_TYPE_POSITION_LOST: _ClassVar[EventType]
    EVENT_TYPE_RESTART_PREVENTED: _ClassVar[EventType]
    EVENT_TYPE_OVERTRAVEL_TOP: _ClassVar[EventType]
    EVENT_TYPE_OVERTRAVEL_BOTTOM: _ClassVar[EventType]
    EVENT_TYPE_OVERSPEED: _ClassVar[EventType]
    EVENT_TYPE_DOOR_OPEN_WHILE_MOVING: _ClassVar[EventType]
    EVENT_TYPE_DOOR_LOCK_BYPASS: _ClassVar[EventType]
    EVENT_TYPE_ENTRAPMENT: _ClassVar[EventType]
    EVENT_TYPE_DOOR_REOPEN_LOOP: _ClassVar[EventType]
    EVENT_TYPE_DOOR_HELD_OPEN: _ClassVar[EventType]
    EVENT_TYPE_DOOR_SLOWING: _ClassVar[EventType]
    EVENT_TYPE_POWER_FAILURE: _ClassVar[EventType]
    EVENT_TYPE_MODE_CHANGE: _ClassVar[EventType]
    EVENT_TYPE_ALARM_BUTTON: _ClassVar[EventType]
    EVENT_TYPE_CONTROLLER_LINK_LOST: _ClassVar[EventType]
    EVENT_TYPE_LEVELLING_FAULT: _ClassVar[EventType]

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    PHASE_RAISED: _ClassVar[Phase]
    PHASE_CLEARED: _ClassVar[Phase]

class EvidenceEnd(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVIDENCE_END_UNSPECIFIED: _ClassVar[EvidenceEnd]
    EVIDENCE_END_POST: _ClassVar[EvidenceEnd]
    EVIDENCE_END_CLEARED: _ClassVar[EvidenceEnd]
    EVIDENCE_END_MAX: _ClassVar[EvidenceEnd]
    EVIDENCE_END_REQUEST: _ClassVar[EvidenceEnd]
    EVIDENCE_END_SHUTDOWN: _ClassVar[EvidenceEnd]
    EVIDENCE_END_RAISE: _ClassVar[EvidenceEnd]

class EvidenceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVIDENCE_STATE_UNSPECIFIED: _ClassVar[EvidenceState]
    EVIDENCE_STATE_DOOR_SHIFT: _ClassVar[EvidenceState]
    EVIDENCE_STATE_DIRECTION_SHIFT: _ClassVar[EvidenceState]
    EVIDENCE_STATE_MODE_SHIFT: _ClassVar[EvidenceState]
    EVIDENCE_STATE_FLAGS_SHIFT: _ClassVar[EvidenceState]
    EVIDENCE_STATE_ABSENT_SHIFT: _ClassVar[EvidenceState]
DIRECTION_UNSPECIFIED: Direction
DIRECTION_NONE: Direction
DIRECTION_UP: Direction
DIRECTION_DOWN: Direction
DOOR_STATE_UNSPECIFIED: DoorState
DOOR_STATE_OPEN: DoorState
DOOR_STATE_CLOSED: DoorState
DOOR_STATE_OPENING: DoorState
DOOR_STATE_CLOSING: DoorState
DOOR_STATE_PARTLY_OPEN: DoorState
SERVICE_MODE_UNSPECIFIED: ServiceMode
SERVICE_MODE_STOPPED: ServiceMode
SERVICE_MODE_NORMAL: ServiceMode
SERVICE_MODE_INSPECTION: ServiceMode
SERVICE_MODE_FIRE_RETURN: ServiceMode
SERVICE_MODE_FIREFIGHTER: ServiceMode
SERVICE_MODE_EMERGENCY_POWER: ServiceMode
SERVICE_MODE_EARTHQUAKE: ServiceMode
SERVICE_MODE_UNKNOWN: ServiceMode
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_SAFETY_CIRCUIT_OPEN: EventType
EVENT_TYPE_DOOR_CLOSE_FAILURE: EventType
EVENT_TYPE_DOOR_OPEN_FAILURE: EventType
EVENT_TYPE_STOPPED_OUTSIDE_DOOR_ZONE: EventType
EVENT_TYPE_UNINTENDED_MOVEMENT: EventType
EVENT_TYPE_RUN_TIME_EXCEEDED: EventType
EVENT_TYPE_POSITION_LOST: EventType
EVENT_TYPE_RESTART_PREVENTED: EventType
EVENT_TYPE_OVERTRAVEL_TOP: EventType
EVENT_TYPE_OVERTRAVEL_BOTTOM: EventType
EVENT_TYPE_OVERSPEED: EventType
EVENT_TYPE_DOOR_OPEN_WHILE_MOVING: EventType
EVENT_TYPE_DOOR_LOCK_BYPASS: EventType
EVENT_TYPE_ENTRAPMENT: EventType
EVENT_TYPE_DOOR_REOPEN_LOOP: EventType
EVENT_TYPE_DOOR_HELD_OPEN: EventType
EVENT_TYPE_DOOR_SLOWING: EventType
EVENT_TYPE_POWER_FAILURE: EventType
EVENT_TYPE_MODE_CHANGE: EventType
EVENT_TYPE_ALARM_BUTTON: EventType
EVENT_TYPE_CONTROLLER_LINK_LOST: EventType
EVENT_TYPE_LEVELLING_FAULT: EventType
PHASE_UNSPECIFIED: Phase
PHASE_RAISED: Phase
PHASE_CLEARED: Phase
EVIDENCE_END_UNSPECIFIED: EvidenceEnd
EVIDENCE_END_POST: EvidenceEnd
EVIDENCE_END_CLEARED: EvidenceEnd
EVIDENCE_END_MAX: EvidenceEnd
EVIDENCE_END_REQUEST: EvidenceEnd
EVIDENCE_END_SHUTDOWN: EvidenceEnd
EVIDENCE_END_RAISE: EvidenceEnd
EVIDENCE_STATE_UNSPECIFIED: EvidenceState
EVIDENCE_STATE_DOOR_SHIFT: EvidenceState
EVIDENCE_STATE_DIRECTION_SHIFT: EvidenceState
EVIDENCE_STATE_MODE_SHIFT: EvidenceState
EVIDENCE_STATE_FLAGS_SHIFT: EvidenceState
EVIDENCE_STATE_ABSENT_SHIFT: EvidenceState

class CarState(_message.Message):
    __slots__ = ("floor", "position_mm", "speed_mm_s", "direction", "moving", "door_zone", "levelled", "door", "door_lock_closed", "safety_circuit_closed", "occupied", "load_percent", "alarm_button", "overload", "mode", "fault_code", "mains_ok", "reopen_active")
    FLOOR_FIELD_NUMBER: _ClassVar[int]
    POSITION_MM_FIELD_NUMBER: _ClassVar[int]
    SPEED_MM_S_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MOVING_FIELD_NUMBER: _ClassVar[int]
    DOOR_ZONE_FIELD_NUMBER: _ClassVar[int]
    LEVELLED_FIELD_NUMBER: _ClassVar[int]
    DOOR_FIELD_NUMBER: _ClassVar[int]
    DOOR_LOCK_CLOSED_FIELD_NUMBER: _ClassVar[int]
    SAFETY_CIRCUIT_CLOSED_FIELD_NUMBER: _ClassVar[int]
    OCCUPIED_FIELD_NUMBER: _ClassVar[int]
    LOAD_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ALARM_BUTTON_FIELD_NUMBER: _ClassVar[int]
    OVERLOAD_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FAULT_CODE_FIELD_NUMBER: _ClassVar[int]
    MAINS_OK_FIELD_NUMBER: _ClassVar[int]
    REOPEN_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    floor: int
    position_mm: int
    speed_mm_s: int
    direction: Direction
    moving: bool
    door_zone: bool
    levelled: bool
    door: DoorState
    door_lock_closed: bool
    safety_circuit_closed: bool
    occupied: bool
    load_percent: int
    alarm_button: bool
    overload: bool
    mode: ServiceMode
    fault_code: int
    mains_ok: bool
    reopen_active: bool
    def __init__(self, floor: _Optional[int] = ..., position_mm: _Optional[int] = ..., speed_mm_s: _Optional[int] = ..., direction: _Optional[_Union[Direction, str]] = ..., moving: _Optional[bool] = ..., door_zone: _Optional[bool] = ..., levelled: _Optional[bool] = ..., door: _Optional[_Union[DoorState, str]] = ..., door_lock_closed: _Optional[bool] = ..., safety_circuit_closed: _Optional[bool] = ..., occupied: _Optional[bool] = ..., load_percent: _Optional[int] = ..., alarm_button: _Optional[bool] = ..., overload: _Optional[bool] = ..., mode: _Optional[_Union[ServiceMode, str]] = ..., fault_code: _Optional[int] = ..., mains_ok: _Optional[bool] = ..., reopen_active: _Optional[bool] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "type", "phase", "onset", "floor", "reason", "gb_code", "at_landing", "reason_code", "reason_params")
    class ReasonParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ONSET_FIELD_NUMBER: _ClassVar[int]
    FLOOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    GB_CODE_FIELD_NUMBER: _ClassVar[int]
    AT_LANDING_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_PARAMS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: EventType
    phase: Phase
    onset: _timestamp_pb2.Timestamp
    floor: int
    reason: str
    gb_code: int
    at_landing: bool
    reason_code: str
    reason_params: _containers.ScalarMap[str, str]
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[_Union[EventType, str]] = ..., phase: _Optional[_Union[Phase, str]] = ..., onset: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., floor: _Optional[int] = ..., reason: _Optional[str] = ..., gb_code: _Optional[int] = ..., at_landing: _Optional[bool] = ..., reason_code: _Optional[str] = ..., reason_params: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Counters(_message.Message):
    __slots__ = ("trips", "door_cycles", "run_hours", "door_open_median_ms", "door_close_median_ms", "reopenings_by_landing", "door_open_trend", "door_close_trend")
    class ReopeningsByLandingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    TRIPS_FIELD_NUMBER: _ClassVar[int]
    DOOR_CYCLES_FIELD_NUMBER: _ClassVar[int]
    RUN_HOURS_FIELD_NUMBER: _ClassVar[int]
    DOOR_OPEN_MEDIAN_MS_FIELD_NUMBER: _ClassVar[int]
    DOOR_CLOSE_MEDIAN_MS_FIELD_NUMBER: _ClassVar[int]
    REOPENINGS_BY_LANDING_FIELD_NUMBER: _ClassVar[int]
    DOOR_OPEN_TREND_FIELD_NUMBER: _ClassVar[int]
    DOOR_CLOSE_TREND_FIELD_NUMBER: _ClassVar[int]
    trips: int
    door_cycles: int
    run_hours: int
    door_open_median_ms: int
    door_close_median_ms: int
    reopenings_by_landing: _containers.ScalarMap[int, int]
    door_open_trend: float
    door_close_trend: float
    def __init__(self, trips: _Optional[int] = ..., door_cycles: _Optional[int] = ..., run_hours: _Optional[int] = ..., door_open_median_ms: _Optional[int] = ..., door_close_median_ms: _Optional[int] = ..., reopenings_by_landing: _Optional[_Mapping[int, int]] = ..., door_open_trend: _Optional[float] = ..., door_close_trend: _Optional[float] = ...) -> None: ...

class LinkStatus(_message.Message):
    __slots__ = ("up", "requests", "responses", "timeouts", "crc_errors", "exception_responses", "implausible_values", "latency_ms_p50")
    UP_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    CRC_ERRORS_FIELD_NUMBER: _ClassVar[int]
    EXCEPTION_RESPONSES_FIELD_NUMBER: _ClassVar[int]
    IMPLAUSIBLE_VALUES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_P50_FIELD_NUMBER: _ClassVar[int]
    up: bool
    requests: int
    responses: int
    timeouts: int
    crc_errors: int
    exception_responses: int
    implausible_values: int
    latency_ms_p50: int
    def __init__(self, up: _Optional[bool] = ..., requests: _Optional[int] = ..., responses: _Optional[int] = ..., timeouts: _Optional[int] = ..., crc_errors: _Optional[int] = ..., exception_responses: _Optional[int] = ..., implausible_values: _Optional[int] = ..., latency_ms_p50: _Optional[int] = ...) -> None: ...

class ControllerInfo(_message.Message):
    __slots__ = ("vendor", "model", "firmware", "serial", "profile")
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FIRMWARE_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    vendor: str
    model: str
    firmware: str
    serial: str
    profile: str
    def __init__(self, vendor: _Optional[str] = ..., model: _Optional[str] = ..., firmware: _Optional[str] = ..., serial: _Optional[str] = ..., profile: _Optional[str] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("seq", "unit_id", "time", "car_state", "event", "counters", "link_status", "controller_info", "evidence")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    CAR_STATE_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    LINK_STATUS_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_INFO_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    unit_id: str
    time: _timestamp_pb2.Timestamp
    car_state: CarState
    event: Event
    counters: Counters
    link_status: LinkStatus
    controller_info: ControllerInfo
    evidence: Evidence
    def __init__(self, seq: _Optional[int] = ..., unit_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., car_state: _Optional[_Union[CarState, _Mapping]] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., counters: _Optional[_Union[Counters, _Mapping]] = ..., link_status: _Optional[_Union[LinkStatus, _Mapping]] = ..., controller_info: _Optional[_Union[ControllerInfo, _Mapping]] = ..., evidence: _Optional[_Union[Evidence, _Mapping]] = ...) -> None: ...

class Evidence(_message.Message):
    __slots__ = ("event_id", "request_id", "start", "onset", "raised", "cleared", "end", "truncated", "pre_s", "post_s", "max_s", "samples", "present", "time_delta_ms", "position_mm_delta", "speed_mm_s_delta", "load_percent_delta", "floor_delta", "fault_code_delta", "state_run", "state_value")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    ONSET_FIELD_NUMBER: _ClassVar[int]
    RAISED_FIELD_NUMBER: _ClassVar[int]
    CLEARED_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    PRE_S_FIELD_NUMBER: _ClassVar[int]
    POST_S_FIELD_NUMBER: _ClassVar[int]
    MAX_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    TIME_DELTA_MS_FIELD_NUMBER: _ClassVar[int]
    POSITION_MM_DELTA_FIELD_NUMBER: _ClassVar[int]
    SPEED_MM_S_DELTA_FIELD_NUMBER: _ClassVar[int]
    LOAD_PERCENT_DELTA_FIELD_NUMBER: _ClassVar[int]
    FLOOR_DELTA_FIELD_NUMBER: _ClassVar[int]
    FAULT_CODE_DELTA_FIELD_NUMBER: _ClassVar[int]
    STATE_RUN_FIELD_NUMBER: _ClassVar[int]
    STATE_VALUE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    request_id: str
    start: _timestamp_pb2.Timestamp
    onset: _timestamp_pb2.Timestamp
    raised: _timestamp_pb2.Timestamp
    cleared: _timestamp_pb2.Timestamp
    end: EvidenceEnd
    truncated: bool
    pre_s: int
    post_s: int
    max_s: int
    samples: int
    present: int
    time_delta_ms: _containers.RepeatedScalarFieldContainer[int]
    position_mm_delta: _containers.RepeatedScalarFieldContainer[int]
    speed_mm_s_delta: _containers.RepeatedScalarFieldContainer[int]
    load_percent_delta: _containers.RepeatedScalarFieldContainer[int]
    floor_delta: _containers.RepeatedScalarFieldContainer[int]
    fault_code_delta: _containers.RepeatedScalarFieldContainer[int]
    state_run: _containers.RepeatedScalarFieldContainer[int]
    state_value: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, event_id: _Optional[str] = ..., request_id: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., onset: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., raised: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cleared: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[EvidenceEnd, str]] = ..., truncated: _Optional[bool] = ..., pre_s: _Optional[int] = ..., post_s: _Optional[int] = ..., max_s: _Optional[int] = ..., samples: _Optional[int] = ..., present: _Optional[int] = ..., time_delta_ms: _Optional[_Iterable[int]] = ..., position_mm_delta: _Optional[_Iterable[int]] = ..., speed_mm_s_delta: _Optional[_Iterable[int]] = ..., load_percent_delta: _Optional[_Iterable[int]] = ..., floor_delta: _Optional[_Iterable[int]] = ..., fault_code_delta: _Optional[_Iterable[int]] = ..., state_run: _Optional[_Iterable[int]] = ..., state_value: _Optional[_Iterable[int]] = ...) -> None: ...
