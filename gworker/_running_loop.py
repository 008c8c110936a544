"""The running-loop seam: one asyncio "running loop" per *greenlet*, not per thread.

asyncio remembers the loop that is running in the current OS thread (in C, in the
thread state) and answers ``asyncio.get_running_loop()`` from it. Greenlets share
their OS thread, so when a greenlet that runs a loop switches out — its loop
waits in the hub, or one of its coroutines calls ``gevent.sleep`` or a patched
socket — whatever greenlet runs next would see *that* loop as running, and a
second loop started in another greenlet would refuse to run.

This module fixes that with a greenlet trace function (``greenlet.settrace``),
called by greenlet on every switch in its thread. On a ``switch``/``throw`` from
``origin`` to ``target`` it

* remembers the loop that was running in ``origin`` (if any), and
* sets asyncio's running loop to the one remembered for ``target`` — or to
  ``None`` when ``target`` runs no loop.

An aloop greenlet is simply a greenlet whose ``loop.run_forever()`` set the
running loop; its coroutines find their own loop again after any gevent switch,
and every other greenlet (the hub, plain greenlets) sees ``None``, so
``asyncio.run`` or ``get_running_loop`` behave there as in a fresh thread. The
same bookkeeping also keeps a loop that user code runs in a plain greenlet (its
own ``asyncio.run``) working across gevent switches. Loops that were already
running in *other* greenlets before the seam was installed cannot be attributed
to their greenlet, and are not tracked.

Rules this module keeps:

* It is installed lazily, per OS thread, by :func:`acquire` (called when an aloop
  starts) — never at import.
* The trace function that was installed before it (gevent's monitor thread
  installs one) is chained: called after ours, on every event.
* :func:`release` (called when an aloop ends) uninstalls it once no aloop of the
  thread runs and no loop is remembered — and only if ``greenlet.gettrace()`` is
  still ours (last in, first out); otherwise it stays installed and keeps working.
* If someone replaced our trace function without chaining it, the next
  :func:`acquire` installs a fresh one; the old one, wherever it survives in some
  chain, becomes inert (it only chains).
* The callback is tiny: it runs on every greenlet switch of the thread.

The only contact with asyncio internals is here: ``asyncio.events._get_running_loop``
and ``asyncio.events._set_running_loop`` (private, present from Python 3.7 through
at least 3.13). Their presence is checked at import time.
"""
from __future__ import annotations

import asyncio
import asyncio.events
import sys
from typing import Any, Callable, Dict, Optional

import greenlet
from gevent.monkey import get_original

__all__ = ["acquire", "release", "is_installed", "forget"]

try:
    _get_running_loop: Callable[[], Optional[asyncio.AbstractEventLoop]]
    _get_running_loop = asyncio.events._get_running_loop  # type: ignore[attr-defined]
    _set_running_loop: Callable[[Optional[asyncio.AbstractEventLoop]], None]
    _set_running_loop = asyncio.events._set_running_loop  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - depends on the Python version
    raise ImportError(
        "gworker's aloops need asyncio.events._get_running_loop and "
        "asyncio.events._set_running_loop, which this Python (%s) does not have"
        % sys.version.split()[0]
    ) from None

# An OS-thread-local (not greenlet-local, even after patch_all()).
_os_local = get_original("_thread", "_local")


class _Seam(_os_local):  # type: ignore[misc,valid-type]
    """Per-OS-thread state: the active tracer, how many aloops use it, and the
    loops remembered for greenlets that are switched out."""

    def __init__(self) -> None:
        self.tracer: Optional[Callable[[str, Any], None]] = None
        self.users = 0
        self.saved: Dict[greenlet.greenlet, asyncio.AbstractEventLoop] = {}


_seam = _Seam()


def _make_tracer(seam: _Seam) -> Callable[[str, Any], None]:
    saved = seam.saved

    def trace(event: str, args: Any, _get=_get_running_loop, _set=_set_running_loop) -> None:
        # Runs on EVERY greenlet switch of this thread, already in the target's
        # context: keep it short. The running loop is still the origin's here.
        if seam.tracer is trace and (event == "switch" or event == "throw"):
            origin, target = args
            loop = _get()
            if loop is not None:
                if not origin.dead:
                    saved[origin] = loop
                _set(saved.pop(target, None))
            elif saved:
                loop = saved.pop(target, None)
                if loop is not None:
                    _set(loop)
        previous = trace.previous  # type: ignore[attr-defined]
        if previous is not None:
            previous(event, args)

    trace.previous = None  # type: ignore[attr-defined]
    return trace


def _in_chain(fn: Any, wanted: Any) -> bool:
    """Is ``wanted`` reachable from ``fn`` through the chains we know of
    (ours: ``previous``; gevent's tracers: ``previous_trace_function``)?"""
    for _ in range(32):
        if fn is None:
            return False
        if fn is wanted:
            return True
        nxt = getattr(fn, "previous", None)
        if nxt is None:
            nxt = getattr(fn, "previous_trace_function", None)
        fn = nxt
    return False


def acquire() -> None:
    """Make sure the seam is active in the calling OS thread and count one user.

    Call from the thread whose greenlets will run the loop (the hub's thread).
    """
    seam = _seam
    seam.users += 1
    if seam.tracer is not None and _in_chain(greenlet.gettrace(), seam.tracer):
        return
    # First use in this thread, or our tracer was dropped from the chain by
    # someone who did not restore it: install a fresh one (any stale one turns
    # inert, because seam.tracer no longer names it).
    tracer = _make_tracer(seam)
    seam.tracer = tracer
    tracer.previous = greenlet.settrace(tracer)  # type: ignore[attr-defined]


def release() -> None:
    """Count one user less; uninstall when unused, if ours is still on top."""
    seam = _seam
    if seam.users > 0:
        seam.users -= 1
    if seam.users or seam.saved or seam.tracer is None:
        return
    tracer = seam.tracer
    if greenlet.gettrace() is tracer:
        seam.tracer = None
        greenlet.settrace(tracer.previous)  # type: ignore[attr-defined]
    # Otherwise another trace function chains ours: removing ours would break
    # its chain, so ours stays installed (and active) until the thread ends.


def is_installed() -> bool:
    """True when the seam's trace function is active in the calling OS thread."""
    return _seam.tracer is not None and _in_chain(greenlet.gettrace(), _seam.tracer)


def forget(glet: greenlet.greenlet) -> None:
    """Drop what the seam remembers for ``glet`` (e.g. a greenlet that is gone)."""
    _seam.saved.pop(glet, None)
