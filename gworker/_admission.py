"""Admission by priority: how many greenlets (or child processes) may run at once.

A :class:`PriorityPool` does not own greenlets; it counts *slots*. Work asks for a
slot at a priority and either gets it at once or waits in line: one FIFO per
priority (four of them), served most urgent first. A slot that frees is handed
straight to the most urgent waiter (no polling loop, no thundering herd): the
releasing code grants it, and the waiter starts in a later hub callback.

Slots are *tokens* (:class:`Slot`), as a capacity limiter's borrowers: the
holder (a worker's start, a task) gets one from :meth:`PriorityPool.slot` and
acquires and releases through it, once each in turn. The pool refuses, with
:class:`SlotError`, a release of a token that is not held (a second release,
or one never acquired) and any token another pool made — so a slot leak or a
double release shows up where it happens, not as a pool that slowly fills or
admits too much. A token is reused for its holder's next acquisition: holding
a slot costs no object per run, and a token waiting in line is the line's entry.

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
most-urgent first, and a *deferred* start (:meth:`PriorityPool.defer`: work
that has no greenlet yet) is handed, once admitted, to the pool's
:class:`~gworker._runners.Runners`, whose lines are served most urgent first.
What a priority cannot do is pre-empt a greenlet that is already running:
gevent switches only when a greenlet yields.
"""
from __future__ import annotations

from collections import deque
from time import monotonic
from typing import Any, Callable, Deque, Dict, List, Literal, Optional, Union, overload

from gevent.hub import Hub, Waiter

from ._runners import Runners
from .priorities import PRIORITIES, TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL, check_priority

__all__ = ["PriorityPool", "Slot", "SlotError"]

#: A slot's states: not held; in line for the pool; held; withdrawn (for good,
#: from the line or before its deferred start); admitted — held, its deferred
#: start submitted to a runner and not begun (still withdrawable).
IDLE, WAITING, HELD, WITHDRAWN, ADMITTED = 0, 1, 2, 3, 4


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


class SlotError(RuntimeError):
    """A slot was released (or acquired) by someone who may not: released
    while not held (twice, or never acquired), given to a pool that did not
    make it, or acquired while already held or in line."""


class Slot:
    """The claim of one holder (a worker's start, a task) on one slot of a
    :class:`PriorityPool`, at a fixed priority: a token.

    Made by :meth:`PriorityPool.slot`; acquired (:meth:`~PriorityPool.try_acquire`,
    :meth:`~PriorityPool.acquire`, :meth:`~PriorityPool.defer`) and then
    released (:meth:`~PriorityPool.release`) exactly once per acquisition, by
    the pool that made it; anything else raises :class:`SlotError`. A slot is
    reused for its holder's next acquisition, so that holding a slot costs no
    object per run. Invariants: ``state`` is IDLE, WAITING, HELD or WITHDRAWN;
    the pool counts one running slot per HELD token; a WITHDRAWN token is
    never acquired again (its holder is gone).

    While it waits in line it is also the pool's line entry, and calling it
    (or :meth:`cancel`) withdraws it, so that ``defer`` needs no request
    object and no closure.
    """

    __slots__ = ("pool", "priority", "holder", "state", "grant", "deferred", "queued_at")

    def __init__(self, pool: "PriorityPool", priority: int, holder: Any = None) -> None:
        self.pool = pool
        self.priority = priority
        #: who holds it: what the starvation report names (a worker, a Task)
        self.holder = holder
        self.state = IDLE
        #: in line: ``grant(slot)`` runs when the slot is handed over — in a
        #: runner for a ``deferred`` start (see :meth:`PriorityPool.defer`)
        self.grant: Optional[Callable[["Slot"], object]] = None
        self.deferred = False
        #: when it went into line (monotonic), set only if it had to wait
        self.queued_at = 0.0

    @property
    def held(self) -> bool:
        """True between an acquisition and its release."""
        return self.state == HELD

    def cancel(self) -> bool:
        """Withdraw the slot, for good, from the line or before its deferred
        start begins; True if it was withdrawn. A slot whose start has begun
        (or that an ``acquire()`` got) stays held: release it. A slot waiting
        in ``acquire()`` is the waiting greenlet's: kill that greenlet to
        withdraw it (this refuses, returning False: the greenlet would never
        be woken)."""
        state = self.state
        if (state == WAITING and self.deferred) or state == ADMITTED:
            self.state = WITHDRAWN
            return True
        return False

    __call__ = cancel  # the slot is its own withdraw callable

    def go(self) -> None:
        """The deferred start, made by a runner (see :meth:`PriorityPool.defer`):
        ``grant(slot)``, holding the slot — unless it was withdrawn meanwhile."""
        if self.state != ADMITTED:  # withdrawn after it was admitted
            self.pool._give_back(self)
            return
        self.state = HELD
        grant = self.grant  # (a slot read: ``self.grant(...)`` would be a method lookup)
        grant(self)  # type: ignore[misc]  # (set by defer)

    def __repr__(self) -> str:
        return "<Slot of %r priority=%s %s>" % (
            self.holder, self.priority, ("idle", "waiting", "held", "withdrawn", "admitted")[self.state])


class PriorityPool:
    """Counts slots and admits work by priority (see the module docstring)."""

    def __init__(self, hub: Optional[Hub] = None, runners: Optional[Runners] = None) -> None:
        self.running = 0
        #: slots granted so far, at once or after a wait (for the metrics' pool-wait histogram)
        self.admitted = 0
        #: ``on_granted(priority, seconds)`` is called for each grant of a slot
        #: that had waited in line (not for those granted at once): where the
        #: grant is made, so it must be quick (the metrics' pool-wait histogram)
        self.on_granted: Optional[Callable[[int, float], None]] = None
        # One FIFO per priority, most urgent first (only four priorities exist:
        # no heap, no sequence number, no tuple per request), and how many
        # entries they hold in all, withdrawn ones included until they reach the
        # front (``_queued``: zero means nobody waits, checked on hot paths).
        self._lines: List[Deque[Slot]] = [deque() for _ in PRIORITIES]
        self._line: Dict[int, Deque[Slot]] = dict(zip(PRIORITIES, self._lines))
        # per priority, the lines it waits behind: its own and the more urgent
        self._ahead: Dict[int, List[Deque[Slot]]] = {
            priority: self._lines[:i + 1] for i, priority in enumerate(PRIORITIES)
        }
        self._queued = 0
        #: non-empty while anyone waits in line for a slot, changed in place: a
        #: loop that runs items back to back in one slot (the queue burst) holds
        #: it in a local and gives its slot back once the list is non-empty
        self.waiting_flag: List[None] = []
        self._granting = False
        #: where deferred starts are made once admitted (their hub is the pool's)
        self.runners = runners if runners is not None else Runners(hub=hub)
        if hub is not None:
            self.runners.bind_hub(hub)
        #: ``on_waited(slot, seconds)`` is called when a slot that waited in
        #: line at least ``warn_after`` seconds is granted (the supervisor's
        #: starvation warnings); slots acquired at once are never timed.
        self.on_waited: Optional[Callable[[Slot, float], None]] = None
        self.warn_after = float("inf")
        self.pool_size, self.reserve_normal, self.reserve_high = 100, 10, 10
        self.min_size: Union[int, str] = 0
        self.max_size: Optional[int] = None
        self.configure()

    # -- settings -----------------------------------------------------------
    def configure(self, pool_size: Any = None, reserve_normal: Any = None, reserve_high: Any = None,
                  min_size: Any = None, max_size: Any = None) -> None:
        """Set the limits (validated, naming the bad parameter; one left out,
        or None, keeps its value: at first ``pool_size=100``,
        ``reserve_normal=10``, ``reserve_high=10``, no ``max_size``) and admit
        any waiters the new limits let in. ``min_size`` is accepted for
        atasker compatibility (``'max'`` too, atasker's "as many as
        max_size"); greenlets need no pre-spawning, so it changes nothing."""
        # every value checked before any is set: a bad one changes nothing
        pool_size = self.pool_size if pool_size is None else _check_size(pool_size, "pool_size")
        reserve_normal = (self.reserve_normal if reserve_normal is None
                          else _check_size(reserve_normal, "reserve_normal"))
        reserve_high = self.reserve_high if reserve_high is None else _check_size(reserve_high, "reserve_high")
        if min_size is None:
            min_size = self.min_size
        elif min_size != "max":
            min_size = _check_size(min_size, "min_size")
        max_size = self.max_size if max_size is None else _check_size(max_size, "max_size")
        self.pool_size, self.reserve_normal, self.reserve_high = pool_size, reserve_normal, reserve_high
        self.min_size, self.max_size = min_size, max_size
        low = self.pool_size
        normal = low + self.reserve_normal
        high = normal + self.reserve_high
        if self.max_size is not None:
            low, normal, high = (min(x, self.max_size) for x in (low, normal, high))
        #: per priority, the number of held slots below which work of that
        #: priority is admitted (TASK_CRITICAL's: infinite); read on hot paths
        self.limits: Dict[int, float] = {TASK_CRITICAL: float("inf"), TASK_LOW: low, TASK_NORMAL: normal,
                                         TASK_HIGH: high}
        self._grant_waiting()

    def limit(self, priority: int) -> float:
        """How many slots may be held when work of ``priority`` is admitted."""
        return self.limits[priority]

    @property
    def hub(self) -> Hub:
        """The hub whose loop runs deferred starts: its runners' (bound on first use)."""
        return self.runners.hub

    def bind_hub(self, hub: Hub) -> None:
        """Run deferred starts in ``hub`` from now on (its owner's hub, bound
        as the owner starts)."""
        self.runners.bind_hub(hub)

    @property
    def waiting(self) -> int:
        """How many slots wait in line."""
        return sum(1 for line in self._lines for s in line if s.state == WAITING)

    def queued(self) -> int:
        """How many slots are in line: a cheap upper bound of ``waiting``
        (withdrawn ones count until they reach the front)."""
        return self._queued

    # -- admission ----------------------------------------------------------
    def slot(self, priority: int, holder: Any = None) -> Slot:
        """A token for ``holder`` to acquire slots of this pool with, at ``priority``."""
        return Slot(self, check_priority(priority), holder)

    def _refuse(self, slot: Any, what: str) -> None:
        if not isinstance(slot, Slot):
            raise TypeError("slot must be a Slot of this pool (PriorityPool.slot()); got %r" % (slot,))
        if slot.pool is not self:
            raise SlotError("%s: %r belongs to another pool" % (what, slot))
        if what == "release":
            raise SlotError("release: %r is not held (released twice, or never acquired)" % (slot,))
        raise SlotError("%s: %r is not idle (held, in line, or withdrawn)" % (what, slot))

    def try_acquire(self, slot: Slot) -> bool:
        """Take a slot for ``slot`` at once if its priority may have one now;
        never waits. False: not now (the token stays idle).

        A request that fits still waits its turn behind an earlier waiter of
        the same or a more urgent priority (FIFO within a priority)."""
        try:
            if slot.state != IDLE or slot.pool is not self:
                self._refuse(slot, "acquire")
        except AttributeError:  # not a Slot (a try costs nothing until it catches)
            self._refuse(slot, "acquire")
        priority = slot.priority
        if priority == TASK_CRITICAL or (
            self.running < self.limits[priority]
            and not (self._queued and any(self._ahead[priority]))
        ):
            self.running += 1
            self.admitted += 1
            slot.state = HELD
            return True
        return False

    def _enqueue(self, slot: Slot, grant: Callable[[Slot], object]) -> None:
        slot.grant = grant
        slot.state = WAITING
        slot.queued_at = monotonic()  # (only a request that must wait is timed)
        self._line[slot.priority].append(slot)
        self._queued += 1
        if self._queued == 1:
            self.waiting_flag.append(None)

    def _dequeue(self, line: Deque[Slot]) -> None:
        line.popleft()
        self._queued -= 1
        if not self._queued:
            self.waiting_flag.clear()

    def acquire(self, slot: Slot) -> None:
        """Take a slot for ``slot``, waiting cooperatively (in the calling
        greenlet) if needed.

        If the waiting greenlet is killed, its place is given up (the token is
        idle again); a slot granted to it in the meantime is passed on."""
        if self.try_acquire(slot):
            return
        hub = self.hub
        waiter: Waiter[None] = Waiter(hub)
        slot.deferred = False
        self._enqueue(slot, lambda _slot: hub.loop.run_callback(waiter.switch, None))
        try:
            waiter.get()
        except BaseException:
            if slot.state == HELD:  # granted, but the wake-up came too late
                self.release(slot)
            elif slot.state == WAITING:  # (a rare path: the line's scan is fine)
                self._line[slot.priority].remove(slot)
                self._queued -= 1
                if not self._queued:
                    self.waiting_flag.clear()
                slot.state = IDLE
            raise

    def defer(self, slot: Slot, start: Callable[[Slot], object]) -> Slot:
        """Call ``start(slot)`` in a runner greenlet once ``slot`` holds a
        slot — soon if one is free now — in priority order with every other
        deferred start made ready meanwhile.

        Nothing waits: no greenlet is taken until the slot is granted (and
        then a reused one, see :mod:`gworker._runners`). ``start`` must catch
        its own exceptions. Returns the slot, whose ``cancel()`` (or call)
        withdraws it, for good, until ``start`` begins (True if it did)."""
        if self.try_acquire(slot):  # (refuses a slot that is not idle, changing nothing)
            slot.grant = start
            slot.deferred = True
            slot.state = ADMITTED
            self.runners.submit(slot.priority, slot)
        else:
            slot.deferred = True
            self._enqueue(slot, start)
        return slot

    def _give_back(self, slot: Slot) -> None:
        # A deferred start admitted, then withdrawn before it began: the slot
        # it was counted for is free again.
        self.running -= 1
        if self._queued:
            self._grant_waiting()

    def release(self, slot: Slot) -> None:
        """Give ``slot``'s slot back; the most urgent waiters that now fit are
        granted. Raises :class:`SlotError` unless ``slot`` is held and of this pool."""
        try:
            if slot.state != HELD or slot.pool is not self:
                self._refuse(slot, "release")
        except AttributeError:  # not a Slot
            self._refuse(slot, "release")
        slot.state = IDLE
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
            limits = self.limits
            while self._queued:
                for line in lines:  # the most urgent line that has anyone in it
                    if line:
                        break
                slot = line[0]
                if slot.state != WAITING:  # withdrawn while in line
                    self._dequeue(line)
                    continue
                priority = slot.priority
                if self.running >= limits[priority]:
                    return
                self._dequeue(line)
                self.running += 1
                self.admitted += 1
                if self.on_waited is not None or self.on_granted is not None:
                    waited = monotonic() - slot.queued_at
                    if self.on_granted is not None:
                        self.on_granted(priority, waited)
                    if self.on_waited is not None and waited >= self.warn_after:
                        self.on_waited(slot, waited)
                if slot.deferred:
                    slot.state = ADMITTED
                    self.runners.submit(priority, slot)
                else:
                    slot.state = HELD
                    slot.grant(slot)  # type: ignore[misc]  # (set by _enqueue)
        finally:
            self._granting = False
