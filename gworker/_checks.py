"""Checks of user-given parameters, made where they are given.

A bad value raises ``TypeError`` or ``ValueError`` whose message names the
parameter, at construction or call time — never later inside a greenlet; so
does a name that a registry (aloops, async job schedulers) does not hold.
(Priorities are checked by :func:`gworker.priorities.check_priority`.)
"""
from __future__ import annotations

from typing import Any, Literal, Mapping, Optional, Type, TypeVar, overload

__all__ = ["check_seconds", "named_or_default"]

T = TypeVar("T")


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


def named_or_default(registry: Mapping[str, T], name: Optional[str], default: Optional[T],
                     parameter: str, what: str, error: Type[Exception] = ValueError) -> Optional[T]:
    """``default`` when ``name`` is None, else ``registry[name]``; an unknown
    name raises ``error("<parameter>: no <what> named <name!r>")``."""
    if name is None:
        return default
    try:
        return registry[name]
    except KeyError:
        raise error("%s: no %s named %r" % (parameter, what, name)) from None
