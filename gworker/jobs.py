"""Async jobs: coroutine functions run periodically on an aloop.

atasker schedules lightweight periodic coroutines with the ``aiosched``
package; gworker has the same API on its own aloops, with no extra
dependency::

    task_supervisor.create_aloop("jobs")
    task_supervisor.create_async_job_scheduler("default", aloop="jobs", default=True)
    job = task_supervisor.create_async_job(target=refresh, interval=0.1)
    ...
    task_supervisor.cancel_async_job(job=job)

A :class:`AsyncJobScheduler` belongs to one aloop; each :class:`AsyncJob` is
one asyncio task on that aloop that awaits ``target(*args, **kwargs)``, then
sleeps until the next due time:

* the schedule is start to start, against the loop's monotonic clock
  (``t0 + k × interval``), so lateness does not accumulate;
* a job never overlaps itself: a run that overruns its interval is followed
  at once by the next, and the schedule restarts from there — no burst of
  catch-up runs (aiosched instead started each run as a new task, overlapping
  when a run was slow);
* ``timer`` delays the first run (by default the first run is at once; with a
  ``timer`` and no ``interval`` the interval is the timer, as in aiosched);
  ``number`` limits the number of runs (0: no limit);
* an exception in a run is logged on the ``gworker`` logger with its
  traceback, rate-limited as a worker's executor failures are (see
  :mod:`gworker._errors`: never the same failure twice in a row, at most a
  few per window, the rest counted), and the job goes on;
* :meth:`AsyncJob.cancel` stops future runs at once; a run in progress is
  left to finish (as in aiosched).

The target is normally an ``async def`` function. A plain function is
called in the aloop's greenlet, and awaited if it returns an awaitable.

Jobs created on a scheduler that is not started wait, and start with it.
Stopping a supervisor stops its job schedulers before its aloops; so does
``stop_aloop()`` for the schedulers on that aloop.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from itertools import count
from typing import Any, Callable, Dict, List, Optional, Union

from gevent.event import Event
from gevent.hub import getcurrent

from .aio import Aloop
from ._default import supervisor_or_default
from ._checks import check_seconds
from ._deadline import Deadline
from ._errors import FailureLog, report
from ._hubsafe import call_in_hub, in_hub_thread, post

__all__ = [
    "AsyncJob", "AsyncJobScheduler",
    "create_async_job_scheduler", "create_async_job", "cancel_async_job",
]

logger = logging.getLogger("gworker")

_job_ids = count(1)


class AsyncJob:
    """One periodic job (made by :meth:`AsyncJobScheduler.create_threadsafe`).

    Attributes: ``id``, ``target``, ``args``, ``kwargs``, ``interval``,
    ``number``, ``scheduler``; ``active`` (True until cancelled or finished);
    ``runs`` (runs completed so far, a gworker extra).
    """

    def __init__(
        self,
        target: Callable[..., Any],
        args: Union[tuple, list] = (),
        kwargs: Optional[Dict[str, Any]] = None,
        interval: Optional[float] = None,
        timer: float = 0,
        number: int = 0,
        scheduler: Optional["AsyncJobScheduler"] = None,
    ) -> None:
        if not callable(target):
            raise TypeError("target must be a coroutine function; got %r" % (target,))
        if not isinstance(args, (tuple, list)):
            raise TypeError("args must be a tuple or list; got %r" % (args,))
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError("kwargs must be a dict or None; got %r" % (kwargs,))
        check_seconds(timer, "timer", allow_none=False)
        if interval is None or interval == 0:
            if not timer:
                raise ValueError("interval must be a positive number of seconds; got %r" % (interval,))
            interval = timer
        check_seconds(interval, "interval", allow_none=False)
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise ValueError("number must be a non-negative integer (0: no limit); got %r" % (number,))
        self.id = "job%d" % next(_job_ids)
        self.target = target
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.interval = interval
        self.timer = timer
        self.number = number
        self.scheduler = scheduler
        self.runs = 0
        self._active = True
        self._task: Optional["asyncio.Task[None]"] = None
        self._sleeping = False
        self._failures: Optional[FailureLog] = None  # made at the first failure

    @property
    def active(self) -> bool:
        """True until the job is cancelled or has made its ``number`` of runs."""
        return self._active

    @property
    def launched(self) -> bool:
        """True once the job's asyncio task exists (its scheduler has started it)."""
        return self._task is not None

    @property
    def running(self) -> bool:
        """True while the job's asyncio task exists and has not ended."""
        return self._task is not None and not self._task.done()

    def launch(self, aloop: Aloop) -> None:
        """Start the job's asyncio task on ``aloop``. For gworker's own use
        (its scheduler, as it starts the job)."""
        self._task = aloop.create_task(self._run())

    def cancel(self) -> None:
        """Stop the job: no run starts after this returns; a run in progress
        finishes. Safe from any greenlet and from other OS threads."""
        self._active = False
        task = self._task
        if task is None or task.done():
            return
        # Wake the job if it sleeps until its next run (in the loop, where
        # _sleeping is read and written); from another OS thread, via the hub.
        hub = self.scheduler.hub if self.scheduler is not None else None
        if hub is not None and not in_hub_thread(hub):
            post(hub, self._wake, task)
        else:
            self._wake(task)

    def _wake(self, task: "asyncio.Task[None]") -> None:
        loop = task.get_loop()
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._cancel_sleep)

    def _cancel_sleep(self) -> None:
        task = self._task
        if self._sleeping and task is not None and not task.done():
            task.cancel()

    async def _run(self) -> None:
        # The body of the job's asyncio task.
        loop = asyncio.get_running_loop()
        try:
            if self.timer:
                await self._sleep(self.timer)
            due = loop.time()
            while self._active:
                await self._run_once()
                self.runs += 1
                if self.number and self.runs >= self.number:
                    break
                due += self.interval
                now = loop.time()
                if due < now:  # overran: next run at once, schedule restarts here
                    due = now
                await self._sleep(due - now)
        except asyncio.CancelledError:
            if self._active:  # cancelled by someone else (the aloop stopping)
                raise
        finally:
            self._active = False
            self._sleeping = False
            if self.scheduler is not None:
                self.scheduler.job_ended(self)

    async def _sleep(self, seconds: float) -> None:
        if not self._active:
            raise asyncio.CancelledError
        self._sleeping = True
        try:
            await asyncio.sleep(seconds)
        finally:
            self._sleeping = False

    async def _run_once(self) -> None:
        try:
            result = self.target(*self.args, **self.kwargs)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            if self._failures is None:
                self._failures = FailureLog()
            report("async job %s (%s) failed", self.id, _name_of(self.target), exc=exc, limit=self._failures)

    def __repr__(self) -> str:
        return "<AsyncJob %s %s every %ss%s>" % (
            self.id, _name_of(self.target), self.interval, "" if self._active else " inactive")


class AsyncJobScheduler:
    """Runs :class:`AsyncJob` objects on one aloop (see the module docstring).

    ``AsyncJobScheduler(name, aloop=None, supervisor=None)``: ``aloop`` is an
    aloop, an aloop name or an aloop's asyncio loop; ``None`` means the
    supervisor's default aloop, else the aloop it keeps for itself (resolved at
    :meth:`start`). Usually made with
    ``TaskSupervisor.create_async_job_scheduler``. ``name`` (alias ``id``, as
    aiosched) names it.
    """

    def __init__(self, name: str, aloop: Any = None, supervisor: Any = None) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError("name must be a non-empty string; got %r" % (name,))
        self.name = name
        self.supervisor = supervisor
        self._aloop_spec = aloop
        self.aloop: Optional[Aloop] = None
        self._active = False
        self._jobs: List[AsyncJob] = []
        self._idle = Event()
        self._idle.set()

    @property
    def id(self) -> str:
        """The scheduler's name (aiosched calls it ``id``)."""
        return self.name

    def __repr__(self) -> str:
        return "<AsyncJobScheduler %s %s, %d jobs>" % (
            self.name, "active" if self._active else "stopped", len(self._jobs))

    # -- state ---------------------------------------------------------------
    def is_active(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._active

    def get_jobs(self) -> List[AsyncJob]:
        """The jobs not cancelled or finished (started or waiting for start)."""
        return [job for job in self._jobs if job.active]

    @property
    def hub(self) -> Any:
        """The hub the scheduler's jobs run in: its aloop's, else its
        supervisor's, else None while neither is bound."""
        if self.aloop is not None and self.aloop.hub is not None:
            return self.aloop.hub
        if self.supervisor is not None:
            return self.supervisor.bound_hub
        return None

    def _here(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` in the hub's thread (directly when already there)."""
        hub = self.hub
        if hub is None or in_hub_thread(hub):
            return fn(*args)
        return call_in_hub(hub, fn, *args)

    # -- start / stop ----------------------------------------------------------
    def start(self, aloop: Any = None) -> bool:
        """Start the scheduler on ``aloop`` (default: the one given at
        construction) and launch the jobs waiting for it; ``False`` if it is
        active already. Thread-safe."""
        return self._here(self._start, aloop)

    def _start(self, aloop: Any) -> bool:
        if self._active:
            return False
        spec = aloop if aloop is not None else self._aloop_spec
        if isinstance(spec, Aloop):
            resolved = spec
        elif self.supervisor is not None:
            self.supervisor.ensure_started("async job scheduler %s" % self.name)
            try:
                resolved = self.supervisor.aloops.resolve(spec)
            except (TypeError, ValueError) as exc:  # it says "loop"; the parameter here is aloop
                raise type(exc)("aloop (scheduler %s): %s" % (self.name, exc)) from None
        else:
            raise TypeError("aloop must be an Aloop when the scheduler has no supervisor; got %r" % (spec,))
        if not resolved.is_active():
            raise RuntimeError("aloop %r is not active: start it before the scheduler" % resolved.name)
        self.aloop = resolved
        self._active = True
        pending = [job for job in self._jobs if job.active and not job.launched]
        for job in pending:
            self._launch(job)
        logger.debug("async job scheduler %s started on aloop %s", self.name, resolved.name)
        return True

    def stop(self, wait: Union[bool, float] = True) -> bool:
        """Stop the scheduler: every job is cancelled (runs in progress finish).

        ``wait=True`` returns once every job has ended, a number waits at most
        that many seconds, ``False`` returns at once. Returns True when all
        jobs have ended. Called from a coroutine of the scheduler's own aloop it
        cannot wait (that would deadlock): it returns at once. The scheduler can
        be started again; the jobs are gone."""
        return self._here(self._stop, Deadline.from_wait(wait))

    def _stop(self, deadline: Deadline) -> bool:
        self._active = False
        jobs, self._jobs = self._jobs, [job for job in self._jobs if job.running]
        for job in jobs:
            job.cancel()
        if not self._jobs:
            self._idle.set()
        aloop = self.aloop
        if not deadline.waits or (aloop is not None and getcurrent() is aloop.greenlet):
            return self._idle.is_set()
        done = self._idle.wait(deadline.remaining())
        logger.debug("async job scheduler %s stopped", self.name)
        return bool(done)

    # -- jobs ---------------------------------------------------------------------
    def create_threadsafe(self, target: Callable[..., Any], **kwargs: Any) -> AsyncJob:
        """Make a job and schedule it (it waits if the scheduler is not started).

        Keywords: ``args``, ``kwargs``, ``interval`` (seconds, start to start),
        ``timer`` (delay of the first run), ``number`` (how many runs; 0 = no
        limit). Callable from any greenlet, coroutine or OS thread."""
        return self.add(AsyncJob(target, scheduler=self, **kwargs))

    async def create(self, target: Callable[..., Any], **kwargs: Any) -> AsyncJob:
        """:meth:`create_threadsafe` for a coroutine (the same thing: nothing waits)."""
        return self.create_threadsafe(target, **kwargs)

    def cancel(self, job: AsyncJob) -> None:
        """Cancel ``job`` (the same as ``job.cancel()``)."""
        if not isinstance(job, AsyncJob):
            raise TypeError("job must be an AsyncJob; got %r" % (job,))
        job.cancel()

    def add(self, job: AsyncJob) -> AsyncJob:
        """Schedule ``job``, made with this scheduler as its ``scheduler`` (it
        waits if the scheduler is not started); returns it. For gworker's own
        use (``create_threadsafe``, the supervisor's ``create_async_job``).
        Callable from any greenlet, coroutine or OS thread."""
        return self._here(self._add, job)

    def _add(self, job: AsyncJob) -> AsyncJob:
        self._jobs.append(job)
        if self._active:
            self._launch(job)
        return job

    def _launch(self, job: AsyncJob) -> None:
        assert self.aloop is not None
        self._idle.clear()
        job.launch(self.aloop)

    def job_ended(self, job: AsyncJob) -> None:
        """``job``'s asyncio task is ending: forget the job. For gworker's own
        use (the job, in the aloop's greenlet)."""
        try:
            self._jobs.remove(job)
        except ValueError:
            pass
        if not any(j.launched for j in self._jobs):
            self._idle.set()


# -- module-level shortcuts (atasker has these on the supervisor only) -------------


def create_async_job_scheduler(
    name: str, aloop: Any = None, start: bool = True, default: bool = False, supervisor: Any = None
) -> AsyncJobScheduler:
    """``supervisor.create_async_job_scheduler(...)`` on ``supervisor`` (default
    ``task_supervisor``)."""
    return supervisor_or_default(supervisor).create_async_job_scheduler(name, aloop=aloop, start=start, default=default)


def create_async_job(scheduler: Any = None, target: Any = None, supervisor: Any = None, **kwargs: Any) -> AsyncJob:
    """``supervisor.create_async_job(...)`` on ``supervisor`` (default
    ``task_supervisor``): a periodic job, see :class:`AsyncJob`."""
    return supervisor_or_default(supervisor).create_async_job(scheduler, target=target, **kwargs)


def cancel_async_job(scheduler: Any = None, job: Any = None, supervisor: Any = None) -> None:
    """``supervisor.cancel_async_job(...)`` on ``supervisor`` (default
    ``task_supervisor``)."""
    supervisor_or_default(supervisor).cancel_async_job(scheduler, job=job)


def _name_of(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
