"""What gworker's metrics and live page record of each run, without prometheus_client.

A :class:`Recorder` per supervisor (:func:`recorder`, made and installed on
first use) gives every worker's engine a per-name :class:`NameStats` to hand
its runs to (``Engine.stats``; see :mod:`gworker.workers._engine`): each
run's duration into a histogram of plain counters, the end of the latest run
that returned, a scheduled interval/cron run's lateness. It also reads the
counters the workers keep, adding them up per name so that a stopped or
garbage-collected worker's counts stay, and the pool's waits for a slot.
:mod:`gworker.integrations.metrics` exposes it to Prometheus; the live page
(:mod:`gworker.integrations.ui`) reads its recent durations and lateness.
Everything here runs in the supervisor's hub.
"""
from __future__ import annotations

import os
import time
import weakref
from bisect import bisect_left
from time import monotonic
from typing import Any, Dict, List, Optional, Tuple

from .._default import supervisor_or_default
from ..events import WORKER_STOPPED
from ..priorities import TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL
from ..supervisor import TaskSupervisor
from .health import hub_probe

__all__ = ["Recorder", "NameStats", "recorder", "existing", "DURATION_BUCKETS", "LATENESS_BUCKETS",
           "WAIT_BUCKETS", "PRIORITY_NAMES"]

#: Upper bounds (seconds) of ``gworker_run_duration_seconds``' buckets.
DURATION_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)
#: Upper bounds (seconds) of ``gworker_run_lateness_seconds``' buckets.
LATENESS_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0)
#: Upper bounds (seconds) of ``gworker_pool_wait_seconds``' buckets.
WAIT_BUCKETS = (0.0001, 0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0)
#: The priorities' names in the metrics' labels.
PRIORITY_NAMES = {TASK_CRITICAL: "critical", TASK_HIGH: "high", TASK_NORMAL: "normal", TASK_LOW: "low"}


# -- what a process records ---------------------------------------------------------------------
class Hist:
    """A histogram as plain counters: one per bucket (the last one past the
    highest bound: +Inf), and the sum."""

    __slots__ = ("counts", "sum")

    def __init__(self, n: int) -> None:
        self.counts = [0] * (n + 1)
        self.sum = 0.0


class NameStats:
    """The per-run figures of the workers of one name: what each run's engine
    hands over (see ``Engine.stats``): its duration into a histogram of plain
    counters (a bisection and two additions), the end of the latest run that
    returned, and for a scheduled interval/cron run its lateness."""

    __slots__ = ("kind", "counts", "sum", "late_counts", "late_sum", "ok_end", "sample_at", "scheduled")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.sum = 0.0
        self.late_counts = [0] * (len(LATENESS_BUCKETS) + 1)
        self.late_sum = 0.0
        #: monotonic end of the latest run that returned, or None
        self.ok_end: Optional[float] = None
        #: (the queue's fast path samples its bursts: see Engine.batch)
        self.sample_at = 0.0
        self.scheduled = False

    def observe(self, engine: Any, started: float, ended: float,
                _bounds: Tuple[float, ...] = DURATION_BUCKETS) -> None:
        """A run of ``engine`` ran from ``started`` to ``ended`` (monotonic).
        Called in the run's greenlet, after it: quick, and nothing that blocks."""
        duration = ended - started
        self.counts[bisect_left(_bounds, duration)] += 1
        self.sum += duration
        if engine.failed_run != engine.runs:  # (a failure marks its run before this)
            self.ok_end = ended
        if self.scheduled:
            due = engine.worker._due_monotonic()
            if due is not None:  # a scheduled run, not a triggered one
                late = started - due
                if late < 0.0:
                    late = 0.0
                self.late_counts[bisect_left(LATENESS_BUCKETS, late)] += 1
                self.late_sum += late


class Recorder:
    """What one supervisor's metrics remember (see the module docstring).

    Per worker name, a :class:`NameStats` that the engines feed; the
    counters the workers keep, read when asked and added up per name (a
    worker's last figures are read when it stops too: a ``worker_stopped``
    listener), so that a counter never goes back when a worker stops or is
    garbage collected; the pool's waits, observed where a slot is granted
    after one. Everything runs in the supervisor's hub."""

    def __init__(self, supervisor: TaskSupervisor) -> None:
        self.supervisor = supervisor
        self.by_name: Dict[str, NameStats] = {}
        self.waits = Hist(len(WAIT_BUCKETS))
        # counters read from the workers: per worker object the figures seen
        # last, and per name what they added up to (kept after a worker stopped)
        self.seen: "weakref.WeakKeyDictionary[Any, List[int]]" = weakref.WeakKeyDictionary()
        self.totals: Dict[str, List[int]] = {}
        self.installed = False

    def stats_for(self, worker: Any) -> NameStats:
        """The statistics the engine of ``worker`` hands its runs to."""
        stats = self.by_name.get(worker.name)
        if stats is None:
            stats = self.by_name[worker.name] = NameStats(worker.kind)
        if worker.kind == "interval":
            stats.scheduled = True
        return stats

    def install(self) -> None:
        if self.installed:
            return
        self.installed = True
        sup = self.supervisor
        sup.run_in_hub(sup._set_run_stats, self.stats_for)
        sup.add_listener(self.on_stopped, events=(WORKER_STOPPED,))
        sup.thread_pool.on_granted = self.on_granted

    def uninstall(self) -> None:
        if not self.installed:
            return
        self.installed = False
        sup = self.supervisor
        sup.run_in_hub(sup._set_run_stats, None)
        sup.remove_listener(self.on_stopped)
        if sup.thread_pool.on_granted == self.on_granted:
            sup.thread_pool.on_granted = None

    def on_stopped(self, event: Any) -> None:
        if event.worker is not None:
            self._count(event.worker)

    def on_granted(self, priority: int, waited: float) -> None:
        h = self.waits
        h.counts[bisect_left(WAIT_BUCKETS, waited)] += 1
        h.sum += waited

    # -- read when asked ---------------------------------------------------------------------------
    def _count(self, worker: Any) -> None:
        """Add what ``worker`` counted since it was last looked at to its name's totals."""
        info = worker.get_info()
        now = [info.get("runs") or 0, info.get("errors") or 0, info.get("missed") or 0, info.get("timeouts") or 0]
        before = self.seen.get(worker)
        if before is None:
            before = [0, 0, 0, 0]
        totals = self.totals.get(worker.name)
        if totals is None:
            totals = self.totals[worker.name] = [0, 0, 0, 0]
        for i in range(4):
            if now[i] > before[i]:
                totals[i] += now[i] - before[i]
        self.seen[worker] = now
        if worker.name not in self.by_name:
            self.stats_for(worker)  # (its histograms show, empty, from now on)

    def state(self) -> Dict[str, Any]:
        """This process's figures as a JSON-ready dict (what a process publishes)."""
        sup = self.supervisor
        queue_items: Dict[str, int] = {}
        for worker in list(sup.get_schedulers()):
            self._count(worker)
            q = getattr(worker, "get_queue_obj", None)
            if q is not None:
                try:
                    n = q().qsize()
                except Exception:
                    continue
                queue_items[worker.name] = queue_items.get(worker.name, 0) + n
        waits = self.waits
        # the slots granted at once waited 0 s: the first bucket (the pool
        # counts every grant; the waits were observed as they were granted)
        at_once = max(0, sup.thread_pool.admitted - sum(waits.counts))
        wait_counts = list(waits.counts)
        wait_counts[0] += at_once
        wall_minus_mono = time.time() - monotonic()
        by_name = self.by_name
        probe = hub_probe(sup)
        return {
            "pid": os.getpid(), "time": time.time(),
            "kinds": {name: stats.kind for name, stats in by_name.items()},
            "counters": {name: list(t) for name, t in self.totals.items()},
            "durations": {name: [list(st.counts), st.sum] for name, st in by_name.items()},
            "lateness": {name: [list(st.late_counts), st.late_sum] for name, st in by_name.items() if st.scheduled},
            "waits": {"": [wait_counts, waits.sum]},
            "last_success": {name: st.ok_end + wall_minus_mono for name, st in by_name.items()
                             if st.ok_end is not None},
            "queue_items": queue_items,
            "slots_in_use": {PRIORITY_NAMES[p]: n for p, n in sup.slots_in_use().items()},
            "hub_lag": None if probe is None else probe.max_lag,
        }


_recorders: "weakref.WeakKeyDictionary[TaskSupervisor, Recorder]" = weakref.WeakKeyDictionary()


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a process of another user counts): the
    metrics' and the live page's check of a process that stopped publishing."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def existing(supervisor: Optional[TaskSupervisor] = None) -> Optional[Recorder]:
    """The supervisor's recorder if one was made, else None (nothing is installed)."""
    return _recorders.get(supervisor_or_default(supervisor))


def recorder(supervisor: Optional[TaskSupervisor] = None) -> Recorder:
    """The supervisor's recorder, made and installed on first use."""
    sup = supervisor_or_default(supervisor)
    found = _recorders.get(sup)
    if found is None:
        found = _recorders[sup] = Recorder(sup)
    found.install()
    return found
