"""Reaching the hub from anywhere.

gevent objects (queues, events, greenlets) belong to one hub, the hub of the OS
thread that made them, and are not safe to touch from another OS thread. Code in
native threads, in gevent's thread pool or in C callbacks gets into the hub here,
through the hub's :class:`Inbox`: the call is queued and the loop woken by one
libev async watcher, whose callback makes the calls queued, in the order they
were posted (a hub callback itself must never block: calls that may block run
in a fresh greenlet). That is gevent's own ``loop.run_callback_threadsafe``
without its detour: gevent wakes its loop the same way, but runs the callback
only at the next round of its callback queue — measured on this project's
2-core VM, from a native thread to the hub, a median of 35 µs against 24 µs
through an async watcher of one's own (``python -m benchmarks --only event``
reports both as baselines).

After ``patch_all()`` the ``threading`` module identifies *greenlets*; the OS thread
is told by gevent's original ``_thread.get_ident``, kept here before anyone patches.

Nothing here holds an OS lock across a greenlet switch: the only OS lock is the
one a *foreign* thread waits on for its answer, released by the hub when done.
"""
from __future__ import annotations

import sys
import weakref
from collections import deque
from time import monotonic
from typing import Any, Callable, List, Optional, TypeVar

import gevent
from gevent.event import AsyncResult
from gevent.hub import Hub, get_hub
from gevent.monkey import get_original

__all__ = [
    "os_thread_ident", "in_hub_thread", "call_in_hub", "post_to_hub", "yield_to_hub", "interrupt",
    "HubNotRunning", "Inbox", "inbox_of", "post",
]

T = TypeVar("T")

os_thread_ident: Callable[[], int] = get_original("_thread", "get_ident")
#: The OS thread that imported gworker: the main thread in any normal program.
MAIN_THREAD_IDENT = os_thread_ident()
_allocate_os_lock = get_original("_thread", "allocate_lock")


class HubNotRunning(RuntimeError):
    """The hub a call was sent to did not answer within the caller's timeout."""


def in_hub_thread(hub: Optional[Hub]) -> bool:
    """True when the calling code runs in the OS thread that owns ``hub``."""
    return hub is None or hub.thread_ident == os_thread_ident()


class Inbox:
    """Calls posted to one hub from any OS thread (see the module docstring).

    :meth:`post` queues ``(fn, args)`` and sends the async watcher; the
    watcher's callback, in the hub, makes every queued call in order. A
    call's exception is reported (gevent's ``handle_error``) and the next
    call is still made. The watcher does not keep the loop alive
    (``ref=False``). Made in the hub's thread, by :func:`inbox_of`."""

    __slots__ = ("_calls", "_watcher", "_send", "__weakref__")

    def __init__(self, loop: Any) -> None:
        self._calls: "deque[tuple]" = deque()
        watcher = self._watcher = loop.async_(ref=False)
        watcher.start(self._deliver)
        self._send = watcher.send

    @property
    def loop(self) -> Any:
        """The loop whose watcher this inbox sends."""
        return self._watcher.loop

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Make ``fn(*args)`` in the hub, soon, after the calls posted before
        it (``fn`` must not block). Safe from any OS thread."""
        self._calls.append((fn, args))  # (deque.append: atomic; then the wake-up)
        self._send()

    def _deliver(self) -> None:
        # The watcher's callback, in the hub. A post made while this runs is
        # made here or by the next callback (its send comes after its append).
        calls = self._calls
        while calls:
            fn, args = calls.popleft()
            try:
                fn(*args)
            except BaseException:  # as gevent treats a failing hub callback
                get_hub().handle_error(fn, *sys.exc_info())


#: each hub's inbox (made by inbox_of, in the hub's thread)
_inboxes: "weakref.WeakKeyDictionary[Hub, Inbox]" = weakref.WeakKeyDictionary()


def inbox_of(hub: Hub) -> Inbox:
    """``hub``'s :class:`Inbox`, made on first use. Call in the hub's thread
    (a supervisor's start does, so every hub gworker runs in has one)."""
    box = _inboxes.get(hub)
    if box is None or box.loop is not hub.loop:
        box = _inboxes[hub] = Inbox(hub.loop)
    return box


def post(hub: Hub, fn: Callable[..., Any], *args: Any) -> None:
    """Make ``fn(*args)`` in ``hub`` soon, from any OS thread (``fn`` must not
    block): through the hub's inbox, in order with everything gworker posts
    there; a hub that has none yet gets a loop callback."""
    box = _inboxes.get(hub)
    if box is None:
        hub.loop.run_callback_threadsafe(fn, *args)
    else:
        box.post(fn, *args)


def post_to_hub(hub: Hub, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in ``hub``'s thread, in a new greenlet; do not wait.

    Safe from any OS thread. From the hub's own thread, prefer calling ``fn``
    directly. Exceptions ``fn`` raises are reported by gevent like any greenlet's.
    """
    post(hub, gevent.spawn, fn, *args)


def call_in_hub(hub: Hub, fn: Callable[..., T], *args: Any, timeout: Optional[float] = None) -> T:
    """Run ``fn(*args)`` in ``hub``'s thread and return its result to the caller.

    From the hub's own thread ``fn`` is simply called. From another OS thread, the
    call runs in a new greenlet of ``hub`` while the caller's thread waits on an
    OS lock (that blocks the *calling* thread only, never the hub); ``fn``'s
    exception is re-raised in the caller. ``timeout`` bounds the wait
    (``HubNotRunning`` past it, e.g. when the hub's thread is stuck or gone).
    """
    if in_hub_thread(hub):
        return fn(*args)
    done = _allocate_os_lock()
    done.acquire()
    box: list = []

    def runner() -> None:
        try:
            box.append((True, fn(*args)))
        except BaseException:  # handed back to the calling thread, re-raised there
            box.append((False, sys.exc_info()[1]))
        finally:
            done.release()

    post(hub, gevent.spawn, runner)
    if not done.acquire(True, -1 if timeout is None else timeout):
        raise HubNotRunning("the gevent hub did not run the call within %ss" % timeout)
    ok, value = box[0]
    if ok:
        return value
    raise value


def current_hub() -> Hub:
    """The hub of the calling OS thread (created if it has none yet)."""
    return get_hub()


def yield_to_hub() -> None:
    """Let the hub run a whole loop iteration — I/O, due timers and callbacks —
    before the calling greenlet goes on.

    ``gevent.sleep(0)`` is not enough for that: it only queues the caller behind
    the pending *callbacks*, so a greenlet that loops on it (or on anything that
    only schedules callbacks) keeps timers and I/O waiting: measured, a 5 ms
    ticker ticked every ~110 ms beside such a loop. A timer that is due at once
    makes the loop go round: poll I/O, fire timers, then resume the caller.
    """
    gevent.sleep(_ONE_ITERATION)


_ONE_ITERATION = 1e-6


def interrupt(hub: Hub, pick: Callable[[], List[Any]], timeout: Optional[float] = None) -> List[Any]:
    """Throw ``GreenletExit`` into the greenlets that ``pick()`` names *when
    the throw comes*, from a hub callback, and wait at most ``timeout``
    seconds for them to end; returns them.

    For work made by a greenlet that may go on to other work (a runner of
    :mod:`gworker._runners`): in the hub no greenlet of the hub's is running,
    so what ``pick()`` sees (which greenlet still makes the call to interrupt)
    is exact then — and may have changed since the caller looked. One that has
    not begun yet is killed as gevent kills it (it never runs)."""
    deadline = None if timeout is None else monotonic() + timeout
    picked: "AsyncResult[List[Any]]" = AsyncResult()
    hub.loop.run_callback(_throw_picked, pick, picked)
    targets = picked.get(timeout=_left(deadline)) or []
    gevent.joinall(targets, timeout=_left(deadline))
    return targets


def _left(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - monotonic())


def _throw_picked(pick: Callable[[], List[Any]], picked: "AsyncResult[List[Any]]") -> None:
    targets = [glet for glet in pick() if not glet.dead]
    picked.set(targets)
    for glet in targets:
        if glet.gr_frame is not None:  # begun, suspended: now, before it can go on
            glet.throw(gevent.GreenletExit)
        else:
            glet.kill(block=False)
