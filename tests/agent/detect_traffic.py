"""A simulated car in normal service: physically consistent samples that no rule may fire on.

The car parks at a landing, opens its doors (lock circuit opening first), dwells with
passengers boarding or leaving (sometimes a passenger holds the doors with a reopen),
closes (the lock circuit made only once CLOSED), and runs to another landing with doors
closed and locked, through the door zones of the floors it passes, to stop level. Mode
NORMAL, no faults, mains on, safety circuit made. Used by the property tests (with a
Hypothesis-driven `random.Random`) and by bench/detect.py (seeded).
"""

from __future__ import annotations

import random

from agent.state import CarState, Direction, DoorState, ServiceMode

FLOOR_MM = 3000
ZONE_MM = 150  # half-height of a door zone
LEVEL_MM = 10
RATED_MM_S = 1000
ACCEL_MM_S2 = 800


class _Car:
    def __init__(self, rng: random.Random, floors: int, dt: float, t0: float) -> None:
        self.rng = rng
        self.floors = floors
        self.dt = dt
        self.t = t0
        self.floor = rng.randrange(floors)
        self.position = self.floor * FLOOR_MM
        self.occupied = False
        self.out: list[CarState] = []

    def emit(self, **kw: object) -> None:
        base: dict[str, object] = {
            "t": round(self.t, 6),
            "floor": self.floor,
            "position_mm": self.position,
            "speed_mm_s": 0,
            "direction": Direction.NONE,
            "moving": False,
            "door_zone": True,
            "levelled": True,
            "door": DoorState.CLOSED,
            "door_lock_closed": True,
            "safety_circuit_closed": True,
            "occupied": self.occupied,
            "load_percent": 40 if self.occupied else 0,
            "alarm_button": False,
            "overload": False,
            "mode": ServiceMode.NORMAL,
            "fault_code": 0,
            "mains_ok": True,
            "reopen_active": False,
            "door_open_command": False,
            "door_close_command": False,
            "up_final_limit": False,
            "down_final_limit": False,
        }
        base.update(kw)
        self.out.append(CarState(**base))  # type: ignore[arg-type]  # keys are CarState's
        self.t += self.dt

    def hold(self, seconds: float, **kw: object) -> None:
        for _ in range(max(1, round(seconds / self.dt))):
            self.emit(**kw)

    def open_doors(self) -> None:
        self.hold(
            self.rng.uniform(1.8, 2.6),
            door=DoorState.OPENING,
            door_lock_closed=False,
            door_open_command=True,
        )

    def close_doors(self) -> None:
        self.hold(
            self.rng.uniform(2.2, 3.2),
            door=DoorState.CLOSING,
            door_lock_closed=False,
            door_close_command=True,
        )

    def stop(self) -> None:
        rng = self.rng
        self.open_doors()
        self.hold(rng.uniform(1.0, 4.0), door=DoorState.OPEN, door_lock_closed=False)
        self.occupied = rng.random() < 0.6
        dwell = rng.uniform(1.0, 15.0) if rng.random() < 0.8 else rng.uniform(15.0, 40.0)
        self.hold(dwell, door=DoorState.OPEN, door_lock_closed=False)
        for _ in range(rng.choice((0, 0, 0, 1, 2))):
            # A passenger stops the closing doors: they reopen at once.
            self.hold(
                rng.uniform(0.3, 1.5),
                door=DoorState.CLOSING,
                door_lock_closed=False,
                door_close_command=True,
            )
            self.hold(
                rng.uniform(0.3, 1.0),
                door=DoorState.OPENING,
                door_lock_closed=False,
                door_open_command=True,
                reopen_active=True,
            )
            self.hold(rng.uniform(1.0, 5.0), door=DoorState.OPEN, door_lock_closed=False)
        self.close_doors()
        # Parked shut: briefly while occupied (the car answers its call), long when empty.
        self.hold(rng.uniform(0.2, 8.0) if self.occupied else rng.uniform(0.2, 90.0))

    def run(self) -> None:
        rng = self.rng
        target = rng.randrange(self.floors - 1)
        if target >= self.floor:
            target += 1
        goal = target * FLOOR_MM
        up = goal > self.position
        direction = Direction.UP if up else Direction.DOWN
        speed = 0.0
        while True:
            remaining = abs(goal - self.position)
            braking = speed * speed / (2 * ACCEL_MM_S2)
            if remaining <= braking or remaining < 30:
                speed = max(60.0, speed - ACCEL_MM_S2 * self.dt)
            else:
                speed = min(RATED_MM_S, speed + ACCEL_MM_S2 * self.dt)
            travel = min(remaining, speed * self.dt)
            self.position += round(travel if up else -travel)
            if abs(goal - self.position) <= 2:
                self.position = goal
                break
            nearest = round(self.position / FLOOR_MM)
            offset = abs(self.position - nearest * FLOOR_MM)
            self.floor = nearest
            self.emit(
                moving=True,
                speed_mm_s=round(speed),
                direction=direction,
                door_zone=offset <= ZONE_MM,
                levelled=offset <= LEVEL_MM,
            )
        self.floor = target
        self.emit()  # stopped level, doors still closed


def normal_operation(
    rng: random.Random, samples: int, *, floors: int = 10, dt: float = 0.1, t0: float = 0.0
) -> list[CarState]:
    """At least ``samples`` samples (every ``dt`` s from ``t0``) of a car in normal service
    over ``floors`` landings numbered from 0, drawn from ``rng``."""
    car = _Car(rng, floors, dt, t0)
    car.hold(rng.uniform(0.1, 5.0))
    while len(car.out) < samples:
        car.stop()
        car.run()
    return car.out
