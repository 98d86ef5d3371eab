"""The emulated car's stop choice and the group's side: when the group may give it hall
calls, its ETA for one, and the next landing in collective order (keeping the travel
direction while there are calls ahead)."""

from __future__ import annotations

from hil_tests.emulator.carbase import (
    _EPS_M,
    _SERVING,
    STOP_PENALTY_S,
    CarBase,
)
from hil_tests.emulator.dispatch import STALE_S
from hil_tests.emulator.faults import Fault
from hil_tests.emulator.traffic import PASSENGER_KG


class StopChoice(CarBase):
    """Collective control: which calls the car takes and where it stops next."""

    def in_group_service(self, now: float) -> bool:
        """Whether the group may give this car hall calls at group time `now`."""
        return (
            self._phase in _SERVING
            and self._in_service()
            and Fault.MAINS_FAILURE not in self._manifest
            and not self._parked()
            and now - self._time <= STALE_S
        )

    def assign(self, landing: int, direction: int) -> None:
        """The group gives this car the hall call at `landing` (0-based) in `direction`."""
        self._hall_calls.add((landing, direction))
        self._calls_changed = True

    def unassign(self, landing: int, direction: int) -> None:
        """The hall call is answered (by this or another car) or taken back."""
        self._hall_calls.discard((landing, direction))
        self._calls_changed = True

    def eta(self, landing: int, direction: int) -> float | None:
        """Estimated seconds until this car could open its doors at `landing` for a
        passenger travelling `direction`; None when it cannot take the call (out of
        group service, or loaded past `full_load_pct`)."""
        if not self.in_group_service(self._group.time):
            return None
        config = self.config
        if len(self._aboard) * PASSENGER_KG * 100.0 >= config.full_load_pct * config.rated_load_kg:
            return None
        heights, pos, d = self._heights_m, self._position, self._travel
        h = heights[landing]
        on_the_way = (h - pos) * d > _EPS_M and direction == d and (h - self._reach()) * d >= 0
        if d == 0 or on_the_way:
            distance = abs(h - pos)
        else:
            # Runs to its furthest call this way first, then comes back (or round again).
            far = max([0.0, *((heights[c] - pos) * d for c in self._call_landings())])
            turn = pos + d * far
            distance = far + abs(turn - h)
            if direction == d:
                distance += heights[-1]  # has to come round once more
        busy = 0.0 if self._door.fully_closed else config.dwell_s
        stops = len(self._hall_calls) + len(self._car_calls)
        return distance / config.motion.rated_speed + stops * STOP_PENALTY_S + busy

    def _call_landings(self) -> set[int]:
        return set(self._car_calls) | {landing for landing, _ in self._hall_calls}

    def _calls_beyond(self, here: int, direction: int) -> bool:
        if any((c - here) * direction > 0 for c in self._car_calls):
            return True
        return any((c - here) * direction > 0 for c, _ in self._hall_calls)

    def _choose_stop(self, *, moving: bool) -> int | None:
        """The next landing to stop at in collective order, or None.

        Keeps the travel direction while there are calls ahead: the nearest car call or
        hall call in that direction first; failing that the furthest hall call ahead in
        the other direction (the car turns there). A stationary car with nothing ahead
        reverses. A moving car only considers landings it can still stop at.
        """
        if not self._car_calls and not self._hall_calls:
            return None
        heights, d = self._heights_m, self._travel
        edge = self._reach() if moving else self._position
        here = None
        if not moving:
            landing = self._nearest_landing()
            if abs(heights[landing] - self._position) < _EPS_M:
                here = landing
        if d == 0:
            if moving:
                return None
            if here is not None and (
                (here, 1) in self._hall_calls or (here, -1) in self._hall_calls
            ):
                return here
            best = min(self._call_landings(), key=lambda c: abs(heights[c] - edge))
            self._travel = 1 if heights[best] > edge else -1
            return best
        slack = _EPS_M if not moving else -_EPS_M
        for direction in (d, -d):

            def ahead(c: int, direction: int = direction) -> bool:
                return (heights[c] - edge) * direction > slack

            same = [c for c in self._car_calls if ahead(c)]
            same += [c for c, cd in self._hall_calls if cd == direction and ahead(c)]
            if same:
                self._travel = direction
                return min(same, key=lambda c: abs(heights[c] - edge))
            turn = [c for c, cd in self._hall_calls if cd == -direction and ahead(c)]
            if turn:
                self._travel = direction
                return max(turn, key=lambda c: abs(heights[c] - edge))
            if moving:
                return None
            if here is not None and (here, -direction) in self._hall_calls:
                self._travel = -direction
                return here
        if here is not None and (here, d) in self._hall_calls:
            return here
        return None

    def _departure_direction(self, here: int) -> int:
        """The direction the car leaves `here` in: on while there is something ahead or
        someone waiting to go that way, else back, else none."""
        d, group = self._travel, self._group
        # A full car cannot take anyone waiting, and a parked one takes nobody.
        room = len(self._aboard) < self._capacity and not self._parked()
        for direction in (d, -d) if d else (1, -1):
            if self._calls_beyond(here, direction) or (room and group.waiting(here, direction)):
                return direction
        return 0

    def _next_stop(self) -> int | None:
        """The next landing in collective order; a parked car with nothing left to do
        runs to the main landing."""
        stop = self._choose_stop(moving=False)
        if stop is None and self._parked():
            height = self._park_height()
            if abs(self._position - height) >= _EPS_M:
                self._travel = -1 if height < self._position else 1
                return self._faults[Fault.PARK].landing - 1
        return stop

    def _park_height(self) -> float:
        """Height of the landing the car parks at (`FaultOptions.landing` of PARK)."""
        return self._heights_m[self._faults[Fault.PARK].landing - 1]

    def _collective_retarget(self) -> None:
        """New calls during a run: stop earlier for one the car can still stop at, or go
        on past a stop nobody needs any more."""
        self._calls_changed = False
        current = self._stop
        if current is None or not self._in_service():
            return
        stop = self._choose_stop(moving=True)
        if stop is None or stop == current:
            return
        heights = self._heights_m
        wanted = (
            self._car_calls.get(current)
            or (current, 1) in self._hall_calls
            or (current, -1) in self._hall_calls
        )
        nearer = abs(heights[stop] - self._position) < abs(heights[current] - self._position)
        if nearer or not wanted:
            self._stop, self._target = stop, heights[stop]
