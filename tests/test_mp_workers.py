"""Static ``run`` executors go to the supervisor's process pool; TT_MP tasks too."""
import os
import sys
import threading
import time

import psutil
import pytest
from gevent.event import Event

from gworker import TASK_HIGH, TASK_LOW, TT_MP, TaskSupervisor

import mp_workers
from conftest import Ticker, wait_until


def children():
    return psutil.Process().children(recursive=True)


@pytest.fixture
def mp_supervisor():
    sup = TaskSupervisor()
    sup.start()
    sup.create_mp_pool(processes=2)
    yield sup
    sup.stop(wait=10)
    assert sup.mp_pool is None
    wait_until(lambda: not children(), 10)


def test_queue_worker_runs_in_another_process_in_order_without_worker_keyword(mp_supervisor):
    w = mp_workers.PidQueueWorker(supervisor=mp_supervisor)
    w.start("arg", k=1)
    for i in range(20):
        w.put_threadsafe(i)
    wait_until(lambda: len(w.results) == 20, 15)
    w.stop()
    assert [r[0] for r in w.results] == list(range(20))
    pids = {r[1] for r in w.results}
    assert os.getpid() not in pids
    assert pids <= {c.pid for c in children()} | pids  # ran in our children
    task, pid, args, keys = w.results[0]
    assert args == ("arg",)
    assert keys == ["_name", "_task_id", "k", "o"]  # no _worker across the process boundary


def test_static_interval_worker_with_process_result_that_stops_it(mp_supervisor):
    w = mp_workers.CountingIntervalWorker(interval=0.01, supervisor=mp_supervisor)
    w.start()
    wait_until(w.is_stopped, 15)
    assert len(w.seen) == 3 and os.getpid() not in w.seen


def test_static_run_without_a_pool_runs_in_the_hub(supervisor):
    w = mp_workers.PidQueueWorker(supervisor=supervisor)
    w.start()
    w.put_threadsafe(1)
    wait_until(lambda: w.runs == 1)
    w.stop()
    assert w.errors == 0
    assert w.results == []  # process_result is for results coming back from a child


def test_ticker_keeps_ticking_while_200_items_go_through_the_pool(mp_supervisor):
    with Ticker(0.005) as ticker:
        w = mp_workers.PidQueueWorker(supervisor=mp_supervisor)
        w.start()
        for i in range(200):
            w.put_threadsafe(i)
        wait_until(lambda: len(w.results) == 200, 20)
        w.stop()
    assert len(ticker.gaps) > 3 and ticker.max_busy < 0.05


def test_exception_in_child_then_a_normal_item(mp_supervisor):
    errors = []
    w = mp_workers.PidQueueWorker(supervisor=mp_supervisor,
                                  on_error=lambda: errors.append(sys.exc_info()[1]))
    w.start()
    w.put_threadsafe("boom")
    w.put_threadsafe("fine")
    wait_until(lambda: len(w.results) == 1, 15)
    w.stop()
    assert isinstance(errors[0], ValueError) and "boom in the child" in str(errors[0])
    assert w.results[0][0] == "fine"


def test_sigkill_of_the_child_mid_task_then_a_normal_item(mp_supervisor):
    errors = []
    w = mp_workers.PidQueueWorker(supervisor=mp_supervisor,
                                  on_error=lambda: errors.append(sys.exc_info()[1]))
    w.start()
    t0 = time.monotonic()
    w.put_threadsafe("die")
    w.put_threadsafe("after")
    wait_until(lambda: len(w.results) == 1, 30)
    assert time.monotonic() - t0 < 30
    w.stop()
    from gworker.processes import ChildProcessDied

    assert isinstance(errors[0], ChildProcessDied)
    assert w.results[0][0] == "after" and w.is_stopped()


def test_unpicklable_argument_is_a_clear_error(mp_supervisor):
    errors = []
    w = mp_workers.PidQueueWorker(supervisor=mp_supervisor,
                                  on_error=lambda: errors.append(sys.exc_info()[1]))
    w.start()
    w.put_threadsafe(threading.Lock())
    w.put_threadsafe("ok")
    wait_until(lambda: len(w.results) == 1, 15)
    w.stop()
    assert isinstance(errors[0], TypeError) and "pickle" in str(errors[0]).lower()


def test_a_long_run_of_unpicklable_tasks_fails_each_one(mp_supervisor, logged_errors):
    # Queued behind a busy pool, then admitted one after another: each fails at
    # once and gives its slot back (no nesting that ends in RecursionError).
    from gworker.processes import TaskPickleError

    mp_supervisor.set_mp_pool(pool_size=1)
    blocker = mp_supervisor.put_task(mp_workers.sleep_then, args=(0.3, "done"), tt=TT_MP)
    bad = [mp_supervisor.put_task(mp_workers.square, args=(threading.Lock(),), tt=TT_MP)
           for _ in range(3000)]
    last = mp_supervisor.put_task(mp_workers.square, args=(3,), tt=TT_MP)
    assert blocker.wait(15) == "done"
    assert last.wait(15)[0] == 9
    assert all(t.is_failed() and isinstance(t.exception, TaskPickleError) for t in bad)
    assert mp_supervisor.mp_admission.running == 0
    assert len(logged_errors) == 3000


def test_no_child_processes_left_after_supervisor_stop():
    sup = TaskSupervisor()
    sup.start()
    sup.set_mp_pool(pool_size=2, reserve_normal=1, reserve_high=0)
    assert sup.mp_pool.processes == 3
    w = mp_workers.PidQueueWorker(supervisor=sup)
    w.start()
    w.put_threadsafe(1)
    wait_until(lambda: len(w.results) == 1, 15)
    assert children()
    sup.stop()
    assert sup.mp_pool is None
    wait_until(lambda: not children(), 10)


def test_mp_task_with_callback_and_task_id(mp_supervisor):
    got = Event()
    results = []
    task = mp_supervisor.put_task(mp_workers.square, args=(7,), tt=TT_MP, priority=TASK_LOW,
                                  callback=lambda r: (results.append(r), got.set()))
    assert got.wait(15)
    assert results == [(49, ["_task_id"])]
    assert task.result == (49, ["_task_id"]) and task.is_completed()


def test_mp_task_gets_its_task_id_and_keeps_the_callers_keywords(mp_supervisor):
    mine = {"a": 1, "_task_id": "not mine to set"}
    task = mp_supervisor.put_task(mp_workers.kwargs_of, kwargs=mine, tt=TT_MP)
    assert task.wait(15) == {"a": 1, "_task_id": task.id}
    assert mine == {"a": 1, "_task_id": "not mine to set"}  # the caller's dict is not touched


def test_tt_mp_without_a_pool_is_refused(supervisor):
    with pytest.raises(RuntimeError, match="create_mp_pool"):
        supervisor.put_task(mp_workers.square, args=(1,), tt=TT_MP)


def test_set_mp_pool_bad_input(supervisor):
    with pytest.raises(ValueError, match="pool_size"):
        supervisor.set_mp_pool(pool_size=-1)
    assert supervisor.mp_pool is None


def test_mp_task_callbacks_run_in_order_in_one_greenlet(mp_supervisor):
    import gevent as _gevent

    seen = []
    tasks = [mp_supervisor.put_task(mp_workers.square, args=(i,), tt=TT_MP,
                                    callback=lambda r: seen.append((r[0], _gevent.getcurrent())))
             for i in range(20)]
    for task in tasks:
        task.wait(15)
    wait_until(lambda: len(seen) == 20, 5)
    assert sorted(r for r, _ in seen) == [i * i for i in range(20)]
    # no greenlet per callback: one drainer runs those that finished together
    assert len({g for _, g in seen}) < len(seen)



#: README: "from 1 to 64 calls (`mp_pool.window`; it starts at 16)"
WINDOW_START, WINDOW_MAX = 16, 64


def test_tasks_waiting_for_admission_let_the_pool_write_ahead(monkeypatch):
    # put_task(TT_MP) admits a window of calls per child at a time; the calls
    # still waiting for admission count as backlog, so a busy child is kept a
    # window of calls ahead instead of waiting a round trip for most calls
    # (without that, at most 5 were ever in a child's socket here). Tiny calls
    # make the window grow past where it starts.
    from gworker.processes import pool as processes

    # (How many calls sit in one child's socket is no public figure: the pool's
    # reply handler, which sees the child's calls, is the only place to count.)
    depths = []
    on_reply = processes.ProcessPool._on_reply

    def recording(self, child, kind, payload):
        depths.append(len(child.calls))  # calls written to it, the answered one included
        return on_reply(self, child, kind, payload)

    monkeypatch.setattr(processes.ProcessPool, "_on_reply", recording)
    sup = TaskSupervisor()
    sup.start()
    try:
        pool = sup.create_mp_pool(processes=2)
        assert pool.window == WINDOW_START
        assert sup.mp_admission.pool_size == 2 * WINDOW_START
        n = 1000
        done = Event()
        finished = [0]

        def callback(_result):
            finished[0] += 1
            if finished[0] == n:
                done.set()

        for i in range(n):
            sup.put_task(mp_workers.echo_task, args=(i,), tt=TT_MP, callback=callback)
        assert done.wait(30)
    finally:
        sup.stop()
    steady = depths[n // 4:3 * n // 4]
    assert max(steady) >= 2 * WINDOW_START, "children held at most %d calls" % max(steady)
    assert max(steady) <= WINDOW_MAX


def test_long_calls_shrink_the_window_so_urgent_tasks_wait_behind_few(mp_supervisor):
    # 10 ms calls: a window of one call per child, and admission follows it, so
    # a TASK_HIGH task waits behind at most the calls already admitted (with a
    # fixed window of 16 per child it waited behind 32).
    pool = mp_supervisor.mp_pool
    low = [mp_supervisor.put_task(mp_workers.sleep_then, args=(0.01, i), tt=TT_MP, priority=TASK_LOW)
           for i in range(100)]
    wait_until(lambda: pool.window == 1 and mp_supervisor.mp_admission.running <= 2, 10)
    assert mp_supervisor.mp_admission.pool_size == 2
    finished_before = sum(t.is_completed() for t in low)
    high = mp_supervisor.put_task(mp_workers.sleep_then, args=(0, "high"), tt=TT_MP, priority=TASK_HIGH)
    assert high.wait(10) == "high"
    overtaken = sum(t.is_completed() for t in low) - finished_before
    assert overtaken <= 4, "the urgent task waited for %d calls" % overtaken
    for task in low:
        task.wait(15)


def test_set_mp_pool_fixes_admission(mp_supervisor):
    mp_supervisor.set_mp_pool(pool_size=3)
    tasks = [mp_supervisor.put_task(mp_workers.echo_task, args=(i,), tt=TT_MP) for i in range(300)]
    for task in tasks:
        task.wait(15)
    assert mp_supervisor.mp_admission.pool_size == 3  # however the window moved


def test_a_process_call_that_waited_long_for_admission_names_its_worker(mp_supervisor, caplog):
    # A static run's call waits for the process pool's admission as a task
    # does; the starvation warning says whose call it was.
    mp_supervisor.set_mp_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    mp_supervisor.timeout_warning = 0.05
    warned = []
    mp_supervisor.timeout_warning_func = warned.append
    blocker = mp_supervisor.put_task(mp_workers.sleep_then, args=(0.3, None), tt=TT_MP, priority=TASK_LOW)
    wait_until(blocker.is_started, 5)
    w = mp_workers.PidQueueWorker(priority=TASK_LOW, supervisor=mp_supervisor)
    with caplog.at_level("WARNING", logger="gworker"):
        w.start()
        w.put_threadsafe("late")
        wait_until(lambda: len(w.results) == 1, 15)
    w.stop()
    assert warned == [w]
    assert any("worker %s" % w.name in r.getMessage() for r in caplog.records)
