"""Boarding on the emulated car: people walking in at open doors, the exchange of
passengers when the doors are fully open, and the riders and waiting passenger that
faults need aboard to show."""

from __future__ import annotations

from hil_tests.emulator.carbase import (
    _EPS_M,
    _LONG_RUN_FAULTS,
    Phase,
)
from hil_tests.emulator.dispatch import MAX_REOPENS_PER_STOP
from hil_tests.emulator.faults import Fault
from hil_tests.emulator.stops import StopChoice
from hil_tests.emulator.traffic import Passenger


class Boarding(StopChoice):
    """Who gets in and out, and when."""

    def take_walk_in(self, passenger: Passenger, now: float) -> bool:
        """A passenger just arrived where this car stands with its doors open (or closing):
        they step in if the car goes their way and has room; closing doors reopen for them
        at most `MAX_REOPENS_PER_STOP` times a stop. Returns whether they boarded."""
        phase = self._phase
        if phase not in (Phase.DWELL, Phase.DOOR_OPENING, Phase.DOOR_CLOSING):
            return False
        if not self._in_service() or len(self._aboard) >= self._capacity:
            return False
        if self._parked():
            return False  # its lantern shows no direction: people wait for their own car
        here = self._nearest_landing()
        if passenger.origin != here or abs(self._position - self._heights_m[here]) > _EPS_M:
            return False
        if self._travel not in (0, passenger.direction):
            return False
        if phase is Phase.DOOR_CLOSING:
            if self._reopens >= MAX_REOPENS_PER_STOP or Fault.DOOR_OBSTRUCTION in self._faults:
                return False
            self._reopens += 1
            self._door.command_open()
            self._phase = Phase.DOOR_OPENING
        self._snap = None
        self._aboard.append((passenger, now))
        self._car_calls[passenger.destination] = self._car_calls.get(passenger.destination, 0) + 1
        self._travel = passenger.direction
        self._dwell_until = max(self._dwell_until, self._time + self.config.transfer_s)
        self._calls_changed = True
        return True

    def _exchange_passengers(self) -> int:
        """Doors fully open: people for this landing get out, people waiting to go the
        car's way get in. Returns how many moved (the dwell grows with them)."""
        here, group, now = self._nearest_landing(), self._group, self._time
        self._snap = None
        self._calls_changed = True
        moved = 0
        if self._evacuate:
            # After a rescue everyone leaves here, whatever their destination.
            for passenger, boarded_at in self._aboard:
                group.left(self._car, passenger, boarded_at, here)
            moved = len(self._aboard)
            self._aboard.clear()
            self._car_calls.clear()
            self._evacuate = False
            self._waiter = None
            self._travel = 0
            return moved
        waiter = self._waiter
        if waiter is not None and Fault.WAITING_PASSENGER not in self._faults:
            self._waiter = None  # done waiting: steps out here, wherever the car is
        staying = []
        for passenger, boarded_at in self._aboard:
            if passenger is self._waiter:
                staying.append((passenger, boarded_at))
            elif passenger.destination == here or passenger is waiter:
                group.left(self._car, passenger, boarded_at, here)
                moved += 1
            else:
                staying.append((passenger, boarded_at))
        self._aboard = staying
        self._car_calls.pop(here, None)
        if not self._in_service():
            # Taken out of service: everyone gets out and waits for another car (the
            # waiting passenger was going nowhere and just leaves).
            for passenger, boarded_at in staying:
                group.left(self._car, passenger, boarded_at, here)
                if passenger is not self._waiter:
                    group.requeue(passenger, here)
            moved += len(staying)
            self._aboard = []
            self._car_calls.clear()
            self._waiter = None
            self._travel = 0
            return moved
        if self._faults and not self._rider_due and self._overtravel_stranded(here):
            self._rider_due = True
        if self._rider_due and self._wants_activity():
            self._board_rider(here)
            moved += 1
        if self._waiter_due:
            self._board_waiter(here)
            moved += 1
        travel = self._departure_direction(here)
        self._travel = travel
        if travel and not self._parked():
            riders = group.board(self._car, here, travel, self._capacity - len(self._aboard))
            for passenger in riders:
                self._aboard.append((passenger, now))
                self._car_calls[passenger.destination] = (
                    self._car_calls.get(passenger.destination, 0) + 1
                )
            moved += len(riders)
        return moved

    def _board_rider(self, here: int) -> None:
        """A person steps in so that the injected fault shows (an entrapment needs someone
        trapped, a long run needs a destination far away)."""
        self._rider_due = False
        if len(self._aboard) >= self._capacity:
            return
        rider = self._group.new_passenger(here, self._fault_destination(here))
        self._group.walk_in(self._car)
        self._aboard.append((rider, self._time))
        self._car_calls[rider.destination] = self._car_calls.get(rider.destination, 0) + 1
        if self._travel == 0:
            self._travel = rider.direction
        self._calls_changed = True

    def _board_waiter(self, here: int) -> None:
        """The waiting_passenger steps in and presses no button: no car call, so an idle
        car closes its doors and stands there with them inside."""
        self._waiter_due = False
        if len(self._aboard) >= self._capacity:
            return
        # Going nowhere: their destination is where they got in.
        waiter = self._group.new_passenger(here, here)
        self._group.walk_in(self._car)
        self._aboard.append((waiter, self._time))
        self._waiter = waiter
        options = self._faults.get(Fault.WAITING_PASSENGER)
        if options is not None and options.wait_s is not None:
            self._release_at[Fault.WAITING_PASSENGER] = self._time + options.wait_s

    def _fault_destination(self, here: int) -> int:
        """Where a fault's rider goes: to the terminal an overtravel needs, far for faults
        that show on a long run, else one landing on."""
        n, faults = self.config.landings, self._faults.keys()
        if Fault.OVERTRAVEL_TOP in faults or Fault.OVERTRAVEL_BOTTOM in faults:
            terminal = n - 1 if Fault.OVERTRAVEL_TOP in faults else 0
            return terminal if here != terminal else n // 2
        if faults & _LONG_RUN_FAULTS or self._wants_long_loaded_run():
            return 0 if here >= n / 2 else n - 1
        # Any run shows the other faults: the next landing, the way the car goes if it can,
        # so the fault shows within seconds (scenarios wait for it with a deadline).
        way = self._travel or self._rng.choice((1, -1))
        return here + way if 0 <= here + way < n else here - way

    def _wants_long_loaded_run(self) -> bool:
        mains = self._faults.get(Fault.MAINS_FAILURE)
        return Fault.SAFETY_CIRCUIT_OPEN in self._faults or (mains is not None and mains.occupied)

    def _overtravel_stranded(self, here: int) -> bool:
        """An overtravel still waits for its run to the terminal and nobody aboard goes
        there. A car that stood at the terminal when the fault came sends its first rider
        away from it; if it then stays busy it never idles (where riders are also called
        for) and would never go back, so a stop like this takes another rider."""
        if self._final_limit:
            return False
        faults, top = self._faults, len(self._heights_m) - 1
        for fault, terminal in ((Fault.OVERTRAVEL_TOP, top), (Fault.OVERTRAVEL_BOTTOM, 0)):
            if fault in faults and here != terminal and terminal not in self._car_calls:
                return True
        return False
