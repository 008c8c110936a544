"""atasker code runs unchanged (issue 16): one test per item, each written as
atasker code uses the name — the supervisor's API, aloops, tasks,
collections, worker semantics and the keywords atasker accepts."""
import asyncio
import logging
import sys
import threading
import warnings

import gevent
import gevent.event
import pytest

from conftest import PATCHED, wait_until
import gworker
from gworker import (
    TASK_HIGH, TASK_LOW, TASK_NORMAL, TT_COROUTINE, TT_MP, TT_THREAD, ALoop, BackgroundAsyncWorker,
    BackgroundEventWorker, BackgroundIntervalWorker, BackgroundQueueWorker, BackgroundWorker,
    FunctionCollection, TaskCollection, TaskSupervisor, background_task, background_worker,
    wait_completed,
)

@pytest.fixture
def a_supervisor():
    """A started supervisor, stopped afterwards (the fixture ``supervisor``'s
    twin, for tests that also take ``logged_errors``)."""
    sup = TaskSupervisor()
    sup.start()
    yield sup
    sup.stop(wait=5)


# -- keywords atasker accepts ---------------------------------------------------------


def test_background_task_ignores_loop_for_a_plain_function(supervisor):
    supervisor.create_aloop("bt-loop")

    def plain(x):
        return x * 2, gevent.getcurrent() is not None

    task = background_task(plain, loop="bt-loop", supervisor=supervisor)(21)  # atasker ignores loop here
    assert task.tt == TT_THREAD
    assert wait_completed(task, timeout=2) == (42, True)


def test_daemon_is_accepted_and_obsolete(caplog):
    sup = TaskSupervisor()
    with caplog.at_level(logging.WARNING, logger="gworker"):
        sup.start(daemon=True)
        try:
            task = background_task(lambda: "t", daemon=True, supervisor=sup)()
            w = BackgroundWorker(func=lambda **kw: False, daemon=True, supervisor=sup)
            aloop = sup.create_aloop("d", daemon=True)
            assert aloop.daemon is True
            assert wait_completed(task, timeout=2) == "t"
            w.start()
            wait_until(lambda: not w.is_started())
        finally:
            sup.stop(wait=5)
    assert [r.getMessage() for r in caplog.records].count("daemon argument is obsolete") == 2


def test_delay_after_is_atasker_alias_of_delay(supervisor):
    runs = []
    w = BackgroundIntervalWorker(func=lambda **kw: runs.append(1), delay_after=0.5, supervisor=supervisor)
    assert w.interval is None and w.delay == 0.5
    w.start(_delay_after=0.02)
    assert w.delay == 0.02
    wait_until(lambda: len(runs) >= 3, 2)
    w.stop()
    dec = background_worker(delay_after=3, supervisor=supervisor)(lambda **kw: None)
    assert isinstance(dec, BackgroundIntervalWorker) and dec.delay == 3
    with pytest.raises(TypeError, match="delay_after"):
        BackgroundIntervalWorker(func=lambda **kw: None, delay=1, delay_after=2, supervisor=supervisor)
    with pytest.raises(TypeError, match="_delay_after"):
        w.start(_delay=1, _delay_after=2)


def test_set_thread_pool_min_size_max(supervisor):
    supervisor.set_thread_pool(pool_size=4, reserve_normal=1, reserve_high=1, min_size="max")
    assert (supervisor.thread_pool_size, supervisor.thread_reserve_normal, supervisor.thread_reserve_high) == (4, 1, 1)
    with pytest.raises((TypeError, ValueError), match="min_size"):
        supervisor.set_thread_pool(min_size="min")


def test_a_subclass_takes_its_own_keywords(supervisor):
    seen = []

    class Poller(BackgroundIntervalWorker):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.host = kwargs["host"]

        def run(self, **kwargs):
            seen.append(self.host)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unknown keyword that is no misspelling: silent
        poller = Poller(interval=0.02, host="db1", timeout=3, supervisor=supervisor)
    poller.start()
    wait_until(lambda: len(seen) >= 2, 2)
    poller.stop()
    assert seen[0] == "db1"


def test_a_misspelt_keyword_warns_naming_what_it_resembles(supervisor):
    with pytest.warns(UserWarning, match=r"'intreval'.*did you mean 'interval'") as record:
        background_worker(intreval=5, supervisor=supervisor)(lambda **kw: None)
    assert record[0].filename == __file__  # points at the caller, not into gworker
    with pytest.warns(UserWarning, match="'priorty'.*'priority'"):
        BackgroundQueueWorker(func=lambda t, **kw: None, priorty=TASK_HIGH, supervisor=supervisor)
    with pytest.warns(UserWarning, match="'delai'.*'delay'"):
        background_task(lambda: None, delai=1)
    with pytest.warns(UserWarning, match="'on_eror'.*'on_error'"):
        FunctionCollection(on_eror=print)


# -- supervisor -----------------------------------------------------------------------


def test_put_task_target_marks_itself_as_atasker_docs_say(supervisor):
    def target(x, _task_id=None):
        supervisor.mark_task_started(task_id=_task_id)
        gevent.sleep(0.01)
        supervisor.mark_task_completed(task_id=_task_id)  # atasker's docs ask targets to call it
        return x + 1

    task = supervisor.put_task(target, args=(1,))
    assert wait_completed(task, timeout=2) == 2
    assert task.status == gworker.TASK_STATUS_COMPLETED and task.exception is None  # not FAILED
    assert supervisor.get_tasks() == {}  # completed once, and forgotten
    with pytest.raises(LookupError, match="task_id"):
        supervisor.mark_task_completed(task_id="no-such-task")
    with pytest.raises(TypeError, match="task"):
        supervisor.mark_task_completed(task="t1")


def test_default_aloop_attribute_get_aloop_and_get_aloops(supervisor):
    assert supervisor.default_aloop is None
    a = supervisor.create_aloop("da")
    b = supervisor.create_aloop("db")
    supervisor.default_aloop = a
    assert supervisor.default_aloop is a and supervisor.get_aloop() is a
    assert supervisor.get_aloop(default=False) is None
    assert supervisor.get_aloop("db", default=False) is b
    assert supervisor.get_aloops() == {"da": a, "db": b}
    supervisor.default_aloop = None
    assert supervisor.get_aloop() is None
    with pytest.raises(TypeError, match="aloop"):
        supervisor.default_aloop = 5


def test_aloop_management_answers_as_atasker(a_supervisor, logged_errors):
    sup = a_supervisor
    first = sup.create_aloop("m")
    assert sup.create_aloop("m") is False  # exists: False, not an exception
    assert sup.start_aloop("unknown") is False and sup.stop_aloop("unknown") is False
    assert sup.stop_aloop("m") is True and not first.is_active()
    assert sup.get_aloop("m") is first  # kept...
    assert sup.start_aloop("m") is True and first.is_active()  # ...and started again
    assert first.run(asyncio.sleep(0, "again"), timeout=2) == "again"
    assert [r.getMessage() for r in logged_errors] == [
        "supervisor %s: an aloop named 'm' already exists" % sup.id,
        "supervisor %s: no aloop named 'unknown'" % sup.id,
        "supervisor %s: no aloop named 'unknown'" % sup.id,
    ]


def test_get_tasks_and_get_schedulers_return_dicts(supervisor):
    release = gevent.event.Event()
    w = BackgroundEventWorker(func=lambda **kw: None, supervisor=supervisor)
    w.start()
    thread_task = supervisor.put_task(lambda _task_id=None: release.wait(5))
    later = supervisor.put_task(lambda _task_id=None: None, delay=5)
    assert supervisor.get_tasks() == {thread_task.id: thread_task, later.id: later}
    assert supervisor.get_tasks(tt=TT_MP) == {}
    assert supervisor.get_schedulers() == {w: None}
    for worker in supervisor.get_schedulers():  # atasker code iterates the keys
        assert worker is w
    later.cancel()
    release.set()
    w.stop()


def test_get_info_carries_atasker_fields(supervisor):
    supervisor.set_thread_pool(pool_size=7, reserve_normal=2, reserve_high=3)
    aloop = supervisor.create_aloop("info")
    release = gevent.event.Event()
    loop_worker = BackgroundWorker(func=lambda **kw: gevent.sleep(0.01), supervisor=supervisor)
    loop_worker.start()
    task = supervisor.put_task(lambda _task_id=None: release.wait(5))
    wait_until(task.is_started, 2)
    info = supervisor.get_info()
    assert (info.thread_pool_size, info.thread_reserve_normal, info.thread_reserve_high) == (7, 2, 3)
    assert info.thread_tasks == [task.id]
    assert info.thread_tasks_count == 2  # the task and the running continuous worker, as atasker counts
    assert info.mp_tasks == [] and info.mp_tasks_count == 0
    assert info.tasks == {task.id: task} and info.schedulers == {loop_worker: None}
    assert info.aloops["info"] is aloop and info.async_job_schedulers == {}
    assert info.workers[0]["kind"] == "continuous"  # gworker's own fields are still there
    only_mp = supervisor.get_info(tt=TT_MP, aloops=False, schedulers=False, async_job_schedulers=False)
    assert not hasattr(only_mp, "thread_pool_size") and not hasattr(only_mp, "aloops")
    assert only_mp.tasks == {} and only_mp.mp_tasks_count == 0
    counts = supervisor.get_info(tt=False)
    assert counts.thread_tasks_count == 2 and not hasattr(counts, "tasks") and not hasattr(counts, "thread_tasks")
    release.set()
    loop_worker.stop()


def test_pool_attributes_as_atasker(supervisor):
    assert supervisor.thread_pool_size == 100 and supervisor.mp_pool_size is None
    supervisor.thread_pool_size = 3
    supervisor.thread_reserve_normal = 0
    supervisor.thread_reserve_high = 1
    assert supervisor.get_info().thread_pool == dict(
        pool_size=3, reserve_normal=0, reserve_high=1, max_size=None, running=0, waiting=0,
        in_use={0: 0, 50: 0, 100: 0, 200: 0})
    supervisor.set_mp_pool(pool_size=1, reserve_normal=1, reserve_high=0)
    assert (supervisor.mp_pool_size, supervisor.mp_reserve_normal, supervisor.mp_reserve_high) == (1, 1, 0)
    assert supervisor.timeout_warning == 5 and supervisor.timeout_critical == 10
    assert supervisor.timeout_warning_func is None and supervisor.timeout_critical_func is None
    assert "{time_spent" in supervisor.timeout_message
    with pytest.raises(TypeError, match="thread_pool_size|pool_size"):
        supervisor.thread_pool_size = "big"
    with pytest.raises((TypeError, ValueError), match="timeout_warning"):
        supervisor.timeout_warning = -1


def test_a_task_and_a_worker_run_that_waited_long_are_reported(supervisor, caplog):
    supervisor.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    supervisor.timeout_warning = 0.05
    warned = []
    supervisor.timeout_warning_func = warned.append
    release = gevent.event.Event()
    blocker = supervisor.put_task(lambda _task_id=None: release.wait(5), priority=TASK_LOW)
    wait_until(blocker.is_started, 2)
    starved = supervisor.put_task(lambda _task_id=None: "late", priority=TASK_LOW)
    w = BackgroundEventWorker(func=lambda **kw: None, priority=TASK_LOW, supervisor=supervisor)
    w.start()
    w.trigger_threadsafe()
    quick = supervisor.put_task(lambda _task_id=None: "at once", priority=gworker.TASK_CRITICAL)
    assert quick.wait(2) == "at once"  # admitted at once: never timed
    with caplog.at_level(logging.WARNING, logger="gworker"):
        # both wait in line for the one slot, which the blocker holds (the
        # trigger reaches the hub on its own turn) ...
        wait_until(lambda: supervisor.thread_pool.waiting == 2, 2)
        gevent.sleep(0.1)  # ... past timeout_warning: the scenario, not a wait for a state
        release.set()
        assert starved.wait(2) == "late"
        wait_until(lambda: w.runs == 1 and len(warned) == 2, 2)
    w.stop()
    assert warned == [starved, w]  # the task, then the worker whose run waited
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(starved.id in m and "started in" in m for m in messages)
    assert any("worker %s" % w.name in m for m in messages)


def test_a_very_long_wait_is_critical(a_supervisor, logged_errors):
    sup = a_supervisor
    sup.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    sup.timeout_warning, sup.timeout_critical = 0.01, 0.02
    critical = []
    sup.timeout_critical_func = critical.append
    release = gevent.event.Event()
    sup.put_task(lambda _task_id=None: release.wait(5), priority=TASK_LOW)
    starved = sup.put_task(lambda _task_id=None: None, priority=TASK_LOW)
    gevent.sleep(0.05)  # the scenario: it waits in line past timeout_critical
    release.set()
    starved.wait(2)
    wait_until(lambda: critical == [starved], 2)
    assert [r.levelno for r in logged_errors] == [logging.CRITICAL] and starved.id in logged_errors[0].getMessage()


def test_the_default_supervisor_id_is_default():
    assert gworker.task_supervisor.id == "default"


# -- aloops, tasks, collections, workers --------------------------------------------


def test_aloop_background_task_is_a_task_wait_completed_understands(supervisor):
    aloop = supervisor.create_aloop("bt")

    async def work(x):
        await asyncio.sleep(0.01)
        return x * 3

    task = aloop.background_task(work(2))
    assert task.tt == TT_COROUTINE and task.is_started()
    assert wait_completed(task, timeout=2) == 6 and task.result == 6  # an attribute, as atasker's
    assert wait_completed([aloop.background_task(work(1)), aloop.background_task(work(5))], timeout=2) == [3, 15]
    assert isinstance(task.future, asyncio.Task)


def test_aloop_background_task_that_fails(a_supervisor, logged_errors):
    aloop = a_supervisor.create_aloop("bt-fail")

    async def bad():
        raise KeyError("no")

    task = aloop.background_task(bad())
    assert wait_completed(task, timeout=2) is None
    assert task.is_failed() and isinstance(task.exception, KeyError)
    assert len(logged_errors) == 1 and task.id in logged_errors[0].getMessage()


def test_ALoop_as_atasker_spells_it(supervisor):
    free = ALoop()  # atasker: ALoop(name=None, supervisor=None)
    assert isinstance(free.name, str) and free.name and free.supervisor is None
    named = ALoop("mine", supervisor=supervisor)
    assert named.name == "mine" and named.supervisor is supervisor
    named.start()
    try:
        assert named.run(asyncio.sleep(0, "ok"), timeout=2) == "ok"
    finally:
        named.stop()
    with pytest.raises(TypeError, match="supervisor"):
        ALoop("x", supervisor=5)
    with pytest.raises(AttributeError):
        gworker.ALoop.no_such_thing  # noqa: B018 (the class itself is importable)


def test_thread_names_are_atasker_s(supervisor):
    aloop = supervisor.create_aloop("named")

    async def in_coroutine():
        return threading.current_thread().name

    got = {}

    def executor(**kwargs):
        got["executor"] = threading.current_thread().name

    task = supervisor.put_task(lambda _task_id=None: threading.current_thread().name)
    w = BackgroundEventWorker(func=executor, supervisor=supervisor)
    w.start()
    w.trigger_threadsafe()
    wait_until(lambda: "executor" in got, 2)
    w.stop()
    names = [aloop.run(in_coroutine(), timeout=2), task.wait(2), got["executor"]]
    if PATCHED:  # each greenlet's dummy thread carries atasker's name
        assert names[0] == "supervisor_%s_aloop_named" % supervisor.id
        prefix = "supervisor_%s_pool_" % supervisor.id
        assert names[1].startswith(prefix) and names[1][len(prefix):].isdigit()
        assert names[2].startswith(prefix) and names[2] != names[1]
    else:  # not patched: every greenlet runs in the hub's OS thread, which keeps its name
        assert names == [threading.current_thread().name] * 3


def test_collections_call_on_error_as_atasker(supervisor):
    calls = []

    def on_error():  # a handler that takes no arguments
        calls.append(type(sys.exc_info()[1]))

    def broken():
        raise OSError("x")

    for coll in (FunctionCollection(on_error=on_error), TaskCollection(on_error=on_error, supervisor=supervisor)):
        coll.append(broken)
        assert coll.execute() == ({"%s.broken" % __name__: None}, False)
    assert calls == [OSError, OSError]
    assert TaskCollection().supervisor is gworker.task_supervisor  # atasker's default
    assert TaskCollection(poll_delay=0.5, some_option=1).poll_delay == 0.5  # unknown keyword accepted

    class Reraising(FunctionCollection):
        def error(self):  # atasker's signature
            raise

    reraising = Reraising(on_error=on_error)
    reraising.append(broken)
    with pytest.raises(OSError):
        reraising.run()
    with pytest.raises(RuntimeError, match="except block"):
        FunctionCollection().error()


def test_is_started_is_true_only_while_the_worker_runs(supervisor):
    w = BackgroundQueueWorker(func=lambda item, **kw: item != "last", supervisor=supervisor)
    assert not w.is_started()
    w.start()
    assert w.is_started()
    w.stop()
    assert not w.is_started()
    w.start()
    w.put_threadsafe("last")  # the executor returns False: the worker stops
    wait_until(lambda: not w.is_started(), 2)
    assert w.is_stopped()


def test_isinstance_relations_and_what_the_bases_offer(supervisor):
    interval = BackgroundIntervalWorker(func=lambda **kw: None, interval=1, supervisor=supervisor)
    assert isinstance(interval, BackgroundEventWorker) and isinstance(interval, BackgroundAsyncWorker)
    assert isinstance(BackgroundQueueWorker(func=lambda t, **kw: None, supervisor=supervisor), BackgroundAsyncWorker)
    assert isinstance(BackgroundEventWorker(func=lambda **kw: None, supervisor=supervisor), BackgroundAsyncWorker)
    assert isinstance(BackgroundAsyncWorker(func=lambda **kw: None, supervisor=supervisor), BackgroundWorker)
    assert isinstance(interval.get_event_obj(), gevent.event.Event)


def test_interval_worker_delay_holds_the_interval(supervisor):
    w = BackgroundIntervalWorker(func=lambda **kw: None, interval=2, supervisor=supervisor)
    assert w.delay == 2 and w.interval == 2
    w.delay = 3  # as atasker code tunes it
    assert w.interval == 3
    d = BackgroundIntervalWorker(func=lambda **kw: None, delay=4, supervisor=supervisor)
    assert d.delay == 4 and d.interval is None
    with pytest.raises(ValueError, match="delay"):
        d.delay = -1


def test_start_name_and_o_reach_the_executor_and_do_not_stick(supervisor):
    seen = []
    w = BackgroundEventWorker(func=lambda **kw: seen.append((kw["_name"], kw["o"])), name="orig", o="o0",
                              supervisor=supervisor)
    w.start(_name="for-this-start", o="o1", _priority=TASK_HIGH)
    w.trigger_threadsafe()
    wait_until(lambda: seen, 2)
    w.stop()
    assert seen == [("for-this-start", "o1")]
    assert (w.name, w.o, w.priority) == ("orig", "o0", TASK_HIGH)  # only _priority stays, as in atasker
    w.start()
    w.trigger_threadsafe()
    wait_until(lambda: len(seen) == 2, 2)
    w.stop()
    assert seen[1] == ("orig", "o0")


def test_task_events_marks_and_ordering(supervisor):
    release = gevent.event.Event()
    task = supervisor.put_task(lambda _task_id=None: release.wait(5) and "r")
    assert task.started.wait(2) and not task.completed.is_set()
    release.set()
    assert task.completed.wait(2) and task.result == "r"
    own = gworker.Task(lambda: None, priority=TASK_LOW)
    assert not own.started.is_set()
    own.mark_started()
    assert own.is_started() and own.started.is_set() and own.status == gworker.TASK_STATUS_STARTED
    own.mark_completed()
    assert own.is_completed() and own.completed.is_set() and own.status == gworker.TASK_STATUS_COMPLETED
    high = gworker.Task(lambda: None, priority=TASK_HIGH)
    normal = gworker.Task(lambda: None, priority=TASK_NORMAL)
    assert high < normal < own and own > high and high < None
    assert sorted([own, normal, high]) == [high, normal, own]


def test_status_constants_are_importable_from_gworker():
    from gworker import (  # noqa: F401
        TASK_STATUS_CANCELED, TASK_STATUS_COMPLETED, TASK_STATUS_DELAYED, TASK_STATUS_FAILED,
        TASK_STATUS_QUEUED, TASK_STATUS_STARTED,
    )

    assert (TASK_STATUS_QUEUED, TASK_STATUS_DELAYED, TASK_STATUS_STARTED, TASK_STATUS_COMPLETED) == (0, 2, 100, 200)
    assert TASK_STATUS_FAILED not in (0, 2, 100, 200, TASK_STATUS_CANCELED)
