"""Prometheus metrics of the workers (``pip install gworker[prometheus]``).

:class:`GworkerCollector` is a prometheus_client *collector*: register it in
a registry (:func:`register`, by default prometheus_client's ``REGISTRY``)
and every scrape reads these figures of one supervisor (label ``worker`` is
a worker's name, ``kind`` its kind as in ``get_info()``):

=========================================  ===========  ==========================================
``gworker_runs_total{worker,kind}``        counter      executor calls made
``gworker_failures_total{worker,kind}``    counter      calls that raised (each failed try of a
                                                        retried call counts)
``gworker_runs_missed_total{worker}``      counter      interval/cron runs skipped by
                                                        ``misfire_grace``
``gworker_run_timeouts_total{worker}``     counter      calls cut off by the worker's ``timeout``
``gworker_run_duration_seconds``           histogram    duration of each call, ``{worker,kind}``
``gworker_run_lateness_seconds{worker}``   histogram    start minus due time of each scheduled
                                                        interval/cron run
``gworker_last_success_timestamp_seconds`` gauge        end of the last call that returned,
                                                        ``{worker}`` (Unix time)
``gworker_queue_items{worker}``            gauge        items waiting in a queue worker's queue
``gworker_pool_slots_in_use{priority}``    gauge        thread-pool slots held, by priority
``gworker_pool_wait_seconds``              histogram    time a call or task waited in line for a
                                                        thread-pool slot (0 s: admitted at once)
``gworker_hub_lag_seconds``                gauge        the hub probe's largest recent lateness
                                                        (see :mod:`gworker.integrations.health`)
``gworker_redis_pending{stream,group}``    gauge        a Redis queue's entries delivered and not
                                                        acknowledged (``XPENDING``)
``gworker_redis_lag{stream,group}``        gauge        entries not yet delivered to the group
                                                        (Redis >= 7)
=========================================  ===========  ==========================================

**What a run pays.** The counters are the ones gworker keeps anyway, read
when asked; the slots in use are counted from their holders then, the Redis
figures read from Redis then (one round trip per queue, at most
:data:`REDIS_TIMEOUT` s). What cannot be read later is handed over by the
run's engine as the run ends (``Engine.stats``, given to every worker's
engine while a collector exists; without one a run pays one falsy test):
its duration, into a histogram of plain counters — a bisection and two
additions — and the end of the run if it returned; for a scheduled
interval/cron run, its lateness. In a queue worker's burst of items queued
back to back (its fast path) at most one run per millisecond is observed
(``gworker.workers._engine.SAMPLE_EVERY``), so a burst pays one comparison
per item: ``gworker_run_duration_seconds_count`` counts the runs observed,
``gworker_runs_total`` every run. Runs are not told to listeners for this
(a listener of ``run_finished`` would put every run on the events' path,
several times the cost of a fast run). The pool's wait is observed where a
slot is granted after a wait; the slots granted at once are counted by the
pool (one addition each) and are the histogram's 0 s.

**Several processes** (gunicorn's workers): set ``PROMETHEUS_MULTIPROC_DIR``
(a directory all of them share, emptied before the server starts, as
prometheus_client's multi-process mode asks) and call :func:`publish` in
each process after it started its workers —
:func:`gworker.integrations.gunicorn.install` does it in
``post_worker_init``. Each process then writes its figures there every
second (``gworker-metrics-<pid>-<id>.json``, replaced atomically), and a
scrape of any process shows the sum over all of them: counters and
histograms summed over every process that ever published (those that
exited included), gauges over the live ones (summed, except the hub lag and
the last success, their largest, and the Redis figures, read by the
answering process). A scrape writes the answering process's figures first
and then reads every file, so the other processes' figures are up to a
second old and a counter never goes back from one scrape to the next,
whichever process answers each; a process that stops gracefully writes its
last figures as it stops, one killed outright loses at most its last second. :func:`metrics_app` also
merges the application's own metrics from prometheus_client's files
(``MultiProcessCollector``). When a process has exited, gunicorn's
``child_exit`` hook calls :func:`mark_process_dead`: it folds the dead
process's file into one archive (``gworker-metrics-archive.json``), so
that gworker's files do not pile up with ``max_requests``, and calls
prometheus_client's own ``mark_process_dead`` for the application's live
gauges. (prometheus_client keeps the counter files of dead processes, by
design: their counts stay in the sums.)

Use your own registry::

    from prometheus_client import CollectorRegistry
    from gworker.integrations.metrics import register
    registry = CollectorRegistry()
    register(registry)                  # gworker's figures, in your exposition
"""
from __future__ import annotations

import json
import math
import os
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import gevent

try:
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client import multiprocess as _prom_multiprocess
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError("gworker.integrations.metrics needs prometheus_client: pip install 'gworker[prometheus]'") \
        from _exc

from .._errors import report
from ..supervisor import TaskSupervisor
from ._stats import DURATION_BUCKETS, LATENESS_BUCKETS, PRIORITY_NAMES, WAIT_BUCKETS, alive as _alive
from ._stats import recorder as _recorder

__all__ = [
    "GworkerCollector", "register", "metrics_app", "publish", "mark_process_dead", "multiprocess_dir",
    "DURATION_BUCKETS", "LATENESS_BUCKETS", "WAIT_BUCKETS", "PUBLISH_EVERY", "REDIS_TIMEOUT",
]

#: Seconds between two writes of a process's figures (multi-process mode).
PUBLISH_EVERY = 1.0
#: Seconds a Redis queue has to answer a scrape.
REDIS_TIMEOUT = 1.0


_PREFIX = "gworker-metrics-"
_ARCHIVE = "gworker-metrics-archive.json"
#: tokens of folded processes the archive remembers (a reader skips their files)
_FOLDED_KEEP = 10000


def multiprocess_dir() -> Optional[str]:
    """``$PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's own setting), or None."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None


# -- merging the processes' figures ------------------------------------------------------------
def _empty() -> Dict[str, Any]:
    return {"kinds": {}, "counters": {}, "durations": {}, "lateness": {}, "waits": {},
            "last_success": {}, "queue_items": {}, "slots_in_use": {}, "hub_lag": None}


def _add_hist(into: Dict[str, Any], key: str, value: List[Any]) -> None:
    mine = into.get(key)
    if mine is None:
        into[key] = [list(value[0]), value[1]]
        return
    counts = mine[0]
    for i, n in enumerate(value[0]):
        if i < len(counts):
            counts[i] += n
    mine[1] += value[1]


def _merge(into: Dict[str, Any], state: Dict[str, Any], live: bool) -> None:
    """Add ``state``'s counters and histograms to ``into``; its gauges only if ``live``."""
    for name, kind in state.get("kinds", {}).items():
        into["kinds"].setdefault(name, kind)
    for name, counts in state.get("counters", {}).items():
        mine = into["counters"].setdefault(name, [0, 0, 0, 0])
        for i, n in enumerate(counts[:4]):
            mine[i] += n
    for section in ("durations", "lateness", "waits"):
        for key, value in state.get(section, {}).items():
            _add_hist(into[section], key, value)
    for name, t in state.get("last_success", {}).items():
        if t > into["last_success"].get(name, 0.0):
            into["last_success"][name] = t
    if not live:
        return
    for section in ("queue_items", "slots_in_use"):
        for key, n in state.get(section, {}).items():
            into[section][key] = into[section].get(key, 0) + n
    lag = state.get("hub_lag")
    if lag is not None and (into["hub_lag"] is None or lag > into["hub_lag"]):
        into["hub_lag"] = lag


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def _merged(directory: str) -> Dict[str, Any]:
    """Every process's file plus the archive of the exited ones. Files are
    read before the archive, and a folded process's file is skipped: a process
    being folded meanwhile is counted once (the fold writes the archive first,
    then removes the file)."""
    files: List[Tuple[str, Dict[str, Any]]] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        names = []
    for name in names:
        if not name.startswith(_PREFIX) or not name.endswith(".json") or name == _ARCHIVE:
            continue
        token = name[len(_PREFIX):-len(".json")]
        state = _read_json(os.path.join(directory, name))
        if state is not None:
            files.append((token, state))
    archive = _read_json(os.path.join(directory, _ARCHIVE)) or {}
    folded = set(archive.get("folded", ()))
    into = _empty()
    if archive:
        _merge(into, archive, live=False)
    for token, state in files:
        if token in folded:
            continue
        _merge(into, state, live=int(state.get("pid", 0)) == os.getpid() or _alive(int(state.get("pid", 0))))
    return into


# -- the collector -----------------------------------------------------------------------------
def _hist_family(name: str, doc: str, labels: List[str], bounds: Tuple[float, ...],
                 series: Iterable[Tuple[List[str], List[int], float]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, counts, total in series:
        buckets = []
        running = 0
        for bound, n in zip(list(bounds) + [math.inf], counts):
            running += n
            buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), running))
        family.add_metric(values, buckets, total)
    return family


class GworkerCollector:
    """A prometheus_client collector of one supervisor's figures (default
    ``task_supervisor``; see the module docstring for the metrics).

    ``directory``: where the processes' figures are shared (default
    ``$PROMETHEUS_MULTIPROC_DIR``; None there: this process only).
    ``redis_timeout``: seconds each Redis queue has to answer a scrape.
    Making one installs the supervisor's listener (once per supervisor):
    durations and lateness are recorded from then on."""

    def __init__(self, supervisor: Optional[TaskSupervisor] = None, directory: Optional[str] = None,
                 redis_timeout: float = REDIS_TIMEOUT) -> None:
        if supervisor is not None and not isinstance(supervisor, TaskSupervisor):
            raise TypeError("supervisor must be a TaskSupervisor; got %r" % (supervisor,))
        if directory is not None and not isinstance(directory, (str, os.PathLike)):
            raise TypeError("directory must be a path; got %r" % (directory,))
        if isinstance(redis_timeout, bool) or not isinstance(redis_timeout, (int, float)):
            raise TypeError("redis_timeout must be a number of seconds; got %r" % (redis_timeout,))
        if not redis_timeout > 0:
            raise ValueError("redis_timeout must be more than 0 seconds; got %r" % (redis_timeout,))
        self._supervisor = supervisor
        self._directory = os.fspath(directory) if directory is not None else None
        self.redis_timeout = float(redis_timeout)
        self._recorder = _recorder(supervisor)

    @property
    def directory(self) -> Optional[str]:
        """Where the processes' figures are merged from, or None."""
        return self._directory if self._directory is not None else multiprocess_dir()

    def describe(self) -> List[Any]:
        """Nothing: the families are known at scrape time (prometheus_client
        then does not run a scrape when the collector is registered)."""
        return []

    def collect(self) -> Iterable[Any]:
        """The metric families, read now (see the module docstring)."""
        directory = self.directory
        if directory:
            # Every process's figures from the files, this one's written first:
            # each file only grows, so that scrapes answered by different
            # processes never see a counter go back (this process's live
            # figures beside another's older file would, at the next scrape
            # answered by that other process).
            running = _running.get(os.getpid())
            if running is None or running.directory != directory:
                publish(self._recorder.supervisor, directory)
            else:
                running.write()
            state = _merged(directory)
        else:
            state = _merged_own(self._recorder.state())
        kinds = state["kinds"]
        counters = state["counters"]
        for i, (name, doc) in enumerate((
                ("gworker_runs", "Executor calls made."),
                ("gworker_failures", "Executor calls that raised (each failed try of a retried call)."))):
            family = CounterMetricFamily(name, doc, labels=["worker", "kind"])
            for worker, counts in sorted(counters.items()):
                family.add_metric([worker, kinds.get(worker, "worker")], counts[i])
            yield family
        for i, (name, doc) in enumerate((
                ("gworker_runs_missed", "Scheduled runs skipped by misfire_grace."),
                ("gworker_run_timeouts", "Executor calls cut off by the worker's timeout.")), start=2):
            family = CounterMetricFamily(name, doc, labels=["worker"])
            for worker, counts in sorted(counters.items()):
                if counts[i] or kinds.get(worker) == "interval" or i == 3:
                    family.add_metric([worker], counts[i])
            yield family
        yield _hist_family(
            "gworker_run_duration_seconds", "Duration of executor calls.", ["worker", "kind"], DURATION_BUCKETS,
            [([w, kinds.get(w, "worker")], h[0], h[1]) for w, h in sorted(state["durations"].items())])
        yield _hist_family(
            "gworker_run_lateness_seconds", "Start minus due time of scheduled interval and cron runs.",
            ["worker"], LATENESS_BUCKETS, [([w], h[0], h[1]) for w, h in sorted(state["lateness"].items())])
        yield _hist_family("gworker_pool_wait_seconds", "Time spent waiting in line for a thread-pool slot.",
                           [], WAIT_BUCKETS, [([], h[0], h[1]) for h in state["waits"].values()])
        gauges: List[Tuple[str, str, List[str], List[Tuple[List[str], float]]]] = [
            ("gworker_last_success_timestamp_seconds", "End of the last executor call that returned (Unix time).",
             ["worker"], [([w], t) for w, t in sorted(state["last_success"].items())]),
            ("gworker_queue_items", "Items waiting in a queue worker's queue.",
             ["worker"], [([w], n) for w, n in sorted(state["queue_items"].items())]),
            ("gworker_pool_slots_in_use", "Thread-pool slots held, by priority.",
             ["priority"], [([p], state["slots_in_use"].get(p, 0)) for p in PRIORITY_NAMES.values()]),
            ("gworker_hub_lag_seconds", "The largest recent lateness of the hub probe (seconds).",
             [], [] if state["hub_lag"] is None else [([], state["hub_lag"])]),
        ]
        for name, doc, labels, series in gauges:
            gauge = GaugeMetricFamily(name, doc, labels=labels)
            for values, value in series:
                gauge.add_metric(values, value)
            yield gauge
        yield from self._redis()

    def _redis(self) -> Iterable[Any]:
        pending = GaugeMetricFamily("gworker_redis_pending",
                                    "Entries of a Redis queue's group delivered and not acknowledged.",
                                    labels=["stream", "group"])
        lag = GaugeMetricFamily("gworker_redis_lag", "Entries of a Redis stream not yet delivered to the group.",
                                labels=["stream", "group"])
        from .health import _is_redis_queue

        seen = set()
        for worker in list(self._recorder.supervisor.get_schedulers()):
            get_queue = getattr(worker, "get_queue_obj", None)
            q = get_queue() if get_queue is not None else None
            if q is None or not _is_redis_queue(q) or (q.stream, q.group) in seen:
                continue
            seen.add((q.stream, q.group))
            try:
                with gevent.Timeout(self.redis_timeout):
                    n = q.pending()
                    behind = q.lag()
            except (Exception, gevent.Timeout):
                continue  # (unreachable: /_gworker/readyz says so; no figure rather than a wrong one)
            pending.add_metric([q.stream, q.group], n)
            if behind is not None:
                lag.add_metric([q.stream, q.group], behind)
        yield pending
        yield lag


def _merged_own(own: Dict[str, Any]) -> Dict[str, Any]:
    into = _empty()
    _merge(into, own, live=True)
    return into


def register(registry: Any = None, supervisor: Optional[TaskSupervisor] = None,
             directory: Optional[str] = None) -> GworkerCollector:
    """Register a :class:`GworkerCollector` of ``supervisor`` in ``registry``
    (default: prometheus_client's ``REGISTRY``) and return it."""
    collector = GworkerCollector(supervisor, directory)
    (REGISTRY if registry is None else registry).register(collector)
    return collector


def metrics_app(supervisor: Optional[TaskSupervisor] = None, registry: Any = None) -> Callable[..., Any]:
    """A WSGI app answering ``GET`` with the Prometheus text exposition:
    ``registry`` if given (gworker's collector is added to it once), else,
    with ``$PROMETHEUS_MULTIPROC_DIR`` set, a registry made per scrape of
    prometheus_client's ``MultiProcessCollector`` (the application's own
    metrics, from every process) and gworker's merged figures; without it,
    prometheus_client's ``REGISTRY`` with gworker's collector."""
    collector_box: List[GworkerCollector] = []

    def exposition() -> bytes:
        if registry is not None:
            if not collector_box:
                collector_box.append(register(registry, supervisor))
            return generate_latest(registry)
        directory = multiprocess_dir()
        if directory:
            scrape = CollectorRegistry()
            _prom_multiprocess.MultiProcessCollector(scrape, path=directory)
            scrape.register(GworkerCollector(supervisor, directory))
            return generate_latest(scrape)
        if not collector_box:
            collector_box.append(register(REGISTRY, supervisor))
        return generate_latest(REGISTRY)

    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            body = b'{"error": "method not allowed"}'
            start_response("405 Method Not Allowed", [("Content-Type", "application/json"), ("Allow", "GET, HEAD"),
                                                      ("Content-Length", str(len(body)))])
            return [body]
        body = exposition()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Cache-Control", "no-store"),
                                  ("Content-Length", str(len(body)))])
        return [b""] if method == "HEAD" else [body]

    return app


# -- publishing (multi-process mode) -----------------------------------------------------------
class _Publisher:
    def __init__(self, supervisor: Optional[TaskSupervisor], directory: str, interval: float) -> None:
        self.recorder = _recorder(supervisor)
        self.directory = directory
        self.interval = interval
        self.token = "%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
        self.path = os.path.join(directory, "%s%s.json" % (_PREFIX, self.token))
        self.greenlet: Optional[gevent.Greenlet] = None

    def write(self) -> None:
        data = json.dumps(self.recorder.state()).encode("utf-8")
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.path)

    def loop(self) -> None:
        while True:
            gevent.sleep(self.interval)
            try:
                self.write()
            except Exception:
                report("metrics: cannot write %s", self.path)


_running: Dict[int, _Publisher] = {}


def publish(supervisor: Optional[TaskSupervisor] = None, directory: Optional[str] = None,
            interval: float = PUBLISH_EVERY) -> Callable[[], None]:
    """Write this process's figures into ``directory`` (default
    ``$PROMETHEUS_MULTIPROC_DIR``) now and every ``interval`` seconds, from a
    greenlet, until the returned ``stop()`` is called (which writes them once
    more: a process that stops gracefully loses nothing). Once per process: a
    second call returns the first one's ``stop``. Call it in the hub's thread."""
    if isinstance(interval, bool) or not isinstance(interval, (int, float)):
        raise TypeError("interval must be a number of seconds; got %r" % (interval,))
    if not interval > 0:
        raise ValueError("interval must be more than 0 seconds; got %r" % (interval,))
    if directory is not None and not isinstance(directory, (str, os.PathLike)):
        raise TypeError("directory must be a path; got %r" % (directory,))
    resolved = os.fspath(directory) if directory is not None else multiprocess_dir()
    if not resolved:
        raise ValueError("directory: none given, and PROMETHEUS_MULTIPROC_DIR is not set")
    pid = os.getpid()
    running = _running.get(pid)
    if running is None:
        os.makedirs(resolved, exist_ok=True)
        running = _running[pid] = _Publisher(supervisor, resolved, float(interval))
        running.write()
        running.greenlet = gevent.spawn(running.loop)
    publisher = running

    def stop() -> None:
        glet, publisher.greenlet = publisher.greenlet, None
        if glet is not None:
            glet.kill(block=True, timeout=1)
        if _running.get(os.getpid()) is publisher:
            del _running[os.getpid()]
            try:
                publisher.write()  # the last figures: child_exit folds them
            except Exception:
                report("metrics: cannot write %s", publisher.path)

    return stop


def mark_process_dead(pid: int, directory: Optional[str] = None) -> None:
    """Process ``pid`` has exited: fold its figures into the archive of
    ``directory`` (default ``$PROMETHEUS_MULTIPROC_DIR``), remove its files,
    and call prometheus_client's ``multiprocess.mark_process_dead(pid)`` for
    the application's live gauges. Run it in one process at a time (gunicorn's
    master, from ``child_exit``)."""
    resolved = os.fspath(directory) if directory is not None else multiprocess_dir()
    if not resolved:
        return
    try:
        names = os.listdir(resolved)
    except FileNotFoundError:
        return
    mine = [n for n in names if n.startswith("%s%d-" % (_PREFIX, pid)) and n.endswith(".json")]
    if mine:
        archive_path = os.path.join(resolved, _ARCHIVE)
        archive = _read_json(archive_path) or {}
        merged = _empty()
        _merge(merged, archive, live=False)
        folded = list(archive.get("folded", ()))
        for name in mine:
            state = _read_json(os.path.join(resolved, name))
            if state is not None:
                _merge(merged, state, live=False)
            folded.append(name[len(_PREFIX):-len(".json")])
        merged = {k: merged[k] for k in ("kinds", "counters", "durations", "lateness", "waits", "last_success")}
        merged["folded"] = folded[-_FOLDED_KEEP:]
        tmp = archive_path + ".%d.tmp" % os.getpid()
        with open(tmp, "w") as f:
            json.dump(merged, f)
        os.replace(tmp, archive_path)  # first the archive, then the files it holds
        for name in mine:
            for path in (os.path.join(resolved, name), os.path.join(resolved, name + ".tmp")):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
    _prom_multiprocess.mark_process_dead(pid, resolved)
