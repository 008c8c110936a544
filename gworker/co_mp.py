"""``co_mp_apply``: from a coroutine, run a function in the process pool and
await its result.

The call goes through ``put_task(tt=TT_MP)``, so it is admitted to the pool by
priority like any multiprocessing task and registered with the supervisor
(``stop()`` waits for it). The coroutine awaits an asyncio future of its own
loop that is resolved when the task finishes, so its loop — and every other
coroutine on it — runs on meanwhile. Nothing blocks the hub.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, Optional

from .aio import await_link
from .priorities import TASK_NORMAL, TT_MP
from ._default import supervisor_or_default
from .tasks import TASK_STATUS_CANCELED, Task, WithoutTaskId

__all__ = ["co_mp_apply"]


async def co_mp_apply(
    f: Callable[..., Any],
    args: tuple = (),
    kwargs: Optional[Dict[str, Any]] = None,
    priority: Optional[int] = None,
    delay: Optional[float] = None,
    supervisor: Any = None,
) -> Any:
    """Run ``f(*args, **kwargs)`` in a child of the supervisor's process pool and
    return its result (``await co_mp_apply(...)``).

    ``f`` must be a module-level function of an importable module (it travels
    by reference); it gets exactly ``args`` and ``kwargs`` — no ``_task_id``.
    ``priority`` (default ``TASK_NORMAL``) decides admission to the pool,
    ``delay`` postpones the start, ``supervisor`` defaults to
    ``task_supervisor``, which must have a process pool (``create_mp_pool``).

    The child's exception is raised here (atasker never returned in that
    case). If the task is cancelled (the supervisor stopped with
    ``cancel_tasks=True``), ``asyncio.CancelledError`` is raised. Cancelling the
    awaiting coroutine withdraws the call if it has not started yet.
    """
    if not callable(f):
        raise TypeError("f must be callable; got %r" % (f,))
    sup = supervisor_or_default(supervisor)
    task: Task = sup.put_task(
        WithoutTaskId(f), args, kwargs,
        priority=TASK_NORMAL if priority is None else priority, delay=delay, tt=TT_MP,
    )
    if not task.is_completed():
        try:
            await await_link(task.completed)
        except asyncio.CancelledError:
            task.cancel()
            raise
    if task.status == TASK_STATUS_CANCELED:
        raise asyncio.CancelledError("the process-pool call of %s was cancelled" % (task.target,))
    if task.exception is not None:
        raise task.exception
    return task.result
