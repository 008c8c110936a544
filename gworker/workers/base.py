"""The one engine every worker kind shares: lifecycle and the executor path.

A worker kind decides *when* its executor runs (continuously, per queue item,
on a trigger, on a timer). Everything else is decided here, once, for all of
them:

* **lifecycle** — ``start``/``stop``/``restart``, the hooks a subclass may
  override, registration with the supervisor, and waiting for the end;
* **how a call is made** — at ``start()`` the executor is resolved (the
  ``func`` given, else ``run``, which may have been assigned after
  construction) and one *invoker* is chosen: sync in the hub, async on an
  aloop, or in the process pool for a static ``run``;
* **admission** — sync calls of slot-holding kinds take one slot of the
  supervisor's pool at the worker's priority;
* **the keywords** — ``_worker``, ``_name``, ``_task_id``, ``o`` are added to the
  start arguments; the dict is built once per start, only ``_task_id`` changes
  per call (Python copies ``**kwargs`` into the callee anyway);
* **the outcome** — ``False`` stops the worker; an exception (or an escaped
  ``gevent.Timeout``) goes to ``on_error`` inside the ``except`` block, or is
  logged with its traceback, rate-limited; the worker goes on. ``GreenletExit``,
  ``KeyboardInterrupt`` and ``SystemExit`` pass through;
* **stats** for ``get_info()``.

Parking: while a worker greenlet waits *for work* (a queue item, a trigger, a
slot), it marks itself parked; ``stop()`` interrupts only a parked greenlet, from
a hub callback, so a running executor is never interrupted.
"""
from __future__ import annotations

import asyncio
import difflib
import inspect
import logging
import os
import sys
import time
import warnings
from itertools import count
from time import monotonic
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple, Union

import gevent
from gevent import GreenletExit
from gevent.event import Event
from gevent.hub import getcurrent

from ..aio import Aloop
from ..priorities import TASK_NORMAL, check_priority
from .._checks import check_seconds
from .._deadline import Deadline
from .._errors import FailureLog
from .._default import supervisor_or_default
from ..supervisor import TaskSupervisor

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["Worker", "Halt", "logger", "KNOWN_PARAMETERS", "check_unknown_keywords"]

logger = logging.getLogger("gworker")

#: ``_task_id`` of every executor call of every worker (the queue burst draws from it too)
call_ids = count(1)
_name_suffixes = count(1)

#: The keywords of a start without arguments, in the order ``_start`` adds them.
_PLAIN_KEYS = ["_name", "o", "_worker"]

#: A busy worker yields to the hub at least this often (seconds).
YIELD_EVERY = 0.004

#: Every keyword that a worker kind or ``@background_worker`` takes. Worker
#: constructors accept any other keyword and ignore it, as atasker's do (a
#: subclass may read its own keywords from ``**kwargs``), but one that looks
#: like a misspelling of these raises a warning (see check_unknown_keywords).
KNOWN_PARAMETERS = (
    "name", "func", "executor_func", "priority", "o", "on_error", "on_error_kwargs", "supervisor",
    "poll_delay", "loop", "daemon", "q", "queue", "e", "event", "i", "interval", "delay",
    "delay_after", "delay_before", "precise",
)

#: How alike (difflib's ratio) an unknown keyword and a known one must be for
#: the unknown one to be taken for a misspelling: ``intreval`` → ``interval``,
#: ``priorty`` → ``priority``; not ``host``, ``timeout`` or ``delay_ms``.
MISSPELLING_CUTOFF = 0.8

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


class Halt(GreenletExit):
    """Thrown into a parked worker greenlet by ``stop()``."""


class Worker:
    """The shared engine of all worker kinds; not used directly.

    Parameters are validated here, at construction (a bad one raises
    ``TypeError``/``ValueError`` naming it), never later in a greenlet.
    Keywords no worker kind knows are ignored, as atasker ignores them (so a
    subclass can take its own through ``**kwargs``), with a ``UserWarning``
    for one that looks like a misspelling of a known parameter
    (:func:`check_unknown_keywords`). ``daemon`` is accepted and obsolete, as
    in atasker.
    """

    #: Sync calls hold one slot of the supervisor's pool while they run.
    holds_slot = True
    #: The kind's name in ``get_info()``.
    kind = "worker"

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
        **kwargs: Any,
    ) -> None:
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
        self._aloop: Optional[Aloop] = None
        self._active = False
        self._started = False
        self._gen = 0
        self._greenlet: Optional[gevent.Greenlet] = None
        self._parked = False
        self._done: Optional[Event] = None
        self._kw: Dict[str, Any] = {}
        self._plain_kw = False
        self._slot_held = False
        self._args: tuple = ()
        self._invoke: Callable[..., Any] = self._invoke_sync
        # None until the first start; _choose_invoker sets it before any invoker runs
        # (typed as set, so that the per-run calls need neither a check nor an ignore)
        self._executor: Callable[..., Any] = None  # type: ignore[assignment]
        self._failures: Optional[FailureLog] = None
        self.runs = 0
        self.errors = 0
        self._run_mono: Optional[float] = None
        self._ended = 0.0
        self.last_duration: Optional[float] = None

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
        ``_delay_before``) override the initial parameters and stay
        overridden. Starts the supervisor if needed. Thread-safe."""
        return self.supervisor.run_in_hub(self._start, args, kwargs)

    def _start(self, args: tuple, kwargs: Dict[str, Any]) -> bool:
        if self._active:
            return False
        self._apply_overrides(kwargs)
        executor = self._resolve_executor()
        if self._done is not None and not self._done.is_set():
            # stopped without waiting and not finished yet: let the old run end first
            self._wait_stopped(None)
        self.supervisor.ensure_started("worker %s" % self.name)
        self._args = args
        # _name and o first (in _PLAIN_KEYS order), whether given or not
        kw = {"_name": kwargs.get("_name", self.name), "o": kwargs.get("o", self.o)}
        kw.update(kwargs)
        self._choose_invoker(executor, kw)
        self._kw = kw
        self._plain_kw = not args and list(kw) == _PLAIN_KEYS and kw["_worker"] is self
        self.before_start()
        self._gen += 1
        self._done = Event()
        self._active = True
        self._started = True
        self.supervisor.register_worker(self)
        self._launch(self._gen)
        self.after_start()
        return True

    def _resolve_executor(self) -> Callable[..., Any]:
        func = self._func if self._func is not None else getattr(self, "run", None)
        if func is None or not callable(func):
            raise TypeError(
                "worker %s has no executor: pass func= or define a run method" % self.name
            )
        return func

    def _choose_invoker(self, executor: Callable[..., Any], kw: Dict[str, Any]) -> None:
        """Pick sync / async / process for this start (see the module docstring)."""
        self._executor = executor
        if self._func is None and is_static_run(self) and self.supervisor.mp_pool is not None:
            self._invoke = self._invoke_mp  # no _worker: the call crosses a process boundary
            return
        kw["_worker"] = self
        if inspect.iscoroutinefunction(executor):
            # Coroutines take no pool slot (as in atasker, priority does not apply).
            self._aloop = self.supervisor.aloops.resolve(self.loop)
            self._invoke = self._invoke_async
            return
        self._invoke = self._invoke_sync_slot if self.holds_slot else self._invoke_sync

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
        if self._active:
            self.before_stop()
            self._active = False
            self._stop_options(options)
            self.send_stop_events()
            self._halt()
        if deadline.waits:
            self._wait_stopped(deadline.remaining())

    def _stop_options(self, options: Dict[str, Any]) -> None:
        if options:
            raise TypeError("unexpected stop() argument %r" % sorted(options)[0])

    def _wait_stopped(self, timeout: Optional[float]) -> bool:
        """Wait until the worker's loop has ended, unless that would deadlock."""
        done = self._done
        if done is None or done.is_set():
            return True
        current = getcurrent()
        if current is self._greenlet or self._in_own_run(current) or current is gevent.get_hub():
            return False
        return done.wait(timeout)

    def _in_own_run(self, current: Any) -> bool:
        """True if ``current`` is running this worker's executor."""
        return False

    def _finished(self, gen: int) -> None:
        """The worker's loop has ended (any path): unregister, after_stop."""
        if gen != self._gen:
            return
        self._active = False
        self._greenlet = None
        self.supervisor.unregister_worker(self)
        try:
            self.after_stop()
        finally:
            if self._done is not None:
                self._done.set()

    def is_active(self) -> bool:
        """True between ``start()`` and ``stop()`` (or an executor's ``False``)."""
        return self._active

    @property
    def runs_sync(self) -> bool:
        """True once started with a plain (sync) executor, called in the hub's
        thread — not a coroutine on an aloop, nor a call in a child process.
        (atasker counts such continuous workers as thread tasks.)"""
        return getattr(self._invoke, "__name__", "").startswith("_invoke_sync")

    def is_started(self) -> bool:
        """True while the worker runs, as in atasker: from ``start()`` until its
        loop has ended (after ``stop()``, or an executor that returned ``False``)."""
        done = self._done
        return done is not None and not done.is_set()

    def is_stopped(self) -> bool:
        """True when the worker is not active and its loop has ended."""
        return not self._active and (self._done is None or self._done.is_set())

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
    def _launch(self, gen: int) -> None:
        raise NotImplementedError

    def _interrupt(self, timeout: float) -> None:
        """Abort the run in progress (``GreenletExit`` thrown into it) and wait
        at most ``timeout`` seconds for the worker's loop to end. For a
        graceful shutdown's deadline (see ``gworker.integrations.lifecycle``)."""
        glet = self._greenlet
        if glet is not None:
            glet.kill(block=True, timeout=timeout)
            if glet.dead and self._greenlet is glet:
                # killed before it first ran: its loop, whose ``finally`` ends
                # the worker, never began
                self._finished(self._gen)

    def _halt(self) -> None:
        """Interrupt the worker if it is parked waiting for work."""
        glet = self._greenlet
        if glet is not None and not glet.dead:
            self.supervisor.hub.loop.run_callback(self._throw_if_parked, glet)

    def _throw_if_parked(self, glet: gevent.Greenlet) -> None:
        # Runs in the hub: the greenlet is not running now, so "parked" is exact.
        if self._parked and self._greenlet is glet and not glet.dead:
            glet.throw(Halt)

    def _park(self, wait: Callable[..., Any], *args: Any) -> Any:
        """Wait for work in a way ``stop()`` may interrupt (raises ``Halt``)."""
        self._parked = True
        try:
            return wait(*args)
        finally:
            self._parked = False

    # -- the executor path (the *how*) -------------------------------------------------------------
    def _execute(self, pre: tuple = ()) -> bool:
        """Make one executor call; False if the worker must stop now.

        Two clock reads per call (each costs about as much as a small Python
        call): the start, kept as monotonic time (``last_run`` converts it on
        demand), and the end, kept in ``_ended`` for the caller's yield check."""
        kw = self._kw
        kw["_task_id"] = next(call_ids)
        self.runs += 1
        self._run_mono = started = monotonic()
        try:
            result = self._invoke(pre, kw)
        except (Exception, gevent.Timeout):
            return self._run_failed()
        finally:
            self._ended = ended = monotonic()
            self.last_duration = ended - started
        return self._outcome(result)

    async def _execute_async(self, pre: tuple = ()) -> bool:
        """``_execute`` for an ``async def`` executor, awaited by a coroutine
        already running on the worker's aloop (a queue worker's loop, see
        ``BackgroundQueueWorker``): the same keywords, stats and outcome, with
        no task, no greenlet switch and no loop wake-up per call."""
        kw = self._kw
        kw["_task_id"] = task_id = next(call_ids)
        self.runs += 1
        self._run_mono = started = monotonic()
        try:
            if self._plain_kw and len(pre) < 2:
                if pre:
                    result = await self._executor(pre[0], _name=kw["_name"], o=kw["o"], _worker=self,
                                                  _task_id=task_id)
                else:
                    result = await self._executor(_name=kw["_name"], o=kw["o"], _worker=self, _task_id=task_id)
            else:
                result = await self._executor(*pre, *self._args, **kw)
        except (Exception, gevent.Timeout):
            return self._run_failed()
        finally:
            self._ended = ended = monotonic()
            self.last_duration = ended - started
        return self._outcome(result)

    # The outcome routing, shared by every path that calls an executor.

    def _outcome(self, result: Any) -> bool:
        """After a call returned ``result``: ``False`` stops the worker; else
        whether the worker is still active."""
        if result is False:
            self._active = False
            return False
        return self._active

    def _run_failed(self) -> bool:
        """In the ``except`` block of a failed call: count it, route it to
        on_error or the log; the worker goes on (returns whether it is active)."""
        self.errors += 1
        self._failed()
        return self._active

    @property
    def last_run(self) -> Optional[float]:
        """Wall-clock time (``time.time()``) the last run started, or None."""
        if self._run_mono is None:
            return None
        return time.time() - (monotonic() - self._run_mono)

    # A worker started with no arguments of its own (the common case) calls its
    # executor with the four keywords spelled out, in the order ``kw`` holds them:
    # the same call, at less than half the cost of unpacking ``*pre, **kw``.

    def _invoke_sync(self, pre: tuple, kw: Dict[str, Any]) -> Any:
        if self._plain_kw and len(pre) < 2:
            if pre:
                return self._executor(pre[0], _name=kw["_name"], o=kw["o"], _worker=self,
                                      _task_id=kw["_task_id"])
            return self._executor(_name=kw["_name"], o=kw["o"], _worker=self, _task_id=kw["_task_id"])
        return self._executor(*pre, *self._args, **kw)

    def _invoke_sync_slot(self, pre: tuple, kw: Dict[str, Any]) -> Any:
        # Not parked while it waits for a slot: the item or trigger is taken,
        # so this run is in progress and stop() lets it finish.
        pool = self.supervisor.thread_pool
        if self._slot_held:  # admitted before its greenlet existed (an interval run)
            self._slot_held = False
        elif not pool.try_admit(self.priority):  # the common case costs no extra call
            pool.admit(self.priority, self)
        try:
            return self._invoke_sync(pre, kw)
        finally:
            pool.release()

    def _invoke_async(self, pre: tuple, kw: Dict[str, Any]) -> Any:
        # The worker's greenlet waits cooperatively while the coroutine runs on its aloop.
        # (_choose_invoker sets _aloop before it picks this invoker)
        return self._aloop.run(self._executor(*pre, *self._args, **kw))  # type: ignore[union-attr]

    def _invoke_mp(self, pre: tuple, kw: Dict[str, Any]) -> Any:
        result = self.supervisor.run_in_mp_pool(self._executor, pre + self._args, kw, self.priority)
        return self.process_result(result)

    def process_result(self, result: Any) -> Any:
        """Called in the hub with what a static ``run`` returned from its child
        process; returning ``False`` stops the worker. Override it."""
        return result

    def _failed(self) -> None:
        """Route the exception being handled to on_error, or to the log."""
        if self.on_error is not None:
            try:
                self.on_error(**self.on_error_kwargs)
            except Exception:
                logger.exception("worker %s: on_error failed", self.name)
            return
        if self._failures is None:
            self._failures = FailureLog()
        # (called in the except block of the failed run: there is an exception)
        self._failures.error(sys.exc_info()[1], "worker %s: executor failed", self.name)  # type: ignore[arg-type]

    # -- info ------------------------------------------------------------------------------------------
    def get_info(self) -> Dict[str, Any]:
        """Figures for the status endpoint and ``TaskSupervisor.get_info()``."""
        return {
            "name": self.name,
            "kind": self.kind,
            "priority": self.priority,
            "active": self._active,
            "runs": self.runs,
            "errors": self.errors,
            "last_run": self.last_run,
            "last_duration": self.last_duration,
            "queue_length": None,
        }

    def __repr__(self) -> str:
        return "<%s %s active=%s>" % (type(self).__name__, self.name, self._active)


def _check_loop(loop: Any, parameter: str) -> Any:
    if loop is not None and not isinstance(loop, (str, Aloop, asyncio.AbstractEventLoop)):
        raise TypeError(
            "%s must be an aloop, an aloop name or an asyncio loop of an aloop; got %r" % (parameter, loop)
        )
    return loop


def is_static_run(worker: Worker) -> bool:
    """True if the worker's class defines ``run`` as a ``@staticmethod``."""
    return isinstance(inspect.getattr_static(type(worker), "run", None), staticmethod)

