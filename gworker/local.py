"""``g``: a namespace local to each greenlet, hence to each task and worker.

atasker's ``g`` is a ``threading.local`` with four helper methods; its tasks and
workers are threads, so each sees only its own values. gworker's tasks and
workers are greenlets, so :class:`LocalProxy` is built on
``gevent.local.local``: each greenlet has its own attributes, a background
task never sees the values of the greenlet that started it, and the values of
a greenlet are dropped when it ends (nothing leaks).

What "local" covers:

* a ``background_task``/``put_task`` task: its own greenlet — a fresh, empty
  namespace;
* a worker: its executor calls run in the worker's greenlet where they can, so
  values set by one call may be seen by the next calls of the same worker (as
  with atasker's worker thread) — do not rely on either;
* coroutines: all coroutines of one aloop run in that aloop's greenlet and
  share one namespace (as all coroutines of atasker's loop thread shared its
  thread-local). Use ``contextvars`` for per-coroutine state.

Attributes also work directly (``g.db = conn``; ``g.db``).
"""
from __future__ import annotations

from typing import Any

from gevent.local import local as _greenlet_local

__all__ = ["LocalProxy", "g"]

_MISSING = object()


class LocalProxy(_greenlet_local):
    """A greenlet-local namespace with atasker's helper methods."""

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


#: The task-local namespace (``from gworker import g``).
g = LocalProxy()
