"""BackgroundEventWorker with sync executors: triggers, force, OS threads,
the event object, no poll_delay pause, pool slots, stopping."""
import time

import gevent
import gevent.event
import pytest
from gevent.event import Event

import gworker
from gworker import TASK_LOW, BackgroundEventWorker

from conftest import native_thread, wait_until


def _counting_worker(supervisor, **options):
    runs = []
    w = BackgroundEventWorker(func=lambda *a, **kw: runs.append((a, kw)), supervisor=supervisor,
                              **options)
    return w, runs


def test_start_does_not_run_and_each_trigger_runs_once(supervisor):
    w, runs = _counting_worker(supervisor)
    w.start()
    gevent.sleep(0.05)  # a window in which nothing may happen (no state to wait for)
    assert runs == [], "an event worker waits for its first trigger"
    w.trigger_threadsafe()
    wait_until(lambda: len(runs) == 1)
    w.trigger_threadsafe()
    wait_until(lambda: len(runs) == 2)
    gevent.sleep(0.05)  # a window for a third run, which must not come
    w.stop()
    assert len(runs) == 2


def test_arguments_and_keywords(supervisor):
    marker = object()
    w, runs = _counting_worker(supervisor, o=marker)
    w.start(1, 2, key="v")
    w.trigger_threadsafe()
    wait_until(lambda: runs)
    w.trigger_threadsafe()
    wait_until(lambda: len(runs) == 2)
    w.stop()
    (args, kw), (_, kw2) = runs
    assert args == (1, 2)
    assert set(kw) == {"key", "_worker", "_name", "_task_id", "o"}
    assert kw["key"] == "v" and kw["_worker"] is w and kw["o"] is marker
    assert kw["_name"] == w.name == "<lambda>"
    assert kw["_task_id"] != kw2["_task_id"]


def _gated_worker(supervisor):
    runs = []
    gate = Event()
    entered = Event()

    def run(**kw):
        runs.append(time.monotonic())
        entered.set()
        gate.wait()

    w = BackgroundEventWorker(func=run, supervisor=supervisor)
    return w, runs, gate, entered


def _fire(w, where, force=False):
    """``w.trigger_threadsafe(force)`` from this greenlet, or from a native
    thread (waited for: the trigger has been made when this returns)."""
    if where == "hub":
        w.trigger_threadsafe(force)
    else:
        native_thread(w.trigger_threadsafe, force).join(5)


WHERE = pytest.mark.parametrize("where", ["hub", "thread"])


@WHERE
def test_triggers_during_a_run_are_ignored(supervisor, where):
    w, runs, gate, entered = _gated_worker(supervisor)
    w.start()
    _fire(w, where)
    assert entered.wait(2)
    for _ in range(5):
        _fire(w, where)
    gate.set()
    wait_until(lambda: w.get_info()["runs"] == 1 and supervisor.thread_pool.running == 0)
    gevent.sleep(0.05)  # a window for a second run, which must not come
    assert len(runs) == 1
    # the worker still answers the next trigger
    w.trigger_threadsafe()
    wait_until(lambda: len(runs) == 2)
    w.stop()


@WHERE
def test_forced_triggers_during_a_run_coalesce_into_one_more_run(supervisor, where):
    w, runs, gate, entered = _gated_worker(supervisor)
    w.start()
    _fire(w, where)
    assert entered.wait(2)
    for _ in range(5):
        _fire(w, where, force=True)
        _fire(w, where)
    gate.set()
    wait_until(lambda: len(runs) == 2)
    gevent.sleep(0.05)  # a window for a third run, which must not come
    assert len(runs) == 2
    w.trigger_threadsafe()
    wait_until(lambda: len(runs) == 3)
    gevent.sleep(0.02)  # a window for a fourth run, which must not come
    w.stop()
    assert len(runs) == 3


def test_trigger_from_a_native_thread_is_prompt(supervisor):
    arrived = []
    ran = Event()

    def run(**kw):
        arrived.append(time.monotonic())
        ran.set()

    w = BackgroundEventWorker(func=run, supervisor=supervisor)
    w.start()
    latencies = []
    for _ in range(10):
        ran.clear()
        sent = native_thread(lambda: (time.monotonic(), w.trigger_threadsafe())[0]).join(5)
        assert ran.wait(2), "a trigger from an OS thread was lost"
        latencies.append(arrived[-1] - sent)
    w.stop()
    assert max(latencies) < 0.05, "trigger latencies (ms): %s" % [round(x * 1000, 1) for x in latencies]


def test_many_triggers_from_native_threads_leave_it_working(supervisor):
    runs = [0]
    w = BackgroundEventWorker(func=lambda **kw: runs.__setitem__(0, runs[0] + 1), supervisor=supervisor)
    w.start()

    def hammer():
        for _ in range(2000):
            w.trigger_threadsafe()

    handles = [native_thread(hammer) for _ in range(3)]
    for h in handles:
        h.join(10)
    # A callback posted from another thread after the hammers ended runs after
    # all of theirs: then every trigger handed over has been handled.
    handled = Event()
    native_thread(supervisor.call_soon_threadsafe, handled.set).join(5)
    assert handled.wait(5)
    wait_until(lambda: runs[0] >= 1)
    assert runs[0] <= 6000
    before = runs[0]
    w.trigger_threadsafe()
    wait_until(lambda: runs[0] == before + 1)
    w.stop()


def test_calls_from_a_native_thread_reach_the_hub_in_order_and_one_failing_stops_none(supervisor, capsys):
    # supervisor.call_soon_threadsafe, trigger_threadsafe and a thread's stop()
    # share one way into the hub (the hub's inbox): in the order posted.
    seen = []

    def record(i):
        if i == 50:
            raise RuntimeError("call 50 fails")
        seen.append(i)

    def post_all():
        for i in range(200):
            supervisor.call_soon_threadsafe(record, i)

    native_thread(post_all).join(5)
    wait_until(lambda: len(seen) == 199)
    assert seen == [i for i in range(200) if i != 50]
    assert "call 50 fails" in capsys.readouterr().err  # reported as gevent reports a failing callback


def test_a_trigger_then_stop_from_a_native_thread_makes_the_run(supervisor):
    runs = []
    w = BackgroundEventWorker(func=lambda **kw: runs.append(1), supervisor=supervisor)
    w.start()

    def trigger_and_stop():
        w.trigger_threadsafe()
        w.stop()  # after the trigger: the run it asked for is made first

    native_thread(trigger_and_stop).join(5)
    assert runs == [1]
    assert w.is_stopped()


def test_get_event_obj(supervisor):
    w, runs = _counting_worker(supervisor)
    event = w.get_event_obj()
    assert isinstance(event, gevent.event.Event)
    w.start()
    assert w.get_event_obj() is event
    event.set()  # setting the event directly triggers too (as in atasker)
    wait_until(lambda: len(runs) == 1)
    w.stop()
    w.start()
    assert w.get_event_obj() is event
    w.trigger_threadsafe()
    wait_until(lambda: len(runs) == 2)
    w.stop()


def test_a_trigger_made_in_the_hubs_thread_is_accepted_before_the_call_returns(supervisor):
    # (trigger_threadsafe queues every trigger for the loop; one made in the
    # hub's own thread must still be taken at once, not when the loop next looks)
    w, runs = _counting_worker(supervisor)
    event = w.get_event_obj()
    w.start()
    for n in (1, 2):  # (the first before the loop has begun, the second while it waits)
        w.trigger_threadsafe()
        assert event.is_set(), "accepted: set while the trigger waits for its run"
        wait_until(lambda: len(runs) == n)
        assert not event.is_set()
    w.stop()


def test_no_poll_delay_pause_after_a_run(supervisor):
    w, runs = _counting_worker(supervisor, poll_delay=1)
    w.start()
    started = time.monotonic()
    for i in range(20):
        w.trigger_threadsafe()
        wait_until(lambda: len(runs) == i + 1, timeout=2)
    elapsed = time.monotonic() - started
    w.stop()
    assert elapsed < 0.5, "20 triggers took %.2fs with poll_delay=1" % elapsed


def test_trigger_on_a_stopped_worker_is_ignored(supervisor):
    w, runs = _counting_worker(supervisor)
    w.trigger_threadsafe()
    w.start()
    w.trigger_threadsafe()
    wait_until(lambda: len(runs) == 1)
    w.stop()
    assert w.is_stopped()
    w.trigger_threadsafe()
    w.trigger_threadsafe(force=True)
    gevent.sleep(0.05)  # a window in which nothing may run (no state to wait for)
    assert len(runs) == 1
    w.start()
    gevent.sleep(0.05)  # the same, after the start
    assert len(runs) == 1, "a trigger sent while stopped does not run at the next start"
    w.stop()


def test_each_run_holds_one_pool_slot_at_its_priority(supervisor):
    seen = []
    w = BackgroundEventWorker(func=lambda **kw: seen.append(supervisor.thread_pool.running),
                              priority=TASK_LOW, supervisor=supervisor)
    w.start()
    assert supervisor.thread_pool.running == 0
    w.trigger_threadsafe()
    wait_until(lambda: seen)
    assert seen == [1]

    supervisor.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    release = Event()
    blocker_started = Event()
    supervisor.put_task(lambda **kw: (blocker_started.set(), release.wait()))
    assert blocker_started.wait(2)
    w.trigger_threadsafe()
    wait_until(lambda: supervisor.get_info().thread_pool["waiting"] == 1)  # the run waits for the slot
    assert len(seen) == 1, "ran while the only slot was held"
    release.set()
    wait_until(lambda: len(seen) == 2)
    assert seen[1] == 1
    w.stop()


def test_stop_waits_for_the_run_and_restart_works(supervisor):
    w, runs, gate, entered = _gated_worker(supervisor)
    w.start()
    w.trigger_threadsafe()
    assert entered.wait(2)
    stopper = gevent.spawn(w.stop)
    wait_until(lambda: not w.is_active())  # stop() has begun (and it waits: the run is gated)
    assert not stopper.ready(), "stop() returned while the run was in progress"
    gate.set()
    stopper.get(timeout=2)
    assert w.is_stopped()
    for _ in range(5):
        assert w.start() is True
        assert w.start() is False
        w.stop()
    w.start()
    w.trigger_threadsafe()
    wait_until(lambda: len(runs) == 2)
    w.stop()


def test_stop_from_inside_the_executor_and_return_false(supervisor):
    runs = []

    def stopping(_worker, **kw):
        runs.append("stop")
        with gevent.Timeout(2, AssertionError("stop() from the executor deadlocked")):
            _worker.stop()

    w = BackgroundEventWorker(func=stopping, supervisor=supervisor)
    w.start()
    w.trigger_threadsafe()
    wait_until(w.is_stopped)

    w2 = BackgroundEventWorker(func=lambda **kw: runs.append("false") or False, supervisor=supervisor)
    w2.start()
    w2.trigger_threadsafe()
    wait_until(w2.is_stopped)
    w2.trigger_threadsafe()
    gevent.sleep(0.02)  # a window in which the stopped worker must not run
    assert runs == ["stop", "false"]


def test_hooks_in_a_subclass_with_run(supervisor):
    calls = []

    class MyWorker(BackgroundEventWorker):
        def before_start(self):
            calls.append("before_start")

        def after_start(self):
            calls.append("after_start")

        def before_stop(self):
            calls.append("before_stop")

        def after_stop(self):
            calls.append("after_stop")

        def run(self, **kw):
            calls.append("run")

    w = MyWorker(supervisor=supervisor)
    w.start()
    w.trigger_threadsafe()
    wait_until(lambda: "run" in calls)
    w.stop()
    assert calls == ["before_start", "after_start", "run", "before_stop", "after_stop"]


@pytest.mark.parametrize("flag", ["e", "event"])
def test_decorator_makes_event_workers(supervisor, flag):
    @gworker.background_worker(supervisor=supervisor, **{flag: True})
    def handler(**kw):
        pass

    assert type(handler) is BackgroundEventWorker
    assert handler.name == "handler"


def test_decorator_event_false_is_a_plain_worker(supervisor):
    @gworker.background_worker(e=False, supervisor=supervisor)
    def handler(**kw):
        pass

    assert type(handler) is gworker.BackgroundWorker
