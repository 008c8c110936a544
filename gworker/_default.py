"""The default supervisor: one, made on first use, reached through one module.

atasker has a module-level ``task_supervisor`` that every API falls back to
when given no supervisor. gworker keeps that, with one rule: *nothing happens
at import* — importing gworker makes no hub, thread, greenlet or supervisor.
So the default :class:`~gworker.supervisor.TaskSupervisor` (its id is
``'default'``, as atasker's) is made the first time someone asks for it, here,
and every module that falls back to it asks here: ``gworker.task_supervisor``
(a module ``__getattr__`` in ``gworker/__init__.py``), the workers, tasks,
async jobs and the integrations.

This module sits below ``supervisor.py`` in the import order (``tasks.py``,
which ``supervisor.py`` imports, needs the default too), so it imports
``supervisor`` only when it makes the supervisor.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .supervisor import TaskSupervisor

__all__ = ["default_supervisor", "supervisor_or_default", "existing"]

_default: Optional["TaskSupervisor"] = None
_lock = threading.Lock()  # never held across a greenlet switch (TaskSupervisor() makes none)


def default_supervisor() -> "TaskSupervisor":
    """The default supervisor (``gworker.task_supervisor``), made on first use."""
    supervisor = _default
    if supervisor is None:
        supervisor = _make()
    return supervisor


def _make() -> "TaskSupervisor":
    global _default
    with _lock:
        if _default is None:
            from .supervisor import TaskSupervisor  # here, not at import: see the docstring

            _default = TaskSupervisor("default")
        return _default


def supervisor_or_default(supervisor: Optional["TaskSupervisor"]) -> "TaskSupervisor":
    """``supervisor`` if given, else the default supervisor."""
    if supervisor is not None:
        return supervisor
    return default_supervisor()


def existing() -> Optional["TaskSupervisor"]:
    """The default supervisor if it has been made, else None (makes nothing)."""
    return _default
