"""Priorities and task types, with the numbers atasker uses.

A smaller number is more urgent. Priorities decide *admission* to a supervisor's
pools and the *order* in which work that becomes runnable together is started;
they never pre-empt a greenlet that is already running (see the docs, "Priorities and the hub").
"""
from __future__ import annotations

__all__ = [
    "TASK_LOW", "TASK_NORMAL", "TASK_HIGH", "TASK_CRITICAL", "PRIORITIES",
    "TT_COROUTINE", "TT_THREAD", "TT_MP", "TASK_TYPES", "check_priority",
]

TASK_LOW = 200
"""Low priority: admitted while fewer than ``pool_size`` slots are held."""
TASK_NORMAL = 100
"""The default priority: may also use the pool's ``reserve_normal`` slots."""
TASK_HIGH = 50
"""High priority: may also use ``reserve_high`` slots beyond those."""
TASK_CRITICAL = 0
"""Critical: admitted at once, always (even past ``max_size``)."""

#: Every accepted priority, most urgent first.
PRIORITIES = (TASK_CRITICAL, TASK_HIGH, TASK_NORMAL, TASK_LOW)

TT_COROUTINE = 0
"""Task type: a coroutine function, run on an aloop."""
TT_THREAD = 1
"""Task type (the default): a function, run in a greenlet admitted by the thread pool."""
TT_MP = 2
"""Task type: a module-level function, run in the supervisor's process pool."""

TASK_TYPES = (TT_COROUTINE, TT_THREAD, TT_MP)


def check_priority(value: object, parameter: str = "priority") -> int:
    """Return ``value`` if it is one of the four priorities, else raise ``ValueError``."""
    if isinstance(value, bool) or value not in PRIORITIES:
        raise ValueError(
            "%s must be one of TASK_CRITICAL (0), TASK_HIGH (50), TASK_NORMAL (100),"
            " TASK_LOW (200); got %r" % (parameter, value)
        )
    return value  # type: ignore[return-value]
