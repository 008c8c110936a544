"""Thread names as atasker shows them, in a monkey-patched process.

atasker ran a coroutine in an aloop's thread, named
``supervisor_<id>_aloop_<name>``, and a sync task or executor in a thread of
its supervisor's pool, named ``supervisor_<id>_pool_<n>``; code (and log
formats with ``%(threadName)s``) read those names through
``threading.current_thread().name``. In gworker both are greenlets of the hub.
After ``patch_all()``, ``threading.current_thread()`` in a greenlet returns a
dummy thread that gevent makes *the first time it is asked for* in that
greenlet, named ``Dummy-<n>``.

gworker names that dummy thread when it is made, not when a greenlet starts:
:func:`install` (called when the first supervisor or aloop starts — never at
import) replaces gevent's dummy-thread class (``threading._DummyThread``,
reached through :mod:`gworker._gevent`) with a subclass that
looks at the greenlet it is made in and, if that greenlet runs an aloop, a
worker or a supervisor's task, takes atasker's name. Naming every greenlet as
it starts would cost what making a dummy thread costs (about 10 µs, half
again the cost of spawning and running a greenlet) for every task and every
interval run, whether or not anything ever asks; this way nothing at all is
added to a run, and a greenlet that asks pays only the dummy thread gevent
makes for it anyway, plus the name.

``<n>`` counts, per supervisor, the greenlets that were named: a greenlet is
not a reused pool thread, so the numbers keep growing. In a process that is not
monkey-patched, ``current_thread()`` is the hub's OS thread and nothing is
installed.
"""
from __future__ import annotations

from itertools import count
from typing import Any, Dict, Optional

from greenlet import getcurrent

from ._gevent import patched_dummy_thread, replace_dummy_thread

__all__ = ["install", "name_for"]

_installed = False
_counters: Dict[str, Any] = {}


def name_for(glet: Any) -> Optional[str]:
    """atasker's thread name for the work ``glet`` runs, or None (not gworker's)."""
    run = getattr(glet, "_run", None)
    owner = getattr(run, "__self__", None)
    if owner is None:
        return None
    from .aio import Aloop
    from .supervisor import TaskSupervisor

    if isinstance(owner, Aloop):
        sup = owner.supervisor
        return "supervisor_%s_aloop_%s" % (sup.id if sup is not None else None, owner.name)
    if isinstance(owner, TaskSupervisor):
        sup = owner
    else:
        sup = getattr(owner, "supervisor", None)
        if not isinstance(sup, TaskSupervisor):
            return None
    counter = _counters.get(sup.id)
    if counter is None:
        counter = _counters[sup.id] = count()
    return "supervisor_%s_pool_%d" % (sup.id, next(counter))


def install() -> None:
    """Name the dummy threads of gworker's greenlets (see the module docstring).

    Does nothing unless ``threading`` is monkey-patched by gevent, and only once."""
    global _installed
    if _installed:
        return
    _installed = True
    base: Any = patched_dummy_thread()
    if base is None:
        return  # not patched, or someone else replaced it: leave theirs alone

    class _DummyThread(base):  # type: ignore[misc]
        """gevent's dummy thread, named as atasker names its threads when it
        is made in a greenlet of gworker's."""

        def __init__(self) -> None:
            base.__init__(self)
            name = name_for(getcurrent())
            if name is not None:
                self._name = name

    replace_dummy_thread(_DummyThread)
