"""Interval workers: a timer while idle, a greenlet when due.

A waiting interval worker is one entry in its supervisor's timer heap (see
:mod:`gworker._timers`), not a parked greenlet, so tens of thousands fit in
little memory. When it is due, a greenlet is started for the run (through the
pool's ready heap, so runs due together start in priority order); the next run
is scheduled when that one ends, so a worker never overlaps itself.

A worker whose runs come at least ten times a second (``interval`` or
``delay``, plus ``delay_before``, at most ``KEEP_GREENLET`` = 0.1 s) keeps its
greenlet instead: between runs it waits in its own loop timer, as a greenlet
loop written by hand would, and takes a pool slot for each run. Such workers
are few and their greenlet (~8 KiB) is small against what it saves: starting a
greenlet for every run, which on a small VM is 0.1-0.2 ms between the wake-up
and the run. That delay is what makes the gaps between runs uneven (the loop
sleeps in whole milliseconds from the moment it polls, so the wake-ups drift
through each millisecond by the time that passes between a wake-up and the
next poll). Runs of kept-greenlet workers due at the same moment start in the
order their timers fire, not by priority; the pool still admits them by
priority when slots are short.

Timing rules:

* ``interval`` — start to start, on a monotonic schedule ``t0 + k * interval``:
  lateness does not accumulate. A run that overruns its interval is followed at
  once by the next, and the schedule restarts from there: no burst of catch-up
  runs.
* ``delay`` — end of one run to the start of the next.
* ``delay_before`` — a pause before every run (added to the scheduled time).
* neither ``interval`` nor ``delay`` — ``delay=1``, as in atasker.
* the first run happens at ``start()`` (after ``delay_before``).
* ``trigger()`` / ``trigger_threadsafe()`` ask for an extra run as soon as none
  is in progress; several during one run give one extra run. The regular
  schedule is not moved.
* runs land within about half a millisecond of their time, either side (the
  timer heap fires up to ``gworker._timers.LEAD`` early, see there).
* ``precise=True`` (opt-in): the run is started ``PRECISE_EARLY`` (1 ms) ahead,
  and its greenlet yields (``gevent.sleep(0)``) until ``PRECISE_SPIN`` (50 µs)
  before the exact time, then watches the clock without yielding for that last
  bit — for a sync executor, as the very last step before calling it, so that
  the bookkeeping of a run (tens of microseconds, with caches cold after the
  wait) is done before the time, not after it. Microseconds of error instead
  of a millisecond, paid for with a busy CPU (and the run's pool slot) for
  that last stretch of every wait; other greenlets wait at most
  ``PRECISE_SPIN``. A triggered run never waits.
"""
from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING, Any, Dict, Optional

import gevent
from gevent.hub import Waiter, get_hub, getcurrent

from .._checks import check_seconds
from .._timers import LEAD, TimerEntry
from .base import Halt, Worker
from .event import BackgroundEventWorker

if TYPE_CHECKING:
    from greenlet import greenlet

__all__ = ["BackgroundIntervalWorker", "PRECISE_EARLY", "PRECISE_SPIN", "KEEP_GREENLET"]

#: A worker whose runs are at most this many seconds apart keeps its greenlet
#: between runs (see the module docstring).
KEEP_GREENLET = 0.1

#: How long before its time a ``precise=True`` run is started (its greenlet
#: then yields until the exact time). Covers the timer heap's usual wake-up
#: error (see gworker._timers); a wake-up later than this makes the run late.
PRECISE_EARLY = 0.001

#: A worker's first run that comes at most this late (seconds; one turn of the
#: hub, as when its greenlet or the timer heap first runs) becomes the origin
#: of its schedule; a later one (a busy hub) leaves the origin at ``start()``.
ANCHOR_WITHIN = 0.001

#: How long before its time a ``precise=True`` run stops yielding and watches
#: the clock instead: a turn of the hub (a yield) takes microseconds and
#: sometimes tens of them, and a turn that ends after the time makes the run
#: late by what is left of it; a busy wait is exact to the clock's resolution.
#: Other greenlets wait at most this long, once per run.
PRECISE_SPIN = 0.00005


def _wait_until(until: float) -> None:
    """Watch the clock, without yielding, until ``until`` (at most PRECISE_SPIN)."""
    while monotonic() < until:
        pass


class BackgroundIntervalWorker(BackgroundEventWorker):
    """Runs its executor on an interval or with a delay (see the module docstring).

    A :class:`BackgroundEventWorker`, as in atasker: ``trigger()`` asks for an
    extra run, and ``get_event_obj()`` returns the event inherited from there
    (which an interval worker does not wait on: trigger it with
    ``trigger_threadsafe()``). As in atasker, ``delay`` holds the interval
    (``interval`` if set, else the delay between runs); ``interval`` is None for
    a worker that pauses between runs, and ``delay_after`` (an alias of
    ``delay`` as a keyword) is the pause, None for an interval worker.
    """

    #: set by a precise run's wait: the exact time its sync executor is called at
    _spin_until: Optional[float] = None
    #: until the first scheduled run of a start in the timer heap (see _run)
    _anchor = False

    holds_slot = True
    kind = "interval"

    def __init__(
        self,
        *args: Any,
        interval: Optional[float] = None,
        delay: Optional[float] = None,
        delay_before: Optional[float] = None,
        precise: bool = False,
        delay_after: Optional[float] = None,
        **kwargs: Any,
    ) -> None:
        delay = _alias(delay, delay_after, "delay", "delay_after")
        self.interval, self.delay_after = _check_timing(interval, delay, "interval", "delay")
        self.delay_before = check_seconds(delay_before, "delay_before")
        if not isinstance(precise, bool):
            raise TypeError("precise must be True or False; got %r" % (precise,))
        self.precise = precise
        super().__init__(*args, **kwargs)
        self._entry: Optional[TimerEntry] = None
        self._tick = 0.0
        self._running = False
        self._again = False
        self._run_glet: Optional[greenlet] = None  # (getcurrent(): only compared by identity)
        #: the waiter of a kept greenlet waiting for its next run (a trigger wakes it)
        self._waiter: Optional[Waiter] = None

    def _apply_overrides(self, kwargs: Dict[str, Any]) -> None:
        if "_interval" in kwargs or "_delay" in kwargs or "_delay_after" in kwargs:
            interval = kwargs.get("_interval")
            delay = _alias(kwargs.get("_delay"), kwargs.get("_delay_after"), "_delay", "_delay_after")
            self.interval, self.delay_after = _check_timing(interval, delay, "_interval", "_delay")
        if "_delay_before" in kwargs:
            self.delay_before = check_seconds(kwargs["_delay_before"], "_delay_before")
        super()._apply_overrides(kwargs)

    @property
    def delay(self) -> float:
        """The interval, as atasker's attribute holds it: ``interval`` if set,
        else the pause between runs. Assigning sets whichever of the two the
        worker uses (for the next start)."""
        return self.interval if self.interval is not None else self.delay_after  # type: ignore[return-value]

    @delay.setter
    def delay(self, value: float) -> None:
        value = check_seconds(value, "delay", allow_none=False)
        if self.interval is not None:
            self.interval = value
        else:
            self.delay_after = value

    # -- scheduling -----------------------------------------------------------------------------
    def _launch(self, gen: int) -> None:
        self._running = False
        self._again = False
        self._tick = monotonic()
        period = self.interval if self.interval is not None else self.delay_after
        if period + (self.delay_before or 0.0) <= KEEP_GREENLET:
            self._greenlet = gevent.spawn(self._kept_loop, gen)
        else:
            self._anchor = True
            self._schedule(gen)

    def _kept_loop(self, gen: int) -> None:
        """The loop of a worker that keeps its greenlet (see the module
        docstring): the timing rules are those of the timer heap's runs."""
        self._run_glet = getcurrent()
        hub = get_hub()
        # The schedule starts when this loop does (start() was one turn of the
        # hub ago): else every run after the first is early by that turn,
        # measured from the first. A precise first run is timed as the others
        # are (a PRECISE_SPIN's wait, its bookkeeping done before it). Not when
        # the hub was busy for longer (ANCHOR_WITHIN): the schedule then keeps
        # start() as its origin and catches up, rather than carrying the delay.
        self._move_origin(monotonic() + (PRECISE_SPIN if self.precise else 0.0))
        try:
            while self._active and self._gen == gen:
                triggered = self._again
                if not triggered:
                    due = self._scheduled_time()
                    wait = due - (PRECISE_EARLY if self.precise else LEAD) - monotonic()
                    if wait > 0:
                        self._sleep(hub, wait)
                        triggered = self._again
                    if self.precise and not triggered:
                        self._yield_until(gen, due)
                    if not (self._active and self._gen == gen):
                        break
                self._again = False
                self._running = True
                ok = self._execute()
                self._running = False
                if not ok:
                    break
                if not triggered:  # a triggered run does not move the schedule
                    self._next_tick()
        except Halt:
            pass
        finally:
            self._running = False
            self._run_glet = None
            self._finished(gen)

    def _move_origin(self, origin: float) -> bool:
        """Make ``origin`` the schedule's origin if it is later than the one
        ``start()`` set by at most ANCHOR_WITHIN (one turn of the hub); True if
        it did."""
        if 0.0 < origin - self._tick <= ANCHOR_WITHIN:
            self._tick = origin
            return True
        return False

    def _scheduled_time(self) -> float:
        """When the next scheduled run is due (monotonic)."""
        return self._tick + (self.delay_before or 0.0)

    def _yield_until(self, gen: int, until: float) -> None:
        """Precise mode's last stretch: yield, not sleep, until ``PRECISE_SPIN``
        before ``until``; then watch the clock, without yielding, until ``until``."""
        spin_from = until - PRECISE_SPIN
        while monotonic() < spin_from:
            if not (self._active and self._gen == gen):
                return
            gevent.sleep(0)
        if getattr(self._invoke, "__func__", None) in _SPINS_BEFORE_CALL:
            self._spin_until = until  # _invoke_sync waits, right before the call
        else:
            _wait_until(until)

    def _invoke_sync(self, pre: tuple, kw: Dict[str, Any]) -> Any:
        until = self._spin_until
        if until is not None:  # a precise run: its last few microseconds
            self._spin_until = None
            _wait_until(until)
        return super()._invoke_sync(pre, kw)

    def _sleep(self, hub: Any, seconds: float) -> None:
        # As gevent.sleep (a bare loop timer: no Timeout raised at the end, whose
        # cost would land between the wake-up and the run), but a trigger may
        # end it early and stop() may throw Halt into it.
        timer = hub.loop.timer(seconds)
        waiter = self._waiter = Waiter(hub)
        timer.start(waiter.switch, None)
        try:
            self._park(waiter.get)
        finally:
            self._waiter = None
            timer.close()

    def _schedule(self, gen: int) -> None:
        due = self._scheduled_time()
        if self.precise:
            self._entry = self.supervisor.timers.add(due - PRECISE_EARLY, self._due, gen, due)
        else:
            self._entry = self.supervisor.timers.add(due, self._due, gen, None)

    def _due(self, gen: int, until: Optional[float]) -> None:
        # Called from the timer heap's hub callback: only schedules. ``until``: the exact
        # time of a precise run.
        if gen != self._gen or not self._active:
            return
        self._entry = None
        if self._running:
            self._again = True
        else:
            self._begin(gen, until, scheduled=True)

    def _begin(self, gen: int, until: Optional[float] = None, scheduled: bool = False) -> None:
        # The run's slot first, then its greenlet: a run waiting for a slot is
        # an entry in the pool's line, not a parked greenlet (ten thousand runs
        # due at once on a pool of 110 used to mean ten thousand greenlets).
        self._running = True
        pool = self.supervisor.thread_pool
        if getattr(self._invoke, "__func__", None) is Worker._invoke_sync_slot:
            # (a bound method and a tuple rather than a closure: the pool's
            # starvation report can tell whose run waited)
            pool.defer(self.priority, self._spawn_run, (gen, until, scheduled))
        else:  # an invoker that does not take a thread-pool slot
            pool.start_soon(self.priority, gevent.spawn, self._run, gen, False, until, scheduled)

    def _spawn_run(self, run: tuple) -> None:
        # Granted a slot (by the pool, in the hub or a releasing greenlet): start the run.
        gen, until, scheduled = run
        gevent.spawn(self._run, gen, True, until, scheduled)

    def _run(self, gen: int, slot_held: bool = False, until: Optional[float] = None,
             scheduled: bool = False) -> None:
        self._run_glet = getcurrent()
        self._slot_held = slot_held  # the first call uses the slot defer() took
        try:
            if scheduled and self._anchor:
                # The first scheduled run of this start: when it is late by a
                # turn or so (of the timer heap, the slot, the greenlet), the
                # schedule starts with it, as a kept loop's starts when the loop
                # does (later than ANCHOR_WITHIN, it keeps its origin).
                self._anchor = False
                start = monotonic() + (PRECISE_SPIN if until is not None else 0.0)
                if self._move_origin(start - (self.delay_before or 0.0)) and until is not None:
                    until = start
            if until is not None:
                self._yield_until(gen, until)
            while self._active and self._gen == gen:
                if not self._execute():
                    break
                if self._again:
                    self._again = False
                    continue
                if self._entry is None and self._active and self._gen == gen:
                    self._next_tick()
                    self._schedule(gen)
                break
        finally:
            if self._slot_held:  # stopped before the first call
                self._slot_held = False
                self.supervisor.thread_pool.release()
            self._running = False
            self._run_glet = None
            if not self._active and self._gen == gen:
                self._finished(gen)

    def _next_tick(self) -> None:
        now = monotonic()
        if self.interval is not None:
            tick = self._tick + self.interval
            self._tick = tick if tick + (self.delay_before or 0.0) >= now else now
        else:
            self._tick = now + self.delay_after  # type: ignore[operator]

    # -- triggers --------------------------------------------------------------------------------
    def trigger_threadsafe(self, force: bool = False) -> None:
        """Ask for an extra run as soon as none is in progress; from any greenlet
        or OS thread. ``force`` is accepted for symmetry with event workers."""
        self.supervisor.call_soon_threadsafe(self._trigger)

    async def trigger(self, force: bool = False) -> None:
        """Ask for an extra run, from a coroutine running on an aloop."""
        self._trigger()

    def _trigger(self, force: bool = False) -> None:
        # (``force`` as the event worker's: a trigger during a run always runs again here)
        if not self._active:
            return
        if self._running:
            self._again = True
        elif self._greenlet is not None:  # a kept greenlet, waiting for its next run
            self._again = True
            if self._waiter is not None:
                self.supervisor.hub.loop.run_callback(self._waiter.switch, None)
        else:
            self._begin(self._gen)

    # -- stopping -----------------------------------------------------------------------------------
    def _halt(self) -> None:
        if self._greenlet is not None:  # a kept greenlet: interrupt its wait
            super()._halt()
            return
        entry, self._entry = self._entry, None
        if entry is not None:
            entry.cancel()
        if not self._running:
            self._finished(self._gen)

    def _in_own_run(self, current: Any) -> bool:
        return current is self._run_glet

    def get_info(self) -> Dict[str, Any]:
        info = super().get_info()
        info["interval"] = self.interval
        info["delay"] = self.delay_after
        info["delay_before"] = self.delay_before
        return info


def _alias(value: Any, alias: Any, parameter: str, p_alias: str) -> Any:
    if alias is None:
        return value
    if value is not None:
        raise TypeError("give the delay as %s or %s, not both" % (parameter, p_alias))
    return alias


def _check_timing(interval: Any, delay: Any, p_interval: str, p_delay: str):
    interval = check_seconds(interval, p_interval)
    delay = check_seconds(delay, p_delay)
    if interval is not None and delay is not None:
        raise ValueError("%s and %s can not be used together" % (p_interval, p_delay))
    if interval is None and delay is None:
        delay = 1
    return interval, delay


#: The invokers that end in BackgroundIntervalWorker._invoke_sync, which does a
#: precise run's last wait itself.
_SPINS_BEFORE_CALL = (Worker._invoke_sync_slot, BackgroundIntervalWorker._invoke_sync)
