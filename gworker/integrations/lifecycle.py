"""Workers beside a web server: start them with the server, stop them gracefully.

A gevent web server process (a gunicorn ``-k gevent`` worker, a
``gevent.pywsgi.WSGIServer``) runs its background workers in the same hub as its
requests. Two moments matter:

* **start** — once per server process, *after* gevent is set up in it (for
  gunicorn: after the worker process forked and monkey-patched itself, never in
  the master). :meth:`WorkerSet.start` starts the supervisor, then every worker
  the application registered with :meth:`WorkerSet.add` (or the module-level
  :func:`gworker.integrations.autostart`).
* **graceful stop** — the server has stopped accepting connections and the
  requests in flight have finished (so nothing can put new items into a queue),
  and the process has some seconds left before it is killed.
  :meth:`WorkerSet.shutdown` then applies the *drain policy*:

  1. every started queue worker is stopped with ``stop(drain=True)``: it keeps
     processing until its queue is empty;
  2. every other worker is stopped (the run in progress finishes);
  3. at the deadline a queue worker still busy is interrupted (``GreenletExit``
     is thrown into its run), and the item of that run plus whatever is still
     queued are taken out (:meth:`BackgroundQueueWorker.shutdown
     <gworker.workers.queue.BackgroundQueueWorker.shutdown>`) and *reported* — handed to
     ``on_undrained(worker, items)`` (by default logged as a warning on the
     ``gworker`` logger), so the application can persist or re-queue them. An
     item is processed or reported, never both, never silently dropped; an
     interrupted item may have been partly processed, so treat reported items
     as "at least once". Other workers still running at the deadline are named
     in the report (``unfinished``); the process exits under them.

What "taken out" means depends on the queue (see the queue-object protocol in
:mod:`gworker.workers.queue`):

* a gevent queue: its items are taken with ``get_nowait()``, and each reported
  item is marked done (``task_done()``), so ``join()`` returns;
* a protocol object with ``release()`` (a broker's queue, such as
  :class:`~gworker.redis.RedisStreamQueue`) keeps its items itself: the
  worker's loop ended with ``release()``, which handed the fetched-but-not-run
  entries back to the broker (a Redis group: claimable at once), and the broker
  delivers them again — to another process, or this one after a restart.
  Nothing is taken out or reported as undrained; an interrupted item is named
  in ``interrupted`` only (it is still pending in the broker and will be
  delivered again);
* any other protocol object: the ``qsize()`` items that ``get()`` returns
  without waiting are taken with ``get()`` and reported.

The report is a :class:`ShutdownReport`. The server integrations in
:mod:`gworker.integrations.gunicorn` and :mod:`gworker.integrations.pywsgi`
call ``start`` and ``shutdown`` at the right moments with the right deadline.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional

from .._errors import report as report_failure
from .._deadline import Deadline
from .._default import supervisor_or_default
from ..supervisor import TaskSupervisor
from ..workers.base import Worker
from ..workers.queue import INTERRUPT_TIMEOUT, BackgroundQueueWorker

__all__ = ["WorkerSet", "ShutdownReport", "server_workers", "autostart"]

logger = logging.getLogger("gworker")

class ShutdownReport:
    """What a graceful shutdown did.

    * ``drained`` — ``{worker name: items processed during the shutdown}`` for
      every queue worker;
    * ``undrained`` — ``{worker name: [items]}``: items still queued at the
      deadline, taken out of the queue and handed to ``on_undrained`` (never
      for a broker's queue, which keeps them: see the module docstring);
    * ``interrupted`` — ``{worker name: item}``: a queue worker's run still in
      progress at the deadline was interrupted, and its item is reported (it is
      also the first item in ``undrained``, except for a broker's queue, which
      delivers it again) — it may have been partly processed;
    * ``unfinished`` — names of workers still running at the deadline;
    * ``elapsed`` — seconds the shutdown took; ``timeout`` — the budget it had.

    ``ok`` is true when nothing was left undrained or unfinished.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.elapsed = 0.0
        self.drained: Dict[str, int] = {}
        self.undrained: Dict[str, List[Any]] = {}
        self.unfinished: List[str] = []
        self.interrupted: Dict[str, Any] = {}

    @property
    def ok(self) -> bool:
        return not self.undrained and not self.unfinished

    def summary(self) -> str:
        """One line for a log."""
        left = sum(len(v) for v in self.undrained.values())
        return "gworker stopped in %.2fs (budget %.2fs): %d queued items processed while draining, %d left undrained%s" % (
            self.elapsed, self.timeout, sum(self.drained.values()), left,
            (", still running: %s" % ", ".join(self.unfinished)) if self.unfinished else "",
        )

    def __repr__(self) -> str:
        return "<ShutdownReport %s>" % self.summary()


def _log_undrained(worker: Any, items: List[Any]) -> None:
    shown = ", ".join(repr(i)[:80] for i in items[:10])
    logger.warning(
        "worker %s: %d queued item(s) not processed before shutdown: %s%s",
        worker.name, len(items), shown, ", ..." if len(items) > 10 else "",
    )


class WorkerSet:
    """The workers one server process starts beside its requests.

    ``supervisor``: the supervisor to start and stop (default: ``task_supervisor``).
    ``on_undrained(worker, items)``: called at shutdown with items still queued at
    the deadline (default: log a warning). Construct it anywhere, e.g. at import
    in the gunicorn master: it creates no hub, thread or greenlet until
    :meth:`start`.
    """

    def __init__(
        self,
        supervisor: Optional[TaskSupervisor] = None,
        on_undrained: Optional[Callable[[Any, List[Any]], Any]] = None,
    ) -> None:
        self._supervisor = supervisor
        self.on_undrained = on_undrained
        self._items: List[Any] = []
        self._pid: Optional[int] = None
        self._queue_workers: List[BackgroundQueueWorker] = []

    @property
    def supervisor(self) -> TaskSupervisor:
        return supervisor_or_default(self._supervisor)

    # -- registering -----------------------------------------------------------------
    def add(self, *items: Any) -> Any:
        """Register workers (started with no arguments) and/or callables (called
        with no arguments — start workers with arguments there) to run at
        :meth:`start`, in order. Returns the first item, so it works as a
        decorator, also on top of ``@background_worker``."""
        if not items:
            raise TypeError("add() needs at least one worker or callable")
        for item in items:
            if not isinstance(item, Worker) and not callable(item):
                raise TypeError("add() takes workers or callables; got %r" % (item,))
        self._items.extend(items)
        if self._pid is not None and self._pid == os.getpid():
            for item in items:  # already running in this process: start them now
                self._start_item(item)
        return items[0]

    def registered(self) -> List[Any]:
        """The workers and callables registered so far, in order (a copy)."""
        return list(self._items)

    # -- starting --------------------------------------------------------------------
    def is_started(self) -> bool:
        """True once :meth:`start` ran in this process (a fork does not inherit it)."""
        return self._pid == os.getpid()

    def start(self) -> bool:
        """Start the supervisor, then the registered workers and callables.

        Once per process: ``False`` if already done in this process. Call it in
        the hub's thread after gevent is set up (after ``patch_all()`` if the
        process patches)."""
        if self.is_started():
            return False
        self._pid = os.getpid()
        self.supervisor.start()
        for item in self._items:
            self._start_item(item)
        return True

    def _start_item(self, item: Any) -> None:
        if isinstance(item, Worker):
            item.start()
        else:
            item()

    # -- stopping --------------------------------------------------------------------
    def shutdown(self, timeout: float = 30.0, drain: bool = True) -> ShutdownReport:
        """Stop the supervisor and its workers within ``timeout`` seconds,
        applying the drain policy (see the module docstring); ``drain=False``
        stops at once (the run in progress finishes, up to the deadline) and
        reports every queued item. Call it from a greenlet of the hub's thread,
        once no new items can arrive. Safe to call when never started."""
        started = time.monotonic()
        deadline = Deadline(started + max(0.0, timeout))
        report = ShutdownReport(timeout)
        sup = self.supervisor
        queue_workers = self._known_queue_workers()
        runs_before = {id(w): w.runs for w in queue_workers}
        if drain:
            for w in queue_workers:
                if w.is_active():
                    w.stop(wait=False, drain=True)
        sup.stop(wait=deadline.as_wait())
        # Past the deadline, each queue worker still busy is interrupted and
        # hands back its item; every queue is emptied (BackgroundQueueWorker.shutdown).
        results = [(w, w.shutdown(deadline, drain=drain, interrupt_timeout=INTERRUPT_TIMEOUT))
                   for w in queue_workers]
        for w, result in results:
            if result.interrupted:
                report.interrupted[w.name] = result.interrupted[0]
            if not result.finished:
                report.unfinished.append(w.name)
        for w in sup.get_schedulers():
            if not w.is_stopped() and w.name not in report.unfinished:
                report.unfinished.append(w.name)
        for w, result in results:
            report.drained[w.name] = report.drained.get(w.name, 0) + w.runs - runs_before[id(w)]
            items = result.left
            if items:
                report.undrained.setdefault(w.name, []).extend(items)
                handler = self.on_undrained or _log_undrained
                try:
                    handler(w, items)
                except Exception:
                    report_failure("on_undrained failed for worker %s", w.name)
                    _log_undrained(w, items)
        report.elapsed = time.monotonic() - started
        self._pid = None
        return report

    def _known_queue_workers(self) -> List[BackgroundQueueWorker]:
        """Queue workers registered here or running on the supervisor."""
        seen: Dict[int, BackgroundQueueWorker] = {}
        for w in list(self._items) + list(self.supervisor.get_schedulers()):
            if isinstance(w, BackgroundQueueWorker):
                seen.setdefault(id(w), w)
        return list(seen.values())


#: The default set, used by the gunicorn hooks and by :mod:`.pywsgi` unless told otherwise.
server_workers = WorkerSet()

#: Register workers or callables with :data:`server_workers` (see :meth:`WorkerSet.add`).
autostart = server_workers.add
