"""Priorities and task types, with the numbers atasker uses.

A smaller number is more urgent. Priorities decide *admission* to a supervisor's
pools and the *order* in which work that becomes runnable together is started;
they never pre-empt a greenlet that is already running (see README, "Priorities").
"""
from __future__ import annotations

__all__ = [
    "TASK_LOW", "TASK_NORMAL", "TASK_HIGH", "TASK_CRITICAL", "PRIORITIES",
    "TT_COROUTINE", "TT_THREAD", "TT_MP", "TASK_TYPES", "check_priority",
]

TASK_LOW = 200
TASK_NORMAL = 100
TASK_HIGH = 50
TASK_CRITICAL = 0

#: Every accepted priority, most urgent first.
PRIORITIES = (TASK_CRITICAL, TASK_HIGH, TASK_NORMAL, TASK_LOW)

TT_COROUTINE = 0
TT_THREAD = 1
TT_MP = 2

TASK_TYPES = (TT_COROUTINE, TT_THREAD, TT_MP)


def check_priority(value: object, parameter: str = "priority") -> int:
    """Return ``value`` if it is one of the four priorities, else raise ``ValueError``."""
    if isinstance(value, bool) or value not in PRIORITIES:
        raise ValueError(
            "%s must be one of TASK_CRITICAL (0), TASK_HIGH (50), TASK_NORMAL (100),"
            " TASK_LOW (200); got %r" % (parameter, value)
        )
    return value  # type: ignore[return-value]
