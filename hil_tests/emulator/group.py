"""The cars of one emulator, their group controller, their identities, and the clock.

The cars share one `dispatch.GroupController` (passengers, hall calls, assignment), so
they are no longer independent: advance them together with `CarGroup.step(dt)` (or
`advance_to(now)` from a clock), which moves the group's arrivals and every car by the
same substeps. Idle cars cost next to nothing (`Car.quiet`), and registers of a car whose
snapshot did not change are served from a cache.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import NamedTuple

from hil_tests.emulator.car import MAX_SUBSTEP_S, Car, CarConfig, CarSnapshot
from hil_tests.emulator.cycle import CYCLE_PHASES, Predicate, Watch, cycle_phase, signature
from hil_tests.emulator.dispatch import GroupController
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


class Armed(NamedTuple):
    """A fault waiting for its car to reach a phase of its cycle (`CarGroup.inject_at`)."""

    fault: Fault
    options: FaultOptions
    phase: str


class CarGroup:
    """N cars and their group controller, advanced together on simulated time.

    `step(dt)` advances by `dt` simulated seconds; `advance_to(now)` takes a reading of
    the caller's monotonic clock (for the server, the event loop's `loop.time()`), scales
    the time since the last reading by `speedup` and steps by that.
    """

    def __init__(self, config: GroupConfig, now: float) -> None:
        """Create the cars, parked at seeded landings, with `now` as the starting reading."""
        self.config = config
        seeder = random.Random(config.seed)
        self.controller = GroupController(
            config.traffic, random.Random(seeder.getrandbits(64)), config.car.landings
        )
        self.cars: dict[int, Car] = {}
        self.identities: dict[int, Identity] = {}
        self.links: dict[int, Link] = {}
        for number in range(1, config.cars + 1):
            rng = random.Random(seeder.getrandbits(64))
            start = rng.randint(1, config.car.landings)
            self.cars[number] = Car(
                config.car, rng, start_landing=start, group=self.controller, number=number
            )
            self.identities[number] = config.identity(number)
            self.links[number] = Link(number)
        self._last = now
        self._time = 0.0
        self._cars = tuple(self.cars.values())
        # number -> (snapshot, identity, registers) of the last encode
        self._encoded: dict[int, tuple[CarSnapshot, Identity, list[int]]] = {}
        # Judged after every substep: (car number, watch); faults armed for a phase.
        self._watches: list[tuple[int, Watch]] = []
        self._armed: dict[int, list[Armed]] = {}
        # (car, fault) -> simulated time of the injection and the watch of its signature.
        self._injected: dict[tuple[int, Fault], tuple[float, Watch | None]] = {}

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
        self.step(dt)

    @property
    def time(self) -> float:
        """Simulated seconds since the group started."""
        return self._time

    def step(self, dt: float) -> None:
        """Advance the group controller and every car by `dt` simulated seconds (>= 0).

        Substeps of at most `MAX_SUBSTEP_S`: passengers arrive and calls are assigned
        first, then each car moves. When every car is quiet and nobody arrives within
        `dt`, time just passes.
        """
        if dt < 0:
            raise ValueError(f"time cannot run backwards (dt={dt})")
        controller, cars = self.controller, self._cars
        end = self._time + dt
        if controller.quiet_until() > end and all(car.quiet for car in cars) and not self._armed:
            for car in cars:
                car.step(dt)  # its own fast path: only the clock moves
            controller.advance_to(end)
            self._time = end
            self._judge()
            return
        remaining = dt
        while remaining > 1e-12:
            h = min(remaining, MAX_SUBSTEP_S)
            self._time += h
            controller.advance_to(self._time)
            for car in cars:
                car.advance(h)
            if self._watches or self._armed:
                self._judge()
            remaining -= h

    def _judge(self) -> None:
        """Fire armed injections whose phase came, then judge every watch."""
        if self._armed:
            for number, waiting in list(self._armed.items()):
                phase = cycle_phase(self.cars[number])
                for armed in [a for a in waiting if a.phase == phase]:
                    waiting.remove(armed)
                    self.inject(number, armed.fault, armed.options)
                if not waiting:
                    del self._armed[number]
        for number, watch in self._watches:
            watch.see(self._time, self.cars[number].snapshot())

    def watch(self, number: int, predicate: Predicate) -> Watch:
        """Judge `predicate` on car `number`'s snapshot now and after every substep from
        now on; the returned `Watch` holds the simulated times it became true."""
        watch = Watch(predicate)
        watch.see(self._time, self.car(number).snapshot())
        self._watches.append((number, watch))
        return watch

    def unwatch(self, watch: Watch) -> None:
        """Stop judging `watch` (a no-op if it is not watched)."""
        self._watches = [(n, w) for n, w in self._watches if w is not watch]

    def inject_at(self, number: int, fault: Fault, options: FaultOptions, phase: str) -> None:
        """Inject `fault` into car `number` at the first substep that finds the car in
        cycle phase `phase` (`cycle.CYCLE_PHASES`; at once if it is there now)."""
        if phase not in CYCLE_PHASES:
            raise ValueError(f"unknown phase {phase!r}; known: {', '.join(CYCLE_PHASES)}")
        car = self.car(number)
        if cycle_phase(car) == phase:
            self.inject(number, fault, options)
            return
        self._armed.setdefault(number, []).append(Armed(fault, options, phase))

    def visibility(self, number: int, fault: Fault) -> tuple[float, float | None] | None:
        """(injected, visible) simulated times of the last injection of `fault` into car
        `number`: when it was injected and when the register image first showed it
        (`cycle.signature`; None while it has not shown, or for faults without one).
        None when the fault was not injected (or is still armed for its phase)."""
        found = self._injected.get((number, fault))
        if found is None:
            return None
        injected, watch = found
        return injected, watch.first if watch is not None else None

    def signature_watch(self, number: int, fault: Fault) -> Watch | None:
        """The watch of `fault`'s signature on car `number` since its last injection (every
        time it began to show), or None."""
        found = self._injected.get((number, fault))
        return found[1] if found is not None else None

    def clock_of(self, simulated: float) -> float:
        """The caller's clock reading (see `advance_to`) at simulated time `simulated`."""
        return self._last - (self._time - simulated) / self.config.speedup

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
        old = self._injected.pop((number, fault), None)
        if old is not None and old[1] is not None:
            self.unwatch(old[1])
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
        if kind is FaultKind.CAR:
            # Judged after the injection: a fault that changes a register at once (an
            # alarm press, a mode) is visible at the injection time itself.
            predicate = signature(fault, car.config)
            watch = self.watch(number, predicate) if predicate is not None else None
            self._injected[(number, fault)] = (self._time, watch)

    def clear(self, number: int, fault: Fault) -> None:
        """Clear `fault` from car `number` (its link and its car model)."""
        car = self.car(number)
        self.links[number].clear(fault)
        car.clear(fault)
        waiting = self._armed.get(number)
        if waiting is not None:
            waiting[:] = [a for a in waiting if a.fault is not fault]
            if not waiting:
                del self._armed[number]
        found = self._injected.pop((number, fault), None)
        if found is not None and found[1] is not None:
            self.unwatch(found[1])

    def faults(self, number: int) -> frozenset[Fault]:
        """Faults active on car `number`, link faults included."""
        return self.car(number).faults | self.links[number].faults(self._last)

    def snapshot(self, number: int) -> CarSnapshot:
        """The current snapshot of car `number`."""
        return self.car(number).snapshot()

    def registers(self, number: int) -> list[int]:
        """The 44 reference-map registers of car `number` as of the last advance."""
        snap, identity = self.snapshot(number), self.identities[number]
        cached = self._encoded.get(number)
        if cached is not None and cached[0] is snap and cached[1] is identity:
            return list(cached[2])
        registers = encode_car(snap, identity)
        self._encoded[number] = (snap, identity, registers)
        return list(registers)
