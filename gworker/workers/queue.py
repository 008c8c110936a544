"""Queue workers: one executor call per item put into the worker's queue.

The queue is a gevent queue made when the worker is constructed and kept
across restarts. The worker's own greenlet runs the hot path — get, call, get
— with no sleep and no greenlet per item; each sync call holds one slot of the
supervisor's pool at the worker's priority. ``get()`` does not switch when an
item is waiting, so during a burst the loop yields to the hub itself, at least
every few milliseconds.

Stopping never puts anything into the queue (a sentinel could not even be
compared in a ``PriorityQueue`` of tuples): a parked ``get()`` is interrupted
instead. Items still queued at ``stop()`` stay in the queue and are processed
after the next ``start()``; ``stop(drain=True)`` processes them first.

``shutdown(deadline)`` is the stop of a process that is about to exit: drain
until the deadline, then interrupt the run still in progress (``GreenletExit``
thrown into it, or its coroutine cancelled) and take out whatever the queue
still holds, so that the caller can persist or re-queue it. It returns a
:class:`QueueShutdown`: every item put was either processed or is in its
``left``, never both. :class:`gworker.integrations.lifecycle.WorkerSet` builds
the graceful stop of a web server process on it.

``join()`` on a gevent queue (``get_queue_obj().join(timeout)``) returns once
every item put was processed: the worker calls the queue's ``task_done()``
after each item's executor call has ended, returned or raised (an executor must
not call it itself). Items left queued at ``stop()`` stay unfinished until they
are processed after the next ``start()``.

An ``async def`` executor on a gevent queue: the worker's loop is itself a coroutine, one
long-lived task on the worker's aloop per start (no greenlet of its own). It
takes the items that are queued without switching and awaits the executor
directly — no task, no loop wake-up and no greenlet switch per item. When the
queue is empty it awaits a small greenlet parked in the queue's ``peek()``
(which takes nothing out: an item is never held outside the queue while the
worker waits), so putting an item wakes it through the hub. During a burst it
lets the other coroutines of its loop and the hub run at least every few
milliseconds. The rules are those of the sync loop: order, one call at a
time, the hooks, ``False``, errors, ``stop()`` (with or without ``drain``), and
``stop()`` from inside the executor. If its aloop is stopped under it, the
worker stops (logged as a warning) and the items still queued stay queued.
If the aloop is not running at ``start()``, the worker falls back to a greenlet
that hands each item to the aloop (each call then fails and is reported, as
for any other executor that cannot run).

The queue-object protocol
-------------------------
``q=`` also takes any object that follows a small protocol, :class:`QueueObject`
(duck-typed; :class:`gworker.redis.RedisStreamQueue` is one): three required
methods, ``get``, ``qsize`` and ``put_threadsafe``, and three optional ones,
``ack``, ``fail`` and ``release``, for a queue that wants to know how each item
ended (a broker's). The greenlet loop serves every queue; a gevent queue is
simply an object of the protocol whose optional methods are absent. (A
protocol object with an ``async def`` executor keeps that loop, each call
handed to the aloop: the coroutine loop above relies on gevent's ``peek()``.)
"""
from __future__ import annotations

import asyncio
import contextvars
import inspect
import queue as std_queue
from collections import deque
from time import monotonic
from typing import Any, Deque, Dict, List, NamedTuple, Optional, Protocol, Tuple, Union

import gevent
import gevent.queue

from ..aio import Aloop, AloopNotActive, await_greenlet
from ..context import capture, in_context
from .._deadline import Deadline
from .._hubsafe import os_thread_ident, post, yield_to_hub
from ._engine import _PLAIN_FIFO, FAILED, NO_SLOT, Engine
from ._run import Halt, Run
from .base import YIELD_EVERY, logger
from .continuous import BackgroundAsyncWorker

__all__ = [
    "BackgroundQueueWorker", "QueueShutdown", "QueueObject", "make_queue", "is_queue_object",
    "INTERRUPT_TIMEOUT",
]

#: Seconds a run interrupted by ``shutdown()`` at its deadline gets to unwind.
INTERRUPT_TIMEOUT = 0.2

_QUEUE_CLASSES = {
    asyncio.Queue: gevent.queue.Queue,
    asyncio.PriorityQueue: gevent.queue.PriorityQueue,
    asyncio.LifoQueue: gevent.queue.LifoQueue,
    std_queue.Queue: gevent.queue.Queue,
    std_queue.PriorityQueue: gevent.queue.PriorityQueue,
    std_queue.LifoQueue: gevent.queue.LifoQueue,
}


class QueueObject(Protocol):
    """The queue-object protocol: what ``q=`` takes besides gevent's queues.

    The three methods below are required. Four more are optional — absent
    means "nothing to do" — and so are not members of this class (a
    ``Protocol`` cannot leave a member out); an object that has one must give
    it this signature:

    * ``ack(item) -> None`` — the executor *returned* (any value, ``False``
      too) for the item ``get()`` returned last. The worker calls ``get``, the
      executor and then ``ack``/``fail`` strictly in turn, so the object may
      track that item itself (no envelope per item).
    * ``fail(item, exc) -> None`` — the executor raised ``exc``; the item is
      not acknowledged (a broker leaves it pending, for a later retry).
    * ``release() -> None`` — the worker's loop has ended (``stop()``, or an
      executor returned ``False``): make acknowledgements durable and let go
      of items fetched but not yet returned by ``get()``. Called in the
      worker's greenlet, so ``stop(wait=True)`` returns after it. An object
      with ``release()`` keeps its items at :meth:`~BackgroundQueueWorker.shutdown`
      (a broker delivers them again).
    * ``run_context(item) -> Optional[contextvars.Context]`` — the context
      the run of the item ``get()`` returned last is to be made in, or None
      for the worker's own (see :mod:`gworker.context`): a broker's entry may
      carry its producer's trace context (:func:`gworker.context.context_from`).
      Called after ``get()``, before the executor, whatever the worker's
      ``propagate_context`` (which is about contexts captured in this process).

    For type checkers only: it is not ``runtime_checkable``, because an
    ``isinstance`` check would test only that the names exist; the worker
    checks with :func:`is_queue_object` (callable, and a ``get`` that is not
    a coroutine function).
    """

    def get(self) -> Any:
        """Return the next item, waiting cooperatively (through the hub) while
        there is none. The worker calls it *parked*: ``stop()`` may throw
        :class:`~gworker.workers.base.Halt` (a ``GreenletExit``) into the
        wait, and an interrupted ``get()`` must lose nothing."""

    def qsize(self) -> int:
        """How many items ``get()`` returns without waiting; cheap and local
        (the loop asks it before every item). It also feeds ``drain=True``,
        ``shutdown()`` and ``get_info()['queue_length']``, so for a remote
        queue it is what has already been fetched, not the remote backlog."""

    def put_threadsafe(self, item: Any) -> Any:
        """Add an item, from any greenlet or OS thread. The worker's own
        ``put_threadsafe`` (and ``await put()``) hand items to it."""


def is_queue_object(q: Any) -> bool:
    """True if ``q`` follows the queue-object protocol (see the module
    docstring): callable ``get``, ``qsize`` and ``put_threadsafe``, and a
    ``get`` that is not a coroutine function."""
    if isinstance(q, type):
        return False
    get = getattr(q, "get", None)
    return (
        callable(get) and not inspect.iscoroutinefunction(get)
        and callable(getattr(q, "qsize", None)) and callable(getattr(q, "put_threadsafe", None))
    )


def make_queue(q: Any, parameter: str = "q") -> Any:
    """The queue for ``q=``: True → a gevent ``Queue``; a gevent queue class →
    an instance of it; asyncio's (or the standard library's) ``Queue``,
    ``PriorityQueue``, ``LifoQueue`` → gevent's class of the same name; a gevent
    queue object, or an object of the queue-object protocol → itself."""
    if q is True:
        return gevent.queue.Queue()
    if isinstance(q, type):
        if q in _QUEUE_CLASSES:
            return _QUEUE_CLASSES[q]()
        if issubclass(q, gevent.queue.Queue):
            return q()
        raise TypeError(
            "%s must be True, a queue class (gevent's, or asyncio's Queue/PriorityQueue/"
            "LifoQueue) or a gevent queue object; got the class %r" % (parameter, q)
        )
    if isinstance(q, gevent.queue.Queue) or is_queue_object(q):
        return q
    raise TypeError(
        "%s must be True, a queue class (gevent's, or asyncio's Queue/PriorityQueue/"
        "LifoQueue), a gevent queue object or an object with get/qsize/put_threadsafe"
        " (the queue-object protocol); got %r" % (parameter, q)
    )


class QueueShutdown(NamedTuple):
    """What :meth:`BackgroundQueueWorker.shutdown` did.

    * ``finished`` — the worker's loop ended by the deadline (nothing was
      interrupted);
    * ``interrupted`` — ``(item,)`` if the run in progress at the deadline was
      interrupted (it may have been partly processed: treat it as "at least
      once"), else ``()``;
    * ``left`` — the items now in the caller's hands, not processed, in order:
      the interrupted item first, then every item taken out of the queue. Empty
      for a queue that keeps its items (a protocol object with ``release()``,
      such as a broker's queue: it delivers them, and the interrupted item,
      again).
    """

    finished: bool
    interrupted: Tuple[Any, ...]
    left: List[Any]


class QueueRun(Run):
    """A start of a queue worker: whether ``stop(drain=True)`` asked it to
    process what is queued first."""

    __slots__ = ("draining",)

    def __init__(self, supervisor: Any) -> None:
        super().__init__(supervisor)
        self.draining = False


class BackgroundQueueWorker(BackgroundAsyncWorker):
    """Calls ``run(task, *args, **kwargs)`` once per item put into its queue.

    A :class:`BackgroundAsyncWorker`, as in atasker; ``poll_delay`` does not
    throttle it."""

    holds_slot = True
    retries_runs = True
    kind = "queue"
    #: Opt-in for queue workers (``propagate_context=True``): capturing a
    #: context per item costs about as much as the rest of the item's path
    #: (see gworker.context and the README's measured figures).
    propagate_context = False
    _run: Optional[QueueRun]  # type: ignore[assignment]  # (made by _new_run)

    _no_singleton = ("singleton=: a queue already shares its items among its consumers (each item runs in one"
                     " of them); give every process's worker the same shared queue (e.g. a RedisStreamQueue)"
                     " instead")

    def __init__(self, *args: Any, q: Any = None, queue: Any = None, **kwargs: Any) -> None:
        if q is not None and queue is not None:
            raise TypeError("give the queue as q or queue, not both")
        spec = q if q is not None else queue
        self._queue = make_queue(True if spec is None else spec, "q" if q is not None else "queue")
        super().__init__(*args, **kwargs)
        self._inbox: Deque[Any] = deque()
        self._inbox_scheduled = False
        #: the protocol object's fail(item, exc), or None (then failures are not kept)
        self._fail = getattr(self._queue, "fail", None)
        if not isinstance(self._queue, gevent.queue.Queue):
            # a protocol object takes items from any thread itself
            self.put_threadsafe = self._queue.put_threadsafe  # type: ignore[assignment]
            self.put = self._put_to_object  # type: ignore[assignment]
        #: the OS thread of the supervisor's hub, once started (put_threadsafe's fast path)
        self._hub_ident: Any = None
        #: the contexts captured with the items put (see _remember), or None for
        #: a worker that does not propagate them (read here, at construction):
        #: for an unbounded FIFO queue, a deque of (item, context) in put order
        #: (``_fifo``), else a dict by item id
        self._contexts: Any = None
        q = self._queue
        self._fifo = type(q) in _PLAIN_FIFO and q.maxsize is None
        if self.propagate_context and isinstance(q, gevent.queue.Queue):
            self._contexts = deque() if self._fifo else {}
        #: puts of items whose contexts are recorded, waiting for room in a bounded queue
        self._putting = 0

    # -- feeding the queue --------------------------------------------------------------------
    def get_queue_obj(self) -> Any:
        """The worker's queue: a gevent queue, or the protocol object given."""
        return self._queue

    def put_threadsafe(self, task: Any) -> None:
        """Put ``task`` into the queue, from any greenlet or any OS thread.

        From the hub's thread the item is queued at once (on a full bounded
        queue the calling greenlet waits). From another OS thread items are
        collected and handed to the hub in batches, in the order each thread
        put them. With ``propagate_context=True`` the item's run is made in the
        caller's context (see :mod:`gworker.context`)."""
        contexts = self._contexts
        if self._hub_ident == os_thread_ident():
            if contexts is None:
                self._queue.put(task)  # the common case: from a greenlet of the hub
                return
            if self._fifo:  # (_put_remembered, spelled out: this is every item's path)
                contexts.append((task, capture()))
                self._queue.put(task)  # (unbounded: it never waits)
            else:
                self._put_remembered(task, capture())
            return
        hub = self.supervisor.foreign_hub()
        if hub is None:
            if contexts is None:
                self._queue.put(task)
            else:
                self._put_remembered(task, capture())
            return
        # (with contexts: the item and its context, captured in the calling thread)
        self._inbox.append(task if contexts is None else (task, capture()))
        if not self._inbox_scheduled:
            self._inbox_scheduled = True
            post(hub, self._take_inbox)

    def _take_inbox(self) -> None:
        # A hub callback: it must not block, so a full bounded queue is fed by a greenlet.
        self._inbox_scheduled = False
        inbox = self._inbox
        items = []
        while inbox:
            items.append(inbox.popleft())
        if self._contexts is not None:
            for i, (item, ctx) in enumerate(items):
                self._remember(item, ctx)
                items[i] = item
        q = self._queue
        if q.maxsize is None or q.maxsize <= 0:
            for item in items:
                q.put_nowait(item)
        else:
            self._putting += len(items)
            gevent.spawn(self._put_all, q, items)

    def _put_all(self, q: gevent.queue.Queue, items: list) -> None:
        try:
            for item in items:
                q.put(item)
        finally:
            self._putting -= len(items)

    async def put(self, task: Any) -> None:
        """Put ``task`` into the queue from a coroutine running on an aloop
        (with ``propagate_context=True``, its run is made in the coroutine's
        context)."""
        q = self._queue
        if self._contexts is not None:
            self._remember(task, capture())
        if not q.full():
            q.put_nowait(task)
            return
        from ..aio import await_greenlet

        self._putting += 1
        try:
            await await_greenlet(gevent.spawn(q.put, task))
        finally:
            self._putting -= 1

    # -- the items' contexts (propagate_context=True) ----------------------------------------------
    # A gevent queue holds the items themselves (a PriorityQueue compares
    # them, get_queue_obj() shows them), so an item's context is kept beside
    # it, and the loop takes an item's context as it takes the item:
    #
    # * an unbounded FIFO queue hands its items out in put order: a deque of
    #   (item, context) in that order, whose oldest entry is the item's (an
    #   item taken out another way leaves its entry at the front: dropped
    #   when a later item's is found behind it; an item put into the queue
    #   directly has none);
    # * any other (priority, LIFO, bounded: a put that waits for room can be
    #   overtaken): by the item's id, with the item (which keeps the id from
    #   being reused while the entry lives), one context per put of it, in
    #   put order.
    #
    # Entries of items that left the queue another way (another consumer, a
    # direct get) are all dropped when the queue is next empty with no put
    # waiting for room.

    def _remember(self, task: Any, ctx: contextvars.Context) -> None:
        contexts = self._contexts
        if self._fifo:
            contexts.append((task, ctx))
            return
        entry = contexts.get(id(task))
        if entry is None:
            contexts[id(task)] = [task, ctx]
        else:
            entry.append(ctx)

    def _put_remembered(self, task: Any, ctx: contextvars.Context) -> None:
        self._remember(task, ctx)
        q = self._queue
        if q.full():
            self._put_waiting(q, task)
        else:
            q.put(task)

    def _put_waiting(self, q: gevent.queue.Queue, task: Any) -> None:
        # a put that waits for room: its context is not stale meanwhile
        self._putting += 1
        try:
            q.put(task)
        finally:
            self._putting -= 1

    def _take_context(self, task: Any) -> Optional[contextvars.Context]:
        """The context captured when ``task`` was put (the oldest one, if it
        was put more than once), taken; None if it carries none."""
        contexts = self._contexts
        if self._fifo:
            for i, (item, ctx) in enumerate(contexts):
                if item is task:
                    for _ in range(i + 1):  # (those before it left the queue another way)
                        contexts.popleft()
                    return ctx
            return None  # put into the queue directly
        entry = contexts.pop(id(task), None)
        if entry is None:
            return None
        ctx = entry[1]
        if len(entry) > 2:
            del entry[1]
            contexts[id(task)] = entry
        return ctx

    def _drop_stale_contexts(self) -> None:
        """The queue is empty: entries left (with no put waiting for room) are
        of items that left it another way."""
        if not self._putting:
            self._contexts.clear()  # type: ignore[union-attr]  # (propagating)

    async def _put_to_object(self, task: Any) -> None:
        # put() for a protocol object: its put_threadsafe may wait (a network
        # round trip), so a greenlet makes it while the coroutine awaits.
        from ..aio import await_greenlet

        await await_greenlet(gevent.spawn(self._queue.put_threadsafe, task))

    # -- stopping --------------------------------------------------------------------------------
    def stop(self, wait: Union[bool, float] = True, drain: bool = False) -> None:  # type: ignore[override]
        """Stop the worker (``wait`` as in ``Worker.stop``). Items still queued
        stay in the queue (they are processed after the next ``start()``),
        unless ``drain=True``: then the worker first processes every item
        queued at this moment."""
        self.supervisor.run_in_hub(self._stop, Deadline.from_wait(wait), {"drain": drain} if drain else {})

    def shutdown(self, deadline: Union[Deadline, bool, float] = True, drain: bool = True,
                 interrupt_timeout: float = INTERRUPT_TIMEOUT) -> QueueShutdown:
        """Stop the worker by ``deadline`` and hand back what it did not process.

        ``deadline`` is a :class:`~gworker._deadline.Deadline` or a ``wait=``
        value (``True``: no limit; ``False``: now; seconds from now). In turn:

        1. an active worker is stopped — with ``drain=True`` (the default) it
           first processes the items queued at this moment, as
           ``stop(drain=True)`` does;
        2. the call waits until the worker's loop has ended, or the deadline;
        3. at the deadline the worker takes no more items, and the run still
           in progress is interrupted (``GreenletExit`` thrown into it, an
           ``async def`` executor's coroutine cancelled), given
           ``interrupt_timeout`` seconds to unwind;
        4. whatever the queue still holds is taken out (a gevent queue: with
           ``get_nowait()``, each item then marked done with ``task_done()``
           so that ``join()`` returns; a protocol object: the ``qsize()``
           items ``get()`` returns without waiting) — except from a protocol
           object with ``release()``, which keeps its items.

        Returns a :class:`QueueShutdown`. Safe on a worker that was never
        started or is already stopped (then only step 4 applies). Thread-safe;
        not from inside the worker's own executor (it cannot interrupt the
        call it is made from)."""
        if not isinstance(deadline, Deadline):
            deadline = Deadline.from_wait(deadline, "deadline")
        return self.supervisor.run_in_hub(self._shutdown, deadline, drain, interrupt_timeout)

    def _shutdown(self, deadline: Deadline, drain: bool, interrupt_timeout: float) -> QueueShutdown:
        run = self._run
        if run is not None and not run.ended:
            current = gevent.getcurrent()
            if run.owns(current) or self._in_own_run(run, current):
                raise RuntimeError("worker %s: shutdown() from inside its own executor" % self.name)
        if self.is_active():
            self._stop(Deadline.from_wait(False), {"drain": True} if drain else {})
        if deadline.waits:
            self._wait_stopped(deadline.remaining())
        interrupted: Tuple[Any, ...] = ()
        finished = self.is_stopped()
        if not finished and run is not None:
            # Take no more items, and interrupt the run in progress, so that its
            # item is handed back instead of being cut off by the process's exit
            # (or finishing *and* being handed back).
            run.draining = False
            self._interrupt(interrupt_timeout)
            in_progress = run.in_progress  # still set: the run did not return
            if in_progress is not None:
                interrupted = in_progress
        q = self._queue
        if _keeps_its_items(q):
            return QueueShutdown(finished, interrupted, [])
        left = list(interrupted)
        _take_all(q, left)
        _mark_done(q, len(left))
        if self._contexts:  # the items are the caller's now, without their contexts
            for item in left[len(interrupted):]:
                self._take_context(item)
        return QueueShutdown(finished, interrupted, left)

    def _stop_options(self, run: Run, options: Dict[str, Any]) -> None:  # type: ignore[override]
        drain = options.pop("drain", False)
        super()._stop_options(run, options)
        run.draining = bool(drain)  # type: ignore[attr-defined]  # (a QueueRun)

    def _halt(self, run: QueueRun) -> None:  # type: ignore[override]
        if run.draining and self._queue.qsize():
            return  # the loop keeps taking items until the queue is empty
        # (the coroutine loop's peeker, a waker, is killed: the loop wakes and
        # sees the run stopped; a running call is left alone)
        run.stop()

    def _in_own_run(self, run: Run, current: Any) -> bool:
        # The coroutine loop runs in its aloop's greenlet: waiting there for the
        # loop to end could never end.
        aloop = self._engine.aloop if self._engine is not None else None
        return run.task is not None and aloop is not None and current is aloop.greenlet

    def _interrupt(self, timeout: float) -> None:
        run = self._run
        task = run.task if run is not None else None
        if task is None:
            super()._interrupt(timeout)
            return
        loop = task.get_loop()
        if not task.done() and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)  # CancelledError in the running call
        if not self._in_own_run(run, gevent.getcurrent()):  # type: ignore[arg-type]
            run.wait_ended(timeout)  # type: ignore[union-attr]

    # -- hooks ----------------------------------------------------------------------------------
    def before_queue_get(self) -> None:
        """Called before the worker waits for its next item."""

    def after_queue_get(self, task: Any) -> None:
        """Called with each item just taken from the queue, before the executor."""

    # -- the loop -----------------------------------------------------------------------------------
    def _new_run(self) -> QueueRun:
        return QueueRun(self.supervisor)

    def _keeps_errors(self) -> bool:
        return self._fail is not None  # fail(item, exc) wants each failure's exception

    def _launch(self, run: QueueRun, engine: Engine) -> None:  # type: ignore[override]
        self._hub_ident = os_thread_ident()  # (start() runs in the supervisor's hub thread)
        if engine.aloop is not None and isinstance(self._queue, gevent.queue.Queue):
            # (a protocol object, which may want ack/fail/release, keeps the greenlet loop)
            try:
                coro = self._aloop_loop(run, engine)
                ctx = run.context  # (the task's context: a copy of the start's)
                run.task = engine.aloop.create_task(coro) if ctx is None else ctx.run(engine.aloop.create_task, coro)
                return
            except (AloopNotActive, RuntimeError):
                # not running (or a task cannot be made from here): the greenlet
                # loop below hands each item to the aloop, and reports its failure
                run.task = None
        run.spawn_loop(self._loop, run, engine)

    def _goes_on(self, run: QueueRun, outcome: Any, waiting: int) -> bool:
        """After a call, or before taking the next item: whether the loop goes
        on — it is active, or draining what is still queued (``waiting``
        items); a ``False`` from the executor ends it unless it drains."""
        if run.draining:
            return bool(waiting)
        return run.active and outcome is not False

    async def _aloop_loop(self, run: QueueRun, engine: Engine) -> None:
        """The loop for an ``async def`` executor, as a task on the worker's aloop
        (see the module docstring); the rules are ``_loop``'s."""
        q = self._queue
        before = _overridden(self, "before_queue_get")
        after = _overridden(self, "after_queue_get")
        call = engine.call_async
        done = _task_done_of(q)
        contexts = self._contexts
        aloop: Aloop = engine.aloop  # type: ignore[assignment]  # (an async engine has one)
        aloop.add_stop_callback(self._aloop_stopping)
        last_yield = monotonic()
        outcome = None
        try:
            while self._goes_on(run, outcome, len(q)):
                if before is not None:
                    before()
                if len(q):
                    # a burst: let this loop's other coroutines and the hub run
                    # every few ms (the clock was read when the previous call ended)
                    if engine.ended - last_yield >= YIELD_EVERY:
                        await _yield_async()
                        last_yield = monotonic()
                        if not self._goes_on(run, outcome, len(q)):
                            break
                else:
                    if not run.active:
                        break
                    if contexts:
                        self._drop_stale_contexts()
                    await self._park_async(run, q)
                    last_yield = monotonic()
                    if not self._goes_on(run, outcome, len(q)):
                        break
                try:
                    task = q.get(False)  # ``get`` as the sync loop calls it, never waiting
                except gevent.queue.Empty:  # another consumer of a shared queue took it
                    continue
                if after is not None:
                    after(task)
                # Set until the call returns: after an interrupt at shutdown it
                # still names the item (see shutdown()).
                pre = run.in_progress = (task,)
                ctx = self._take_context(task) if contexts else None
                # (an item's context: each step of its call runs in it, no task of its own)
                outcome = await (call(pre) if ctx is None else in_context(ctx, call(pre)))
                run.in_progress = None
                if done is not None:
                    self._mark_done(done)
        finally:
            aloop.remove_stop_callback(self._aloop_stopping)
            run.draining = False
            run.task = None
            run.end(self._finished)

    async def _park_async(self, run: QueueRun, q: gevent.queue.Queue) -> None:
        """Wait until the queue has an item, or ``stop()`` kills the peeker."""
        peeker = run.spawn_waker(q.peek)
        run.parked = True
        try:
            await await_greenlet(peeker)
        finally:
            run.parked = False
            if not peeker.dead:  # cancelled while waiting
                peeker.kill(block=False)

    def _aloop_stopping(self) -> None:
        # The aloop's stop began (in its loop): end the worker, which would
        # otherwise keep the loop from ever finishing its tasks.
        if self.is_active():
            aloop = self._engine.aloop if self._engine is not None else None
            logger.warning("worker %s: its aloop %s is stopping: the worker stops (queued items stay"
                           " in its queue)", self.name, aloop.name if aloop else "?")
            self.stop(wait=False)

    def _loop(self, run: QueueRun, engine: Engine) -> None:  # type: ignore[override]
        q = self._queue
        size = q.qsize
        ack = getattr(q, "ack", None)
        fail = self._fail
        # The hooks are called only when a subclass (or the instance) overrides them.
        before = _overridden(self, "before_queue_get")
        after = _overridden(self, "after_queue_get")
        call = engine.call
        done = _task_done_of(q)
        # Bursts of a plain sync executor run back to back in one pool slot (engine.batch).
        batch = (
            engine.batch if isinstance(q, gevent.queue.Queue) and ack is None
            and before is None and after is None and engine.batches else None
        )
        # the items' contexts (see gworker.context): those put through the
        # worker, or what a protocol object carries in its entries
        contexts = self._contexts
        take = self._take_context
        if contexts is not None and not self._fifo:
            batch = None  # (its items' contexts are kept by id: see _take_context)
        run_context = None if isinstance(q, gevent.queue.Queue) else getattr(q, "run_context", None)
        last_yield = monotonic()
        outcome = None
        try:
            while self._goes_on(run, outcome, size()):
                if size() and engine.ended - last_yield >= YIELD_EVERY:
                    # a burst: let the hub run I/O and timers every few ms (the
                    # clock was read when the previous call ended). Before the
                    # next item is taken: an interrupt landing here (a kill at a
                    # shutdown deadline) finds it still queued, and whatever
                    # happened meanwhile (stop(), another consumer) is seen above.
                    yield_to_hub()
                    last_yield = monotonic()
                    continue
                if before is not None:
                    before()
                if size():
                    task = q.get()
                else:
                    if not run.active:
                        break
                    if contexts:
                        self._drop_stale_contexts()
                    task = run.park(q.get)
                    last_yield = monotonic()
                if after is not None:
                    after(task)
                # Set until the call returns: after a kill at shutdown it still
                # names the interrupted item (see shutdown()).
                pre = run.in_progress = (task,)
                if contexts:
                    ctx = take(task)
                elif run_context is not None:
                    ctx = run_context(task)
                else:
                    ctx = None
                if batch is not None and run.active and len(q):
                    outcome = batch(run, q, task, last_yield + YIELD_EVERY, done, self._task_done_twice,
                                    ctx, contexts, take)
                    if outcome is not NO_SLOT:
                        run.in_progress = None
                        continue
                outcome = call(pre) if ctx is None else ctx.run(call, pre)
                if outcome is FAILED and fail is not None:
                    fail(task, engine.take_error())
                elif ack is not None:
                    ack(task)
                if done is not None:
                    self._mark_done(done)
                run.in_progress = None
        except Halt:
            pass
        finally:
            run.draining = False
            try:
                release = getattr(q, "release", None)
                if release is not None:
                    release()
            finally:
                run.end(self._finished)

    def _mark_done(self, done: Any) -> None:
        try:
            done()
        except ValueError:
            self._task_done_twice()

    def _task_done_twice(self) -> None:
        # task_done() raised "called too many times": the executor calls it too
        logger.warning("worker %s: its queue's task_done() was called more often than items"
                       " were taken; the worker calls it for each item, the executor must not",
                       self.name)

    def get_info(self) -> Dict[str, Any]:
        info = super().get_info()
        info["queue_length"] = self._queue.qsize()
        return info



def _task_done_of(q: Any) -> Any:
    """A gevent queue's ``task_done`` (gevent >= 25.4 counts unfinished items on
    every ``Queue``; before, ``JoinableQueue`` only), else None."""
    if isinstance(q, gevent.queue.Queue):
        return getattr(q, "task_done", None)
    return None


def _keeps_its_items(q: Any) -> bool:
    """A protocol object with ``release()``: a broker keeps (and delivers again)
    whatever the worker fetched and did not finish."""
    return not isinstance(q, gevent.queue.Queue) and callable(getattr(q, "release", None))


def _take_all(q: Any, items: List[Any]) -> None:
    """Append to ``items`` what ``q`` (not a broker's queue) still holds."""
    if isinstance(q, gevent.queue.Queue):
        while True:
            try:
                items.append(q.get_nowait())
            except gevent.queue.Empty:
                return
    for _ in range(q.qsize()):  # get() returns that many without waiting
        items.append(q.get())


def _mark_done(q: Any, n: int) -> None:
    """Items handed back leave a gevent queue done, so that its ``join()`` returns."""
    done = _task_done_of(q)
    if done is None:
        return
    for _ in range(n):
        try:
            done()
        except ValueError:  # the executor called task_done() itself
            return


def _overridden(worker: BackgroundQueueWorker, hook: str) -> Any:
    """The bound hook if it differs from the no-op default, else None."""
    bound = getattr(worker, hook)
    if getattr(bound, "__func__", None) is getattr(BackgroundQueueWorker, hook):
        return None
    return bound


async def _yield_async() -> None:
    """From a coroutine on an aloop: let the loop's other coroutines run, then
    the hub (other greenlets, other aloops, timers and I/O)."""
    await asyncio.sleep(0)
    yield_to_hub()



