"""How one car's controller answers on Modbus while link faults are injected.

A `Link` holds the link faults of one car and turns them into a `LinkDecision` for each
request; the transports (`rtu.py`, `server.py`) carry the decision out as far as their
framing allows. Time here is the transport's clock (the event loop's), passed in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hil_tests.emulator.faults import FAULTS, Fault, FaultKind, FaultOptions

MAX_SLAVE_ID = 247


class LinkAction(enum.Enum):
    """What to send in answer to one request."""

    ANSWER = "answer"
    SILENT = "silent"
    EXCEPTION = "exception"  # 0x04 server device failure
    CRC_ERROR = "crc_error"
    GARBAGE = "garbage"
    WRONG_SLAVE = "wrong_slave"


@dataclass(frozen=True)
class LinkDecision:
    """The action, the extra delay before it (s), and its parameters."""

    action: LinkAction
    delay_s: float = 0.0
    slave: int = 0
    garbage_length: int = 0


ON_TIME = LinkDecision(LinkAction.ANSWER)

# When several faults are active, the first of these that is active decides; a late answer
# delays whatever is sent.
_PRECEDENCE = (
    (Fault.NO_ANSWER, LinkAction.SILENT),
    (Fault.GARBAGE, LinkAction.GARBAGE),
    (Fault.CRC_ERROR, LinkAction.CRC_ERROR),
    (Fault.WRONG_SLAVE, LinkAction.WRONG_SLAVE),
    (Fault.EXCEPTION_RESPONSE, LinkAction.EXCEPTION),
)


def is_link_fault(fault: Fault) -> bool:
    """True for faults the link layer acts on (reboot included)."""
    return FAULTS[fault].kind is not FaultKind.CAR


class Link:
    """The Modbus link of car `slave`: its injected link faults and reboot silence."""

    def __init__(self, slave: int) -> None:
        """A healthy link for slave id `slave`."""
        self.slave = slave
        self._faults: dict[Fault, FaultOptions] = {}
        self._booting_until: float | None = None

    def faults(self, now: float) -> frozenset[Fault]:
        """Link faults active at `now` (reboot while the boot lasts)."""
        active = set(self._faults)
        if self.booting(now):
            active.add(Fault.REBOOT)
        return frozenset(active)

    def booting(self, now: float) -> bool:
        """True while a reboot keeps the controller silent."""
        return self._booting_until is not None and now < self._booting_until

    def inject(self, fault: Fault, options: FaultOptions) -> None:
        """Activate link fault `fault` with `options` (re-injecting replaces its options)."""
        if fault is Fault.REBOOT:
            raise ValueError("start a reboot with reboot(), it needs the time")
        if not is_link_fault(fault):
            raise ValueError(f"{fault.value} is not a link fault")
        self._faults[fault] = options

    def reboot(self, now: float, silent_s: float) -> None:
        """Go silent from `now` for `silent_s` seconds."""
        self._booting_until = now + silent_s

    def clear(self, fault: Fault) -> None:
        """Deactivate `fault`; clearing a reboot ends its silence at once."""
        if fault is Fault.REBOOT:
            self._booting_until = None
        self._faults.pop(fault, None)

    def decide(self, now: float) -> LinkDecision:
        """How to answer a request for this slave arriving at `now`."""
        if self.booting(now):
            return LinkDecision(LinkAction.SILENT)
        late = self._faults.get(Fault.LATE_ANSWER)
        delay_s = late.delay_ms / 1000.0 if late is not None else 0.0
        for fault, action in _PRECEDENCE:
            options = self._faults.get(fault)
            if options is None:
                continue
            if action is LinkAction.WRONG_SLAVE:
                other = (
                    options.slave if options.slave is not None else self.slave % MAX_SLAVE_ID + 1
                )
                return LinkDecision(action, delay_s, slave=other)
            return LinkDecision(action, delay_s, garbage_length=options.length)
        return LinkDecision(LinkAction.ANSWER, delay_s)
