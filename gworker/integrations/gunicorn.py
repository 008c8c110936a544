"""gunicorn server hooks: gworker in every ``-k gevent`` worker process.

Put this in your ``gunicorn.conf.py``::

    from gworker.integrations.gunicorn import install
    worker_class = "gevent"
    graceful_timeout = 30
    install(globals())          # post_worker_init, worker_int, worker_abort, worker_exit, child_exit

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

* **Status page and metrics across processes** — when a shared directory is
  set (``GWORKER_STATUS_DIR``, or ``PROMETHEUS_MULTIPROC_DIR``: see
  :func:`gworker.integrations.ui.status_dir`), :func:`post_worker_init` also
  starts a :class:`~gworker.integrations.ui.SnapshotPublisher`, so that the
  live page served by any worker process shows the workers of all of them;
  with ``PROMETHEUS_MULTIPROC_DIR`` set and prometheus_client installed, it
  publishes the metrics too (:func:`gworker.integrations.metrics.publish`),
  so that a scrape of any process shows the sum over all of them.
  :func:`worker_exit` stops both, after the drain. :func:`child_exit`, which gunicorn calls
  in the master when a worker process has exited (a crash, a recycling by
  ``max_requests``, a stop), removes that process's snapshot and marks it
  dead for the metrics (see :mod:`gworker.integrations.metrics`), so that
  neither piles up files.

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
    "post_worker_init", "worker_int", "worker_abort", "worker_exit", "child_exit", "install",
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
    publisher: Any = None  # the SnapshotPublisher of this worker process, if a directory is set
    stop_metrics: Any = None  # stops the metrics' publishing (PROMETHEUS_MULTIPROC_DIR), if it runs


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
    _start_publisher(worker)


def _start_publisher(worker: Any) -> None:
    from .health import hub_probe
    from .ui import SnapshotPublisher, status_dir

    hub_probe(_workers.supervisor)  # (the page's and the metrics' hub lag, from the start)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        try:
            from .metrics import publish
        except ImportError:  # no prometheus_client: nothing scrapes gworker's figures
            pass
        else:
            try:
                _state.stop_metrics = publish(_workers.supervisor)
            except Exception as exc:
                worker.log.warning("gworker: cannot publish metrics in pid %s: %s", os.getpid(), exc)
    if status_dir() is None:
        return
    try:
        _state.publisher = SnapshotPublisher(supervisor=_workers.supervisor)
        _state.publisher.start()
    except Exception as exc:  # the page then shows this process only when it answers
        worker.log.warning("gworker: cannot publish status snapshots in pid %s: %s", os.getpid(), exc)
        _state.publisher = None


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
    publisher, _state.publisher = _state.publisher, None
    if publisher is not None:  # (after the drain: the page shows it)
        publisher.stop()
    stop_metrics, _state.stop_metrics = _state.stop_metrics, None
    if stop_metrics is not None:
        stop_metrics()  # (its last figures, with the drain's runs: child_exit folds them)
    _state.report = report
    log = worker.log.info if report.ok else worker.log.warning
    log("%s (pid %s)", report.summary(), os.getpid())


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook, run in the master after a worker process exited: remove
    its status snapshot and mark it dead for Prometheus' multi-process mode
    (``prometheus_client.multiprocess.mark_process_dead``, when
    ``PROMETHEUS_MULTIPROC_DIR`` is set), so that files of dead processes
    do not pile up (see :mod:`gworker.integrations.metrics`)."""
    from .ui import mark_process_dead

    pid = worker.pid
    try:
        mark_process_dead(pid)
    except OSError as exc:
        server.log.warning("gworker: cannot remove the status snapshot of pid %s: %s", pid, exc)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        try:
            from .metrics import mark_process_dead as mark_metrics_dead
        except ImportError:  # no prometheus_client: no metric files either
            return
        try:
            mark_metrics_dead(pid)
        except OSError as exc:
            server.log.warning("gworker: cannot mark pid %s dead for the metrics: %s", pid, exc)


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
    (post_worker_init, worker_int, worker_abort, worker_exit, child_exit))


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
    ("child_exit", child_exit, 2, False),
)


def install(config: Dict[str, Any], workers: Optional[WorkerSet] = None) -> None:
    """Put gworker's hooks (``post_worker_init``, ``worker_int``,
    ``worker_abort``, ``worker_exit``, ``child_exit``) into a gunicorn config namespace (``install(globals())``
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
