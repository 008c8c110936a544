"""What a stopped worker leaves behind: nothing.

For every kind of worker: start it, let it run (its executor sets an event),
stop it, and count what a user can see — live greenlets (beyond the
supervisor's own and its aloop's, counted once both are up), the thread pool's
slots (running and waiting), the supervisor's timer entries — against what
there was before the start. Then ten start/stop cycles of the same worker.
"""
import gc
import weakref

import gevent
import pytest
from gevent.event import Event
from gevent.queue import Queue

from gworker import (
    BackgroundAsyncWorker, BackgroundEventWorker, BackgroundIntervalWorker, BackgroundQueueWorker,
    BackgroundWorker, background_worker,
)

from conftest import greenlet_count, wait_until


def _sync_executor(ran):
    def run(*args, **kw):
        ran.set()
    return run


def _async_executor(ran):
    async def run(*args, **kw):
        ran.set()
    return run


def _worker(kind, supervisor, ran):
    """A worker of ``kind`` and how to make it run once started."""
    sync, coro = _sync_executor(ran), _async_executor(ran)
    if kind == "worker":
        return BackgroundWorker(func=sync, supervisor=supervisor, poll_delay=0.01), None
    if kind == "async_worker":
        return BackgroundAsyncWorker(func=coro, supervisor=supervisor, poll_delay=0.01), None
    if kind == "queue_sync":
        w = BackgroundQueueWorker(func=sync, supervisor=supervisor)
        return w, lambda: w.put_threadsafe("item")
    if kind == "queue_async":
        w = BackgroundQueueWorker(func=coro, supervisor=supervisor)
        return w, lambda: w.put_threadsafe("item")
    if kind == "queue_object":
        q = Queue()
        w = BackgroundQueueWorker(func=sync, q=q, supervisor=supervisor)
        return w, lambda: q.put("item")
    if kind == "event":
        w = BackgroundEventWorker(func=sync, supervisor=supervisor)
        return w, w.trigger_threadsafe
    if kind == "interval_short":  # <= KEEP_GREENLET: the worker keeps its greenlet
        return BackgroundIntervalWorker(func=sync, interval=0.05, supervisor=supervisor), None
    if kind == "interval_long":  # waits in the timer heap
        return BackgroundIntervalWorker(func=sync, interval=5, supervisor=supervisor), None
    if kind == "decorator":
        w = background_worker(interval=5, supervisor=supervisor)(sync)
        return w, None
    raise AssertionError(kind)


KINDS = ["worker", "async_worker", "queue_sync", "queue_async", "queue_object", "event",
         "interval_short", "interval_long", "decorator"]


def _leftovers(supervisor, baseline):
    pool = supervisor.get_info().thread_pool
    return {
        # (only growth counts: greenlets of earlier tests may end meanwhile —
        # the idle runners of a supervisor not stopped, reaped after a while)
        "greenlets": max(0, greenlet_count() - baseline),
        "running": pool["running"],
        "waiting": pool["waiting"],
        "running (attribute)": supervisor.thread_pool.running,
    }


NOTHING = {"greenlets": 0, "running": 0, "waiting": 0, "running (attribute)": 0}


def _baseline(supervisor):
    # The workers' aloop is the supervisor's, made on first use: make it now so
    # that its greenlet counts as the supervisor's, not as the worker's.
    aloop = supervisor.aloops.for_workers()
    wait_until(aloop.is_active)
    # Likewise the supervisor's runner greenlet (it makes interval runs and
    # tasks, and is reused from call to call): a first task makes it.
    done = Event()
    supervisor.put_task(lambda **kw: done.set())
    assert done.wait(2)
    wait_until(lambda: supervisor.thread_pool.running == 0)
    return greenlet_count(), supervisor.get_info().timers


def _run_once(w, poke, ran):
    ran.clear()
    assert w.start()
    if poke is not None:
        poke()
    assert ran.wait(5), "the executor did not run"
    w.stop()
    assert w.is_stopped() and not w.is_active()


def _settled(supervisor, baseline):
    # A stopped run's greenlet may end at the hub's next turn after stop()
    # returned; allow that turn, then everything must be gone.
    try:
        wait_until(lambda: _leftovers(supervisor, baseline) == NOTHING, timeout=2, step=0.01)
    except AssertionError:
        pass
    return _leftovers(supervisor, baseline)


@pytest.mark.parametrize("kind", KINDS)
def test_a_stopped_worker_leaves_no_greenlet_slot_or_timer(supervisor, kind):
    ran = Event()
    w, poke = _worker(kind, supervisor, ran)
    greenlets, timers = _baseline(supervisor)
    _run_once(w, poke, ran)
    assert _settled(supervisor, greenlets) == NOTHING
    assert supervisor.get_info().timers == timers, "timer entries left by a stopped %s" % kind
    assert [i for i in supervisor.get_info().workers if i["name"] == w.name and i["active"]] == []


@pytest.mark.parametrize("kind", KINDS)
def test_ten_start_stop_cycles_leave_nothing_either(supervisor, kind):
    ran = Event()
    w, poke = _worker(kind, supervisor, ran)
    greenlets, timers = _baseline(supervisor)
    for cycle in range(10):
        _run_once(w, poke, ran)
        left = _settled(supervisor, greenlets)
        assert left == NOTHING, "after cycle %d: %r" % (cycle + 1, left)
        assert supervisor.get_info().timers == timers, "timer entries after cycle %d" % (cycle + 1)


@pytest.mark.parametrize("kind", KINDS)
def test_a_stopped_worker_is_not_kept_alive_by_the_supervisor(supervisor, kind):
    # Nothing of the supervisor's (its timer heap, pool, aloop, worker list)
    # holds on to a stopped worker: dropped by its user, it is collected.
    ran = Event()
    w, poke = _worker(kind, supervisor, ran)
    _run_once(w, poke, ran)
    ref = weakref.ref(w)
    del w, poke
    wait_until(lambda: gc.collect() is not None and ref() is None, timeout=2, step=0.01)
