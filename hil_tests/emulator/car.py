"""A pure model of one elevator car and its controller, advanced by explicit simulated time.

The car belongs to a group (`dispatch.GroupController`): passengers wait at the landings,
the group assigns their hall calls, and the car serves its car calls (the destinations of
the people aboard) and its assigned hall calls in collective order, keeping its travel
direction while it has calls ahead. A car made on its own gets a private group of one,
so `Car(config, rng)` still serves traffic by itself.

Runs are jerk-limited S-curves planned to land exactly on the landing (`motion.py`);
doors open and close in their stroke times (`door.py`); passengers board and alight when
the doors are fully open, and the dwell lasts long enough for them (`transfer_s` each).
Occupancy and load come from the people aboard (`PASSENGER_KG` each against
`rated_load_kg`). Faults from `faults.py` change the behaviour; a fault that needs a
loaded or moving car puts a passenger in an idle or empty car so that it shows.

The class is assembled from one class per concern: fault behaviour (`car_faults.py`),
boarding (`boarding.py`), stop choice and the group's side (`stops.py`), on the state and
types of `carbase.py`; the phases, the motion and the snapshot are here.

Nothing here reads a clock or does I/O: `step(dt)` (or the group's) is the only way time
passes, which keeps the model deterministic for a given seed and step sequence.

Parameters (`CarConfig`, defaults typical of a 1.6 m/s, 1000 kg passenger lift):

| parameter | default | meaning |
|---|---|---|
| `landing_heights_mm` | 12 landings, 3000 mm apart | heights above the bottom landing |
| `motion` | 1.6 m/s, 0.9 m/s², 1.2 m/s³ | rated speed, acceleration/deceleration, jerk |
| `rescue_speed` | 0.3 m/s | crawl to a landing after a fault or a reboot |
| `door` | open 2.5 s, close 3.0 s | door stroke times |
| `dwell_s` | 4.0 s | doors fully open before closing again |
| `transfer_s` | 1.0 s | per person boarding or alighting; the dwell is at least this x people |
| `door_zone_mm` | ±150 mm | door zone around each landing |
| `levelled_mm` | ±10 mm | levelled band (normal service lands exactly) |
| `rated_load_kg` | 1000 kg | 13 persons of 75 kg; load % = people x 75 / rated load |
| `full_load_pct` | 80 % | the group gives a car this full no more hall calls |
| `close_stall_fraction` | 0.3 | where a failing door close stroke stalls |

Fixed constants: emergency stop 1.5 m/s² (machine brake, no jerk limit), reopen on an
obstruction at half-closed with a 1 s dwell, unintended-movement device stops a drift
400 mm out of the landing, a door forced open mid-run stands 10 % open, physics substep
50 ms.
"""

from __future__ import annotations

from hil_tests.emulator.boarding import Boarding
from hil_tests.emulator.car_faults import FaultBehaviour
from hil_tests.emulator.carbase import (
    _EPS_M,
    DOOR_AJAR,
    EMERGENCY_DECEL,
    MAX_SUBSTEP_S,
    REOPEN_AT,
    REOPEN_DWELL_S,
    STOP_PENALTY_S,
    UCM_STOP_MM,
    CarConfig,
    CarSnapshot,
    Counters,
    DoorState,
    Phase,
    _nearest,
    _Target,
    uniform_landings,
)
from hil_tests.emulator.dispatch import GroupController
from hil_tests.emulator.faults import Fault
from hil_tests.emulator.modes import ServiceMode
from hil_tests.emulator.motion import MotionProfile, plan_run
from hil_tests.emulator.traffic import PASSENGER_KG, Passenger

__all__ = [
    "DOOR_AJAR",
    "EMERGENCY_DECEL",
    "MAX_SUBSTEP_S",
    "REOPEN_AT",
    "REOPEN_DWELL_S",
    "STOP_PENALTY_S",
    "UCM_STOP_MM",
    "Car",
    "CarConfig",
    "CarSnapshot",
    "Counters",
    "DoorState",
    "Phase",
    "ServiceMode",
    "uniform_landings",
]


class Car(FaultBehaviour, Boarding):
    """One car and its controller; see the module docstring."""

    @property
    def time(self) -> float:
        """Simulated seconds since the car was created."""
        return self._time

    @property
    def phase(self) -> Phase:
        """What the controller is doing now."""
        return self._phase

    @property
    def faults(self) -> frozenset[Fault]:
        """Faults currently injected (manifest or waiting for their moment)."""
        return frozenset(self._faults)

    @property
    def group(self) -> GroupController:
        """The group controller the car belongs to."""
        return self._group

    @property
    def passengers(self) -> tuple[Passenger, ...]:
        """The people aboard."""
        return tuple(p for p, _ in self._aboard)

    @property
    def hall_calls(self) -> frozenset[tuple[int, int]]:
        """Hall calls (0-based landing, direction) the group assigned to this car."""
        return frozenset(self._hall_calls)

    @property
    def acceleration(self) -> float:
        """The car's acceleration along its direction of travel, m/s² (< 0 braking)."""
        return self._accel

    @property
    def stop_landing(self) -> int | None:
        """The 0-based landing the current (or last) run serves, or None before any run."""
        return self._stop

    def nearest_landing(self) -> int:
        """The 0-based landing nearest the car."""
        return self._nearest_landing()

    @property
    def travel(self) -> int:
        """The direction arrow: +1 up, -1 down, 0 when the car has nothing to do."""
        return self._travel

    def step(self, dt: float) -> None:
        """Advance this car (and its group's arrivals) by `dt` simulated seconds (dt >= 0).

        For a car in a group of several, prefer `CarGroup.step`, which advances every car;
        a car stepped alone keeps its group clock moving, and cars that are not stepped
        drop out of group service (`dispatch.STALE_S`), so it serves the calls alone.
        """
        if dt < 0:
            raise ValueError(f"time cannot run backwards (dt={dt})")
        group = self._group
        end = self._time + dt
        if self.quiet and group.quiet_until() > end:
            # Nothing can happen to an idle car before the next passenger arrives.
            self._time = end
            group.advance_to(end)
            return
        remaining = dt
        while remaining > 1e-12:
            h = min(remaining, MAX_SUBSTEP_S)
            group.advance_to(self._time + h)
            self.advance(h)
            remaining -= h

    @property
    def quiet(self) -> bool:
        """True when the car is idle with nothing to do: closed, no calls, no faults.
        Time passes for a quiet car without any physics (the idle fast path)."""
        return (
            self._phase is Phase.IDLE
            and not self._faults
            and not self._hall_calls
            and not self._aboard
        )

    def advance(self, h: float) -> None:
        """One physics substep of `h` <= `MAX_SUBSTEP_S` seconds, without the group's
        arrivals (`CarGroup.step` advances those first)."""
        if self.quiet:
            self._time += h
        else:
            self._substep(h)

    def snapshot(self) -> CarSnapshot:
        """The controller's view of the car now (the same object while nothing changed)."""
        if self._snap is not None:
            return self._snap
        # Flags derive from the true millimetres; the position register cannot go below the
        # bottom landing (uint32), which only an overtravel at the bottom reaches.
        true_mm = round(self._position * 1000.0)
        heights = self.config.landing_heights_mm
        landing = _nearest(heights, true_mm)
        offset_mm = true_mm - heights[landing]
        zone = self.config.door_zone_mm
        tolerance = self.config.levelled_mm
        phase = self._phase
        moving = phase is Phase.RUNNING or phase is Phase.RESCUE or phase is Phase.DRIFTING
        driven = phase is Phase.RUNNING or phase is Phase.RESCUE
        door = self._door
        faults = self._faults
        if faults or self._manifest or self._final_limit:
            mains_ok = Fault.MAINS_FAILURE not in self._manifest
            safety_open = Fault.SAFETY_CIRCUIT_OPEN in self._manifest or self._final_limit != 0
            lost = Fault.POSITION_LOST in faults
            bypass = Fault.DOOR_LOCK_BYPASS in faults
            obstructed = Fault.DOOR_OBSTRUCTION in faults
            alarm = Fault.ALARM_BUTTON in faults
            mode, code = self._service_mode(), self._fault_code()
        else:  # a healthy car: no enum hashing (slow in CPython)
            mains_ok, safety_open = True, False
            lost = bypass = obstructed = alarm = False
            mode, code = ServiceMode.NORMAL, 0
        people = len(self._aboard)
        load_pct = round(people * PASSENGER_KG * 100 / self.config.rated_load_kg)
        fully_closed = door.fully_closed
        snap = CarSnapshot(
            floor=0 if lost else landing + 1,
            position_mm=max(0, true_mm),
            speed_mm_s=round(self._speed * 1000.0) if moving else 0,
            moving=moving,
            up=moving and self._direction > 0,
            down=moving and self._direction < 0,
            door_zone=abs(offset_mm) <= zone,
            levelled=not moving and abs(offset_mm) <= tolerance,
            safety_circuit=not safety_open,
            door_lock=fully_closed or bypass,
            door_fully_open=door.fully_open,
            door_fully_closed=fully_closed,
            door_opening=door.is_opening,
            door_closing=door.is_closing,
            reopen_device=obstructed and not fully_closed,
            alarm_button=alarm,
            overload=load_pct > 110,
            occupied=people > 0,
            mains_ok=mains_ok,
            up_levelling=-zone <= offset_mm <= tolerance,
            down_levelling=-tolerance <= offset_mm <= zone,
            up_final_limit=self._final_limit > 0,
            down_final_limit=self._final_limit < 0,
            run_contactor=driven,
            brake_open=driven,
            car_light=mains_ok,
            full_load=load_pct >= 90,
            run_command=driven,
            door_open_command=door.open_command,
            door_close_command=door.close_command,
            service_mode=mode,
            load_pct=load_pct,
            fault_code=code,
            counters=Counters(
                self._trips,
                self._door_cycles,
                self._run_hours_base + int(self._run_seconds // 3600),
            ),
            door=self._door_state(),
            phase=phase,
        )
        self._snap = snap
        return snap

    def _substep(self, h: float) -> None:
        self._snap = None
        self._time += h
        faults = self._faults
        door = self._door
        # Enum hashing is slow in CPython; a healthy car (no faults) skips every lookup.
        if faults:
            if self._release_at:
                for fault, at in list(self._release_at.items()):
                    if self._time >= at:
                        del self._release_at[fault]
                        faults.pop(fault, None)
            door.open_blocked = Fault.DOOR_OPEN_FAILURE in faults
            door.close_stall_at = (
                self.config.close_stall_fraction if Fault.DOOR_CLOSE_FAILURE in faults else None
            )
            slowing = faults.get(Fault.DOOR_SLOWING)
            door.slowdown = slowing.factor if slowing is not None else 1.0
        else:
            door.open_blocked, door.close_stall_at, door.slowdown = False, None, 1.0
        if not self._manifest or Fault.MAINS_FAILURE not in self._manifest:
            door.step(h)  # without mains the door operator has no power
        if faults:
            self._watch_triggers()
        phase = self._phase
        if phase is Phase.RUNNING:
            self._run(h)
        elif phase is Phase.IDLE:
            self._idle()
        elif phase is Phase.DOOR_OPENING:
            self._door_opening()
        elif phase is Phase.DWELL:
            self._dwell()
        elif phase is Phase.DOOR_CLOSING:
            self._door_closing()
        elif phase is Phase.RESCUE:
            self._rescue(h)
        elif phase is Phase.TRAPPED:
            self._trapped()
        elif phase is Phase.STOPPED:
            self._stopped()
        elif phase is Phase.RECOVERING:
            self._recovering()
        elif phase is Phase.BOOTING:
            self._booting()
        elif phase is Phase.DRIFTING:
            self._drift(h)
        if self._phase is Phase.RUNNING or self._phase is Phase.RESCUE:
            self._run_seconds += h

    def _idle(self) -> None:
        mode = self._faults.get(Fault.MODE)
        if mode is not None and mode.mode is ServiceMode.FIRE_RETURN:
            self._fire_return()
            return
        if self._visiting():
            self._inspection_run()
            return
        if not self._in_service():
            return
        if self._wants_activity():
            # An injected fault should show soon: someone gets in here and rides.
            self._rider_due = True
            self._open_doors()
            return
        if (self._faults or self._waiter is not None) and self._doors_wanted():
            self._open_doors()
            return
        stop = self._next_stop()
        if stop is not None:
            self._go_to(stop)
        else:
            self._travel = 0

    def _inspection_run(self) -> None:
        """A maintenance visit: the worker runs the car to the next landing at inspection
        speed (`_profile`), up to the top and back down; the doors cycle on arrival."""
        here, top = self._nearest_landing(), len(self._heights_m) - 1
        if here >= top:
            self._visit_up = False
        elif here <= 0:
            self._visit_up = True
        self._start_motion(here + (1 if self._visit_up else -1), Phase.RUNNING)

    def _doors_wanted(self) -> bool:
        """Someone wants an idle car's doors open where it stands: the waiting passenger
        getting out, someone holding the doors, or someone stepping in to wait. A car on
        its way to park opens for the last two only where it parks."""
        faults = self._faults
        if self._waiter is not None and Fault.WAITING_PASSENGER not in faults:
            return True
        if Fault.PARK in faults and abs(self._position - self._park_height()) >= _EPS_M:
            return False
        return self._waiter_due or Fault.DOOR_HELD in faults

    def _fire_return(self) -> None:
        if self._nearest_landing() == 0 and self._position == self._heights_m[0]:
            if not self._door.fully_open:
                self._open_doors()
        else:
            self._start_motion(0, Phase.RUNNING)

    def _door_opening(self) -> None:
        if self._door.fully_open:
            self._door_cycles += 1
            moved = self._exchange_passengers()
            if Fault.DOOR_OBSTRUCTION in self._faults:
                dwell = REOPEN_DWELL_S
            else:
                dwell = max(self.config.dwell_s, moved * self.config.transfer_s)
            self._dwell_until = self._time + dwell
            self._phase = Phase.DWELL

    def _dwell(self) -> None:
        if self._faults:
            mode = self._faults.get(Fault.MODE)
            if mode is not None and mode.mode is ServiceMode.FIRE_RETURN:
                return  # parked at the main floor with doors open for the firefighters
            if self._rider_due and self._in_service() and self._wants_activity():
                self._board_rider(self._nearest_landing())
            held = self._faults.get(Fault.DOOR_HELD)
            if held is not None:
                if held.held_s is not None and Fault.DOOR_HELD not in self._release_at:
                    self._release_at[Fault.DOOR_HELD] = self._time + held.held_s
                return  # the dwell lasts as long as someone holds the doors
        if self._time >= self._dwell_until:
            self._door.command_close()
            self._phase = Phase.DOOR_CLOSING

    def _door_closing(self) -> None:
        obstructed = self._faults and Fault.DOOR_OBSTRUCTION in self._faults
        if obstructed and self._door.opening <= REOPEN_AT:
            self._open_doors()
        elif self._faults and Fault.DOOR_HELD in self._faults:
            self._open_doors()  # the door-open button reverses a closing door at once
        elif self._door.fully_closed:
            self._after_doors_closed()

    def _trapped(self) -> None:
        if Fault.ENTRAPMENT not in self._faults:
            self._start_motion(self._nearest_landing(), Phase.RESCUE)

    def _stopped(self) -> None:
        if self._held_by is not None and self._held_by in self._faults:
            return
        self._held_by = None
        self._final_limit = 0
        self._recovering()

    def _recovering(self) -> None:
        """Close the doors if open, then re-level: open at a landing or crawl to one."""
        if not self._door.fully_closed:
            self._door.command_close()
            self._phase = Phase.RECOVERING
            return
        landing = self._nearest_landing()
        if abs(self._position - self._heights_m[landing]) < _EPS_M:
            self._position = self._heights_m[landing]
            if self._aboard or self._hall_calls:
                self._open_doors()
            else:
                self._phase = Phase.IDLE
        else:
            self._start_motion(landing, Phase.RESCUE)

    def _booting(self) -> None:
        if self._time >= self._boot_until:
            self._recovering()

    def _go_to(self, landing: int) -> None:
        if abs(self._position - self._heights_m[landing]) < _EPS_M:
            self._reopens = 0
            self._open_doors()
        else:
            self._start_motion(landing, Phase.RUNNING)

    def _start_motion(self, landing: int, phase: Phase) -> None:
        target = self._heights_m[landing]
        self._stop = landing
        self._target = target
        self._target_kind = _Target.LANDING
        self._direction = 1 if target > self._position else -1
        self._speed, self._accel = 0.0, 0.0
        self._plan, self._plan_key = None, None
        self._calls_changed = False
        self._phase = phase

    def _after_doors_closed(self) -> None:
        if not self._in_service():
            self._travel = 0
            self._phase = Phase.IDLE
            return
        stop = self._next_stop()
        if stop is None:
            self._travel = 0
            self._phase = Phase.IDLE
        else:
            self._go_to(stop)

    def _follow_plan(self, h: float, profile: MotionProfile) -> bool:
        """Move along the planned run for `h` s, replanning when the target or the speed
        limit changed; True when the run is over (at rest where the plan ends)."""
        key = (self._target, profile)
        if key != self._plan_key:
            self._plan_key = key
            plan = plan_run(self._position, self._speed, self._accel, self._target, profile)
            if plan is not None:
                self._plan, self._plan_kind = plan, self._target_kind
                self._plan_t, self._plan_index = 0.0, 0
            elif self._plan is None:
                raise AssertionError("a run from rest can always be planned")
            # else: too late to stop there; the run goes on as planned before
        plan = self._plan
        assert plan is not None
        self._plan_t += h
        self._position, self._speed, self._accel, self._plan_index = plan.at(
            self._plan_t, self._plan_index
        )
        if self._plan_t < plan.duration:
            return False
        self._target = self._position
        self._speed, self._accel = 0.0, 0.0
        self._plan, self._plan_key = None, None
        return True

    def _run(self, h: float) -> None:
        if self._target_kind is _Target.EMERGENCY:
            self._emergency_stop(h)
            return
        if self._calls_changed and self._target_kind is _Target.LANDING:
            self._collective_retarget()
        if self._faults:
            self._retarget()
        if not self._follow_plan(h, self._profile()):
            return
        kind, self._target_kind = self._plan_kind, _Target.LANDING
        if kind is _Target.TRAP:
            self._direction = 0
            self._phase = Phase.TRAPPED
        elif kind is _Target.LANDING:
            self._direction = 0
            self._trips += 1
            self._reopens = 0
            self._open_doors()
        elif kind is _Target.SHORT:
            self._hold(Fault.LEVELLING_ERROR)
        elif kind is _Target.OVERTRAVEL:
            self._final_limit = self._direction
            self._hold(Fault.OVERTRAVEL_TOP if self._direction > 0 else Fault.OVERTRAVEL_BOTTOM)
        else:
            self._hold(self._held_by or Fault.SAFETY_CIRCUIT_OPEN)

    def _rescue(self, h: float) -> None:
        if not self._follow_plan(h, self._profile()):
            return
        self._direction = 0
        # The passengers leave at the landing the car re-levelled at.
        self._evacuate = bool(self._aboard)
        self._reopens = 0
        self._open_doors()

    def _door_state(self) -> DoorState:
        door = self._door
        if door.fully_closed:
            return DoorState.CLOSED
        if door.fully_open:
            return DoorState.OPEN
        if door.is_opening:
            return DoorState.OPENING
        if door.close_command:
            return DoorState.CLOSING
        return DoorState.STOPPED
