"""The task supervisor: one per hub, owner of everything gworker runs there.

A :class:`TaskSupervisor` holds

* the *thread pool* — a :class:`~gworker.pool.PriorityPool` that admits sync
  executor calls and ``TT_THREAD`` tasks (greenlets, despite atasker's name) by
  priority;
* the *timers* that tell interval workers when they are due;
* the registry of started workers ("schedulers", in atasker's words) and of
  unfinished tasks, for ``get_info()``, ``get_task()`` and shutdown.

It lives in the hub of the thread that first starts it. ``start``, ``stop`` and
``put_task`` may be called from other OS threads: they are carried into that
hub (see :mod:`gworker.hubsafe`). Constructing one creates no hub, thread or
greenlet.
"""
from __future__ import annotations

import logging
import time
from itertools import count
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Union

import gevent
from gevent.event import Event
from gevent.hub import Hub, get_hub, getcurrent

from . import hubsafe
from .pool import PriorityPool
from .priorities import TASK_NORMAL, TASK_TYPES, TT_THREAD, check_priority
from .tasks import (
    TASK_STATUS_CANCELED, TASK_STATUS_COMPLETED, TASK_STATUS_FAILED, Task,
)
from .timers import Timers

__all__ = ["TaskSupervisor", "DEFAULT_POLL_DELAY", "logger"]

logger = logging.getLogger("gworker")

DEFAULT_POLL_DELAY = 0.1

_supervisor_ids = count(1)


def check_seconds(value: Any, parameter: str, allow_none: bool = True) -> Optional[float]:
    """Validate a time in seconds: a non-negative number (or None when allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s must be a number of seconds; got %r" % (parameter, value))
    if value < 0 or value != value:
        raise ValueError("%s must not be negative; got %r" % (parameter, value))
    return value


class TaskSupervisor:
    """Runs workers and tasks in one gevent hub (see the module docstring).

    ``supervisor_id`` names it in logs and ``get_info()``; by default a short
    counter-based id.
    """

    def __init__(self, supervisor_id: Optional[str] = None) -> None:
        self.id = supervisor_id if supervisor_id is not None else "supervisor-%d" % next(_supervisor_ids)
        self.poll_delay = DEFAULT_POLL_DELAY
        self.thread_pool = PriorityPool()
        self.mp_pool: Any = None
        self.timers = Timers()
        self._hub: Optional[Hub] = None
        self._active = False
        self._started = False
        self._stopped: Optional[Event] = None
        self._workers: Dict[int, Any] = {}
        self._tasks: Dict[str, Task] = {}
        self._task_glets: Dict[str, gevent.Greenlet] = {}

    # -- where it lives ------------------------------------------------------------
    @property
    def hub(self) -> Hub:
        """The hub this supervisor runs in (bound on first start)."""
        if self._hub is None:
            self._hub = get_hub()
        return self._hub

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` in this supervisor's hub: directly when already there."""
        hub = self._hub
        if hub is None or hub.thread_ident == hubsafe.os_thread_ident():
            return fn(*args)
        return hubsafe.call_in_hub(hub, fn, *args)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> bool:
        """Start the supervisor; ``False`` if it is already active. Thread-safe."""
        return self._call(self._start)

    def _start(self) -> bool:
        if self._active:
            return False
        hub = self.hub
        self.thread_pool._hub = hub
        self._stopped = Event()
        self._active = True
        self._started = True
        self.timers.start()
        logger.debug("supervisor %s started", self.id)
        return True

    def ensure_started(self, by: str) -> None:
        """Start the supervisor if it is not active (logged at INFO)."""
        if not self._active:
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
        if isinstance(wait, bool):
            timeout = None
        else:
            timeout = check_seconds(wait, "wait", allow_none=False)
        if wait is False:
            hub = self._hub
            if hub is None:
                return
            hubsafe.post_to_hub(hub, self._stop, None, stop_schedulers, cancel_tasks)
            return
        self._call(self._stop, timeout, stop_schedulers, cancel_tasks)

    def _stop(self, timeout: Optional[float], stop_schedulers: bool, cancel_tasks: bool) -> None:
        if not self._active:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        current = getcurrent()
        if stop_schedulers:
            workers = list(self._workers.values())
            for worker in workers:
                worker.stop(wait=False)
            for worker in workers:
                worker._wait_stopped(_remaining(deadline))
        if cancel_tasks:
            for task in list(self._tasks.values()):
                task.cancel()
            spawned = [t for t in self._tasks.values() if t.id in self._task_glets]
            glets = [g for g in self._task_glets.values() if g is not current]
            gevent.killall(glets, block=True, timeout=_remaining(deadline))
            for task in spawned:
                if task.time_started is None:  # killed before it ran: its slot is ours to give back
                    self.thread_pool.release()
                    self._task_glets.pop(task.id, None)
                    self._tasks.pop(task.id, None)
                    task._finish(TASK_STATUS_CANCELED)
        else:
            own = next((t for t in self._tasks.values() if t._greenlet is current), None)
            for task in list(self._tasks.values()):
                if task is not own and not task._done.wait(_remaining(deadline)):
                    break
        self._stop_extras(deadline, cancel_tasks)
        self.timers.stop()
        self._active = False
        if self._stopped is not None:
            self._stopped.set()
        logger.debug("supervisor %s stopped", self.id)

    def _stop_extras(self, deadline: Optional[float], cancel_tasks: bool) -> None:
        """Stop what other modules attached (aloops, the process pool)."""

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
        min_size: Optional[int] = None,
        max_size: Optional[int] = None,
    ) -> None:
        """Set the limits of the pool that admits sync executor greenlets.

        Parameters left out keep their value (defaults: ``pool_size=100``,
        ``reserve_normal=10``, ``reserve_high=10``, ``max_size`` none).
        ``min_size`` is accepted for atasker compatibility: greenlets need no
        pre-spawning, so it changes nothing. Waiters that now fit start at once."""
        pool = self.thread_pool
        self._call(
            pool.configure,
            pool.pool_size if pool_size is None else pool_size,
            pool.reserve_normal if reserve_normal is None else reserve_normal,
            pool.reserve_high if reserve_high is None else reserve_high,
            pool.min_size if min_size is None else min_size,
            max_size if max_size is not None else pool.max_size,
        )

    # -- workers ----------------------------------------------------------------------
    def register_worker(self, worker: Any) -> None:
        """Called by a worker when it starts."""
        self._workers[id(worker)] = worker

    def unregister_worker(self, worker: Any) -> None:
        """Called by a worker when it has stopped."""
        self._workers.pop(id(worker), None)

    def get_schedulers(self) -> List[Any]:
        """The workers started on this supervisor and not yet stopped."""
        return list(self._workers.values())

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
    ) -> Task:
        """Run ``target(*args, _task_id=..., **kwargs)`` as a task; return the Task.

        ``tt=TT_THREAD`` runs it in a greenlet admitted by the thread pool at
        ``priority``; ``TT_MP`` in the process pool; ``TT_COROUTINE`` (a coroutine
        function) on an aloop. ``delay`` starts it that many seconds later.
        ``callback(result)`` is called in the hub once it has completed.
        Thread-safe. Starts the supervisor if it is not started."""
        if not callable(target):
            raise TypeError("target must be callable; got %r" % (target,))
        check_priority(priority)
        check_seconds(delay, "delay")
        if tt not in TASK_TYPES or isinstance(tt, bool):
            raise ValueError("tt must be TT_THREAD, TT_MP or TT_COROUTINE; got %r" % (tt,))
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable; got %r" % (callback,))
        if not isinstance(args, (tuple, list)):
            raise TypeError("args must be a tuple or list; got %r" % (args,))
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError("kwargs must be a dict; got %r" % (kwargs,))
        task = Task(target, tuple(args), kwargs, callback, priority, tt, task_id, worker, delay)
        return self._call(self._put, task)

    def _put(self, task: Task) -> Task:
        self.ensure_started("a task")
        self._tasks[task.id] = task
        if task.delay:
            timer = self.hub.loop.timer(task.delay)
            task._cancel = lambda: (timer.close(), True)[1]
            timer.start(self._submit, task, timer)
        else:
            self._submit(task)
        return task

    def _submit(self, task: Task, timer: Any = None) -> None:
        # May run in a hub callback (a delay timer): it only schedules.
        if timer is not None:
            timer.close()
            if task.is_completed():
                return
        if task.tt == TT_THREAD:
            task._cancel = self.thread_pool.defer(task.priority, lambda: self._spawn_task(task))
        else:
            self._submit_other(task)

    def _submit_other(self, task: Task) -> None:
        """Submit TT_MP and TT_COROUTINE tasks (extended where those pools live)."""
        raise ValueError("tt=%r is not supported by this supervisor" % (task.tt,))

    def _spawn_task(self, task: Task) -> None:
        glet = gevent.spawn(self._run_task, task)
        task._greenlet = glet
        self._task_glets[task.id] = glet

    def _run_task(self, task: Task) -> None:
        pool = self.thread_pool
        try:
            task._begin()
            try:
                result = task.target(*task.args, _task_id=task.id, **task.kwargs)
            except gevent.GreenletExit as exc:
                task._finish(TASK_STATUS_CANCELED, exception=exc)
                raise
            except Exception as exc:
                logger.exception("task %s (%s) failed", task.id, _name_of(task.target))
                task._finish(TASK_STATUS_FAILED, exception=exc)
            else:
                task._finish(TASK_STATUS_COMPLETED, result)
                if task.callback is not None:
                    try:
                        task.callback(result)
                    except Exception:
                        logger.exception("callback of task %s failed", task.id)
        finally:
            pool.release()
            self._task_glets.pop(task.id, None)
            self._tasks.pop(task.id, None)
            if not task.is_completed():
                task._finish(TASK_STATUS_CANCELED)

    def _task_done(self, task: Task) -> None:
        """Forget a finished task (used by non-greenlet task types)."""
        self._tasks.pop(task.id, None)

    def get_task(self, task_id: str) -> Optional[Task]:
        """The unfinished task with this id, or None."""
        return self._tasks.get(task_id)

    def get_tasks(self) -> List[Task]:
        """Every unfinished task (queued, delayed or running)."""
        return list(self._tasks.values())

    # -- info -----------------------------------------------------------------------------
    def get_info(self) -> SimpleNamespace:
        """A snapshot: ``id``, ``active``, ``started``, ``thread_tasks_count``,
        ``mp_tasks_count``, ``thread_pool`` and ``mp_pool`` figures, and
        ``workers`` — one dict per started worker (name, kind, priority, active,
        runs, errors, last_run, last_duration, queue length)."""
        pool = self.thread_pool
        mp = self.mp_pool
        return SimpleNamespace(
            id=self.id,
            active=self._active,
            started=self._started,
            thread_tasks_count=pool.running,
            mp_tasks_count=getattr(mp, "busy", 0) if mp is not None else 0,
            thread_pool=dict(
                pool_size=pool.pool_size, reserve_normal=pool.reserve_normal,
                reserve_high=pool.reserve_high, max_size=pool.max_size,
                running=pool.running, waiting=pool.waiting,
            ),
            mp_pool=None if mp is None else dict(size=mp.size, busy=mp.busy, pending=mp.pending),
            tasks=len(self._tasks),
            timers=len(self.timers),
            workers=[w.get_info() for w in list(self._workers.values())],
        )

    def __repr__(self) -> str:
        return "<TaskSupervisor %s active=%s>" % (self.id, self._active)


def _remaining(deadline: Optional[float]) -> Optional[float]:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def _name_of(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
