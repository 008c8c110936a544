"""A run: everything one ``start()`` of a worker owns, and its end.

Each ``start()`` makes a :class:`Run`. The greenlets the kind spawns for that
start (its loop, a run's greenlet, a queue's peeker), the timer entries it
schedules and the asyncio task of a coroutine loop belong to the run:
spawned, scheduled and created through it, and forgotten by it when they end
(a greenlet's link, as a gevent ``Group`` keeps its members). ``stop()``
stops the run — it takes no new work, its timer entries are cancelled, its
peekers are woken and a loop greenlet *parked* waiting for work gets
``Halt`` — and the run ends once its loop has: :meth:`Run.end` runs once.

A loop asks its own run whether to go on (``run.active``), never the worker:
after a restart the worker has a new run, and the old loop, holding the old
one, sees it stopped. There are no generation counters and nothing to reset
at the next start; the state of a kind's schedule lives on its run too.

Invariants: ``active`` goes from True to False once (``stop()``); ``end()``
happens once, after ``active`` is False; a run's greenlets and entries are
its own (``greenlets`` and ``entries`` are empty after the end, unless
something still running was spawned through a run that had ended — which
raises instead).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Set

from gevent import Greenlet
from gevent.event import Event

if TYPE_CHECKING:
    from .._timers import TimerEntry, Timers

__all__ = ["Run", "Halt"]

from gevent import GreenletExit


class Halt(GreenletExit):
    """Thrown into a parked worker greenlet by ``stop()``."""


class Run:
    """One start of a worker (see the module docstring)."""

    # (no __slots__: a kind keeps the state of its schedule on its run)

    def __init__(self, hub: Any, on_end: Callable[["Run"], None]) -> None:
        self.active = True
        self.ended = False
        #: set once the run has ended (its loop is over, the worker told)
        self.done = Event()
        #: the loop greenlet of a kind that keeps one, else None
        self.greenlet: Optional[Greenlet] = None
        #: True while ``greenlet`` waits for work (``stop()`` may throw Halt into it)
        self.parked = False
        #: ``(item,)`` while the executor runs on ``item`` (still set if that
        #: run was interrupted), else None — for kinds with items
        self.in_progress: Any = None
        self.greenlets: Set[Greenlet] = set()
        self.entries: Set[TimerEntry] = set()
        #: the asyncio task of a loop that is a coroutine, else None
        self.task: Any = None
        self._hub = hub
        self._on_end = on_end
        self._wakers: Set[Greenlet] = set()

    # -- what belongs to it --------------------------------------------------------------------------
    def spawn(self, fn: Callable[..., Any], *args: Any) -> Greenlet:
        """Start ``fn(*args)`` in a greenlet that belongs to this run."""
        if self.ended:
            raise RuntimeError("spawn: this run has ended")
        glet = Greenlet(fn, *args)
        greenlets = self.greenlets
        greenlets.add(glet)
        glet.rawlink(greenlets.discard)
        glet.start()
        return glet

    def spawn_loop(self, fn: Callable[..., Any], *args: Any) -> Greenlet:
        """:meth:`spawn` the run's loop greenlet (the one ``stop()`` halts when parked)."""
        self.greenlet = glet = self.spawn(fn, *args)
        return glet

    def spawn_waker(self, fn: Callable[..., Any], *args: Any) -> Greenlet:
        """:meth:`spawn` a greenlet that only waits for work to arrive (a
        queue's peeker): ``stop()`` kills it."""
        glet = self.spawn(fn, *args)
        wakers = self._wakers
        wakers.add(glet)
        glet.rawlink(wakers.discard)
        return glet

    def schedule(self, timers: "Timers", due: float, fn: Callable[..., Any], *args: Any) -> "TimerEntry":
        """Add ``fn(*args)`` to ``timers`` at ``due``, as an entry of this run:
        ``stop()`` cancels it. ``fn`` should call :meth:`fired` with its entry
        first (it is then no longer the run's)."""
        entry = timers.add(due, fn, *args)
        self.entries.add(entry)
        return entry

    def fired(self, entry: "TimerEntry") -> None:
        """``entry`` has fired: it no longer belongs to the run."""
        self.entries.discard(entry)

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
        entries, self.entries = self.entries, set()
        for entry in entries:
            entry.cancel()
        for glet in list(self._wakers):
            glet.kill(block=False)
        self.halt()

    def halt(self) -> None:
        """Interrupt the loop greenlet if it is parked waiting for work."""
        glet = self.greenlet
        if glet is not None and not glet.dead:
            self._hub.loop.run_callback(self._throw_if_parked, glet)

    def _throw_if_parked(self, glet: Greenlet) -> None:
        # Runs in the hub: the greenlet is not running now, so "parked" is exact.
        if self.parked and not glet.dead:
            glet.throw(Halt)

    def end(self) -> None:
        """The run's loop is over (any path): tell the worker, once."""
        if self.ended:
            return
        self.active = False
        self.ended = True
        self.greenlet = None
        try:
            self._on_end(self)
        finally:
            self.done.set()

    def owns(self, glet: Any) -> bool:
        """True if ``glet`` is one of this run's live greenlets."""
        return glet in self.greenlets
