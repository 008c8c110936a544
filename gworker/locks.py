"""``Locker``: a lock with a deadline, as decorator or ``with`` block.

Code guarded by a :class:`Locker` waits at most ``timeout`` seconds for the
lock. A lock that cannot be had in that time is taken as a sign that something
is stuck (a deadlock, a greenlet that never releases): the event is logged at
CRITICAL on the ``gworker`` logger and the locker's :meth:`Locker.critical`
hook is called — typically replaced by the application to restart or kill
itself. A decorated function is then *not* called (the call returns ``None``);
a ``with`` block raises ``TimeoutError``.

The lock is a gevent lock, so waiting for it only suspends the calling
greenlet: ``relative=True`` (the default) gives a reentrant
``gevent.lock.RLock`` (the greenlet holding it may take it again),
``relative=False`` a plain non-reentrant lock (a ``BoundedSemaphore(1)``: the
same greenlet taking it twice waits for itself, and times out). It is meant for
the greenlets of one hub (one OS thread).
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Optional, TypeVar

from gevent.lock import BoundedSemaphore, RLock

from ._checks import check_seconds

__all__ = ["Locker"]

logger = logging.getLogger("gworker")

F = TypeVar("F", bound=Callable[..., Any])


class Locker:
    """A gevent lock with a timeout (see the module docstring).

    ``Locker(mod='main', timeout=5, relative=True)`` — positional order as in
    atasker. ``mod`` names the guarded module in the log; ``timeout`` is in
    seconds (``None``: wait for ever); ``relative`` picks a reentrant lock
    (True) or a non-reentrant one (False). The lock itself is :attr:`lock`.

    Use it as a decorator (``@locker``) or as ``with locker:``. On timeout,
    ``self.critical()`` is looked up and called at that moment, so assigning
    ``locker.critical = handler`` any time after construction works (as does
    overriding it in a subclass).
    """

    def __init__(self, mod: str = "main", timeout: Optional[float] = 5, relative: bool = True) -> None:

        if not isinstance(mod, str):
            raise TypeError("mod must be a string; got %r" % (mod,))
        check_seconds(timeout, "timeout")
        if not isinstance(relative, bool):
            raise TypeError("relative must be True or False; got %r" % (relative,))
        self.mod = mod
        self.timeout = timeout
        self.relative = relative
        #: The gevent lock: an ``RLock`` (``relative=True``) or a ``BoundedSemaphore(1)``.
        self.lock: Any = RLock() if relative else BoundedSemaphore(1)

    def _acquire(self, what: str) -> bool:
        if self.lock.acquire(blocking=True, timeout=self.timeout):
            return True
        logger.critical("%s locking broken: lock not acquired within %ss", what, self.timeout)
        self.critical()
        return False

    def __call__(self, f: F) -> F:
        """Decorate ``f``: each call runs holding the lock; on timeout the call
        is skipped (``critical()`` is called, ``None`` returned)."""
        if not callable(f):
            raise TypeError("Locker decorates a callable; got %r" % (f,))
        what = "%s/%s" % (self.mod, getattr(f, "__name__", repr(f)))

        @functools.wraps(f)
        def locked(*args: Any, **kwargs: Any) -> Any:
            if not self._acquire(what):
                return None
            try:
                return f(*args, **kwargs)
            finally:
                self.lock.release()

        return locked  # type: ignore[return-value]

    def __enter__(self) -> "Locker":
        """Take the lock; on timeout call ``critical()`` and raise ``TimeoutError``."""
        if not self._acquire(self.mod):
            raise TimeoutError("%s: lock not acquired within %ss" % (self.mod, self.timeout))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.lock.release()

    def critical(self) -> None:
        """Called when the lock could not be taken in time. Does nothing by
        default: assign a function to ``critical`` (or override it)."""

    def __repr__(self) -> str:
        return "<Locker %s timeout=%s %s>" % (self.mod, self.timeout, "reentrant" if self.relative else "non-reentrant")
