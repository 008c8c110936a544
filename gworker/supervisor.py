"""The task supervisor: one per hub, owner of everything gworker runs there.

A :class:`TaskSupervisor` holds

* the *thread pool* — a :class:`~gworker._admission.PriorityPool` that admits sync
  executor calls and ``TT_THREAD`` tasks (greenlets, despite atasker's name) by
  priority;
* the *timers* that tell interval workers when they are due;
* the registry of started workers ("schedulers", in atasker's words) and of
  unfinished tasks, for ``get_info()``, ``get_task()`` and shutdown.

It lives in the hub of the thread that first starts it. ``start``, ``stop`` and
``put_task`` may be called from other OS threads: they are carried into that
hub (see :mod:`gworker._hubsafe`). Constructing one creates no hub, thread or
greenlet.
"""
from __future__ import annotations

import inspect
import logging
import os
from itertools import count
from types import SimpleNamespace
from typing import Any, Callable, Dict, Optional, Union

import gevent
from gevent.event import Event
from gevent.hub import Hub, get_hub, getcurrent

from ._errors import report
from .context import capture
from .events import ALL_EVENTS, Listeners, WorkerEvent
from . import _hubsafe as hubsafe, _thread_names
from .aio import SUPERVISOR_ALOOP, Aloop, AloopRegistry, UnknownAloopError
from ._checks import check_seconds, named_or_default
from .limits import check_timeout
from ._gevent import get_hub_if_exists
from ._gunicorn_master import refuse_in_gunicorn_master
from ._deadline import Deadline
from ._admission import ADMITTED, HELD, PriorityPool, Slot
from .priorities import PRIORITIES, TASK_NORMAL, TASK_TYPES, TT_COROUTINE, TT_MP, TT_THREAD, check_priority
from .limits import check_timeout, retry_policy
from .tasks import TASK_STATUS_DELAYED, Task, TaskRunner, name_of
from ._runners import Runners
from ._timers import Timers

__all__ = ["TaskSupervisor", "DEFAULT_POLL_DELAY", "logger"]

logger = logging.getLogger("gworker")

DEFAULT_POLL_DELAY = 0.1

#: atasker's defaults for the starvation warnings (seconds a task waited to start).
DEFAULT_TIMEOUT_WARNING = 5
DEFAULT_TIMEOUT_CRITICAL = 10

_supervisor_ids = count(1)


def _pool_limit(pool: str, name: str, doc: str, set_by: Optional[str] = None) -> property:
    """A :class:`TaskSupervisor` attribute (atasker's) that reads limit
    ``name`` of the PriorityPool in attribute ``pool`` (None while that is
    None); with ``set_by``, setting it calls that method as
    ``set_by(name=value)``, else it is read-only."""

    def get(self: "TaskSupervisor") -> Any:
        admission = getattr(self, pool)
        return None if admission is None else getattr(admission, name)

    if set_by is None:
        return property(get, doc=doc)

    def set_(self: "TaskSupervisor", value: Any) -> None:
        getattr(self, set_by)(**{name: value})

    return property(get, set_, doc=doc)


class TaskSupervisor:
    """Runs workers and tasks in one gevent hub (see the module docstring).

    ``supervisor_id`` names it in logs and ``get_info()``; by default a short
    counter-based id (the default ``task_supervisor``'s is ``'default'``).

    Starvation warnings, as in atasker: work that waited in line for a slot of
    the thread or process pool (a task, or a worker's run) for more than
    ``timeout_warning`` seconds (default 5) is logged at WARNING on the
    ``gworker`` logger when it starts, and ``timeout_warning_func(task)`` is
    called; past ``timeout_critical`` (10) at CRITICAL, with
    ``timeout_critical_func(task)``. ``task`` is the :class:`Task`, or for a
    worker's run the worker. The message is ``timeout_message`` formatted with
    ``supervisor_id``, ``task_id``, ``target`` and ``time_spent``. The
    functions run in a greenlet of their own. Work admitted at once is never
    timed, so this costs nothing while the pool has room.
    """

    timeout_message = (
        "{supervisor_id} task {task_id}: {target} started in {time_spent:.3f} seconds."
        " Increase pool size or decrease number of workers"
    )

    def __init__(self, supervisor_id: Optional[str] = None) -> None:
        self.id = supervisor_id if supervisor_id is not None else "supervisor-%d" % next(_supervisor_ids)
        self.poll_delay = DEFAULT_POLL_DELAY
        #: the greenlets that make admitted calls, reused (see gworker._runners)
        self.runners = Runners(self)
        self.thread_pool = PriorityPool(runners=self.runners)
        self.thread_pool.on_waited = self._waited
        self.mp_pool: Any = None
        self.mp_admission: Optional[PriorityPool] = None
        # until set_mp_pool sets limits, admission follows the pool's window
        self._mp_admission_follows_window = True
        self.timers = Timers()
        #: the listeners of the supervisor's events (see :meth:`add_listener`, :mod:`gworker.events`)
        self.listeners = Listeners()
        #: ``factory(worker)`` → the statistics object each engine built from
        #: now on hands its runs' durations to, or None (gworker's metrics:
        #: see :meth:`_set_run_stats` and gworker.workers._engine)
        self._run_stats: Optional[Callable[[Any], Any]] = None
        self.aloops = AloopRegistry(supervisor=self)
        self._hub: Optional[Hub] = None
        self._active = False
        self._started = False
        self._stopped: Optional[Event] = None
        self._workers: Dict[int, Any] = {}
        self._tasks: Dict[str, Task] = {}
        # tasks.py runs the tasks; its grants are bound once, not per task
        self._runner = runner = TaskRunner(self, self._tasks)
        self._start_thread = runner.start_thread
        self._start_mp = runner.start_mp
        #: Async job schedulers by name (see :mod:`gworker.jobs`).
        self.async_job_schedulers: Dict[str, Any] = {}
        self.default_async_job_scheduler: Any = None
        self._timeout_warning: float = DEFAULT_TIMEOUT_WARNING
        self.timeout_critical: float = DEFAULT_TIMEOUT_CRITICAL
        #: called as ``timeout_warning_func(task)`` after a starvation warning (or None)
        self.timeout_warning_func: Optional[Callable[[Any], Any]] = None
        #: called as ``timeout_critical_func(task)`` after a critical one (or None)
        self.timeout_critical_func: Optional[Callable[[Any], Any]] = None
        self._set_warn_after()

    # -- atasker's attributes -----------------------------------------------------
    @property
    def timeout_warning(self) -> float:
        """Seconds in line for a pool slot after which starting work is logged
        as a warning (default 5; see the class docstring)."""
        return self._timeout_warning

    @timeout_warning.setter
    def timeout_warning(self, value: float) -> None:
        self._timeout_warning = check_seconds(value, "timeout_warning", allow_none=False)
        self._set_warn_after()

    def _set_warn_after(self) -> None:
        for pool in (self.thread_pool, self.mp_admission):
            if pool is not None:
                pool.warn_after = self._timeout_warning

    def _waited(self, slot: Slot, seconds: float) -> None:
        """A pool's report that ``slot`` waited ``seconds`` to be granted (at
        least ``timeout_warning``): runs where the slot is granted (a hub
        callback or a releasing greenlet), so it only logs and spawns."""
        subject: Any = slot.holder  # the Task, or the worker whose run waited
        if isinstance(subject, Task):
            task_id, target = subject.id, name_of(subject.target)
        else:
            task_id, target = "-", "worker %s" % getattr(subject, "name", subject)
        critical = seconds > self.timeout_critical
        message = self.timeout_message.format(
            supervisor_id=self.id, task_id=task_id, target=target, time_spent=seconds)
        if critical:
            logger.critical(message)
            func = self.timeout_critical_func
        else:
            logger.warning(message)
            func = self.timeout_warning_func
        if func is not None:
            gevent.spawn(self._call_timeout_func, func, subject)

    @staticmethod
    def _call_timeout_func(func: Callable[[Any], Any], subject: Any) -> None:
        try:
            func(subject)
        except Exception:
            report("timeout function %r failed", func)

    thread_pool_size = _pool_limit(
        "thread_pool", "pool_size",
        "The thread pool's ``pool_size`` (atasker's attribute; setting it"
        " reconfigures the pool, as ``set_thread_pool(pool_size=value)``).",
        set_by="set_thread_pool")
    thread_reserve_normal = _pool_limit(
        "thread_pool", "reserve_normal",
        "The thread pool's ``reserve_normal`` (settable, as ``thread_pool_size``).",
        set_by="set_thread_pool")
    thread_reserve_high = _pool_limit(
        "thread_pool", "reserve_high",
        "The thread pool's ``reserve_high`` (settable, as ``thread_pool_size``).",
        set_by="set_thread_pool")
    mp_pool_size = _pool_limit(
        "mp_admission", "pool_size",
        "How many process-pool calls ``TASK_LOW`` work may have admitted (the"
        " admission's ``pool_size``), or None before a process pool is made.")
    mp_reserve_normal = _pool_limit(
        "mp_admission", "reserve_normal",
        "The process pool's ``reserve_normal`` (None before a pool is made).")
    mp_reserve_high = _pool_limit(
        "mp_admission", "reserve_high",
        "The process pool's ``reserve_high`` (None before a pool is made).")

    # -- where it lives ------------------------------------------------------------
    @property
    def hub(self) -> Hub:
        """The hub this supervisor runs in (bound on first start)."""
        if self._hub is None:
            self._hub = get_hub()
        return self._hub

    @property
    def bound_hub(self) -> Optional[Hub]:
        """The hub this supervisor runs in, or None before it is bound (unlike
        :attr:`hub`, reading it binds nothing)."""
        return self._hub

    def foreign_hub(self) -> Optional[Hub]:
        """``None`` when the caller may touch this supervisor's gevent objects
        directly (it runs in the hub's thread), else the hub to post calls to.

        Raises ``RuntimeError`` from another OS thread while the supervisor has
        no hub yet: there is nowhere safe to carry the call."""
        hub = self._hub
        if hub is not None:
            return None if hub.thread_ident == hubsafe.os_thread_ident() else hub
        if get_hub_if_exists() is not None or hubsafe.os_thread_ident() == hubsafe.MAIN_THREAD_IDENT:
            return None
        raise RuntimeError(
            "supervisor %s has no hub yet: start it in its hub's thread before"
            " calling it from another OS thread" % self.id
        )

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` now if the caller is in the hub's thread, else as
        a hub callback posted from this thread, through the hub's inbox
        (``fn`` must not block; see :mod:`gworker._hubsafe`)."""
        hub = self.foreign_hub()
        if hub is None:
            fn(*args)
        else:
            hubsafe.post(hub, fn, *args)

    def run_in_hub(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in this supervisor's hub and return its result:
        directly when called in the hub's thread (or before the supervisor has
        a hub), else handed to the hub while the calling OS thread waits (the
        hub never does). How every thread-safe method of gworker's runs."""
        hub = self._hub
        if hub is None or hub.thread_ident == hubsafe.os_thread_ident():
            return fn(*args)
        return hubsafe.call_in_hub(hub, fn, *args)

    # -- lifecycle -------------------------------------------------------------------
    def start(self, daemon: Any = None) -> bool:
        """Start the supervisor; ``False`` if it is already active. Thread-safe.

        ``daemon`` is accepted for atasker compatibility and changes nothing
        (there is no event-loop thread to make a daemon of). Refused
        (``RuntimeError``) in a gunicorn master process: see
        :mod:`gworker._gunicorn_master`."""
        refuse_in_gunicorn_master("supervisor %s" % self.id)
        return self.run_in_hub(self._start)

    def _start(self) -> bool:
        if self._active:
            return False
        hub = self.hub
        hubsafe.inbox_of(hub)  # (made here, in the hub's thread: see gworker._hubsafe)
        self.thread_pool.bind_hub(hub)
        self.runners.open()
        self.aloops.bind_hub(hub)
        self._stopped = Event()
        self._active = True
        self._started = True
        _thread_names.install()
        self.timers.start()
        logger.debug("supervisor %s started", self.id)
        return True

    def ensure_started(self, by: str) -> None:
        """Start the supervisor if it is not active (logged at INFO)."""
        if not self._active:
            refuse_in_gunicorn_master(by)
            logger.info("supervisor %s was not started; starting it for %s", self.id, by)
            self.start()

    def is_active(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._active

    def is_started(self) -> bool:
        """True once the supervisor has been started (even if stopped since)."""
        return self._started

    def stop(
        self,
        wait: Union[bool, float] = True,
        stop_schedulers: bool = True,
        cancel_tasks: bool = False,
    ) -> None:
        """Stop the supervisor. Thread-safe.

        ``stop_schedulers``: stop every started worker first. ``cancel_tasks``:
        kill running tasks and withdraw queued ones, instead of letting them
        finish. ``wait``: ``True`` waits until workers and tasks have finished,
        a number waits at most that many seconds, ``False`` returns at once (the
        shutdown goes on in a greenlet of the hub)."""
        deadline = Deadline.from_wait(wait)
        if not deadline.waits:
            hub = self._hub
            if hub is None:
                return
            hubsafe.post_to_hub(hub, self._stop, Deadline.never(), stop_schedulers, cancel_tasks)
            return
        self.run_in_hub(self._stop, deadline, stop_schedulers, cancel_tasks)

    def _stop(self, deadline: Deadline, stop_schedulers: bool, cancel_tasks: bool) -> None:
        if not self._active:
            return
        current = getcurrent()
        if stop_schedulers:
            workers = list(self._workers.values())
            for worker in workers:
                worker.stop(wait=False)
            for worker in workers:
                worker.stop(wait=deadline.as_wait())  # stopped already: this only waits
        if cancel_tasks:
            for task in list(self._tasks.values()):
                task.cancel()
            running = [t for t in self._tasks.values() if t.greenlet is not None and t.greenlet is not current]
            if running:
                # into the greenlet that still runs each task when the throw
                # comes: a runner that finished it meanwhile has gone on to
                # other work, which is not this stop's to kill
                hubsafe.interrupt(self.hub, lambda: [t.greenlet for t in running if t.greenlet is not None],
                                  deadline.remaining())
        else:
            for task in list(self._tasks.values()):
                if task.tries and task.status == TASK_STATUS_DELAYED and task.withdraw():
                    self._runner.give_up(task)  # waiting for a retry: its failure is final now
            own = next((t for t in self._tasks.values() if t.greenlet is current), None)
            for task in list(self._tasks.values()):
                if task is not own and not task.completed.wait(deadline.remaining()):
                    break
        self._stop_extras(deadline, cancel_tasks)
        self.timers.stop()
        self.runners.close()
        self._active = False
        if self._stopped is not None:
            self._stopped.set()
        logger.debug("supervisor %s stopped", self.id)

    def _stop_extras(self, deadline: Deadline, cancel_tasks: bool) -> None:
        """Stop the async job schedulers (their jobs would keep their aloops
        busy for ever), the aloops and the process pool (which leaves no child
        behind)."""
        schedulers = list(self.async_job_schedulers.values())
        for scheduler in schedulers:
            scheduler.stop(wait=False)
        for scheduler in schedulers:
            scheduler.stop(wait=deadline.as_wait())
        self.async_job_schedulers.clear()
        self.default_async_job_scheduler = None
        self.aloops.stop_all(wait=deadline.as_wait(), cancel_tasks=cancel_tasks)
        pool, self.mp_pool = self.mp_pool, None
        if pool is not None:
            if cancel_tasks:
                pool.terminate()
            else:
                pool.shutdown(wait=True, timeout=deadline.remaining())

    def block(self) -> None:
        """Wait cooperatively until the supervisor is stopped."""
        if self._stopped is None:
            return
        self._stopped.wait()

    # -- pools -----------------------------------------------------------------------
    def set_thread_pool(
        self,
        pool_size: Optional[int] = None,
        reserve_normal: Optional[int] = None,
        reserve_high: Optional[int] = None,
        min_size: Union[int, str, None] = None,
        max_size: Optional[int] = None,
    ) -> None:
        """Set the limits of the pool that admits sync executor greenlets.

        Parameters left out keep their value (defaults: ``pool_size=100``,
        ``reserve_normal=10``, ``reserve_high=10``, ``max_size`` none).
        ``min_size`` (a number, or atasker's ``'max'``) is accepted for atasker
        compatibility: greenlets need no pre-spawning, so it changes nothing.
        Waiters that now fit start at once."""
        self.run_in_hub(self.thread_pool.configure, pool_size, reserve_normal, reserve_high, min_size, max_size)

    def create_mp_pool(self, *args: Any, **kwargs: Any) -> Any:
        """Make the process pool for static ``run`` executors and ``TT_MP`` tasks.

        Takes ``multiprocessing.Pool``'s arguments (``processes``, ``initializer``,
        ``initargs``, ``maxtasksperchild``, ``context``) and ``spin``; see
        :class:`gworker.processes.ProcessPool`. Calls are admitted by priority
        like the thread pool. By default every priority may use every process,
        and admission lets in as many calls as the children's windows hold (the
        pool's ``window`` per child: about 4 ms of work each, by the measured
        time per call, 1 to 64 calls), so that small calls are written ahead in
        batches while a more urgent call never waits behind more than that;
        ``set_mp_pool`` sets fixed limits and reserves instead. A pool made
        before is shut down first. Must be called in the hub's thread (children
        are watched by its loop)."""
        from .processes import ProcessPool

        pool = ProcessPool(*args, **kwargs)
        old, self.mp_pool = self.mp_pool, pool
        if old is not None:
            old.shutdown(wait=False)
        admission = self.mp_admission
        if admission is None:
            admission = self._new_mp_admission(pool.hub, pool.processes * pool.window, 0, 0)
        elif self._mp_admission_follows_window:
            admission.configure(pool.processes * pool.window, 0, 0)
        # calls still waiting for admission are backlog: the pool writes ahead for them
        pool.backlog_hint = admission.queued
        pool.on_window = lambda window: self._mp_window_changed(pool, window)
        return pool

    def _new_mp_admission(self, hub: Optional[Hub], pool_size: int, reserve_normal: int,
                          reserve_high: int) -> PriorityPool:
        # The process pool's admission, set up as the thread pool is (starvation
        # warnings); the limits are checked before it is kept.
        admission = PriorityPool(hub=hub, runners=self.runners)
        admission.configure(pool_size, reserve_normal, reserve_high)
        admission.on_waited = self._waited
        self.mp_admission = admission
        self._set_warn_after()
        return admission

    def _mp_window_changed(self, pool: Any, window: int) -> None:
        # The pool's reader greenlet, after a read: resizing may admit calls
        # (which only schedules them).
        if pool is self.mp_pool and self._mp_admission_follows_window and self.mp_admission is not None:
            self.mp_admission.configure(pool.processes * window, 0, 0)

    def set_mp_pool(
        self,
        pool_size: Optional[int] = None,
        reserve_normal: Optional[int] = None,
        reserve_high: Optional[int] = None,
    ) -> None:
        """Set admission to the process pool, making the pool if there is none.

        Limits work as for the thread pool: ``TASK_LOW`` while fewer than
        ``pool_size`` calls run in children, ``TASK_NORMAL`` ``+reserve_normal``,
        ``TASK_HIGH`` ``+reserve_high``, ``TASK_CRITICAL`` always (it then waits
        in the pool's own queue for a free child). A new pool gets
        ``pool_size + reserve_normal + reserve_high`` processes; the defaults are
        the limits in force (without a pool, ``os.cpu_count()``, 0 and 0). From
        then on the limits are fixed: admission no longer follows the pool's
        window (see ``create_mp_pool``)."""
        admission = self.mp_admission
        if admission is None:
            admission = self._new_mp_admission(
                None,
                (os.cpu_count() or 1) if pool_size is None else pool_size,
                0 if reserve_normal is None else reserve_normal,
                0 if reserve_high is None else reserve_high,
            )
        else:
            admission.configure(pool_size, reserve_normal, reserve_high)  # None keeps the value
        self._mp_admission_follows_window = False
        if self.mp_pool is None:
            processes = admission.pool_size + admission.reserve_normal + admission.reserve_high
            self.create_mp_pool(processes=max(1, processes))

    def run_in_mp_pool(
        self, fn: Callable[..., Any], args: tuple, kwargs: Dict[str, Any], priority: int,
        holder: Any = None, timeout: Optional[float] = None,
    ) -> Any:
        """Run ``fn`` in the process pool at ``priority`` and return its result
        (the calling greenlet waits cooperatively; the child's exception is
        raised here). ``holder`` (a worker) is whom a starvation warning names.
        ``timeout`` is the call's time limit in its child (see
        ``ProcessPool.submit``): past it the child is killed and replaced and
        :class:`~gworker.RunTimeout` is raised here; the wait for admission
        does not count."""
        if timeout is not None:
            timeout = check_timeout(timeout)
        pool = self.mp_pool
        if pool is None:
            raise RuntimeError("supervisor %s has no process pool: call create_mp_pool() first" % self.id)
        # (create_mp_pool sets mp_admission whenever it sets mp_pool: not None here)
        admission: PriorityPool = self.mp_admission  # type: ignore[assignment]
        slot = admission.slot(priority, holder)  # one token per call: calls are not cheap anyway
        admission.acquire(slot)
        try:
            return pool.submit(fn, args, kwargs, timeout).get()
        finally:
            admission.release(slot)

    # -- aloops -------------------------------------------------------------------------
    def create_aloop(self, name: str, daemon: bool = False, start: bool = True, default: bool = False) -> Any:
        """Make an aloop — an asyncio loop running in a greenlet of this hub —
        named ``name``; start it unless ``start=False``; make it the default
        for async executors if ``default=True``. Returns the :class:`Aloop`, or
        ``False`` (logged as an error) if an aloop of that name exists, as in
        atasker."""
        if not isinstance(name, str):
            raise TypeError("name must be a string; got %r" % (name,))
        if name in self.aloops:
            logger.error("supervisor %s: an aloop named %r already exists", self.id, name)
            return False
        if start:
            self.ensure_started("aloop %s" % name)
        return self.run_in_hub(self.aloops.create, name, daemon, start, default)

    def get_aloop(self, name: Optional[str] = None, default: bool = True) -> Optional[Aloop]:
        """The aloop named ``name``; with no name the default aloop (``None``
        with ``default=False``); None if there is no such aloop (as in atasker)."""
        if name is None and not default:
            return None
        try:
            return self.aloops.get(name)
        except UnknownAloopError:
            return None

    def get_aloops(self) -> Dict[str, Aloop]:
        """The aloops made with ``create_aloop``, by name (a copy, as atasker's)."""
        return {aloop.name: aloop for aloop in self.aloops if aloop.name != SUPERVISOR_ALOOP}

    @property
    def default_aloop(self) -> Optional[Aloop]:
        """The default aloop (None if there is none); assigning an aloop (or its
        name) sets it, ``None`` clears it — as ``set_default_aloop``."""
        return self.aloops.default

    @default_aloop.setter
    def default_aloop(self, aloop: Union[Aloop, str, None]) -> None:
        self.set_default_aloop(aloop)

    def start_aloop(self, name: str) -> bool:
        """Start the aloop ``name``: True, or False if there is no such aloop
        (logged as an error, as in atasker) or it runs already."""
        if name not in self.aloops:
            logger.error("supervisor %s: no aloop named %r", self.id, name)
            return False
        return self.run_in_hub(self.aloops.start, name)

    def stop_aloop(self, name: str, wait: Union[bool, float] = True, cancel_tasks: bool = False) -> bool:
        """Stop aloop ``name``: pending tasks finish first, or are cancelled with
        ``cancel_tasks=True``; ``wait`` as in ``Aloop.stop``. The aloop stays
        registered (and the default, if it was): ``start_aloop(name)`` starts
        it again, as in atasker. The async job schedulers running on it are
        stopped first (without waiting for their runs in progress: the aloop's
        stop does). Returns what ``Aloop.stop`` returns, or False if there is no
        such aloop (logged as an error, as in atasker)."""
        if name not in self.aloops:
            logger.error("supervisor %s: no aloop named %r", self.id, name)
            return False
        wait = Deadline.from_wait(wait).as_wait()  # a bad value raises before anything stops
        return self.run_in_hub(self._stop_aloop, name, wait, cancel_tasks)

    def _stop_aloop(self, name: str, wait: Union[bool, float], cancel_tasks: bool) -> bool:
        aloop = self.aloops.get(name)
        for scheduler in list(self.async_job_schedulers.values()):
            if scheduler.aloop is aloop and scheduler.is_active():
                scheduler.stop(wait=False)
        return aloop.stop(wait=wait, cancel_tasks=cancel_tasks)

    def set_default_aloop(self, aloop: Union[Aloop, str, None]) -> None:
        """Make ``aloop`` (or the aloop of that name) the default one; None clears it."""
        self.run_in_hub(self.aloops.set_default, aloop)

    # -- async jobs ---------------------------------------------------------------------
    def create_async_job_scheduler(
        self, name: str, aloop: Any = None, start: bool = True, default: bool = False
    ) -> Any:
        """Make an :class:`~gworker.jobs.AsyncJobScheduler` named ``name``
        (``ValueError`` if taken) running its jobs on ``aloop`` (an aloop, its
        name or its asyncio loop; ``None``: the default aloop, else the
        supervisor's own); start it unless ``start=False``; make it the default
        for ``create_async_job`` if ``default=True``. Starts the supervisor if
        needed."""
        from .jobs import AsyncJobScheduler

        if not isinstance(name, str) or not name:
            raise TypeError("name must be a non-empty string; got %r" % (name,))
        if name == "__supervisor__":
            raise ValueError("name %r is reserved for the supervisor's own scheduler" % name)
        return self.run_in_hub(self._create_async_job_scheduler, AsyncJobScheduler(name, aloop, self), start, default)

    def _create_async_job_scheduler(self, scheduler: Any, start: bool, default: bool) -> Any:
        if scheduler.name in self.async_job_schedulers:
            raise ValueError("name: an async job scheduler named %r already exists" % (scheduler.name,))
        if start:
            scheduler.start()
        self.async_job_schedulers[scheduler.name] = scheduler
        if default:
            self.default_async_job_scheduler = scheduler
        return scheduler

    def set_default_async_job_scheduler(self, scheduler: Any) -> None:
        """Make ``scheduler`` (or the scheduler of that name; ``None`` clears)
        the default of ``create_async_job``/``cancel_async_job``."""
        if isinstance(scheduler, str):
            scheduler = self.get_async_job_scheduler(scheduler)
        self.default_async_job_scheduler = scheduler

    def get_async_job_scheduler(self, name: Optional[str] = None) -> Any:
        """The async job scheduler named ``name`` (``ValueError`` if unknown),
        or the default one (possibly None) when no name is given."""
        return named_or_default(self.async_job_schedulers, name, self.default_async_job_scheduler,
                                "scheduler", "async job scheduler")

    def _job_scheduler(self, scheduler: Any) -> Any:
        # The scheduler meant by a create/cancel_async_job ``scheduler=`` value.
        from .jobs import AsyncJobScheduler

        if scheduler is None:
            if self.default_async_job_scheduler is not None:
                return self.default_async_job_scheduler
            own = self.async_job_schedulers.get("__supervisor__")
            if own is None:
                own = AsyncJobScheduler("__supervisor__", None, self)
                self.run_in_hub(self._create_async_job_scheduler, own, True, False)
            elif not own.is_active():
                own.start()
            return own
        if isinstance(scheduler, str):
            return self.get_async_job_scheduler(scheduler)
        if isinstance(scheduler, AsyncJobScheduler):
            return scheduler
        raise TypeError("scheduler must be an async job scheduler, its name or None; got %r" % (scheduler,))

    def create_async_job(self, scheduler: Any = None, target: Any = None, **kwargs: Any) -> Any:
        """Make a periodic job: ``target(*args, **kwargs)`` awaited every
        ``interval`` seconds on ``scheduler`` (a scheduler or its name; ``None``:
        the default scheduler, else one the supervisor makes for itself on its
        default aloop or its own). Keywords: ``target``, ``args``, ``kwargs``,
        ``interval``, ``timer``, ``number`` (see :mod:`gworker.jobs`). Returns
        the :class:`~gworker.jobs.AsyncJob`."""
        from .jobs import AsyncJob

        job = AsyncJob(target, **kwargs)  # bad parameters raise before any scheduler is made
        chosen = self._job_scheduler(scheduler)
        job.scheduler = chosen
        return chosen.add(job)

    def cancel_async_job(self, scheduler: Any = None, job: Any = None) -> None:
        """Cancel ``job`` (no run starts after this; a run in progress finishes).
        ``scheduler``, if given, must be the job's own (``ValueError`` else)."""
        from .jobs import AsyncJob

        if not isinstance(job, AsyncJob):
            raise TypeError("job must be an AsyncJob; got %r" % (job,))
        if scheduler is not None:
            expected = self.get_async_job_scheduler(scheduler) if isinstance(scheduler, str) else scheduler
            if job.scheduler is not expected:
                raise ValueError("scheduler: job %s belongs to scheduler %r" % (
                    job.id, getattr(job.scheduler, "name", None)))
        job.cancel()

    # -- events -----------------------------------------------------------------------
    def add_listener(self, fn: Callable[[WorkerEvent], Any], events: Any = ALL_EVENTS) -> None:
        """Call ``fn(event)`` for each event of the kinds named in ``events``
        (an iterable of names, default every one; see :mod:`gworker.events`),
        for every worker and task of this supervisor; ``event`` is a
        :class:`~gworker.events.WorkerEvent`.

        ``fn`` is called in the greenlet where the event happens, synchronously
        (a run's events right before and after its call), so it must be quick
        and must never block: no I/O, no waiting. One that raises does not
        disturb the run: its exception is logged (at ERROR, once per listener
        per burst). Adding a function added already replaces its events. Takes
        effect for the runs that begin after it, of workers started before it
        too. ``TypeError``/``ValueError`` naming ``fn`` or ``events`` for a bad
        one (an unknown event name). Thread-safe."""
        self.run_in_hub(self.listeners.add, fn, events)

    def remove_listener(self, fn: Callable[[WorkerEvent], Any]) -> None:
        """Stop calling ``fn`` (``ValueError`` if it is not a listener here).
        Thread-safe."""
        self.run_in_hub(self.listeners.remove, fn)

    # -- workers ----------------------------------------------------------------------
    def register_worker(self, worker: Any) -> None:
        """Called by a worker when it starts."""
        self._workers[id(worker)] = worker

    def unregister_worker(self, worker: Any) -> None:
        """Called by a worker when it has stopped."""
        self._workers.pop(id(worker), None)

    def get_schedulers(self) -> Dict[Any, None]:
        """The workers started on this supervisor and not yet stopped, as a
        dict keyed by worker (a copy, as atasker's; the values are None)."""
        return dict.fromkeys(self._workers.values())

    # -- tasks --------------------------------------------------------------------------
    def put_task(
        self,
        target: Callable[..., Any],
        args: tuple = (),
        kwargs: Optional[Dict[str, Any]] = None,
        callback: Optional[Callable[[Any], Any]] = None,
        priority: int = TASK_NORMAL,
        delay: Optional[float] = None,
        tt: int = TT_THREAD,
        task_id: Optional[str] = None,
        worker: Any = None,
        loop: Any = None,
        timeout: Optional[float] = None,
        retries: Optional[int] = None,
        retry_delay: Optional[float] = None,
        retry_backoff: Optional[float] = None,
        retry_max_delay: Optional[float] = None,
        retry_for: Any = None,
    ) -> Task:
        """Run ``target(*args, _task_id=..., **kwargs)`` as a task; return the Task.

        ``tt=TT_THREAD`` runs it in a greenlet admitted by the thread pool at
        ``priority``; ``TT_MP`` in the process pool; ``TT_COROUTINE`` (a coroutine
        function) on an aloop: ``loop`` (an aloop, its name or its asyncio loop),
        else the default aloop, else the supervisor's own. ``delay`` starts it that many seconds later.
        ``callback(result)`` is called in the hub once it has completed.
        ``timeout``: the run's time limit (seconds); ``retries``, ``retry_delay``
        (default 1), ``retry_backoff`` (default 2), ``retry_max_delay``,
        ``retry_for`` (default: every ``Exception`` and ``RunTimeout``): how a
        failed run is made again (see :mod:`gworker.limits`).
        The caller's ``contextvars`` context is captured: every try of the
        task runs in it (see :mod:`gworker.context`).
        Thread-safe. Starts the supervisor if it is not started."""
        if not callable(target):
            raise TypeError("target must be callable; got %r" % (target,))
        check_priority(priority)
        if delay is not None:
            check_seconds(delay, "delay")
        if tt not in TASK_TYPES or isinstance(tt, bool):
            raise ValueError("tt must be TT_THREAD, TT_MP or TT_COROUTINE; got %r" % (tt,))
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable; got %r" % (callback,))
        if not isinstance(args, (tuple, list)):
            raise TypeError("args must be a tuple or list; got %r" % (args,))
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError("kwargs must be a dict; got %r" % (kwargs,))
        if tt == TT_COROUTINE and not inspect.iscoroutinefunction(target):
            raise TypeError("target must be a coroutine function for tt=TT_COROUTINE; got %r" % (target,))
        if tt == TT_MP and self.mp_pool is None:
            raise RuntimeError("tt=TT_MP needs a process pool: call create_mp_pool() first")
        task = Task(target, tuple(args), kwargs, callback, priority, tt, task_id, worker, delay, loop,
                    check_timeout(timeout), retry_policy(retries, retry_delay, retry_backoff, retry_max_delay,
                                                         retry_for))
        task.context = capture()  # (the caller's: its runs are made in it, see gworker.context)
        return self.run_in_hub(self._put, task)

    def _put(self, task: Task) -> Task:
        if not self._active:
            self.ensure_started("a task")
        task.register(self._tasks)
        if task.delay:
            timer = self.hub.loop.timer(task.delay)
            # (close() returns None: the tuple runs it, then the lambda returns True)
            task.set_withdraw(lambda: (timer.close(), True)[1])  # type: ignore[func-returns-value]
            timer.start(self._submit, task, timer, update=True)  # (from now, not the loop's cached time)
        else:
            self._submit(task)
        return task

    def resubmit(self, task: Task, wait: float) -> None:
        """Admit ``task`` again after ``wait`` seconds (a retry; in the hub's
        thread). Until then it holds no slot, and ``cancel()`` withdraws it."""
        timer = self.hub.loop.timer(wait)
        task.set_withdraw(lambda: (timer.close(), True)[1])  # type: ignore[func-returns-value]
        timer.start(self._submit, task, timer, update=True)  # (from now, not the loop's cached time)

    def _submit(self, task: Task, timer: Any = None) -> None:
        # May run in a hub callback (a delay timer): it only schedules. Admission
        # is ours; the run, once admitted, is the task runner's (tasks.py).
        if timer is not None:
            timer.close()
            if task.is_completed():
                return
        # A slot is the task's token and, while it waits, its place in line:
        # withdrawing it is the task's cancel(), granting it starts the run.
        tt = task.tt
        if tt == TT_THREAD:
            pool = self.thread_pool
            task.set_withdraw(pool.defer(pool.slot(task.priority, task), self._start_thread))
        elif tt == TT_MP:
            # (put_task refuses TT_MP without a pool, and a pool comes with mp_admission)
            admission: PriorityPool = self.mp_admission  # type: ignore[assignment]
            task.set_withdraw(admission.defer(admission.slot(task.priority, task), self._start_mp))
        else:
            self._runner.start_coroutine(task, self.aloops.resolve(task.loop))

    def _task_done(self, task: Task) -> None:
        """Forget a finished task (used by non-greenlet task types)."""
        self._tasks.pop(task.id, None)

    def get_task(self, task_id: str) -> Optional[Task]:
        """The unfinished task with this id, or None."""
        return self._tasks.get(task_id)

    def get_tasks(self, tt: Optional[int] = None) -> Dict[str, Task]:
        """The unfinished tasks (queued, delayed or running) by id, those of
        task type ``tt`` only if given (a copy, as atasker's)."""
        if tt is None:
            return dict(self._tasks)
        return {task_id: task for task_id, task in self._tasks.items() if task.tt == tt}

    def _find_task(self, task: Optional[Task], task_id: Optional[str]) -> Task:
        if task is not None:
            if not isinstance(task, Task):
                raise TypeError("task must be a Task or None; got %r" % (task,))
            return task
        if task_id is None:
            raise TypeError("give the task or its task_id")
        found = self._tasks.get(task_id)
        if found is None:
            raise LookupError("task_id: supervisor %s has no unfinished task %r" % (self.id, task_id))
        return found

    def mark_task_started(self, task: Optional[Task] = None, task_id: Optional[str] = None) -> bool:
        """atasker's call for a ``put_task`` target to report that it started.

        gworker records a task's start itself, when its target begins, so this
        only checks that the task exists (``LookupError`` for an unknown
        ``task_id``) and returns True."""
        self._find_task(task, task_id)
        return True

    def mark_task_completed(self, task: Optional[Task] = None, task_id: Optional[str] = None) -> bool:
        """atasker's call for a ``put_task`` target to report that it completed
        (atasker's docs ask targets to make it, e.g. with their ``_task_id``).

        gworker records a task's completion itself — once, when its target
        returns, with its result — so for a task that is still running this
        changes nothing and returns True (the task is not completed twice, and
        its slot is held until it really ends). A task that is not run by
        gworker (never started) is marked completed. ``LookupError`` for a
        ``task_id`` that no unfinished task has (e.g. a worker executor's
        ``_task_id``, which is not registered)."""
        found = self._find_task(task, task_id)
        if not found.is_started() and not found.is_managed():
            found.mark_completed()
        return True

    # -- info -----------------------------------------------------------------------------
    def get_info(
        self,
        tt: Any = None,
        aloops: bool = True,
        schedulers: bool = True,
        async_job_schedulers: bool = True,
    ) -> SimpleNamespace:
        """A snapshot, with atasker's fields and gworker's own.

        atasker's: ``id``, ``active``, ``started``; for ``tt`` None, False or
        ``TT_THREAD``: ``thread_pool_size``, ``thread_reserve_normal``,
        ``thread_reserve_high``, ``thread_tasks_count`` (sync calls and tasks
        holding a pool slot, plus running sync continuous workers — each was a
        thread of atasker's pool) and, unless ``tt`` is False, ``thread_tasks``
        (the ids of the running ``TT_THREAD`` tasks); for None, False or
        ``TT_MP``: ``mp_tasks_count``, ``mp_tasks`` likewise and, once there is
        a process pool, ``mp_pool_size``/``mp_reserve_normal``/``mp_reserve_high``;
        ``aloops`` (name → aloop), ``schedulers`` (``get_schedulers()``),
        ``async_job_schedulers`` (name → scheduler) unless switched off; and
        unless ``tt`` is False, ``tasks`` (id → unfinished task, of type ``tt``
        if given).

        gworker's: ``thread_pool`` and ``mp_pool`` figures, ``timers`` (live
        entries in the timer heap: neither fired nor cancelled) and
        ``workers`` — one dict per started worker (name, kind, priority,
        active, runs, errors, last_run, last_duration, queue length)."""
        pool = self.thread_pool
        mp = self.mp_pool
        info = SimpleNamespace(id=self.id, active=self._active, started=self._started)
        all_types = tt is None or tt is False
        if all_types or tt == TT_THREAD:
            info.thread_pool_size = pool.pool_size
            info.thread_reserve_normal = pool.reserve_normal
            info.thread_reserve_high = pool.reserve_high
            continuous = sum(  # sync continuous workers (their greenlet holds no slot)
                1 for w in self._workers.values()
                if w.kind == "continuous" and w.runs_sync
            )
            info.thread_tasks_count = pool.running + continuous
            if tt is not False:
                info.thread_tasks = [t.id for t in self._tasks.values() if t.tt == TT_THREAD and t.is_started()]
        if all_types or tt == TT_MP:
            if self.mp_admission is not None:
                info.mp_pool_size = self.mp_pool_size
                info.mp_reserve_normal = self.mp_reserve_normal
                info.mp_reserve_high = self.mp_reserve_high
            info.mp_tasks_count = getattr(mp, "busy", 0) if mp is not None else 0
            if tt is not False:
                info.mp_tasks = [t.id for t in self._tasks.values() if t.tt == TT_MP and t.is_started()]
        if aloops:
            info.aloops = {aloop.name: aloop for aloop in self.aloops}
        if schedulers:
            info.schedulers = self.get_schedulers()
        if async_job_schedulers:
            info.async_job_schedulers = dict(self.async_job_schedulers)
        if tt is not False:
            info.tasks = self.get_tasks(None if tt is None else tt)
        info.thread_pool = dict(
            pool_size=pool.pool_size, reserve_normal=pool.reserve_normal,
            reserve_high=pool.reserve_high, max_size=pool.max_size,
            running=pool.running, waiting=pool.waiting, in_use=self.slots_in_use(),
        )
        info.mp_pool = None if mp is None else dict(
            size=mp.size, busy=mp.busy, pending=mp.pending, timeouts=mp.timeouts)
        info.timers = len(self.timers)
        info.workers = [w.get_info() for w in list(self._workers.values())]
        return info

    def _set_run_stats(self, factory: Optional[Callable[[Any], Any]]) -> None:
        """Give each worker's engine — of the starts to come and of the
        started workers — ``factory(worker)`` as its statistics object (None:
        none). For gworker's metrics (:mod:`gworker.integrations.metrics`);
        call it in the hub's thread."""
        self._run_stats = factory
        for worker in list(self._workers.values()):
            worker._set_run_stats(factory)

    def slots_in_use(self) -> Dict[int, int]:
        """How many slots of the thread pool are held now, by priority (every
        priority a key; they add up to ``get_info().thread_pool["running"]``).

        Counted when asked, from the holders — the started workers and the
        unfinished tasks — so that admission keeps one counter, not one per
        priority: O(workers + tasks), for a status page or a scrape."""
        counts = dict.fromkeys(PRIORITIES, 0)
        pool = self.thread_pool
        for holder in list(self._workers.values()) + list(self._tasks.values()):
            slot = holder._held_slot()
            if slot is not None and slot.pool is pool and slot.state in (HELD, ADMITTED):
                counts[slot.priority] += 1
        return counts

    def __repr__(self) -> str:
        return "<TaskSupervisor %s active=%s>" % (self.id, self._active)

