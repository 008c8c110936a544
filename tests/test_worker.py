"""BackgroundWorker and the decorator: parameters, overrides, outcome routing, lifecycle."""
import logging
import sys
import time

import gevent
import pytest
from gevent.event import Event

import gworker
from gworker import (
    TASK_HIGH, TASK_LOW, BackgroundEventWorker, BackgroundIntervalWorker,
    BackgroundQueueWorker, BackgroundWorker, TaskSupervisor, background_worker,
)

from conftest import Ticker, greenlet_count, native_thread, wait_until


def collect(n, sink, done):
    def executor(*args, **kwargs):
        sink.append((args, kwargs))
        if len(sink) >= n:
            done.set()
            return False
        gevent.sleep(0)
    return executor


def test_decorator_bare_makes_a_background_worker(supervisor):
    @background_worker
    def job(**kwargs):
        return False

    assert isinstance(job, BackgroundWorker) and job.name == "job"
    job.supervisor = supervisor
    assert job.start() is True
    wait_until(job.is_stopped)


def test_decorator_with_keywords_and_executor_keywords(supervisor):
    calls, done = [], Event()
    marker = object()
    job = background_worker(name="named", o=marker, priority=TASK_HIGH, supervisor=supervisor)(
        collect(3, calls, done))
    assert job.name == "named" and job.priority == TASK_HIGH and job.o is marker
    job.start(1, 2, x="y")
    assert done.wait(2)
    wait_until(job.is_stopped)
    ids = []
    for args, kwargs in calls:
        assert args == (1, 2)
        assert kwargs["x"] == "y" and kwargs["_worker"] is job and kwargs["_name"] == "named"
        assert kwargs["o"] is marker
        ids.append(kwargs["_task_id"])
    assert len(set(ids)) == 3


def test_class_form_with_run_method(supervisor):
    done = Event()

    class MyWorker(BackgroundWorker):
        def run(self, *args, **kwargs):
            self.got = (args, kwargs["_name"])
            done.set()
            return False

    w = MyWorker(supervisor=supervisor)
    assert w.name.startswith("MyWorker-")
    assert MyWorker(supervisor=supervisor).name != w.name
    w.start("a")
    assert done.wait(2)
    assert w.got == (("a",), w.name)


def test_executor_func_alias_and_run_assigned_later(supervisor):
    done = Event()
    w = BackgroundWorker(executor_func=lambda **kw: done.set() or False, supervisor=supervisor)
    w.start()
    assert done.wait(2)
    later = Event()
    w2 = BackgroundWorker(supervisor=supervisor)
    w2.run = lambda **kw: later.set() or False
    w2.start()
    assert later.wait(2)


def test_start_overrides_priority_stays_name_and_o_do_not(supervisor):
    calls, done = [], Event()
    w = BackgroundWorker(func=collect(1, calls, done), name="n0", supervisor=supervisor)
    new_o = object()
    assert w.start(_name="n1", _priority=TASK_LOW, o=new_o) is True
    assert done.wait(2)
    wait_until(w.is_stopped)
    _, kwargs = calls[0]
    assert kwargs["_name"] == "n1" and kwargs["o"] is new_o and kwargs["_priority"] == TASK_LOW
    # as in atasker: _priority stays on the worker, _name and o were for this start only
    assert w.name == "n0" and w.priority == TASK_LOW and w.o is None


def test_start_twice_returns_false(supervisor):
    w = BackgroundWorker(func=lambda **kw: gevent.sleep(0.01), supervisor=supervisor)
    assert w.start() is True
    assert w.start() is False
    w.stop()


def test_return_false_stops(supervisor):
    n = []
    w = BackgroundWorker(func=lambda **kw: n.append(1) or len(n) < 3, supervisor=supervisor)
    w.start()
    wait_until(w.is_stopped)
    assert len(n) == 3 and not w.is_active()


def test_on_error_inside_except_block(supervisor):
    seen, done = [], Event()

    def on_error(**kwargs):
        seen.append((sys.exc_info()[0], kwargs))
        done.set()

    def bad(**kw):
        raise ValueError("bad")

    w = BackgroundWorker(func=bad, on_error=on_error, on_error_kwargs={"k": 1}, supervisor=supervisor)
    w.start()
    assert done.wait(2)
    w.stop()
    assert seen[0] == (ValueError, {"k": 1})
    assert w.is_stopped() and w.errors >= 1


def test_gevent_timeout_escaping_is_a_failed_run(supervisor):
    errors, calls = [], []

    def exec_(**kw):
        calls.append(1)
        if len(calls) == 1:
            raise gevent.Timeout(0.01)
        return False

    w = BackgroundWorker(func=exec_, on_error=lambda: errors.append(sys.exc_info()[0]), supervisor=supervisor)
    w.start()
    wait_until(w.is_stopped)
    assert errors == [gevent.Timeout] and len(calls) == 2


def test_failure_logged_with_traceback_and_worker_goes_on(supervisor, caplog, logged_errors):
    calls = []

    def flaky(**kw):
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("flaky %d" % len(calls))
        return False

    w = BackgroundWorker(func=flaky, supervisor=supervisor)
    with caplog.at_level(logging.ERROR, logger="gworker"):
        w.start()
        wait_until(w.is_stopped)
    records = [r for r in logged_errors if r.exc_info]
    assert len(calls) == 3
    assert [str(r.exc_info[1]) for r in records] == ["flaky 1", "flaky 2"]
    assert "flaky" in caplog.text and "Traceback" in caplog.text


def test_repeated_failures_are_rate_limited(supervisor, caplog, logged_errors):
    def always(**kw):
        gevent.sleep(0)
        raise RuntimeError("same")

    w = BackgroundWorker(func=always, supervisor=supervisor)
    with caplog.at_level(logging.ERROR, logger="gworker"):
        w.start()
        wait_until(lambda: w.errors >= 500)
        w.stop()
    assert len([r for r in caplog.records if r.exc_info]) == 1
    assert len(logged_errors) == 1


def test_greenlet_exit_and_keyboard_interrupt_are_not_swallowed(supervisor):
    w = BackgroundWorker(func=lambda **kw: (_ for _ in ()).throw(KeyboardInterrupt), supervisor=supervisor)
    # gevent hands a KeyboardInterrupt raised in a greenlet to the main
    # greenlet: it reaches the test's wait, as it would the program's
    with pytest.raises(KeyboardInterrupt):
        w.start()
        gevent.sleep(2)
    wait_until(w.is_stopped)


def test_stop_from_inside_the_executor(supervisor):
    returned = Event()

    def exec_(_worker, **kw):
        _worker.stop()  # wait=True from inside must not deadlock
        returned.set()

    w = BackgroundWorker(func=exec_, supervisor=supervisor)
    w.start()
    assert returned.wait(2)
    wait_until(w.is_stopped)


def test_stop_waits_for_the_run_in_progress(supervisor):
    inside, finished = Event(), []

    def exec_(**kw):
        inside.set()
        gevent.sleep(0.1)
        finished.append(1)

    w = BackgroundWorker(func=exec_, supervisor=supervisor)
    w.start()
    assert inside.wait(2)
    w.stop()
    assert finished == [1] and w.is_stopped()


def test_stop_wait_false_returns_at_once(supervisor):
    inside = Event()
    w = BackgroundWorker(func=lambda **kw: (inside.set(), gevent.sleep(0.2)), supervisor=supervisor)
    w.start()
    assert inside.wait(2)
    t0 = time.monotonic()
    w.stop(wait=False)
    assert time.monotonic() - t0 < 0.05
    assert not w.is_active() and not w.is_stopped()
    wait_until(w.is_stopped, 2)


def test_hooks_in_order(supervisor):
    events = []

    class Hooked(BackgroundWorker):
        def before_start(self):
            events.append("before_start")

        def after_start(self):
            events.append("after_start")

        def before_stop(self):
            events.append("before_stop")

        def send_stop_events(self):
            events.append("send_stop_events")

        def after_stop(self):
            events.append("after_stop")

        def run(self, **kw):
            gevent.sleep(0.01)

    w = Hooked(supervisor=supervisor)
    w.start()
    w.stop()
    assert events == ["before_start", "after_start", "before_stop", "send_stop_events", "after_stop"]


def test_restart_and_many_cycles_leak_no_greenlets(supervisor):
    w = BackgroundWorker(func=lambda **kw: gevent.sleep(0.001), supervisor=supervisor)
    w.start()
    w.restart()
    assert w.is_active()
    w.stop()
    baseline = greenlet_count()
    for _ in range(200):
        assert w.start() is True
        gevent.sleep(0)
        w.stop()
    assert greenlet_count() <= baseline + 2


def test_a_never_yielding_executor_cannot_starve_the_hub(supervisor):
    def busy(**kw):
        t_end = time.perf_counter() + 0.002
        while time.perf_counter() < t_end:  # CPU, never yields
            pass

    with Ticker(0.005) as ticker:
        w = BackgroundWorker(func=busy, supervisor=supervisor)
        w.start()
        gevent.sleep(0.3)
        w.stop()
    assert len(ticker.gaps) > 20 and ticker.max_busy < 0.05


def test_starting_a_worker_starts_its_supervisor(caplog):
    sup = TaskSupervisor()
    done = Event()
    w = BackgroundWorker(func=lambda **kw: done.set() or False, supervisor=sup)
    with caplog.at_level(logging.INFO, logger="gworker"):
        w.start()
    assert done.wait(2)
    assert sup.is_active()
    assert any("not started" in r.getMessage() for r in caplog.records)
    sup.stop()


def test_default_supervisor_is_used():
    w = BackgroundWorker(func=lambda **kw: False)
    assert w.supervisor is gworker.task_supervisor
    w.start()
    wait_until(w.is_stopped)
    gworker.task_supervisor.stop()


def test_start_and_stop_from_a_native_thread(supervisor):
    runs = []
    w = BackgroundWorker(func=lambda **kw: (runs.append(1), gevent.sleep(0.005)), supervisor=supervisor)
    assert native_thread(w.start).join(10) is True
    wait_until(lambda: len(runs) > 2)
    native_thread(w.stop).join(10)
    assert w.is_stopped()


def test_supervisor_stop_stops_workers():
    sup = TaskSupervisor()
    sup.start()
    ws = [BackgroundWorker(func=lambda **kw: gevent.sleep(0.01), supervisor=sup) for _ in range(3)]
    for w in ws:
        w.start()
    sup.stop()
    assert all(w.is_stopped() for w in ws)


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(priority=1), ValueError, "priority"),
        (dict(priority=None), ValueError, "priority"),
        (dict(func=42), TypeError, "func"),
        (dict(executor_func="x"), TypeError, "func"),
        (dict(poll_delay=-0.1), ValueError, "poll_delay"),
        (dict(poll_delay="1"), TypeError, "poll_delay"),
        (dict(on_error=1), TypeError, "on_error"),
        (dict(on_error_kwargs=[1]), TypeError, "on_error_kwargs"),
        (dict(supervisor="s"), TypeError, "supervisor"),
        (dict(name=5), TypeError, "name"),
    ],
)
def test_bad_input_at_construction(kwargs, exc, word):
    for cls in (BackgroundWorker, BackgroundQueueWorker, BackgroundEventWorker, BackgroundIntervalWorker):
        with pytest.raises(exc, match=word):
            cls(**kwargs)


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(interval=1, delay=1), ValueError, "interval"),
        (dict(interval=-1), ValueError, "interval"),
        (dict(delay="x"), TypeError, "delay"),
        (dict(delay_before=-3), ValueError, "delay_before"),
        (dict(i=1, interval=2), TypeError, "interval"),
        (dict(priority=3), ValueError, "priority"),
    ],
)
def test_bad_decorator_input(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        background_worker(**kwargs)(lambda **kw: None)


def test_bad_start_overrides(supervisor):
    w = BackgroundWorker(func=lambda **kw: False, supervisor=supervisor)
    with pytest.raises(ValueError, match="_priority"):
        w.start(_priority=5)
    with pytest.raises(TypeError, match="_name"):
        w.start(_name=3)
    assert not w.is_active()


def test_no_executor_is_reported_at_start(supervisor):
    w = BackgroundWorker(supervisor=supervisor)
    with pytest.raises(TypeError, match="executor"):
        w.start()


def test_decorator_picks_the_class():
    f = lambda *a, **kw: None  # noqa: E731
    assert type(background_worker(f)) is BackgroundWorker
    assert type(background_worker(q=True)(f)) is BackgroundQueueWorker
    assert type(background_worker(queue=True)(f)) is BackgroundQueueWorker
    assert type(background_worker(e=True)(f)) is BackgroundEventWorker
    assert type(background_worker(event=True)(f)) is BackgroundEventWorker
    for kw in (dict(i=1), dict(interval=1), dict(delay=1), dict(delay_before=1)):
        assert type(background_worker(**kw)(f)) is BackgroundIntervalWorker
    assert background_worker(i=2)(f).interval == 2
    assert background_worker(delay_before=2)(f).delay == 1  # neither interval nor delay: delay=1


def test_runs_sync_says_whether_the_executor_is_called_in_the_hub(supervisor):
    async def coro(**kw):
        return False

    sync = BackgroundWorker(func=lambda **kw: False, supervisor=supervisor)
    not_sync = BackgroundWorker(func=coro, supervisor=supervisor)
    supervisor.create_aloop("runs-sync", default=True)
    sync.start()
    not_sync.start()
    assert sync.runs_sync and not not_sync.runs_sync
    wait_until(lambda: sync.is_stopped() and not_sync.is_stopped())
