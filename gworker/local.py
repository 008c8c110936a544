"""``g``: a namespace local to each greenlet, hence to each task and worker.

atasker's ``g`` is a ``threading.local`` with four helper methods; its tasks and
workers are threads, so each sees only its own values. gworker's tasks and
workers are greenlets, so :class:`LocalProxy` is built on
``gevent.local.local``: each greenlet has its own attributes, a background
task never sees the values of the greenlet that started it, and the values of
a greenlet are dropped when it ends (nothing leaks).

What "local" covers:

* a ``background_task``/``put_task`` task: a fresh, empty namespace. Tasks,
  and the runs of interval workers, are made by the supervisor's *runner*
  greenlets, reused from call to call (see :mod:`gworker._runners`); a runner
  clears ``g`` after each call that set anything in it, so no call sees what
  another left. (Other greenlet-locals — a monkey-patched
  ``threading.local`` — are kept from call to call while the runner lives, as
  a pool thread's were in atasker.);
* a worker that keeps a greenlet of its own (a continuous, queue or event
  worker, a short interval one): values set by one call may be seen by the
  next calls of the same worker (as with atasker's worker thread) — do not
  rely on either;
* coroutines: all coroutines of one aloop run in that aloop's greenlet and
  share one namespace (as all coroutines of atasker's loop thread shared its
  thread-local). Use ``contextvars`` for per-coroutine state.

Attributes also work directly (``g.db = conn``; ``g.db``).
"""
from __future__ import annotations

from typing import Any, Set

from gevent import getcurrent
from gevent.local import local as _greenlet_local

__all__ = ["LocalProxy", "g", "reset_g", "reuse", "forget"]

_MISSING = object()

#: greenlets that run one call after another (the supervisors' runners): ``g``
#: is reset for them between calls
reused: Set[Any] = set()
#: those of them in which ``g`` has been set since their last reset (checked
#: by the runners after each call: an empty set costs them nothing)
touched: Set[Any] = set()


class LocalProxy(_greenlet_local):
    """A greenlet-local namespace with atasker's helper methods."""

    def __setattr__(self, attr: str, value: Any) -> None:
        if reused and self is g:
            current = getcurrent()
            if current in reused:
                touched.add(current)
        _greenlet_local.__setattr__(self, attr, value)

    def get(self, attr: str, default: Any = None) -> Any:
        """The value of ``attr`` in this greenlet, or ``default`` if it is not set."""
        return getattr(self, attr, default)

    def has(self, attr: str) -> bool:
        """True if ``attr`` is set in this greenlet."""
        return getattr(self, attr, _MISSING) is not _MISSING

    def set(self, attr: str, value: Any) -> None:
        """Set ``attr`` to ``value`` for this greenlet only."""
        setattr(self, attr, value)

    def clear(self, attr: str) -> None:
        """Remove ``attr`` from this greenlet's namespace (no error if it is not set)."""
        try:
            delattr(self, attr)
        except AttributeError:
            pass


g = LocalProxy()
"""The task-local namespace, as atasker's: each task and each worker greenlet
has its own (``g.set(attr, value)``, ``g.get(attr, default=None)``,
``g.has(attr)``, ``g.clear(attr)``, or attributes)."""


def reset_g(glet: Any) -> None:
    """Empty ``g`` for ``glet``, the current greenlet (a runner, between two calls)."""
    touched.discard(glet)
    g.__dict__.clear()


def reuse(glet: Any) -> None:
    """``glet`` runs one call after another: have ``g`` reset between them
    (with :func:`reset_g`), until :func:`forget`."""
    reused.add(glet)


def forget(glet: Any) -> None:
    """``glet`` has ended (see :func:`reuse`)."""
    reused.discard(glet)
    touched.discard(glet)
