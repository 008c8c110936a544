"""Tasks: one call of a target function, run by a supervisor.

``TaskSupervisor.put_task`` returns a :class:`Task`. It records where the call
stands (queued, delayed, started, completed, failed, cancelled), its timing, and
its ``result`` or ``exception``; ``wait()`` blocks the calling greenlet
cooperatively until it has finished. A task's id is cheap (a counter), not a
UUID.

atasker's task API sits on top of it:

* :func:`background_task` turns a function into one that, when called, runs
  as a task and returns the :class:`Task` at once — in a greenlet admitted by
  priority (``TT_THREAD``), in the process pool (``TT_MP``) or on an aloop (a
  coroutine function, or ``loop=``). Unlike ``put_task`` it calls the function
  with exactly the arguments given: no ``_task_id`` is added.
* :func:`wait_completed` waits cooperatively for one task or a list of tasks
  and returns their results, in order, with one overall timeout.

A task may be bounded (see :mod:`gworker.limits`): ``timeout=`` cuts its run
off with :class:`~gworker.limits.RunTimeout` (a thread task at its next
switch, a coroutine cancelled, a process call's child killed and replaced),
and ``retries=`` runs it again after a failure, each time after a longer wait.
Between two tries the task is ``DELAYED`` again and holds no pool slot (it is
admitted anew, by its priority, when its wait is over); ``cancel()`` withdraws
it then, and a supervisor's ``stop()`` makes its failure final at once. Only
the final failure is the task's: its ``exception``, the error log; each retry
is logged at WARNING.
"""
from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import time
from itertools import count
from collections import deque
from typing import Any, Callable, Coroutine, Deque, Dict, List, Optional, Sequence, Union

import gevent
from gevent.event import Event
from gevent.hub import getcurrent

from ._errors import describe, report
from ._admission import Slot
from ._checks import check_seconds
from .limits import RetryPolicy, RunTimeout, check_timeout, limit_async, log_overrun, retry_policy
from ._deadline import Deadline
from .events import RUN_FAILED, RUN_FINISHED, RUN_STARTED, RUN_TIMED_OUT, WorkerEvent
from ._default import supervisor_or_default
from .priorities import TASK_NORMAL, TASK_TYPES, TT_COROUTINE, TT_MP, TT_THREAD, check_priority

logger = logging.getLogger("gworker")

__all__ = [
    "Task", "TASK_STATUS_QUEUED", "TASK_STATUS_DELAYED", "TASK_STATUS_STARTED",
    "TASK_STATUS_COMPLETED", "TASK_STATUS_FAILED", "TASK_STATUS_CANCELED", "new_task_id",
    "background_task", "wait_completed",
]

TASK_STATUS_QUEUED = 0
"""A task waiting for its pool slot (as atasker's)."""
TASK_STATUS_DELAYED = 2
"""A task waiting for its ``delay``, or for its next try (as atasker's)."""
TASK_STATUS_STARTED = 100
"""A task whose target runs (as atasker's)."""
TASK_STATUS_COMPLETED = 200
"""A task whose target returned; ``result`` holds what it returned (as atasker's)."""
TASK_STATUS_FAILED = -2
"""A task whose target raised (or ran past its ``timeout``); ``exception`` holds why."""
TASK_STATUS_CANCELED = -1
"""A task withdrawn before it started, or killed by ``stop(cancel_tasks=True)``."""

_FINISHED = (TASK_STATUS_COMPLETED, TASK_STATUS_FAILED, TASK_STATUS_CANCELED)

_ids = count(1)


def new_task_id() -> str:
    """A process-unique task id: cheap, ordered, not a UUID."""
    return "t%d" % next(_ids)


class Task:
    """One call of ``target`` run by a supervisor (see ``TaskSupervisor.put_task``)."""

    # A task is made per call and thousands may wait at once: slots (no
    # per-instance dict) and an Event made only for those who wait keep each
    # one small, and the garbage collector's full passes rarer.
    __slots__ = (
        "id", "target", "args", "kwargs", "callback", "priority", "tt", "worker", "delay", "loop",
        "timeout", "retry_policy", "tries", "status", "result", "exception", "time_queued", "time_started", "time_completed",
        "future", "context", "_event", "_started_event", "_cancel", "_greenlet", "_slot", "_registry", "__weakref__",
    )

    def __init__(
        self,
        # a coroutine object only for an aloop's background_task (never called)
        target: Union[Callable[..., Any], Coroutine[Any, Any, Any]],
        args: tuple = (),
        kwargs: Optional[Dict[str, Any]] = None,
        callback: Optional[Callable[[Any], Any]] = None,
        priority: int = 100,
        tt: int = 1,
        task_id: Optional[str] = None,
        worker: Any = None,
        delay: Optional[float] = None,
        loop: Any = None,
        timeout: Optional[float] = None,
        retry_policy: Optional[RetryPolicy] = None,
    ) -> None:
        self.id = task_id if task_id is not None else new_task_id()
        self.target = target
        self.args = args
        self.kwargs = kwargs if kwargs is not None else {}
        self.callback = callback
        self.priority = priority
        self.tt = tt
        self.worker = worker
        self.delay = delay
        self.loop = loop
        #: the time limit of a run (seconds), or None; how it is retried, or None
        self.timeout = timeout
        self.retry_policy = retry_policy
        #: how many times the target was called (more than once after retries)
        self.tries = 0
        self.status = TASK_STATUS_DELAYED if delay else TASK_STATUS_QUEUED
        self.result: Any = None
        self.exception: Optional[BaseException] = None
        self.time_queued = time.time()
        self.time_started: Optional[float] = None
        self.time_completed: Optional[float] = None
        #: the asyncio.Task of a coroutine task, else None
        self.future: Any = None
        #: the context captured by ``put_task`` (its runs are made in it: see
        #: gworker.context), else None
        self.context: Optional[contextvars.Context] = None
        self._event: Optional[Event] = None  # made by ``completed``, for those who wait
        self._started_event: Optional[Event] = None  # made by ``started``, for those who wait
        self._cancel: Optional[Callable[[], bool]] = None
        self._greenlet: Any = None
        #: a TT_THREAD task's pool slot once its greenlet is spawned: the
        #: runner gives it back when the task ends, even if the greenlet never ran
        self._slot: Optional[Slot] = None
        #: the supervisor's registry of unfinished tasks, once put there
        self._registry: Optional[Dict[str, "Task"]] = None

    # -- state ----------------------------------------------------------------
    def is_started(self) -> bool:
        """True once the target has begun running (it may have finished since)."""
        return self.time_started is not None

    def is_completed(self) -> bool:
        """True once the task has finished: completed, failed or cancelled."""
        return self.status in _FINISHED

    def is_failed(self) -> bool:
        """True if the target raised (see ``exception``)."""
        return self.status == TASK_STATUS_FAILED

    @property
    def started(self) -> Event:
        """A gevent ``Event`` set once the target has begun running (atasker's
        ``task.started``; made on first use)."""
        event = self._started_event
        if event is None:
            event = self._started_event = Event()
            if self.time_started is not None:
                event.set()
        return event

    @property
    def completed(self) -> Event:
        """A gevent ``Event`` set once the task has finished — completed, failed
        or cancelled (atasker's ``task.completed``). Made on first use: most
        tasks are never waited for."""
        event = self._event
        if event is None:
            event = self._event = Event()
            if self.status in _FINISHED:
                event.set()
        return event

    def mark_started(self) -> None:
        """Record that the task has started (atasker's ``Task.mark_started``).
        The supervisor does this itself for the tasks it runs; for a task
        that has started already it changes nothing."""
        if self.time_started is None:
            self._begin()

    def mark_completed(self) -> None:
        """Record that the task has completed (atasker's ``Task.mark_completed``),
        with the ``result`` it holds now. The supervisor does this itself when
        the target returns; for a finished task it changes nothing."""
        if not self.is_completed():
            if self.time_started is None:
                self._begin()
            self._finish(TASK_STATUS_COMPLETED, self.result)

    # atasker orders tasks by priority (a smaller number first); ``None`` sorts last.
    def __lt__(self, other: Any) -> bool:
        return self.priority < other.priority if other is not None else True

    def __gt__(self, other: Any) -> bool:
        return self.priority > other.priority if other is not None else True

    @property
    def duration(self) -> Optional[float]:
        """Seconds the target ran (its last try), once it has finished."""
        if self.time_started is None or self.time_completed is None:
            return None
        return self.time_completed - self.time_started

    def wait(self, timeout: Optional[float] = None) -> Any:
        """Wait cooperatively until the task has finished and return its result.

        Raises the target's exception if it failed, ``TimeoutError`` when
        ``timeout`` seconds pass first, ``gevent.GreenletExit`` if it was
        killed while running (``stop(cancel_tasks=True)``). A task withdrawn
        with :meth:`cancel` before it started returns ``None``."""
        if not self.is_completed() and not self.completed.wait(timeout):
            raise TimeoutError("task %s did not finish within %ss" % (self.id, timeout))
        if self.exception is not None:
            raise self.exception
        return self.result

    def cancel(self) -> bool:
        """Withdraw a task that is not running — not started yet, or waiting
        for a retry; True if it was withdrawn.

        A running task is killed only by ``TaskSupervisor.stop(cancel_tasks=True)``."""
        if not self.withdraw():
            return False
        self._finish(TASK_STATUS_CANCELED)
        registry = self._registry
        if registry is not None and registry.get(self.id) is self:
            del registry[self.id]  # finished: no longer listed by get_task/get_tasks
        return True

    # -- for gworker's own use ---------------------------------------------------
    @property
    def greenlet(self) -> Any:
        """The greenlet running a ``TT_THREAD`` task while it runs (a runner
        of its supervisor's, see :mod:`gworker._runners`); None before and
        after, and for the other task types."""
        return self._greenlet

    def is_managed(self) -> bool:
        """True once a supervisor has queued, delayed or started the task: it
        then records the task's start and completion itself."""
        return self._cancel is not None or self._greenlet is not None

    def register(self, registry: Dict[str, "Task"]) -> None:
        """List the task in ``registry`` (its supervisor's unfinished tasks, by
        id); ``cancel()`` and the end of its run take it out again. For
        gworker's own use (the supervisor)."""
        registry[self.id] = self
        self._registry = registry

    def set_withdraw(self, withdraw: Callable[[], Any]) -> None:
        """Give the task the ``withdraw()`` that takes it out of line — a pool's
        queue, a delay timer, an aloop — before it starts, returning a true
        value if it did: ``cancel()`` calls it. For gworker's own use (the
        supervisor, as it admits the task)."""
        self._cancel = withdraw

    def _held_slot(self) -> Optional[Slot]:
        """The pool slot the task holds or waits for, if any (the supervisor's
        ``slots_in_use`` reads its state)."""
        if self._slot is not None:
            return self._slot
        withdraw = self._cancel
        return withdraw if isinstance(withdraw, Slot) else None

    def withdraw(self) -> bool:
        """Take a task that waits (queued, delayed, or between two tries)
        out of line without finishing it; True if it was. For gworker's own
        use (a supervisor's stop, which then decides how it ends)."""
        if self.status not in (TASK_STATUS_QUEUED, TASK_STATUS_DELAYED) or self._cancel is None:
            return False
        return bool(self._cancel())

    def _begin(self) -> None:
        self.status = TASK_STATUS_STARTED
        self.tries += 1
        self.time_started = time.time()
        if self._started_event is not None:  # someone asked for ``started`` before
            self._started_event.set()

    def _finish(self, status: int, result: Any = None, exception: Optional[BaseException] = None) -> None:
        self.status = status
        self.result = result
        self.exception = exception
        self.time_completed = time.time()
        if self._event is not None:
            self._event.set()

    def __repr__(self) -> str:
        return "<Task %s status=%s>" % (self.id, self.status)


def name_of(fn: Any) -> str:
    """How logs name a target: its qualified name, else its name, else its repr."""
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


# -- running tasks -----------------------------------------------------------------


class TaskRunner:
    """Runs the tasks of one supervisor once they are admitted, and records how
    each one goes on its :class:`Task`. For gworker's own use.

    The supervisor keeps admission (which pool, at which priority, after which
    delay), the registry of unfinished tasks and its own lifecycle; it hands a
    task here when its turn comes:

    * :meth:`start_thread` — the thread pool granted the task's slot (a
      :class:`~gworker._admission.Slot` whose ``holder`` is the task): the
      target runs in a greenlet of its own, which gives that slot back when it
      ends;
    * :meth:`start_mp` — the process pool's admission granted it: the call
      goes to a child, and its result settles the task (and gives the slot
      back) where the pool reads it;
    * :meth:`start_coroutine` — no slot: the coroutine runs on an aloop.

    Whatever the type, the runner records the start, the result or the failure
    (logged on the ``gworker`` logger) or the cancellation, takes the task out
    of the registry when it ends and calls its callback: a thread task's in its
    own greenlet, the others' one after another in one greenlet (they settle in
    a loop callback or the pool's reader greenlet, neither of which may wait).
    """

    def __init__(self, supervisor: Any, registry: Dict[str, Task]) -> None:
        #: the supervisor whose tasks this runs (its greenlets take their
        #: thread names from it, see :mod:`gworker._thread_names`)
        self.supervisor = supervisor
        self._registry = registry
        self._callbacks: Deque[Task] = deque()
        self._callback_glet: Optional[gevent.Greenlet] = None
        self._mp_done = self._mp_task_done  # one bound method for every TT_MP call
        #: the supervisor's listeners (see gworker.events), and their hot test
        self._listeners = listeners = supervisor.listeners
        self._watch = listeners.runs

    # -- TT_THREAD ---------------------------------------------------------------------
    def start_thread(self, slot: Slot) -> None:
        """The thread pool's grant of ``slot`` to its holder, a task: runs it,
        in the runner greenlet that makes the grant (see
        :mod:`gworker._runners`: a task that does not switch leaves its runner
        to the next one, no greenlet is spawned for it), in the task's
        context. The task holds the slot until it ends; ``g`` is fresh for it
        (the runner clears it)."""
        ctx = slot.holder.context
        if ctx is None:
            self._run_thread(slot)
        else:
            ctx.run(self._run_thread, slot)

    def _run_thread(self, slot: Slot) -> None:
        task: Task = slot.holder
        task._slot = slot
        task._greenlet = getcurrent()
        retrying = False
        try:
            task._begin()
            observed = bool(self._watch) and self._started(task)
            try:
                # (put_task checked that target is callable; only an aloop's
                # background_task holds a coroutine, and it never comes here)
                if task.timeout is None:
                    result = task.target(*task.args, _task_id=task.id, **task.kwargs)  # type: ignore[operator]
                else:
                    result = _call_limited(task)
            except gevent.GreenletExit as exc:
                task._finish(TASK_STATUS_CANCELED, exception=exc)
                self._failed(task, exc, False)
                raise
            except (Exception, RunTimeout) as exc:
                retrying = self._retry(task, exc)
                self._failed(task, exc, retrying)
                if not retrying:
                    report("task %s (%s) failed%s", task.id, name_of(task.target), _tries(task))
                    task._finish(TASK_STATUS_FAILED, exception=exc)
            except BaseException as exc:
                self._failed(task, exc, False)
                raise
            else:
                task._finish(TASK_STATUS_COMPLETED, result)
                if observed:
                    self._finished(task)
                if task.callback is not None:
                    self._run_callback(task)
        finally:
            task._greenlet = None
            slot.pool.release(slot)
            if not retrying:
                self._registry.pop(task.id, None)
                if task.time_completed is None:  # ended by another BaseException
                    task._finish(TASK_STATUS_CANCELED)

    # -- TT_MP ---------------------------------------------------------------------------
    def start_mp(self, slot: Slot) -> None:
        """The process pool admission's grant of ``slot`` to its holder, a task
        (in a hub callback or a releasing greenlet): only schedules."""
        task: Task = slot.holder
        task._begin()
        if self._watch:
            _in_context(task, self._started, task)
        try:
            result = self.supervisor.mp_pool.submit_with_id(task.target, task.args, task.kwargs, task.id,
                                                            task.timeout)
        except Exception as exc:  # the pool was shut down meanwhile
            slot.pool.release(slot)
            self._registry.pop(task.id, None)
            _in_context(task, self._failed, task, exc, False)
            task._finish(TASK_STATUS_FAILED, exception=exc)
            return
        result.on_settle(self._mp_done, slot)

    def _mp_task_done(self, slot: Slot, exc: Optional[BaseException], value: Any) -> None:
        # Runs where the pool settles results: its reader greenlet, which must
        # not wait on pool results (or a hub callback, for a call that did not
        # pickle).
        slot.pool.release(slot)
        task: Task = slot.holder
        # (in the task's context, as its run_started was: see gworker.events)
        if exc is not None:
            _in_context(task, self._failed, task, exc, self._will_retry(task, exc))
        elif self._watch:
            _in_context(task, self._finished, task)
        # (a call that could not be sent never reached a child: its message says so)
        where = "" if getattr(exc, "unsent", False) else " in a child process"
        self._settle(task, exc, value, where)

    # -- TT_COROUTINE ----------------------------------------------------------------------
    def start_coroutine(self, task: Task, aloop: Any) -> None:
        """Run the task's coroutine on ``aloop`` (it takes no pool slot: as in
        atasker, priority does not apply)."""
        task._begin()
        # (put_task checked that target is a coroutine function: callable)
        coro = task.target(*task.args, _task_id=task.id, **task.kwargs)  # type: ignore[operator]
        if task.timeout is not None:
            coro = _coroutine_limited(task, coro)
        if self._watch or self._listeners.wants(RUN_FAILED) or self._listeners.wants(RUN_TIMED_OUT):
            coro = self._observed(task, coro)  # its events in the coroutine, on its loop
        # (the asyncio task's context: a copy of the task's)
        future = aloop.create_task(coro) if task.context is None else task.context.run(aloop.create_task, coro)
        task.future = future
        task._cancel = lambda: bool(future.cancel())
        future.add_done_callback(lambda fut: self._coroutine_done(task, fut))

    def _coroutine_done(self, task: Task, fut: Any) -> None:
        # Runs in the aloop's greenlet, as a loop callback.
        if fut.cancelled():
            self._registry.pop(task.id, None)
            task._finish(TASK_STATUS_CANCELED)
            return
        exc = fut.exception()
        self._settle(task, exc, None if exc is not None else fut.result(), "")

    # -- ends outside our greenlets ------------------------------------------------------
    def _settle(self, task: Task, exc: Optional[BaseException], value: Any, where: str) -> None:
        """Finish a task run outside a greenlet of ours (a coroutine, a child
        process): log a failure, or record the result and hand the user's
        callback to the callback greenlet (we may be in a loop callback or the
        pool's reader greenlet, neither of which may wait)."""
        if exc is not None and self._retry(task, exc):
            return
        self._registry.pop(task.id, None)
        if exc is not None:
            report("task %s (%s) failed%s%s", task.id, name_of(task.target), where, _tries(task), exc=exc)
            task._finish(TASK_STATUS_FAILED, exception=exc)
            return
        task._finish(TASK_STATUS_COMPLETED, value)
        if task.callback is not None:
            self._callbacks.append(task)
            if self._callback_glet is None:
                self._callback_glet = gevent.spawn(self._run_callbacks)

    # -- events (see gworker.events) ----------------------------------------------------
    def _event(self, name: str, task: Task, duration: Optional[float] = None,
               exc: Optional[BaseException] = None, retrying: bool = False) -> WorkerEvent:
        return WorkerEvent(name, None, name_of(task.target), "task", task.priority, time.time(), None, duration,
                           exc, None, task, task.tries, retrying)

    def _started(self, task: Task) -> bool:
        """Send the task's run_started; True."""
        self._listeners.emit(self._event(RUN_STARTED, task))
        return True

    def _finished(self, task: Task) -> None:
        """Send the task's run_finished (its try returned), if listened to."""
        if self._listeners.wants(RUN_FINISHED):
            started = task.time_started
            self._listeners.emit(self._event(RUN_FINISHED, task, None if started is None else time.time() - started))

    def _failed(self, task: Task, exc: BaseException, retrying: bool, duration: Any = True) -> None:
        """Send the task's run_failed (and run_timed_out, when its own time
        limit cut it off), if listened to. An interrupt (``GreenletExit``, a
        cancellation) is sent as run_failed too. ``duration``: True for the
        time since the try started, or a value."""
        listeners = self._listeners
        failed = listeners.wants(RUN_FAILED)
        timed_out = listeners.wants(RUN_TIMED_OUT) and task.timeout is not None and isinstance(exc, RunTimeout)
        if not failed and not timed_out:
            return
        if duration is True:
            started = task.time_started
            duration = None if started is None else time.time() - started
        if failed:
            listeners.emit(self._event(RUN_FAILED, task, duration, exc, retrying))
        if timed_out:
            listeners.emit(self._event(RUN_TIMED_OUT, task, duration, exc, retrying))

    async def _observed(self, task: Task, coro: Coroutine[Any, Any, Any]) -> Any:
        """A coroutine task's run with its events, sent in its coroutine."""
        observed = bool(self._watch) and self._started(task)
        try:
            result = await coro
        except (Exception, gevent.Timeout) as exc:
            self._failed(task, exc, self._will_retry(task, exc))
            raise
        except BaseException as exc:  # (a cancellation)
            self._failed(task, exc, False)
            raise
        if observed:
            self._finished(task)
        return result

    # -- retries -------------------------------------------------------------------------
    def _will_retry(self, task: Task, exc: BaseException) -> bool:
        """Whether the task's try that failed with ``exc`` will be made
        again (its policy retries it, and the supervisor runs)."""
        policy = task.retry_policy
        return policy is not None and self.supervisor.is_active() and policy.retries_after(exc, task.tries)

    def _retry(self, task: Task, exc: BaseException) -> bool:
        """The task's try failed with ``exc``: if its policy retries it (and
        the supervisor runs), it waits its turn again — ``DELAYED``, no slot
        held — and is admitted anew after the policy's wait; True then."""
        policy = task.retry_policy
        supervisor = self.supervisor
        if not self._will_retry(task, exc):
            return False
        assert policy is not None
        wait = policy.wait(task.tries)
        logger.warning("task %s (%s) failed (%s), try %d of %d; retrying in %.3g s", task.id,
                       name_of(task.target), describe(exc), task.tries, policy.retries + 1, wait)
        task.status = TASK_STATUS_DELAYED
        task.exception = exc  # (the last failure, until the next try)
        task.future = None
        supervisor.resubmit(task, wait)
        return True

    def give_up(self, task: Task) -> None:
        """A task waiting for a retry will not get it (its supervisor
        stops): its last failure is final."""
        exc = task.exception
        self._registry.pop(task.id, None)
        if exc is not None:
            self._failed(task, exc, False, None)  # (sent again, final: its retry will not come)
        report("task %s (%s) failed%s; its supervisor stopped before its next try", task.id,
               name_of(task.target), _tries(task), exc=exc)
        task._finish(TASK_STATUS_FAILED, exception=exc)

    def _run_callbacks(self) -> None:
        # One greenlet runs the callbacks of coroutine and process tasks, in the
        # order their tasks finished (as atasker's pool ran them in its one
        # result thread): no greenlet per callback, and none while idle.
        callbacks = self._callbacks
        try:
            while callbacks:
                self._run_callback(callbacks.popleft())
        finally:
            self._callback_glet = None

    @staticmethod
    def _run_callback(task: Task) -> None:
        try:
            task.callback(task.result)  # type: ignore[misc]  # (called only for tasks that have one)
        except Exception:
            report("callback of task %s failed", task.id)


def _in_context(task: Task, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in the task's context (or the current one without)."""
    ctx = task.context
    return fn(*args) if ctx is None else ctx.run(fn, *args)


def _call_limited(task: Task) -> Any:
    """Call a thread task's target with its time limit: RunTimeout is
    thrown into the greenlet at its first switch past it. A target that does
    not switch runs to its end, and that is logged."""
    limit = RunTimeout(task.timeout, _what(task))
    started = time.monotonic()
    limit.start()
    try:
        result = task.target(*task.args, _task_id=task.id, **task.kwargs)  # type: ignore[operator]
    finally:
        limit.close()
    _check_overrun(task, time.monotonic() - started)
    return result


async def _coroutine_limited(task: Task, coro: Coroutine[Any, Any, Any]) -> Any:
    """A coroutine task's run with its time limit (it is cancelled there)."""
    started = time.monotonic()
    result = await limit_async(coro, task.timeout, _what(task))  # type: ignore[arg-type]
    _check_overrun(task, time.monotonic() - started)
    return result


def _check_overrun(task: Task, duration: float) -> None:
    # A run that returned past its limit did not let it be enforced: say so
    # (each time: a task's every failure is news, as in atasker).
    if task.timeout is not None and duration > task.timeout:
        log_overrun(_what(task), duration, task.timeout)


def _what(task: Task) -> str:
    """The task, as RunTimeout and the log name it."""
    return "task %s (%s)" % (task.id, name_of(task.target))


def _tries(task: Task) -> str:
    return " (%d tries)" % task.tries if task.tries > 1 else ""


def follow_future(coro: Coroutine[Any, Any, Any], future: Any, aloop_name: str) -> Task:
    """A started ``TT_COROUTINE`` :class:`Task` that follows ``future``, the
    asyncio task an aloop made of ``coro`` (``Aloop.background_task``; for
    gworker's own use): it completes, fails (logged at ERROR on the
    ``gworker`` logger) or is cancelled with the future."""
    task = Task(coro, tt=TT_COROUTINE)
    task._begin()
    task.future = future
    future.add_done_callback(lambda fut: _background_done(task, fut, aloop_name))
    return task


def _background_done(task: Task, fut: Any, aloop_name: str) -> None:
    # In the loop's greenlet, as a done-callback: only records.
    if fut.cancelled():
        task._finish(TASK_STATUS_CANCELED)
        return
    exc = fut.exception()
    if exc is not None:
        report("aloop %s: background task %s failed", aloop_name, task.id, exc=exc)
        task._finish(TASK_STATUS_FAILED, exception=exc)
    else:
        task._finish(TASK_STATUS_COMPLETED, fut.result())


# -- atasker's task API ----------------------------------------------------------


class WithoutTaskId:
    """Calls ``func`` with the arguments given, dropping the ``_task_id``
    keyword that ``put_task`` adds (for gworker's own use: ``background_task``,
    ``co_mp_apply``).

    A module-level class, so that an instance pickles (by reference to
    ``func``) and can travel to a child of the process pool. It takes the name
    of ``func`` for logs. ``greenlet_name``, when set, names the task's
    greenlet while it runs (``background_task(name=...)``)."""

    def __init__(self, func: Callable[..., Any], greenlet_name: Optional[str] = None) -> None:
        self.func = func
        self.greenlet_name = greenlet_name
        self.__module__ = getattr(func, "__module__", None)  # type: ignore[assignment]
        self.__name__ = getattr(func, "__name__", None) or repr(func)
        self.__qualname__ = getattr(func, "__qualname__", None) or self.__name__

    def __call__(self, *args: Any, _task_id: Any = None, **kwargs: Any) -> Any:
        if self.greenlet_name is not None:
            current = getcurrent()
            if isinstance(current, gevent.Greenlet):
                current.name = self.greenlet_name
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return "<%s.%s>" % (self.__module__, self.__qualname__)


def _coroutine_without_task_id(func: Callable[..., Any]) -> Callable[..., Any]:
    """The coroutine-function counterpart of :class:`WithoutTaskId` (an
    ``async def``, so that ``put_task(tt=TT_COROUTINE)`` accepts it)."""

    @functools.wraps(func)
    async def call(*args: Any, _task_id: Any = None, **kwargs: Any) -> Any:
        return await func(*args, **kwargs)

    return call


def background_task(
    f: Optional[Callable[..., Any]] = None,
    *,
    name: Optional[str] = None,
    priority: int = TASK_NORMAL,
    delay: Optional[float] = None,
    tt: int = TT_THREAD,
    callback: Optional[Callable[[Any], Any]] = None,
    loop: Any = None,
    supervisor: Any = None,
    daemon: Any = None,
    timeout: Optional[float] = None,
    retries: Optional[int] = None,
    retry_delay: Optional[float] = None,
    retry_backoff: Optional[float] = None,
    retry_max_delay: Optional[float] = None,
    retry_for: Any = None,
    **kwargs: Any,
) -> Any:
    """Make ``f`` a background task: calling it runs ``f`` as a task and
    returns the :class:`Task` at once.

    Three forms, as in atasker::

        @background_task
        def job(a, b): ...

        @background_task(priority=TASK_HIGH)
        def job2(a, b): ...

        task = background_task(f, priority=TASK_LOW)(1, 2, x=3)

    ``f`` is called with exactly the arguments of the call — no ``_task_id`` is
    added. The returned task has ``result``, ``exception``, ``status``,
    ``is_started()``, ``is_completed()``, ``time_queued``/``time_started``/
    ``time_completed``, ``duration``, ``wait()`` and ``cancel()``; see
    :func:`wait_completed` to wait for several.

    * ``tt=TT_THREAD`` (default): a greenlet admitted by the supervisor's pool
      at ``priority`` (``TASK_CRITICAL`` starts at once even when the pool is
      full). ``name`` names that greenlet while it runs.
    * ``tt=TT_MP``: a child of the supervisor's process pool (made with
      ``create_mp_pool``), admitted by ``priority``; ``f`` must be a
      module-level function of an importable module, and so must the
      arguments be picklable.
    * a coroutine function (or ``tt=TT_COROUTINE``): runs on an aloop —
      ``loop`` (an aloop, its name, or its asyncio loop), else the default
      aloop, else the supervisor's own. Priority does not apply (as in
      atasker).
    * ``delay``: start that many seconds later (the task is ``DELAYED`` until
      then). ``callback(result)`` runs in a greenlet once ``f`` returned (for
      every task type; atasker used it for ``TT_MP`` only): a thread task's in
      its own, process and coroutine tasks' one after another in one greenlet
      of the supervisor.
    * ``timeout``: each run's time limit (seconds): past it the run fails
      with :class:`~gworker.limits.RunTimeout`. ``retries`` (with
      ``retry_delay``, ``retry_backoff``, ``retry_max_delay``, ``retry_for``):
      a failed run is made again, after a growing wait (see
      :mod:`gworker.limits`); the task fails only after its last try.
    * ``supervisor``: the :class:`TaskSupervisor` to run on; default
      ``task_supervisor``, looked up at each call. A supervisor that is not
      started is started (logged at INFO).
    * ``loop`` applies to coroutine functions only: for a plain function it is
      ignored, as atasker ignores it (the function runs as ``tt`` says).
      ``daemon`` is accepted and obsolete, as in atasker (a true value logs
      "daemon argument is obsolete" for a thread task). Other keywords are
      ignored, as atasker ignores them, with a ``UserWarning`` for one that
      looks like a misspelling of these.

    Bad parameters raise ``TypeError``/``ValueError`` naming the parameter when
    ``background_task`` is called, not when the task runs.
    """

    if name is not None and not isinstance(name, str):
        raise TypeError("name must be a string or None; got %r" % (name,))
    check_priority(priority)
    check_seconds(delay, "delay")
    if isinstance(tt, bool) or tt not in TASK_TYPES:
        raise ValueError("tt must be TT_THREAD, TT_MP or TT_COROUTINE; got %r" % (tt,))
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable or None; got %r" % (callback,))
    if supervisor is not None and not hasattr(supervisor, "put_task"):
        raise TypeError("supervisor must be a TaskSupervisor or None; got %r" % (supervisor,))
    if kwargs:
        from .workers.base import check_unknown_keywords

        check_unknown_keywords("background_task", kwargs, _BACKGROUND_TASK_PARAMETERS)
    if daemon and tt == TT_THREAD:
        logger.warning("daemon argument is obsolete")
    check_timeout(timeout)
    retry_policy(retries, retry_delay, retry_backoff, retry_max_delay, retry_for)  # (checked now, not at a call)
    limits = dict(timeout=timeout, retries=retries, retry_delay=retry_delay, retry_backoff=retry_backoff,
                  retry_max_delay=retry_max_delay, retry_for=retry_for)

    def decorate(func: Callable[..., Any]) -> Callable[..., Task]:
        if not callable(func):
            raise TypeError("f must be callable; got %r" % (func,))
        is_coroutine = inspect.iscoroutinefunction(func)
        if is_coroutine and tt == TT_MP:
            raise TypeError("f: a coroutine function cannot run in the process pool (tt=TT_MP); got %r" % (func,))
        if tt == TT_COROUTINE and not is_coroutine:
            raise TypeError("f must be a coroutine function for tt=TT_COROUTINE; got %r" % (func,))
        if is_coroutine:
            target: Callable[..., Any] = _coroutine_without_task_id(func)
            task_type = TT_COROUTINE
        else:
            target = WithoutTaskId(func, name if tt == TT_THREAD else None)
            task_type = tt

        @functools.wraps(func)
        def start_task(*args: Any, **kwargs: Any) -> Task:
            return supervisor_or_default(supervisor).put_task(
                target, args, kwargs, callback=callback, priority=priority, delay=delay,
                tt=task_type, loop=loop if is_coroutine else None, **limits,
            )

        return start_task

    if f is None:
        return decorate
    return decorate(f)


_BACKGROUND_TASK_PARAMETERS = (
    "name", "priority", "delay", "tt", "callback", "loop", "supervisor", "daemon", "timeout", "retries",
    "retry_delay", "retry_backoff", "retry_max_delay", "retry_for",
)


def wait_completed(
    tasks: Union[Task, Sequence[Task]], timeout: Optional[float] = None
) -> Union[Any, List[Any]]:
    """Wait cooperatively until the task(s) have finished; return the result(s).

    One :class:`Task` → its ``result``; a list or tuple (any iterable) of
    tasks → the list of their results, in the same order, whatever order they
    finish in. As in atasker, a task that failed or was cancelled gives
    ``None`` (its ``exception`` and ``is_failed()`` tell why); nothing is
    raised for it. ``timeout`` bounds the whole wait: past it ``TimeoutError``
    is raised (the tasks go on). Only the calling greenlet waits; call it from
    a greenlet of the supervisor's hub thread (not from a coroutine, whose
    loop it would hold: there, await the tasks' work instead).
    """

    check_seconds(timeout, "timeout")
    single = isinstance(tasks, Task)
    if single:
        items: List[Task] = [tasks]  # type: ignore[list-item]
    else:
        try:
            items = list(tasks)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError("tasks must be a Task or a list of tasks; got %r" % (tasks,)) from None
        for item in items:
            if not isinstance(item, Task):
                raise TypeError("tasks must contain Task objects only; got %r" % (item,))
    deadline = Deadline.never() if timeout is None else Deadline.after(timeout)
    for task in items:
        if task.is_completed():
            continue
        if not task.completed.wait(deadline.remaining()):
            pending = sum(1 for t in items if not t.is_completed())
            raise TimeoutError("%d of %d task(s) did not complete within %ss" % (pending, len(items), timeout))
    if single:
        return items[0].result
    return [t.result for t in items]
