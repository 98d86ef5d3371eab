"""The cars of one emulator, their identities, and the clock that drives them."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from hil_tests.emulator.car import Car, CarConfig, CarSnapshot
from hil_tests.emulator.faults import FAULTS, NO_OPTIONS, Fault, FaultKind, FaultOptions
from hil_tests.emulator.link import Link
from hil_tests.emulator.registers import Identity, encode_car
from hil_tests.emulator.traffic import Traffic

MAX_CARS = 247  # Modbus slave ids 1..247


@dataclass(frozen=True)
class GroupConfig:
    """What an emulator serves: N identical cars with their identity strings."""

    cars: int = 4
    car: CarConfig = field(default_factory=CarConfig)
    seed: int = 0
    model: str = "RC-5000"
    firmware: str = "5.1.3"
    serial_prefix: str = "LW"
    speedup: float = 1.0
    traffic: Traffic = Traffic.MIXED

    def __post_init__(self) -> None:
        if not 1 <= self.cars <= MAX_CARS:
            raise ValueError(f"cars must be in 1..{MAX_CARS}, got {self.cars}")
        if not self.speedup > 0:
            raise ValueError(f"speedup must be positive, got {self.speedup}")
        for car in range(1, self.cars + 1):
            self.identity(car)  # fails early on strings that do not fit the map

    def identity(self, car: int) -> Identity:
        """Identity strings of car `car` (1-based); the serial is prefix + 6-digit number."""
        return Identity(
            firmware=self.firmware, model=self.model, serial=f"{self.serial_prefix}{car:06d}"
        )


class CarGroup:
    """N cars advanced together by an explicit monotonic clock reading.

    `advance_to(now)` is the only entry point that moves time: the caller passes in its
    clock (for the server, the event loop's `loop.time()`), scaled by `speedup`.
    """

    def __init__(self, config: GroupConfig, now: float) -> None:
        """Create the cars, parked at seeded landings, with `now` as the starting reading."""
        self.config = config
        seeder = random.Random(config.seed)
        self.cars: dict[int, Car] = {}
        self.identities: dict[int, Identity] = {}
        self.links: dict[int, Link] = {}
        for number in range(1, config.cars + 1):
            rng = random.Random(seeder.getrandbits(64))
            start = rng.randint(1, config.car.landings)
            self.cars[number] = Car(config.car, rng, start_landing=start, traffic=config.traffic)
            self.identities[number] = config.identity(number)
            self.links[number] = Link(number)
        self._last = now

    @property
    def now(self) -> float:
        """The clock reading of the last advance (the time injections take effect)."""
        return self._last

    def advance_to(self, now: float) -> None:
        """Step every car by the (scaled) time since the last call; earlier readings are ignored."""
        if now <= self._last:
            return
        dt = (now - self._last) * self.config.speedup
        self._last = now
        for car in self.cars.values():
            car.step(dt)

    def car(self, number: int) -> Car:
        """Car `number` (1-based), or ValueError saying which numbers exist."""
        if isinstance(number, bool) or not isinstance(number, int) or number not in self.cars:
            raise ValueError(f"car must be an integer in 1..{len(self.cars)}, got {number!r}")
        return self.cars[number]

    def inject(self, number: int, fault: Fault, options: FaultOptions = NO_OPTIONS) -> None:
        """Inject `fault` into car `number`: into its link, its car model, or both (reboot).

        A reboot silences the link for `options.silent_s` of clock time, restarts the car's
        controller and, with `options.firmware`, changes the firmware string.
        """
        car = self.car(number)
        kind = FAULTS[fault].kind
        if fault is Fault.REBOOT:
            self.links[number].reboot(self._last, options.silent_s)
            car.reboot(options.silent_s * self.config.speedup)
            if options.firmware is not None:
                self.identities[number] = dataclasses.replace(
                    self.identities[number], firmware=options.firmware
                )
        elif kind is FaultKind.LINK:
            self.links[number].inject(fault, options)
        else:
            car.inject(fault, options)

    def clear(self, number: int, fault: Fault) -> None:
        """Clear `fault` from car `number` (its link and its car model)."""
        car = self.car(number)
        self.links[number].clear(fault)
        car.clear(fault)

    def faults(self, number: int) -> frozenset[Fault]:
        """Faults active on car `number`, link faults included."""
        return self.car(number).faults | self.links[number].faults(self._last)

    def snapshot(self, number: int) -> CarSnapshot:
        """The current snapshot of car `number`."""
        return self.car(number).snapshot()

    def registers(self, number: int) -> list[int]:
        """The 44 reference-map registers of car `number` as of the last advance."""
        return encode_car(self.snapshot(number), self.identities[number])
