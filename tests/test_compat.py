"""The rest of atasker's API: background tasks, wait_completed, collections,
Locker, g, set_debug, co_mp_apply and async jobs."""
import asyncio
import logging
import sys
import time

import gevent
import gevent.event
import pytest

import compat_funcs
from conftest import wait_until
import gworker
from gworker import (
    TASK_CRITICAL, TASK_HIGH, TASK_LOW, TT_MP, FunctionCollection, Locker,
    LocalProxy, TaskCollection, background_task, co_mp_apply, g, set_debug, wait_completed,
)
from gworker.tasks import TASK_STATUS_COMPLETED, TASK_STATUS_DELAYED, TASK_STATUS_QUEUED, Task


@pytest.fixture(scope="module", autouse=True)
def _settle_after_collection():
    """Importing asyncio-heavy modules at collection can hold the hub past the
    monitor's threshold; let that report arrive before the first test."""
    gevent.sleep(0.25)
    yield


# -- background_task ----------------------------------------------------------------


def test_bare_decorator_runs_with_exactly_the_arguments(supervisor):
    seen = []

    @background_task(supervisor=supervisor)
    def job(*args, **kwargs):
        seen.append((args, kwargs))
        return "done"

    task = job(1, 2, x=3)
    assert isinstance(task, Task)
    assert wait_completed(task, timeout=2) == "done"
    assert seen == [((1, 2), {"x": 3})]  # no _task_id
    assert task.is_started() and task.is_completed()
    assert task.status == TASK_STATUS_COMPLETED
    assert task.time_queued <= task.time_started <= task.time_completed
    assert job.__name__ == "job"


def test_decorator_without_parentheses_uses_the_default_supervisor():
    @background_task
    def job(a, b=0):
        return a + b

    try:
        assert wait_completed(job(2, b=5), timeout=2) == 7
        assert gworker.task_supervisor.is_active()
    finally:
        gworker.task_supervisor.stop(wait=5)


def test_wrapper_form_and_greenlet_name(supervisor):
    def f(x):
        return x * 10, gevent.getcurrent().name

    task = background_task(f, name="f-task", priority=TASK_LOW, supervisor=supervisor)(4)
    assert wait_completed(task, timeout=2) == (40, "f-task")
    assert task.priority == TASK_LOW


def test_wait_completed_keeps_the_order_when_tasks_finish_out_of_order(supervisor):
    events = [gevent.event.Event() for _ in range(3)]
    finished = []

    @background_task(supervisor=supervisor)
    def job(i):
        assert events[i].wait(5)
        finished.append(i)
        return "r%d" % i

    tasks = [job(i) for i in range(3)]
    for i in (2, 1, 0):
        events[i].set()
        wait_until(lambda: tasks[i].is_completed(), 2)
    assert finished == [2, 1, 0]
    assert wait_completed(tasks, timeout=2) == ["r0", "r1", "r2"]
    assert wait_completed(tuple(tasks)) == ["r0", "r1", "r2"]


def test_wait_completed_times_out_overall(supervisor):
    release = gevent.event.Event()

    @background_task(supervisor=supervisor)
    def quick():
        return 1

    @background_task(supervisor=supervisor)
    def stuck():
        release.wait(5)

    done, blocked = quick(), stuck()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        wait_completed([done, blocked], timeout=0.1)
    assert 0.08 <= time.monotonic() - t0 < 1
    assert done.is_completed() and not blocked.is_completed()
    release.set()
    assert wait_completed([done, blocked], timeout=2) == [1, None]


def test_failed_task_gives_none_and_keeps_its_exception(supervisor, logged_errors):
    @background_task(supervisor=supervisor)
    def bad():
        raise KeyError("nope")

    task = bad()
    assert wait_completed(task, timeout=2) is None
    assert task.is_failed() and isinstance(task.exception, KeyError)
    assert [r.exc_info[0] for r in logged_errors] == [KeyError]


def test_delay_starts_the_task_later(supervisor):
    task = background_task(lambda: time.time(), delay=0.15, supervisor=supervisor)()
    assert task.status == TASK_STATUS_DELAYED and not task.is_started()
    gevent.sleep(0.05)  # a third of the delay: a window in which it must not start
    assert not task.is_started()
    ran_at = wait_completed(task, timeout=2)
    assert ran_at - task.time_queued >= 0.14
    assert task.time_started - task.time_queued >= 0.14


def test_critical_runs_while_the_pool_is_full(supervisor):
    supervisor.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    release = gevent.event.Event()

    @background_task(supervisor=supervisor)
    def blocker():
        release.wait(5)
        return "blocker"

    held = blocker()
    wait_until(held.is_started, 2)
    waiting = background_task(lambda: "normal", priority=TASK_HIGH, supervisor=supervisor)()
    urgent = background_task(lambda: "critical", priority=TASK_CRITICAL, supervisor=supervisor)()
    assert wait_completed(urgent, timeout=2) == "critical"
    assert not held.is_completed()
    assert waiting.status == TASK_STATUS_QUEUED and not waiting.is_started()
    release.set()
    assert wait_completed([held, waiting], timeout=2) == ["blocker", "normal"]


def test_mp_task_with_callback(supervisor):
    supervisor.create_mp_pool(processes=2)
    got = gevent.event.AsyncResult()
    task = background_task(compat_funcs.args_of, tt=TT_MP, callback=got.set, supervisor=supervisor)(1, k="v")
    args, kwargs, pid = got.get(timeout=10)
    assert (args, kwargs) == ((1,), {"k": "v"})  # no _task_id in the child either
    assert pid != __import__("os").getpid()
    assert wait_completed(task, timeout=2) == (args, kwargs, pid)


def test_coroutine_task_runs_on_the_given_aloop(supervisor):
    aloop = supervisor.create_aloop("compat-a")

    @background_task(loop="compat-a", supervisor=supervisor)
    async def job(x, *, y):
        await asyncio.sleep(0.01)
        return asyncio.get_running_loop() is aloop.get_loop(), x + y

    task = job(1, y=2)
    assert task.tt == gworker.TT_COROUTINE
    assert wait_completed(task, timeout=2) == (True, 3)


def test_coroutine_task_without_loop_uses_the_default_aloop(supervisor):
    aloop = supervisor.create_aloop("compat-default", default=True)

    @background_task(supervisor=supervisor)
    async def job():
        return asyncio.get_running_loop() is aloop.get_loop()

    assert wait_completed(job(), timeout=2) is True


def test_bad_input_names_the_parameter(supervisor):
    def f():
        pass

    async def co():
        pass

    for kwargs, word in (
        (dict(priority=7), "priority"),
        (dict(tt=9), "tt"),
        (dict(delay=-1), "delay"),
        (dict(callback=3), "callback"),
        (dict(name=5), "name"),
    ):
        with pytest.raises((TypeError, ValueError), match=word):
            background_task(f, **kwargs)
    with pytest.raises(TypeError, match="f must be callable"):
        background_task(3)
    with pytest.raises(TypeError, match="TT_MP"):
        background_task(co, tt=TT_MP)
    with pytest.raises(TypeError, match="tasks"):
        wait_completed([1])
    with pytest.raises(TypeError, match="tasks"):
        wait_completed(5)
    task = background_task(f, supervisor=supervisor)()
    with pytest.raises(ValueError, match="timeout"):
        wait_completed(task, timeout=-1)
    with pytest.raises(TypeError, match="timeout"):
        Locker(timeout="5")
    with pytest.raises(TypeError, match="relative"):
        Locker(relative=1)
    with pytest.raises(TypeError, match="priority"):
        FunctionCollection()(f, priority="high")
    with pytest.raises(ValueError, match="priority"):
        TaskCollection()(f, priority=7)
    with pytest.raises(ValueError, match="f:"):
        FunctionCollection().remove(f)
    with pytest.raises(ValueError, match="interval"):
        supervisor.create_async_job(target=co, interval=0)
    with pytest.raises(ValueError, match="interval"):
        supervisor.create_async_job(target=co, interval=-0.5)
    with pytest.raises(TypeError, match="target"):
        supervisor.create_async_job(interval=1)
    with pytest.raises(TypeError, match="job"):
        supervisor.cancel_async_job(job="j")
    with pytest.raises(ValueError, match="aloop"):
        supervisor.create_async_job_scheduler("s", aloop="no-such-aloop")
    assert supervisor.get_info().async_job_schedulers == {}  # nothing made by failed calls
    wait_completed(task, timeout=2)


# -- collections ---------------------------------------------------------------------


def first():
    return 1


def second():
    return 2


def third():
    return 3


def failing():
    raise RuntimeError("broken")


def test_function_collection_runs_in_priority_order():
    calls = []
    coll = FunctionCollection()

    @coll
    def normal():
        calls.append("normal")
        return "n"

    @coll(priority=TASK_HIGH)
    def high():
        calls.append("high")
        return "h"

    @coll(priority=TASK_LOW)
    def low():
        calls.append("low")
        return "l"

    assert normal.__name__ == "normal" and callable(high)  # decorators return the function
    result = coll.run()
    assert calls == ["high", "normal", "low"]
    assert list(result.items()) == [
        (__name__ + ".high", "h"), (__name__ + ".normal", "n"), (__name__ + ".low", "l"),
    ]
    coll.remove(high)
    assert coll.execute() == ({__name__ + ".normal": "n", __name__ + ".low": "l"}, True)
    assert coll() == {__name__ + ".normal": "n", __name__ + ".low": "l"}  # calling it runs it


def test_function_collection_errors():
    errors = []
    coll = FunctionCollection(on_error=lambda tag: errors.append((sys.exc_info()[1], tag)),
                              on_error_kwargs={"tag": "t"}, include_exceptions=True)
    coll.append(first)
    coll.append(failing)
    coll.append(second, priority=TASK_LOW)
    result, all_ok = coll.execute()
    assert not all_ok
    assert result[__name__ + ".first"] == 1 and result[__name__ + ".second"] == 2
    exc, tb = result[__name__ + ".failing"]
    assert isinstance(exc, RuntimeError) and "broken" in tb
    assert errors == [(exc, "t")]
    plain = FunctionCollection()
    plain.append(failing)
    plain.append(second, priority=TASK_LOW)
    with pytest.raises(RuntimeError, match="broken"):  # no on_error: raised, as in atasker
        plain.run()


def test_task_collection_runs_concurrently_and_waits_for_all(supervisor):
    a_started = gevent.event.Event()
    b_started = gevent.event.Event()
    coll = TaskCollection(supervisor=supervisor)

    @coll
    def a():
        a_started.set()
        assert b_started.wait(2), "b never ran while a was running"
        gevent.sleep(0.05)
        return "A"

    @coll(priority=TASK_HIGH)
    def b():
        b_started.set()
        assert a_started.wait(2), "a never ran while b was running"
        return "B"

    t0 = time.monotonic()
    result, all_ok = coll.execute()
    assert time.monotonic() - t0 >= 0.05  # waited for the slower one
    assert all_ok
    assert list(result.items()) == [(__name__ + ".b", "B"), (__name__ + ".a", "A")]


def test_task_collection_errors(supervisor):
    errors = []
    coll = TaskCollection(supervisor=supervisor, on_error=lambda: errors.append(sys.exc_info()[1]))
    coll.append(third)
    coll.append(failing)
    result, all_ok = coll.execute()
    assert result == {__name__ + ".third": 3, __name__ + ".failing": None}
    assert not all_ok and [type(e) for e in errors] == [RuntimeError]
    plain = TaskCollection(supervisor=supervisor)
    plain.append(failing)
    plain.append(first)
    with pytest.raises(RuntimeError, match="broken"):
        plain.run()


# -- Locker ----------------------------------------------------------------------------


def test_locker_timeout_calls_critical_assigned_later(caplog, logged_errors):
    locker = Locker(mod="compat", timeout=0.05)
    holding = gevent.event.Event()
    release = gevent.event.Event()
    ran = []

    @locker
    def hold():
        holding.set()
        release.wait(5)

    @locker
    def guarded():
        ran.append(1)
        return "ran"

    called = []
    locker.critical = lambda: called.append(gevent.getcurrent())  # assigned after decorating
    holder = gevent.spawn(hold)
    assert holding.wait(2)
    with caplog.at_level(logging.CRITICAL, logger="gworker"):
        t0 = time.monotonic()
        assert guarded() is None
    assert 0.04 <= time.monotonic() - t0 < 1
    assert called == [gevent.getcurrent()] and ran == []
    assert any("compat/guarded" in r.getMessage() and r.levelno == logging.CRITICAL for r in caplog.records)
    with pytest.raises(TimeoutError):
        with locker:
            pass
    assert len(called) == 2
    release.set()
    holder.join(2)
    assert guarded() == "ran" and called == [gevent.getcurrent()] * 2
    assert [r.levelno for r in logged_errors] == [logging.CRITICAL] * 2


def test_locker_non_relative_taken_twice_times_out(logged_errors):
    locker = Locker(relative=False, timeout=0.05)
    critical = []
    locker.critical = lambda: critical.append(1)

    @locker
    def inner():
        return "inner"

    @locker
    def outer():
        return inner()

    assert outer() is None  # inner could not take the lock its own greenlet holds
    assert critical == [1]
    assert [r.levelno for r in logged_errors] == [logging.CRITICAL]
    assert locker.lock.acquire(blocking=False)  # released after outer
    locker.lock.release()


def test_locker_relative_is_reentrant():
    locker = Locker(timeout=0.05)
    locker.critical = lambda: pytest.fail("critical called")

    @locker
    def inner():
        return "inner"

    @locker
    def outer():
        return inner()

    assert outer() == "inner"
    assert isinstance(locker.lock, gevent.lock.RLock)


# -- g ------------------------------------------------------------------------------------


def test_g_is_local_to_each_task(supervisor):
    g.set("who", "caller")
    both_set = gevent.event.Event()
    count = []

    @background_task(supervisor=supervisor)
    def job(name):
        inherited = g.get("who"), g.has("who")
        g.set("who", name)
        count.append(name)
        if len(count) == 2:
            both_set.set()
        assert both_set.wait(2)  # the other task has set its own value meanwhile
        mine = g.get("who")
        g.clear("who")
        return inherited, mine, g.has("who")

    try:
        results = wait_completed([job("a"), job("b")], timeout=3)
        assert results == [((None, False), "a", False), ((None, False), "b", False)]
        assert g.get("who") == "caller"
        assert g.get("missing", 5) == 5
        g.clear("missing")  # no error
    finally:
        g.clear("who")
    assert not g.has("who")
    assert isinstance(g, LocalProxy)


# -- set_debug ----------------------------------------------------------------------------


def test_set_debug_switches_the_gworker_logger():
    log = logging.getLogger("gworker")
    before = log.level
    try:
        set_debug()
        assert log.level == logging.DEBUG and log.isEnabledFor(logging.DEBUG)
        set_debug(True)
        set_debug(False)
        assert log.level == before
    finally:
        set_debug(False)
        log.setLevel(before)


# -- co_mp_apply --------------------------------------------------------------------------


def test_co_mp_apply_from_a_coroutine(supervisor, logged_errors):
    supervisor.create_mp_pool(processes=2)
    aloop = supervisor.create_aloop("compat-mp")

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.ensure_future(ticker())
        result = await co_mp_apply(compat_funcs.slow_add, args=(2,), kwargs={"b": 3, "seconds": 0.2},
                                   priority=TASK_HIGH, supervisor=supervisor)
        tick_task.cancel()
        echoed = await co_mp_apply(compat_funcs.args_of, args=(1,), supervisor=supervisor)
        try:
            await co_mp_apply(compat_funcs.boom, args=("bad",), supervisor=supervisor)
        except ValueError as exc:
            error = str(exc)
        return result, ticks, echoed[:2], error

    result, ticks, echoed, error = aloop.run(main(), timeout=10)
    assert result == 5
    assert ticks >= 5  # the loop ran on while the child worked
    assert echoed == ((1,), {})
    assert "bad" in error
    assert len(logged_errors) == 1 and "boom" in logged_errors[0].getMessage()


def test_co_mp_apply_without_a_pool_says_so(supervisor):
    aloop = supervisor.create_aloop("compat-nopool")
    with pytest.raises(RuntimeError, match="create_mp_pool"):
        aloop.run(co_mp_apply(compat_funcs.add, args=(1, 2), supervisor=supervisor), timeout=5)


# -- async jobs ---------------------------------------------------------------------------


def test_two_async_jobs_one_cancelled(supervisor):
    aloop = supervisor.create_aloop("compat-jobs")
    scheduler = gworker.create_async_job_scheduler("compat", aloop="compat-jobs", default=True,
                                                   supervisor=supervisor)
    assert scheduler.aloop is aloop and scheduler.is_active()
    runs1, runs2 = [], []

    async def job1():
        runs1.append(asyncio.get_running_loop())

    async def job2():
        runs2.append(time.monotonic())

    j1 = gworker.create_async_job(target=job1, interval=0.01, supervisor=supervisor)
    j2 = supervisor.create_async_job("compat", target=job2, interval=0.01)
    wait_until(lambda: len(runs1) >= 3 and len(runs2) >= 3, 3)
    assert all(loop is aloop.get_loop() for loop in runs1)
    gworker.cancel_async_job(job=j1, supervisor=supervisor)
    assert not j1.active and j2.active
    n1, n2 = len(runs1), len(runs2)
    wait_until(lambda: len(runs2) >= n2 + 10, 3)
    assert len(runs1) == n1
    assert j2.active and scheduler.get_jobs() == [j2]
    gaps = [b - a for a, b in zip(runs2[n2:], runs2[n2 + 1:])]
    assert sum(gaps) / len(gaps) < 0.03  # every ~10 ms, not stalled
    with pytest.raises(ValueError, match="name"):
        supervisor.create_async_job_scheduler("compat")
    t0 = time.monotonic()
    assert supervisor.stop_aloop("compat-jobs", wait=3) is True  # its scheduler is stopped first
    assert time.monotonic() - t0 < 1
    assert not j2.active and not scheduler.is_active()


def test_async_job_overrun_never_overlaps(supervisor):
    running = []
    peak = []

    async def slow():
        running.append(1)
        peak.append(len(running))
        await asyncio.sleep(0.03)
        running.pop()

    job = supervisor.create_async_job(target=slow, interval=0.01, number=4)
    wait_until(lambda: not job.active, 3)
    assert job.runs == 4 and len(peak) == 4 and max(peak) == 1


def test_async_job_timer_and_stop_with_the_supervisor():
    sup = gworker.TaskSupervisor()
    sup.start()
    sup.create_aloop("not-a-daemon", default=True)  # its pending tasks would be waited for
    hits = []

    async def tick():
        hits.append(time.monotonic())

    t0 = time.monotonic()
    job = sup.create_async_job(target=tick, timer=0.1)  # first run after 0.1 s, then every 0.1 s
    wait_until(lambda: hits, 2)
    assert hits[0] - t0 >= 0.09 and job.interval == 0.1
    t0 = time.monotonic()
    sup.stop(wait=5)  # stops the scheduler, then the aloops: does not hang
    assert time.monotonic() - t0 < 1
    assert not job.active and not sup.is_active()
