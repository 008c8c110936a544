"""``@background_worker``: turn a function into a worker object.

Bare (``@background_worker``) or with keywords (``@background_worker(interval=1)``);
the decorated name becomes the worker. The keywords pick the class:

* ``q`` / ``queue`` → :class:`BackgroundQueueWorker`
* ``e`` / ``event`` → :class:`BackgroundEventWorker`
* ``i`` / ``interval`` / ``delay`` / ``delay_after`` / ``delay_before`` /
  ``cron`` (and ``tz``, ``jitter``, ``misfire_grace``, which only interval
  workers take) → :class:`BackgroundIntervalWorker` (``i`` is an alias of
  ``interval``, ``delay_after`` of ``delay``)
* an ``async def`` function → :class:`BackgroundAsyncWorker`
* otherwise → :class:`BackgroundWorker`

``singleton=`` (a :class:`gworker.redis.RedisSingleton`) does not pick a
class: with ``interval`` or ``cron`` it makes the interval worker run once per
cluster; any other worker refuses it (``TypeError``).

Queue, event and interval workers run async executors too. Other keywords
go to the class's constructor, which ignores those it does not know (as
atasker's do), with a ``UserWarning`` for a likely misspelling.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from .continuous import BackgroundAsyncWorker, BackgroundWorker
from .event import BackgroundEventWorker
from .interval import BackgroundIntervalWorker
from .queue import BackgroundQueueWorker

__all__ = ["background_worker", "pick_worker_class"]

#: The keywords that make the decorator pick an interval worker.
_INTERVAL_KEYWORDS = ("interval", "delay", "delay_after", "delay_before", "cron", "tz", "jitter", "misfire_grace")


def pick_worker_class(func: Callable[..., Any], kwargs: dict) -> type:
    """The worker class for ``func`` and the decorator's keywords."""
    if kwargs.get("q") is not None or kwargs.get("queue") is not None:
        return BackgroundQueueWorker
    if kwargs.get("e") or kwargs.get("event"):
        return BackgroundEventWorker
    if any(kwargs.get(k) is not None for k in _INTERVAL_KEYWORDS):
        return BackgroundIntervalWorker
    if inspect.iscoroutinefunction(func):
        return BackgroundAsyncWorker
    return BackgroundWorker


def background_worker(*args: Any, **kwargs: Any) -> Any:
    """Make the decorated function the executor of a new worker (see module doc)."""
    if "i" in kwargs:
        if kwargs.get("interval") is not None:
            raise TypeError("give the interval as i or interval, not both")
        kwargs["interval"] = kwargs.pop("i")
    for flag in ("q", "queue", "e", "event"):
        if kwargs.get(flag) is False:
            kwargs.pop(flag)

    def decorate(func: Callable[..., Any]) -> Any:
        if not callable(func):
            raise TypeError("background_worker decorates a function; got %r" % (func,))
        cls = pick_worker_class(func, kwargs)
        options = dict(kwargs)
        if cls is not BackgroundEventWorker:
            options.pop("e", None)
            options.pop("event", None)
        return cls(func=func, **options)

    if args:
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return decorate(args[0])
        raise TypeError("background_worker takes the function alone, or keywords only")
    return decorate
