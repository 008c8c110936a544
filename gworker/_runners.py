"""Runners: the greenlets that make the calls admitted to run, reused from call to call.

A call that is due (an interval run, a task whose slot was granted, a run with
no slot to wait for) is *submitted* here, at its priority; an idle runner
greenlet makes it. A call that finishes without switching leaves its runner
free, and the runner goes straight on to the next call that is ready: a
thousand runs falling due together are made by one greenlet, back to back,
with no greenlet spawned, started or ended for any of them. Only a call that
blocks (waits on I/O, sleeps, waits for a child process) keeps its runner;
the next ready call then takes another one — an idle one if there is one, a
new one only when none is. So a blocking call never delays the next due call
of someone else, and there are never more runners than calls blocked at once,
plus the one running.

The rules:

* **Priority order.** Calls wait in four FIFO lines, one per priority; a
  runner always takes the next call from the most urgent line that has one.
  Calls made ready together (a batch of the timer heap, grants of a release)
  start in priority order, FIFO within a priority.
* **Yield.** A runner that has made calls for ``SLICE`` seconds without the
  hub polling hands the rest to a zero timer and goes idle: the hub polls I/O
  and fires its timers before the next call (the "yield at least every few
  milliseconds" rule every loop of gworker keeps).
* **Bounded, reaped.** At most ``IDLE_MAX`` runners stay idle (one that runs
  out of work while that many wait ends instead), and an idle runner unused
  for ``IDLE_TIMEOUT`` seconds ends. ``close()`` (the supervisor's stop) ends
  the idle ones at once, and any runner that runs out of work until
  ``open()``: a stopped supervisor leaves no greenlet behind.

A submitted *item* is any object with a ``go()`` method that catches its
own exceptions (a :class:`~gworker._admission.Slot` whose grant is the call,
an interval run, ...): the lines hold the items themselves, so submitting
allocates nothing. ``GreenletExit`` (a kill) thrown into a call ends its
runner, as it would end a greenlet of its own.

Runners are gevent ``Greenlet`` objects whose code belongs to their
:class:`Runners`, so a monkey-patched ``threading.current_thread()`` in a call
gets atasker's pool-thread name (see :mod:`gworker._thread_names`) — and, as
a pool thread's, it is kept from call to call while the runner lives.
"""
from __future__ import annotations

from collections import deque
from time import monotonic
from typing import Any, Deque, Dict, List, Optional

from gevent import Greenlet, getcurrent
from gevent.hub import Hub, get_hub

from ._errors import report
from . import local
from .priorities import PRIORITIES

__all__ = ["Runners", "SLICE", "IDLE_MAX", "IDLE_TIMEOUT"]

#: A runner yields (see the module docstring) after making calls for this long.
SLICE = 0.002
#: At most this many runners wait idle.
IDLE_MAX = 16
#: An idle runner unused for this many seconds ends.
IDLE_TIMEOUT = 5.0

_EXIT = object()  # switched into an idle runner: end


class Runners:
    """The runner greenlets of one supervisor (see the module docstring)."""

    def __init__(self, supervisor: Any = None, hub: Optional[Hub] = None) -> None:
        #: whose runners these are (their thread names come from it)
        self.supervisor = supervisor
        #: one FIFO per priority, most urgent first
        self._lines: List[Deque[Any]] = [deque() for _ in PRIORITIES]
        self._line: Dict[int, Deque[Any]] = dict(zip(PRIORITIES, self._lines))
        #: idle runners, the most recently used last (reused first: its stack
        #: is warm), and when each became idle
        self._idle: List[Any] = []
        self._idle_since: List[float] = []
        self._hub = hub
        self._loop: Any = None
        #: a dispatch is scheduled (a loop callback, or the zero timer)
        self._pending = False
        #: the zero timer of a runner that yielded is armed
        self._later: Any = None
        self._reaper: Any = None
        self._closed = False

    # -- what the owner sees --------------------------------------------------------------------
    @property
    def hub(self) -> Hub:
        """The hub whose loop the runners run in (bound on first use)."""
        if self._hub is None:
            self._hub = get_hub()
        return self._hub

    def bind_hub(self, hub: Hub) -> None:
        """Run in ``hub`` from now on (its owner's, bound as the owner starts)."""
        self._hub = hub
        self._loop = None

    def open(self) -> None:
        """Keep idle runners again (after :meth:`close`)."""
        self._closed = False

    def close(self) -> None:
        """End the idle runners now, and every other one as it runs out of
        work (until :meth:`open`). Calls already submitted are still made."""
        self._closed = True
        self._reap(0.0)
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.close()

    # -- submitting -------------------------------------------------------------------------------
    def submit(self, priority: int, item: Any) -> None:
        """Make ``item.go()`` in a runner, soon, in priority order with
        everything else submitted. Call in the hub's thread (any greenlet)."""
        self._line[priority].append(item)
        if not self._pending:
            self._pending = True
            loop = self._loop
            if loop is None:
                loop = self._loop = self.hub.loop
            loop.run_callback(self._dispatch)

    def _dispatch(self, timer: Any = None) -> None:
        # A hub callback: hand the ready calls to runners. A runner comes back
        # here when it has nothing left to do (it is idle), when it yielded
        # (the zero timer continues), or when its call blocked: then the next
        # call takes another runner.
        if timer is not None:  # the zero timer of a yield
            timer.close()
            self._later = None
        elif self._later is not None:
            return  # a runner yielded: the rest waits for the hub to poll
        self._pending = False
        lines = self._lines
        idle = self._idle
        while lines[0] or lines[1] or lines[2] or lines[3]:
            if self._later is not None:
                return
            if idle:
                runner = idle.pop()
                self._idle_since.pop()
            else:
                runner = Greenlet(self._main)
            runner.switch()

    def _yield(self) -> None:
        # The runner has made calls for SLICE: the rest after the hub has polled.
        if self._later is None:
            self._pending = True
            timer = self._later = self.hub.loop.timer(0.0)
            timer.start(self._dispatch, timer)

    # -- a runner -----------------------------------------------------------------------------------
    def _main(self) -> None:
        me = getcurrent()
        lines = self._lines
        idle, idle_since = self._idle, self._idle_since
        hub = self.hub
        touched = local.touched
        local.reuse(me)
        try:
            while True:
                yield_at = monotonic() + SLICE
                while True:
                    for line in lines:
                        if line:
                            break
                    else:
                        break  # nothing is ready
                    item = line.popleft()
                    try:
                        item.go()
                    except Exception:  # pragma: no cover - items catch their own
                        report("gworker runner: %r failed", item)
                    item = None  # (an idle runner holds on to nothing)
                    if touched and me in touched:
                        local.reset_g(me)  # the call set something in g: the next one gets it fresh
                    if monotonic() >= yield_at:
                        self._yield()
                        break
                if self._closed or len(idle) >= IDLE_MAX:
                    return
                idle.append(me)
                idle_since.append(monotonic())
                if self._reaper is None:
                    self._arm_reaper(IDLE_TIMEOUT)
                if hub.switch() is _EXIT:
                    return
        finally:
            local.forget(me)
            if me in idle:  # killed while idle
                i = idle.index(me)
                del idle[i], idle_since[i]

    # -- reaping ------------------------------------------------------------------------------------
    def _arm_reaper(self, seconds: float) -> None:
        # (ref=False: housekeeping does not keep the loop alive — gevent.wait()
        # returns when nothing else is left)
        timer = self._reaper = self.hub.loop.timer(seconds, ref=False)
        timer.start(self._reap_idle)

    def _reap_idle(self) -> None:
        # A hub callback: end the runners idle for IDLE_TIMEOUT (the oldest
        # idle ones, at the bottom of the stack); look again when the next is due.
        self._reaper.close()
        self._reaper = None
        self._reap(IDLE_TIMEOUT)
        if self._idle_since:
            self._arm_reaper(max(0.0, self._idle_since[0] + IDLE_TIMEOUT - monotonic()))

    def _reap(self, idle_for: float) -> None:
        # In the hub's thread: end the runners that have been idle at least ``idle_for`` s.
        cutoff = monotonic() - idle_for
        idle, idle_since = self._idle, self._idle_since
        while idle and idle_since[0] <= cutoff:
            runner = idle.pop(0)
            idle_since.pop(0)
            if getcurrent() is self.hub:
                runner.switch(_EXIT)
            else:
                runner.kill(block=False)
