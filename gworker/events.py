"""Events: what the workers and tasks of a supervisor do, told to listeners.

``supervisor.add_listener(fn, events=...)`` has ``fn(event)`` called for
every event of the named kinds, for every worker and task of that supervisor
(as APScheduler's ``add_listener`` or huey's signals). gworker's own metrics,
live page and tracing are listeners too; so can a user's tooling be.

The events, plain strings (also as the constants below):

* ``run_started`` — an executor call (or a task's target) is about to begin;
* ``run_finished`` — it returned (any value, ``False`` too);
* ``run_failed`` — it raised (an exception, an escaped ``gevent.Timeout``,
  a :class:`~gworker.limits.RunTimeout`); with retries, each failed try is
  one (``retrying`` says whether another try follows);
* ``run_timed_out`` — sent after ``run_failed`` when the failure was the
  run's own time limit (``timeout=``) cutting it off;
* ``run_missed`` — an interval or cron run skipped by ``misfire_grace``
  (no call was made);
* ``worker_started`` — a worker's ``start()`` launched it;
* ``worker_stopped`` — a worker's loop has ended (``stop()``, or an
  executor that returned ``False``).

Each is a :class:`WorkerEvent`. A run's events are sent in the greenlet that
makes the run (a coroutine's: on its aloop, in the coroutine's task),
*synchronously*, right before and after the call — so a listener is part of
every run it listens to. It must be quick and must never block: no I/O, no
lock that another greenlet may hold, nothing that waits. A listener that
needs to do slow work hands the event over (a counter, a queue another
greenlet drains). A run's events come in the ``contextvars`` context the run
is made in (see :mod:`gworker.context`): a listener of ``run_started`` may
set a context variable that the executor then sees, and that it resets at
``run_finished``/``run_failed`` (gworker's tracing does so).

A listener that raises does not disturb the run: its exception goes to
gworker's error sink (logged at ERROR on the ``gworker`` logger, once per
listener per burst: :class:`gworker._errors.FailureLog`), and the other
listeners of the event are still called.

Cost: a supervisor with no listener of ``run_started`` or ``run_finished``
costs each run one attribute read and a falsy test; the other events happen
off the hot paths (failures, misses, starts and stops) and pay a look at
their own listeners there.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

from ._errors import FailureLog, report

__all__ = [
    "RUN_STARTED", "RUN_FINISHED", "RUN_FAILED", "RUN_TIMED_OUT", "RUN_MISSED", "WORKER_STARTED",
    "WORKER_STOPPED", "ALL_EVENTS", "WorkerEvent", "Listeners",
]

RUN_STARTED = "run_started"
RUN_FINISHED = "run_finished"
RUN_FAILED = "run_failed"
RUN_TIMED_OUT = "run_timed_out"
RUN_MISSED = "run_missed"
WORKER_STARTED = "worker_started"
WORKER_STOPPED = "worker_stopped"

#: Every event name.
ALL_EVENTS: FrozenSet[str] = frozenset((
    RUN_STARTED, RUN_FINISHED, RUN_FAILED, RUN_TIMED_OUT, RUN_MISSED, WORKER_STARTED, WORKER_STOPPED,
))

#: The events of every run: listening to one of them puts the runs on their watched path.
_PER_RUN = (RUN_STARTED, RUN_FINISHED)


class WorkerEvent:
    """One event (see the module docstring). Attributes:

    * ``event`` — its name (``"run_started"``, ...);
    * ``worker`` — the worker, or None for a task;
    * ``task`` — the :class:`~gworker.tasks.Task` for a task's run, else None;
    * ``name`` — the worker's name, or the task target's (qualified) name;
    * ``kind`` — the worker's ``kind`` as ``get_info()`` shows it
      (``"queue"``, ``"interval"``, ...), ``"task"`` for a task;
    * ``time`` — when it happened (wall clock, ``time.time()``): a
      ``run_started`` just before the call;
    * ``due`` — when the run was due (wall clock) for a scheduled run of an
      interval or cron worker (its planned time: the schedule's, plus
      ``delay_before`` and jitter), else None — so ``time - due`` of a
      ``run_started`` is the run's lateness;
    * ``duration`` — seconds the call took, for ``run_finished``,
      ``run_failed`` and ``run_timed_out``, else None;
    * ``exception`` — what the call raised, for ``run_failed`` and
      ``run_timed_out``, else None;
    * ``item`` — the queue item of a queue worker's run, else None;
    * ``priority`` — the worker's or task's priority;
    * ``tries`` — which try of the run this is (1, then 2... after
      retries); for a worker event, 0;
    * ``retrying`` — for a ``run_failed``: True when another try follows
      (the failure is not final), else False.
    """

    __slots__ = ("event", "worker", "task", "name", "kind", "time", "due", "duration", "exception", "item",
                 "priority", "tries", "retrying")

    def __init__(self, event: str, worker: Any, name: str, kind: str, priority: int, time: float,
                 due: Optional[float] = None, duration: Optional[float] = None,
                 exception: Optional[BaseException] = None, item: Any = None, task: Any = None,
                 tries: int = 1, retrying: bool = False) -> None:
        self.event = event
        self.worker = worker
        self.task = task
        self.name = name
        self.kind = kind
        self.priority = priority
        self.time = time
        self.due = due
        self.duration = duration
        self.exception = exception
        self.item = item
        self.tries = tries
        self.retrying = retrying

    def __repr__(self) -> str:
        extra = ""
        if self.duration is not None:
            extra += " duration=%.6f" % self.duration
        if self.exception is not None:
            extra += " exception=%r" % (self.exception,)
        return "<WorkerEvent %s %s %s%s>" % (self.event, self.kind, self.name, extra)


class _Listener:
    """One added listener: the function, its events, its failures' rate limit."""

    __slots__ = ("fn", "events", "failures")

    def __init__(self, fn: Callable[[WorkerEvent], Any], events: FrozenSet[str]) -> None:
        self.fn = fn
        self.events = events
        #: once per burst: a listener that fails on every event writes one record per window
        self.failures = FailureLog(burst=1)


class Listeners:
    """The listeners of one supervisor (``TaskSupervisor.add_listener``).

    ``runs`` is the hot paths' one test: a list that is non-empty while
    anyone listens to ``run_started`` or ``run_finished``. It is changed in
    place, never replaced, so that an engine (built at a worker's start)
    holds it and sees listeners added later. ``wants(name)`` tells whether an
    event has a listener, :meth:`emit` sends one."""

    __slots__ = ("runs", "_listeners", "_by_event")

    def __init__(self) -> None:
        self.runs: List[bool] = []
        self._listeners: List[_Listener] = []
        #: event name -> the listeners of it, a tuple (a snapshot: a listener
        #: that adds or removes one while it is called changes the next event's)
        self._by_event: Dict[str, Tuple[_Listener, ...]] = {name: () for name in ALL_EVENTS}

    def add(self, fn: Callable[[WorkerEvent], Any], events: Iterable[str] = ALL_EVENTS) -> None:
        """Add ``fn`` for ``events`` (see ``TaskSupervisor.add_listener``); a
        function added already has its events replaced."""
        if not callable(fn):
            raise TypeError("fn (the listener) must be callable; got %r" % (fn,))
        names = check_events(events)
        for listener in self._listeners:
            if listener.fn == fn:
                listener.events = names
                break
        else:
            self._listeners.append(_Listener(fn, names))
        self._index()

    def remove(self, fn: Callable[[WorkerEvent], Any]) -> None:
        """Remove ``fn``; ``ValueError`` if it was not added."""
        for i, listener in enumerate(self._listeners):
            if listener.fn == fn:
                del self._listeners[i]
                self._index()
                return
        raise ValueError("fn: %r is not a listener of this supervisor" % (fn,))

    def _index(self) -> None:
        by_event = self._by_event
        for name in ALL_EVENTS:
            by_event[name] = tuple(listener for listener in self._listeners if name in listener.events)
        if any(by_event[name] for name in _PER_RUN):
            if not self.runs:
                self.runs.append(True)
        else:
            del self.runs[:]

    def wants(self, name: str) -> bool:
        """True if event ``name`` has a listener."""
        return bool(self._by_event[name])

    def emit(self, event: WorkerEvent) -> None:
        """Call the listeners of ``event.event`` with it, in the order they
        were added; one that raises is reported (rate-limited) and the
        others are still called."""
        for listener in self._by_event[event.event]:
            try:
                listener.fn(event)
            except Exception:
                report("listener %r failed on %s of %s %s", listener.fn, event.event, event.kind, event.name,
                       limit=listener.failures)

    def __len__(self) -> int:
        return len(self._listeners)


def check_events(events: Any, parameter: str = "events") -> FrozenSet[str]:
    """The event names of ``events`` (an iterable of names) as a frozenset;
    ``TypeError``/``ValueError`` naming ``parameter`` for anything else."""
    if isinstance(events, (str, bytes)):
        raise TypeError("%s must be an iterable of event names, not a single string: wrap it, e.g."
                        " events=[%r]" % (parameter, events))
    try:
        names = list(events)
    except TypeError:
        raise TypeError("%s must be an iterable of event names; got %r" % (parameter, events)) from None
    for name in names:
        if not isinstance(name, str):
            raise TypeError("%s must hold event names (strings); got %r" % (parameter, name))
        if name not in ALL_EVENTS:
            raise ValueError("%s: unknown event %r; the events are %s" % (parameter, name,
                                                                           ", ".join(sorted(ALL_EVENTS))))
    if not names:
        raise ValueError("%s is empty: name at least one event" % parameter)
    return frozenset(names)


def now() -> float:
    """The wall clock an event carries (``time.time()``)."""
    return time.time()
