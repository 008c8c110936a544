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
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

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
        self._glet = gevent.spawn(self._tick)

    def _tick(self) -> None:
        import gevent

        period = self.period
        while True:
            expected = time.monotonic() + period
            gevent.sleep(period)
            self.samples.append((expected, time.monotonic()))

    def measure_aside(self, fn: Callable[[], Any]) -> Any:
        """Call ``fn`` (which blocks the hub: the benchmark's own ``gc.collect()``
        for an RSS reading) and leave the ticks it delayed out of the figures."""
        start = time.monotonic()
        try:
            return fn()
        finally:
            self.excluded.append((start, time.monotonic()))

    def stop(self) -> Figures:
        self._glet.kill()
        late = [
            max(0.0, woke - expected) for expected, woke in self.samples
            if not any(a <= woke and expected <= b for a, b in self.excluded)
        ] or [0.0]
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


def queue_gworker(quick: bool) -> Figures:
    from gevent.event import Event

    from gworker import BackgroundQueueWorker, TaskSupervisor

    n = _queue_n(quick)
    sup = TaskSupervisor("bench")
    sup.start()
    done = Event()
    count = [0]

    def run(task, **kwargs):
        count[0] += 1
        if count[0] == n:
            done.set()

    return _drain_queue_worker(sup, BackgroundQueueWorker(func=run, supervisor=sup), n, done)


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


def event_gworker(quick: bool) -> Figures:
    import gevent
    from gevent.monkey import get_original

    from gworker import BackgroundEventWorker, TaskSupervisor

    ready = get_original("_thread", "allocate_lock")()
    ready.acquire()
    stamps: List[float] = []

    def run(**kwargs):
        stamps.append(time.perf_counter())
        ready.release()

    sup = TaskSupervisor("bench")
    sup.start()
    worker = BackgroundEventWorker(func=run, supervisor=sup)
    worker.start()
    gevent.sleep(0.01)
    cpu0 = time.process_time()
    lat = _trigger_latencies(worker.trigger_threadsafe, stamps, ready, quick)
    cpu = time.process_time() - cpu0
    worker.stop()
    sup.stop()
    return _latency_figures(lat, cpu, len(stamps))


def event_raw(quick: bool) -> Figures:
    import gevent
    from gevent.monkey import get_original

    ready = get_original("_thread", "allocate_lock")()
    ready.acquire()
    stamps: List[float] = []
    loop = gevent.get_hub().loop

    def callback():
        stamps.append(time.perf_counter())
        ready.release()

    def fire():
        loop.run_callback_threadsafe(callback)

    cpu0 = time.process_time()
    lat = _trigger_latencies(fire, stamps, ready, quick)
    cpu = time.process_time() - cpu0
    return _latency_figures(lat, cpu, len(stamps))


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


def _interval_gworker(quick: bool, precise: bool) -> Figures:
    import gevent

    from gworker import BackgroundIntervalWorker, TaskSupervisor

    duration = _duration(quick)
    starts: List[float] = []

    def run(**kwargs):
        starts.append(time.monotonic())

    sup = TaskSupervisor("bench")
    sup.start()
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


# == the registry =================================================================================

REGISTRY: List[Scenario] = [
    Scenario(
        "queue", "queue worker: put_threadsafe from the hub, sync executor", True,
        {"gworker": queue_gworker, "raw": queue_raw},
        [
            Row("items/s", "", "gworker.items_per_s", ["raw.items_per_s"], "≥ 0.2× raw (aim 0.25)",
                lambda m: _cmp(_ratio(m, "gworker.items_per_s", "raw.items_per_s"), lambda r: r >= 0.2)),
            Row("hub lag max", "ms", "gworker.lag_max_ms", [], "(reported; yields every ≤ 5 ms)",
                lambda m: None),
            Row("CPU per item", "µs", "gworker.cpu_us_per_item", ["raw.cpu_us_per_item"], "(reported)",
                lambda m: None),
        ],
    ),
    Scenario(
        "event", "event trigger from a native OS thread → executor start", True,
        {"gworker": event_gworker, "raw": event_raw},
        [
            Row("latency median", "µs", "gworker.median_us", ["raw.median_us"], "≤ raw + 10 µs",
                lambda m: _cmp(_diff(m, "gworker.median_us", "raw.median_us"), lambda d: d <= 10)),
            Row("latency p99", "µs", "gworker.p99_us", ["raw.p99_us"], "(reported)", lambda m: None),
            Row("CPU per trigger (both threads)", "µs", "gworker.cpu_us_per_trigger", ["raw.cpu_us_per_trigger"],
                "(reported)", lambda m: None),
        ],
    ),
    Scenario(
        "interval", "one 10 ms interval worker", True,
        {"gworker": interval_gworker, "precise": interval_precise, "raw": interval_raw,
         "raw_precise": interval_raw_precise, "apscheduler": interval_apscheduler},
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
