"""Checks of user-given parameters, made where they are given.

A bad value raises ``TypeError`` or ``ValueError`` whose message names the
parameter, at construction or call time — never later inside a greenlet.
(Priorities are checked by :func:`gworker.priorities.check_priority`.)
"""
from __future__ import annotations

from typing import Any, Literal, Optional, overload

__all__ = ["check_seconds"]


@overload
def check_seconds(value: Any, parameter: str, allow_none: Literal[False]) -> float: ...
@overload
def check_seconds(value: Any, parameter: str, allow_none: bool = True) -> Optional[float]: ...
def check_seconds(value: Any, parameter: str, allow_none: bool = True) -> Optional[float]:
    """Validate a time in seconds: a non-negative number (or None when allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s must be a number of seconds; got %r" % (parameter, value))
    if value < 0 or value != value:
        raise ValueError("%s must not be negative; got %r" % (parameter, value))
    return value
