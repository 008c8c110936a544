"""Health and readiness: what a Kubernetes probe (or a load balancer) asks.

Two questions, two answers, each a JSON document with ``ok``, ``reasons``
(one line per problem, naming what is wrong) and the figures it judged:

* **health** (:func:`check_health`, served at ``/_gworker/healthz``) — is
  this process alive? Yes when its supervisor is active and the gevent hub
  answers within ``bound`` seconds: a callback handed to the hub now runs
  within the bound, and the :class:`HubProbe` saw no turn of the hub later
  than the bound over its last few periods. A hub held by code that never
  yields (a CPU-bound loop, a blocking call in an un-patched process) fails
  it, which is what a liveness probe is for: such a process does not recover
  by itself.
* **readiness** (:func:`check_ready`, ``/_gworker/readyz``) — should this
  process get traffic? Not while its workers are not started (the
  :class:`~gworker.integrations.WorkerSet` has not started in this process,
  or a worker it registered is not running), nor while an interval or cron
  worker is overdue by more than ``overdue_periods`` (3) of its periods, nor
  while a Redis queue of a running worker cannot reach Redis within
  ``redis_timeout`` seconds. Each reason names the worker.

The WSGI apps (:func:`health_app`) answer ``200`` when ``ok``, ``503`` with
the reasons otherwise; :func:`gworker.integrations.status.mount` serves both
beside the status document. The checks run in the supervisor's hub (carried
there, with a time limit, when asked from another OS thread); each costs a
turn of the hub, and readiness one Redis round trip per Redis queue.

The probe (:func:`hub_probe`) is one repeating loop timer per hub, two wake-ups
a second by default: each notes how late the loop ran it. It holds no
greenlet and does not keep the hub alive; the metrics read their
``gworker_hub_lag_seconds`` from it too.
"""
from __future__ import annotations

import os
import sys
import time
import weakref
from collections import deque
from time import monotonic
from typing import Any, Callable, Deque, Dict, List, Optional

import gevent
from gevent.hub import Hub, Waiter

from .. import _hubsafe as hubsafe
from .._default import supervisor_or_default
from ..supervisor import TaskSupervisor
from .lifecycle import WorkerSet, server_workers

__all__ = [
    "HubProbe", "hub_probe", "check_health", "check_ready", "health_app",
    "HUB_BOUND", "OVERDUE_PERIODS", "REDIS_TIMEOUT", "PROBE_PERIOD",
]

#: Seconds within which the hub must answer for the process to be healthy.
HUB_BOUND = 1.0
#: An interval or cron worker overdue by more periods than this makes the process not ready.
OVERDUE_PERIODS = 3
#: Seconds a Redis queue has to answer the readiness check.
REDIS_TIMEOUT = 1.0
#: Seconds between two looks of the hub probe.
PROBE_PERIOD = 0.5
#: How many of its latest looks the probe remembers (``HubProbe.max_lag``).
PROBE_KEEP = 10


class HubProbe:
    """How late the hub runs a timer: a cheap measure of hub lag.

    A loop timer (no greenlet) fires every ``period`` seconds; each time it
    notes how much later than planned it ran — the time the hub spent on
    other work (a callback, a greenlet that did not yield) before it could.
    ``lag`` is the latest figure, ``max_lag`` the largest of the last
    :data:`PROBE_KEEP`. The timer does not keep the hub alive (``ref=False``).
    Made and started in the hub's own thread; see :func:`hub_probe`.
    """

    def __init__(self, hub: Hub, period: float = PROBE_PERIOD) -> None:
        if isinstance(period, bool) or not isinstance(period, (int, float)) or not period > 0:
            raise ValueError("period must be a positive number of seconds; got %r" % (period,))
        self.hub = hub
        self.period = float(period)
        #: the latest lateness (seconds), None before the first look
        self.lag: Optional[float] = None
        self._recent: Deque[float] = deque(maxlen=PROBE_KEEP)
        self._timer: Any = None
        self._planned = 0.0

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._timer is not None

    @property
    def max_lag(self) -> Optional[float]:
        """The largest lateness of the latest looks (seconds), or None before the first."""
        return max(self._recent) if self._recent else None

    def start(self) -> None:
        """Start looking (in the hub's thread); a no-op if already started."""
        if self._timer is not None:
            return
        self._timer = timer = self.hub.loop.timer(self.period, self.period, ref=False)
        self._planned = monotonic() + self.period
        timer.start(self._look)

    def stop(self) -> None:
        """Stop looking; the figures stay."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.close()

    def _look(self) -> None:
        # A hub callback: reads the clock and notes; nothing that blocks. The
        # repeating timer keeps its times a period apart, or (after a late
        # turn) starts again a period from the loop's time of the turn.
        now = monotonic()
        lag = max(0.0, now - self._planned)
        self.lag = lag
        self._recent.append(lag)
        planned = self._planned + self.period
        self._planned = planned if planned > now else now + self.period


_probes: "weakref.WeakKeyDictionary[Hub, HubProbe]" = weakref.WeakKeyDictionary()


def hub_probe(supervisor: Optional[TaskSupervisor] = None) -> Optional[HubProbe]:
    """The started :class:`HubProbe` of the supervisor's hub (made and started
    on first use, in that hub's thread), or None while the supervisor has no
    hub or when called from another OS thread before the probe exists."""
    supervisor = supervisor_or_default(supervisor)
    hub = supervisor.bound_hub
    if hub is None:
        return None
    probe = _probes.get(hub)
    if probe is None:
        if not hubsafe.in_hub_thread(hub):
            return None
        probe = _probes[hub] = HubProbe(hub)
    if not probe.running and hubsafe.in_hub_thread(hub):
        probe.start()
    return probe


def _answer_time(hub: Hub, bound: float) -> Optional[float]:
    """Seconds the hub took to run a callback handed to it now, or None if it
    did not within ``bound``."""
    t0 = monotonic()
    if hubsafe.in_hub_thread(hub):
        waiter: Waiter[None] = Waiter(hub)
        hub.loop.run_callback(waiter.switch, None)
        try:
            with gevent.Timeout(bound):
                waiter.get()
        except gevent.Timeout:
            return None
        return monotonic() - t0
    try:
        hubsafe.call_in_hub(hub, lambda: None, timeout=bound)
    except hubsafe.HubNotRunning:
        return None
    return monotonic() - t0


def _number(value: Any, parameter: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s must be a number; got %r" % (parameter, value))
    if not value > 0:
        raise ValueError("%s must be more than 0; got %r" % (parameter, value))
    return float(value)


def check_health(supervisor: Optional[TaskSupervisor] = None, bound: float = HUB_BOUND) -> Dict[str, Any]:
    """Is this process alive (see the module docstring)? A JSON-ready dict:
    ``ok``, ``reasons``, ``pid``, ``supervisor`` (its id), ``hub_answer``
    (seconds the hub took to run a callback, None past ``bound``) and
    ``hub_lag`` (the probe's largest recent lateness, None before its first look)."""
    bound = _number(bound, "bound")
    supervisor = supervisor_or_default(supervisor)
    reasons: List[str] = []
    answer: Optional[float] = None
    lag: Optional[float] = None
    hub = supervisor.bound_hub
    if not supervisor.is_active():
        reasons.append("supervisor %s is not active" % supervisor.id)
    if hub is not None:
        probe = hub_probe(supervisor)
        answer = _answer_time(hub, bound)
        if answer is None:
            reasons.append("the hub did not answer within %.3g s" % bound)
        lag = probe.max_lag if probe is not None else None
        if lag is not None and lag > bound:
            reasons.append("the hub ran %.3f s late in the last %.3g s (bound %.3g s)"
                           % (lag, PROBE_KEEP * (probe.period if probe is not None else PROBE_PERIOD), bound))
    return {"ok": not reasons, "reasons": reasons, "pid": os.getpid(), "supervisor": supervisor.id,
            "hub_answer": answer, "hub_lag": lag, "time": time.time()}


# -- readiness ---------------------------------------------------------------------------------
_crons: Dict[Any, Any] = {}


def _cron(expr: str, tz: Any) -> Any:
    key = (expr, tz)
    schedule = _crons.get(key)
    if schedule is None:
        from ..cron import CronSchedule

        if len(_crons) > 256:
            _crons.clear()
        schedule = _crons[key] = CronSchedule(expr, tz)
    return schedule


def overdue(info: Dict[str, Any], now: Optional[float] = None) -> Optional[tuple]:
    """For an interval or cron worker's ``get_info()``: ``(seconds overdue,
    its period)`` — how long ago its next run was due, and the time between
    two of its runs — or None when that cannot be told (not an interval
    worker, stopped, never ran, or a delay worker's run in progress: its next
    time comes after the run)."""
    if info.get("kind") not in ("interval", "cron") or not info.get("active"):
        return None
    now = time.time() if now is None else now
    next_run, last_run = info.get("next_run"), info.get("last_run")
    cron = info.get("cron")
    if cron is not None:
        schedule = _cron(cron, info.get("tz"))
        due = next_run
        if due is None:
            if last_run is None:
                return None
            due = schedule.next_fire(last_run)
        period = schedule.next_fire(due) - due
    elif info.get("interval") is not None:
        period = float(info["interval"])
        due = next_run
        if due is None:
            if last_run is None:
                return None
            due = last_run + period + (info.get("delay_before") or 0.0)
    else:
        period = float(info.get("delay") or 0.0) + float(info.get("delay_before") or 0.0)
        due = next_run
        if due is None:
            return None
    if period <= 0:
        return None
    return now - due, period


def _is_redis_queue(q: Any) -> bool:
    streams = sys.modules.get("gworker.redis.streams")
    return streams is not None and isinstance(q, streams.RedisStreamQueue)  # type: ignore[attr-defined]


def _redis_unreachable(q: Any, timeout: float) -> Optional[str]:
    """None when the queue's Redis answered within ``timeout``, else why not."""
    import redis

    try:
        with gevent.Timeout(timeout):
            q.pending()
    except gevent.Timeout:
        return "no answer within %.3g s" % timeout
    except redis.ResponseError:
        return None  # it answered (the group may not exist yet: the worker makes it)
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        return "%s: %s" % (type(exc).__name__, exc)
    return None


def check_ready(
    supervisor: Optional[TaskSupervisor] = None,
    workers: Optional[WorkerSet] = None,
    overdue_periods: float = OVERDUE_PERIODS,
    redis_timeout: float = REDIS_TIMEOUT,
) -> Dict[str, Any]:
    """Should this process get traffic (see the module docstring)? A
    JSON-ready dict: ``ok``, ``reasons``, ``pid``, ``supervisor``, ``overdue``
    (worker name → seconds, for each overdue worker) and ``redis``
    (``"stream/group"`` → ``"ok"`` or why not). ``workers``: the
    :class:`~gworker.integrations.WorkerSet` whose start is awaited (default
    :data:`~gworker.integrations.server_workers`; its own supervisor is used
    when ``supervisor`` is not given)."""
    overdue_periods = _number(overdue_periods, "overdue_periods")
    redis_timeout = _number(redis_timeout, "redis_timeout")
    if workers is not None and not isinstance(workers, WorkerSet):
        raise TypeError("workers must be a WorkerSet; got %r" % (workers,))
    if workers is None:
        workers = server_workers
    if supervisor is None and workers is not server_workers:
        supervisor = workers.supervisor
    supervisor = supervisor_or_default(supervisor)
    hub = supervisor.bound_hub
    if hub is not None and not hubsafe.in_hub_thread(hub):
        return hubsafe.call_in_hub(hub, check_ready, supervisor, workers, overdue_periods, redis_timeout,
                                   timeout=HUB_BOUND + redis_timeout * 4)
    reasons: List[str] = []
    late: Dict[str, float] = {}
    reached: Dict[str, str] = {}
    if not supervisor.is_active():
        reasons.append("supervisor %s is not active" % supervisor.id)
    registered = workers.registered()
    if registered and not workers.is_started():
        reasons.append("the workers are not started in this process (WorkerSet.start() has not run)")
    else:
        for w in registered:
            if hasattr(w, "is_active") and not w.is_active():
                reasons.append("worker %s is not running" % w.name)
    now = time.time()
    seen_queues: Dict[int, None] = {}
    for w in list(supervisor.get_schedulers()):
        if not w.is_active():
            continue
        info = w.get_info()
        late_by = overdue(info, now)
        if late_by is not None and late_by[0] > overdue_periods * late_by[1]:
            late[w.name] = late_by[0]
            reasons.append("worker %s is overdue by %.3g s (more than %g of its %.3g s periods)"
                           % (w.name, late_by[0], overdue_periods, late_by[1]))
        get_queue = getattr(w, "get_queue_obj", None)
        q = get_queue() if get_queue is not None else None
        if q is not None and id(q) not in seen_queues and _is_redis_queue(q):
            seen_queues[id(q)] = None
            why = _redis_unreachable(q, redis_timeout)
            reached["%s/%s" % (q.stream, q.group)] = "ok" if why is None else why
            if why is not None:
                reasons.append("worker %s: Redis queue %s (group %s) cannot reach Redis: %s"
                               % (w.name, q.stream, q.group, why))
    return {"ok": not reasons, "reasons": reasons, "pid": os.getpid(), "supervisor": supervisor.id,
            "overdue": late, "redis": reached, "time": time.time()}


# -- WSGI --------------------------------------------------------------------------------------
def health_app(check: Callable[[], Dict[str, Any]]) -> Callable[..., Any]:
    """A WSGI app answering ``GET``/``HEAD`` with ``check()`` as JSON: ``200 OK``
    when its ``ok`` is true, else ``503 Service Unavailable`` (405 for other
    methods). E.g. ``health_app(lambda: check_ready(workers=my_set))``."""
    import json

    if not callable(check):
        raise TypeError("check must be callable; got %r" % (check,))

    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            body = b'{"error": "method not allowed"}'
            start_response("405 Method Not Allowed", [
                ("Content-Type", "application/json"), ("Allow", "GET, HEAD"),
                ("Content-Length", str(len(body)))])
            return [body]
        result = check()
        body = json.dumps(result, default=repr).encode("utf-8")
        start_response("200 OK" if result.get("ok") else "503 Service Unavailable", [
            ("Content-Type", "application/json"), ("Cache-Control", "no-store"),
            ("Content-Length", str(len(body)))])
        return [b""] if method == "HEAD" else [body]

    return app
