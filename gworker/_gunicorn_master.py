"""Refusing to start in a gunicorn master process.

gunicorn's master forks the worker processes and never runs a gevent hub: its
arbiter loop sleeps in plain ``select``. A supervisor started there (by a
worker started at import of an application loaded with ``--preload``, in the
config file, or in a master hook such as ``when_ready``) would run nothing in
the master, and every worker process would inherit a copy of it — its timers,
its greenlets, its hub — made before gunicorn's gevent worker monkey-patched
that process. The same holds for a child that has not become a gevent worker
yet (``post_fork`` runs before the patching).

So a supervisor refuses to start there, with a message that says what to do
instead: register the workers with :func:`gworker.integrations.autostart` and
install the hooks of :mod:`gworker.integrations.gunicorn`, which start them in
``post_worker_init``, once the worker process is patched.

How it knows: only where gunicorn has been imported, it looks at the calling
stack (the calling greenlet's: a greenlet started in the hub of a worker
process has none of gunicorn's frames). Frames of ``gunicorn/workers/`` mean a
worker process that is set up (the application is loaded, or a hook such as
``post_worker_init`` runs): allowed. Other gunicorn frames without those mean
the master (gunicorn's arbiter whose ``pid`` is this process, or gunicorn
loading its configuration), or a forked child before its worker took over.
"""
from __future__ import annotations

import os
import sys
from types import FrameType
from typing import Optional

__all__ = ["refuse_in_gunicorn_master", "MASTER_MESSAGE", "EARLY_CHILD_MESSAGE"]

_WHAT_TO_DO = (
    "workers must start in each worker process, after gevent patched it: register them with"
    " gworker.integrations.autostart(...) in the application module and call"
    " gworker.integrations.gunicorn.install(globals()) in gunicorn.conf.py"
    " (see the servers page of gworker's docs)"
)
MASTER_MESSAGE = "%s was started in the gunicorn master process; " + _WHAT_TO_DO
EARLY_CHILD_MESSAGE = ("%s was started in a gunicorn worker process before gunicorn's gevent"
                       " worker patched it (post_fork is too early); " + _WHAT_TO_DO)


def _where() -> Optional[str]:
    """``"master"``, ``"early child"``, or None (not in a gunicorn process, or
    in a worker process that is set up), judged from the calling stack."""
    gunicorn = sys.modules.get("gunicorn")
    path = getattr(gunicorn, "__file__", None)
    if not path:
        return None
    base = os.path.dirname(os.path.abspath(path)) + os.sep
    workers = base + "workers" + os.sep
    arbiter_mod = sys.modules.get("gunicorn.arbiter")
    arbiter_cls = getattr(arbiter_mod, "Arbiter", None)
    found = None
    frame: Optional[FrameType] = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not os.path.isabs(filename):
            filename = os.path.abspath(filename)
        if filename.startswith(base):
            if filename.startswith(workers):
                return None
            found = found or "master"
            me = frame.f_locals.get("self")
            if (arbiter_cls is not None and isinstance(me, arbiter_cls)
                    and getattr(me, "pid", None) not in (None, os.getpid())):
                found = "early child"  # the arbiter's copy in a forked child
        frame = frame.f_back
    return found


def refuse_in_gunicorn_master(what: str) -> None:
    """Raise ``RuntimeError`` if ``what`` (``"worker tick"``, ``"supervisor
    default"``) is being started in a gunicorn master process, or in a forked
    child before gunicorn's gevent worker took it over; else return (cheaply
    where gunicorn is not imported)."""
    if "gunicorn" not in sys.modules:
        return
    where = _where()
    if where == "master":
        raise RuntimeError(MASTER_MESSAGE % what)
    if where == "early child":
        raise RuntimeError(EARLY_CHILD_MESSAGE % what)
