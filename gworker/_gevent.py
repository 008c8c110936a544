"""The parts of gevent gworker uses that gevent does not document, in one place.

gworker keeps to gevent's public API, except for a few pieces it cannot do
without; each is reached through this module and nowhere else, so that a gevent
release that moves or renames one has one file to look at (and the test suite
fails here first). Each entry says what it is and why gworker needs it:

* :func:`get_hub_if_exists` — the current thread's hub, or None, *without*
  making one (``gevent.get_hub()`` makes one): "may this thread wait through a
  hub?" must not create a hub in a thread that had none;
* :data:`queue_items` — the ``collections.deque`` a gevent ``Queue`` keeps its
  items in (``Queue.queue``): the queue worker's burst takes the next item with
  the deque's ``popleft`` when nothing else could be waiting on the queue;
* :func:`drop_hub` — in a forked child, forget the parent's hub (its thread
  pool, whose threads did not survive the fork, and the thread's hub) so that
  ``gevent.get_hub()`` makes a fresh one: ``Hub.destroy()`` would try to kill
  that pool and may hang (gipc does the same);
* :func:`fork_apart` — ``os.fork()`` with the thread's hub swapped for a
  stand-in across the fork (``gevent.hub.set_hub``), so that the child's at-fork
  hooks never run the parent's hub;
* :func:`patched_dummy_thread` / :func:`replace_dummy_thread` — after
  ``patch_all()``, ``threading._DummyThread`` is gevent's class for the dummy
  thread made for a greenlet that asks ``threading.current_thread()``;
  gworker subclasses it to give those threads atasker's names (see
  :mod:`gworker._thread_names`).

(asyncio's private running-loop functions have their one home in
:mod:`gworker._running_loop`.)
"""
from __future__ import annotations

import operator
import threading
import warnings
from typing import Any, Callable, Optional

import gevent
import gevent.hub
import gevent.monkey
from gevent._hub_local import get_hub_if_exists

__all__ = [
    "get_hub_if_exists", "queue_items", "drop_hub", "fork_apart", "patched_dummy_thread", "replace_dummy_thread",
]

#: ``queue_items(q)`` is the deque of gevent queue ``q``'s items (changed in
#: place by the queue: fetch it once, then use it). A C call, no Python frame.
queue_items: Callable[[Any], Any] = operator.attrgetter("queue")


def fork_apart() -> int:
    """``os.fork()`` (the original), with this thread's hub swapped for a
    stand-in — a new hub on a loop of its own, with nothing in it — from just
    before the fork until it returns in the parent; in the child the stand-in
    stays the thread's hub, reinitialised (``gevent.reinit()``, as gevent's own
    fork does). Pass it to ``gevent.os.fork_and_watch(fork=...)``.

    Why: ``os.fork()`` runs every library's at-fork hooks in the child, before
    gevent reinitialises the child's loop. A hook that waits through the hub
    there (OpenTelemetry's ``TracerProvider`` detects its resource again in a
    thread pool) would otherwise run the *parent's* greenlets and watchers in
    the child, on the parent's sockets and on the epoll instance it shares with
    the parent until then: a process pool's results went to the wrong calls,
    and the parent could lose its own wake-ups. With the stand-in, such a hook
    waits in a hub that holds only what the hook started. (A *before* hook that
    waits in the parent would find the empty stand-in too; none of the usual
    ones do: they take uncontended locks.)"""
    hub = gevent.get_hub()
    stand_in = gevent.hub.Hub(gevent.config.loop(default=False))  # type: ignore[call-arg]  # (the stubs omit it)
    gevent.hub.set_hub(stand_in)  # type: ignore[attr-defined]
    try:
        with warnings.catch_warnings():  # (as gevent's fork: "use of fork() may lead to deadlocks")
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = _raw_fork()
    except BaseException:
        gevent.hub.set_hub(hub)  # type: ignore[attr-defined]
        stand_in.loop.destroy()
        raise
    if pid:
        gevent.hub.set_hub(hub)  # type: ignore[attr-defined]
        stand_in.loop.destroy()  # (it never ran here)
        return pid
    gevent.reinit()
    return 0


_raw_fork: Callable[[], int] = gevent.monkey.get_original("os", "fork")


def drop_hub(hub: Any) -> None:
    """In a forked child: make ``hub`` (the parent's, reinitialised by gevent's
    fork) no longer this thread's hub, dropping its dead thread pool first. The
    caller then destroys its loop and asks ``gevent.get_hub()`` for a new one."""
    # (both are gevent internals that its stubs do not declare)
    hub._threadpool = None
    gevent.hub.set_hub(None)  # type: ignore[attr-defined]


def patched_dummy_thread() -> Optional[type]:
    """gevent's dummy-thread class, installed as ``threading._DummyThread`` by
    ``patch_all()``; None if ``threading`` is not patched, or if someone else
    replaced the class since (theirs is left alone)."""
    if not gevent.monkey.is_module_patched("threading"):
        return None
    base = threading._DummyThread  # type: ignore[attr-defined]
    if getattr(base, "__module__", None) != "gevent.threading":
        return None
    return base


def replace_dummy_thread(cls: Any) -> None:
    """Make ``cls`` (a subclass of :func:`patched_dummy_thread`'s class) the
    class ``threading.current_thread()`` makes dummy threads of."""
    # (typeshed declares _DummyThread a class, which mypy will not let be replaced)
    threading._DummyThread = cls  # type: ignore[attr-defined, misc]
