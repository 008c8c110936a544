"""gunicorn server hooks: gworker in every ``-k gevent`` worker process.

Put this in your ``gunicorn.conf.py``::

    from gworker.integrations.gunicorn import install
    worker_class = "gevent"
    graceful_timeout = 30
    install(globals())          # post_worker_init, worker_int, worker_abort, worker_exit

and register your workers in the application module (imported in each worker
process)::

    from gworker.integrations import autostart
    autostart(my_interval_worker, my_queue_worker)

How it fits gunicorn's process model:

* The master never runs workers. ``post_fork`` would be too early (the gevent
  worker monkey-patches *after* it); :func:`post_worker_init` runs in each
  worker process after the patching and after the application was loaded, just
  before it serves: it starts the supervisor and everything registered with
  :func:`~gworker.integrations.autostart`. Importing gworker in the master (e.g.
  through this config file) is harmless: importing creates no hub, thread,
  greenlet or supervisor.
* **Graceful stop** — SIGTERM to the master (or SIGHUP, or a worker recycled by
  ``max_requests``): each worker gets SIGTERM, stops accepting, finishes the
  requests in flight, and leaves its serve loop; then gunicorn calls
  :func:`worker_exit` in the worker process. Nothing can put new queue items any
  more, so the workers are stopped with the drain policy of
  :meth:`~gworker.integrations.WorkerSet.shutdown`: queue workers process what
  is queued, within what is left of ``graceful_timeout`` since the SIGTERM
  (minus :data:`EXIT_MARGIN` for the process to exit before the master's
  SIGKILL); items still queued then are handed to ``on_undrained``.
  Requests in flight use the same budget first: keep ``graceful_timeout`` well
  above your slowest request plus the time your queues take to drain.
* **Quick stop** — SIGINT/SIGQUIT (Ctrl-C, ``gunicorn`` quick shutdown) call
  :func:`worker_int`, SIGABRT (a worker timeout) :func:`worker_abort`: no drain;
  the run in progress gets at most :data:`QUICK_STOP_TIMEOUT` seconds and every
  queued item is reported to ``on_undrained``.

Already have hooks of these names? :func:`install` chains them (gworker's runs
first in ``post_worker_init``, yours first in the others); or call these
functions from yours.
"""
from __future__ import annotations

import os
import signal
import time
import weakref
from typing import Any, Dict, Optional

from .lifecycle import ShutdownReport, WorkerSet, server_workers

__all__ = [
    "post_worker_init", "worker_int", "worker_abort", "worker_exit", "install",
    "EXIT_MARGIN", "QUICK_STOP_TIMEOUT", "use_worker_set",
]

#: Seconds of ``graceful_timeout`` kept for the worker process to exit after draining.
EXIT_MARGIN = 0.5
#: Seconds a quick stop (SIGINT/SIGQUIT/SIGABRT) gives the runs in progress.
QUICK_STOP_TIMEOUT = 0.5

_workers: WorkerSet = server_workers


class _ProcessState:
    pid: Optional[int] = None          # the worker process where post_worker_init ran
    stop_requested: Optional[float] = None  # monotonic time of the SIGTERM
    quick = False
    report: Optional[ShutdownReport] = None


_state = _ProcessState()


def use_worker_set(workers: WorkerSet) -> None:
    """Make the hooks start and stop ``workers`` instead of the default
    :data:`~gworker.integrations.server_workers`. Call it in the config file."""
    global _workers
    _workers = workers


def post_worker_init(worker: Any) -> None:
    """gunicorn hook: start the supervisor and the registered workers in this
    worker process (after the gevent worker patched it)."""
    _state.pid = os.getpid()
    _state.stop_requested = None
    _state.quick = False
    _state.report = None
    _note_sigterm()
    _workers.start()
    worker.log.info("gworker: started %d worker(s) in pid %s",
                    len(_workers.supervisor.get_schedulers()), _state.pid)


def worker_int(worker: Any) -> None:
    """gunicorn hook (SIGINT/SIGQUIT to the worker): a quick stop follows."""
    _state.quick = True


def worker_abort(worker: Any) -> None:
    """gunicorn hook (SIGABRT: the worker timed out): a quick stop follows."""
    _state.quick = True


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn hook, run in the worker process once it stopped serving: stop
    the workers — draining queues within the rest of ``graceful_timeout``, or
    quickly after SIGINT/SIGQUIT/SIGABRT — and log the outcome.

    gunicorn also calls this hook in the master for a worker that died
    unexpectedly; there (and in any process where :func:`post_worker_init` did
    not run) it does nothing."""
    if _state.pid != os.getpid():
        return
    _state.pid = None
    if _state.quick:
        timeout, drain = QUICK_STOP_TIMEOUT, False
    else:
        began = _state.stop_requested if _state.stop_requested is not None else time.monotonic()
        timeout = worker.cfg.graceful_timeout - (time.monotonic() - began) - EXIT_MARGIN
        drain = True
    report = _workers.shutdown(timeout=max(0.0, timeout), drain=drain)
    _state.report = report
    log = worker.log.info if report.ok else worker.log.warning
    log("%s (pid %s)", report.summary(), os.getpid())


def _note_sigterm() -> None:
    """Remember when SIGTERM arrived: the drain budget counts from then.

    gunicorn's worker has installed its own SIGTERM handler by now; ours records
    the time and calls it."""
    previous = signal.getsignal(signal.SIGTERM)
    if previous in _ours:
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        if _state.stop_requested is None:
            _state.stop_requested = time.monotonic()
        if callable(previous):
            previous(signum, frame)

    _ours.add(on_sigterm)
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn has it: don't disturb requests


#: The signal handler and hooks gworker made (its own, or a chain with one of
#: its own): installing twice finds them and does not chain them again.
_ours: "weakref.WeakSet[Any]" = weakref.WeakSet(
    (post_worker_init, worker_int, worker_abort, worker_exit))


def _chain(first: Any, second: Any, arity: int) -> Any:
    # gunicorn checks a hook's arity, so the chain has exactly the hook's parameters.
    if arity == 1:
        def hook1(worker: Any) -> None:
            first(worker)
            second(worker)
        return hook1

    def hook2(server: Any, worker: Any) -> None:
        first(server, worker)
        second(server, worker)
    return hook2


_HOOKS = (
    ("post_worker_init", post_worker_init, 1, True),
    ("worker_int", worker_int, 1, False),
    ("worker_abort", worker_abort, 1, False),
    ("worker_exit", worker_exit, 2, False),
)


def install(config: Dict[str, Any], workers: Optional[WorkerSet] = None) -> None:
    """Put gworker's hooks into a gunicorn config namespace (``install(globals())``
    in ``gunicorn.conf.py``), chaining hooks already defined there. ``workers``:
    a :class:`~gworker.integrations.WorkerSet` to use instead of the default."""
    if workers is not None:
        use_worker_set(workers)
    for name, ours, arity, ours_first in _HOOKS:
        theirs = config.get(name)
        if theirs in _ours:
            continue  # ours already, alone or chained
        if theirs is None:
            config[name] = ours
            continue
        chained = _chain(ours, theirs, arity) if ours_first else _chain(theirs, ours, arity)
        _ours.add(chained)
        config[name] = chained
