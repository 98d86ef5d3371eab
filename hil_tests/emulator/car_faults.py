"""The emulated car's fault behaviour: injecting and clearing faults, a reboot, faults that
wait for their moment (a fast run, an idle car), and the runs a fault ends elsewhere
(an entrapment between floors, a levelling error, an overtravel, an emergency stop, a drift)."""

from __future__ import annotations

import itertools

from hil_tests.emulator.carbase import (
    _ACTIVITY_FAULTS,
    _AT_ONCE_FAULTS,
    _NO_SERVICE_FAULTS,
    DOOR_AJAR,
    EMERGENCY_DECEL,
    CarBase,
    Phase,
    _Target,
)
from hil_tests.emulator.faults import (
    CLEARED_BY_REBOOT,
    DEFAULT_CODES,
    FAULTS,
    NO_OPTIONS,
    Fault,
    FaultKind,
    FaultOptions,
)
from hil_tests.emulator.modes import ServiceMode


class FaultBehaviour(CarBase):
    """How injected faults change the car (see `hil_tests.emulator.faults`)."""

    def inject(self, fault: Fault, options: FaultOptions = NO_OPTIONS) -> None:
        """Inject elevator fault `fault` with `options`; re-injecting replaces the options.

        Raises ValueError for a pure link fault (those live in `link.Link`).
        """
        if FAULTS[fault].kind is FaultKind.LINK:
            raise ValueError(f"{fault.value} is a link fault, not a car fault")
        if fault is Fault.REBOOT:
            self.reboot(options.silent_s)
            return
        if fault is Fault.PARK and not 1 <= options.landing <= self.config.landings:
            raise ValueError(f"landing must be in 1..{self.config.landings}, got {options.landing}")
        self._snap = None
        self._faults[fault] = options
        self._release_at.pop(fault, None)
        # The alarm is pressed now; door_held and waiting_passenger count from when the
        # doors are held fully open (`_dwell`) and the passenger is in (`_board_waiter`).
        if fault is Fault.ALARM_BUTTON and options.held_s is not None:
            self._release_at[fault] = self._time + options.held_s
        if fault is Fault.WAITING_PASSENGER and self._waiter is None:
            self._waiter_due = True
        if fault in _ACTIVITY_FAULTS or (fault is Fault.MAINS_FAILURE and options.occupied):
            self._rider_due = True
        if fault in _NO_SERVICE_FAULTS or fault is Fault.PARK:
            self._group.release(self._car)
        if options.at_once and fault in _AT_ONCE_FAULTS:
            self._manifest_now(fault)

    def _manifest_now(self, fault: Fault) -> None:
        """Show `fault` at once, whatever the car is doing (`FaultOptions.at_once`): the
        phase-independence bench injects faults at a chosen moment of the car's cycle."""
        phase, running = self._phase, self._phase is Phase.RUNNING
        if fault is Fault.DOOR_OPEN_WHILE_MOVING:
            if running:
                self._force_door_ajar()
            return  # standing: it waits for the next fast run as without at_once
        if fault is Fault.UNINTENDED_MOVEMENT:
            if phase in (Phase.DOOR_OPENING, Phase.DWELL, Phase.DOOR_CLOSING):
                self._start_drift()
            return  # doors closed: it waits for the next stop as without at_once
        # SAFETY_CIRCUIT_OPEN, MAINS_FAILURE
        if running:
            self._manifest_with_stop(fault)
        elif phase not in (Phase.BOOTING, Phase.RESCUE, Phase.DRIFTING):
            self._manifest.add(fault)
            self._hold(fault)
        else:
            self._manifest.add(fault)

    def clear(self, fault: Fault) -> None:
        """Clear `fault`; the car recovers on its next steps. Clearing an absent one is a no-op."""
        self._snap = None
        self._faults.pop(fault, None)
        self._manifest.discard(fault)
        self._release_at.pop(fault, None)
        if fault is Fault.WAITING_PASSENGER:
            self._waiter_due = False  # not yet aboard: they changed their mind
        if fault is Fault.REBOOT:
            self._boot_until = min(self._boot_until, self._time)
        if not self._wants_activity():
            self._rider_due = False

    def reboot(self, boot_s: float) -> None:
        """Restart the controller: the car stops dead, the controller boots for `boot_s`
        simulated seconds, then closes the doors and re-levels. Counters survive, and so
        do the passengers aboard (they press their buttons again)."""
        if boot_s < 0:
            raise ValueError(f"boot time cannot be negative, got {boot_s}")
        self._snap = None
        for fault in CLEARED_BY_REBOOT:
            self._faults.pop(fault, None)
        self._speed, self._accel, self._direction = 0.0, 0.0, 0
        self._plan, self._plan_key = None, None
        self._door.open_command = self._door.close_command = False
        self._held_by = None
        self._boot_until = self._time + boot_s
        self._phase = Phase.BOOTING
        self._group.release(self._car)

    def _service_mode(self) -> ServiceMode:
        options = self._faults.get(Fault.MODE)
        return ServiceMode.NORMAL if options is None else options.mode

    def _fault_code(self) -> int:
        codes = [FAULTS[f].controller_code for f in self._faults]
        for fault, default in DEFAULT_CODES.items():
            options = self._faults.get(fault)
            if options is not None:
                codes.append(options.code if options.code is not None else default)
        return max(codes, default=0)

    def _watch_triggers(self) -> None:
        """Let faults that wait for a moment (a fast run, an empty idle car) manifest."""
        rated = self.config.motion.rated_speed
        fast = self._phase is Phase.RUNNING and self._speed >= 0.5 * rated
        occupied = bool(self._aboard)
        safety_pending = Fault.SAFETY_CIRCUIT_OPEN not in self._manifest
        if Fault.SAFETY_CIRCUIT_OPEN in self._faults and fast and safety_pending:
            self._manifest_with_stop(Fault.SAFETY_CIRCUIT_OPEN)
        mains = self._faults.get(Fault.MAINS_FAILURE)
        if mains is not None and Fault.MAINS_FAILURE not in self._manifest:
            if mains.occupied and fast and occupied:
                self._manifest_with_stop(Fault.MAINS_FAILURE)
            elif not mains.occupied and self._phase is Phase.IDLE and not occupied:
                self._manifest.add(Fault.MAINS_FAILURE)
                self._hold(Fault.MAINS_FAILURE)
        if (
            Fault.UNINTENDED_MOVEMENT in self._faults
            and Fault.UNINTENDED_MOVEMENT not in self._manifest
            and self._phase is Phase.DWELL
        ):
            self._start_drift()
        if (
            Fault.DOOR_OPEN_WHILE_MOVING in self._faults
            and fast
            and Fault.DOOR_OPEN_WHILE_MOVING not in self._manifest
        ):
            # At half rated speed the car is well outside every door zone (a one-floor run
            # peaks at 1.34 m/s), and the emergency stop lasts over half a second, so even a
            # slow poll sees it running with the door open, as the agent's rule requires.
            self._force_door_ajar()

    def _start_drift(self) -> None:
        """The brake slips at a landing: the car drifts away with its doors not closed."""
        self._manifest.add(Fault.UNINTENDED_MOVEMENT)
        self._direction = -1 if self._nearest_landing() > 0 else 1
        options = self._faults[Fault.UNINTENDED_MOVEMENT]
        self._speed = options.drift_mm_s / 1000.0
        self._phase = Phase.DRIFTING

    def _force_door_ajar(self) -> None:
        """The car door is forced open mid-run: emergency stop with the door ajar."""
        self._manifest_with_stop(Fault.DOOR_OPEN_WHILE_MOVING)
        door = self._door
        door.open_command = door.close_command = False
        # The panel leaves its closed limit: the car door contact breaks the door-lock
        # circuit, while the safety circuit before it stays made.
        door.opening = DOOR_AJAR

    def _manifest_with_stop(self, fault: Fault) -> None:
        self._manifest.add(fault)
        self._target_kind = _Target.EMERGENCY
        self._plan, self._plan_key = None, None
        self._held_by = fault

    def _retarget(self) -> None:
        """Move the stopping point when a fault says the run ends somewhere else."""
        kind, faults = self._target_kind, self._faults
        if kind is not _Target.LANDING:
            cause = {
                _Target.TRAP: Fault.ENTRAPMENT,
                _Target.SHORT: Fault.LEVELLING_ERROR,
                _Target.OVERTRAVEL: Fault.OVERTRAVEL_TOP
                if self._direction > 0
                else Fault.OVERTRAVEL_BOTTOM,
            }[kind]
            if cause not in faults:
                # Cleared before the car stopped: carry on to where it was going.
                landing = self._stop if self._stop is not None else self._nearest_landing()
                self._target, self._target_kind = self._heights_m[landing], _Target.LANDING
            return
        if Fault.ENTRAPMENT in faults and self._aboard:
            trap = self._trap_point()
            if trap is not None:
                self._target, self._target_kind = trap, _Target.TRAP
                return
        top, bottom = self._heights_m[-1], self._heights_m[0]
        for fault, terminal, sign in (
            (Fault.OVERTRAVEL_TOP, top, 1),
            (Fault.OVERTRAVEL_BOTTOM, bottom, -1),
        ):
            options = faults.get(fault)
            if options is not None and self._target == terminal and self._direction == sign:
                self._target = terminal + sign * options.offset_mm / 1000.0
                self._target_kind = _Target.OVERTRAVEL
                return
        short = faults.get(Fault.LEVELLING_ERROR)
        if short is not None:
            point = self._target - self._direction * short.offset_mm / 1000.0
            if (point - self._reach()) * self._direction > 0:
                self._target, self._target_kind = point, _Target.SHORT

    def _trap_point(self) -> float | None:
        """The first midpoint between landings ahead that the car can still stop at."""
        heights = self._heights_m
        reach = self._reach()
        midpoints = [(a + b) / 2 for a, b in itertools.pairwise(heights)]
        ahead = [
            m
            for m in midpoints
            if (m - reach) * self._direction > 0 and (self._target - m) * self._direction > 0
        ]
        if not ahead:
            return None
        return min(ahead, key=lambda m: abs(m - self._position))

    def _emergency_stop(self, h: float) -> None:
        speed = self._speed - EMERGENCY_DECEL * h
        if speed > 0.0:
            self._position += self._direction * (self._speed + speed) / 2.0 * h
            self._speed, self._accel = speed, -EMERGENCY_DECEL
            return
        self._position += self._direction * self._speed * self._speed / (2.0 * EMERGENCY_DECEL)
        self._target_kind = _Target.LANDING
        self._hold(self._held_by or Fault.SAFETY_CIRCUIT_OPEN)

    def _drift(self, h: float) -> None:
        landing = self._heights_m[self._nearest_landing()]
        self._position += self._direction * self._speed * h
        options = self._faults.get(Fault.UNINTENDED_MOVEMENT)
        if options is None or abs(self._position - landing) * 1000.0 >= options.distance_mm:
            self._hold(Fault.UNINTENDED_MOVEMENT)
