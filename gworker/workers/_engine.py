"""The engine: *how* a worker's executor is called, written once for every kind.

A worker kind decides *when* its executor runs; an :class:`Engine`, built at
each ``start()``, decides how:

* **the mode** — chosen once: ``sync`` (called in the hub's thread, by the
  kind's greenlet), ``sync+slot`` (the same, holding one slot of the
  supervisor's pool at the worker's priority while it runs), ``async`` (a
  coroutine on the worker's aloop, which the calling greenlet waits for) or
  ``process`` (a static ``run``, called in the supervisor's process pool);
* **the keywords** — ``_name``, ``o``, ``_worker`` (not across a process
  boundary) and ``_task_id`` are added to the start's arguments; the dict is
  built once per start and only ``_task_id`` changes per call. A start with
  no arguments of its own (the common case) calls the executor with the four
  keywords spelled out: the same call, at less than half the cost of
  unpacking ``**kw``. A singleton worker's calls (see
  :mod:`gworker.redis.singleton`) also receive ``_fence``, its run's claim's
  token, and take the general path;
* **the outcome** — :meth:`Engine.call` returns what the executor returned,
  or :data:`FAILED` when it raised (an exception, or an escaped
  ``gevent.Timeout``): the failure is counted and routed, inside the
  ``except`` block, to the worker's ``on_error`` or to the log (one
  rate-limited line per kind of failure). ``GreenletExit``,
  ``KeyboardInterrupt`` and ``SystemExit`` pass through. Whether to go on
  (``False`` stops a worker) is the kind's to decide;
* **limits** — a time limit (``timeout``: the call is cut off with
  :class:`~gworker.limits.RunTimeout`, see :mod:`gworker.limits`) and, for
  queue workers, retries with backoff: a call that failed is made again, in
  place, after the policy's wait, which the run's ``stop()`` ends (the
  failure is then final). Only the final failure reaches ``on_error`` or the
  error log; each retry is counted and logged at WARNING. An engine with
  neither keeps the paths below as they are;
* **stats** — runs, errors, when the last run started, how long it took;
  retries, final failures, runs cut off by their limit, and runs that ended
  past a limit they did not let be enforced; and, while gworker's metrics
  are on, each run's duration handed to :attr:`Engine.stats`
  (``stats.observe(engine, started, ended)``, in the greenlet of the run,
  after it): every run, except in the queue's fast path (:meth:`Engine.batch`),
  where a burst of items back to back is sampled — at most one run every
  :data:`SAMPLE_EVERY` seconds — so that a burst pays one comparison per
  item, not an observation.

The kinds call :meth:`~Engine.call` (or :meth:`~Engine.call_at` for a run due
at an exact time), :meth:`~Engine.call_async` from a coroutine on the aloop,
and :meth:`~Engine.batch` — the only home of the queue's fast path — and
never look at the mode.
"""
from __future__ import annotations

import asyncio
import inspect
import sys
import time
from itertools import count
from time import monotonic
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

import gevent
import gevent.queue
from gevent.hub import Waiter

from .._admission import HELD, IDLE, Slot
from .._errors import FailureLog, describe, logger, report
from .._gevent import queue_items
from ..events import RUN_FAILED, RUN_FINISHED, RUN_STARTED, RUN_TIMED_OUT, WorkerEvent
from ..limits import RunTimeout, limit_async, log_overrun

if TYPE_CHECKING:
    from ..aio import Aloop
    from ._run import Run
    from .base import Worker

__all__ = ["Engine", "FencedEngine", "FAILED", "NO_SLOT", "SAMPLE_EVERY", "call_ids", "wait_until"]

#: ``_task_id`` of every executor call of every worker
call_ids = count(1)

#: In a burst of queue items (:meth:`Engine.batch`), at most one run per this
#: many seconds is handed to the engine's ``stats`` (see the module docstring).
SAMPLE_EVERY = 0.001

#: The keywords of a start without arguments, in the order ``Engine`` adds them.
_PLAIN_KEYS = ["_name", "o", "_worker"]


class _Sentinel:
    """An outcome that no executor can return (compared by identity)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: What :meth:`Engine.call` returns for a call that raised.
FAILED: Any = _Sentinel("FAILED")
#: What :meth:`Engine.batch` returns when no slot was free at once (no call made).
NO_SLOT: Any = _Sentinel("NO_SLOT")


def wait_until(until: float) -> None:
    """Watch the clock, without yielding, until ``until`` (a precise run's last
    few tens of microseconds: see :mod:`gworker.workers.interval`)."""
    while monotonic() < until:
        pass


class Engine:
    """How one start of a worker calls its executor (see the module docstring).

    ``args``/``kwargs`` are the start's; ``previous`` is the engine of the
    worker's previous start, whose stats carry on. ``keep_errors``: keep the
    exception of a failed call for :meth:`take_error` (a queue that wants to
    know how each item ended)."""

    # Laid out in the order every call reads and writes them: an engine a run
    # touches once a second is out of the cache, and its first lines are the
    # ones a call needs (a small effect: a run's cost is mostly the
    # interpreter's work, see docs/benchmarks.md).
    __slots__ = (
        "fast", "watch", "slot", "_pool", "runs", "started", "ended", "last_duration", "stats",
        "executor", "_kname", "_ko", "worker", "_spin_until",
        "args", "kw", "plain", "mode", "aloop", "_supervisor", "_invoke", "_sync", "_keep_errors", "_error",
        "_failures", "errors", "limits", "_listeners", "_due", "failed_run",
    )

    #: each call receives ``_fence`` (see :class:`FencedEngine`)
    fenced = False

    def __init__(self, worker: "Worker", executor: Callable[..., Any], args: tuple,
                 kwargs: Dict[str, Any], process: bool, holds_slot: bool,
                 previous: Optional["Engine"] = None, keep_errors: bool = False) -> None:
        supervisor = worker.supervisor
        self.worker = worker
        self.executor = executor
        self.args = args
        self._supervisor = supervisor
        # _name and o first (in _PLAIN_KEYS order), whether given or not
        kw = {"_name": kwargs.get("_name", worker.name), "o": kwargs.get("o", worker.o)}
        kw.update(kwargs)
        self.aloop: Optional[Aloop] = None
        self.slot: Optional[Slot] = None
        self._pool = supervisor.thread_pool
        #: the worker's time limit and retries, and what they counted; None
        #: for a worker with neither (the common case pays for nothing here)
        limits = self.limits = _Limits.of(worker, previous)
        timeout = None if limits is None else limits.timeout
        #: a sync call (the executor, in the hub's thread): Engine._invoke_sync, or with a time limit
        self._sync = Engine._invoke_sync if timeout is None else Engine._invoke_sync_limited
        if process:
            self.mode = "process"  # no _worker: the call crosses a process boundary
            self._invoke = Engine._invoke_process  # (a function: no bound method per start)
        else:
            kw["_worker"] = worker
            if inspect.iscoroutinefunction(executor):
                # Coroutines take no pool slot (as in atasker, priority does not apply).
                self.mode = "async"
                self.aloop = supervisor.aloops.resolve(worker.loop)
                self._invoke = Engine._invoke_async  # (a function: no bound method per start)
            elif holds_slot:
                self.mode = "sync+slot"
                self.slot = self._pool.slot(worker.priority, worker)
                self._invoke = Engine._invoke_slot  # (a function: no bound method per start)
            else:
                self.mode = "sync"
                self._invoke = self._sync  # (a function: no bound method per start)
        if self.mode == "async" and timeout is not None:
            self._invoke = Engine._invoke_async_limited
        self.kw = kw
        self.plain = not args and list(kw) == _PLAIN_KEYS and kw["_worker"] is worker
        #: call_held's own path: a plain executor called in the hub's thread, unlimited
        self.fast = self.plain and self.mode.startswith("sync") and limits is None
        self._kname, self._ko = kw["_name"], kw["o"]
        self._spin_until: Optional[float] = None
        self._keep_errors = keep_errors
        self._error: Optional[BaseException] = None
        self._failures: Optional[FailureLog] = previous._failures if previous is not None else None
        self.runs: int = previous.runs if previous is not None else 0
        self.errors: int = previous.errors if previous is not None else 0
        self.started: Optional[float] = previous.started if previous is not None else None
        self.ended = 0.0
        self.last_duration: Optional[float] = previous.last_duration if previous is not None else None
        listeners = self._listeners = supervisor.listeners
        #: non-empty while anyone listens to run_started or run_finished: the
        #: one test of every hot path (a list changed in place, so a listener
        #: added later is seen; see gworker.events)
        self.watch = listeners.runs
        #: the due time of the observed run in progress (see _call_observed)
        self._due: Optional[float] = None
        #: where each run's duration goes, or None (the metrics' per-name
        #: statistics: see gworker.integrations.metrics; one falsy test per
        #: run while there is none)
        self.stats: Any = None
        factory = supervisor._run_stats
        if factory is not None:
            self.stats = factory(worker)
        #: the number (``runs``) of the latest run that failed, or 0
        self.failed_run: int = previous.failed_run if previous is not None else 0

    def _take_fence(self) -> Optional[int]:
        """A :class:`FencedEngine`'s token for the call being made."""
        return None

    # -- what the kinds may ask --------------------------------------------------------------------
    @property
    def runs_sync(self) -> bool:
        """True for a plain executor called in the hub's thread (not a
        coroutine, not a call in a child process)."""
        return self.mode.startswith("sync")

    @property
    def batches(self) -> bool:
        """True if :meth:`batch` serves this engine: a plain executor started
        without arguments of its own, holding a slot per call, with no limits."""
        return self.plain and self.slot is not None and self.limits is None

    @property
    def last_run(self) -> Optional[float]:
        """Wall-clock time (``time.time()``) the last run started, or None."""
        if self.started is None:
            return None
        return time.time() - (monotonic() - self.started)

    # -- admission for a run that has no greenlet yet ---------------------------------------------
    def defer(self, item: Any, grant: Callable[[Any], object]) -> None:
        """Have a runner greenlet (see :mod:`gworker._runners`) make a call
        that is due but has no greenlet: ``grant(slot)`` once this engine's
        slot is held, for a mode that holds one (the next :meth:`call` or
        :meth:`call_held` then uses it), else ``item.go()`` — in priority order
        with everything else made ready at the same time. Waiting for a slot
        costs a line entry, not a parked greenlet. (``grant`` is made once per
        start, not per call: it waits on the slot.)"""
        slot = self.slot
        if slot is not None:
            self._pool.defer(slot, grant)
        else:
            self._pool.runners.submit(self.worker.priority, item)

    def withdraw(self) -> bool:
        """Withdraw, for good, a :meth:`defer` whose slot has not been granted
        yet (the worker stopped); True if there was one."""
        slot = self.slot
        return slot is not None and slot.cancel()

    def release_unused(self) -> None:
        """Give back a slot that :meth:`defer` took for a call that is not
        going to be made (the worker stopped meanwhile)."""
        slot = self.slot
        if slot is not None and slot.state == HELD:
            self._pool.release(slot)

    # -- the one call path ---------------------------------------------------------------------------
    def call(self, pre: tuple = ()) -> Any:
        """Make one executor call (``pre``: positional arguments before the
        start's, a queue item); returns its value, or :data:`FAILED`.

        Two clock reads per call (each costs about as much as a small Python
        call): the start, kept as monotonic time (``last_run`` converts it on
        demand), and the end, kept in ``ended`` for the kind's yield check."""
        if self.fast and not pre and self._spin_until is None:
            return self.call_held()  # the common call, without the general path's frames
        if self.limits is not None:
            return self._call_limited(pre)
        if self.watch:
            return self._call_observed(pre)
        kw = self.kw
        kw["_task_id"] = next(call_ids)
        if self.fenced:
            kw["_fence"] = self._take_fence()
        self.runs += 1
        self.started = started = monotonic()
        try:
            return self._invoke(self, pre, kw)
        except (Exception, gevent.Timeout):
            return self._failed(1, pre)
        except BaseException as exc:
            self._interrupted(exc, pre)
            raise
        finally:
            self.ended = ended = monotonic()
            self.last_duration = ended - started
            if self.stats is not None:
                self.stats.observe(self, started, ended)

    def call_held(self) -> Any:
        """:meth:`call` without arguments (not for :meth:`call_at`'s runs):
        the slot, for a mode that takes one, is taken here unless
        :meth:`defer` took it, and given back after the call. For a plain
        executor in the hub's thread — the common interval run, an event
        worker's — this is the whole cost of a call: two clock reads, three
        counters, the four keywords spelled out."""
        if not self.fast:
            return self.call()
        if self.watch:
            return self._call_observed(())  # (its _invoke takes and gives back the slot)
        slot = self.slot
        if slot is not None and slot.state != HELD:
            pool = self._pool
            if slot.state == IDLE and not pool.waiting_flag and pool.running < pool.limits[slot.priority]:
                # (try_acquire's yes, spelled out: room at this priority and
                # nobody in line; the call would be most of an event run's admission)
                pool.running += 1
                pool.admitted += 1
                slot.state = HELD
            elif not pool.try_acquire(slot):
                pool.acquire(slot)  # (not parked: see _invoke_slot)
        executor = self.executor  # (a slot read: ``self.executor(...)`` would be a method lookup)
        self.runs += 1
        self.started = started = monotonic()
        try:
            return executor(_name=self._kname, o=self._ko, _worker=self.worker, _task_id=next(call_ids))
        except (Exception, gevent.Timeout):
            return self._failed()
        except BaseException as exc:
            self._interrupted(exc, ())
            raise
        finally:
            self.ended = ended = monotonic()
            self.last_duration = ended - started
            if self.stats is not None:
                self.stats.observe(self, started, ended)
            slot = self.slot
            if slot is not None and slot.state == HELD:
                self._pool.release(slot)

    def call_at(self, until: float, pre: tuple = ()) -> Any:
        """:meth:`call`, made at monotonic time ``until`` exactly: the clock is
        watched without yielding until then — for a call in the hub's thread
        as the very last step before it (after admission and bookkeeping), so
        that all of that is done before the time, not after it."""
        if self.mode.startswith("sync"):
            self._spin_until = until
        else:
            wait_until(until)
        return self.call(pre)

    async def call_async(self, pre: tuple = ()) -> Any:
        """:meth:`call` for an ``async def`` executor, awaited by a coroutine
        already running on the worker's aloop: the same keywords, stats and
        outcome, with no task, no greenlet switch and no loop wake-up per call."""
        if self.limits is not None:
            return await self._call_async_limited(pre)
        kw = self.kw
        kw["_task_id"] = task_id = next(call_ids)
        if self.fenced:
            kw["_fence"] = self._take_fence()
        self.runs += 1
        observed = self.watch and self._run_started(pre)
        self.started = started = monotonic()
        try:
            if self.plain and len(pre) < 2:
                outcome = await self.executor(*pre, _name=kw["_name"], o=kw["o"], _worker=self.worker,
                                              _task_id=task_id)
            else:
                outcome = await self.executor(*pre, *self.args, **kw)
        except (Exception, gevent.Timeout):
            return self._failed(1, pre)
        except BaseException as exc:  # (CancelledError: an interrupt)
            self._interrupted(exc, pre)
            raise
        finally:
            self.ended = ended = monotonic()
            self.last_duration = ended - started
            if self.stats is not None:
                self.stats.observe(self, started, ended)
        if observed:
            self._run_finished(pre)
        return outcome

    def _invoke_sync(self, pre: tuple, kw: Dict[str, Any]) -> Any:
        until = self._spin_until
        if until is not None:  # a precise run: its last few microseconds
            self._spin_until = None
            wait_until(until)
        if self.plain and len(pre) < 2:
            if pre:
                return self.executor(pre[0], _name=kw["_name"], o=kw["o"], _worker=self.worker,
                                     _task_id=kw["_task_id"])
            return self.executor(_name=kw["_name"], o=kw["o"], _worker=self.worker, _task_id=kw["_task_id"])
        return self.executor(*pre, *self.args, **kw)

    def _invoke_slot(self, pre: tuple, kw: Dict[str, Any]) -> Any:
        # Not parked while it waits for a slot: the item or trigger is taken,
        # so this run is in progress and stop() lets it finish.
        slot: Slot = self.slot  # type: ignore[assignment]  # (this mode has one)
        pool = self._pool
        if slot.state != HELD:  # else: taken by defer(), before this greenlet existed
            if not pool.try_acquire(slot):  # the common case costs no extra call
                pool.acquire(slot)
        try:
            return self._sync(self, pre, kw)
        finally:
            pool.release(slot)

    def _invoke_sync_limited(self, pre: tuple, kw: Dict[str, Any]) -> Any:
        # A time limit: RunTimeout thrown into this greenlet at its first
        # switch past the limit (a call that never switches runs to its end:
        # see _tried). The limit covers the executor only, not admission.
        limits: _Limits = self.limits  # type: ignore[assignment]  # (this path is for limited engines)
        limit = RunTimeout(limits.timeout, limits.what)
        limit.start()
        try:
            return Engine._invoke_sync(self, pre, kw)
        except RunTimeout as exc:
            if exc is limit:
                limits.cut = True
            raise
        finally:
            limit.close()

    def _invoke_async(self, pre: tuple, kw: Dict[str, Any]) -> Any:
        # The calling greenlet waits cooperatively while the coroutine runs on its aloop.
        return self.aloop.run(self.executor(*pre, *self.args, **kw))  # type: ignore[union-attr]

    def _invoke_async_limited(self, pre: tuple, kw: Dict[str, Any]) -> Any:
        # (the coroutine is cancelled at the limit: see gworker.limits.limit_async)
        limits: _Limits = self.limits  # type: ignore[assignment]  # (this path is for limited engines)
        coro = limit_async(self.executor(*pre, *self.args, **kw), limits.timeout, limits.what)  # type: ignore[arg-type]
        return self.aloop.run(coro)  # type: ignore[union-attr]

    def _invoke_process(self, pre: tuple, kw: Dict[str, Any]) -> Any:
        worker = self.worker
        limits = self.limits
        result = self._supervisor.run_in_mp_pool(self.executor, pre + self.args, kw, worker.priority, worker,
                                                 None if limits is None else limits.timeout)
        return worker.process_result(result)

    # -- limits: time limits and retries -----------------------------------------------------------
    def _call_limited(self, pre: tuple) -> Any:
        """:meth:`call` for an engine with a time limit or retries: each try
        as a call, and between two tries the policy's wait (see the module
        docstring). ``stop()`` ends a wait (:meth:`_Limits.pause`), and the
        failure is then final."""
        kw = self.kw
        limits: _Limits = self.limits  # type: ignore[assignment]  # (this path is for limited engines)
        if self.fenced:
            kw["_fence"] = self._take_fence()
        tries = 0
        wait = 0.0
        while True:
            tries += 1
            started, observed = self._begin_try(kw, limits, pre, tries)
            try:
                outcome = self._invoke(self, pre, kw)
                failure = None
            except (Exception, gevent.Timeout) as exc:
                retry_in = self._try_failed(exc, tries, pre)
                if retry_in is None:
                    return self._failed(tries, pre)
                wait, failure = retry_in, exc
            except BaseException as exc:
                self._interrupted(exc, pre, tries)
                raise
            finally:
                self._tried(started)
            if failure is None:
                if observed:
                    self._run_finished(pre, tries)
                return outcome
            if not limits.pause(wait):
                return self._final(failure, tries, pre)

    async def _call_async_limited(self, pre: tuple) -> Any:
        """:meth:`_call_limited` for a coroutine on the worker's aloop."""
        kw = self.kw
        limits: _Limits = self.limits  # type: ignore[assignment]  # (this path is for limited engines)
        if self.fenced:
            kw["_fence"] = self._take_fence()
        tries = 0
        wait = 0.0
        while True:
            tries += 1
            started, observed = self._begin_try(kw, limits, pre, tries)
            try:
                coro = self.executor(*pre, *self.args, **kw)
                if limits.timeout is None:
                    outcome = await coro
                else:
                    outcome = await limit_async(coro, limits.timeout, limits.what)
                failure = None
            except (Exception, gevent.Timeout) as exc:
                retry_in = self._try_failed(exc, tries, pre)
                if retry_in is None:
                    return self._failed(tries, pre)
                wait, failure = retry_in, exc
            except BaseException as exc:
                self._interrupted(exc, pre, tries)
                raise
            finally:
                self._tried(started)
            if failure is None:
                if observed:
                    self._run_finished(pre, tries)
                return outcome
            if not await limits.pause_async(wait):
                return self._final(failure, tries, pre)

    def _begin_try(self, kw: Dict[str, Any], limits: "_Limits", pre: tuple, tries: int) -> Tuple[float, bool]:
        """Before a try: its ``_task_id``, the count, its run_started (if
        observed), the start; returns the start, and whether it was observed."""
        kw["_task_id"] = next(call_ids)
        self.runs += 1
        observed = bool(self.watch) and self._run_started(pre, tries)
        self.started = started = monotonic()
        limits.cut = False
        return started, observed

    def _try_failed(self, exc: BaseException, tries: int, pre: tuple = ()) -> Optional[float]:
        """A try failed with ``exc``: the wait before the next try, or None
        if the failure is final (no retries left, not one to retry, or the
        run stopped). A retry is counted and logged here."""
        limits: _Limits = self.limits  # type: ignore[assignment]  # (this path is for limited engines)
        if isinstance(exc, RunTimeout):
            limits.timeouts += 1
            limits.cut = True
        policy = limits.policy
        run = limits.run
        if policy is None or run is None or not run.active or not policy.retries_after(exc, tries):
            return None
        self.errors += 1
        self.failed_run = self.runs
        limits.retries += 1
        wait = policy.wait(tries)
        if limits.notes.admit(exc) is not None:
            logger.warning("%s: run failed (%s), try %d of %d; retrying in %.3g s", limits.what,
                           describe(exc), tries, policy.retries + 1, wait)
        self._run_failed(exc, pre, tries, True)
        return wait

    def _tried(self, started: float) -> None:
        """After a try (any outcome): the end, the duration, and a limit the
        call did not let be enforced (it ran past it without switching)."""
        self.ended = ended = monotonic()
        self.last_duration = duration = ended - started
        if self.stats is not None:
            self.stats.observe(self, started, ended)
        limits: _Limits = self.limits  # type: ignore[assignment]  # (this path is for limited engines)
        limit = limits.timeout
        if limit is not None and duration > limit and not limits.cut:
            limits.overruns += 1
            if limits.notes.admit() is not None:
                log_overrun(limits.what, duration, limit)
        limits.cut = False

    def _final(self, exc: BaseException, tries: int, pre: tuple = ()) -> Any:
        """The failure ``exc`` of the last try is final (its run stopped
        while it waited to retry): routed as :meth:`_failed` routes one, in an
        ``except`` block of its own (its run_failed is sent again, final)."""
        try:
            raise exc
        except (Exception, gevent.Timeout):
            return self._failed(tries, pre, None)

    def _failed(self, tries: int = 1, pre: tuple = (), duration: Any = True) -> Any:
        """In the ``except`` block of a failed call: count it, send its
        run_failed (if listened to), route it to on_error or the log; returns
        FAILED. ``tries``: how many calls this failure took (more than one
        after retries); ``pre``: the call's item, if any."""
        self.errors += 1
        self.failed_run = self.runs
        exc = sys.exc_info()[1]
        if self._keep_errors:
            self._error = exc
        self._run_failed(exc, pre, tries, False, duration)  # type: ignore[arg-type]  # (in an except block)
        worker = self.worker
        if worker.on_error is not None:
            try:
                worker.on_error(**worker.on_error_kwargs)
            except Exception:
                report("worker %s: on_error failed", worker.name)
            return FAILED
        if self._failures is None:
            self._failures = FailureLog()
        if tries > 1:
            report("worker %s: executor failed (%d tries)", worker.name, tries, exc=exc, limit=self._failures)
        else:
            report("worker %s: executor failed", worker.name, exc=exc, limit=self._failures)
        return FAILED

    # -- events (see gworker.events) ----------------------------------------------------------------
    def _call_observed(self, pre: tuple, invoke: Optional[Callable[..., Any]] = None) -> Any:
        """:meth:`call` of an unlimited engine while anyone listens to a run's
        events: the same call, with run_started before it and run_finished
        after it (a failure's run_failed is sent by :meth:`_failed`).
        ``invoke``: how to call (default: the mode's; :meth:`batch` holds its
        slot itself)."""
        kw = self.kw
        kw["_task_id"] = next(call_ids)
        if self.fenced:
            kw["_fence"] = self._take_fence()
        self.runs += 1
        self._run_started(pre)
        self.started = started = monotonic()
        try:
            outcome = (self._invoke if invoke is None else invoke)(self, pre, kw)
        except (Exception, gevent.Timeout):
            return self._failed(1, pre)
        except BaseException as exc:
            self._interrupted(exc, pre)
            raise
        finally:
            self.ended = ended = monotonic()
            self.last_duration = ended - started
            if self.stats is not None:
                self.stats.observe(self, started, ended)
        self._run_finished(pre)
        return outcome

    def _event(self, name: str, pre: tuple, due: Optional[float], duration: Optional[float] = None,
               exc: Optional[BaseException] = None, tries: int = 1, retrying: bool = False) -> WorkerEvent:
        worker = self.worker
        return WorkerEvent(name, worker, worker.name, worker.kind, worker.priority, time.time(), due, duration,
                           exc, pre[0] if pre else None, None, tries, retrying)

    def _run_started(self, pre: tuple, tries: int = 1) -> bool:
        """Send run_started for the call about to be made (``pre``: its
        item); returns True (so that a caller can note it was sent)."""
        self._due = due = self.worker._due_time()
        self._listeners.emit(self._event(RUN_STARTED, pre, due, tries=tries))
        return True

    def _run_finished(self, pre: tuple, tries: int = 1) -> None:
        """Send run_finished for the call that just returned."""
        listeners = self._listeners
        if listeners.wants(RUN_FINISHED):
            listeners.emit(self._event(RUN_FINISHED, pre, self._due, self.last_duration, tries=tries))

    def _run_failed(self, exc: BaseException, pre: tuple, tries: int, retrying: bool,
                    duration: Any = True) -> None:
        """Send run_failed (and run_timed_out when the call's own time limit
        cut it off) for a call that raised ``exc``, if they are listened to.
        ``duration``: True for the time since the call started, or a value."""
        listeners = self._listeners
        failed = listeners.wants(RUN_FAILED)
        timed_out = (listeners.wants(RUN_TIMED_OUT) and self.limits is not None
                     and self.limits.timeout is not None and isinstance(exc, RunTimeout))
        if not failed and not timed_out:
            return
        if duration is True:
            duration = None if self.started is None else monotonic() - self.started
        due = self.worker._due_time()
        if failed:
            listeners.emit(self._event(RUN_FAILED, pre, due, duration, exc, tries, retrying))
        if timed_out:
            listeners.emit(self._event(RUN_TIMED_OUT, pre, due, duration, exc, tries, retrying))

    def _interrupted(self, exc: BaseException, pre: tuple, tries: int = 1) -> None:
        """A call ended by an interrupt (``GreenletExit``, ``KeyboardInterrupt``,
        ``SystemExit``, a coroutine's cancellation), which passes on: its
        run_failed, so that every run_started has an end. Not counted as an
        error."""
        self._run_failed(exc, pre, tries, False)

    # -- what get_info() shows of the limits ------------------------------------------------------
    @property
    def retries(self) -> int:
        """Calls made again after a failure (over every start)."""
        return 0 if self.limits is None else self.limits.retries

    @property
    def failures(self) -> int:
        """Runs that failed for good: every failed call but those retried."""
        return self.errors - self.retries

    @property
    def timeouts(self) -> int:
        """Calls cut off by their time limit (over every start)."""
        return 0 if self.limits is None else self.limits.timeouts

    @property
    def overruns(self) -> int:
        """Calls that ended past a time limit they did not let be enforced."""
        return 0 if self.limits is None else self.limits.overruns

    def take_error(self) -> Optional[BaseException]:
        """The exception of the last :data:`FAILED` call (with ``keep_errors``),
        once; None if there is none."""
        exc, self._error = self._error, None
        return exc

    # -- the queue's fast path ---------------------------------------------------------------------
    def batch(self, run: "Run", q: Any, item: Any, yield_at: float, done: Any,
              done_twice: Callable[[], None], ctx: Any = None, contexts: Any = None,
              take: Optional[Callable[[Any], Any]] = None) -> Any:
        """Call the executor for ``item``, then for the items queued behind it
        in the gevent queue ``q``, back to back in one slot; returns the
        outcome of the last call.

        For an engine that :attr:`batches`. Each call is exactly what
        :meth:`call` makes (keywords, ``_task_id``, stats, a failure routed),
        but the slot is not given back and taken again between two items (no
        greenlet runs in between, so no one could have used it), the keywords
        are spelled out, and one clock read serves as the end of a call and
        the start of the next. ``done`` is the queue's ``task_done`` (or
        None), called after each call; ``run.in_progress`` names the item
        being processed. Returns (giving the slot back) when the queue is
        empty, someone waits for a slot, it is time to yield (``yield_at``),
        a call returned ``False``, or the run stopped. Returns :data:`NO_SLOT`
        without calling anything if no slot is free at once (the caller then
        makes a plain :meth:`call`).

        Items' contexts (``propagate_context=True``, see gworker.context):
        ``ctx`` is the first item's (or None), ``contexts`` the worker's record
        of them in put order (a deque of ``(item, context)``: the oldest
        entry is the next item's, else ``take(item)`` finds it), from which
        the next ones' are taken; each call is then made inside its item's
        context."""
        pool = self._pool
        slot: Slot = self.slot  # type: ignore[assignment]  # (batches: there is one)
        if not pool.try_acquire(slot):
            return NO_SLOT
        items = queue_items(q)  # the deque gevent's Queue keeps its items in
        if type(q) in _PLAIN_FIFO and q.maxsize is None:
            # Unbounded, so no putter ever waits to be woken: taking the next
            # item is the deque's popleft, which is all get() would do here.
            get = items.popleft
        else:
            get = q.get
        executor = self.executor
        kw = self.kw
        name, o, worker = kw["_name"], kw["o"], self.worker
        ids = call_ids
        waiting = pool.waiting_flag  # true while anyone waits for a slot (changed in place)
        watch = self.watch  # true while anyone listens to the runs' events (changed in place)
        # The metrics' statistics (or None) sample the burst (see SAMPLE_EVERY):
        # ``limit`` is the earlier of the time to yield and the next sample's,
        # so that an item pays the one comparison it paid without metrics.
        stats = self.stats
        sample_at = stats.sample_at if stats is not None else yield_at
        limit = sample_at if sample_at < yield_at else yield_at
        runs = self.runs
        started = monotonic()
        try:
            while True:
                if watch or contexts is not None:
                    # observed, or in the items' contexts: the call spelled out less far
                    if ctx is _NEXT:  # (the first item's came with the call)
                        ctx = _context_of(contexts, item, take)  # type: ignore[arg-type]  # (given together)
                    if watch:  # with its events, in the slot this batch holds
                        if ctx is None:
                            result = self._call_observed((item,), Engine._invoke_sync)
                        else:
                            result = ctx.run(self._call_observed, (item,), Engine._invoke_sync)
                        runs, ended = self.runs, self.ended
                    else:
                        self.runs = runs = runs + 1
                        self.started = started
                        try:
                            if ctx is None:
                                result = executor(item, _name=name, o=o, _worker=worker, _task_id=next(ids))
                            else:
                                result = ctx.run(executor, item, _name=name, o=o, _worker=worker,
                                                 _task_id=next(ids))
                        except (Exception, gevent.Timeout):
                            result = self._failed(1, (item,))
                        except BaseException as exc:
                            self._interrupted(exc, (item,))
                            raise
                        finally:
                            self.ended = ended = monotonic()
                            self.last_duration = ended - started
                    ctx = _NEXT
                else:
                    self.runs = runs = runs + 1
                    self.started = started
                    try:
                        result = executor(item, _name=name, o=o, _worker=worker, _task_id=next(ids))
                    except (Exception, gevent.Timeout):
                        result = self._failed(1, (item,))
                    except BaseException as exc:
                        self._interrupted(exc, (item,))
                        raise
                    finally:
                        self.ended = ended = monotonic()
                        self.last_duration = ended - started
                if done is not None:
                    try:
                        done()
                    except ValueError:
                        done_twice()
                if ended >= limit:  # time to yield, or (metrics) to observe a run
                    if stats is not None and ended >= sample_at:
                        if not watch:  # (an observed call was handed over already)
                            stats.observe(self, started, ended)
                        sample_at = stats.sample_at = ended + SAMPLE_EVERY
                    if ended >= yield_at:
                        return result
                    limit = sample_at if sample_at < yield_at else yield_at
                if result is False or not run.active or waiting or not items:
                    return result
                item = get()
                run.in_progress = (item,)
                started = ended
        finally:
            pool.release(slot)
            if stats is not None and self.failed_run != self.runs:
                stats.ok_end = self.ended  # (the burst's last run returned: sampled or not)



class FencedEngine(Engine):
    """The engine of a singleton worker (see :mod:`gworker.redis.singleton`):
    each call receives ``_fence`` — the token its run's claim set in
    :attr:`fence`, taken by the call; None for a run that was not claimed (a
    triggered one). Never plain nor fast: its calls take the general path. A
    plain worker's engine carries none of it."""

    __slots__ = ("fence",)

    fenced = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: the token for the next call (set by the run's claim), or None
        self.fence: Optional[int] = None
        self.kw["_fence"] = None
        self.plain = self.fast = False

    def _take_fence(self) -> Optional[int]:
        fence, self.fence = self.fence, None
        return fence


#: batch()'s mark for "the next item's context is still to be taken"
_NEXT: Any = _Sentinel("NEXT")


def _context_of(contexts: Any, item: Any, take: Callable[[Any], Any]) -> Any:
    """The context of ``item``, taken from a FIFO queue's record of them: the
    oldest entry's if it is the item's (the common case), else ``take(item)``'s."""
    if not contexts:
        return None
    head = contexts[0]
    if head[0] is item:
        contexts.popleft()
        return head[1]
    return take(item)


class _Limits:
    """A worker's time limit and retry policy, what they counted, and the
    retry's wait in progress — made only for a worker with a ``timeout`` or
    ``retries``, and carried from start to start (a plain worker's engine
    holds None: its paths and its memory pay nothing for the feature)."""

    __slots__ = ("timeout", "policy", "what", "run", "cut", "notes", "retries", "timeouts", "overruns", "_pause")

    def __init__(self, timeout: Optional[float], policy: Any, what: str) -> None:
        self.timeout = timeout
        self.policy = policy
        #: the worker, as the log records and RunTimeout name it
        self.what = what
        #: the current start's run (set at start: a retry's wait is the run's)
        self.run: Optional[Run] = None
        #: the call's own limit fired in it (set by _invoke_sync_limited, _try_failed)
        self.cut = False
        #: the rate limit of the WARNING lines about retries and unenforced limits
        self.notes = FailureLog()
        self.retries = 0
        self.timeouts = 0
        self.overruns = 0
        self._pause: Any = None  # what a pause waits on: a Waiter, or (loop, future)

    @classmethod
    def of(cls, worker: "Worker", previous: Optional["Engine"]) -> Optional["_Limits"]:
        """The limits of a start of ``worker`` (those of its previous start,
        which carry their counts), or None if it has neither limit."""
        if previous is not None and previous.limits is not None:
            return previous.limits
        timeout, policy = worker._timeout, worker._retry_policy
        if timeout is None and policy is None:
            return None
        return cls(timeout, policy, "worker %s" % worker.name)

    def pause(self, seconds: float) -> bool:
        """A retry's wait, in the calling greenlet: True once ``seconds`` have
        passed, False at once or as soon as the run stops (:meth:`end_pause`)."""
        run = self.run
        if run is None or not run.active:
            return False
        hub = run.supervisor.hub
        waiter = self._pause = Waiter(hub)
        timer = hub.loop.timer(seconds)
        timer.start(waiter.switch, True, update=True)  # (from now: see BackgroundIntervalWorker._sleep)
        try:
            return bool(waiter.get())
        finally:
            self._pause = None
            timer.close()

    async def pause_async(self, seconds: float) -> bool:
        """:meth:`pause` for a coroutine on an aloop (its loop waits, not a greenlet)."""
        run = self.run
        if run is None or not run.active:
            return False
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        handle = loop.call_later(seconds, _settle, future, True)
        self._pause = (loop, future)
        try:
            return bool(await future)
        finally:
            self._pause = None
            handle.cancel()

    def end_pause(self) -> None:
        """The run stopped: a pause in progress ends (returns False). Called
        in the hub's thread, where stop() runs."""
        pause = self._pause
        if pause is None:
            return
        if type(pause) is tuple:
            loop, future = pause
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle, future, False)  # (wakes the loop's selector)
        elif self.run is not None:
            self.run.supervisor.hub.loop.run_callback(pause.switch, False)


def _settle(future: Any, value: bool) -> None:
    if not future.done():
        future.set_result(value)


#: gevent queue classes whose get() takes the oldest item of ``queue`` (a deque)
_PLAIN_FIFO = (gevent.queue.Queue, gevent.queue.JoinableQueue)
