"""Timers: when interval workers are due, kept in one heap per supervisor.

A waiting interval worker costs one heap entry here, not a parked greenlet and
not a libev timer of its own. One *dispatcher* greenlet sleeps until the earliest
entry is due, then fires every due entry. Firing only *schedules* work (an
interval run asks the pool for a slot and gets a greenlet when admitted), and
the dispatcher yields to the hub every couple of milliseconds (or every
``BATCH`` entries) while it fires, so ten thousand workers falling due in the
same millisecond do not hold the hub for the whole batch: the hub is never late
by more than a slice. Runs due at the same moment start in priority order within
one batch (the pool's ready heap orders them); across batches, by due time.

Entries are cancelled lazily: ``cancel()`` marks them, the dispatcher drops them
when they reach the top of the heap.

*Precise* entries (opt-in) make the dispatcher wake about a millisecond early
and then yield with ``gevent.sleep(0)`` until the exact due time: much smaller
timing error, at the cost of keeping one CPU busy for that last millisecond of
each wait.
"""
from __future__ import annotations

import heapq
from itertools import count
from time import monotonic
from typing import Any, Callable, List, Optional

import gevent
from gevent.event import Event

from .hubsafe import yield_to_hub

__all__ = ["Timers", "TimerEntry", "SLICE", "BATCH", "PRECISE_EARLY"]

#: The dispatcher yields to the hub after firing entries for this many seconds.
SLICE = 0.002
#: ... or after firing this many entries, whichever comes first. Firing is cheap,
#: the runs it starts are not: the runs fired in one slice all run before the
#: hub gets back to its timers, and while they wait their greenlets and
#: arguments are alive, so a big batch both lags the hub and pushes short-lived
#: objects into the oldest GC generation (measured with 10,000 workers due
#: together: 40-60 ms of hub lag each second, mostly full collections).
BATCH = 64
#: How early the dispatcher wakes for a precise entry before yielding until due.
PRECISE_EARLY = 0.0015

_seq = count()


class TimerEntry:
    """One scheduled call: ``fn(*args)`` at monotonic time ``due``."""

    __slots__ = ("due", "seq", "fn", "args", "precise", "cancelled")

    def __init__(self, due: float, fn: Callable[..., Any], args: tuple, precise: bool) -> None:
        self.due = due
        self.seq = next(_seq)
        self.fn = fn
        self.args = args
        self.precise = precise
        self.cancelled = False

    def __lt__(self, other: "TimerEntry") -> bool:
        return (self.due, self.seq) < (other.due, other.seq)

    def cancel(self) -> None:
        """Drop this entry; it will not fire."""
        self.cancelled = True


class Timers:
    """The heap of due times and the dispatcher greenlet that fires them."""

    def __init__(self) -> None:
        self._heap: List[TimerEntry] = []
        self._changed = Event()
        self._glet: Optional[gevent.Greenlet] = None
        self._running = False

    def __len__(self) -> int:
        return len(self._heap)

    def start(self) -> None:
        """Start the dispatcher (in the calling thread's hub)."""
        if self._running:
            return
        self._running = True
        self._glet = gevent.spawn(self._dispatch)

    def stop(self) -> None:
        """Stop the dispatcher and drop every entry."""
        self._running = False
        for entry in self._heap:
            entry.cancelled = True
        self._heap = []
        glet, self._glet = self._glet, None
        if glet is not None:
            glet.kill(block=False)

    def add(self, due: float, fn: Callable[..., Any], *args: Any, precise: bool = False) -> TimerEntry:
        """Call ``fn(*args)`` from the dispatcher greenlet at monotonic ``due``.

        ``fn`` must not block: it should only schedule work."""
        entry = TimerEntry(due, fn, args, precise)
        heap = self._heap
        heapq.heappush(heap, entry)
        if heap[0] is entry:  # a new earliest time: the dispatcher sleeps too long
            self._changed.set()
        return entry

    def _dispatch(self) -> None:
        heap = self._heap
        changed = self._changed
        while self._running:
            heap = self._heap
            while heap and heap[0].cancelled:
                heapq.heappop(heap)
            if not heap:
                changed.clear()
                changed.wait()
                continue
            head = heap[0]
            wait = head.due - monotonic()
            if head.precise:
                wait -= PRECISE_EARLY
            if wait > 0:
                changed.clear()
                changed.wait(wait)
                continue
            if head.precise:
                # The last stretch before a precise entry: yield, do not sleep.
                while monotonic() < head.due and not head.cancelled and not changed.is_set():
                    gevent.sleep(0)
            self._fire_due(heap)

    def _fire_due(self, heap: List[TimerEntry]) -> None:
        now = monotonic()
        slice_end = now + SLICE
        budget = BATCH
        while heap and heap[0].due <= now:
            entry = heapq.heappop(heap)
            if entry.cancelled:
                continue
            entry.cancelled = True  # fired: cancelling it later is a no-op
            entry.fn(*entry.args)
            budget -= 1
            if not budget or monotonic() >= slice_end:
                yield_to_hub()  # let the hub run I/O, timers and the runs just started
                now = monotonic()
                slice_end = now + SLICE
                budget = BATCH
