"""Worker: the parameters, hooks and lifecycle every worker kind shares.

A worker kind decides *when* its executor runs (continuously, per queue item,
on a trigger, on a timer); *how* it runs is the :class:`~gworker.workers._engine.Engine`'s,
built at each ``start()``, and what that start owns — its greenlets, timer
entries, asyncio task — is its :class:`~gworker.workers._run.Run`'s. This
module joins the two:

* **parameters** — validated at construction (a bad one raises
  ``TypeError``/``ValueError`` naming it), never later in a greenlet;
* **lifecycle** — ``start``/``stop``/``restart``, the hooks a subclass may
  override, registration with the supervisor, and waiting for the end. At
  ``start()`` the executor is resolved (the ``func`` given, else ``run``,
  which may have been assigned after construction), the engine is built (sync
  in the hub, async on an aloop, or in the process pool for a static
  ``run``) and a new run begins; ``stop()`` stops that run;
* **stats** for ``get_info()``, kept by the engine across starts.

Parking: while a worker greenlet waits *for work* (a queue item, a trigger),
it parks on its run; ``stop()`` interrupts only a parked greenlet, from a hub
callback, so a running executor is never interrupted.
"""
from __future__ import annotations

import asyncio
import contextvars
import difflib
import functools
import inspect
import logging
import os
import sys
import warnings
from itertools import count
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple, Union

import gevent
from gevent.hub import getcurrent

from ..aio import Aloop
from ..limits import RetryPolicy, check_timeout, retry_policy
from ..priorities import TASK_NORMAL, check_priority
from .._checks import check_seconds
from .._deadline import Deadline
from .._default import supervisor_or_default
from ..context import capture
from ..events import WORKER_STARTED, WORKER_STOPPED, WorkerEvent, now
from ..supervisor import TaskSupervisor
from ._engine import Engine, FencedEngine
from ._run import Halt, Run

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["Worker", "Halt", "logger", "KNOWN_PARAMETERS", "check_unknown_keywords"]

logger = logging.getLogger("gworker")

_name_suffixes = count(1)

#: A busy worker yields to the hub at least this often (seconds).
YIELD_EVERY = 0.004

#: Every keyword that a worker kind or ``@background_worker`` takes. Worker
#: constructors accept any other keyword and ignore it, as atasker's do (a
#: subclass may read its own keywords from ``**kwargs``), but one that looks
#: like a misspelling of these raises a warning (see check_unknown_keywords).
KNOWN_PARAMETERS = (
    "name", "func", "executor_func", "priority", "o", "on_error", "on_error_kwargs", "supervisor",
    "poll_delay", "loop", "daemon", "q", "queue", "e", "event", "i", "interval", "delay",
    "delay_after", "delay_before", "precise", "cron", "tz", "jitter", "misfire_grace", "timeout", "retries",
    "retry_delay", "retry_backoff", "retry_max_delay", "retry_for", "singleton", "propagate_context",
)

#: How alike (difflib's ratio) an unknown keyword and a known one must be for
#: the unknown one to be taken for a misspelling: ``intreval`` → ``interval``,
#: ``priorty`` → ``priority``; not ``host``, ``url`` or ``delay_ms``.
MISSPELLING_CUTOFF = 0.8

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check_singleton(singleton: Any) -> None:
    """``singleton=`` must be a :class:`gworker.redis.RedisSingleton`."""
    if not callable(getattr(singleton, "bind", None)):
        raise TypeError("singleton must be a gworker.redis.RedisSingleton; got %r" % (singleton,))


#: Whether an executor takes **kwargs, by its code object (most executors are
#: plain functions, methods, or ``functools.partial`` objects of them: one
#: flag read, no inspect.signature per start — which costs more than the rest
#: of a start, ~100 µs).
_CO_VARKEYWORDS = inspect.CO_VARKEYWORDS


def _takes_kwargs(executor: Any) -> bool:
    """True if ``executor`` is a function, a method or a ``functools.partial``
    of one whose code takes ``**kwargs`` (False: not known this cheaply)."""
    while type(executor) is functools.partial:  # (a partial passes on every keyword it is called with)
        executor = executor.func
    code = getattr(getattr(executor, "__func__", executor), "__code__", None)
    return code is not None and bool(code.co_flags & _CO_VARKEYWORDS)


def check_executor_keywords(worker: "Worker", executor: Callable[..., Any], keywords: list) -> None:
    """Raise ``TypeError`` at ``start()`` if ``executor`` cannot take the
    ``keywords`` every call passes (``_name``, ``o``, ``_worker``,
    ``_task_id`` and the start's own), rather than fail in every run."""
    if _takes_kwargs(executor):
        return
    try:
        # (not through __wrapped__: a wrapper that takes **kwargs may drop them)
        parameters = inspect.signature(executor, follow_wrapped=False).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature to read
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    takes = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    missing = [k for k in keywords if k not in takes]
    if missing:
        name = getattr(executor, "__name__", None) or type(executor).__name__
        item = "item, " if worker.kind == "queue" else ""
        raise TypeError(
            "worker %s: its executor %s() cannot take the keywords gworker passes to every call"
            " (%s): give it **kwargs, as in def %s(%s**kwargs)"
            % (worker.name, name, ", ".join(missing), name, item))


def check_unknown_keywords(owner: str, kwargs: Dict[str, Any], known: Tuple[str, ...] = KNOWN_PARAMETERS) -> None:
    """Warn (``UserWarning``) about each keyword of ``kwargs`` that is not in
    ``known`` but close to one of them — likely a misspelling, which would
    otherwise be ignored without a word. The warning names both; it points at
    the first caller outside gworker. Other unknown keywords pass silently."""
    for key in kwargs:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=MISSPELLING_CUTOFF)
        if close:
            warnings.warn(
                "%s: unknown keyword %r is ignored; did you mean %r?" % (owner, key, close[0]),
                UserWarning, stacklevel=_outside_gworker(),
            )


def _outside_gworker() -> int:
    """The ``stacklevel`` of the first frame that is not in gworker's package."""
    frame: Optional[FrameType] = sys._getframe(2)
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


class Worker:
    """The shared engine of all worker kinds; not used directly.

    Parameters are validated here, at construction (a bad one raises
    ``TypeError``/``ValueError`` naming it), never later in a greenlet.
    Keywords no worker kind knows are ignored, as atasker ignores them (so a
    subclass can take its own through ``**kwargs``), with a ``UserWarning``
    for one that looks like a misspelling of a known parameter
    (:func:`check_unknown_keywords`). ``daemon`` is accepted and obsolete, as
    in atasker.

    ``propagate_context`` (True, False, or None for the kind's default: True,
    but False for queue workers, whose per-item capture is opt-in): whether
    runs are made in the ``contextvars`` context of what asked for them —
    the ``start()``, a trigger, a queue item's put (see :mod:`gworker.context`).
    """

    #: Sync calls hold one slot of the supervisor's pool while they run.
    holds_slot = True
    #: A failed call is made again (``retries=``): queue workers only (an
    #: interval or event worker's next run is its retry).
    retries_runs = False
    #: the time limit of each executor call (seconds), or None (see gworker.limits)
    _timeout: Optional[float] = None
    #: how a failed call is retried (a :class:`~gworker.limits.RetryPolicy`), or None
    _retry_policy: Optional[RetryPolicy] = None
    #: The kind's name in ``get_info()``.
    kind = "worker"
    #: the worker's side of its ``singleton=`` (see gworker.redis.singleton):
    #: a claim per scheduled time (interval, cron) or a lease (delay, event,
    #: continuous), else None; its executor receives ``_fence``
    _singleton: Any = None
    #: why a kind refuses ``singleton=`` (None: it takes a lease)
    _no_singleton: Optional[str] = None
    #: a lease's runs follow one another at once (their records go with the renewals)
    _lease_continuous = True
    #: Whether the kind propagates contexts by default (see gworker.context);
    #: ``propagate_context=`` sets it per worker.
    propagate_context = True

    def __init__(
        self,
        name: Optional[str] = None,
        func: Optional[Callable[..., Any]] = None,
        priority: int = TASK_NORMAL,
        o: Any = None,
        on_error: Optional[Callable[..., Any]] = None,
        on_error_kwargs: Optional[Dict[str, Any]] = None,
        supervisor: Optional[TaskSupervisor] = None,
        poll_delay: Optional[float] = None,
        loop: Any = None,
        executor_func: Optional[Callable[..., Any]] = None,
        daemon: Any = None,
        timeout: Optional[float] = None,
        retries: Optional[int] = None,
        retry_delay: Optional[float] = None,
        retry_backoff: Optional[float] = None,
        retry_max_delay: Optional[float] = None,
        retry_for: Any = None,
        singleton: Any = None,
        propagate_context: Optional[bool] = None,
        **kwargs: Any,
    ) -> None:
        if singleton is not None:  # (an interval or cron worker takes it before it comes here)
            if self._no_singleton is not None:
                raise TypeError(self._no_singleton)
            check_singleton(singleton)
        if kwargs:  # a subclass's own keywords, or a misspelt one of ours
            check_unknown_keywords(type(self).__name__, kwargs)
        if daemon:
            logger.warning("daemon argument is obsolete")  # atasker's words: nothing is a thread
        if func is not None and executor_func is not None:
            raise TypeError("give the executor as func or executor_func, not both")
        if func is None:
            func = executor_func
        if func is not None and not callable(func):
            raise TypeError("func (the executor) must be callable; got %r" % (func,))
        if name is not None and not isinstance(name, str):
            raise TypeError("name must be a string; got %r" % (name,))
        if propagate_context is not None:
            if not isinstance(propagate_context, bool):
                raise TypeError("propagate_context must be True, False or None (the kind's default); got %r"
                                % (propagate_context,))
            self.propagate_context = propagate_context  # (else the class's: nothing stored)
        if on_error is not None and not callable(on_error):
            raise TypeError("on_error must be callable; got %r" % (on_error,))
        if on_error_kwargs is not None and not isinstance(on_error_kwargs, dict):
            raise TypeError("on_error_kwargs must be a dict; got %r" % (on_error_kwargs,))
        if supervisor is not None and not isinstance(supervisor, TaskSupervisor):
            raise TypeError("supervisor must be a TaskSupervisor; got %r" % (supervisor,))
        self._func = func
        if name is None:
            if func is not None:
                name = getattr(func, "__name__", None) or type(self).__name__
            else:
                name = "%s-%x" % (type(self).__name__, next(_name_suffixes))
        self.name = name
        self.priority = check_priority(priority)
        self.o = o
        self.on_error = on_error
        self.on_error_kwargs = on_error_kwargs if on_error_kwargs is not None else {}
        self.supervisor = supervisor_or_default(supervisor)
        self._poll_delay = check_seconds(poll_delay, "poll_delay")
        self.loop = _check_loop(loop, "loop")
        # The limits live under private names (a subclass written for atasker
        # may well keep a ``timeout`` or ``retries`` of its own), and on the
        # instance only when given (else the class's None: tens of thousands
        # of interval workers carry nothing for them).
        if timeout is not None:
            self._timeout = check_timeout(timeout)
        policy = retry_policy(retries, retry_delay, retry_backoff, retry_max_delay, retry_for)
        if policy is not None:
            self._retry_policy = policy
        if not self.retries_runs and (retries is not None or retry_delay is not None or retry_backoff is not None
                                      or retry_max_delay is not None or retry_for is not None):
            raise TypeError("retries: only queue workers (and tasks) retry a failed run; a %s's next run"
                            " is its retry" % type(self).__name__)
        #: how this start calls the executor (None until the first start)
        self._engine: Optional[Engine] = None
        #: what this start owns (None until the first start)
        self._run: Optional[Run] = None
        if singleton is not None:  # (its key defaults to the name, set above)
            self._singleton = singleton.bind(self, lease=True, continuous=self._lease_continuous)

    # -- parameters -----------------------------------------------------------------------------
    @property
    def poll_delay(self) -> float:
        """The worker's poll delay: its own, else its supervisor's."""
        if self._poll_delay is not None:
            return self._poll_delay
        return self.supervisor.poll_delay

    @poll_delay.setter
    def poll_delay(self, value: Optional[float]) -> None:
        self._poll_delay = check_seconds(value, "poll_delay")

    def _apply_overrides(self, kwargs: Dict[str, Any]) -> None:
        """Apply the start overrides that stay on the worker (``_priority``,
        ``_loop``, the interval ones); ``_name`` and ``o`` only change what the
        executor receives for this start, as in atasker."""
        if "_priority" in kwargs:
            self.priority = check_priority(kwargs["_priority"], "_priority")
        if "_name" in kwargs and not isinstance(kwargs["_name"], str):
            raise TypeError("_name must be a string; got %r" % (kwargs["_name"],))
        if "_loop" in kwargs:
            self.loop = _check_loop(kwargs["_loop"], "_loop")

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, *args: Any, **kwargs: Any) -> bool:
        """Start the worker; ``False`` if it is already active.

        Every argument is passed on to each executor call as-is. ``_name`` and
        ``o`` are what the executor receives for this start (``worker.name`` and
        ``worker.o`` keep their values, as in atasker); ``_priority``, ``_loop``
        (and for interval workers ``_interval``, ``_delay``/``_delay_after``,
        ``_delay_before``, ``_cron``, ``_tz``, ``_jitter``, ``_misfire_grace``)
        override the initial parameters and stay overridden. Starts the supervisor if needed. Thread-safe.

        The caller's ``contextvars`` context is captured here (unless
        ``propagate_context=False``): the worker's loop, and its runs that carry
        no context of their own, run in it (see :mod:`gworker.context`)."""
        context = capture() if self.propagate_context else None
        return self.supervisor.run_in_hub(self._start, args, kwargs, context)

    def _start(self, args: tuple, kwargs: Dict[str, Any], context: Optional[contextvars.Context] = None) -> bool:
        if self.is_active():
            return False
        self._apply_overrides(kwargs)
        executor = self._resolve_executor()
        if not self.is_stopped():
            # stopped without waiting and not finished yet: let the old run end first
            self._wait_stopped(None)
        supervisor = self.supervisor
        process = self._func is None and is_static_run(self) and supervisor.mp_pool is not None
        check_executor_keywords(self, executor, ["_name", "o"] + [k for k in kwargs if k not in ("_name", "o")]
                                + ([] if process else ["_worker"]) + ["_task_id"]
                                + ([] if self._singleton is None else ["_fence"]))
        supervisor.ensure_started("worker %s" % self.name)
        engine_class = Engine if self._singleton is None else FencedEngine  # (_fence for each call)
        self._engine = engine = engine_class(self, executor, args, kwargs, process, self.holds_slot,
                                             self._engine, self._keeps_errors())
        self.before_start()
        self._run = run = self._new_run()
        run.context = context
        single = self._singleton
        if single is not None:
            single.attach(self)  # (given up when the run ends: _finished)
            run.single = single
        if engine.limits is not None:
            engine.limits.run = run  # (a retry's wait is this run's)
        supervisor.register_worker(self)
        self._launch(run, engine)
        self.after_start()
        self._send(WORKER_STARTED)
        return True

    def _send(self, name: str) -> None:
        """Send the worker event ``name`` (worker_started, worker_stopped) to
        its supervisor's listeners of it, if any."""
        listeners = self.supervisor.listeners
        if listeners.wants(name):
            listeners.emit(WorkerEvent(name, self, self.name, self.kind, self.priority, now(), tries=0))

    def _due_time(self) -> Optional[float]:
        """When the run being made was due (wall clock), for its events; None
        for a run that is not scheduled (every kind but the interval ones)."""
        return None

    def _due_monotonic(self) -> Optional[float]:
        """:meth:`_due_time` on the monotonic clock (the metrics' lateness)."""
        return None

    def _new_run(self) -> Run:
        return Run(self.supervisor)

    def _keeps_errors(self) -> bool:
        """Whether the engine keeps each failed call's exception (for the kind)."""
        return False

    def _resolve_executor(self) -> Callable[..., Any]:
        func = self._func if self._func is not None else getattr(self, "run", None)
        if func is None or not callable(func):
            raise TypeError(
                "worker %s has no executor: pass func= or define a run method" % self.name
            )
        return func

    def restart(self, *args: Any, **kwargs: Any) -> bool:
        """Stop (waiting for the end), then start with these arguments."""
        self.stop(wait=True)
        return self.start(*args, **kwargs)

    def stop(self, wait: Union[bool, float] = True, **options: Any) -> None:
        """Stop the worker: no new run starts.

        ``wait=True`` returns once the worker's loop has ended and the run in
        progress has finished; a number of seconds waits at most that long;
        ``wait=False`` returns at once. From inside the worker's own executor
        (or from the hub greenlet) it never waits, so it cannot deadlock.
        Thread-safe."""
        self.supervisor.run_in_hub(self._stop, Deadline.from_wait(wait), options)

    def _stop(self, deadline: Deadline, options: Dict[str, Any]) -> None:
        run = self._run
        if run is not None and run.active:
            self.before_stop()
            run.active = False
            engine = self._engine
            if engine is not None and engine.limits is not None:
                engine.limits.end_pause()  # (a retry's wait ends: the failure is final)
            self._stop_options(run, options)
            self.send_stop_events()
            self._halt(run)
        if deadline.waits:
            self._wait_stopped(deadline.remaining())

    def _stop_options(self, run: Run, options: Dict[str, Any]) -> None:
        if options:
            raise TypeError("unexpected stop() argument %r" % sorted(options)[0])

    def _wait_stopped(self, timeout: Optional[float]) -> bool:
        """Wait until the worker's run has ended, unless that would deadlock."""
        run = self._run
        if run is None or run.ended:
            return True
        current = getcurrent()
        if run.owns(current) or self._in_own_run(run, current) or current is gevent.get_hub():
            return False
        return run.wait_ended(timeout)

    def _in_own_run(self, run: Run, current: Any) -> bool:
        """True if ``current`` runs this worker's executor outside the run's
        greenlets (a coroutine loop in its aloop's greenlet)."""
        return False

    def _finished(self, run: Run) -> None:
        """A run has ended (any path): unregister, after_stop — unless a newer
        start (made from inside the old run's executor) has taken over."""
        single = run.single
        if single is not None:
            run.single = None
            single.detach()  # (a lease is given up; the connection closes with its last user)
        if run is not self._run:
            return
        self.supervisor.unregister_worker(self)
        try:
            self.after_stop()
        finally:
            self._send(WORKER_STOPPED)

    def is_active(self) -> bool:
        """True between ``start()`` and ``stop()`` (or an executor's ``False``)."""
        run = self._run
        return run is not None and run.active

    @property
    def runs_sync(self) -> bool:
        """True once started with a plain (sync) executor, called in the hub's
        thread — not a coroutine on an aloop, nor a call in a child process.
        (atasker counts such continuous workers as thread tasks.)"""
        return self._engine is not None and self._engine.runs_sync

    def is_started(self) -> bool:
        """True while the worker runs, as in atasker: from ``start()`` until its
        loop has ended (after ``stop()``, or an executor that returned ``False``)."""
        run = self._run
        return run is not None and not run.ended

    def is_stopped(self) -> bool:
        """True when the worker is not active and its loop has ended."""
        run = self._run
        return run is None or run.ended

    # -- hooks (override in a subclass) ------------------------------------------------------------
    def before_start(self) -> None:
        """Called in ``start()`` before the worker's loop begins."""

    def after_start(self) -> None:
        """Called in ``start()`` once the worker's loop has been launched."""

    def before_stop(self) -> None:
        """Called in ``stop()`` before the worker is marked inactive."""

    def after_stop(self) -> None:
        """Called once the worker's loop has ended (after ``stop()`` or ``False``)."""

    def send_stop_events(self) -> None:
        """Called in ``stop()`` after the worker is marked inactive: wake what
        the worker waits on (the kinds interrupt their own waits already)."""

    # -- kind-specific (the *when*) -----------------------------------------------------------------
    def _launch(self, run: Run, engine: Engine) -> None:
        raise NotImplementedError

    def _halt(self, run: Run) -> None:
        """``stop()``: stop the run (its entries, its wakers, its parked loop)."""
        run.stop()

    def _interrupt(self, timeout: float) -> None:
        """Abort the run in progress (``GreenletExit`` thrown into its
        greenlets) and wait at most ``timeout`` seconds for them to end. For a
        graceful shutdown's deadline (see :meth:`BackgroundQueueWorker.shutdown`)."""
        run = self._run
        if run is None or run.ended:
            return
        glets = run.interrupt(timeout)
        if not run.ended and run.task is None and all(glet.dead for glet in glets):
            # killed before it first ran: its loop, whose ``finally`` ends the
            # run, never began
            run.end(self._finished)

    def process_result(self, result: Any) -> Any:
        """Called in the hub with what a static ``run`` returned from its child
        process; returning ``False`` stops the worker. Override it."""
        return result

    # -- stats ---------------------------------------------------------------------------------------
    @property
    def runs(self) -> int:
        """How many executor calls were made (over every start)."""
        return 0 if self._engine is None else self._engine.runs

    @property
    def errors(self) -> int:
        """How many executor calls failed (over every start)."""
        return 0 if self._engine is None else self._engine.errors

    @property
    def last_run(self) -> Optional[float]:
        """Wall-clock time (``time.time()``) the last run started, or None."""
        return None if self._engine is None else self._engine.last_run

    @property
    def last_duration(self) -> Optional[float]:
        """How long the last run took (seconds), or None."""
        return None if self._engine is None else self._engine.last_duration

    def _set_run_stats(self, factory: Any) -> None:
        """Hand this start's runs to ``factory(self)``'s statistics (or to
        none): see TaskSupervisor._set_run_stats."""
        engine = self._engine
        if engine is not None:
            engine.stats = None if factory is None else factory(self)

    def _held_slot(self) -> Any:
        """The thread-pool slot of this start's runs, if its mode takes one
        (the supervisor's ``slots_in_use`` reads its state)."""
        engine = self._engine
        return None if engine is None else engine.slot

    # -- info ------------------------------------------------------------------------------------------
    def get_info(self) -> Dict[str, Any]:
        """Figures for the status endpoint and ``TaskSupervisor.get_info()``."""
        engine = self._engine
        return {
            "name": self.name,
            "kind": self.kind,
            "priority": self.priority,
            "active": self.is_active(),
            "runs": self.runs,
            "errors": self.errors,
            "last_run": self.last_run,
            "last_duration": self.last_duration,
            "queue_length": None,
            # (limits: see gworker.limits; counted over every start)
            "timeout": self._timeout,
            "retries": 0 if engine is None else engine.retries,
            "failures": 0 if engine is None else engine.failures,
            "timeouts": 0 if engine is None else engine.timeouts,
            "overruns": 0 if engine is None else engine.overruns,
            # (once per cluster: see gworker.redis.singleton)
            "singleton": None if self._singleton is None else self._singleton.info(),
        }

    def __repr__(self) -> str:
        return "<%s %s active=%s>" % (type(self).__name__, self.name, self.is_active())


def _check_loop(loop: Any, parameter: str) -> Any:
    if loop is not None and not isinstance(loop, (str, Aloop, asyncio.AbstractEventLoop)):
        raise TypeError(
            "%s must be an aloop, an aloop name or an asyncio loop of an aloop; got %r" % (parameter, loop)
        )
    return loop


def is_static_run(worker: Worker) -> bool:
    """True if the worker's class defines ``run`` as a ``@staticmethod``."""
    return isinstance(inspect.getattr_static(type(worker), "run", None), staticmethod)

