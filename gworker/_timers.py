"""Timers: when interval workers are due, kept in one heap per supervisor.

A waiting interval worker costs one heap entry here, not a parked greenlet and
not a libev timer of its own. One libev timer watcher is armed for the earliest
entry; when it fires, its callback (in the hub, no greenlet switch) fires every
due entry and re-arms for the next. Adding an entry later than the armed time
changes nothing, an earlier one re-arms the watcher: no wake-up either way.
Firing only *schedules* work (an interval run asks the pool for a slot and is
handed to a runner when admitted), and the callback stops after a couple of
milliseconds (or ``BATCH`` entries) and leaves the rest to a zero timer, so ten
thousand workers falling due in the same millisecond do not hold the hub for
the whole batch: the hub is never late by more than a slice. Runs due at the
same moment start in priority order within one batch (the runners' lines
order them); across batches, by due time.

An entry is a list compared in C and re-added as it is from run to run (see
:data:`TimerEntry`). Entries added with a ``lane`` (an interval worker's
period) in due order wait in that lane's FIFO instead of the heap: runs of one
period come back in the order they fired, so a hundred thousand one-second
workers cost a deque append and a popleft per run, not a heap push and pop
over a hundred thousand entries (each touching ~17 of them, cold in the
cache). The heap and the lanes take turns within a batch; an entry added out
of its lane's order goes to the heap.

Entries are cancelled lazily: ``cancel()`` marks them (and lets go of their
call, so a stopped worker is not kept alive by its entry); they are dropped
when they reach the front. ``len()`` counts the live entries only.

The loop's timers wait in whole milliseconds, rounded up (libev on epoll), so a
wake-up lands 0-1 ms after the time asked for, plus the OS's own latency. The
watcher is armed ``LEAD`` (half a millisecond) before the earliest due time and
fires every entry due within ``LEAD`` of now: runs land about
evenly around their time (typically within half a millisecond either side)
instead of always late. An entry may therefore fire up to ``LEAD`` early.
"""
from __future__ import annotations

import heapq
from collections import deque
from itertools import count
from time import monotonic
from typing import Any, Callable, Deque, Dict, List, Optional

from gevent.hub import get_hub

from ._errors import report

__all__ = ["Timers", "TimerEntry", "SLICE", "BATCH", "LEAD", "LANES"]

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
#: After firing, the watcher waits at least this long (seconds) for the next
#: entry, rather than firing again at the next turn of the loop: entries due
#: just after the ones fired (ten thousand workers a second are ten a
#: millisecond) then fire together, at most about ``LEAD`` late, instead of
#: one or two per turn of the loop — each turn, and each wake-up of the
#: process, costs tens of microseconds.
GAP = 0.0005
#: At most this many lanes exist at a time (entries of any other lane go to the heap).
LANES = 8

_seq = count()
_INF = float("inf")


#: One scheduled call, ``[due, seq, fn, arg]``: ``fn(arg)`` at monotonic time
#: ``due``. A plain list, so that the heap compares entries in C (``due`` first,
#: then the sequence number, which is unique in the heap; 0 in a lane, where
#: nothing is compared) and the interpreter's fast path for ``list[int]`` reads
#: and writes its fields (a subclass of list takes the generic path: measured
#: ~14 ns more per access, about ten accesses per run). A fired entry is pushed
#: again as it is (:meth:`Timers.readd`), so a worker that runs every second
#: allocates nothing for its next run. ``seq`` is -1 while the entry is out of
#: the heap; ``fn`` is None once it is cancelled.
TimerEntry = List[Any]

_DUE, _SEQ, _FN, _ARG = 0, 1, 2, 3


class Timers:
    """The heap of due times, the lanes, and the one loop timer that fires them."""

    def __init__(self) -> None:
        self._heap: List[TimerEntry] = []
        #: lane key → FIFO of entries in due order (see the module docstring)
        self._lanes: Dict[Any, Deque[TimerEntry]] = {}
        self._loop: Any = None
        #: the armed libev timer watcher, or None
        self._timer: Any = None
        #: when the armed watcher fires (monotonic), ``inf`` when none is armed
        self._armed_at = _INF
        self._running = False
        #: entries scheduled and not cancelled
        self._live = 0
        #: which source a slice fires first (they take turns: none starves)
        self._turn = 0

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
        for source in [self._heap, *self._lanes.values()]:
            for entry in source:
                entry[_FN] = entry[_ARG] = None
                entry[_SEQ] = -1
        self._heap = []
        self._lanes = {}
        self._live = 0
        self._disarm()

    def add(self, due: float, fn: Callable[[Any], Any], arg: Any = None, lane: Any = None) -> TimerEntry:
        """Call ``fn(arg)`` from a hub callback at monotonic ``due`` (at most
        ``LEAD`` early); returns the entry (for :meth:`cancel`, :meth:`readd`).
        ``lane``: see :meth:`readd`.

        ``fn`` must not block: it should only schedule work."""
        entry: TimerEntry = [due, -1, fn, arg]
        self.readd(entry, due, lane)
        return entry

    def readd(self, entry: TimerEntry, due: float, lane: Any = None) -> None:
        """Schedule an entry that has fired (and not been cancelled) again, at ``due``.

        ``lane`` (any hashable, e.g. a worker's period) names entries that are
        mostly added in due order: they are kept in a FIFO of their own while
        they are (see the module docstring), at no cost of the heap's."""
        if entry[_SEQ] >= 0 or entry[_FN] is None:
            raise ValueError("readd: the entry is still scheduled, or cancelled")
        entry[_DUE] = due
        self._live += 1
        fifo = self._lanes.get(lane) if lane is not None else None
        if fifo is not None and (not fifo or fifo[-1][_DUE] <= due):
            # (the common case: in order, in its lane. A lane is never
            # compared, so its entries' seq is 0: no new int per run)
            entry[_SEQ] = 0
            fifo.append(entry)
        elif lane is not None and fifo is None and len(self._lanes) < LANES:
            entry[_SEQ] = 0
            self._lanes[lane] = deque((entry,))
        else:
            entry[_SEQ] = next(_seq)  # (the heap's order among equal due times)
            heapq.heappush(self._heap, entry)  # no lane, or out of its lane's order
        armed_at = self._armed_at
        if due - LEAD < armed_at and self._running and armed_at > monotonic():
            # earlier than the watcher's time, which is still to come: re-arm
            # it (no wake-up; one armed to fire at once needs nothing)
            self._arm()

    def cancel(self, entry: TimerEntry) -> None:
        """Drop ``entry``: it will not fire, and can not be re-added. It lets
        go of its call at once (it may sit in the heap or its lane until its
        due time, and must not keep a stopped worker alive)."""
        if entry[_FN] is None:
            return
        entry[_FN] = entry[_ARG] = None
        if entry[_SEQ] >= 0:  # (else it has fired: nothing is counted)
            self._live -= 1

    def _disarm(self) -> None:
        timer, self._timer = self._timer, None
        self._armed_at = _INF
        if timer is not None:
            timer.close()

    def _earliest(self) -> float:
        """The due time of the earliest live entry (``inf`` if none); drops
        cancelled entries from the fronts, and lanes that are empty."""
        heap = self._heap
        while heap and heap[0][_FN] is None:
            heapq.heappop(heap)[_SEQ] = -1
        earliest = heap[0][_DUE] if heap else _INF
        empty = None
        for key, fifo in self._lanes.items():
            while fifo and fifo[0][_FN] is None:
                fifo.popleft()[_SEQ] = -1
            if not fifo:
                empty = [key] if empty is None else empty + [key]
            elif fifo[0][_DUE] < earliest:
                earliest = fifo[0][_DUE]
        if empty is not None:
            for key in empty:
                del self._lanes[key]
        return earliest

    def _arm(self, delay: Optional[float] = None, min_delay: float = 0.0) -> None:
        """Arm the watcher for the earliest live entry (or in ``delay`` s),
        at least ``min_delay`` s from now."""
        earliest = self._earliest()
        self._disarm()
        if earliest == _INF:
            return
        now = monotonic()
        at = earliest - LEAD
        if delay is None:
            delay = at - now if at - now > min_delay else min_delay
        self._armed_at = now + delay
        timer = self._timer = self._loop.timer(delay)
        # update=True: measure from the current time, not the loop's cached one
        timer.start(self._fire_due, update=True)

    def _fire_due(self) -> None:
        # A hub callback: every entry's fn only schedules work. Past the slice
        # (or the batch), the rest waits for a zero timer, which fires only
        # after the loop has run the greenlets just started and polled I/O.
        # The heap and the lanes fire in turns, a different one first at
        # each slice.
        self._disarm()  # (closes the watcher that just fired)
        now = monotonic()
        sources: List[Any] = [self._heap, *self._lanes.values()]
        turn = self._turn = (self._turn + 1) % len(sources)
        budget = BATCH
        for source in sources[turn:] + sources[:turn]:
            budget = self._fire(source, source is self._heap, now + LEAD, now + SLICE, budget)
            if not budget:
                if self._running:
                    self._arm(0.0)
                return
        if self._running:
            self._arm(min_delay=GAP)

    def _fire(self, source: Any, heap: bool, until: float, slice_end: float, budget: int) -> int:
        # Fire the entries of one source due by ``until``; returns what is
        # left of the budget (0: the slice is over).
        pop = heapq.heappop if heap else None
        check = 0
        while source:
            entry = source[0]
            fn = entry[_FN]
            if fn is None:  # cancelled
                (pop(source) if pop is not None else source.popleft())[_SEQ] = -1
                continue
            if entry[_DUE] > until:
                break
            if pop is not None:
                pop(source)
            else:
                source.popleft()
            entry[_SEQ] = -1  # fired: out of the heap, ready to be re-added
            self._live -= 1
            try:
                fn(entry[_ARG])
            except Exception:  # pragma: no cover - fns only schedule
                report("gworker timers: %r failed", fn)
            budget -= 1
            if not budget:
                return 0
            check += 1
            if check == 8:  # (the clock every few entries: firing one only schedules)
                check = 0
                if monotonic() >= slice_end:
                    return 0
        return budget
