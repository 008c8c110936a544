"""Bounds on a run: its time limit (``timeout=``) and its retries (``retries=``).

**A time limit** is the longest a run may take. gworker runs every executor
in the hub, so it can cut a run off cooperatively and exactly: a sync run
that is still going at its limit gets :class:`RunTimeout` (a
``gevent.Timeout``) raised at its next switch — the next time it waits on I/O,
sleeps or yields — an ``async def`` run is cancelled, and a run in the process
pool has its child killed and replaced. Either way the run counts as failed
and ``on_error`` sees the ``RunTimeout``. A run that never switches (a pure
CPU loop in the hub's thread) cannot be interrupted by any gevent program:
gworker notices when it ends, later than its limit, and logs it as a limit that
could not be enforced — never silence.

**Retries** make a failed run again, a few times, each after a longer wait
(exponential backoff): the n-th wait is ``retry_delay × retry_backoff^(n−1)``,
capped at ``retry_max_delay`` (without one, at a day), plus up to a tenth of it at random (never less)
so that a fleet of workers that failed together does not retry in lockstep.
:class:`RetryPolicy` holds the parameters and computes the waits; it is a pure
function of the try number, testable without a clock. Which exceptions are
retried is ``retry_for``: by default every ``Exception`` and :class:`RunTimeout`
(a run cut off by its limit is a failure like the others).
"""
from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, Awaitable, Callable, List, Optional, Tuple, Type, TypeVar

import gevent

from ._checks import check_seconds

__all__ = ["RunTimeout", "RetryPolicy", "retry_policy", "check_timeout", "limit_async", "log_overrun", "JITTER",
           "MAX_WAIT"]

logger = logging.getLogger("gworker")

T = TypeVar("T")

#: The random part of a retry's wait, as a fraction of it (at most).
JITTER = 0.1

#: The longest wait before a retry (seconds) when ``retry_max_delay`` sets none: a day.
MAX_WAIT = 86400.0


class RunTimeout(gevent.Timeout):
    """A run went on past its time limit (``timeout=``).

    Raised in the run at its next switch (a ``gevent.Timeout``, so an
    executor's ``except Exception`` does not swallow it); ``seconds`` is the
    limit, ``what`` names the run (a worker's or a task's name)."""

    def __init__(self, seconds: Optional[float] = None, what: Optional[str] = None) -> None:
        super().__init__(seconds)
        #: the worker or task whose run this limits (for the message)
        self.what = what

    def __str__(self) -> str:
        if self.seconds is None:
            return "time limit"
        return "%s ran past its time limit of %g s" % (self.what or "a run", self.seconds)

    def __repr__(self) -> str:
        return "RunTimeout(%r, %r)" % (self.seconds, self.what)


def check_timeout(value: Any, parameter: str = "timeout") -> Optional[float]:
    """A time limit: None (no limit) or a positive number of seconds."""
    seconds = check_seconds(value, parameter)
    if seconds is not None and seconds <= 0:
        raise ValueError("%s must be a positive number of seconds or None; got %r" % (parameter, value))
    return seconds


async def limit_async(awaitable: Awaitable[T], seconds: float, what: str) -> T:
    """Await ``awaitable`` in the current asyncio task, cancelling it after
    ``seconds``; the cancellation is raised as :class:`RunTimeout`.

    No task of its own (unlike ``asyncio.wait_for``): the current task is
    cancelled at the limit, and a ``CancelledError`` that the limit did not
    cause (a ``stop()``, a shutdown) passes through as it is. An executor that
    swallows the cancellation runs on; the caller notices by its duration."""
    task = asyncio.current_task()
    fired: List[bool] = []
    handle = asyncio.get_running_loop().call_later(seconds, _expire, task, fired)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if not fired:
            raise
        raise RunTimeout(seconds, what) from None
    finally:
        handle.cancel()
        if fired:  # (3.11+ counts a task's cancellations: this one is taken back)
            uncancel = getattr(task, "uncancel", None)
            if uncancel is not None:
                uncancel()


def _expire(task: Any, fired: List[bool]) -> None:
    if not task.done():
        fired.append(True)
        task.cancel()


def log_overrun(what: str, duration: float, limit: float) -> None:
    """Say that a run of ``what`` (a worker, a task) ended ``duration``
    seconds after it began, past its ``limit``, which could not be enforced:
    it never switched to the hub (or it swallowed :class:`RunTimeout`). A
    WARNING on the ``gworker`` logger; the caller rate-limits it."""
    logger.warning("%s: a run took %.3f s, past its time limit of %g s, which could not be enforced: it did"
                   " not switch to the hub (or swallowed RunTimeout) before it ended", what, duration, limit)


class RetryPolicy:
    """How often, after how long, and for which exceptions a failed run is made again.

    ``retries`` tries after the first; ``delay`` the first wait (seconds),
    ``backoff`` the factor each next wait grows by, ``max_delay`` the cap
    (None: none) and ``retry_for`` the exception classes retried. Made by
    :func:`retry_policy`, which checks the parameters."""

    __slots__ = ("retries", "delay", "backoff", "max_delay", "retry_for")

    def __init__(self, retries: int, delay: float = 1.0, backoff: float = 2.0,
                 max_delay: Optional[float] = None,
                 retry_for: Tuple[Type[BaseException], ...] = (Exception, RunTimeout)) -> None:
        self.retries = retries
        self.delay = delay
        self.backoff = backoff
        self.max_delay = max_delay
        self.retry_for = retry_for

    def base_wait(self, n: int) -> float:
        """The wait before the ``n``-th retry (1 for the first), without its
        random part: ``delay × backoff^(n−1)``, capped at ``max_delay`` (or,
        without one, at ``MAX_WAIT``)."""
        cap = MAX_WAIT if self.max_delay is None else self.max_delay
        try:
            wait = self.delay * self.backoff ** (n - 1)
        except OverflowError:
            return cap
        return cap if wait > cap else wait

    def wait(self, n: int, rand: Callable[[], float] = random.random) -> float:
        """The wait before the ``n``-th retry: :meth:`base_wait` plus up to
        ``JITTER`` of it at random (never less than the base)."""
        base = self.base_wait(n)
        return base + base * JITTER * rand()

    def retries_after(self, exc: BaseException, tries: int) -> bool:
        """Whether a run that failed with ``exc`` on its ``tries``-th try
        (1 for the first) is made again."""
        return tries <= self.retries and isinstance(exc, self.retry_for)

    def __repr__(self) -> str:
        return "RetryPolicy(retries=%d, delay=%g, backoff=%g, max_delay=%r, retry_for=%r)" % (
            self.retries, self.delay, self.backoff, self.max_delay, self.retry_for)


def retry_policy(retries: Any = None, retry_delay: Any = None, retry_backoff: Any = None,
                 retry_max_delay: Any = None, retry_for: Any = None) -> Optional[RetryPolicy]:
    """The :class:`RetryPolicy` of the ``retries``/``retry_*`` parameters, or
    None when there are no retries (``retries`` None or 0). A bad value raises
    ``TypeError``/``ValueError`` naming its parameter — the ``retry_*`` ones are
    checked even without retries, so a typo never waits for the first failure."""
    if retries is None and retry_delay is None and retry_backoff is None and retry_max_delay is None \
            and retry_for is None:
        return None  # (the common case: nothing to check)
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)):
        raise TypeError("retries must be a whole number of retries; got %r" % (retries,))
    if retries is not None and retries < 0:
        raise ValueError("retries must not be negative; got %r" % (retries,))
    delay = check_seconds(retry_delay, "retry_delay")
    max_delay = check_seconds(retry_max_delay, "retry_max_delay")
    if retry_backoff is not None:
        if isinstance(retry_backoff, bool) or not isinstance(retry_backoff, (int, float)):
            raise TypeError("retry_backoff must be a number (the factor each wait grows by); got %r"
                            % (retry_backoff,))
        if not retry_backoff >= 1:
            raise ValueError("retry_backoff must be at least 1; got %r" % (retry_backoff,))
    classes = _exception_classes(retry_for)
    if not retries:
        return None
    return RetryPolicy(
        retries, 1.0 if delay is None else float(delay), 2.0 if retry_backoff is None else float(retry_backoff),
        None if max_delay is None else float(max_delay), classes,
    )


def _exception_classes(retry_for: Any) -> Tuple[Type[BaseException], ...]:
    if retry_for is None:
        return (Exception, RunTimeout)
    classes = retry_for if isinstance(retry_for, tuple) else (retry_for,)
    if not classes or not all(isinstance(c, type) and issubclass(c, BaseException) for c in classes):
        raise TypeError("retry_for must be an exception class or a tuple of them; got %r" % (retry_for,))
    return classes
