"""Admission by priority: how many greenlets (or child processes) may run at once.

A :class:`PriorityPool` does not own greenlets; it counts *slots*. Work asks for a
slot at a priority and either gets it at once or waits in line: one FIFO per
priority (four of them), served most urgent first. A slot that frees is handed
straight to the most urgent waiter (no polling loop, no thundering herd): the
releasing code grants it, and the waiter starts in a later hub callback.

Limits, for ``pool_size=P``, ``reserve_normal=N``, ``reserve_high=H``:

======================  ==========================================
``TASK_LOW``            runs while fewer than ``P`` slots are held
``TASK_NORMAL``         ... fewer than ``P + N``
``TASK_HIGH``           ... fewer than ``P + N + H``
``TASK_CRITICAL``       admitted at once, always (even past ``max_size``)
======================  ==========================================

``max_size`` caps all but CRITICAL. Because the limits grow with urgency, when the
most urgent waiter does not fit, no other waiter does either.

Work that becomes runnable together starts in priority order: grants are made
most-urgent first, and immediate starts are collected in a small *ready heap*
that one hub callback flushes in priority order. What a priority cannot do is
pre-empt a greenlet that is already running: gevent switches only when a
greenlet yields.
"""
from __future__ import annotations

import heapq
from collections import deque
from itertools import count
from time import monotonic
from typing import Any, Callable, Deque, Dict, List, Literal, Optional, Tuple, Union, overload

from gevent.hub import Hub, Waiter, get_hub

from .priorities import PRIORITIES, TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL

__all__ = ["PriorityPool"]

_seq = count()

_WAITING, _GRANTED, _CANCELLED = 0, 1, 2

#: One flush of the ready heap works at most this long (seconds) in a hub
#: callback; the rest waits for the next turn of the loop.
FLUSH_SLICE = 0.002


@overload
def _check_size(value: Any, parameter: str, allow_none: Literal[False] = False) -> int: ...
@overload
def _check_size(value: Any, parameter: str, allow_none: bool) -> Optional[int]: ...
def _check_size(value: Any, parameter: str, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an integer; got %r" % (parameter, value))
    if value < 0:
        raise ValueError("%s must not be negative; got %r" % (parameter, value))
    return value


_NO_ARG = object()


class _Waiter:
    """One request waiting in line for a slot: ``grant(arg)`` (or ``grant()``) runs when
    a slot is handed over. Calling the entry withdraws it (see ``cancel``)."""

    __slots__ = ("priority", "grant", "arg", "state", "queued_at")

    def __init__(self, priority: int, grant: Callable[..., object], arg: Any = _NO_ARG) -> None:
        self.priority = priority
        self.grant = grant
        self.arg = arg
        self.state = _WAITING
        #: when it went into line (monotonic), set only if it had to wait
        self.queued_at = 0.0

    def fire(self) -> None:
        """Mark it granted and run ``grant``."""
        self.state = _GRANTED
        if self.arg is _NO_ARG:
            self.grant()
        else:
            self.grant(self.arg)

    def cancel(self) -> bool:
        """Withdraw the request; True if it was still waiting."""
        if self.state == _WAITING:
            self.state = _CANCELLED
            return True
        return False

    __call__ = cancel  # the entry is its own cancel callable: no bound method per request


class PriorityPool:
    """Counts slots and admits work by priority (see the module docstring)."""

    def __init__(
        self,
        pool_size: int = 100,
        reserve_normal: int = 10,
        reserve_high: int = 10,
        min_size: Union[int, str] = 0,
        max_size: Optional[int] = None,
        hub: Optional[Hub] = None,
    ) -> None:
        self.running = 0
        # One FIFO per priority, most urgent first (only four priorities exist:
        # no heap, no sequence number, no tuple per request), and how many
        # entries they hold in all, withdrawn ones included until they reach the
        # front (``_queued``: zero means nobody waits, checked on hot paths).
        self._lines: List[Deque[_Waiter]] = [deque() for _ in PRIORITIES]
        self._line: Dict[int, Deque[_Waiter]] = dict(zip(PRIORITIES, self._lines))
        # per priority, the lines it waits behind: its own and the more urgent
        self._ahead: Dict[int, List[Deque[_Waiter]]] = {
            priority: self._lines[:i + 1] for i, priority in enumerate(PRIORITIES)
        }
        self._queued = 0
        # Holds one item while anyone is in line, none otherwise; changed in
        # place, so a hot loop can keep it in a local and test it as cheaply as
        # a local (the queue worker's burst gives its slot up when it is true).
        #: non-empty while anyone waits in line for a slot, changed in place: a
        #: loop that runs items back to back in one slot (the queue burst) holds
        #: it in a local and gives its slot back once the list is non-empty
        self.waiting_flag: List[None] = []
        self._ready: List[Tuple[int, int, Callable[..., Any], tuple]] = []
        self._flush_scheduled = False
        self._granting = False
        self._hub = hub
        #: ``on_waited(entry, seconds)`` is called when a request that waited in
        #: line at least ``warn_after`` seconds is granted its slot (the
        #: supervisor's starvation warnings); requests admitted at once are
        #: never timed.
        self.on_waited: Optional[Callable[[Any, float], None]] = None
        self.warn_after = float("inf")
        self.configure(pool_size, reserve_normal, reserve_high, min_size, max_size)

    # -- settings -----------------------------------------------------------
    def configure(
        self,
        pool_size: int = 100,
        reserve_normal: int = 10,
        reserve_high: int = 10,
        min_size: Union[int, str] = 0,
        max_size: Optional[int] = None,
    ) -> None:
        """Set the limits (validated, naming the bad parameter) and admit any
        waiters the new limits let in. ``min_size`` is accepted for atasker
        compatibility (``'max'`` too, atasker's "as many as max_size");
        greenlets need no pre-spawning, so it changes nothing."""
        self.pool_size = _check_size(pool_size, "pool_size")
        self.reserve_normal = _check_size(reserve_normal, "reserve_normal")
        self.reserve_high = _check_size(reserve_high, "reserve_high")
        self.min_size = min_size if min_size == "max" else _check_size(min_size, "min_size")
        self.max_size = _check_size(max_size, "max_size", allow_none=True)
        low = self.pool_size
        normal = low + self.reserve_normal
        high = normal + self.reserve_high
        if self.max_size is not None:
            low, normal, high = (min(x, self.max_size) for x in (low, normal, high))
        self._limits = {TASK_LOW: low, TASK_NORMAL: normal, TASK_HIGH: high}
        self._grant_waiting()

    def limit(self, priority: int) -> float:
        """How many slots may be held when work of ``priority`` is admitted."""
        if priority == TASK_CRITICAL:
            return float("inf")
        return self._limits[priority]

    @property
    def hub(self) -> Hub:
        """The hub whose loop runs deferred starts (bound on first use)."""
        if self._hub is None:
            self._hub = get_hub()
        return self._hub

    def bind_hub(self, hub: Hub) -> None:
        """Run deferred starts in ``hub`` from now on (its owner's hub, bound
        as the owner starts)."""
        self._hub = hub

    @property
    def waiting(self) -> int:
        """How many requests wait for a slot."""
        return sum(1 for line in self._lines for w in line if w.state == _WAITING)

    def queued(self) -> int:
        """How many requests are in line: a cheap upper bound of ``waiting``
        (withdrawn requests count until they reach the front)."""
        return self._queued

    # -- admission ----------------------------------------------------------
    def try_admit(self, priority: int) -> bool:
        """Take a slot at once if ``priority`` may have one now; never waits.

        A request that fits still waits its turn behind an earlier waiter of the
        same or a more urgent priority (FIFO within a priority)."""
        if priority == TASK_CRITICAL or (
            self.running < self._limits[priority]
            and not (self._queued and any(self._ahead[priority]))
        ):
            self.running += 1
            return True
        return False

    def _enqueue(self, entry: _Waiter) -> None:
        entry.queued_at = monotonic()  # (only a request that must wait is timed)
        self._line[entry.priority].append(entry)
        self._queued += 1
        if self._queued == 1:
            self.waiting_flag.append(None)

    def _dequeue(self, line: Deque[_Waiter]) -> None:
        line.popleft()
        self._queued -= 1
        if not self._queued:
            self.waiting_flag.clear()

    def admit(self, priority: int, who: Any = None) -> None:
        """Take a slot, waiting cooperatively (in the calling greenlet) if needed.
        ``who`` (e.g. the worker) is what ``on_waited`` reports if it waited long.

        If the waiting greenlet is killed, its place is given up; a slot granted
        to it in the meantime is passed on."""
        if self.try_admit(priority):
            return
        hub = self.hub
        waiter: Waiter[None] = Waiter(hub)
        entry = _Waiter(priority, lambda _who: hub.loop.run_callback(waiter.switch, None), who)
        self._enqueue(entry)
        try:
            waiter.get()
        except BaseException:
            if entry.state == _GRANTED:
                self.release()
            entry.state = _CANCELLED
            raise

    def defer(self, priority: int, start: Callable[..., None], arg: Any = _NO_ARG) -> Callable[[], bool]:
        """Call ``start(arg)`` (``start()`` without ``arg``) once a slot is held
        for it — soon if one is free now.

        Nothing waits: no greenlet exists until the slot is granted. Returns a
        ``cancel()`` callable that withdraws the request (True if it was withdrawn
        before ``start`` ran). Passing ``arg`` instead of a closure saves two
        objects per request, which matters when thousands wait."""
        entry = _Waiter(priority, start, arg)
        if self.try_admit(priority):
            self.start_soon(priority, self._run_entry, entry)
        else:
            self._enqueue(entry)
        return entry

    def _run_entry(self, entry: _Waiter) -> None:
        # A deferred start admitted at once: runs from the ready-heap flush.
        if entry.state == _CANCELLED:
            self.release()
            return
        entry.fire()

    def release(self) -> None:
        """Give a slot back; the most urgent waiters that now fit are granted."""
        self.running -= 1
        if self._queued:
            self._grant_waiting()

    def _grant_waiting(self) -> None:
        # A grant may give its slot straight back (work that fails at once
        # releases in its start): that release must not grant from inside this
        # loop, or a long run of such waiters would nest one call per waiter
        # until the recursion limit. The loop below sees the freed slot instead.
        if self._granting:
            return
        self._granting = True
        try:
            lines = self._lines
            limits = self._limits
            while self._queued:
                for line in lines:  # the most urgent line that has anyone in it
                    if line:
                        break
                entry = line[0]
                if entry.state == _CANCELLED:
                    self._dequeue(line)
                    continue
                priority = entry.priority
                if priority != TASK_CRITICAL and self.running >= limits[priority]:
                    return
                self._dequeue(line)
                self.running += 1
                if self.on_waited is not None:
                    waited = monotonic() - entry.queued_at
                    if waited >= self.warn_after:
                        self.on_waited(entry, waited)
                entry.fire()
        finally:
            self._granting = False

    # -- the ready heap -------------------------------------------------------
    def start_soon(self, priority: int, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` from a hub callback soon, in priority order with
        everything else made ready in the same turn of the loop. ``fn`` must not
        block (it runs in the hub); it starts greenlets or switches waiters."""
        heapq.heappush(self._ready, (priority, next(_seq), fn, args))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.hub.loop.run_callback(self._flush)

    def _flush(self) -> None:
        # Runs in the hub greenlet: every fn here only schedules, never blocks.
        # Each fn is cheap (spawning a greenlet is a few µs, more with gevent's
        # greenlet-tree tracking), but a thousand interval runs falling due
        # together add up to tens of ms: past FLUSH_SLICE the rest is left for
        # a zero timer, which fires only after the loop has polled I/O and
        # run the timers and greenlets already due. Priority order holds
        # across slices: the heap keeps everything not yet started.
        self._flush_scheduled = False
        ready = self._ready
        deadline = monotonic() + FLUSH_SLICE
        while ready:
            _, _, fn, args = heapq.heappop(ready)
            fn(*args)
            if ready and monotonic() >= deadline:
                self._flush_scheduled = True
                timer = self.hub.loop.timer(0)
                timer.start(self._flush_later, timer)
                return

    def _flush_later(self, timer: Any) -> None:
        timer.close()
        self._flush()

