"""Time limits of process-pool calls: ``ProcessPool.submit(..., timeout=)``.

A call still running at its limit fails with ``RunTimeout``; its child is
killed and replaced; the calls written after it into that child run elsewhere.
The limit counts from when the call starts in its child, never from its
submission. Real child processes throughout (functions in
``tests/proc_limit_funcs.py`` and ``tests/proc_funcs.py``).
"""
import math
import os
import time

import gevent
import psutil
import pytest

from conftest import native_thread, wait_until

import proc_funcs as pf
import proc_limit_funcs as lf
from gworker import TASK_NORMAL, RunTimeout
from gworker.processes import ChildProcessDied, PoolClosed, ProcessPool

ME = psutil.Process()
#: how late a cut-off may come on a loaded 2-core machine (the limit is enforced
#: by a timer in the parent, then SIGKILL and the child's reaping)
LATE = 1.5


def up(pool, n=1):
    """``pool`` once its ``n`` children are up and serve calls."""
    wait_until(lambda: pool.size == n)
    for result in [pool.submit(pf.sleep_then, (0.05,)) for _ in range(n)]:
        result.get(timeout=10)
    return pool


@pytest.fixture
def pool1():
    p = up(ProcessPool(1))
    yield p
    p.shutdown(timeout=5)


@pytest.fixture(autouse=True)
def _no_children_left():
    yield
    wait_until(lambda: not ME.children(recursive=True), timeout=5)


def reaped(pid):
    return not psutil.pid_exists(pid)  # (a zombie still "exists")


# -- a call past its limit ---------------------------------------------------------
def test_a_call_past_its_limit_fails_and_its_child_is_replaced(pool1):
    old = pool1.pids[0]
    started = time.monotonic()
    result = pool1.submit(pf.sleep_then, (30, "late"), timeout=0.3)
    with pytest.raises(RunTimeout) as info:
        result.get(timeout=10)
    took = time.monotonic() - started
    assert 0.3 <= took < 0.3 + LATE
    err = info.value
    assert err.seconds == 0.3 and "proc_funcs.sleep_then" in err.what
    assert "ran past its time limit of 0.3 s" in str(err)
    assert result.exception() is err and not result.successful()
    # Killed at once (not left to finish or to a later clean-up), reaped (no
    # zombie), and replaced: the pool keeps its size.
    wait_until(lambda: reaped(old), timeout=LATE)
    wait_until(lambda: pool1.size == 1)
    assert old not in pool1.pids
    assert pool1.timeouts == 1
    assert pool1.submit(lf.echo_pid, ("next",)).get(timeout=10) == ("next", pool1.pids[0])
    assert pool1.timeouts == 1


def test_calls_written_behind_the_cut_off_one_run_in_another_child():
    pool = ProcessPool(1)
    try:
        # Submitted before the child is up: a backlog, so all are written
        # ahead into the same child. The doomed call's limit starts when the
        # reply of the call before it is read.
        before = pool.submit(lf.echo_pid, ("before",))
        doomed = pool.submit(pf.sleep_then, (30,), timeout=0.3)
        behind = [pool.submit(lf.echo_pid, (i,)) for i in range(6)]
        wait_until(lambda: pool.busy == 1)
        assert pool.pending == 0  # all in the one child's window
        old = pool.pids[0]
        assert before.get(timeout=10) == ("before", old)
        started = time.monotonic()
        with pytest.raises(RunTimeout):
            doomed.get(timeout=10)
        assert time.monotonic() - started < 0.3 + LATE
        # Not failed: back to the head of the queue, in order, run by the new child.
        done = [r.get(timeout=10) for r in behind]
        assert [value for value, _ in done] == list(range(6))
        assert {pid for _, pid in done} == set(pool.pids) and old not in pool.pids
        wait_until(lambda: reaped(old))
        assert pool.timeouts == 1
    finally:
        pool.shutdown(timeout=5)


def test_cut_offs_amid_a_backlog_of_timed_calls_over_two_children():
    pool = up(ProcessPool(2), 2)
    try:
        first = [pool.submit(pf.echo, (i,), timeout=5) for i in range(100)]
        doomed = [pool.submit(pf.sleep_then, (30,), timeout=0.2) for _ in range(2)]
        then = [pool.submit(pf.echo, (i,), timeout=5) for i in range(100, 200)]
        assert [r.get(timeout=10) for r in first + then] == list(range(200))
        for r in doomed:
            with pytest.raises(RunTimeout):
                r.get(timeout=10)
        assert pool.timeouts == 2
        wait_until(lambda: pool.size == 2)
        assert pool.submit(pf.echo, ("after",), timeout=5).get(timeout=10) == "after"
    finally:
        pool.shutdown(timeout=5)


def test_a_call_within_its_limit_is_unaffected(pool1):
    pid = pool1.pids[0]
    assert pool1.submit(pf.sleep_then, (0.1, "ok"), timeout=2).get(timeout=10) == "ok"
    # Many quick timed calls, written ahead in windows: each limit restarts.
    results = [pool1.submit(pf.echo, (i,), timeout=2) for i in range(300)]
    assert [r.get(timeout=10) for r in results] == list(range(300))
    assert pool1.apply(pf.add, (1, 2), timeout=2) == 3
    assert pool1.apply_async(pf.add, (2, 2), timeout=2).get(timeout=10) == 4
    assert pool1.pids == [pid] and pool1.timeouts == 0


# -- when the limit starts ---------------------------------------------------------
def test_the_limit_does_not_count_time_queued_in_the_pool(pool1):
    long = pool1.submit(pf.sleep_then, (0.5, "long"))
    timed = pool1.submit(pf.sleep_then, (0.1, "timed"), timeout=0.3)
    assert pool1.pending == 1  # it waits in the pool's queue behind the long call
    assert long.get(timeout=10) == "long"
    assert timed.get(timeout=10) == "timed"
    assert pool1.timeouts == 0


def test_the_limit_does_not_count_time_behind_a_call_in_the_same_child():
    pool = ProcessPool(1)
    try:
        long = pool.submit(pf.sleep_then, (0.5, "long"))
        timed = pool.submit(pf.sleep_then, (0.1, "timed"), timeout=0.3)
        wait_until(lambda: pool.busy == 1)
        assert pool.pending == 0  # written ahead: the child has it behind the long one
        assert long.get(timeout=10) == "long"
        assert timed.get(timeout=10) == "timed"
        assert pool.timeouts == 0
    finally:
        pool.shutdown(timeout=5)


def test_the_limit_does_not_count_the_childs_initializer():
    pool = ProcessPool(1, initializer=lf.slow_init, initargs=(0.5,))
    try:
        # Written to the child as it starts, before its initializer is done.
        timed = pool.submit(pf.sleep_then, (0.1, "timed"), timeout=0.3)
        assert timed.get(timeout=10) == "timed"
        assert pool.timeouts == 0
    finally:
        pool.shutdown(timeout=5)


# -- the edges ---------------------------------------------------------------------
def test_a_reply_read_before_the_limit_is_judged_wins(tmp_path):
    """The parent is busy (a callback waits in the greenlet that reads this
    child's results) while the timed call answers and its limit passes: the
    reply is in the socket when the parent looks, so the call succeeds."""
    done = tmp_path / "done"
    pool = ProcessPool(1)
    try:
        first = pool.submit(pf.echo, ("first",))
        timed = pool.submit(lf.touch_then, (str(done), "timed"), timeout=0.2)
        slept = []

        def busy_reader(_result):
            wait_until(done.exists)  # the timed call ran (its reply follows at once)
            gevent.sleep(0.4)  # ... and its limit passes, counted from first's reply
            slept.append(True)

        first.rawlink(busy_reader)
        assert timed.get(timeout=10) == "timed"
        assert slept and first.get() == "first"
        assert pool.timeouts == 0
    finally:
        pool.shutdown(timeout=5)


def test_a_child_that_dies_on_its_own_before_the_limit(pool1):
    result = pool1.submit(pf.exit_hard, (3,), timeout=5)
    with pytest.raises(ChildProcessDied) as info:
        result.get(timeout=10)
    assert info.value.exitcode == 3
    assert pool1.timeouts == 0
    assert pool1.submit(pf.echo, ("next",), timeout=5).get(timeout=10) == "next"


def test_shutdown_waits_no_longer_than_a_running_calls_limit():
    pool = ProcessPool(1)
    doomed = pool.submit(pf.sleep_then, (30,), timeout=0.3)
    behind = pool.submit(pf.echo, ("behind",))  # written ahead into the same child
    wait_until(lambda: pool.busy == 1)
    assert pool.pending == 0
    started = time.monotonic()
    pool.shutdown()  # (no timeout: the call's own limit ends it)
    assert time.monotonic() - started < 0.3 + LATE
    with pytest.raises(RunTimeout):
        doomed.get(timeout=10)
    with pytest.raises(PoolClosed, match="shut down before"):
        behind.get(timeout=10)
    assert not pool.pids and pool.timeouts == 1


def test_terminate_fails_a_timed_call_as_any_running_call(pool1, tmp_path):
    begun = tmp_path / "begun"
    result = pool1.submit(pf.sleep_forever_once_announced, (str(begun),), timeout=30)
    wait_until(begun.exists)
    pool1.terminate()
    with pytest.raises(PoolClosed, match="terminated"):
        result.get(timeout=10)
    assert pool1.timeouts == 0


def test_a_retiring_child_is_cut_off_and_replaced_like_any():
    pool = ProcessPool(1, maxtasksperchild=2)
    try:
        first = pool.submit(lf.echo_pid, (1,)).get(timeout=10)[1]
        doomed = pool.submit(pf.sleep_then, (30,), timeout=0.3)  # the child's last call
        with pytest.raises(RunTimeout):
            doomed.get(timeout=10)
        pids = [pool.submit(lf.echo_pid, (i,)).get(timeout=10)[1] for i in range(3)]
        assert first not in pids
        assert pids[0] == pids[1] != pids[2]  # the replacement also serves two calls
        assert pool.timeouts == 1
    finally:
        pool.shutdown(timeout=5)


def test_a_timed_call_from_another_os_thread(pool1):
    def call():
        return pool1.submit(pf.sleep_then, (30,), timeout=0.3).get(timeout=10)

    with pytest.raises(RunTimeout):
        native_thread(call).join(10)
    assert pool1.timeouts == 1


def test_the_supervisor_passes_the_limit_on_and_counts_it(supervisor):
    supervisor.create_mp_pool(processes=1)
    up(supervisor.mp_pool)
    assert supervisor.run_in_mp_pool(pf.add, (1, 2), {}, TASK_NORMAL, timeout=5) == 3
    with pytest.raises(RunTimeout):
        supervisor.run_in_mp_pool(pf.sleep_then, (30,), {}, TASK_NORMAL, timeout=0.3)
    assert supervisor.get_info().mp_pool["timeouts"] == 1
    assert supervisor.run_in_mp_pool(pf.add, (2, 2), {}, TASK_NORMAL) == 4
    with pytest.raises(ValueError, match="timeout"):
        supervisor.run_in_mp_pool(pf.add, (1, 2), {}, TASK_NORMAL, timeout=0)


# -- parameters ------------------------------------------------------------------
@pytest.mark.parametrize("timeout, error", [
    ("1", TypeError), (True, TypeError), ([1], TypeError),
    (0, ValueError), (-1, ValueError), (math.nan, ValueError),
])
def test_bad_timeouts_are_refused_naming_the_parameter(pool1, timeout, error):
    for submit in (
        lambda: pool1.submit(pf.echo, (1,), timeout=timeout),
        lambda: pool1.submit_with_id(pf.echo, (1,), None, None, timeout),
        lambda: pool1.apply_async(pf.echo, (1,), timeout=timeout),
        lambda: pool1.apply(pf.echo, (1,), timeout=timeout),
    ):
        with pytest.raises(error, match="timeout"):
            submit()
    assert pool1.pending == 0 and pool1.busy == 0  # nothing was submitted
    assert pool1.submit(pf.echo, (1,), timeout=5).get(timeout=10) == 1
