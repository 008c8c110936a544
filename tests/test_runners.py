"""The runners: admitted calls (interval runs, tasks) are made by greenlets the
supervisor reuses — none is spawned per call; a call that blocks keeps its
runner and does not hold up anyone else's; idle runners are few and end;
calls due together start in priority order; the hub gets its turns."""
import time

import gevent
import pytest
from gevent.event import Event

import gworker
from gworker import (
    TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL, BackgroundIntervalWorker, TaskSupervisor, g,
)
from gworker import _runners

from conftest import Ticker, greenlet_count, wait_until


def test_non_blocking_tasks_and_interval_runs_take_no_greenlet_each(supervisor):
    # 300 tasks and 2 runs each of 20 interval workers, none of which switches:
    # made back to back by the one runner (a greenlet per call would be 340).
    seen = set()

    def task(**kw):
        seen.add(gevent.getcurrent())

    tasks = [supervisor.put_task(task) for _ in range(300)]
    wait_until(lambda: all(t.is_completed() for t in tasks))
    runs = []
    workers = [BackgroundIntervalWorker(func=lambda **kw: (seen.add(gevent.getcurrent()), runs.append(1)),
                                        interval=0.2, supervisor=supervisor) for _ in range(20)]
    for w in workers:
        w.start()
    wait_until(lambda: len(runs) >= 40, timeout=3)
    for w in workers:
        w.stop()
    assert len(seen) <= 2, "%d greenlets made 340 calls that never switched" % len(seen)


def test_a_blocking_run_does_not_delay_the_next_due_run_of_another_worker(supervisor):
    release = Event()
    blocked = Event()
    quick = []

    def blocking(**kw):
        blocked.set()
        release.wait(5)  # keeps its runner

    slow = BackgroundIntervalWorker(func=blocking, interval=0.2, supervisor=supervisor)
    fast = BackgroundIntervalWorker(func=lambda **kw: quick.append(time.monotonic()), interval=0.2,
                                    supervisor=supervisor)
    slow.start()
    assert blocked.wait(2)
    fast.start()
    try:
        wait_until(lambda: len(quick) >= 4, timeout=2)  # while the other one still blocks
        assert not release.is_set()
        gaps = [b - a for a, b in zip(quick, quick[1:])]
        assert max(gaps) < 0.3, "runs of the free worker were held up: %s" % gaps
    finally:
        release.set()
        slow.stop()
        fast.stop()


def _block_then_release(sup, n):
    """Run ``n`` tasks that block at once (``n`` runners), then let them end."""
    release = Event()
    started = []
    tasks = [sup.put_task(lambda **kw: (started.append(1), release.wait(5))) for _ in range(n)]
    wait_until(lambda: len(started) == n)
    release.set()
    wait_until(lambda: all(t.is_completed() for t in tasks))


@pytest.mark.parametrize("idle_timeout", [60.0, 0.3])
def test_idle_runners_are_bounded_and_reaped(monkeypatch, idle_timeout):
    monkeypatch.setattr(_runners, "IDLE_TIMEOUT", idle_timeout)
    sup = TaskSupervisor()
    sup.start()
    try:
        base = greenlet_count()
        _block_then_release(sup, 60)
        if idle_timeout > 1:
            # beyond IDLE_MAX, a runner that runs out of work ends at once
            assert greenlet_count() - base <= _runners.IDLE_MAX
        else:
            # and an idle one ends after IDLE_TIMEOUT
            # (<=: the idle runners of other tests' supervisors may be reaped meanwhile)
            wait_until(lambda: greenlet_count() <= base, timeout=3)
        done = Event()
        sup.put_task(lambda **kw: done.set())  # new work gets a runner again
        assert done.wait(2)
    finally:
        sup.stop(wait=5)
    wait_until(lambda: greenlet_count() <= base, timeout=2)  # a stopped supervisor keeps none


def test_runs_due_together_start_in_priority_order(supervisor):
    order = []
    workers = [BackgroundIntervalWorker(func=lambda priority=p, **kw: order.append(priority), interval=5,
                                        priority=p, supervisor=supervisor)
               for p in (TASK_LOW, TASK_NORMAL, TASK_LOW, TASK_HIGH, TASK_CRITICAL, TASK_NORMAL)]
    for w in workers:  # each first run is due at once: the timer heap fires them in one batch
        w.start()
    wait_until(lambda: len(order) == 6)
    for w in workers:
        w.stop()
    assert order == [TASK_CRITICAL, TASK_HIGH, TASK_NORMAL, TASK_NORMAL, TASK_LOW, TASK_LOW]


def test_a_runner_making_calls_back_to_back_yields_to_the_hub(supervisor):
    # 1,000 tasks of ~50 µs each, none switching: 50 ms of work for one
    # runner, which lets the hub run every SLICE.
    def busy(**kw):
        t = time.perf_counter()
        while time.perf_counter() - t < 0.00005:
            pass

    with Ticker(0.001) as ticker:
        tasks = [supervisor.put_task(busy) for _ in range(1000)]
        wait_until(lambda: all(t.is_completed() for t in tasks), timeout=10)
    assert ticker.max_busy < 0.015, "the hub was held for %.1f ms" % (ticker.max_busy * 1000)


def test_g_is_fresh_for_each_task_a_runner_makes(supervisor):
    seen = []

    def first(**kw):
        g.set("left", "by the first task")
        seen.append(gevent.getcurrent())

    def second(**kw):
        seen.append(gevent.getcurrent())
        return g.get("left"), g.has("left")

    a = supervisor.put_task(first)
    b = supervisor.put_task(second)
    assert b.wait(2) == (None, False)
    assert a.is_completed() and seen[0] is seen[1], "(the same runner made both: the test means something)"


def test_a_runner_killed_in_a_call_is_replaced():
    # stop(cancel_tasks=True) kills a blocked task's runner: later work still runs.
    sup = TaskSupervisor()
    sup.start()
    blocked = Event()
    task = sup.put_task(lambda **kw: (blocked.set(), gevent.sleep(10)))
    assert blocked.wait(2)
    sup.stop(cancel_tasks=True, wait=2)
    assert task.is_completed() and task.status == gworker.TASK_STATUS_CANCELED
    sup.start()
    try:
        assert sup.put_task(lambda **kw: "after").wait(2) == "after"
    finally:
        sup.stop(wait=2)
