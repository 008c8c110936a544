"""Timers: when interval workers are due, kept in one heap per supervisor.

A waiting interval worker costs one heap entry here, not a parked greenlet and
not a libev timer of its own. One libev timer watcher is armed for the earliest
entry; when it fires, its callback (in the hub, no greenlet switch) fires every
due entry and re-arms for the next. Adding an entry later than the armed time
changes nothing, an earlier one re-arms the watcher: no wake-up either way.
Firing only *schedules* work (an interval run asks the pool for a slot and gets
a greenlet when admitted), and the callback stops after a couple of
milliseconds (or ``BATCH`` entries) and leaves the rest to a zero timer, so ten
thousand workers falling due in the same millisecond do not hold the hub for
the whole batch: the hub is never late by more than a slice. Runs due at the
same moment start in priority order within one batch (the pool's ready heap
orders them); across batches, by due time.

Entries are cancelled lazily: ``cancel()`` marks them (and lets go of their
call, so a stopped worker is not kept alive by its entry); they are dropped
when they reach the top of the heap. ``len()`` counts the live entries only.

The loop's timers wait in whole milliseconds, rounded up (libev on epoll), so a
wake-up lands 0-1 ms after the time asked for, plus the OS's own latency. The
watcher is armed ``LEAD`` (half a millisecond) before the earliest due time and
fires every entry due within ``LEAD`` of now: runs land about
evenly around their time (typically within half a millisecond either side)
instead of always late. An entry may therefore fire up to ``LEAD`` early.
"""
from __future__ import annotations

import heapq
from itertools import count
from time import monotonic
from typing import Any, Callable, List, Optional

from gevent.hub import get_hub

from ._errors import report

__all__ = ["Timers", "TimerEntry", "SLICE", "BATCH", "LEAD"]

#: The callback leaves the rest to the next turn of the loop after firing
#: entries for this many seconds.
SLICE = 0.002
#: ... or after firing this many entries, whichever comes first. Firing is cheap,
#: the runs it starts are not: the runs fired in one slice all run before the
#: hub gets back to its timers, and while they wait their greenlets and
#: arguments are alive, so a big batch both lags the hub and pushes short-lived
#: objects into the oldest GC generation (measured with 10,000 workers due
#: together: 40-60 ms of hub lag each second, mostly full collections).
BATCH = 64
#: How long before an entry's due time it may fire (see the
#: module docstring).
LEAD = 0.0005

_seq = count()
_INF = float("inf")


class TimerEntry:
    """One scheduled call: ``fn(*args)`` at monotonic time ``due``."""

    __slots__ = ("due", "seq", "fn", "args", "cancelled", "timers")

    def __init__(self, due: float, fn: Callable[..., Any], args: tuple, timers: "Timers") -> None:
        self.due = due
        self.seq = next(_seq)
        self.fn: Any = fn
        self.args = args
        self.cancelled = False
        self.timers: Optional[Timers] = timers

    def __lt__(self, other: "TimerEntry") -> bool:
        return (self.due, self.seq) < (other.due, other.seq)

    def cancel(self) -> None:
        """Drop this entry; it will not fire."""
        if self.cancelled:
            return
        self.cancelled = True
        self.fn, self.args = None, ()  # (it may sit in the heap until its due time)
        timers, self.timers = self.timers, None
        if timers is not None:
            timers._live -= 1


class Timers:
    """The heap of due times and the one loop timer that fires them."""

    def __init__(self) -> None:
        self._heap: List[TimerEntry] = []
        self._loop: Any = None
        #: the armed libev timer watcher, or None
        self._timer: Any = None
        #: when the armed watcher fires (monotonic), ``inf`` when none is armed
        self._armed_at = _INF
        self._running = False
        #: entries neither fired nor cancelled
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def start(self) -> None:
        """Start firing entries (in the calling thread's hub)."""
        if self._running:
            return
        self._running = True
        self._loop = get_hub().loop
        self._arm()

    def stop(self) -> None:
        """Stop firing and drop every entry."""
        self._running = False
        for entry in self._heap:
            entry.cancel()
        self._heap = []
        self._disarm()

    def add(self, due: float, fn: Callable[..., Any], *args: Any) -> TimerEntry:
        """Call ``fn(*args)`` from a hub callback at monotonic ``due`` (at most
        ``LEAD`` early).

        ``fn`` must not block: it should only schedule work."""
        entry = TimerEntry(due, fn, args, self)
        self._live += 1
        heapq.heappush(self._heap, entry)
        if self._running and due - LEAD < self._armed_at:
            self._arm()  # earlier than the watcher's time: re-arm it (no wake-up)
        return entry

    def _disarm(self) -> None:
        timer, self._timer = self._timer, None
        self._armed_at = _INF
        if timer is not None:
            timer.close()

    def _arm(self, delay: Optional[float] = None) -> None:
        """Arm the watcher for the earliest live entry (or in ``delay`` s)."""
        heap = self._heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        self._disarm()
        if not heap:
            return
        now = monotonic()
        at = heap[0].due - LEAD
        if delay is None:
            delay = at - now if at > now else 0.0
        self._armed_at = now + delay
        timer = self._timer = self._loop.timer(delay)
        # update=True: measure from the current time, not the loop's cached one
        timer.start(self._fire_due, update=True)

    def _fire_due(self) -> None:
        # A hub callback: every entry's fn only schedules work. Past the slice
        # (or the batch), the rest waits for a zero timer, which fires only
        # after the loop has run the greenlets just started and polled I/O.
        self._disarm()  # (closes the watcher that just fired)
        heap = self._heap
        now = monotonic()
        slice_end = now + SLICE
        budget = BATCH
        while heap:
            entry = heap[0]
            if entry.cancelled:
                heapq.heappop(heap)
                continue
            if entry.due > now + LEAD:
                break
            heapq.heappop(heap)
            fn, args = entry.fn, entry.args
            entry.cancel()  # fired: cancelling it later is a no-op
            try:
                fn(*args)
            except Exception:  # pragma: no cover - fns only schedule
                report("gworker timers: %r failed", fn)
            budget -= 1
            if not budget or monotonic() >= slice_end:
                if self._running:
                    self._arm(0.0)
                return
        if self._running:
            self._arm()
