"""The live status page: every worker of every server process, refreshed each second.

:func:`ui_app` serves an HTML page (``/_gworker/ui`` under
:func:`~gworker.integrations.status.mount`) and the JSON it reads
(``/_gworker/ui/data``). The page is one self-contained document — its
script and style are in it, nothing is fetched from elsewhere and there is
no build step — that asks for the data every second and draws, per server
process, the thread pool's slots in use by priority and a row per worker:
kind, priority, state, runs, failures, last run, next due time, lateness,
queue depth, and a sparkline of recent run durations.

**Snapshots.** What the page shows of a process is that process's *snapshot*
(:func:`process_snapshot`): a small JSON-ready dict made from
``supervisor.get_info()``, at most :data:`MAX_WORKERS` workers. Under
gunicorn each request reaches one worker process, so every process
*publishes* its snapshot — a :class:`SnapshotPublisher` writes it every
second into a directory all of them share (``gworker-ui-<pid>.json``,
replaced atomically) — and the process that answers merges the files of the
others with its own live snapshot (:func:`ui_data`). A process whose file
is older than three of its publishing periods is marked *stale* (it stopped
publishing: stuck, or gone without a word); one whose pid no longer exists,
*exited*. gunicorn's ``child_exit`` hook (installed by
:func:`gworker.integrations.gunicorn.install`) removes the file of a worker
process that exited (:func:`mark_process_dead`); a file whose process is gone
and that nobody removed is ignored once it is :data:`FORGET_AFTER` seconds old.

The directory (:func:`status_dir`) is the one given, else the environment's
``GWORKER_STATUS_DIR``, else ``PROMETHEUS_MULTIPROC_DIR`` (the directory a
multi-process Prometheus set-up shares already); without one, the page shows
the answering process only.

**Recent durations and lateness.** While the page is served (from its first
data request) or a publisher runs, every worker's engine hands each run to
the per-name statistics that the metrics use too
(:mod:`gworker.integrations._stats`: a bisection and two additions per run,
a queue's burst sampled). Each snapshot then adds to a worker's ring of
:data:`HISTORY` points the mean duration of its runs since the previous
snapshot, and shows the mean lateness (start minus due time) of its
scheduled interval/cron runs since then. (Without those statistics — a
worker of another supervisor — the point is its latest run's duration.)

The page reveals worker names and figures: serve it where your other
internal pages are.
"""
from __future__ import annotations

import json
import os
import time
import weakref
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import gevent

from .._default import supervisor_or_default
from .._errors import report
from ..supervisor import TaskSupervisor
from . import _stats
from .health import hub_probe

__all__ = [
    "ui_app", "ui_data", "process_snapshot", "SnapshotPublisher", "status_dir", "mark_process_dead",
    "read_snapshots", "MAX_WORKERS", "HISTORY", "PUBLISH_EVERY", "FORGET_AFTER", "STALE_AFTER",
]

#: At most this many workers of a process are in its snapshot (the rest are counted).
MAX_WORKERS = 500
#: Points of recent run durations kept per worker (the sparkline).
HISTORY = 30
#: Seconds between two snapshots a :class:`SnapshotPublisher` writes.
PUBLISH_EVERY = 1.0
#: A snapshot older than this many publishing periods is marked stale.
STALE_AFTER = 3
#: Seconds after which the file of a process that no longer exists is ignored.
FORGET_AFTER = 60.0

_PREFIX = "gworker-ui-"
_SUFFIX = ".json"


def status_dir(directory: Optional[str] = None) -> Optional[str]:
    """The directory where processes publish their snapshots: ``directory``
    if given, else ``$GWORKER_STATUS_DIR``, else ``$PROMETHEUS_MULTIPROC_DIR``,
    else None (no sharing: the answering process only)."""
    if directory is not None:
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError("directory must be a path; got %r" % (directory,))
        return os.fspath(directory)
    return os.environ.get("GWORKER_STATUS_DIR") or os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _History:
    """The sampled figures of one worker (see the module docstring)."""

    __slots__ = ("runs", "durations", "lateness", "seen")

    def __init__(self) -> None:
        self.runs = -1
        self.durations: Deque[float] = deque(maxlen=HISTORY)
        self.lateness: Optional[float] = None
        #: the name's statistics at the previous snapshot: observed runs and
        #: their durations' sum, scheduled runs and their lateness' sum
        self.seen: Optional[Tuple[int, float, int, float]] = None


class _Sampler:
    """Per supervisor: each worker's history, by worker object (weakly)."""

    def __init__(self, supervisor: TaskSupervisor) -> None:
        self.workers: "weakref.WeakKeyDictionary[Any, _History]" = weakref.WeakKeyDictionary()
        self.recorder = _stats.recorder(supervisor)

    def sample(self, worker: Any, info: Dict[str, Any]) -> _History:
        history = self.workers.get(worker)
        if history is None:
            history = self.workers[worker] = _History()
        runs = info.get("runs") or 0
        stats = self.recorder.by_name.get(worker.name)
        if stats is not None:
            now = (sum(stats.counts), stats.sum, sum(stats.late_counts), stats.late_sum)
            seen = history.seen
            if seen is not None:
                if now[0] > seen[0]:
                    history.durations.append((now[1] - seen[1]) / (now[0] - seen[0]))
                if now[2] > seen[2]:
                    history.lateness = (now[3] - seen[3]) / (now[2] - seen[2])
            history.seen = now
        elif history.runs >= 0 and runs > history.runs:
            duration = info.get("last_duration")
            if duration is not None:
                history.durations.append(duration)
        history.runs = runs
        return history


_samplers: "weakref.WeakKeyDictionary[TaskSupervisor, _Sampler]" = weakref.WeakKeyDictionary()


def _sampler(supervisor: TaskSupervisor) -> _Sampler:
    sampler = _samplers.get(supervisor)
    if sampler is None:
        sampler = _samplers[supervisor] = _Sampler(supervisor)
    return sampler


def process_snapshot(supervisor: Optional[TaskSupervisor] = None, interval: float = PUBLISH_EVERY) -> Dict[str, Any]:
    """This process's snapshot (see the module docstring), JSON-ready:
    ``pid``, ``time``, ``interval`` (its publishing period), ``supervisor``,
    ``active``, ``hub_lag``, ``pool`` (the thread pool's limits, ``running``,
    ``waiting`` and ``in_use`` by priority), ``workers_total`` and
    ``workers`` — per worker ``name``, ``kind``, ``priority``, ``state``
    (``"active"`` or ``"stopping"``), ``runs``, ``failures``, ``last_run``,
    ``last_duration``, ``next_run``, ``lateness``, ``queue_length``,
    ``missed`` and ``durations`` (the sparkline's points, oldest first).
    Call it in the supervisor's hub."""
    supervisor = supervisor_or_default(supervisor)
    sampler = _sampler(supervisor)
    workers = list(supervisor.get_schedulers())
    rows = []
    for worker in workers[:MAX_WORKERS]:
        info = worker.get_info()
        history = sampler.sample(worker, info)
        rows.append({
            "name": info.get("name"), "kind": info.get("kind"), "priority": info.get("priority"),
            "state": "active" if info.get("active") else "stopping",
            "runs": info.get("runs"), "failures": info.get("errors"),
            "last_run": info.get("last_run"), "last_duration": info.get("last_duration"),
            "next_run": info.get("next_run"), "lateness": history.lateness,
            "queue_length": info.get("queue_length"), "missed": info.get("missed"),
            "durations": list(history.durations),
        })
    pool = supervisor.thread_pool
    probe = hub_probe(supervisor)
    return {
        "pid": os.getpid(), "time": time.time(), "interval": interval, "supervisor": supervisor.id,
        "active": supervisor.is_active(), "hub_lag": None if probe is None else probe.max_lag,
        "pool": {
            "pool_size": pool.pool_size, "reserve_normal": pool.reserve_normal,
            "reserve_high": pool.reserve_high, "max_size": pool.max_size, "running": pool.running,
            "waiting": pool.waiting, "in_use": {str(k): v for k, v in supervisor.slots_in_use().items()},
        },
        "workers_total": len(workers), "workers": rows,
    }


def _path(directory: str, pid: int) -> str:
    return os.path.join(directory, "%s%d%s" % (_PREFIX, pid, _SUFFIX))


class SnapshotPublisher:
    """Writes this process's snapshot into ``directory`` every ``interval``
    seconds, from a greenlet of the supervisor's hub (see the module
    docstring). :meth:`start` in the hub's thread, after the supervisor
    started (gunicorn's ``post_worker_init`` does, through
    :func:`gworker.integrations.gunicorn.install`); :meth:`stop` removes the
    file. A failed write is reported on the ``gworker`` logger (rate-limited)
    and tried again at the next period."""

    def __init__(self, directory: Optional[str] = None, supervisor: Optional[TaskSupervisor] = None,
                 interval: float = PUBLISH_EVERY) -> None:
        resolved = status_dir(directory)
        if resolved is None:
            raise ValueError("directory: none given, and neither GWORKER_STATUS_DIR nor"
                             " PROMETHEUS_MULTIPROC_DIR is set")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise TypeError("interval must be a number of seconds; got %r" % (interval,))
        if not interval > 0:
            raise ValueError("interval must be more than 0 seconds; got %r" % (interval,))
        self.directory = resolved
        self.supervisor = supervisor_or_default(supervisor)
        self.interval = float(interval)
        self._greenlet: Optional[gevent.Greenlet] = None
        self._pid: Optional[int] = None

    @property
    def path(self) -> str:
        """The file this process writes."""
        return _path(self.directory, os.getpid())

    def is_running(self) -> bool:
        """True while its greenlet publishes (in this process)."""
        return self._greenlet is not None and not self._greenlet.dead and self._pid == os.getpid()

    def start(self) -> bool:
        """Start publishing (the first snapshot at once); False if already running."""
        if self.is_running():
            return False
        os.makedirs(self.directory, exist_ok=True)
        self._pid = os.getpid()
        self.publish()
        self._greenlet = gevent.spawn(self._loop)
        return True

    def stop(self) -> None:
        """Stop publishing and remove this process's file."""
        glet, self._greenlet = self._greenlet, None
        if glet is not None:
            glet.kill(block=True, timeout=1)
        if self._pid == os.getpid():
            mark_process_dead(os.getpid(), self.directory)
        self._pid = None

    def publish(self) -> None:
        """Write one snapshot now (atomically: a reader never sees half a file)."""
        snapshot = process_snapshot(self.supervisor, self.interval)
        data = json.dumps(snapshot, default=repr).encode("utf-8")
        path = self.path
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def _loop(self) -> None:
        while True:
            gevent.sleep(self.interval)
            try:
                self.publish()
            except Exception:
                report("status snapshot: cannot write %s", self.path)


def mark_process_dead(pid: int, directory: Optional[str] = None) -> None:
    """Remove the snapshot of process ``pid`` (it exited) from ``directory``
    (default: :func:`status_dir`); nothing happens if there is none."""
    resolved = status_dir(directory)
    if resolved is None:
        return
    try:
        os.unlink(_path(resolved, pid))
    except FileNotFoundError:
        pass


def read_snapshots(directory: Optional[str] = None, now: Optional[float] = None) -> List[Dict[str, Any]]:
    """The snapshots published in ``directory`` (default :func:`status_dir`),
    each with ``age`` (seconds since it was taken), ``stale`` and ``exited``
    (see the module docstring), by pid. Unreadable or half-gone files are skipped."""
    resolved = status_dir(directory)
    if resolved is None:
        return []
    now = time.time() if now is None else now
    try:
        names = os.listdir(resolved)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)):
            continue
        try:
            with open(os.path.join(resolved, name), "rb") as f:
                snapshot = json.loads(f.read())
            pid = int(snapshot["pid"])
            taken = float(snapshot["time"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        age = max(0.0, now - taken)
        exited = not _stats.alive(pid)
        if exited and age > FORGET_AFTER:
            continue
        interval = float(snapshot.get("interval") or PUBLISH_EVERY)
        snapshot.update(age=age, stale=age > STALE_AFTER * interval, exited=exited)
        found.append(snapshot)
    found.sort(key=lambda s: s["pid"])
    return found


def ui_data(supervisor: Optional[TaskSupervisor] = None, directory: Optional[str] = None) -> Dict[str, Any]:
    """What the page draws: ``{"time", "pid" (the answering process),
    "processes": [snapshot, ...]}`` — this process's live snapshot and the
    others' published ones (see :func:`read_snapshots`), by pid."""
    own = process_snapshot(supervisor)
    own.update(age=0.0, stale=False, exited=False)
    processes = [s for s in read_snapshots(directory) if s["pid"] != own["pid"]]
    processes.append(own)
    processes.sort(key=lambda s: s["pid"])
    return {"time": time.time(), "pid": own["pid"], "processes": processes}


def ui_app(supervisor: Optional[TaskSupervisor] = None, directory: Optional[str] = None) -> Callable[..., Any]:
    """A WSGI app: ``GET`` of its root answers the page, of ``/data`` the
    JSON of :func:`ui_data` (404 for anything else, 405 for other methods)."""
    from ._ui_page import PAGE

    page = PAGE.encode("utf-8")
    if directory is not None:
        status_dir(directory)  # (checks its type now)

    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        if method not in ("GET", "HEAD"):
            return _answer(start_response, method, "405 Method Not Allowed", "application/json",
                           b'{"error": "method not allowed"}', [("Allow", "GET, HEAD")])
        if path in ("", "/"):
            return _answer(start_response, method, "200 OK", "text/html; charset=utf-8", page)
        if path in ("/data", "/data/"):
            body = json.dumps(ui_data(supervisor, directory), default=repr).encode("utf-8")
            return _answer(start_response, method, "200 OK", "application/json", body)
        return _answer(start_response, method, "404 Not Found", "application/json", b'{"error": "not found"}')

    return app


def _answer(start_response: Callable[..., Any], method: str, status: str, content_type: str, body: bytes,
            extra: Optional[List[Any]] = None) -> List[bytes]:
    start_response(status, [("Content-Type", content_type), ("Cache-Control", "no-store"),
                            ("Content-Length", str(len(body)))] + (extra or []))
    return [b""] if method == "HEAD" else [body]
