"""gworker.processes.ProcessPool: a process pool that never blocks the hub.

Functions sent to the children live in ``tests/proc_funcs.py``: a call is pickled,
and a function travels by reference (module and name), so it must be a
module-level function of an importable module.
"""
import functools
import os
import pickle
import signal
import sys
import textwrap
import threading
import time

import gevent
import gevent.event
import gevent.subprocess as subprocess
import psutil
import pytest

from conftest import Ticker, greenlet_count, native_thread, os_thread_ident, wait_until

import pickled_by_name
import compat_funcs
import proc_funcs as pf
from gworker.processes import (
    ChildProcessDied,
    PoolClosed,
    ProcessPool,
    ProcessResult,
    RemoteError,
    RemoteTraceback,
    ResultTimeout,
    TaskPickleError,
)

ME = psutil.Process()


def children():
    return ME.children(recursive=True)


def open_fds():
    return sorted(os.listdir("/proc/self/fd"))


@pytest.fixture
def pool():
    p = ProcessPool(2)
    wait_until(lambda: p.size == 2)  # children up (and the hub turned) before the test
    yield p
    p.shutdown(timeout=5)
    assert not p.pids
    assert not [c for c in children() if c.pid in p.pids]


@pytest.fixture
def pool1():
    """One child only: makes "which child ran it" deterministic."""
    p = ProcessPool(1)
    wait_until(lambda: p.size == 1)
    yield p
    p.shutdown(timeout=5)


@pytest.fixture(autouse=True)
def _no_children_left():
    yield
    # Every pool of the test is shut down by now: no child may survive it.
    wait_until(lambda: not children(), timeout=5)


# -- results ---------------------------------------------------------------------
def test_results_come_back_in_order(pool):
    results = [pool.submit(pf.add, (i,), {"b": 1000}) for i in range(100)]
    assert all(isinstance(r, ProcessResult) for r in results)
    assert [r.get(timeout=10) for r in results] == [i + 1000 for i in range(100)]
    assert all(r.ready() and r.successful() for r in results)
    assert pool.submit(pf.echo, ({"a": [1, 2]},)).get(timeout=5) == {"a": [1, 2]}


def test_calls_run_in_other_processes(pool):
    pids = {pool.submit(pf.getpid).get(timeout=5) for _ in range(20)}
    assert os.getpid() not in pids
    assert pids <= set(pool.pids)
    assert {c.pid for c in children()} >= pids
    info = pool.submit(pf.child_info).get(timeout=5)
    assert info["ppid"] == os.getpid()
    assert info["monitor"] is False  # the child's fresh hub runs no monitor thread


def test_counts(pool1):
    assert pool1.processes == 1
    wait_until(lambda: pool1.size == 1)
    first = pool1.submit(pf.sleep_then, (0.3, "a"))
    queued = [pool1.submit(pf.echo, (i,)) for i in range(3)]
    assert pool1.busy == 1
    assert pool1.pending + len(queued) >= 3  # queued, or written ahead to the busy child
    assert first.get(timeout=5) == "a"
    assert [r.get(timeout=5) for r in queued] == [0, 1, 2]
    assert (pool1.busy, pool1.pending) == (0, 0)


def test_big_arguments_and_results_travel(pool):
    data = os.urandom(3 * 1024 * 1024)
    assert pool.submit(pf.length, (data,)).get(timeout=10) == len(data)
    assert pool.submit(pf.big, (5 * 1024 * 1024,)).get(timeout=10) == b"x" * (5 * 1024 * 1024)


def test_get_times_out_cooperatively(pool):
    result = pool.submit(pf.sleep_then, (0.5, "late"))
    started = time.monotonic()
    with pytest.raises(ResultTimeout):
        result.get(timeout=0.05)
    assert time.monotonic() - started < 0.4
    assert not result.ready()
    with pytest.raises(ValueError):
        result.successful()
    assert result.get(timeout=5) == "late"


def test_callbacks_run_in_a_greenlet(pool):
    seen = []
    done = gevent.event.Event()
    hub = gevent.get_hub()

    def callback(result):
        seen.append((result.get(), gevent.getcurrent() is not hub))
        done.set()

    result = pool.submit(pf.add, (2, 3))
    result.rawlink(callback)
    assert done.wait(5)
    assert seen == [(5, True)]
    # Added after the result is in: called too.
    late = []
    result.add_done_callback(late.append)
    wait_until(lambda: late == [result])


def test_waiting_inside_a_callback_fails_instead_of_deadlocking(pool1):
    errors = []
    done = gevent.event.Event()

    def callback(result):
        try:
            pool1.submit(pf.echo, (2,)).get(timeout=5)
        except RuntimeError as exc:
            errors.append(exc)
        done.set()

    pool1.submit(pf.echo, (1,)).rawlink(callback)
    assert done.wait(5)
    assert errors and "inside a ProcessResult callback" in str(errors[0])
    assert pool1.submit(pf.echo, (3,)).get(timeout=5) == 3


def test_apply_async_lookalike(pool):
    got = []
    pool.apply_async(pf.add, (1, 2), callback=got.append)
    pool.apply_async(pf.boom, ("no",), error_callback=got.append)
    wait_until(lambda: len(got) == 2)
    assert 3 in got
    assert any(isinstance(x, ValueError) for x in got)
    assert pool.apply(pf.add, (4, 5)) == 9


# -- the hub keeps running ---------------------------------------------------------
def test_ticker_keeps_ticking_while_200_calls_go_through(pool):
    with Ticker(0.005) as ticker:
        batch = [pool.submit(pf.sleep_then, (0.001, i)) for i in range(100)]
        sequential = [pool.submit(pf.echo, (i,)).get(timeout=10) for i in range(100)]
        assert [r.get(timeout=10) for r in batch] == list(range(100))
        assert sequential == list(range(100))
    assert len(ticker.gaps) >= 10
    assert ticker.max_busy < 0.05, "the hub was held for %.1f ms" % (ticker.max_busy * 1000)


def test_child_never_runs_the_parents_greenlets(pool):
    # A greenlet of the parent reports the pid it runs in through a pipe, while
    # a call sleeps cooperatively in the child (the child's hub turns around).
    r, w = os.pipe()
    os.set_blocking(r, False)
    stop = gevent.event.Event()

    def reporter():
        while not stop.is_set():
            os.write(w, b"%d\n" % os.getpid())
            gevent.sleep(0.005)

    g = gevent.spawn(reporter)
    try:
        assert pool.submit(pf.gevent_sleep, (0.2, "ok")).get(timeout=5) == "ok"
    finally:
        stop.set()
        g.join(timeout=2)
    data = b""
    while True:
        try:
            chunk = os.read(r, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.close(w)
    assert {int(x) for x in data.split()} == {os.getpid()}


# -- faults --------------------------------------------------------------------------
def test_exception_in_child_then_a_normal_call(pool1):
    pid = pool1.submit(pf.getpid).get(timeout=5)
    result = pool1.submit(pf.boom, ("bad input",))
    with pytest.raises(ValueError, match="bad input") as info:
        result.get(timeout=5)
    assert not result.successful()
    assert isinstance(result.exception(), ValueError)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in boom" in cause.tb and "ValueError: bad input" in cause.tb
    # The same child keeps serving.
    assert pool1.submit(pf.add, (1, 1)).get(timeout=5) == 2
    assert pool1.submit(pf.getpid).get(timeout=5) == pid


def test_exception_that_cannot_travel_becomes_remote_error(pool1):
    with pytest.raises(RemoteError, match="NeedsTwoArgs"):
        pool1.submit(pf.raise_odd_exception).get(timeout=5)
    assert pool1.submit(pf.add, (2, 2)).get(timeout=5) == 4


def test_system_exit_in_child_is_reported_and_child_replaced(pool1):
    pid = pool1.submit(pf.getpid).get(timeout=5)
    with pytest.raises(RemoteError, match="SystemExit"):
        pool1.submit(pf.sys_exit, (3,)).get(timeout=5)
    assert pool1.submit(pf.getpid).get(timeout=5) != pid


def test_calls_written_behind_a_system_exit_run_in_the_next_child():
    # Submitted before the child is up, the calls behind the exiting one are
    # written ahead into the same child, which exits without starting them:
    # they run in the child that replaces it, not fail as if it had died
    # running them.
    pool = ProcessPool(1)
    try:
        doomed = pool.submit(pf.sys_exit, (3,))
        behind = [pool.submit(pf.echo, (i,)) for i in range(5)]
        with pytest.raises(RemoteError, match="SystemExit"):
            doomed.get(timeout=5)
        assert [r.get(timeout=5) for r in behind] == list(range(5))
    finally:
        pool.shutdown()


def test_sigkill_mid_call_then_a_normal_call(tmp_path):
    started = time.monotonic()
    pool = ProcessPool(1)
    try:
        # Submitted before the child is up: the queue is a backlog, so the calls
        # behind the doomed one are written ahead into the child's socket.
        begun = tmp_path / "begun"
        doomed = pool.submit(pf.sleep_forever_once_announced, (str(begun),))
        behind = [pool.submit(pf.echo, (i,)) for i in range(5)]
        wait_until(lambda: pool.busy == 1)
        assert pool.pending == 0  # all written ahead to the one child
        pid = pool.pids[0]
        wait_until(begun.exists)  # the child is inside the doomed call
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ChildProcessDied) as info:
            doomed.get(timeout=10)
        err = info.value
        assert err.pid == pid and err.exitcode == -signal.SIGKILL
        assert str(pid) in str(err) and "SIGKILL" in str(err) and "sleep_forever" in str(err)
        # The calls behind it never started: they run in the replacement child.
        assert [r.get(timeout=10) for r in behind] == list(range(5))
        new_pid = pool.submit(pf.getpid).get(timeout=10)
        assert new_pid != pid
        assert pool.pids == [new_pid]
        assert not psutil.pid_exists(pid)  # reaped, not a zombie
    finally:
        pool.shutdown(timeout=5)
    assert time.monotonic() - started < 30


def test_child_that_exits_or_kills_itself(pool):
    with pytest.raises(ChildProcessDied, match="exit code 7") as info:
        pool.submit(pf.exit_hard, (7,)).get(timeout=10)
    assert info.value.exitcode == 7
    with pytest.raises(ChildProcessDied, match="SIGKILL"):
        pool.submit(pf.kill_self).get(timeout=10)
    assert [pool.submit(pf.add, (i, i)).get(timeout=10) for i in range(4)] == [0, 2, 4, 6]
    wait_until(lambda: pool.size == 2)


def test_unpicklable_argument_fails_at_once(pool):
    result = pool.submit(pf.echo, (threading.Lock(),))
    assert result.ready() and not result.successful()
    with pytest.raises(TaskPickleError, match="(?i)lock") as info:
        result.get(timeout=0)
    assert isinstance(info.value, TypeError) and isinstance(info.value, pickle.PicklingError)
    assert "proc_funcs.echo" in str(info.value)
    with pytest.raises(TaskPickleError, match="lambda"):
        pool.submit(lambda: 1).get(timeout=0)
    assert pool.submit(pf.add, (1, 2)).get(timeout=5) == 3


def test_a_plain_function_is_pickled_once(pool):
    f0 = pickled_by_name.function("f0")
    assert pool.submit(f0, (0,)).get(timeout=5) == ("f0", 0)
    once = pickled_by_name.lookups.get("f0", 0)  # (pickle's lookups for one pickling)
    assert once >= 1
    assert [pool.submit(f0, (i,)).get(timeout=5) for i in range(1, 3)] == [("f0", 1), ("f0", 2)]
    assert pickled_by_name.lookups["f0"] == once


def test_callables_with_state_are_pickled_at_each_call(pool):
    scaled = pf.Scaled(2)
    assert pool.submit(scaled, (5,)).get(timeout=5) == 10
    scaled.factor = 3
    assert pool.submit(scaled, (5,)).get(timeout=5) == 15
    double = functools.partial(pf.add, b=2)
    assert pool.submit(double, (1,)).get(timeout=5) == 3
    double.keywords["b"] = 4
    assert pool.submit(double, (1,)).get(timeout=5) == 5


def test_the_function_pickle_cache_is_bounded(pool):
    # Kept pickles are forgotten after enough other functions (here, a
    # thousand): f1 is pickled again then, and only then.
    names = ["f%d" % i for i in range(1, 1000)]
    fns = [pickled_by_name.function(name) for name in names]
    assert pool.submit(fns[0]).get(timeout=5) == ("f1", 0)
    once = pickled_by_name.lookups.get("f1", 0)  # (pickle's lookups for one pickling)
    assert once >= 1
    assert pool.submit(fns[0]).get(timeout=5) == ("f1", 0)
    assert pickled_by_name.lookups["f1"] == once  # kept
    results = [pool.submit(fn) for fn in fns[1:]]
    assert [r.get(timeout=10) for r in results] == [(name, 0) for name in names[1:]]
    assert pool.submit(fns[0]).get(timeout=5) == ("f1", 0)
    assert pickled_by_name.lookups["f1"] == 2 * once, "the cache kept %d functions" % len(fns)


def test_unpicklable_result_fails_that_call_only(pool1):
    pid = pool1.submit(pf.getpid).get(timeout=5)
    with pytest.raises(TaskPickleError, match="(?i)unpicklable_result.*lock"):
        pool1.submit(pf.unpicklable_result).get(timeout=5)
    assert pool1.submit(pf.getpid).get(timeout=5) == pid  # the child survived


def test_maxtasksperchild_replaces_children():
    pool = ProcessPool(1, maxtasksperchild=2)
    try:
        pids = [pool.submit(pf.getpid).get(timeout=10) for _ in range(6)]
        assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]
        assert len(set(pids)) == 3
        # Also under a backlog (calls written ahead must not pass the limit).
        burst = [pool.submit(pf.getpid) for _ in range(10)]
        counts = {}
        for r in burst:
            pid = r.get(timeout=10)
            counts[pid] = counts.get(pid, 0) + 1
        assert max(counts.values()) <= 2
    finally:
        pool.shutdown(timeout=5)


def test_initializer_and_its_failure():
    pool = ProcessPool(1, initializer=pf.init_state, initargs=("ready",))
    try:
        assert pool.submit(pf.read_state).get(timeout=5) == "ready"
    finally:
        pool.shutdown(timeout=5)
    pool = ProcessPool(1, initializer=pf.failing_init)
    try:
        with pytest.raises(ChildProcessDied, match="initializer says no"):
            pool.submit(pf.add, (1, 2)).get(timeout=10)
    finally:
        pool.shutdown(timeout=5)


@pytest.mark.parametrize(
    "kwargs, error, word",
    [
        ({"processes": 0}, ValueError, "processes"),
        ({"processes": "2"}, TypeError, "processes"),
        ({"processes": True}, TypeError, "processes"),
        ({"maxtasksperchild": 0}, ValueError, "maxtasksperchild"),
        ({"initializer": 3}, TypeError, "initializer"),
        ({"initargs": 5}, TypeError, "initargs"),
        ({"context": "spawn"}, ValueError, "context"),
        ({"context": object()}, TypeError, "context"),
        ({"spin": -0.001}, ValueError, "spin"),
        ({"spin": 1.0}, ValueError, "spin"),
        ({"spin": "0.001"}, ValueError, "spin"),
        ({"spin": True}, ValueError, "spin"),
    ],
)
def test_arguments_are_validated(kwargs, error, word):
    with pytest.raises(error, match=word):
        ProcessPool(**kwargs)
    assert not children()


def test_fork_context_is_accepted():
    import multiprocessing

    pool = ProcessPool(1, context=multiprocessing.get_context("fork"))
    try:
        assert pool.submit(pf.add, (1, 1)).get(timeout=5) == 2
    finally:
        pool.shutdown(timeout=5)


# -- other libraries' at-fork hooks ------------------------------------------------------
# A library's os.register_at_fork(after_in_child=...) hook runs in every forked
# child, before gevent has reinitialised the child's loop; one that waits through
# the hub there (OpenTelemetry's TracerProvider does: it detects its resource
# again in a thread pool) must not run the parent's greenlets in the child.
_hook = {"waits": False, "registered": False}


def _wait_through_the_hub_in_the_child():
    if _hook["waits"]:
        gevent.sleep(0.02)


def test_an_at_fork_hook_that_waits_runs_none_of_the_parents_greenlets_in_the_child(tmp_path):
    if not _hook["registered"]:  # (hooks stay for the session: this one waits only while asked to)
        _hook["registered"] = True
        os.register_at_fork(after_in_child=_wait_through_the_hub_in_the_child)
    seen = tmp_path / "pids"
    fd = os.open(str(seen), os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def note_my_pid():  # a greenlet of the parent's, running all along
        while True:
            os.write(fd, b"%d\n" % os.getpid())
            gevent.sleep(0.001)

    noter = gevent.spawn(note_my_pid)
    _hook["waits"] = True
    try:
        pool = ProcessPool(2)
        try:
            wait_until(lambda: pool.size == 2)
            batch = [pool.submit(pf.sleep_then, (0.001, i)) for i in range(100)]
            assert [r.get(timeout=10) for r in batch] == list(range(100))
            pids = set(pool.pids)
        finally:
            pool.shutdown(timeout=5)
    finally:
        _hook["waits"] = False
        noter.kill()
        os.close(fd)
    assert {int(pid) for pid in seen.read_text().split()} == {os.getpid()}
    assert pids and not pids & {os.getpid()}


# -- a child waiting for its next call ---------------------------------------------------
# The child counts its polls (gworker.processes.child_poll_counts): what it
# decided, whatever the machine's load. (Counting its voluntary context switches
# instead said as much about the load: a child pre-empted between sending a
# result and waiting finds the next call already there, and never sleeps.)
def _one_after_another(pool, n):
    """``n`` calls, each submitted once the last is done; the pid that ran them."""
    pids = {pool.submit(pf.getpid).get(timeout=5) for _ in range(n)}
    assert len(pids) == 1, pids
    return pids.pop()


def _poll_counts(pool):
    return pool.submit(pf.poll_counts).get(timeout=5)


def test_a_child_polls_for_calls_that_come_one_after_another():
    pool = ProcessPool(1, spin=0.01)
    try:
        _one_after_another(pool, 5)
        before = _poll_counts(pool)
        _one_after_another(pool, 200)
        after = _poll_counts(pool)
    finally:
        pool.shutdown(timeout=5)
    # Each call comes well within 10 ms of the last result: the child polls
    # after (nearly) every one, and the next call comes while it does.
    assert after["polls"] - before["polls"] >= 100, (before, after)
    assert after["caught"] - before["caught"] >= 100, (before, after)


def test_a_child_never_polls_with_spin_0():
    pool = ProcessPool(1, spin=0)
    try:
        _one_after_another(pool, 200)
        assert _poll_counts(pool) == {"polls": 0, "caught": 0}
    finally:
        pool.shutdown(timeout=5)


def test_a_child_does_not_poll_for_calls_that_come_seldom():
    pool = ProcessPool(1, spin=0.01)
    try:
        pool.submit(pf.getpid).get(timeout=5)
        for _ in range(10):
            gevent.sleep(0.04)  # the spacing under test: longer than spin
            pool.submit(pf.getpid).get(timeout=5)
        counts = _poll_counts(pool)
    finally:
        pool.shutdown(timeout=5)
    # A call that came later than spin stops the polling: at most one try, in vain.
    assert counts["polls"] <= 1 and counts["caught"] == 0, counts


def test_no_polling_while_the_other_cores_are_taken():
    # As on 2 cores, whatever this machine has: the pool counts the cores this
    # process may run on (its CPU affinity) when it is made.
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(cores)[:2])
    try:
        pool = ProcessPool(2, spin=0.01)
    finally:
        os.sched_setaffinity(0, cores)
    try:
        wait_until(lambda: pool.size == 2)
        busy = pool.submit(pf.sleep_then, (30, "late"))
        wait_until(lambda: pool.busy == 1)
        _one_after_another(pool, 100)
        counts = _poll_counts(pool)
        assert not busy.ready()
    finally:
        pool.terminate()
    assert counts == {"polls": 0, "caught": 0}


def test_greenlets_a_call_leaves_behind_keep_running_in_the_child(pool1, tmp_path):
    marker = tmp_path / "written"
    pid = pool1.submit(pf.leave_greenlet_behind, (str(marker), 0.2)).get(timeout=5)
    # No further call comes: the child waits through its hub, so the greenlet runs.
    wait_until(marker.exists, timeout=5)
    assert marker.read_text() == str(pid)


# -- stopping ----------------------------------------------------------------------------
def test_shutdown_finishes_running_calls_and_fails_queued_ones(pool1):
    running = pool1.submit(pf.sleep_then, (0.3, "done"))
    wait_until(lambda: pool1.busy == 1)
    queued = [pool1.submit(pf.echo, (i,)) for i in range(3)]
    pool1.shutdown(wait=True, timeout=5)
    assert running.get(timeout=0) == "done"
    for r in queued:
        # Written ahead to the busy child (then run), or failed as never started.
        if not r.successful():
            with pytest.raises(PoolClosed):
                r.get(timeout=0)
    assert not children()
    with pytest.raises(PoolClosed):
        pool1.submit(pf.echo, (1,))
    pool1.shutdown()  # twice is fine
    pool1.terminate()


def test_shutdown_fails_pending_calls_with_a_clear_error():
    pool = ProcessPool(1)
    try:
        # Submitted before the child is even forked: all pending.
        pending = [pool.submit(pf.echo, (i,)) for i in range(5)]
        pool.shutdown(wait=False)
        for r in pending:
            with pytest.raises(PoolClosed, match="shut down before proc_funcs.echo started"):
                r.get(timeout=5)
    finally:
        pool.shutdown(timeout=5)
    assert not children()


def test_shutdown_timeout_kills_a_hung_child():
    pool = ProcessPool(1)
    result = pool.submit(pf.sleep_forever)
    wait_until(lambda: pool.busy == 1)
    started = time.monotonic()
    pool.shutdown(timeout=0.3)
    assert time.monotonic() - started < 5
    with pytest.raises(PoolClosed, match="timed out"):
        result.get(timeout=0)
    assert not children()


def test_terminate_stops_at_once(pool):
    results = [pool.submit(pf.sleep_forever) for _ in range(2)]
    wait_until(lambda: pool.busy == 2)
    started = time.monotonic()
    pool.terminate()
    assert time.monotonic() - started < 3
    for r in results:
        with pytest.raises(PoolClosed, match="terminated"):
            r.get(timeout=0)
    assert not children()
    pool.terminate()  # twice is fine


def test_no_leaks_across_20_create_shutdown_cycles():
    # Warm up once (imports, lazily created gevent objects), then compare.
    warm = ProcessPool(2)
    warm.submit(pf.echo, (1,)).get(timeout=5)
    warm.shutdown(timeout=5)
    fds_before = open_fds()
    greenlets_before = greenlet_count()
    for i in range(20):
        p = ProcessPool(2)
        assert p.submit(pf.add, (i, 1)).get(timeout=10) == i + 1
        p.shutdown(timeout=5)
        assert not children()
    assert open_fds() == fds_before
    assert greenlet_count() <= greenlets_before


def test_context_manager_shuts_down():
    with ProcessPool(1) as p:
        assert p.submit(pf.add, (1, 1)).get(timeout=5) == 2
    assert p.closed and not children()


# -- threads -----------------------------------------------------------------------------
def test_submit_and_get_from_a_native_thread(pool):
    hub_thread = os_thread_ident()

    def from_thread():
        result = pool.submit(pf.add, (20, 22))
        return os_thread_ident(), result.get(timeout=10)

    handle = native_thread(from_thread)
    ident, value = handle.join(timeout=15)
    assert value == 42
    assert ident != hub_thread


# -- import ------------------------------------------------------------------------------
def test_import_starts_nothing():
    code = textwrap.dedent(
        """
        import psutil, threading
        import gworker.processes
        from gevent._hub_local import get_hub_if_exists
        assert get_hub_if_exists() is None, "a hub was created at import"
        assert not psutil.Process().children(), "a child was started at import"
        assert threading.active_count() == 1
        print("ok")
        """
    )
    env = dict(os.environ, GEVENT_MONITOR_THREAD_ENABLE="0")
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    # gevent's subprocess: a plain one would block this test's hub for a second.
    out = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_children_leave_when_the_parent_dies_without_shutdown(tmp_path):
    code = textwrap.dedent(
        """
        import os, sys
        sys.path[:0] = %r
        import proc_funcs as pf
        from gworker.processes import ProcessPool
        pool = ProcessPool(2)
        pids = {pool.submit(pf.getpid).get(timeout=10) for _ in range(20)}
        pool.submit(pf.sleep_then, (0.3,))  # one child is busy when the parent dies
        print(" ".join(map(str, pool.pids)), flush=True)
        os._exit(0)  # no shutdown, no atexit
        """
        % ([os.path.dirname(os.path.abspath(__file__)),
            os.path.dirname(os.path.dirname(os.path.abspath(__file__)))],)
    )
    env = dict(os.environ, GEVENT_MONITOR_THREAD_ENABLE="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=30)
    assert out.returncode == 0, out.stderr
    pids = [int(x) for x in out.stdout.split()]
    assert len(pids) == 2

    def gone():
        return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                       for p in pids)

    wait_until(gone, timeout=5)


def test_submit_with_id_passes_the_task_id_as_a_keyword(pool):
    assert pool.hub is gevent.get_hub()
    args, kwargs, _pid = pool.submit_with_id(compat_funcs.args_of, (1,), {"a": 2}, "t7").get(timeout=5)
    assert (args, kwargs) == ((1,), {"a": 2, "_task_id": "t7"})
    args, kwargs, _pid = pool.submit_with_id(compat_funcs.args_of, (), None, None).get(timeout=5)
    assert (args, kwargs) == ((), {})
