"""The simulated clock: the one place capsim touches SimPy's internals (its queue, its clock,
its event ids), so that a new SimPy release is checked here alone (pyproject pins simpy below 5)."""

from __future__ import annotations

from heapq import heappush

import simpy
from simpy.events import NORMAL

from capsim.sim.errors import SimulationError


class Clock(simpy.Environment):
    """SimPy's environment, plus two ways for an engine to wait:
    - timeout_at: until an absolute time (a decode stretch must end exactly at its last
      iteration's end, and now + (end - now) can be an ulp off it); the event goes on the queue as
      Environment.schedule puts a Timeout there, with the time as given;
    - advance: no event at all where nothing else is queued before that time. SimPy would pop
      the waiting process's timeout next and resume it, so moving the clock and carrying on is
      the same run without the heap and the generator switch (most iterations of a lightly
      loaded engine: its batch ends before the next arrival)."""

    def __init__(self, advancing: bool = True):
        super().__init__()
        self.advancing = advancing  # False: every wait an event (the reference path of the tests)

    def advance(self, to: float) -> bool:
        """Move the clock to `to` if no queued event comes at or before it (ties keep their
        queue order, so they wait the usual way); False where the caller must wait."""
        queue = self._queue
        if not self.advancing or to < self._now or (queue and queue[0][0] <= to):  # the past: let timeout() refuse it
            return False
        self._now = to
        return True

    def timeout_at(self, at: float) -> simpy.Event:
        if at < self._now:
            raise SimulationError(f"cannot wait until {at!r}: the clock shows {self._now!r}")
        event = simpy.Event(self)
        event._ok, event._value = True, None  # triggered, as a Timeout is
        heappush(self._queue, (at, NORMAL, next(self._eid), event))
        return event
