"""Where failures outside an ``on_error`` go: one sink, the ``gworker`` logger, rate-limited.

:func:`report` is the one place gworker logs a failure it caught — of an
executor without ``on_error``, a task, a user's callback or hook (on_error,
a task's callback, a timeout function, an aloop stop callback,
``on_undrained``, a process-pool result's callbacks), an async job: at ERROR,
with the traceback, through the source's :class:`FailureLog` if it has one.

A worker whose executor fails on every call, an async job that fails on every
run, a consumer whose broker is down: each would write the same traceback
thousands of times a second. A :class:`FailureLog` stands between such a
source and the log. Per *window* of seconds it lets a *burst* of records
through, never the same failure (type and message) twice in a row, and counts
the rest; the count goes with the next record let through, so nothing is lost
without a word. One ``FailureLog`` per source (a worker, a job, a stream), so
that one noisy source cannot silence another; its memory stays constant
however often the source fails.

:meth:`FailureLog.info` lets notices through the same way, at INFO (an
interval worker's runs skipped by ``misfire_grace``).

Only the failure path touches it: a source makes its ``FailureLog`` at its
first failure, and a call that succeeds costs nothing here.
"""
from __future__ import annotations

import logging
import sys
from time import monotonic
from typing import Any, Optional, Tuple

__all__ = ["FailureLog", "report", "describe", "logger"]

logger = logging.getLogger("gworker")


class FailureLog:
    """Rate-limits the records of one source of failures (see the module docstring).

    ``burst`` records per ``window`` seconds; with ``repeats=False`` (the
    default) a failure equal to the last one let through (same type, same
    first 200 characters of message) is suppressed too, until the window ends.
    """

    WINDOW = 10.0
    BURST = 5
    __slots__ = ("window", "burst", "repeats", "window_start", "logged", "last_key", "suppressed")

    def __init__(self, burst: int = BURST, window: float = WINDOW, repeats: bool = False) -> None:
        self.window = window
        self.burst = burst
        self.repeats = repeats
        self.window_start = -window  # the first failure opens a window
        self.logged = 0
        self.last_key: Optional[Tuple[type, str]] = None
        self.suppressed = 0

    def admit(self, exc: Optional[BaseException] = None) -> Optional[int]:
        """May a record about ``exc`` be written now? None if not (it is counted);
        else how many records were suppressed since the last one let through."""
        now = monotonic()
        if now - self.window_start >= self.window:
            self.window_start = now
            self.logged = 0
            self.last_key = None
        key = None if self.repeats or exc is None else (type(exc), str(exc)[:200])
        if self.logged >= self.burst or (key is not None and key == self.last_key):
            self.suppressed += 1
            return None
        self.last_key = key
        self.logged += 1
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed

    def reset(self) -> None:
        """The source is well again: its next failure opens a new window."""
        self.window_start = -self.window
        self.logged = 0
        self.last_key = None

    def error(self, exc: BaseException, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` at ERROR with ``exc``'s traceback, if admitted, with
        a note of the failures suppressed before it; True if it was logged."""
        suppressed = self.admit(exc)
        if suppressed is None:
            return False
        note = " (%d similar failures not logged)" % suppressed if suppressed else ""
        logger.error(msg + "%s", *args, note, exc_info=exc)
        return True

    def info(self, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` at INFO, if admitted (a burst per window: a
        notice, not a failure, so repeats are not compared), with a note of
        the records suppressed before it; True if it was logged."""
        suppressed = self.admit()
        if suppressed is None:
            return False
        note = " (%d more not logged)" % suppressed if suppressed else ""
        logger.info(msg + "%s", *args, note)
        return True


def report(msg: str, *args: Any, exc: Optional[BaseException] = None,
           limit: Optional[FailureLog] = None) -> bool:
    """Log a failure gworker caught: ``msg % args`` at ERROR, with the
    traceback of ``exc`` (default: the exception being handled), through
    ``limit`` — the source's :class:`FailureLog` — when the source is one that
    may fail on every call (a worker's executor, an async job); True if it was
    logged. Sources whose every failure is news (a task, as in atasker; a
    user's callback) pass no ``limit``."""
    if exc is None:
        exc = sys.exc_info()[1]
    if limit is not None:
        return limit.error(exc, msg, *args)  # type: ignore[arg-type]  # (called with one)
    logger.error(msg, *args, exc_info=exc if exc is not None else False)
    return True


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception (``Type`` alone without a message),
    for a one-line log record."""
    text = str(exc)
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__
