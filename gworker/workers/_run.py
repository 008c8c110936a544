"""A run: everything one ``start()`` of a worker owns, and its end.

Each ``start()`` makes a :class:`Run` (here a *run* is one start; one
executor call is a *call*). The greenlets the kind spawns for that start (its
loop, the greenlet of a call due on a timer, a queue's peeker) and the timer
entries it schedules belong to the run: spawned and scheduled through it, and
forgotten by it as they end (each greenlet lets go of its run itself); the
asyncio task of a coroutine loop is recorded on it. ``stop()`` stops the run
— it takes no new work, its timer entries are cancelled, its peekers are
killed and a loop greenlet *parked* waiting for work gets ``Halt`` — and the
run ends once its loop has: :meth:`Run.end` runs once.

A loop asks its own run whether to go on (``run.active``), never the worker:
after a restart the worker has a new run, and the old loop, holding the old
one, sees it stopped. There are no generation counters and nothing to reset
at the next start; the state of a kind's schedule lives on its run too.

Invariants: ``active`` goes from True to False once (``stop()``, or the
end); ``end()`` happens once; nothing is spawned through a run that has
ended (that raises); a stopped run owns no timer entry, and ``greenlets``
is empty once they have all ended.
"""
from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any, Callable, List, Optional

from gevent import Greenlet, getcurrent
from gevent.event import Event

from .._hubsafe import interrupt

if TYPE_CHECKING:
    from .._timers import TimerEntry, Timers
    from ..supervisor import TaskSupervisor

__all__ = ["Run", "Halt"]

from gevent import GreenletExit


# What a run owns is kept as None, the one thing, or a _Many of them: most runs
# own one greenlet or one timer entry at a time, and a list per run, for tens
# of thousands of idle interval workers, is memory and work for the garbage
# collector that buys nothing. (A timer entry is a plain list itself: the
# container of several is the type of its own.)

class _Many(list):
    """Several things a run owns (see above)."""

    __slots__ = ()


def _add(held: Any, thing: Any) -> Any:
    if held is None:
        return thing
    if type(held) is _Many:
        held.append(thing)
        return held
    return _Many((held, thing))


def _discard(held: Any, thing: Any) -> Any:
    if held is thing:
        return None
    if type(held) is _Many and any(x is thing for x in held):
        held[:] = [x for x in held if x is not thing]
        return held or None
    return held


def _listed(held: Any) -> list:
    if held is None:
        return []
    if type(held) is _Many:
        return list(held)
    return [held]


class Halt(GreenletExit):
    """Thrown into a parked worker greenlet by ``stop()``."""


class Run:
    """One start of a worker (see the module docstring).

    Small, as there is one per started worker (tens of thousands of interval
    workers): slots, and what it owns kept without a container for one. A kind
    keeps the state of its schedule in a subclass (with slots of its own)."""

    # (what a call reads first comes first: see Engine.__slots__)
    __slots__ = ("active", "runner", "context", "supervisor", "ended", "greenlet", "parked", "in_progress",
                 "task", "single", "_greenlets", "_entries", "_wakers", "_done")

    def __init__(self, supervisor: "TaskSupervisor") -> None:
        self.active = True
        self.ended = False
        #: the loop greenlet of a kind that keeps one, else None
        self.greenlet: Optional[Greenlet] = None
        #: the runner greenlet (gworker._runners) making a call of this run
        #: now, set by kinds that have no greenlet of their own between calls
        self.runner: Any = None
        #: True while ``greenlet`` waits for work (``stop()`` may throw Halt into it)
        self.parked = False
        #: ``(item,)`` while the executor runs on ``item`` (still set if that
        #: run was interrupted), else None — for kinds with items
        self.in_progress: Any = None
        #: the asyncio task of a loop that is a coroutine, else None
        self.task: Any = None
        #: the context captured at ``start()`` (see gworker.context): the loop
        #: runs in it, and the runs that carry no context of their own; None
        #: when the worker does not propagate contexts
        self.context: Optional[contextvars.Context] = None
        # each None, one, or a list (see _add)
        self._greenlets: Any = None
        self._entries: Any = None
        self._wakers: Any = None
        self._done: Optional[Event] = None  # made for the first who waits for the end
        #: the worker's supervisor (whose hub runs the run; the greenlets'
        #: thread names come from it, see gworker._thread_names)
        self.supervisor = supervisor
        #: the worker's singleton member this start takes part with (see
        #: gworker.redis.singleton), given up when the run ends; else None
        self.single: Any = None

    # -- what belongs to it --------------------------------------------------------------------------
    @property
    def greenlets(self) -> List[Greenlet]:
        """The run's live greenlets (a copy), the runner making its call included."""
        glets = [glet for glet in _listed(self._greenlets) if not glet.dead]
        if self.runner is not None:
            glets.append(self.runner)
        return glets

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Greenlet:
        """Start ``fn(*args)`` in a greenlet that belongs to this run until it ends."""
        if self.ended:
            raise RuntimeError("spawn: this run has ended")
        glet = Greenlet(self._owned, fn, args)
        self._greenlets = _add(self._greenlets, glet)
        glet.start()
        return glet

    def _owned(self, fn: Callable[..., Any], args: tuple) -> Any:
        # The greenlet lets go of the run itself as it ends: no link, and no
        # hub callback per greenlet to run it. (One killed before it began
        # never gets here: ``greenlets`` leaves out the dead.)
        try:
            return fn(*args)
        finally:
            glet = getcurrent()
            self._greenlets = _discard(self._greenlets, glet)
            if self._wakers is not None:
                self._wakers = _discard(self._wakers, glet)

    def spawn_loop(self, fn: Callable[..., Any], *args: Any) -> Greenlet:
        """:meth:`spawn` the run's loop greenlet (the one ``stop()`` halts when
        parked), in the start's context if there is one."""
        ctx = self.context
        if ctx is None:
            self.greenlet = glet = self.spawn(fn, *args)
        else:
            self.greenlet = glet = self.spawn(ctx.run, fn, *args)
        return glet

    def spawn_waker(self, fn: Callable[..., Any], *args: Any) -> Greenlet:
        """:meth:`spawn` a greenlet that only waits for work to arrive (a
        queue's peeker): ``stop()`` kills it."""
        glet = self.spawn(fn, *args)
        self._wakers = _add(self._wakers, glet)
        return glet

    def schedule(self, timers: "Timers", due: float, fn: Callable[[Any], Any], arg: Any) -> "TimerEntry":
        """Add ``fn(arg)`` to ``timers`` at ``due``, as an entry of this run:
        ``stop()`` cancels it. The entry stays the run's after it fires: it
        is re-added (:meth:`Timers.readd`) for the next time."""
        entry = timers.add(due, fn, arg)
        self._entries = _add(self._entries, entry)
        return entry

    # -- parking ------------------------------------------------------------------------------------
    def park(self, wait: Callable[..., Any], *args: Any) -> Any:
        """Wait for work in a way ``stop()`` may interrupt (raises ``Halt``)."""
        self.parked = True
        try:
            return wait(*args)
        finally:
            self.parked = False

    # -- the end ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Take no new work: cancel the run's timer entries, kill its wakers,
        and interrupt its loop greenlet if it is parked."""
        self.active = False
        entries, self._entries = self._entries, None
        if entries is not None:
            timers = self.supervisor.timers
            for entry in _listed(entries):
                timers.cancel(entry)
        for glet in _listed(self._wakers):
            glet.kill(block=False)
        self.halt()

    def halt(self) -> None:
        """Interrupt the loop greenlet if it is parked waiting for work."""
        glet = self.greenlet
        if glet is not None and not glet.dead:
            self.supervisor.hub.loop.run_callback(self._throw_if_parked, glet)

    def _throw_if_parked(self, glet: Greenlet) -> None:
        # Runs in the hub: the greenlet is not running now, so "parked" is exact.
        if self.parked and not glet.dead:
            glet.throw(Halt)

    def end(self, then: Callable[["Run"], None]) -> None:
        """The run's loop is over (any path): call ``then(run)`` (the worker's
        unregistering and ``after_stop``), once, before anyone waiting for
        the end is woken. (``then`` is passed here rather than kept: a bound
        method per run is an object per idle worker.)"""
        if self.ended:
            return
        self.active = False
        self.ended = True
        self.greenlet = None
        try:
            then(self)
        finally:
            if self._done is not None:
                self._done.set()

    def wait_ended(self, timeout: Optional[float] = None) -> bool:
        """Wait (cooperatively) until the run has ended; False if ``timeout``
        seconds passed first."""
        if self.ended:
            return True
        if self._done is None:
            self._done = Event()
        return self._done.wait(timeout)

    def owns(self, glet: Any) -> bool:
        """True if ``glet`` is one of this run's live greenlets (or the runner
        making its call)."""
        greenlets = self._greenlets
        return (greenlets is glet or glet is self.runner
                or (type(greenlets) is _Many and glet in greenlets))

    def interrupt(self, timeout: Optional[float]) -> List[Greenlet]:
        """Throw ``GreenletExit`` into the run's greenlets and wait at most
        ``timeout`` seconds for them to end; returns those it was thrown into.
        A runner is interrupted only if it still makes this run's call when
        the throw comes (see :func:`gworker._hubsafe.interrupt`): by then it
        may have gone on to someone else's."""
        glets = self.greenlets
        if not glets:
            return []
        return interrupt(self.supervisor.hub, lambda: [glet for glet in glets if self.owns(glet)], timeout)

