"""gworker: background workers for gevent programs, with atasker's worker API.

Everything runs in the gevent hub: workers are greenlets (or, for interval
workers, timer entries), async executors run on asyncio loops that are
greenlets too, and CPU-bound static executors go to a cooperative process pool.
It works in a monkey-patched process and in a plain gevent program.

Importing gworker creates no hub, thread, greenlet or supervisor: the default
``task_supervisor`` is made on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .priorities import (
    TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL, TT_COROUTINE, TT_MP, TT_THREAD,
)
from .supervisor import TaskSupervisor
from . import _default
from .tasks import (
    TASK_STATUS_CANCELED, TASK_STATUS_COMPLETED, TASK_STATUS_DELAYED, TASK_STATUS_FAILED,
    TASK_STATUS_QUEUED, TASK_STATUS_STARTED, Task,
)
from .aio import Aloop, ALoop
from .workers import (
    BackgroundAsyncWorker, BackgroundEventWorker, BackgroundIntervalWorker, BackgroundQueueWorker,
    BackgroundWorker, background_worker,
)
from .tasks import background_task, wait_completed
from .locks import Locker
from .local import LocalProxy, g
from .logs import set_debug
from .limits import RetryPolicy, RunTimeout
from .events import (
    ALL_EVENTS, RUN_FAILED, RUN_FINISHED, RUN_MISSED, RUN_STARTED, RUN_TIMED_OUT, WORKER_STARTED, WORKER_STOPPED,
    WorkerEvent,
)
from .task_collections import FunctionCollection, TaskCollection
from .co_mp import co_mp_apply
from .jobs import (
    AsyncJob, AsyncJobScheduler, cancel_async_job, create_async_job, create_async_job_scheduler,
)

if TYPE_CHECKING:
    task_supervisor: TaskSupervisor

__version__ = "0.1.0.dev0"

__all__ = [
    "task_supervisor", "TaskSupervisor", "Task",
    "TASK_LOW", "TASK_NORMAL", "TASK_HIGH", "TASK_CRITICAL",
    "TT_COROUTINE", "TT_THREAD", "TT_MP",
    "TASK_STATUS_QUEUED", "TASK_STATUS_DELAYED", "TASK_STATUS_STARTED", "TASK_STATUS_COMPLETED",
    "TASK_STATUS_FAILED", "TASK_STATUS_CANCELED",
    "background_worker", "BackgroundWorker", "BackgroundAsyncWorker", "BackgroundQueueWorker", "Aloop", "ALoop",
    "BackgroundEventWorker", "BackgroundIntervalWorker",
    "background_task", "wait_completed",
    "Locker", "g", "LocalProxy", "set_debug",
    "FunctionCollection", "TaskCollection",
    "co_mp_apply",
    "create_async_job_scheduler", "create_async_job", "cancel_async_job",
    "AsyncJobScheduler", "AsyncJob",
    "RunTimeout", "RetryPolicy",
    "WorkerEvent", "ALL_EVENTS", "RUN_STARTED", "RUN_FINISHED", "RUN_FAILED", "RUN_TIMED_OUT", "RUN_MISSED",
    "WORKER_STARTED", "WORKER_STOPPED",
]

def __getattr__(name: str):
    if name == "task_supervisor":  # made on first use: see gworker._default
        return _default.default_supervisor()
    raise AttributeError("module 'gworker' has no attribute %r" % (name,))
