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

Cron workers (``cron="*/5 * * * *"``, ``tz=``; see :mod:`gworker.cron` for the
expression and what a wall time means on the days clocks change):

* the first run is at the first cron time after ``start()`` — not at
  ``start()``, as an interval worker's;
* the times are the expression's, exactly (whole seconds of the zone's wall
  clock): no grid, and never early (the entry is armed ``LEAD`` late, since
  the heap fires up to ``LEAD`` early);
* the heap waits in monotonic time, which the wall clock's steps (NTP, an
  operator) do not move and which stops while the machine is suspended; so an
  entry is never armed more than ``CRON_LOOK`` (60 s) ahead: a cron time
  further off is waited for in looks at the wall clock, and a wake-up that
  the wall clock says is early (it was set back) arms again. A cron worker is
  never more than ``CRON_LOOK`` late after the wall clock jumps forward or the
  machine wakes up (the run then is late, as after a busy hub: see below).
  A wall clock set back (by more than ``CLOCK_STEP``, 1 s) is followed by an
  expression whose hour field is ``*`` (its next time is the first after the
  new time, as cron does for such jobs: an every-minute job does not pause
  for as long as the step); any other keeps its next time, so that a time
  that has run does not run again;
* the rules of ``interval`` hold for its times: a run that overruns the next
  cron time is followed at once by the next run, and a run that starts after
  the next cron time (a busy hub, a suspended machine) stands for every time
  it was late for — the next is the first cron time after its start; never a
  burst;
* ``delay_before``, ``precise``, ``trigger()`` work as for the other interval
  workers; a cron worker never keeps its greenlet.

Extras for every interval worker (``run.special``: a plain worker's start
has none, and its runs look no further than that):

* ``jitter=seconds`` — each scheduled run starts up to that much later than
  its time, uniformly at random (the first too), so that a fleet started
  together does not call a backend in the same millisecond. The next time is
  still the schedule's, not the jittered start's. An interval worker's
  jitter must be shorter than its interval (else a run could be pushed past
  the next one's time); a cron worker's run is never pushed as far as the
  cron time after its own (its jitter is drawn from up to that gap when the
  gap is shorter); a delay worker's has no bound (its next time comes after
  the run). A triggered run is not jittered.
* ``misfire_grace=seconds`` — a scheduled run that would start more than that
  after its planned time (its time, plus ``delay_before`` and jitter) is
  skipped: the executor is not called, the skip is counted (``missed`` in
  ``get_info()``) and logged at INFO on the ``gworker`` logger (a burst per
  window, see :class:`gworker._errors.FailureLog`), and the schedule goes on
  with its first time after now. For a worker whose runs come from the timer
  heap, lateness includes the wait for a pool slot (a worker that keeps its
  greenlet takes its slot after this look). The times a late run stood for
  are not counted: only the run skipped is.
  ``None`` (the default): a late run always runs.

* ``singleton=RedisSingleton(...)`` (see :mod:`gworker.redis.singleton`) —
  once per cluster: an interval worker's times become the epoch's grid on the
  wall clock (the multiples of its interval of ``time.time()``, the first
  after ``start()``; scheduled as a cron worker's times, always from the
  timer heap), a cron worker keeps its own; each scheduled run first claims
  its time in Redis — no greenlet waits for the answer: the entry's callback
  hands the claim to the process's claims greenlet, which sends the claims
  due together in one round trip, and the answer makes the run due (pending
  meanwhile) — and runs only if it won, with ``_fence=<the time in ms>``
  among its keywords (None for a triggered run, which is local and not
  claimed); a time lost to another process (or whose claim failed) is no
  call and not a missed run. A time that comes during a triggered run of
  this process is left to the others. Delay workers refuse it (they need a
  lease, not built yet).

``get_info()`` of an interval worker adds ``next_run`` — when the next
scheduled run is planned to start (wall clock, ``time.time()``): its time plus
``delay_before`` plus its jitter; None while the worker is stopped, and while
a run is pending or in progress (the next one is planned when it ends) —
``cron`` and ``tz`` (the zone's name; None for a non-cron worker), ``jitter``,
``misfire_grace``, ``missed`` and ``singleton`` (None, or a singleton
worker's figures: see :class:`gworker.redis.RedisSingleton`).
"""
from __future__ import annotations

import math
import time
from datetime import datetime
from random import random
from time import monotonic
from typing import TYPE_CHECKING, Any, Dict, Optional

import gevent
from gevent import getcurrent
from gevent.hub import Waiter, get_hub

from .._checks import check_seconds
from .._errors import FailureLog
from .._timers import LEAD, TimerEntry
from ..cron import CronSchedule, zone_name
from ..events import RUN_MISSED, WorkerEvent
from ._engine import Engine
from ._run import Halt, Run
from .base import check_singleton
from .event import BackgroundEventWorker, EventRun

if TYPE_CHECKING:
    from datetime import tzinfo

__all__ = ["BackgroundIntervalWorker", "PRECISE_EARLY", "PRECISE_SPIN", "KEEP_GREENLET", "ALIGN", "ALIGN_FROM",
           "CRON_LOOK"]

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

#: A cron worker's timer entry is never armed further ahead than this
#: (seconds): the heap waits in monotonic time, which a step of the wall
#: clock does not move and a suspended machine does not advance, so a wait
#: for a cron time further off is a series of looks at the wall clock, each
#: arming at most this far ahead (see the module docstring).
CRON_LOOK = 60.0

#: A look at the wall clock that comes this much earlier (seconds) than the
#: wall clock said it would, when its entry was armed, finds the clock set back.
CLOCK_STEP = 1.0

#: What a special run's first look (:func:`_before_special`) returns for a
#: run that misfire_grace skips.
_SKIP: Any = object()


class IntervalRun(EventRun):
    """A start of an interval worker: the state of its schedule (``again``: a
    trigger, or a scheduled time, came during a run: run again after it).

    A run waiting in the timer heap is an entry there and nothing else; when
    it is due, :meth:`due` (in the hub) hands it to the engine, and a runner
    greenlet makes the call in :meth:`go` (see :mod:`gworker._runners`)."""

    # (every scheduled run reads the first eleven: together, see Engine.__slots__)
    __slots__ = ("running", "due_scheduled", "engine", "grant", "anchor", "due_until", "entry", "special",
                 "interval", "tick", "delay_before", "period", "worker", "waiter", "align")

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
        #: the schedule's extras (cron, jitter, misfire_grace), or None for a
        #: plain worker, whose runs never look further (see Special)
        self.special: Optional[Special] = None

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
        then schedule the next — in the start's context, or a triggered run in
        its trigger's (see gworker.context).

        The runner enters the context by becoming its greenlet's context
        (``gr_context``) for the run, and leaves it after: what
        ``ctx.run()`` does, without the second frame and the C call between
        them, on every scheduled run's path."""
        ctx = self.context
        if not self.due_scheduled:
            asked, self.asked = self.asked, None
            if asked is not None:
                ctx = asked
        engine: Engine = self.engine  # type: ignore[assignment]  # (set at _launch)
        self.runner = runner = getcurrent()
        home = None
        if ctx is not None:
            home = runner.gr_context
            runner.gr_context = ctx
        until = self.due_until if self.due_scheduled else None  # (a triggered run never waits)
        called = False
        try:
            if self.anchor and self.due_scheduled:
                # the first scheduled run of the start (every one, if special)
                until = self._anchor(until)
                if until is _SKIP:  # later than misfire_grace: no call, the schedule goes on
                    _skip(self)
                    return
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
                self.due_scheduled = False  # (a run asked for during the last one: no due time of its own)
                asked, self.asked = self.asked, None
                outcome = engine.call() if asked is None else asked.run(engine.call)
            entry: TimerEntry = self.entry  # type: ignore[assignment]  # (set at _launch)
            if entry[1] < 0:  # its seq: fired, not re-added (a triggered run leaves the schedule as it is)
                special = self.special
                if special is None:  # (a plain worker's one look at the extras, per run)
                    interval = self.interval
                    if interval is not None and self.tick + interval + self.delay_before >= engine.ended:
                        self.tick = tick = self.tick + interval  # on schedule (_advance's common case)
                    else:
                        tick = _advance(self, engine.started, engine.ended)  # type: ignore[arg-type]  # (the call just made set it)
                    # (no new float for a start without delay: the tick is the due time)
                    due = tick + self.delay_before if self.delay_before else tick
                    if self.due_until is not None:  # precise
                        self.due_until = due
                        due -= PRECISE_EARLY
                    # (the lane of the period: runs of one period come back in due order)
                    self.supervisor.timers.readd(entry, due, self.period)  # type: ignore[arg-type]  # (set at _launch)
                else:
                    _rearm_special(self, special, engine)
        finally:
            self.runner = None
            try:
                if not called:
                    engine.release_unused()  # stopped before the call
                self.running = False
                if not self.active:
                    self.end(self.worker._finished)  # type: ignore[union-attr]  # (set at _launch)
            finally:
                if ctx is not None:
                    runner.gr_context = home  # (the runner leaves the run's context)

    def _anchor(self, until: Optional[float]) -> Optional[float]:
        # The first scheduled run of this start: when it is late by a turn or
        # so (of the timer heap, the slot, the runner), the schedule starts
        # with it, as a kept loop's starts when the loop does (later than
        # ANCHOR_WITHIN, it keeps its origin).
        special = self.special
        if special is not None:
            return _before_special(self, special, until)
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


class Special:
    """What a start of a worker with ``cron``, ``jitter`` or ``misfire_grace``
    keeps beyond the plain schedule: ``run.special`` (a plain worker's is
    None, and its runs look no further than that). Made per start, for
    such workers only.

    Times: ``planned`` is when the next scheduled run is to start
    (monotonic: the schedule's time, plus ``delay_before``, plus its jitter);
    a cron worker's also ``wall_planned`` (the same on the wall clock, which
    is what it follows), ``fire`` (its cron time) and ``following`` (the cron
    time after that one)."""

    __slots__ = ("cron", "jitter", "grace", "precise", "first", "planned", "wall_planned", "fire", "following",
                 "look_at", "single")

    def __init__(self, cron: Any, jitter: float, grace: Optional[float], precise: bool,
                 single: Any = None) -> None:
        #: the schedule of wall-clock times: a CronSchedule, or a singleton
        #: interval worker's EpochGrid (None: a monotonic schedule)
        self.cron = cron
        #: a singleton worker's SingletonMember (see gworker.redis.singleton), else None
        self.single = single
        self.jitter = jitter
        self.grace = grace
        self.precise = precise
        #: the first scheduled run of the start is still to come
        self.first = True
        self.planned = monotonic()
        self.wall_planned = 0.0
        self.fire = 0.0
        self.following = 0.0
        #: when (wall clock) a cron worker's entry is armed to fire: a look
        #: that comes earlier than this found the clock set back
        self.look_at = 0.0


def _before_special(run: IntervalRun, special: Special, until: Optional[float]) -> Any:
    """A special worker's look before each scheduled run (go's ``_anchor``):
    the first run's origin, as a plain worker's (not a cron worker's: its
    times are the expression's), then misfire_grace. Returns ``until``, or
    ``_SKIP`` for a run later than misfire_grace."""
    if special.first:
        special.first = False
        if special.cron is None:
            if run.align:
                run.tick = _aligned(run.tick, run.align)
            else:
                start = monotonic() + (PRECISE_SPIN if until is not None else 0.0)
                lead = special.planned - run.tick  # delay_before and this run's jitter
                if _move_origin(run, start - lead):
                    special.planned = start
                    if until is not None:
                        until = start
    grace = special.grace
    if grace is not None and monotonic() - special.planned > grace:
        return _SKIP
    return until


def _claimed(run: IntervalRun, fence: Optional[int]) -> None:
    """The answer to a singleton's claim of its time (a hub callback, made by
    the claims' greenlet; see gworker.redis.singleton): ``fence``, the time's
    token, if this process won it — the run is due, and its call receives
    the token — else None (another process won it, or the claim failed): no
    call, and not a missed run; the schedule goes on to its next time."""
    run.running = False
    if not run.active:
        run.end(run.worker._finished)  # type: ignore[union-attr]  # (stopped while it claimed)
        return
    if fence is not None:
        run.engine.fence = fence  # type: ignore[union-attr]  # (set at _launch: a FencedEngine)
        run.again = False  # (a trigger during the claim: this run serves it)
        run.due()
        return
    _next_cron(run, run.special, time.time())  # type: ignore[arg-type]  # (a singleton's)
    if run.again:  # a trigger came while it claimed
        run.again = False
        run.begin(False)


class EpochGrid:
    """A singleton interval worker's times: the multiples of its interval since
    the epoch, on the wall clock — the same in every process, without talking
    (see :mod:`gworker.redis.singleton`). Scheduled as a cron worker's times."""

    __slots__ = ("interval",)

    #: a wall clock set back is followed (as for an every-minute cron job)
    every_hour = True

    def __init__(self, interval: float) -> None:
        self.interval = interval

    def next_fire(self, wall: float) -> float:
        """The first time of the grid after wall time ``wall``."""
        interval = self.interval
        k = math.floor(wall / interval) + 1
        fire = k * interval
        while fire <= wall:  # (float rounding)
            k += 1
            fire = k * interval
        return fire


def _skip(run: IntervalRun) -> None:
    """A scheduled run later than misfire_grace: counted and logged, no call;
    the schedule goes on to its first time after now (in go, which gives the
    unused slot back)."""
    if not run.active:
        return
    special: Special = run.special  # type: ignore[assignment]  # (only special runs skip)
    worker: BackgroundIntervalWorker = run.worker  # type: ignore[assignment]  # (set at _launch)
    now = monotonic()
    if special.cron is not None:
        worker._missed_run(special.wall_planned, now - special.planned, special)
        _next_cron(run, special, time.time())
    else:
        worker._missed_run(None, now - special.planned, special)
        _arm_special(run, special, _advance(run, now, now) + run.delay_before)


def _rearm_special(run: IntervalRun, special: Special, engine: Engine) -> None:
    """After a scheduled run of a special worker: its next time, by the plain
    rules (a cron worker's, by the same rules on its own times)."""
    if special.cron is not None:
        _next_cron(run, special, time.time() - (monotonic() - engine.started))  # type: ignore[operator]  # (the call set it)
        return
    interval = run.interval
    if interval is not None and run.tick + interval + run.delay_before >= engine.ended:
        run.tick = tick = run.tick + interval
    else:
        tick = _advance(run, engine.started, engine.ended)  # type: ignore[arg-type]  # (the call set it)
    _arm_special(run, special, tick + run.delay_before)


def _planned(special: Special, due: float) -> float:
    """``due`` plus a jitter drawn for it (a non-cron worker's): the planned start."""
    if special.jitter:
        due += random() * special.jitter
    special.planned = due
    return due


def _arm_special(run: IntervalRun, special: Special, due: float) -> None:
    """Re-add a non-cron special run's entry for the run due at ``due``."""
    due = _planned(special, due)
    if run.due_until is not None:  # precise
        run.due_until = due
        due -= PRECISE_EARLY
    # (a jittered run comes back out of its lane's order: the heap, then)
    run.supervisor.timers.readd(run.entry, due, None if special.jitter else run.period)  # type: ignore[arg-type]


def _next_cron(run: IntervalRun, special: Special, started: float) -> None:
    """Plan and arm a cron worker's next run after one that started (or was
    skipped) at wall time ``started``: the cron time after the last one — or,
    for a run that started after that (it stood for the times it was late
    for), the first cron time after its start. One that has passed already
    (the run overran it) is due at once."""
    cron: CronSchedule = special.cron  # type: ignore[assignment]  # (a cron worker's)
    fire = special.following
    if fire + run.delay_before < started:
        fire = cron.next_fire(started - run.delay_before)
    _plan_cron(run, special, fire)
    _arm_cron(run, special)


def _plan_cron(run: IntervalRun, special: Special, fire: float) -> None:
    """The cron time ``fire`` is the next run's: its planned start, with its
    jitter — which never takes it as far as the cron time after it."""
    cron: CronSchedule = special.cron  # type: ignore[assignment]  # (a cron worker's)
    special.fire = fire
    special.following = following = cron.next_fire(fire)
    jitter = special.jitter
    if jitter:
        jitter = random() * min(jitter, following - fire)
    special.wall_planned = fire + run.delay_before + jitter


def _arm_cron(run: IntervalRun, special: Special) -> None:
    """Arm a cron worker's entry: for its planned start (converted from the
    wall clock to the heap's monotonic one now), or for a look at the wall
    clock CRON_LOOK from now if the start is further off. A run's entry is
    armed LEAD late, since the heap fires up to LEAD early and a cron run
    never starts before its time."""
    now, wall = monotonic(), time.time()
    wait = special.wall_planned - wall
    if wait > CRON_LOOK:
        due = now + CRON_LOOK
        special.look_at = wall + CRON_LOOK
    else:
        special.planned = due = now + wait
        special.look_at = special.wall_planned
        if special.precise:
            run.due_until = due
            due -= PRECISE_EARLY
        else:
            due += LEAD
    entry = run.entry
    if entry is None:
        run.entry = run.schedule(run.supervisor.timers, due, _cron_due, run)
    else:
        run.supervisor.timers.readd(entry, due)


def _cron_due(run: IntervalRun) -> None:
    """A cron worker's entry fired (a hub callback): a look at the wall clock
    first — not due yet (the entry was armed for a look, or the wall clock was
    set back since) re-arms it; else the run is due, late by what the wall
    clock says (a step forward, or a suspended machine, makes it so)."""
    if not run.active:
        return
    special: Special = run.special  # type: ignore[assignment]  # (a cron worker's)
    wall = time.time()
    wait = special.wall_planned - wall
    if wait > (PRECISE_EARLY + LEAD if special.precise else 0.0):
        cron: CronSchedule = special.cron  # type: ignore[assignment]  # (a cron worker's)
        if wall < special.look_at - CLOCK_STEP and cron.every_hour:
            # The wall clock was set back. An expression that runs every hour
            # follows it, as cron does (an every-minute job does not pause for
            # as long as the step); any other keeps its time, so that a time
            # that has run does not run again.
            fire = cron.next_fire(wall - run.delay_before)
            if fire < special.fire:
                _plan_cron(run, special, fire)
        _arm_cron(run, special)
        return
    single = special.single
    if single is not None and run.running:
        # A singleton's time that comes during a triggered run here (a local
        # run): left to the other processes, as this one can not run it now
        # without running it late and unclaimed.
        _next_cron(run, special, wall)
        return
    special.planned = planned = monotonic() + wait
    if special.precise:
        run.due_until = planned
    if single is not None:
        # Claim the time first: the claims made in this turn of the hub go to
        # Redis together, and the answer (_claimed) makes the run due, or not.
        # Meanwhile the run counts as pending (a trigger waits for the answer).
        run.running = True
        single.claim(special.fire, _claimed, run)
        return
    run.due()


class BackgroundIntervalWorker(BackgroundEventWorker):
    """Runs its executor on an interval, with a delay, or on a cron schedule
    (see the module docstring).

    A :class:`BackgroundEventWorker`, as in atasker: ``trigger()`` asks for an
    extra run, and ``get_event_obj()`` returns the event inherited from there
    (setting it asks for an extra run too). As in atasker, ``delay`` holds the interval
    (``interval`` if set, else the delay between runs); ``interval`` is None for
    a worker that pauses between runs, and ``delay_after`` (an alias of
    ``delay`` as a keyword) is the pause, None for an interval worker. A cron
    worker has neither (both None); its ``cron`` is the expression and ``tz``
    the zone it reads it in.
    """

    holds_slot = True
    kind = "interval"
    _run: Optional[IntervalRun]  # type: ignore[assignment]  # (made by _new_run)

    # The extras are class attributes until a worker is given one: a plain
    # worker's instance carries none of them (tens of thousands of interval
    # workers are a common case).
    #: Each run starts up to this many seconds later than its time, uniformly
    #: at random (None: none). Read at each start.
    jitter: Optional[float] = None
    #: A scheduled run that would start more than this many seconds after its
    #: time is skipped (None: a late run always runs). Read at each start.
    misfire_grace: Optional[float] = None
    #: The cron expression of a cron worker (as given), else None; and the
    #: time zone it is read in (a ``tzinfo``). Plain attributes, shown for the
    #: worker's schedule (``_schedule_cron`` is what runs): a subclass written
    #: for atasker may keep a ``tz`` or a ``cron`` of its own without harm.
    cron: Optional[str] = None
    tz: Optional["tzinfo"] = None
    _schedule_cron: Optional[CronSchedule] = None
    _missed = 0
    _missed_log: Optional[FailureLog] = None

    def __init__(
        self,
        *args: Any,
        interval: Optional[float] = None,
        delay: Optional[float] = None,
        delay_before: Optional[float] = None,
        precise: bool = False,
        delay_after: Optional[float] = None,
        cron: Optional[str] = None,
        tz: Any = None,
        jitter: Optional[float] = None,
        misfire_grace: Optional[float] = None,
        singleton: Any = None,
        **kwargs: Any,
    ) -> None:
        delay = _alias(delay, delay_after, "delay", "delay_after")
        if cron is not None:
            _refuse_with_cron(interval, delay, "cron", "interval", "delay")
            self._set_cron(_cron_schedule(cron, tz, "cron", "tz"))
            self.interval = self.delay_after = None
        else:
            if tz is not None:
                raise ValueError("tz is the time zone of a cron schedule: give cron too")
            self.interval, self.delay_after = _check_timing(interval, delay, "interval", "delay")
        self.delay_before = check_seconds(delay_before, "delay_before")
        if not isinstance(precise, bool):
            raise TypeError("precise must be True or False; got %r" % (precise,))
        self.precise = precise
        if jitter is not None:  # (else the class's default: no check, nothing stored)
            jitter = _check_jitter(jitter, self.interval, "jitter", "interval")
            if jitter is not None:
                self.jitter = jitter
        if misfire_grace is not None:
            self.misfire_grace = _check_grace(misfire_grace, "misfire_grace")
        if singleton is not None:
            check_singleton(singleton)
        super().__init__(*args, **kwargs)
        if singleton is not None:  # (its key defaults to the name, set just now)
            # an interval or cron worker claims its scheduled times; a delay worker takes a lease
            self._singleton = singleton.bind(self, lease=self.interval is None and self._schedule_cron is None,
                                             continuous=False)

    def _apply_overrides(self, kwargs: Dict[str, Any]) -> None:
        if not kwargs:
            return  # (the common start: nothing to override, nothing to check again)
        # Every value is checked before any is set: a bad override leaves the worker as it was.
        interval, delay_after, cron = self.interval, self.delay_after, self._schedule_cron
        timing = [k for k in ("_interval", "_delay", "_delay_after") if k in kwargs]
        if timing:
            if kwargs.get("_cron") is not None:
                raise ValueError("_cron and %s can not be used together" % timing[0])
            delay = _alias(kwargs.get("_delay"), kwargs.get("_delay_after"), "_delay", "_delay_after")
            interval, delay_after = _check_timing(kwargs.get("_interval"), delay, "_interval", "_delay")
            cron = None  # an interval or a delay makes a cron worker an interval worker
        if "_cron" in kwargs:
            if kwargs["_cron"] is None:  # not a cron worker (with neither interval nor delay: delay=1)
                if cron is not None and not timing:
                    interval, delay_after = None, 1
                cron = None
            else:
                tz = kwargs["_tz"] if "_tz" in kwargs else (cron.tz if cron is not None else None)
                cron = _cron_schedule(kwargs["_cron"], tz, "_cron", "_tz")
                interval = delay_after = None
        elif "_tz" in kwargs:
            if cron is None:
                raise ValueError("_tz is the time zone of a cron schedule: give _cron too")
            cron = _cron_schedule(cron.expr, kwargs["_tz"], "_cron", "_tz")
        delay_before = self.delay_before
        if "_delay_before" in kwargs:
            delay_before = check_seconds(kwargs["_delay_before"], "_delay_before")
        jitter = self.jitter
        if "_jitter" in kwargs:
            jitter = check_seconds(kwargs["_jitter"], "_jitter")
        _check_jitter(jitter, interval, "_jitter" if "_jitter" in kwargs else "jitter",
                      "_interval" if "_interval" in kwargs else "interval")
        grace = self.misfire_grace
        if "_misfire_grace" in kwargs:
            grace = _check_grace(kwargs["_misfire_grace"], "_misfire_grace")
        single = self._singleton
        if single is not None and single.forwards != (interval is None and cron is None):
            raise TypeError("singleton: a singleton %s worker can not become a%s worker at start() (an interval"
                            " or cron worker claims its times, a delay worker holds a lease); make another worker"
                            % (("delay", "n interval or cron") if single.forwards else ("interval or cron", " delay")))
        self.interval, self.delay_after, self.delay_before = interval, delay_after, delay_before
        if cron is not self._schedule_cron:
            self._set_cron(cron)
        if jitter != self.jitter:
            self.jitter = jitter
        if grace != self.misfire_grace:
            self.misfire_grace = grace
        super()._apply_overrides(kwargs)

    def _set_cron(self, cron: Optional[CronSchedule]) -> None:
        """Make ``cron`` the worker's schedule (None: not a cron worker), and
        its ``cron``/``tz`` attributes say so."""
        self._schedule_cron = cron
        if cron is not None:
            self.cron, self.tz = cron.expr, cron.tz
        elif "cron" in self.__dict__ or "tz" in self.__dict__:
            self.cron = self.tz = None

    @property
    def delay(self) -> float:
        """The interval, as atasker's attribute holds it: ``interval`` if set,
        else the pause between runs (None for a cron worker). Assigning sets
        whichever of the two the worker uses (for the next start); a cron
        worker refuses it (``start(_delay=...)`` makes it a delay worker)."""
        return self.interval if self.interval is not None else self.delay_after  # type: ignore[return-value]

    @delay.setter
    def delay(self, value: float) -> None:
        value = check_seconds(value, "delay", allow_none=False)
        if self._schedule_cron is not None:
            raise ValueError("delay: worker %s runs on a cron schedule; start(_delay=...) makes it a"
                             " delay worker" % self.name)
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
        cron: Any = self._schedule_cron
        jitter, grace, single = self.jitter or 0.0, self.misfire_grace, self._singleton
        if single is not None:
            # Once per cluster: its times are on the wall clock, the same in
            # every process (an interval worker's the epoch's grid), each
            # claimed before it runs — always from the timer heap.
            if single.forwards:
                # A delay worker holds a lease (see gworker.redis.singleton):
                # its runs are timed from the last run anywhere in the cluster.
                run.period, run.delay_before = self._period(), self.delay_before or 0.0
                run.spawn_loop(self._leased_loop, run, engine)
                return
            if cron is None:
                cron = EpochGrid(self.interval)  # type: ignore[arg-type]  # (a singleton has one)
        if cron is not None or jitter or grace is not None:
            run.special = Special(cron, jitter, grace, self.precise, single)
        if cron is not None:
            # Its first run is at the first cron time after start(); the heap,
            # always (no cron time is ever a tenth of a second from the next).
            run.interval, run.delay_before = None, self.delay_before or 0.0
            run.engine, run.worker = engine, self
            run.grant = run.go
            run.anchor = True
            _plan_cron(run, run.special, cron.next_fire(time.time()))  # type: ignore[arg-type]
            _arm_cron(run, run.special)  # type: ignore[arg-type]
            return
        # (floats: the schedule's sums then take the interpreter's float fast path)
        interval = self.interval
        run.period = float(self._period())
        run.interval = None if interval is None else float(interval)
        run.delay_before = float(self.delay_before or 0.0)
        if run.period >= ALIGN_FROM and not self.precise:
            run.align = ALIGN
        if run.period + run.delay_before + jitter <= KEEP_GREENLET:
            run.spawn_loop(self._kept_loop, run, engine)
        else:
            run.engine, run.worker = engine, self
            run.grant = run.go
            run.anchor = True
            self._schedule(run)

    def _leased_loop(self, run: IntervalRun, engine: Engine) -> None:
        """The loop of a singleton delay worker (a lease, see
        gworker.redis.singleton): while this process holds the lease, a run
        ``delay`` after the last run anywhere in the cluster (a trigger, from
        any process, runs it at once); else it waits to hold it."""
        hub = get_hub()
        lease = self._singleton
        try:
            while run.active:
                fence = lease.hold(run)
                if fence is None:
                    break
                triggered = run.again
                if not triggered:
                    wait = lease.due(run.period, run.delay_before) - time.time()
                    if wait > 0:
                        self._sleep(run, hub, wait)
                        triggered = run.again
                    if not run.active:
                        break
                    if not lease.valid():
                        continue  # lost meanwhile: the holder runs it
                run.again = False
                run.running = True
                engine.fence = lease.token  # type: ignore[attr-defined]  # (a FencedEngine)
                ctx, run.asked = run.asked, None  # (a trigger's, made in this process)
                outcome = engine.call() if ctx is None else ctx.run(engine.call)
                run.running = False
                lease.ran()
                if outcome is False or not run.active:
                    break
        except Halt:
            pass
        finally:
            run.running = False
            run.end(self._finished)

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
        special = run.special  # (jitter, misfire_grace: a cron worker never keeps its greenlet)
        try:
            while run.active:
                triggered = run.again
                until = None
                if not triggered:
                    due = self._scheduled_time(run)
                    if special is None:  # (a plain worker's one look at the extras, per run)
                        wait = due - (PRECISE_EARLY if self.precise else LEAD) - monotonic()
                        if wait > 0:
                            self._sleep(run, hub, wait)
                            triggered = run.again
                    else:
                        due = _planned(special, due)
                        wait = due - (PRECISE_EARLY if self.precise else LEAD) - monotonic()
                        if wait > 0:
                            self._sleep(run, hub, wait)
                            triggered = run.again
                        late = monotonic() - due
                        if special.grace is not None and late > special.grace and not triggered and run.active:
                            self._missed_run(None, late, special)  # too late: no call
                            now = monotonic()
                            _advance(run, now, now)
                            continue
                    if self.precise and not triggered:
                        until = _yield_until(run, due)
                    if not run.active:
                        break
                run.again = False
                run.running = True
                run.due_scheduled = not triggered  # (for the run's events: see _due_time)
                asked = run.asked
                if asked is not None and triggered:  # a triggered run: in its trigger's context
                    run.asked = None
                    outcome = asked.run(engine.call)
                else:
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
        # update=True: from now, not from the loop's cached time, which lags
        # by however long the hub has run since it last polled (else a run
        # that ran long, or a busy hub, makes the next one early by that much)
        timer.start(waiter.switch, None, update=True)
        try:
            run.park(waiter.get)
        finally:
            run.waiter = None
            timer.close()

    def _schedule(self, run: IntervalRun) -> None:
        # The first scheduled run of a start: its entry, kept for the next ones.
        due = self._scheduled_time(run)
        if run.special is not None:
            due = _planned(run.special, due)
        if self.precise:
            run.due_until = due
            due -= PRECISE_EARLY
        run.entry = run.schedule(self.supervisor.timers, due, IntervalRun.due, run)

    # -- triggers --------------------------------------------------------------------------------
    def _trigger(self, force: bool = False, in_hub: bool = False, ctx: Any = None) -> None:
        # A trigger during a run always runs again here (``force`` is accepted
        # for symmetry with event workers). ``ctx``: the trigger's context, for
        # the run it asks for (the first one's, when several coalesce).
        run = self._run
        if run is None or not run.active:
            return
        single = self._singleton
        if single is not None and single.forwards:  # a singleton delay worker: to the holder
            single.forward(force)
            return
        self._accept(force, in_hub, ctx)

    def _accept(self, force: bool = False, in_hub: bool = False, ctx: Any = None) -> None:
        """A trigger of this process's run (a singleton's from the cluster)."""
        run = self._run
        if run is None or not run.active:
            return
        if run.asked is None:
            run.asked = ctx
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

    # -- misfires ----------------------------------------------------------------------------------
    def _missed_run(self, wall: Optional[float], late: float, special: Special) -> None:
        """A scheduled run that ``misfire_grace`` skipped, ``late`` seconds
        after its planned start (``wall``: that start on the wall clock, else
        it is taken from ``late``): counted, and logged at INFO (a burst per
        window, as failures are)."""
        self._missed += 1
        log = self._missed_log
        if log is None:
            log = self._missed_log = FailureLog()
        if wall is None:
            wall = time.time() - late
        tz = self._schedule_cron.tz if self._schedule_cron is not None else None
        when = datetime.fromtimestamp(wall, tz) if tz is not None else datetime.fromtimestamp(wall).astimezone()
        log.info("worker %s: skipped the run due at %s, %.3f s late (misfire_grace=%s s)",
                 self.name, when.isoformat(timespec="milliseconds"), late, special.grace)
        listeners = self.supervisor.listeners
        if listeners.wants(RUN_MISSED):
            listeners.emit(WorkerEvent(RUN_MISSED, self, self.name, self.kind, self.priority, time.time(), wall))

    def _due_time(self) -> Optional[float]:
        # The run being made: a scheduled one's planned start (its time, plus
        # delay_before and jitter; a cron worker's, on the wall clock), or
        # None for a triggered one. (The schedule moves on after the call.)
        run = self._run
        if run is None or not run.due_scheduled:
            return None
        special = run.special
        if special is not None and special.cron is not None:
            return special.wall_planned
        due = self._due_monotonic()
        return None if due is None else time.time() + (due - monotonic())

    def _due_monotonic(self) -> Optional[float]:
        # _due_time on the monotonic clock (the metrics' lateness: a run's
        # start minus this, with no clock read for a plain schedule).
        run = self._run
        if run is None or not run.due_scheduled:
            return None
        special = run.special
        if special is None:
            return run.tick + run.delay_before
        if special.cron is not None:
            return special.wall_planned - time.time() + monotonic()
        return special.planned

    def _next_run(self) -> Optional[float]:
        """When the next scheduled run is planned to start (wall clock,
        ``time.time()`` seconds: its time, plus ``delay_before``, plus its
        jitter); None while the worker is stopped, and while a run is pending
        or in progress (the next one is planned when it ends)."""
        run = self._run
        if run is None or not run.active or run.running:
            return None
        single = self._singleton
        if single is not None and single.forwards:  # a singleton delay worker: while it holds the lease
            return single.due(run.period, run.delay_before) if single.valid() else None
        special = run.special
        if special is None:
            due = run.tick + run.delay_before
        elif special.cron is not None:
            return special.wall_planned
        else:
            due = special.planned
        return time.time() + (due - monotonic())

    def get_info(self) -> Dict[str, Any]:
        info = super().get_info()
        info["interval"] = self.interval
        info["delay"] = self.delay_after
        info["delay_before"] = self.delay_before
        cron = self._schedule_cron
        info["cron"] = cron.expr if cron is not None else None
        info["tz"] = zone_name(cron.tz) if cron is not None else None
        info["jitter"] = self.jitter
        info["misfire_grace"] = self.misfire_grace
        info["missed"] = self._missed
        info["next_run"] = self._next_run()
        return info


def _alias(value: Any, alias: Any, parameter: str, p_alias: str) -> Any:
    if alias is None:
        return value
    if value is not None:
        raise TypeError("give the delay as %s or %s, not both" % (parameter, p_alias))
    return alias


def _refuse_with_cron(interval: Any, delay: Any, p_cron: str, p_interval: str, p_delay: str) -> None:
    if interval is not None:
        raise ValueError("%s and %s can not be used together" % (p_cron, p_interval))
    if delay is not None:
        raise ValueError("%s and %s can not be used together" % (p_cron, p_delay))


def _cron_schedule(expr: Any, tz: Any, p_cron: str, p_tz: str) -> CronSchedule:
    return CronSchedule(expr, tz, p_cron, p_tz)


def _check_jitter(jitter: Any, interval: Optional[float], p_jitter: str, p_interval: str) -> Optional[float]:
    # A jitter as long as the interval could push a run past the next one's
    # time; a delay worker's next time comes after the run, so it has no bound.
    jitter = check_seconds(jitter, p_jitter)
    if jitter and interval is not None and jitter >= interval:
        raise ValueError("%s (%r s) must be shorter than %s (%r s): a run must not be pushed past the next one's"
                         " time" % (p_jitter, jitter, p_interval, interval))
    return jitter


def _check_grace(grace: Any, parameter: str) -> Optional[float]:
    grace = check_seconds(grace, parameter)
    if grace == 0:
        raise ValueError("%s must be more than 0 seconds (every run starts a little after its time); got 0"
                         % parameter)
    return grace


def _check_timing(interval: Any, delay: Any, p_interval: str, p_delay: str):
    interval = check_seconds(interval, p_interval)
    delay = check_seconds(delay, p_delay)
    if interval is not None and delay is not None:
        raise ValueError("%s and %s can not be used together" % (p_interval, p_delay))
    if interval is None and delay is None:
        delay = 1
    return interval, delay

