"""Listeners (gworker.events): ``add_listener``'s checks, the events of every
worker kind and of tasks — their order, attributes (item, due, duration,
exception, tries) — failures, time limits, retries, misses, interrupts,
listeners added to running workers, and a listener that raises."""
import asyncio
import time

import gevent
import pytest

import gworker
from gworker import (
    ALL_EVENTS, RUN_FAILED, RUN_FINISHED, RUN_MISSED, RUN_STARTED, RUN_TIMED_OUT, TT_COROUTINE, WORKER_STARTED,
    WORKER_STOPPED, BackgroundAsyncWorker, BackgroundEventWorker, BackgroundIntervalWorker, BackgroundQueueWorker,
    BackgroundWorker, RunTimeout, WorkerEvent,
)

from conftest import wait_until

#: Slack for a loaded 2-core machine: a wake-up may come this much later.
LATE = 0.25


class Recorder:
    """A listener that keeps every event it gets."""

    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    def of(self, *names, worker=None):
        return [e for e in self.events if e.event in names and (worker is None or e.worker is worker)]

    def names(self, worker=None):
        return [e.event for e in self.events if worker is None or e.worker is worker]


# -- add_listener / remove_listener ------------------------------------------------------------------------
BAD_EVENTS = [
    ("run_started", TypeError),  # a single name: wrap it in a list
    (5, TypeError),
    ([RUN_STARTED, 7], TypeError),
    (["run_begun"], ValueError),
    ([], ValueError),
]


@pytest.mark.parametrize("events,error", BAD_EVENTS)
def test_add_listener_refuses_bad_events_naming_the_parameter(supervisor, events, error):
    with pytest.raises(error, match="events"):
        supervisor.add_listener(Recorder(), events=events)
    assert len(supervisor.listeners) == 0


def test_add_listener_refuses_what_is_not_callable_and_remove_what_was_not_added(supervisor):
    with pytest.raises(TypeError, match="fn"):
        supervisor.add_listener("not a function")
    with pytest.raises(ValueError, match="fn"):
        supervisor.remove_listener(Recorder())


def test_the_event_names_are_the_constants():
    assert ALL_EVENTS == {"run_started", "run_finished", "run_failed", "run_timed_out", "run_missed",
                          "worker_started", "worker_stopped"}
    assert (RUN_STARTED, RUN_FINISHED, RUN_FAILED, RUN_TIMED_OUT, RUN_MISSED, WORKER_STARTED, WORKER_STOPPED) == (
        "run_started", "run_finished", "run_failed", "run_timed_out", "run_missed", "worker_started",
        "worker_stopped")
    assert not hasattr(WorkerEvent(RUN_STARTED, None, "x", "task", 100, 0.0), "__dict__")


# -- queue workers ------------------------------------------------------------------------------------------
def test_a_queue_workers_runs_each_send_started_then_finished_with_the_item(supervisor):
    rec = Recorder()
    supervisor.add_listener(rec)
    seen = []
    w = BackgroundQueueWorker(func=lambda item, **kw: seen.append(item), priority=gworker.TASK_HIGH,
                              supervisor=supervisor)
    w.start()
    for i in range(50):  # a burst: the queue's batched path
        w.put_threadsafe(i)
    wait_until(lambda: len(seen) == 50)
    gevent.sleep(0.01)
    w.put_threadsafe("one more")  # after a park: the plain call
    wait_until(lambda: len(rec.of(RUN_FINISHED, worker=w)) == 51)
    w.stop()
    runs = [e for e in rec.events if e.worker is w and e.event in (RUN_STARTED, RUN_FINISHED)]
    assert [e.event for e in runs] == [RUN_STARTED, RUN_FINISHED] * 51
    assert [e.item for e in runs[::2]] == list(range(50)) + ["one more"]
    assert [e.item for e in runs[1::2]] == list(range(50)) + ["one more"]
    for e in runs:
        assert (e.name, e.kind, e.priority, e.task, e.due, e.exception, e.tries) == (
            w.name, "queue", gworker.TASK_HIGH, None, None, None, 1)
        assert abs(e.time - time.time()) < 5
    assert all(e.duration is None for e in runs[::2])
    assert all(e.duration is not None and 0 <= e.duration < 1 for e in runs[1::2])
    assert rec.names(w)[0] == WORKER_STARTED and rec.names(w)[-1] == WORKER_STOPPED


def test_a_failed_run_sends_run_failed_with_its_exception_and_the_worker_goes_on(supervisor):
    rec = Recorder()
    supervisor.add_listener(rec, events=[RUN_FAILED, RUN_FINISHED])
    errors = []

    def run(item, **kw):
        if item == "bad":
            gevent.sleep(0.01)
            raise KeyError(item)

    w = BackgroundQueueWorker(func=run, on_error=lambda: errors.append(1), supervisor=supervisor)
    w.start()
    for item in ("good", "bad", "good"):
        w.put_threadsafe(item)
    wait_until(lambda: len(rec.events) == 3)
    w.stop()
    assert [(e.event, e.item) for e in rec.events] == [
        (RUN_FINISHED, "good"), (RUN_FAILED, "bad"), (RUN_FINISHED, "good")]
    failed = rec.events[1]
    assert isinstance(failed.exception, KeyError) and failed.retrying is False
    assert 0.01 <= failed.duration < 0.01 + LATE
    assert errors == [1]


def test_a_listener_added_while_a_worker_runs_sees_its_next_runs_and_removed_sees_none(supervisor):
    seen = []
    w = BackgroundQueueWorker(func=lambda item, **kw: seen.append(item), supervisor=supervisor)
    w.start()
    w.put_threadsafe(0)
    wait_until(lambda: seen == [0])
    rec = Recorder()
    supervisor.add_listener(rec, events=[RUN_STARTED])
    for i in range(1, 21):
        w.put_threadsafe(i)
    wait_until(lambda: len(seen) == 21)
    assert [e.item for e in rec.events] == list(range(1, 21))
    supervisor.remove_listener(rec)
    for i in range(21, 41):
        w.put_threadsafe(i)
    wait_until(lambda: len(seen) == 41)
    w.stop()
    assert len(rec.events) == 20


def test_adding_a_listener_again_replaces_its_events(supervisor):
    rec = Recorder()
    supervisor.add_listener(rec, events=[RUN_STARTED])
    supervisor.add_listener(rec, events=[RUN_FINISHED])
    assert len(supervisor.listeners) == 1
    task = supervisor.put_task(lambda _task_id=None: 1)
    task.wait(5)
    wait_until(lambda: rec.events)
    assert rec.names() == [RUN_FINISHED]


def test_a_listener_that_raises_does_not_disturb_the_runs_and_is_logged_once_per_burst(supervisor, logged_errors):
    def broken(event):
        raise RuntimeError("listener bug")

    rec = Recorder()
    supervisor.add_listener(broken)
    supervisor.add_listener(rec)
    seen = []
    w = BackgroundQueueWorker(func=lambda item, **kw: seen.append(item), supervisor=supervisor)
    w.start()
    for i in range(30):
        w.put_threadsafe(i)
    wait_until(lambda: len(seen) == 30)
    w.stop()
    assert seen == list(range(30)) and w.errors == 0
    assert len(rec.of(RUN_FINISHED)) == 30, "the other listener is still called"
    assert len(logged_errors) == 1, [r.getMessage() for r in logged_errors]
    message = logged_errors[0].getMessage()
    assert "listener" in message and "broken" in message and "failed" in message
    assert "listener bug" in str(logged_errors[0].exc_info[1])


def test_retries_send_each_try_and_whether_another_follows(supervisor):
    rec = Recorder()
    supervisor.add_listener(rec, events=[RUN_STARTED, RUN_FAILED, RUN_FINISHED])
    tries = []

    def flaky(item, **kw):
        tries.append(item)
        if len(tries) < 3:
            raise ValueError("try %d" % len(tries))

    w = BackgroundQueueWorker(func=flaky, retries=3, retry_delay=0.01, supervisor=supervisor)
    w.start()
    w.put_threadsafe("x")
    wait_until(lambda: rec.of(RUN_FINISHED))
    w.stop()
    assert [(e.event, e.tries, e.retrying) for e in rec.events] == [
        (RUN_STARTED, 1, False), (RUN_FAILED, 1, True),
        (RUN_STARTED, 2, False), (RUN_FAILED, 2, True),
        (RUN_STARTED, 3, False), (RUN_FINISHED, 3, False)]
    assert all(e.item == "x" for e in rec.events)


def test_a_run_cut_off_by_its_time_limit_sends_failed_then_timed_out(supervisor, logged_errors):
    rec = Recorder()
    supervisor.add_listener(rec, events=[RUN_FAILED, RUN_TIMED_OUT])
    w = BackgroundEventWorker(func=lambda **kw: gevent.sleep(5), timeout=0.05, supervisor=supervisor)
    w.start()
    w.trigger_threadsafe()
    wait_until(lambda: len(rec.events) == 2)
    w.stop()
    assert rec.names() == [RUN_FAILED, RUN_TIMED_OUT]
    for e in rec.events:
        assert isinstance(e.exception, RunTimeout) and e.kind == "event" and e.worker is w
        assert 0.05 <= e.duration < 0.05 + LATE
    # a RunTimeout of its own making is a failure, not the worker's limit
    rec.events.clear()

    def own_timeout(**kw):
        raise RunTimeout(1, "something else")

    other = BackgroundEventWorker(func=own_timeout, supervisor=supervisor)
    other.start()
    other.trigger_threadsafe()
    wait_until(lambda: rec.events)
    other.stop()
    assert rec.names() == [RUN_FAILED]


def test_an_interrupted_run_ends_with_run_failed(supervisor):
    # shutdown() at its deadline kills the run in progress: its run_started
    # gets an end all the same (GreenletExit, passed on).
    rec = Recorder()
    supervisor.add_listener(rec, events=[RUN_STARTED, RUN_FINISHED, RUN_FAILED])
    started = gevent.event.Event()

    def stuck(item, **kw):
        started.set()
        gevent.sleep(5)

    w = BackgroundQueueWorker(func=stuck, supervisor=supervisor)
    w.start()
    w.put_threadsafe("stuck")
    assert started.wait(2)
    result = w.shutdown(0.05)
    assert result.interrupted == ("stuck",)
    assert rec.names() == [RUN_STARTED, RUN_FAILED]
    assert isinstance(rec.events[1].exception, gevent.GreenletExit) and rec.events[1].item == "stuck"
    assert w.errors == 0, "an interrupt is not counted as a failure"


def test_async_queue_runs_send_their_events_in_the_coroutine(supervisor):
    rec = Recorder()
    loops = []

    def listener(event):
        rec(event)
        loops.append(_running_loop())

    supervisor.add_listener(listener, events=[RUN_STARTED, RUN_FINISHED, RUN_FAILED])

    async def run(item, **kw):
        await asyncio.sleep(0)
        if item == 2:
            raise ValueError(item)

    w = BackgroundQueueWorker(func=run, on_error=lambda: None, supervisor=supervisor)
    w.start()
    for i in range(4):
        w.put_threadsafe(i)
    wait_until(lambda: len(rec.events) == 8)
    w.stop()
    assert [(e.event, e.item) for e in rec.events] == [
        (RUN_STARTED, 0), (RUN_FINISHED, 0), (RUN_STARTED, 1), (RUN_FINISHED, 1),
        (RUN_STARTED, 2), (RUN_FAILED, 2), (RUN_STARTED, 3), (RUN_FINISHED, 3)]
    assert all(loop is not None for loop in loops), "sent from the coroutine, on the worker's aloop"


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# -- the other kinds ----------------------------------------------------------------------------------------
def test_continuous_and_event_workers_send_their_runs(supervisor):
    rec = Recorder()
    supervisor.add_listener(rec, events=[RUN_STARTED, RUN_FINISHED, WORKER_STARTED, WORKER_STOPPED])
    calls = []

    def loop(**kw):
        calls.append(1)
        if len(calls) == 3:
            return False

    c = BackgroundWorker(func=loop, supervisor=supervisor)
    c.start()
    wait_until(lambda: WORKER_STOPPED in rec.names(c))
    assert rec.names(c) == [WORKER_STARTED] + [RUN_STARTED, RUN_FINISHED] * 3 + [WORKER_STOPPED]
    assert {e.kind for e in rec.of(RUN_STARTED, worker=c)} == {"continuous"}

    async def aloop_run(**kw):
        await asyncio.sleep(0)
        return False

    a = BackgroundAsyncWorker(func=aloop_run, supervisor=supervisor)
    a.start()
    wait_until(lambda: WORKER_STOPPED in rec.names(a))
    assert rec.names(a) == [WORKER_STARTED, RUN_STARTED, RUN_FINISHED, WORKER_STOPPED]

    e = BackgroundEventWorker(func=lambda **kw: None, supervisor=supervisor)
    e.start()
    e.trigger_threadsafe()
    wait_until(lambda: rec.of(RUN_FINISHED, worker=e))
    e.stop()
    assert rec.names(e) == [WORKER_STARTED, RUN_STARTED, RUN_FINISHED, WORKER_STOPPED]
    assert rec.of(RUN_STARTED, worker=e)[0].due is None


@pytest.mark.parametrize("interval", [0.05, 0.3], ids=["kept-greenlet", "timer-heap"])
def test_interval_runs_carry_their_due_time_and_triggered_runs_none(supervisor, interval):
    rec = Recorder()
    supervisor.add_listener(rec, events=[RUN_STARTED, RUN_FINISHED])
    w = BackgroundIntervalWorker(func=lambda **kw: None, interval=interval, precise=True, supervisor=supervisor)
    w.start()
    wait_until(lambda: len(rec.of(RUN_STARTED)) >= 3, timeout=5)
    gevent.sleep(interval / 3)  # between two scheduled runs
    w.trigger_threadsafe()
    wait_until(lambda: any(e.due is None for e in rec.of(RUN_STARTED)), timeout=2)
    w.stop()
    starts = rec.of(RUN_STARTED)
    scheduled = [e for e in starts if e.due is not None]
    assert len(starts) - len(scheduled) == 1, "the triggered run has no due time"
    for e in scheduled:
        assert -0.002 <= e.time - e.due < LATE, "lateness %.4f s" % (e.time - e.due)
    dues = [e.due for e in scheduled]
    for a, b in zip(dues[1:], dues[2:]):  # (the first is the origin of the schedule)
        assert b - a == pytest.approx(interval, abs=0.005)
    finished = rec.of(RUN_FINISHED)
    assert [e.due for e in finished] == [e.due for e in starts[:len(finished)]]


@pytest.mark.blocks_hub
def test_a_run_skipped_by_misfire_grace_sends_run_missed(supervisor):
    rec = Recorder()
    supervisor.add_listener(rec, events=[RUN_MISSED])
    starts = []
    w = BackgroundIntervalWorker(func=lambda **kw: starts.append(1), interval=0.05, misfire_grace=0.02,
                                 supervisor=supervisor)
    w.start()
    wait_until(lambda: starts, timeout=2)
    busy_until = time.monotonic() + 0.2
    while time.monotonic() < busy_until:  # the hub's thread is busy: the next run is late
        pass
    wait_until(lambda: rec.events, timeout=2)
    w.stop()
    missed = rec.events[0]
    assert (missed.worker, missed.kind, missed.duration) == (w, "interval", None)
    assert missed.time - missed.due > 0.02


# -- tasks --------------------------------------------------------------------------------------------------
def test_tasks_send_their_runs_with_kind_task(supervisor, logged_errors):
    rec = Recorder()
    supervisor.add_listener(rec, events=[RUN_STARTED, RUN_FINISHED, RUN_FAILED])

    def job(x, _task_id=None):
        gevent.sleep(0.01)
        return x

    ok = supervisor.put_task(job, args=(1,), priority=gworker.TASK_LOW)
    bad = supervisor.put_task(lambda _task_id=None: 1 / 0)
    assert ok.wait(5) == 1
    bad.completed.wait(5)
    wait_until(lambda: len(rec.events) == 4)
    of_ok = [e for e in rec.events if e.task is ok]
    assert [e.event for e in of_ok] == [RUN_STARTED, RUN_FINISHED]
    for e in of_ok:
        assert (e.worker, e.kind, e.priority, e.item, e.due) == (None, "task", gworker.TASK_LOW, None, None)
        assert e.name.endswith("job")
    assert 0.01 <= of_ok[1].duration < 0.01 + LATE
    of_bad = [e for e in rec.events if e.task is bad]
    assert [e.event for e in of_bad] == [RUN_STARTED, RUN_FAILED]
    assert isinstance(of_bad[1].exception, ZeroDivisionError)
    assert len(logged_errors) == 1


def test_coroutine_tasks_and_background_tasks_send_their_runs(supervisor):
    rec = Recorder()
    loops = []

    def listener(event):
        rec(event)
        loops.append(_running_loop())

    supervisor.add_listener(listener, events=[RUN_STARTED, RUN_FINISHED])

    async def job(_task_id=None):
        await asyncio.sleep(0)
        return "done"

    task = supervisor.put_task(job, tt=TT_COROUTINE)
    assert task.wait(5) == "done"
    wait_until(lambda: len(rec.events) == 2)
    assert [e.event for e in rec.events] == [RUN_STARTED, RUN_FINISHED] and all(e.task is task for e in rec.events)
    assert all(loop is not None for loop in loops), "sent in the coroutine, on its loop"

    background = gworker.background_task(lambda: "bg", supervisor=supervisor)()
    assert background.wait(5) == "bg"
    wait_until(lambda: len(rec.events) == 4)
    assert [e.task for e in rec.events[2:]] == [background, background]
