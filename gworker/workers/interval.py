"""Interval workers: a timer entry while idle, a runner's call when due.

A waiting interval worker is one entry in its supervisor's timer heap (see
:mod:`gworker._timers`), not a parked greenlet, so a hundred thousand fit in
little memory. When it is due, its run takes a pool slot and is made by one of
the supervisor's runner greenlets (:mod:`gworker._runners`), reused from call
to call, so runs due together start in priority order and a run that does not
switch costs no greenlet of its own; the next run is scheduled (its entry
re-added) when that one ends, so a worker never overlaps itself.

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
  runs. A run that *starts* after the next one's time (the hub was busy for
  more than an interval) stands for the runs it was late for: the schedule
  keeps its times, and the next run is at the first of them after its start
  — so a loaded hub is not given extra runs to make up for its lateness (as
  a scheduler that coalesces missed runs).
* ``delay`` — end of one run to the start of the next.
* ``delay_before`` — a pause before every run (added to the scheduled time).
* neither ``interval`` nor ``delay`` — ``delay=1``, as in atasker.
* the first run happens at ``start()`` (after ``delay_before``).
* the schedule of a worker whose runs are at least ``ALIGN_FROM`` (1 s) apart,
  and that is not ``precise``, starts on a 50 ms grid (``ALIGN``): its origin
  is ``start()`` rounded up to it (with ``delay``, every next time is
  rounded up too). The first
  run still comes at ``start()``; the next ones are up to 50 ms later than
  ``start()`` plus a multiple of the interval would be, and then exactly on
  the schedule. Workers started together then fall due together, and the
  process wakes up for a batch of runs, not for each: ten thousand workers
  started over a quarter of a second wake it about 6 times a second instead
  of a few hundred — measured on a 2-core VM, that cut the CPU per run by a
  third (a wake-up, with its cold caches, costs about a hundred µs there).
  ``precise=True`` opts out (its schedule starts at ``start()``).
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

import math
from time import monotonic
from typing import Any, Dict, Optional

import gevent
from gevent import getcurrent
from gevent.hub import Waiter, get_hub

from .._checks import check_seconds
from .._timers import LEAD, TimerEntry
from ._engine import Engine
from ._run import Halt
from .event import BackgroundEventWorker, EventRun

__all__ = ["BackgroundIntervalWorker", "PRECISE_EARLY", "PRECISE_SPIN", "KEEP_GREENLET", "ALIGN", "ALIGN_FROM"]

#: A worker whose runs are at most this many seconds apart keeps its greenlet
#: between runs (see the module docstring).
KEEP_GREENLET = 0.1

#: The grid (seconds) that the schedules of workers whose runs are at least
#: ``ALIGN_FROM`` apart start on (see the module docstring).
ALIGN = 0.05
ALIGN_FROM = 1.0

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


class IntervalRun(EventRun):
    """A start of an interval worker: the state of its schedule (``again``: a
    trigger, or a scheduled time, came during a run: run again after it).

    A run waiting in the timer heap is an entry there and nothing else; when
    it is due, :meth:`due` (in the hub) hands it to the engine, and a runner
    greenlet makes the call in :meth:`go` (see :mod:`gworker._runners`)."""

    __slots__ = ("tick", "running", "entry", "waiter", "anchor", "due_until", "due_scheduled", "engine",
                 "worker", "grant", "period", "interval", "delay_before", "align")

    def __init__(self, supervisor: Any) -> None:
        super().__init__(supervisor)
        #: the origin of the next scheduled run (monotonic)
        self.tick = monotonic()
        #: a call is pending or in progress
        self.running = False
        #: the timer entry of the next scheduled run (kept and re-added from run to run)
        self.entry: Optional[TimerEntry] = None
        #: the waiter of a kept greenlet waiting for its next run (a trigger wakes it)
        self.waiter: Optional[Waiter] = None
        #: until the first scheduled run of the start in the timer heap (see go)
        self.anchor = False
        #: the exact time of the next scheduled run of a precise worker, and
        #: whether the run made ready (by a timer or a trigger) was scheduled
        self.due_until: Optional[float] = None
        self.due_scheduled = False
        #: the start's engine and worker (set for runs from the timer heap)
        self.engine: Optional[Engine] = None
        self.worker: Optional[BackgroundIntervalWorker] = None
        #: the engine's grant of a slot: this run's go (one bound method per start)
        self.grant: Any = None
        #: the start's timing (read once, at start: assigning the worker's
        #: ``delay`` applies to the next start, as documented)
        self.period = 1.0
        self.interval: Optional[float] = None
        self.delay_before = 0.0
        #: the grid its schedule starts on (ALIGN), or 0.0
        self.align = 0.0

    def due(self) -> None:
        """The timer heap's call (a hub callback): only schedules (as
        :meth:`begin`, spelled out: this is every scheduled run's path)."""
        if not self.active:
            return
        if self.running:
            self.again = True
        else:
            self.running = True
            self.due_scheduled = True
            self.engine.defer(self, self.grant)  # type: ignore[union-attr]  # (set at _launch)

    def begin(self, scheduled: bool) -> None:
        """Make the run ready: the slot first, then a runner (a run waiting
        for a slot is a line entry of the pool, not a parked greenlet)."""
        self.running = True
        self.due_scheduled = scheduled
        self.engine.defer(self, self.grant)  # type: ignore[union-attr]  # (set at _launch)

    def go(self, _slot: Any = None) -> None:
        """Make the call (in a runner, holding the slot if the mode has one),
        then schedule the next."""
        engine: Engine = self.engine  # type: ignore[assignment]  # (set at _launch)
        self.runner = getcurrent()
        until = self.due_until if self.due_scheduled else None  # (a triggered run never waits)
        called = False
        try:
            if self.anchor and self.due_scheduled:
                until = self._anchor(until)
            if until is not None:
                until = _yield_until(self, until)
            if not self.active:
                return
            called = True
            outcome = engine.call_held() if until is None else engine.call_at(until)
            while True:
                if outcome is False:
                    self.active = False  # the executor stopped the worker
                if not self.active:
                    return
                if not self.again:
                    break
                self.again = False
                outcome = engine.call()
            entry: TimerEntry = self.entry  # type: ignore[assignment]  # (set at _launch)
            if entry[1] < 0:  # its seq: fired, not re-added (a triggered run leaves the schedule as it is)
                interval = self.interval
                if interval is not None and self.tick + interval + self.delay_before >= engine.ended:
                    self.tick = tick = self.tick + interval  # on schedule (_advance's common case)
                else:
                    tick = _advance(self, engine.started, engine.ended)  # type: ignore[arg-type]  # (the call just made set it)
                due = tick + self.delay_before
                if self.due_until is not None:  # precise
                    self.due_until = due
                    due -= PRECISE_EARLY
                # (the lane of the period: runs of one period come back in due order)
                self.supervisor.timers.readd(entry, due, self.period)  # type: ignore[arg-type]  # (set at _launch)
        finally:
            self.runner = None
            if not called:
                engine.release_unused()  # stopped before the call
            self.running = False
            if not self.active:
                self.end(self.worker._finished)  # type: ignore[union-attr]  # (set at _launch)

    def _anchor(self, until: Optional[float]) -> Optional[float]:
        # The first scheduled run of this start: when it is late by a turn or
        # so (of the timer heap, the slot, the runner), the schedule starts
        # with it, as a kept loop's starts when the loop does (later than
        # ANCHOR_WITHIN, it keeps its origin).
        self.anchor = False
        if self.align:  # the schedule starts on the grid instead
            self.tick = _aligned(self.tick, self.align)
            return until
        start = monotonic() + (PRECISE_SPIN if until is not None else 0.0)
        if _move_origin(self, start - self.delay_before) and until is not None:
            return start
        return until


def _advance(run: IntervalRun, started: float, ended: float) -> float:
    """Move the schedule past a call that ``started`` and ``ended`` (monotonic
    times); returns the next tick (see the timing rules in the module
    docstring)."""
    if run.interval is None:
        tick = ended + run.period  # delay: end to start
        if run.align:
            tick = _aligned(tick, run.align)
    else:
        tick = run.tick + run.interval
        due = tick + run.delay_before
        if due < started:
            # It started after the next run's time (a busy hub, for longer
            # than an interval): it stands for the runs it was late for. The
            # schedule keeps its times; the next run is at the first of them
            # after its start — no extra run to make up for the lateness.
            tick += (math.floor((started - due) / run.interval) + 1) * run.interval
        elif due < ended:
            tick = ended  # it overran: the next run follows at once, and the schedule restarts there
    run.tick = tick
    return tick


def _aligned(t: float, grid: float) -> float:
    """``t`` rounded up to a multiple of ``grid``."""
    return math.ceil(t / grid) * grid


def _move_origin(run: IntervalRun, origin: float) -> bool:
    """Make ``origin`` the schedule's origin if it is later than the one
    ``start()`` set by at most ANCHOR_WITHIN (one turn of the hub); True if
    it did."""
    if 0.0 < origin - run.tick <= ANCHOR_WITHIN:
        run.tick = origin
        return True
    return False


def _yield_until(run: IntervalRun, until: float) -> Optional[float]:
    """Precise mode's last stretch: yield, not sleep, until ``PRECISE_SPIN``
    before ``until``; returns ``until`` (the engine watches the clock for
    the rest), or None if the run stopped meanwhile."""
    spin_from = until - PRECISE_SPIN
    while monotonic() < spin_from:
        if not run.active:
            return None
        gevent.sleep(0)
    return until


class BackgroundIntervalWorker(BackgroundEventWorker):
    """Runs its executor on an interval or with a delay (see the module docstring).

    A :class:`BackgroundEventWorker`, as in atasker: ``trigger()`` asks for an
    extra run, and ``get_event_obj()`` returns the event inherited from there
    (setting it asks for an extra run too). As in atasker, ``delay`` holds the interval
    (``interval`` if set, else the delay between runs); ``interval`` is None for
    a worker that pauses between runs, and ``delay_after`` (an alias of
    ``delay`` as a keyword) is the pause, None for an interval worker.
    """

    holds_slot = True
    kind = "interval"
    _run: Optional[IntervalRun]  # type: ignore[assignment]  # (made by _new_run)

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
    def _new_run(self) -> IntervalRun:
        return IntervalRun(self.supervisor)

    def _period(self) -> float:
        return self.interval if self.interval is not None else self.delay_after  # type: ignore[return-value]

    def _launch(self, run: IntervalRun, engine: Engine) -> None:  # type: ignore[override]
        run.period, run.interval, run.delay_before = self._period(), self.interval, self.delay_before or 0.0
        if run.period >= ALIGN_FROM and not self.precise:
            run.align = ALIGN
        if run.period + run.delay_before <= KEEP_GREENLET:
            run.spawn_loop(self._kept_loop, run, engine)
        else:
            run.engine, run.worker = engine, self
            run.grant = run.go
            run.anchor = True
            self._schedule(run)

    def _kept_loop(self, run: IntervalRun, engine: Engine) -> None:
        """The loop of a worker that keeps its greenlet (see the module
        docstring): the timing rules are those of the timer heap's runs."""
        hub = get_hub()
        # The schedule starts when this loop does (start() was one turn of the
        # hub ago): else every run after the first is early by that turn,
        # measured from the first. A precise first run is timed as the others
        # are (a PRECISE_SPIN's wait, its bookkeeping done before it). Not when
        # the hub was busy for longer (ANCHOR_WITHIN): the schedule then keeps
        # start() as its origin and catches up, rather than carrying the delay.
        _move_origin(run, monotonic() + (PRECISE_SPIN if self.precise else 0.0))
        try:
            while run.active:
                triggered = run.again
                until = None
                if not triggered:
                    due = self._scheduled_time(run)
                    wait = due - (PRECISE_EARLY if self.precise else LEAD) - monotonic()
                    if wait > 0:
                        self._sleep(run, hub, wait)
                        triggered = run.again
                    if self.precise and not triggered:
                        until = _yield_until(run, due)
                    if not run.active:
                        break
                run.again = False
                run.running = True
                outcome = engine.call() if until is None else engine.call_at(until)
                run.running = False
                if outcome is False or not run.active:
                    break
                if not triggered:  # a triggered run does not move the schedule
                    _advance(run, engine.started, engine.ended)  # type: ignore[arg-type]  # (the call just made set it)
        except Halt:
            pass
        finally:
            run.running = False
            run.end(self._finished)

    def _scheduled_time(self, run: IntervalRun) -> float:
        """When the next scheduled run is due (monotonic)."""
        return run.tick + run.delay_before


    def _sleep(self, run: IntervalRun, hub: Any, seconds: float) -> None:
        # As gevent.sleep (a bare loop timer: no Timeout raised at the end, whose
        # cost would land between the wake-up and the run), but a trigger may
        # end it early and stop() may throw Halt into it.
        timer = hub.loop.timer(seconds)
        waiter = run.waiter = Waiter(hub)
        timer.start(waiter.switch, None)
        try:
            run.park(waiter.get)
        finally:
            run.waiter = None
            timer.close()

    def _schedule(self, run: IntervalRun) -> None:
        # The first scheduled run of a start: its entry, kept for the next ones.
        due = self._scheduled_time(run)
        if self.precise:
            run.due_until = due
            due -= PRECISE_EARLY
        run.entry = run.schedule(self.supervisor.timers, due, IntervalRun.due, run)

    # -- triggers --------------------------------------------------------------------------------
    def _trigger(self, force: bool = False, in_hub: bool = False) -> None:
        # A trigger during a run always runs again here (``force`` is accepted
        # for symmetry with event workers).
        run = self._run
        if run is None or not run.active:
            return
        if run.running:
            run.again = True
        elif run.greenlet is not None:  # a kept greenlet, waiting for its next run
            run.again = True
            if run.waiter is not None:
                self.supervisor.hub.loop.run_callback(run.waiter.switch, None)
        else:
            run.begin(False)

    # -- stopping -----------------------------------------------------------------------------------
    def _halt(self, run: IntervalRun) -> None:  # type: ignore[override]
        run.stop()  # (a kept greenlet's wait is interrupted; a heap entry cancelled)
        if run.greenlet is None and (not run.running or run.engine.withdraw()):  # type: ignore[union-attr]
            # nothing in progress, or a run still in line for its slot, withdrawn
            run.running = False
            run.end(self._finished)

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

