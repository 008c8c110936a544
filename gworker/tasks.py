"""Tasks: one call of a target function, run by a supervisor.

``TaskSupervisor.put_task`` returns a :class:`Task`. It records where the call
stands (queued, delayed, started, completed, failed, cancelled), its timing, and
its ``result`` or ``exception``; ``wait()`` blocks the calling greenlet
cooperatively until it has finished. A task's id is cheap (a counter), not a
UUID.
"""
from __future__ import annotations

import time
from itertools import count
from typing import Any, Callable, Dict, Optional

from gevent.event import Event

__all__ = [
    "Task", "TASK_STATUS_QUEUED", "TASK_STATUS_DELAYED", "TASK_STATUS_STARTED",
    "TASK_STATUS_COMPLETED", "TASK_STATUS_FAILED", "TASK_STATUS_CANCELED", "new_task_id",
]

TASK_STATUS_QUEUED = 0
TASK_STATUS_DELAYED = 2
TASK_STATUS_STARTED = 100
TASK_STATUS_COMPLETED = 200
TASK_STATUS_FAILED = -2
TASK_STATUS_CANCELED = -1

_FINISHED = (TASK_STATUS_COMPLETED, TASK_STATUS_FAILED, TASK_STATUS_CANCELED)

_ids = count(1)


def new_task_id() -> str:
    """A process-unique task id: cheap, ordered, not a UUID."""
    return "t%d" % next(_ids)


class Task:
    """One call of ``target`` run by a supervisor (see ``TaskSupervisor.put_task``)."""

    def __init__(
        self,
        target: Callable[..., Any],
        args: tuple = (),
        kwargs: Optional[Dict[str, Any]] = None,
        callback: Optional[Callable[[Any], Any]] = None,
        priority: int = 100,
        tt: int = 1,
        task_id: Optional[str] = None,
        worker: Any = None,
        delay: Optional[float] = None,
        loop: Any = None,
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
        self.status = TASK_STATUS_DELAYED if delay else TASK_STATUS_QUEUED
        self.result: Any = None
        self.exception: Optional[BaseException] = None
        self.time_queued = time.time()
        self.time_started: Optional[float] = None
        self.time_completed: Optional[float] = None
        self._done = Event()
        self._cancel: Optional[Callable[[], bool]] = None
        self._greenlet: Any = None

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
    def duration(self) -> Optional[float]:
        """Seconds the target ran, once it has finished."""
        if self.time_started is None or self.time_completed is None:
            return None
        return self.time_completed - self.time_started

    def wait(self, timeout: Optional[float] = None) -> Any:
        """Wait cooperatively until the task has finished and return its result.

        Raises the target's exception if it failed, ``TimeoutError`` when
        ``timeout`` seconds pass first, ``gevent.GreenletExit`` if it was
        cancelled."""
        if not self._done.wait(timeout):
            raise TimeoutError("task %s did not finish within %ss" % (self.id, timeout))
        if self.exception is not None:
            raise self.exception
        return self.result

    def cancel(self) -> bool:
        """Withdraw a task that has not started yet; True if it was withdrawn.

        A running task is killed only by ``TaskSupervisor.stop(cancel_tasks=True)``."""
        if self.is_started() or self.is_completed() or self._cancel is None:
            return False
        if not self._cancel():
            return False
        self._finish(TASK_STATUS_CANCELED)
        return True

    # -- used by the supervisor ----------------------------------------------------
    def _begin(self) -> None:
        self.status = TASK_STATUS_STARTED
        self.time_started = time.time()

    def _finish(self, status: int, result: Any = None, exception: Optional[BaseException] = None) -> None:
        self.status = status
        self.result = result
        self.exception = exception
        self.time_completed = time.time()
        self._done.set()

    def __repr__(self) -> str:
        return "<Task %s status=%s>" % (self.id, self.status)
