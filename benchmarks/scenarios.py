"""The scenarios: what is measured, against what, and the targets (issue 6).

Each :class:`Scenario` has *parts*, each a function ``part(quick) -> dict`` of
figures, run in a fresh subprocess of its own (so RSS and hub state are clean);
and *rows*: the lines of the table, computed from the medians of those figures
(keys ``"part.figure"``).

A part function imports gevent and gworker inside itself: the child process
monkey-patches (when the scenario says so) before anything imports them.

Adding a scenario: write its part
functions here, each returning a flat dict of numbers, and append a
``Scenario(...)`` to ``REGISTRY`` at the bottom with its rows. Register only
what really measures: a scenario that is not ready is simply not listed.
"""
from __future__ import annotations

import gc
import os
import statistics
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["Scenario", "Row", "REGISTRY", "get"]

Figures = Dict[str, Any]


@dataclass
class Row:
    """One line of the table.

    ``ours`` and ``bases`` are keys ``"part.figure"``; the ratio is
    ``ours / bases[0]``; ``met(m)`` gets the medians and says whether the
    target is met (None: cannot tell, e.g. a baseline was skipped)."""

    metric: str
    unit: str
    ours: str
    bases: Sequence[str]
    target: str
    met: Callable[[Figures], Optional[bool]]


@dataclass
class Scenario:
    name: str
    title: str
    patched: bool
    parts: Dict[str, Callable[[bool], Figures]]
    rows: List[Row] = field(default_factory=list)
    #: parts that run un-patched even though ``patched`` is True (e.g. a stock
    #: ``multiprocessing`` baseline, which hangs in a patched process)
    plain_parts: Sequence[str] = ()
    #: figures computed from the medians (``{"part.figure": value}``, merged into
    #: them before the rows are), for a row that compares two parts' medians
    derived: Optional[Callable[[Figures], Figures]] = None

    def part_patched(self, part: str) -> bool:
        return self.patched and part not in self.plain_parts

    @property
    def world(self) -> str:
        world = "patched" if self.patched else "plain"
        if self.patched and self.plain_parts:
            world += " (%s: plain)" % ", ".join(self.plain_parts)
        return world


# -- helpers used inside the children ---------------------------------------------------------

def rss() -> int:
    """Resident set size of this process, in bytes, after a full collection."""
    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss


def percentile(values: Sequence[float], q: float) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


class LagMeter:
    """A ticker greenlet: how late the hub runs it (max and p99, seconds)."""

    def __init__(self, period: float = 0.005) -> None:
        import gevent

        self.period = period
        self.samples: List[tuple] = []  # (expected, woke)
        self.excluded: List[tuple] = []
        self.rebased: List[tuple] = []
        self._glet = gevent.spawn(self._tick)

    def _tick(self) -> None:
        import gevent

        period = self.period
        while True:
            expected = time.monotonic() + period
            gevent.sleep(period)
            self.samples.append((expected, time.monotonic()))

    def measure_aside(self, fn: Callable[[], Any], rebase: bool = False) -> Any:
        """Call ``fn`` (which blocks the hub: the benchmark's own ``gc.collect()``
        for an RSS reading) and leave the ticks it delayed out of the figures.

        With ``rebase``, a tick that ``fn`` delayed is not left out but counted
        from ``fn``'s end: the benchmark's own loop starting many workers is not
        lag, but what the hub does right after it (the first round of the runs
        it started) is."""
        start = time.monotonic()
        try:
            return fn()
        finally:
            (self.rebased if rebase else self.excluded).append((start, time.monotonic()))

    def stop(self) -> Figures:
        """Stop the ticker; its worst and p99 lateness, in milliseconds."""
        self._glet.kill()
        late = []
        for expected, woke in self.samples:
            if any(a <= woke and expected <= b for a, b in self.excluded):
                continue
            for a, b in self.rebased:
                if a <= woke and expected <= b:
                    expected = max(expected, b)
            late.append(max(0.0, woke - expected))
        late = late or [0.0]
        return {"lag_max_ms": max(late) * 1e3, "lag_p99_ms": percentile(late, 0.99) * 1e3}


def cpu_per_run(total_runs: Callable[[], int], seconds: float) -> Figures:
    """Process CPU over the next ``seconds`` (the caller's greenlet sleeps; the
    hub runs whatever is scheduled): ``cpu_pct`` (% of one core) and
    ``cpu_us_per_run``, the CPU over the runs made meanwhile (``total_runs()``
    read before and after, outside the timed span).

    Run it with nothing of the benchmark's own going on, the lag ticker
    stopped first: on a small VM every wake-up of a process costs ~50 µs of
    kernel time, so a 5 ms ticker alone is ~3 % of a core: ~28 µs more per run
    at 1,000 one-second workers."""
    import gevent

    runs0 = total_runs()
    cpu0, wall0 = time.process_time(), time.monotonic()
    gevent.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    runs = total_runs() - runs0
    figures = {"cpu_pct": 100.0 * cpu / wall, "cpu_runs": runs}
    if runs:
        figures["cpu_us_per_run"] = cpu / runs * 1e6
    return figures


def _apscheduler_missing() -> Optional[str]:
    try:
        import apscheduler  # noqa: F401
        from apscheduler.schedulers.gevent import GeventScheduler  # noqa: F401
    except ImportError:
        return "APScheduler not installed (pip install .[bench])"
    return None


def _quiet_apscheduler() -> None:
    import logging

    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)


def _aps_now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def _ratio(m: Figures, a: str, b: str) -> Optional[float]:
    x, y = m.get(a), m.get(b)
    if not isinstance(x, (int, float)) or not isinstance(y, (int, float)) or not y:
        return None
    return x / y


def _diff(m: Figures, a: str, b: str) -> Optional[float]:
    """``m[a] - m[b]``, or None when either is not a number (skipped, failed)."""
    x, y = m.get(a), m.get(b)
    if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
        return None
    return x - y


def _cmp(value: Any, ok: Callable[[float], bool]) -> Optional[bool]:
    if not isinstance(value, (int, float)):
        return None
    return bool(ok(value))


# == 1. queue worker ==========================================================================

def _queue_n(quick: bool) -> int:
    return 20_000 if quick else 100_000


def _drain_queue_worker(sup: Any, worker: Any, n: int, done: Any) -> Figures:
    """Put ``n`` items from the hub, time until the executor set ``done``, and
    measure the hub's lag while the worker drains; stop the worker and ``sup``."""
    import gevent

    worker.start()
    gevent.sleep(0.03)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n):
        worker.put_threadsafe(i)
    lag = LagMeter()  # the drain: the loop above never yields, put() does not switch
    done.wait()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0  # includes the lag ticker's few ticks: < 1 % of a drain
    figures = lag.stop()
    worker.stop()
    sup.stop()
    figures["items_per_s"] = n / elapsed
    figures["cpu_us_per_item"] = cpu / n * 1e6
    return figures


def _metrics_on(sup: Any) -> None:
    """gworker's Prometheus metrics on for ``sup`` (issue 21): a collector in a
    registry of its own, scraped once (as a server would be), before the workers start."""
    from prometheus_client import CollectorRegistry, generate_latest

    from gworker.integrations.metrics import register

    registry = CollectorRegistry()
    register(registry, sup, directory=None)
    generate_latest(registry)


def _prometheus_missing() -> Optional[str]:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return "prometheus_client not installed (pip install .[prometheus])"
    return None


def _run_listener_on(sup: Any) -> None:
    """A no-op listener of every run's end: what metrics built on the run
    events would cost at the least (see gworker.integrations.metrics)."""
    from gworker.events import RUN_FINISHED

    sup.add_listener(lambda event: None, events=(RUN_FINISHED,))


def _bench_supervisor(extra: Optional[Callable[[Any], None]] = None) -> Any:
    from gworker import TaskSupervisor

    sup = TaskSupervisor("bench")
    sup.start()
    if extra is not None:
        extra(sup)
    return sup


def _counting_queue_worker(sup: Any, n: int) -> Tuple[Any, Any, List[int]]:
    """A queue worker on ``sup`` (not started), whose executor counts its items in
    ``count[0]`` and sets ``done`` at the ``n``-th; returns ``(worker, done, count)``."""
    from gevent.event import Event

    from gworker import BackgroundQueueWorker

    done = Event()
    count = [0]

    def run(task, **kwargs):
        count[0] += 1
        if count[0] == n:
            done.set()

    return BackgroundQueueWorker(func=run, supervisor=sup), done, count


def queue_gworker(quick: bool, extra: Optional[Callable[[Any], None]] = None) -> Figures:
    n = _queue_n(quick)
    sup = _bench_supervisor(extra)
    worker, done, _ = _counting_queue_worker(sup, n)
    return _drain_queue_worker(sup, worker, n, done)


def _queue_side(extra: Optional[Callable[[Any], None]], n: int) -> Tuple[Any, Any, List[int]]:
    """A started :func:`_counting_queue_worker` on a supervisor of its own
    (``count`` is reset for each round)."""
    worker, done, count = _counting_queue_worker(_bench_supervisor(extra), n)
    worker.start()
    return worker, done, count


def queue_metrics(quick: bool) -> Figures:
    """Metrics off and on in one process: two queue workers, each on a
    supervisor of its own (one with gworker's metrics on), drained in turns
    (``off, on, on, off, off, on, …``). The machine's speed swings by up to 2×
    from one process to the next (a drain of the same code at 1.0 or 2.0 M
    items/s); in turns within one process both sides see the same spell, so
    the ratio shows what the metrics cost, not which process was lucky.
    ``items_per_s`` (metrics on) and ``off_items_per_s``: medians of the drains."""
    import gevent

    missing = _prometheus_missing()
    if missing:
        return {"skipped": missing}
    n = _queue_n(quick)
    sides = {"off": _queue_side(None, n), "on": _queue_side(_metrics_on, n)}
    gevent.sleep(0.03)
    rates: Dict[str, List[float]] = {"off": [], "on": []}
    for r in range(4 if quick else 8):
        for side in ("off", "on") if r % 2 == 0 else ("on", "off"):
            worker, done, count = sides[side]
            done.clear()
            count[0] = 0
            t0 = time.perf_counter()
            for i in range(n):
                worker.put_threadsafe(i)
            done.wait()
            rates[side].append(n / (time.perf_counter() - t0))
    for worker, _, _ in sides.values():
        worker.stop()
        worker.supervisor.stop()
    return {"items_per_s": statistics.median(rates["on"]), "off_items_per_s": statistics.median(rates["off"])}


def queue_listener(quick: bool) -> Figures:
    return queue_gworker(quick, _run_listener_on)


def queue_raw(quick: bool) -> Figures:
    import gevent
    import gevent.queue
    from gevent.event import Event

    n = _queue_n(quick)
    q = gevent.queue.Queue()
    done = Event()

    def loop():
        count = 0
        while True:
            q.get()
            count += 1
            if count == n:
                done.set()
                return

    gevent.spawn(loop)
    gevent.sleep(0.03)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n):
        q.put(i)
    done.wait()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    return {"items_per_s": n / elapsed, "cpu_us_per_item": cpu / n * 1e6}


# == 2. event trigger from a native OS thread ===================================================

def _trigger_latencies(fire: Callable[[], None], stamps: List[float], ready, quick: bool) -> List[float]:
    """From a native OS thread, call ``fire()`` n times, each time waiting for the
    receiver (in the hub) to append its perf_counter() to ``stamps`` and release
    ``ready`` (an original OS lock, held); return send → receive latencies."""
    import gevent
    from gevent.event import Event
    from gevent.monkey import get_original

    start_new_thread = get_original("_thread", "start_new_thread")
    os_sleep = get_original("time", "sleep")
    n = 200 if quick else 1000
    warmup = 20
    hub = gevent.get_hub()
    finished = Event()
    sent: List[float] = []

    def thread():
        try:
            for _ in range(n + warmup):
                sent.append(time.perf_counter())
                fire()
                if not ready.acquire(True, 5.0):
                    break
                os_sleep(0.001)
        finally:
            hub.loop.run_callback_threadsafe(finished.set)

    start_new_thread(thread, ())
    finished.wait(60)
    lat = [r - s for s, r in zip(sent, stamps)][warmup:]
    return lat


def _latency_figures(lat: List[float], cpu: float, triggers: int) -> Figures:
    """Latency median and p99; and the process CPU (``cpu`` seconds, both
    threads: the OS thread that fires is in this process) per trigger received."""
    return {
        "median_us": statistics.median(lat) * 1e6,
        "p99_us": percentile(lat, 0.99) * 1e6,
        "samples": len(lat),
        "cpu_us_per_trigger": cpu / triggers * 1e6,
    }


def event_gworker(quick: bool, extra: Optional[Callable[[Any], None]] = None) -> Figures:
    import gevent
    from gevent.monkey import get_original

    from gworker import BackgroundEventWorker

    ready = get_original("_thread", "allocate_lock")()
    ready.acquire()
    stamps: List[float] = []

    def run(**kwargs):
        stamps.append(time.perf_counter())
        ready.release()

    sup = _bench_supervisor(extra)
    worker = BackgroundEventWorker(func=run, supervisor=sup)
    worker.start()
    gevent.sleep(0.01)
    cpu0 = time.process_time()
    lat = _trigger_latencies(worker.trigger_threadsafe, stamps, ready, quick)
    cpu = time.process_time() - cpu0
    worker.stop()
    sup.stop()
    return _latency_figures(lat, cpu, len(stamps))


def event_metrics(quick: bool) -> Figures:
    missing = _prometheus_missing()
    if missing:
        return {"skipped": missing}
    return event_gworker(quick, _metrics_on)


def _bare_receiver(quick: bool, wire: Callable[[Callable[[], None]], Tuple[Callable[[], None], Any]]) -> Figures:
    """The latency figures of a bare receiver — a callback in the hub that
    stamps and releases the sender — reached by what ``wire(callback)`` sets
    up: it returns ``(fire, close)``, the sender's call and what undoes the
    set-up (or None)."""
    from gevent.monkey import get_original

    ready = get_original("_thread", "allocate_lock")()
    ready.acquire()
    stamps: List[float] = []

    def callback():
        stamps.append(time.perf_counter())
        ready.release()

    fire, close = wire(callback)
    cpu0 = time.process_time()
    lat = _trigger_latencies(fire, stamps, ready, quick)
    cpu = time.process_time() - cpu0
    if close is not None:
        close()
    return _latency_figures(lat, cpu, len(stamps))


def event_raw(quick: bool) -> Figures:
    """gevent's own way from a thread into the hub: ``loop.run_callback_threadsafe``."""
    import gevent

    loop = gevent.get_hub().loop
    return _bare_receiver(quick, lambda callback: (lambda: loop.run_callback_threadsafe(callback), None))


def event_raw_async(quick: bool) -> Figures:
    """The cheapest way from a native thread into the hub: a libev async
    watcher of one's own, whose callback is the receiver (an event worker's
    trigger from a thread takes this way: its watcher's callback is the
    worker greenlet's switch; see gworker.workers.event)."""
    import gevent

    def wire(callback: Callable[[], None]) -> Tuple[Callable[[], None], Any]:
        watcher = gevent.get_hub().loop.async_()
        watcher.start(callback)
        return watcher.send, watcher.close

    return _bare_receiver(quick, wire)


# == 3. one 10 ms interval worker ==============================================================

PERIOD = 0.010


def _duration(quick: bool) -> float:
    return 1.0 if quick else 3.0


def _interval_figures(starts: List[float], duration: float, cpu: float, wall: float) -> Figures:
    """The schedule's figures over the first ``duration`` seconds of runs, and
    the process CPU (``cpu`` seconds over ``wall``) per run: all runs made while
    the CPU was counted, including the few past the window."""
    if not starts:
        return {"runs": 0}
    t0 = starts[0]
    window = [s for s in starts if s < t0 + duration - PERIOD / 2]
    gaps = [b - a for a, b in zip(window, window[1:])]
    drift = [abs(s - (t0 + k * PERIOD)) for k, s in enumerate(window)]
    return {
        "runs": len(window),
        "ideal_runs": round(duration / PERIOD),
        "mean_gap_err_ms": statistics.fmean(abs(g - PERIOD) for g in gaps) * 1e3,
        "drift_p99_ms": percentile(drift, 0.99) * 1e3,
        "cpu_pct": 100.0 * cpu / wall,
        "cpu_us_per_run": cpu / len(starts) * 1e6,
    }


def _interval_gworker(quick: bool, precise: bool, extra: Optional[Callable[[Any], None]] = None) -> Figures:
    import gevent

    from gworker import BackgroundIntervalWorker

    duration = _duration(quick)
    starts: List[float] = []

    def run(**kwargs):
        starts.append(time.monotonic())

    sup = _bench_supervisor(extra)
    worker = BackgroundIntervalWorker(func=run, interval=PERIOD, precise=precise, supervisor=sup)
    gevent.sleep(0.05)
    cpu0, wall0 = time.process_time(), time.monotonic()
    worker.start()
    gevent.sleep(duration + 0.03)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    worker.stop()
    sup.stop()
    return _interval_figures(starts, duration, cpu, wall)


def interval_gworker(quick: bool) -> Figures:
    return _interval_gworker(quick, precise=False)


def interval_precise(quick: bool) -> Figures:
    return _interval_gworker(quick, precise=True)


def interval_metrics(quick: bool) -> Figures:
    missing = _prometheus_missing()
    if missing:
        return {"skipped": missing}
    return _interval_gworker(quick, precise=False, extra=_metrics_on)


def _interval_raw(quick: bool, spin: float) -> Figures:
    """A greenlet on a monotonic 10 ms schedule: it sleeps to ``spin`` seconds
    before each time, then (if ``spin``) yields with ``gevent.sleep(0)`` until due."""
    import gevent

    duration = _duration(quick)
    starts: List[float] = []

    def loop():
        t0 = time.monotonic()
        k = 0
        while True:
            starts.append(time.monotonic())
            k += 1
            due = t0 + k * PERIOD
            gevent.sleep(max(0.0, due - spin - time.monotonic()))
            while spin and time.monotonic() < due:
                gevent.sleep(0)

    gevent.sleep(0.05)
    cpu0, wall0 = time.process_time(), time.monotonic()
    glet = gevent.spawn(loop)
    gevent.sleep(duration + 0.03)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    glet.kill()
    return _interval_figures(starts, duration, cpu, wall)


def interval_raw(quick: bool) -> Figures:
    return _interval_raw(quick, 0.0)


def interval_raw_precise(quick: bool) -> Figures:
    """The raw technique precise mode is measured against: sleep to 1 ms
    before each time, then yield until it is due."""
    return _interval_raw(quick, 0.001)


def interval_apscheduler(quick: bool) -> Figures:
    missing = _apscheduler_missing()
    if missing:
        return {"skipped": missing}
    import gevent
    from apscheduler.schedulers.gevent import GeventScheduler

    _quiet_apscheduler()
    duration = _duration(quick)
    starts: List[float] = []

    def run():
        starts.append(time.monotonic())

    sched = GeventScheduler()
    gevent.sleep(0.05)
    cpu0, wall0 = time.process_time(), time.monotonic()
    sched.add_job(run, "interval", seconds=PERIOD, next_run_time=_aps_now())
    sched.start()
    gevent.sleep(duration + 0.03)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    sched.shutdown(wait=False)
    return _interval_figures(starts, duration, cpu, wall)


# == 4. 10,000 interval workers at 1 s ============================================================

def _many(quick: bool) -> int:
    return 2_000 if quick else 10_000


MANY_WINDOW = 3.5
MANY_IDEAL_PER = 4  # runs at 0, 1, 2 and 3 s
#: after the window, with the lag ticker stopped: seconds of steady running whose
#: process CPU is divided by the runs made in them (two rounds; --quick: one)
CPU_WINDOW = 2.0


def _cpu_window(quick: bool) -> float:
    return 1.0 if quick else CPU_WINDOW


def _many_interval_common(start_all: Callable[[], None], stop_all: Callable[[], None],
                          count: List[int], n: int, quick: bool) -> Figures:
    import gevent

    window = 1.5 if quick else MANY_WINDOW
    ideal_per = 2 if quick else MANY_IDEAL_PER
    gevent.sleep(0.05)
    lag = LagMeter()
    rss0 = rss()
    t0 = time.monotonic()
    start_all()
    started = time.monotonic() - t0
    # idle: after the first round of runs, before the second
    gevent.sleep(max(0.0, t0 + 0.75 - time.monotonic()))
    rss1 = lag.measure_aside(rss)
    gevent.sleep(max(0.0, t0 + window - time.monotonic()))
    runs = count[0]
    figures = lag.stop()
    figures.update(cpu_per_run(lambda: count[0], _cpu_window(quick)))  # after: the figures above unchanged
    stop_all()
    figures.update({
        "start_s": started,
        "rss_per_kib": (rss1 - rss0) / n / 1024,
        "runs_pct": 100.0 * runs / (n * ideal_per),
    })
    return figures


def many_interval_gworker(quick: bool) -> Figures:
    from gworker import BackgroundIntervalWorker, TaskSupervisor

    n = _many(quick)
    count = [0]

    def run(**kwargs):
        count[0] += 1

    sup = TaskSupervisor("bench")
    sup.start()
    workers: List[Any] = []

    def start_all():
        for _ in range(n):
            w = BackgroundIntervalWorker(func=run, interval=1, supervisor=sup)
            w.start()
            workers.append(w)

    def stop_all():
        sup.stop()

    return _many_interval_common(start_all, stop_all, count, n, quick)


def many_interval_raw(quick: bool) -> Figures:
    import gevent

    n = _many(quick)
    count = [0]
    glets: List[Any] = []

    def loop():
        while True:
            count[0] += 1
            gevent.sleep(1)

    def start_all():
        for _ in range(n):
            glets.append(gevent.spawn(loop))

    def stop_all():
        gevent.killall(glets)

    return _many_interval_common(start_all, stop_all, count, n, quick)


def many_interval_apscheduler(quick: bool) -> Figures:
    missing = _apscheduler_missing()
    if missing:
        return {"skipped": missing}
    from apscheduler.schedulers.gevent import GeventScheduler

    _quiet_apscheduler()
    n = _many(quick)
    count = [0]

    def run():
        count[0] += 1

    # misfire_grace_time=None: a late run still runs (the default, 1 s, drops it)
    sched = GeventScheduler(job_defaults={"misfire_grace_time": None})

    def start_all():
        now = _aps_now()
        for _ in range(n):  # added before start(): much faster than into a running scheduler
            sched.add_job(run, "interval", seconds=1, next_run_time=now)
        sched.start()

    def stop_all():
        sched.shutdown(wait=False)

    return _many_interval_common(start_all, stop_all, count, n, quick)


# == 5. 10,000 sync BackgroundWorkers sleeping ====================================================

def _sleepers_common(start_all: Callable[[], None], n: int) -> Figures:
    import gevent

    gevent.sleep(0.05)
    rss0 = rss()
    t0 = time.monotonic()
    start_all()
    started = time.monotonic() - t0
    gevent.sleep(1.5)  # every one has run (and slept) at least once: steady state
    rss1 = rss()
    return {"start_s": started, "rss_per_kib": (rss1 - rss0) / n / 1024}


def sleepers_gworker(quick: bool) -> Figures:
    import gevent

    from gworker import BackgroundWorker, TaskSupervisor

    n = _many(quick)

    def run(**kwargs):
        gevent.sleep(1)

    sup = TaskSupervisor("bench")
    sup.start()
    workers: List[Any] = []

    def start_all():
        for _ in range(n):
            w = BackgroundWorker(func=run, supervisor=sup)
            w.start()
            workers.append(w)

    figures = _sleepers_common(start_all, n)
    sup.stop(wait=False)
    return figures


def sleepers_raw(quick: bool) -> Figures:
    import gevent

    n = _many(quick)
    glets: List[Any] = []

    def loop():
        while True:
            gevent.sleep(1)

    def start_all():
        for _ in range(n):
            glets.append(gevent.spawn(loop))

    figures = _sleepers_common(start_all, n)
    gevent.killall(glets)
    return figures


# == 6. put_task through a pool of 100 ===========================================================

def _tasks_n(quick: bool) -> int:
    return 2_000 if quick else 10_000


def tasks_gworker(quick: bool) -> Figures:
    import gevent
    from gevent.event import Event

    from gworker import TASK_HIGH, TASK_LOW, TASK_NORMAL, TaskSupervisor

    n = _tasks_n(quick)
    priorities = (TASK_LOW, TASK_NORMAL, TASK_HIGH)
    done = Event()
    count = [0]

    def target(**kwargs):
        gevent.sleep(0)
        count[0] += 1
        if count[0] == n:
            done.set()

    sup = TaskSupervisor("bench")
    sup.start()
    sup.set_thread_pool(pool_size=100, reserve_normal=0, reserve_high=0)
    gevent.sleep(0.03)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n):
        sup.put_task(target, priority=priorities[i % 3])
    done.wait()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    sup.stop()
    return {"tasks_per_s": n / elapsed, "cpu_us_per_task": cpu / n * 1e6}


def tasks_raw(quick: bool) -> Figures:
    import gevent
    import gevent.pool
    from gevent.event import Event

    n = _tasks_n(quick)
    done = Event()
    count = [0]

    def target():
        gevent.sleep(0)
        count[0] += 1
        if count[0] == n:
            done.set()

    pool = gevent.pool.Pool(100)
    gevent.sleep(0.03)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(n):
        pool.spawn(target)
    done.wait()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    pool.join()
    return {"tasks_per_s": n / elapsed, "cpu_us_per_task": cpu / n * 1e6}


# == 7. queue worker, async executor =================================================================

def async_queue_gworker(quick: bool) -> Figures:
    from gevent.event import Event

    from gworker import BackgroundQueueWorker, TaskSupervisor

    n = _queue_n(quick)
    sup = TaskSupervisor("bench")
    sup.start()
    aloop = sup.create_aloop("bench")
    done = Event()
    count = [0]

    async def run(task, **kwargs):
        count[0] += 1
        if count[0] == n:
            done.set()

    return _drain_queue_worker(sup, BackgroundQueueWorker(func=run, loop=aloop, supervisor=sup), n, done)


def async_queue_raw(quick: bool) -> Figures:
    import asyncio

    n = _queue_n(quick)

    async def main() -> tuple:
        q: asyncio.Queue = asyncio.Queue()
        done = asyncio.get_running_loop().create_future()

        async def consume():
            count = 0
            while True:
                await q.get()
                count += 1
                if count == n:
                    done.set_result(None)
                    return

        consumer = asyncio.ensure_future(consume())
        await asyncio.sleep(0.03)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for i in range(n):
            q.put_nowait(i)
        await done
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        await consumer
        return elapsed, cpu

    loop = asyncio.new_event_loop()
    try:
        elapsed, cpu = loop.run_until_complete(main())
    finally:
        loop.close()
    return {"items_per_s": n / elapsed, "cpu_us_per_item": cpu / n * 1e6}


# == 8. process-pool round trips ======================================================================

MP_PROCESSES = 2


def _mp_n(quick: bool) -> int:
    return 300 if quick else 2_000


def mp_tiny(x, **kwargs):
    """The tiny task: module-level, so it travels to the child by reference."""
    return x


def _mp_worker_class():
    # Made on first use (gworker is imported only inside the child, after patching);
    # its static run is the module-level mp_tiny, so it pickles by reference.
    from gworker import BackgroundQueueWorker

    class MPQueueWorker(BackgroundQueueWorker):
        run = staticmethod(mp_tiny)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.count = 0
            self.done = None

        def process_result(self, result):
            self.count += 1
            if self.count == self.n:
                self.done.set()

    return MPQueueWorker


def process_pool_gworker(quick: bool) -> Figures:
    import gevent
    from gevent.event import Event

    from gworker import TT_MP, TaskSupervisor

    n = _mp_n(quick)
    sup = TaskSupervisor("bench")
    sup.start()
    sup.create_mp_pool(processes=MP_PROCESSES)
    # warm up: every child forked and answering
    for task in [sup.put_task(mp_tiny, args=(0,), tt=TT_MP) for _ in range(MP_PROCESSES * 4)]:
        task.wait(30)
    figures: Figures = {}

    # 1. a static-run queue worker: its items run one after another
    worker = _mp_worker_class()(supervisor=sup)
    worker.n, worker.done = n, Event()
    worker.start()
    gevent.sleep(0.01)
    t0 = time.perf_counter()
    for i in range(n):
        worker.put_threadsafe(i)
    worker.done.wait()
    figures["worker_seq_per_s"] = n / (time.perf_counter() - t0)
    worker.stop()

    # 2. put_task(tt=TT_MP), each waited for before the next
    t0 = time.perf_counter()
    for i in range(n):
        sup.put_task(mp_tiny, args=(i,), tt=TT_MP).wait()
    figures["task_seq_per_s"] = n / (time.perf_counter() - t0)

    # 3. put_task(tt=TT_MP), all in flight
    done = Event()
    count = [0]

    def callback(result):
        count[0] += 1
        if count[0] == n:
            done.set()

    t0 = time.perf_counter()
    for i in range(n):
        sup.put_task(mp_tiny, args=(i,), tt=TT_MP, callback=callback)
    done.wait()
    figures["task_flight_per_s"] = n / (time.perf_counter() - t0)

    # 4. the pool itself (ProcessPool.submit, no admission by priority), all in flight
    pool = sup.mp_pool
    t0 = time.perf_counter()
    for result in [pool.submit(mp_tiny, (i,)) for i in range(n)]:
        result.get()
    figures["pool_flight_per_s"] = n / (time.perf_counter() - t0)
    sup.stop()
    return figures


def process_pool_mp(quick: bool) -> Figures:
    import multiprocessing

    n = _mp_n(quick)
    with multiprocessing.get_context("fork").Pool(MP_PROCESSES) as pool:
        for r in [pool.apply_async(mp_tiny, (0,)) for _ in range(MP_PROCESSES * 4)]:
            r.get(30)
        t0 = time.perf_counter()
        for i in range(n):
            pool.apply_async(mp_tiny, (i,)).get()
        seq = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        results = [pool.apply_async(mp_tiny, (i,)) for i in range(n)]
        for r in results:
            r.get()
        flight = n / (time.perf_counter() - t0)
    return {"seq_per_s": seq, "flight_per_s": flight}


# == 9. what a run costs: interval=1 workers on one core, 1k / 10k / 100k (issue 18) ==============

#: part suffix -> (workers, workers with --quick: a smoke test, the labels keep their names)
RUN_COST_SIZES = {"1k": (1_000, 1_000), "10k": (10_000, 2_000), "100k": (100_000, 5_000)}
RUN_COST_KINDS = ("gworker", "greenlets", "timers")
#: the RSS reading: this long after the end of starting at the soonest, and once every
#: worker has made its first run (waiting for its second); at the latest this long
#: before the window ends, whether or not every worker has run
RUN_COST_IDLE_AT = 0.75
RUN_COST_IDLE_BY = 0.25
#: seconds between the window and the CPU reading (not quick, quick)
RUN_COST_SETTLE = {False: 3.0, True: 0.2}
#: --quick: the window, in seconds (a run each after the first; the CPU window
#: stays one round, a second: the runs of one-second workers come in bursts)
RUN_COST_QUICK_WINDOW = 1.2


def pin_to_one_core() -> Optional[int]:
    """Pin this process to one CPU, the last of its current affinity set, and
    return that CPU; None where the platform cannot (no ``sched_setaffinity``)
    or will not.

    On Linux ``sched_setaffinity(0, ...)`` pins the calling thread only, so
    every thread of the process (``/proc/self/task``) is pinned; threads made
    later inherit the pinning from the thread that makes them. A part calls
    this first, before gevent or gworker has started anything."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    try:
        cpu = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return None
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = []
    for tid in threads:
        try:
            os.sched_setaffinity(tid, {cpu})
        except OSError:
            pass  # a thread that ended meanwhile
    return cpu


def missed_runs(gaps: Sequence[float], period: float = 1.0) -> int:
    """How many runs a worker missed, from the gaps (seconds) between its runs:
    a gap of more than 1.5 periods misses ``round(gap / period) - 1`` runs."""
    return sum(round(g / period) - 1 for g in gaps if g > 1.5 * period)


def missed_at_end(since: float, period: float = 1.0) -> int:
    """Runs missed between a worker's last run (or the window's start, if it
    made none in the window) and the end of the window, ``since`` seconds
    before it: one for each period that ended in between, the last half period
    aside (a run due then may still be on its way)."""
    return max(0, int(since / period - 0.5))


class RunTracker:
    """Per worker (index ``i``): runs made, and runs missed within a window.

    A run of worker ``i`` calls :meth:`ran`. While tracking (``window``
    started), a gap of more than 1.5 periods since that worker's previous run
    in the window counts as missed runs (:func:`missed_runs`); :meth:`close`
    adds the runs missed since each worker's last run (:func:`missed_at_end`).
    So a worker that falls behind, or is never run, shows — whatever the
    scheduler does with its lateness — and a first round of runs that a long
    start-up delayed is not held against it (its previous run was before the
    window). Everything is allocated up front (before the RSS baseline)."""

    def __init__(self, n: int) -> None:
        self.counts = [0] * n
        self.last = [0.0] * n
        self.missed = 0
        self.start = float("inf")  # no window yet
        self.tracking = False

    def ran(self, i: int) -> None:
        """Worker ``i`` made a run, now."""
        self.counts[i] += 1
        if self.tracking:
            now = time.monotonic()
            prev = self.last[i]
            self.last[i] = now
            if prev >= self.start and now - prev > 1.5:
                self.missed += missed_runs((now - prev,))

    def window(self) -> None:
        """Start the window (now)."""
        self.start = time.monotonic()
        self.missed = 0
        self.tracking = True

    def close(self) -> int:
        """End the window and stop tracking: the runs missed in it."""
        end = time.monotonic()
        self.tracking = False
        start = self.start
        self.missed += sum(missed_at_end(end - max(last, start)) for last in self.last)
        return self.missed


def _count_run(tracker: RunTracker, i: int, **kwargs: Any) -> None:
    """One run of worker ``i`` (as an interval worker's executor it gets
    gworker's keywords; as a bare timer's callback, none)."""
    tracker.ran(i)


def _count_loop(tracker: RunTracker, i: int) -> None:
    """A bare greenlet worker: a run, then ``gevent.sleep(1)``, for ever."""
    import gevent

    while True:
        tracker.ran(i)
        gevent.sleep(1)


def _rss_once_idle(lag: "LagMeter", counts: List[int], started: float, deadline: float) -> tuple:
    """``(rss, all_ran, at)``: the RSS read (its ``gc.collect()`` aside from the
    lag) once every worker has run at least once — when a slow first round
    has not reached them all by ``started + RUN_COST_IDLE_AT``, later, but by
    ``deadline`` at the latest; ``all_ran`` says whether they all had, ``at``
    when it was read (seconds after ``started``)."""
    import gevent

    gevent.sleep(max(0.0, started + RUN_COST_IDLE_AT - time.monotonic()))
    while 0 in counts and time.monotonic() < deadline:  # a C-level scan: ~0.5 ms at 100k
        gevent.sleep(0.05)
    all_ran = 0 not in counts
    at = time.monotonic() - started
    return lag.measure_aside(rss), all_ran, at


def _run_cost_n(size: str, quick: bool) -> int:
    """Workers in a part of ``size`` (``"1k"``, …)."""
    return RUN_COST_SIZES[size][1 if quick else 0]


def _run_cost_common(start_all: Callable[[], None], stop_all: Callable[[], None],
                     tracker: RunTracker, quick: bool) -> Figures:
    """Measure the one-second workers that ``start_all()`` starts, each run
    reported to ``tracker``.

    The caller makes ``tracker`` and whatever else the benchmark keeps per worker
    (the run functions, the list that holds the workers) before this is called,
    so the RSS baseline already has them: what the workers themselves take is
    all that the RSS per worker shows.

    * ``start_s``: the time ``start_all()`` takes;
    * ``runs_pct``: in the window of 3.5 s from the *end* of starting, runs made
      against runs made plus runs missed (:class:`RunTracker`: a worker missed
      a run when more than 1.5 s passed between two of its runs, or since its
      last one at the end); ``runs_missed``;
    * ``rss_per_kib``: RSS growth per worker once idle: read 0.75 s after the end
      of starting, or later once every worker has made its first run
      (:func:`_rss_once_idle`; ``rss_all_ran``, ``rss_at_s``);
    * ``lag_max_ms``/``lag_p99_ms``: the 5 ms ticker's lateness over the window,
      the starting loop and the RSS reading's ``gc.collect()`` left out (the
      first round of runs after the start is in);
    * ``cpu_pct``/``cpu_us_per_run``: process CPU in a quiet window, 3 s after
      that one (the steady state, once the catch-up after a long start is
      over), with the ticker stopped (:func:`cpu_per_run`).

    The benchmark's own objects, made before (and the modules imported), are
    frozen out of the garbage collector (``gc.freeze()``), so its full
    collections walk what the workers made, not the benchmark's bookkeeping.

    --quick: a window of ``RUN_COST_QUICK_WINDOW`` and a CPU window of 1 s."""
    import gevent

    counts = tracker.counts
    n = len(counts)
    window = RUN_COST_QUICK_WINDOW if quick else MANY_WINDOW
    lag = LagMeter()
    gevent.sleep(0.05)  # the ticker is running before the start
    gc.freeze()
    rss0 = lag.measure_aside(rss)
    t0 = time.monotonic()
    lag.measure_aside(start_all, rebase=True)
    started = time.monotonic()
    tracker.window()
    runs0 = sum(counts)
    rss1, all_ran, rss_at = _rss_once_idle(lag, counts, started, started + window - RUN_COST_IDLE_BY)
    gevent.sleep(max(0.0, started + window - time.monotonic()))
    # no yield from here to the CPU window: no run moves a counter while they are read
    missed = tracker.close()
    made = sum(counts) - runs0
    runs_pct = 100.0 * made / (made + missed) if made + missed else 0.0
    figures = lag.stop()
    # The steady state: with 100,000 workers the start loop holds the hub for
    # seconds, and the rounds after it catch up for seconds more (every
    # worker's runs due since its start at once); the window above has
    # judged that (runs made, lag). CPU per run is that of the rounds after.
    gevent.sleep(RUN_COST_SETTLE[quick])
    figures.update(cpu_per_run(lambda: sum(counts), _cpu_window(quick)))
    stop_all()
    gc.unfreeze()
    figures.update({
        "n": n,
        "start_s": started - t0,
        "rss_per_kib": (rss1 - rss0) / n / 1024,
        "rss_all_ran": int(all_ran),
        "rss_at_s": rss_at,
        "runs_pct": runs_pct,
        "runs_missed": missed,
    })
    return figures


def _run_cost_gworker(n: int, quick: bool) -> Figures:
    """``n`` ``BackgroundIntervalWorker(interval=1)`` on one supervisor."""
    from gworker import BackgroundIntervalWorker, TaskSupervisor

    tracker = RunTracker(n)
    runs = [partial(_count_run, tracker, i) for i in range(n)]
    held: List[Any] = [None] * n
    sup = TaskSupervisor("bench")
    sup.start()

    def start_all():
        for i in range(n):
            worker = BackgroundIntervalWorker(func=runs[i], interval=1, supervisor=sup)
            worker.start()
            held[i] = worker

    return _run_cost_common(start_all, lambda: sup.stop(wait=False), tracker, quick)


def _run_cost_greenlets(n: int, quick: bool) -> Figures:
    """``n`` bare greenlets, each looping on a run and ``gevent.sleep(1)``."""
    import gevent

    tracker = RunTracker(n)
    loops = [partial(_count_loop, tracker, i) for i in range(n)]
    held: List[Any] = [None] * n

    def start_all():
        for i in range(n):
            held[i] = gevent.spawn(loops[i])

    # not waited for (killing 100k greenlets takes seconds); the child exits after the part
    return _run_cost_common(start_all, lambda: gevent.killall(held, block=False), tracker, quick)


def _run_cost_timers(n: int, quick: bool) -> Figures:
    """``n`` bare libev timers (due at once, then every second), the callback the
    run: the cheapest a one-second run can be in gevent."""
    import gevent

    tracker = RunTracker(n)
    runs = [partial(_count_run, tracker, i) for i in range(n)]
    held: List[Any] = [None] * n
    loop = gevent.get_hub().loop

    def start_all():
        for i in range(n):
            timer = loop.timer(0.0, 1.0)
            timer.start(runs[i])
            held[i] = timer

    def stop_all():
        for timer in held:
            timer.stop()

    return _run_cost_common(start_all, stop_all, tracker, quick)


def _run_cost_part(kind: Callable[[int, bool], Figures], size: str) -> Callable[[bool], Figures]:
    """The part that runs ``kind`` at ``size`` workers, pinned to one core."""

    def part(quick: bool) -> Figures:
        cpu = pin_to_one_core()  # first: gevent and gworker start nothing before it
        figures = kind(_run_cost_n(size, quick), quick)
        if cpu is not None:
            figures["pinned_cpu"] = cpu
        return figures

    part.__name__ = part.__qualname__ = "%s_%s" % (kind.__name__.lstrip("_"), size)
    part.__doc__ = "%s, %s workers" % (kind.__doc__, size)
    return part


def _run_cost_parts() -> Dict[str, Callable[[bool], Figures]]:
    """Every kind at every size: ``gworker_1k``, ``greenlets_1k``, ``timers_1k``, …"""
    kinds = {"gworker": _run_cost_gworker, "greenlets": _run_cost_greenlets, "timers": _run_cost_timers}
    return {"%s_%s" % (name, size): _run_cost_part(kinds[name], size)
            for size in RUN_COST_SIZES for name in RUN_COST_KINDS}


def _run_cost_flat(m: Figures) -> Figures:
    """From the medians: each kind's CPU per run at 100k over its CPU per run at 1k."""
    flat = {}
    for kind in RUN_COST_KINDS:
        value = _ratio(m, "%s_100k.cpu_us_per_run" % kind, "%s_1k.cpu_us_per_run" % kind)
        if value is not None:
            flat["%s.cpu_per_run_100k_over_1k" % kind] = value
    return flat


def _run_cost_row(size: str, metric: str, unit: str, figure: str, target: str,
                  ok: Optional[Callable[[float], bool]] = None) -> Row:
    """A run-cost row: gworker at ``size`` against bare greenlets and bare timers
    at the same count; met when ``ok(gworker's median)`` (no ``ok``: reported)."""
    ours = "gworker_%s.%s" % (size, figure)
    bases = ["greenlets_%s.%s" % (size, figure), "timers_%s.%s" % (size, figure)]
    met = (lambda m: None) if ok is None else (lambda m: _cmp(m.get(ours), ok))
    return Row("%s: %s" % (size, metric), unit, ours, bases, target, met)


def _run_cost_rss_row() -> Row:
    """RSS per idle worker at 100k, ≤ 2.5 KiB; judged only when it was read after
    every worker had run once (the median of ``rss_all_ran`` is 1): a reading
    taken while a slow first round had not reached them all cannot tell."""
    row = _run_cost_row("100k", "RSS per idle worker", "KiB", "rss_per_kib", "≤ 2.5 KiB (once all have run)",
                        lambda v: v <= 2.5)
    judge = row.met
    row.met = lambda m: judge(m) if m.get("gworker_100k.rss_all_ran") == 1 else None
    return row


def _run_cost_rows() -> List[Row]:
    """The issue's targets: at 100k, and CPU per run at each count."""
    rows = [
        _run_cost_row("100k", "runs made", "%", "runs_pct", "≥ 99.9 %", lambda v: v >= 99.9),
        _run_cost_rss_row(),
        _run_cost_row("100k", "worst hub lag", "ms", "lag_max_ms", "≤ 20 ms", lambda v: v <= 20.0),
        _run_cost_row("100k", "CPU", "% of a core", "cpu_pct", "≤ 60 % (moonshot ≤ 40 %)", lambda v: v <= 60.0),
        _run_cost_row("100k", "start time", "s", "start_s", "(reported)"),
    ]
    for size in RUN_COST_SIZES:
        rows.append(_run_cost_row(size, "CPU per run", "µs", "cpu_us_per_run", "≤ 6 µs (moonshot ≤ 4)",
                                  lambda v: v <= 6.0))
    rows.append(Row("CPU per run flat: 100k / 1k", "×", "gworker.cpu_per_run_100k_over_1k",
                    ["greenlets.cpu_per_run_100k_over_1k", "timers.cpu_per_run_100k_over_1k"], "flat (≤ 1.5×)",
                    lambda m: _cmp(m.get("gworker.cpu_per_run_100k_over_1k"), lambda r: r <= 1.5)))
    return rows


# == the registry =================================================================================

REGISTRY: List[Scenario] = [
    Scenario(
        "queue", "queue worker: put_threadsafe from the hub, sync executor", True,
        {"gworker": queue_gworker, "raw": queue_raw, "metrics": queue_metrics, "listener": queue_listener},
        [
            Row("items/s", "", "gworker.items_per_s", ["raw.items_per_s"], "≥ 0.2× raw (aim 0.25)",
                lambda m: _cmp(_ratio(m, "gworker.items_per_s", "raw.items_per_s"), lambda r: r >= 0.2)),
            Row("items/s, metrics on", "", "metrics.items_per_s", ["metrics.off_items_per_s"],
                "≥ 0.95× metrics off (in turns, one process)",
                lambda m: _cmp(_ratio(m, "metrics.items_per_s", "metrics.off_items_per_s"), lambda r: r >= 0.95)),
            Row("items/s, a run_finished listener", "", "listener.items_per_s", ["gworker.items_per_s"],
                "(reported: why metrics are not run events)", lambda m: None),
            Row("hub lag max", "ms", "gworker.lag_max_ms", [], "(reported; yields every ≤ 5 ms)",
                lambda m: None),
            Row("CPU per item", "µs", "gworker.cpu_us_per_item", ["raw.cpu_us_per_item"], "(reported)",
                lambda m: None),
        ],
    ),
    Scenario(
        "event", "event trigger from a native OS thread → executor start", True,
        {"gworker": event_gworker, "raw": event_raw, "raw_async": event_raw_async, "metrics": event_metrics},
        [
            Row("latency median", "µs", "gworker.median_us", ["raw.median_us", "raw_async.median_us"],
                "≤ raw + 10 µs",
                lambda m: _cmp(_diff(m, "gworker.median_us", "raw.median_us"), lambda d: d <= 10)),
            Row("latency median, metrics on", "µs", "metrics.median_us", ["gworker.median_us"],
                "≤ metrics off / 0.95",
                lambda m: _cmp(_ratio(m, "metrics.median_us", "gworker.median_us"), lambda r: r <= 1 / 0.95)),
            Row("CPU per trigger, metrics on", "µs", "metrics.cpu_us_per_trigger", ["gworker.cpu_us_per_trigger"],
                "(reported)", lambda m: None),
            Row("latency p99", "µs", "gworker.p99_us", ["raw.p99_us"], "(reported)", lambda m: None),
            Row("CPU per trigger (both threads)", "µs", "gworker.cpu_us_per_trigger", ["raw.cpu_us_per_trigger"],
                "(reported)", lambda m: None),
        ],
    ),
    Scenario(
        "interval", "one 10 ms interval worker", True,
        {"gworker": interval_gworker, "precise": interval_precise, "raw": interval_raw,
         "raw_precise": interval_raw_precise, "apscheduler": interval_apscheduler, "metrics": interval_metrics},
        [
            Row("runs", "", "gworker.runs", ["raw.runs", "apscheduler.runs"], "ideal ± 1",
                lambda m: _cmp(m.get("gworker.runs"), lambda v: abs(v - m["gworker.ideal_runs"]) <= 1)),
            Row("drift p99", "ms", "gworker.drift_p99_ms", ["raw.drift_p99_ms", "apscheduler.drift_p99_ms"],
                "≤ 2 ms", lambda m: _cmp(m.get("gworker.drift_p99_ms"), lambda v: v <= 2.0)),
            Row("mean |gap−10ms|", "ms", "gworker.mean_gap_err_ms",
                ["raw.mean_gap_err_ms", "apscheduler.mean_gap_err_ms"], "≤ 1.2× raw",
                lambda m: _cmp(_ratio(m, "gworker.mean_gap_err_ms", "raw.mean_gap_err_ms"), lambda r: r <= 1.2)),
            Row("precise: runs", "", "precise.runs", ["raw.runs"], "ideal ± 1",
                lambda m: _cmp(m.get("precise.runs"), lambda v: abs(v - m["precise.ideal_runs"]) <= 1)),
            Row("precise: mean |gap−10ms|", "ms", "precise.mean_gap_err_ms",
                ["raw_precise.mean_gap_err_ms", "raw.mean_gap_err_ms"],
                "≤ 0.05 ms", lambda m: _cmp(m.get("precise.mean_gap_err_ms"), lambda v: v <= 0.05)),
            Row("precise: drift p99", "ms", "precise.drift_p99_ms",
                ["raw_precise.drift_p99_ms", "raw.drift_p99_ms"], "≤ 2 ms",
                lambda m: _cmp(m.get("precise.drift_p99_ms"), lambda v: v <= 2.0)),
            Row("CPU (precise / normal)", "%", "precise.cpu_pct",
                ["gworker.cpu_pct", "raw_precise.cpu_pct", "raw.cpu_pct"],
                "(cost, reported)", lambda m: None),
            Row("CPU per run", "µs", "gworker.cpu_us_per_run", ["raw.cpu_us_per_run"], "(reported)",
                lambda m: None),
            Row("metrics on: drift p99", "ms", "metrics.drift_p99_ms", ["gworker.drift_p99_ms"], "≤ 2 ms",
                lambda m: _cmp(m.get("metrics.drift_p99_ms"), lambda v: v <= 2.0)),
            Row("metrics on: CPU per run", "µs", "metrics.cpu_us_per_run", ["gworker.cpu_us_per_run"],
                "≤ metrics off / 0.95",
                lambda m: _cmp(_ratio(m, "metrics.cpu_us_per_run", "gworker.cpu_us_per_run"),
                               lambda r: r <= 1 / 0.95)),
        ],
    ),
    Scenario(
        "many-interval", "10,000 interval workers at 1 s", True,
        {"gworker": many_interval_gworker, "raw": many_interval_raw,
         "apscheduler": many_interval_apscheduler},
        [
            Row("start time", "s", "gworker.start_s", ["raw.start_s", "apscheduler.start_s"], "≤ 0.5 s",
                lambda m: _cmp(m.get("gworker.start_s"), lambda v: v <= 0.5)),
            Row("RSS per idle worker", "KiB", "gworker.rss_per_kib", ["raw.rss_per_kib", "apscheduler.rss_per_kib"],
                "≤ 4 KiB", lambda m: _cmp(m.get("gworker.rss_per_kib"), lambda v: v <= 4.0)),
            Row("runs made", "%", "gworker.runs_pct", ["raw.runs_pct", "apscheduler.runs_pct"], "≥ 99.9 %",
                lambda m: _cmp(m.get("gworker.runs_pct"), lambda v: v >= 99.9)),
            Row("worst hub lag", "ms", "gworker.lag_max_ms", ["raw.lag_max_ms", "apscheduler.lag_max_ms"],
                "≤ 20 ms", lambda m: _cmp(m.get("gworker.lag_max_ms"), lambda v: v <= 20.0)),
            Row("CPU per run", "µs", "gworker.cpu_us_per_run", ["raw.cpu_us_per_run", "apscheduler.cpu_us_per_run"],
                "(reported)", lambda m: None),
        ],
    ),
    Scenario(
        "sleepers", "10,000 sync BackgroundWorkers waiting on gevent.sleep", True,
        {"gworker": sleepers_gworker, "raw": sleepers_raw},
        [
            Row("RSS per worker", "KiB", "gworker.rss_per_kib", ["raw.rss_per_kib"], "≤ 1.5× raw",
                lambda m: _cmp(_ratio(m, "gworker.rss_per_kib", "raw.rss_per_kib"), lambda r: r <= 1.5)),
            Row("start time", "s", "gworker.start_s", ["raw.start_s"], "(reported)", lambda m: None),
        ],
    ),
    Scenario(
        "tasks", "10,000 put_task greenlet tasks, mixed priorities, pool of 100", True,
        {"gworker": tasks_gworker, "raw": tasks_raw},
        [
            Row("tasks/s", "", "gworker.tasks_per_s", ["raw.tasks_per_s"], "≥ 0.8× gevent.pool.Pool (moonshot 1.0)",
                lambda m: _cmp(_ratio(m, "gworker.tasks_per_s", "raw.tasks_per_s"), lambda r: r >= 0.8)),
            Row("CPU per task", "µs", "gworker.cpu_us_per_task", ["raw.cpu_us_per_task"], "(reported)",
                lambda m: None),
        ],
    ),
    Scenario(
        "async-queue", "queue worker: put_threadsafe from the hub, async executor on an aloop", True,
        {"gworker": async_queue_gworker, "raw": async_queue_raw},
        [
            Row("items/s", "", "gworker.items_per_s", ["raw.items_per_s"], "≥ 0.2× asyncio.Queue loop",
                lambda m: _cmp(_ratio(m, "gworker.items_per_s", "raw.items_per_s"), lambda r: r >= 0.2)),
            Row("hub lag max", "ms", "gworker.lag_max_ms", [], "(reported; yields every ≤ 5 ms)",
                lambda m: None),
            Row("CPU per item", "µs", "gworker.cpu_us_per_item", ["raw.cpu_us_per_item"], "(reported)",
                lambda m: None),
        ],
    ),
    Scenario(
        "process-pool", "process-pool round trips, 2 children, tiny tasks", True,
        {"gworker": process_pool_gworker, "mp": process_pool_mp},
        [
            Row("one after another: static-run worker", "/s", "gworker.worker_seq_per_s", ["mp.seq_per_s"],
                "≥ 2× multiprocessing.Pool",
                lambda m: _cmp(_ratio(m, "gworker.worker_seq_per_s", "mp.seq_per_s"), lambda r: r >= 2.0)),
            Row("one after another: put_task(TT_MP)", "/s", "gworker.task_seq_per_s", ["mp.seq_per_s"],
                "≥ 2× multiprocessing.Pool",
                lambda m: _cmp(_ratio(m, "gworker.task_seq_per_s", "mp.seq_per_s"), lambda r: r >= 2.0)),
            Row("2,000 in flight: put_task(TT_MP)", "/s", "gworker.task_flight_per_s", ["mp.flight_per_s"],
                "≥ 2× multiprocessing.Pool",
                lambda m: _cmp(_ratio(m, "gworker.task_flight_per_s", "mp.flight_per_s"), lambda r: r >= 2.0)),
            Row("2,000 in flight: ProcessPool.submit", "/s", "gworker.pool_flight_per_s", ["mp.flight_per_s"],
                "(reported: the pool without admission)", lambda m: None),
        ],
        plain_parts=("mp",),
    ),
    Scenario(
        "run-cost", "interval=1 workers on one core: 1k / 10k / 100k, beside bare greenlets and bare timers",
        True, _run_cost_parts(), _run_cost_rows(), derived=_run_cost_flat,
    ),
]


def get(name: str) -> Scenario:
    for scenario in REGISTRY:
        if scenario.name == name:
            return scenario
    raise KeyError("no scenario %r (known: %s)" % (name, ", ".join(s.name for s in REGISTRY)))


def ratio_of(row: Row, m: Figures) -> Optional[float]:
    if not row.bases:
        return None
    return _ratio(m, row.ours, row.bases[0])
