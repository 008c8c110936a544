"""Async executors on aloops, for every worker kind; the supervisor's aloop API."""
import asyncio
import logging
import sys
import time

import gevent
import pytest
from gevent.event import Event

from gworker import (
    TT_COROUTINE, BackgroundAsyncWorker, BackgroundEventWorker, BackgroundIntervalWorker,
    BackgroundQueueWorker, TaskSupervisor, background_worker,
)

from conftest import wait_until


def test_decorator_picks_the_async_worker_and_it_runs_on_an_aloop(supervisor):
    seen = []

    @background_worker(supervisor=supervisor, poll_delay=0.01)
    async def job(*args, **kwargs):
        seen.append((args, kwargs["_name"], asyncio.get_running_loop()))
        await asyncio.sleep(0)
        if len(seen) == 3:
            return False

    assert isinstance(job, BackgroundAsyncWorker)
    job.start("x")
    wait_until(job.is_stopped)
    assert [s[:2] for s in seen] == [(("x",), "job")] * 3
    loop = seen[0][2]
    assert supervisor.aloops.for_workers().get_loop() is loop  # the supervisor's own aloop


def test_async_worker_pauses_poll_delay_between_calls(supervisor):
    stamps = []

    async def job(**kw):
        stamps.append(time.monotonic())

    w = BackgroundAsyncWorker(func=job, poll_delay=0.05, supervisor=supervisor)
    w.start()
    wait_until(lambda: len(stamps) >= 4, 3)
    w.stop()
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert min(gaps) >= 0.045


def test_class_form_async_run(supervisor):
    done = Event()

    class MyWorker(BackgroundAsyncWorker):
        async def run(self, *args, **kwargs):
            self.loop_seen = asyncio.get_running_loop()
            done.set()
            return False

    w = MyWorker(supervisor=supervisor)
    w.start()
    assert done.wait(3)
    assert w.loop_seen is not None


def test_async_queue_event_and_interval_workers(supervisor):
    got, events, ticks = [], [], []

    async def on_item(item, **kw):
        await asyncio.sleep(0.001)
        got.append(item)

    async def on_event(**kw):
        events.append(asyncio.get_running_loop())

    async def on_tick(**kw):
        ticks.append(time.monotonic())

    q = BackgroundQueueWorker(func=on_item, supervisor=supervisor)
    e = BackgroundEventWorker(func=on_event, supervisor=supervisor)
    i = BackgroundIntervalWorker(func=on_tick, interval=0.02, supervisor=supervisor)
    for w in (q, e, i):
        w.start()
    for n in range(10):
        q.put_threadsafe(n)
    e.trigger_threadsafe()
    wait_until(lambda: len(got) == 10 and events and len(ticks) >= 5, 5)
    for w in (q, e, i):
        w.stop()
    assert got == list(range(10))
    assert events[0] is supervisor.aloops.for_workers().get_loop()


def test_two_aloops_interleave_in_one_thread_each_seeing_its_own_loop(supervisor):
    a = supervisor.create_aloop("a")
    b = supervisor.create_aloop("b")
    wrong, runs = [], {"a": 0, "b": 0}

    def make(tag, aloop):
        async def job(**kw):
            for _ in range(3):
                if asyncio.get_running_loop() is not aloop.get_loop():
                    wrong.append(tag)
                gevent.sleep(0.001)  # gevent-blocking inside a coroutine: switches greenlets
                await asyncio.sleep(0.001)
            runs[tag] += 1
        return job

    wa = BackgroundAsyncWorker(func=make("a", a), loop=a, poll_delay=0, supervisor=supervisor)
    wb = BackgroundAsyncWorker(func=make("b", b), loop="b", poll_delay=0, supervisor=supervisor)
    wa.start()
    wb.start()
    wait_until(lambda: runs["a"] >= 5 and runs["b"] >= 5, 5)
    wa.stop()
    wb.stop()
    assert wrong == []


def test_loop_may_be_the_asyncio_loop_of_an_aloop_and_start_override(supervisor):
    a = supervisor.create_aloop("mine")
    seen = []

    async def job(**kw):
        seen.append(asyncio.get_running_loop())
        return False

    w = BackgroundAsyncWorker(func=job, loop=a.get_loop(), supervisor=supervisor)
    w.start()
    wait_until(w.is_stopped)
    other = supervisor.create_aloop("other")
    w.start(_loop="other")
    wait_until(w.is_stopped)
    assert seen == [a.get_loop(), other.get_loop()]
    assert w.loop == "other"


def test_default_aloop_is_used_when_set(supervisor):
    d = supervisor.create_aloop("d", default=True)
    assert supervisor.get_aloop() is d
    seen = []

    async def job(**kw):
        seen.append(asyncio.get_running_loop())
        return False

    w = BackgroundAsyncWorker(func=job, supervisor=supervisor)
    w.start()
    wait_until(w.is_stopped)
    assert seen == [d.get_loop()]


def test_await_put_and_await_trigger_from_a_coroutine(supervisor):
    items, runs = [], []
    q = BackgroundQueueWorker(func=lambda item, **kw: items.append(item), supervisor=supervisor)
    ev = BackgroundEventWorker(func=lambda **kw: runs.append(1), supervisor=supervisor)
    bounded = BackgroundQueueWorker(func=lambda item, **kw: items.append(item),
                                    q=gevent.queue.Queue(maxsize=1), supervisor=supervisor)
    q.start()
    ev.start()
    aloop = supervisor.create_aloop("feeder")

    async def feed():
        for n in range(5):
            await q.put(n)
        await ev.trigger()
        for n in range(3):  # a full bounded queue: awaits, never blocks the loop
            await bounded.put("b%d" % n)
        return "fed"

    fut = aloop.background_task(feed())
    gevent.sleep(0.05)
    assert not fut.done()  # waiting for room in the bounded queue (nobody consumes yet)
    assert aloop.run(asyncio.sleep(0, "loop still turns")) == "loop still turns"
    bounded.start()
    wait_until(fut.done, 3)
    wait_until(lambda: len(items) == 8 and runs == [1], 3)
    for w in (q, ev, bounded):
        w.stop()
    assert items[:5] == [0, 1, 2, 3, 4] and sorted(items[5:]) == ["b0", "b1", "b2"]


def test_other_greenlets_keep_running_while_coroutines_run(supervisor):
    ticks, stop = [], Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.monotonic())
            gevent.sleep(0.005)

    async def job(**kw):
        await asyncio.sleep(0.01)

    t = gevent.spawn(ticker)
    w = BackgroundAsyncWorker(func=job, poll_delay=0, supervisor=supervisor)
    w.start()
    gevent.sleep(0.3)
    w.stop()
    stop.set()
    t.join(2)
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(ticks) > 20 and max(gaps) < 0.05


def test_async_executor_errors_go_to_on_error_or_the_log(supervisor, caplog):
    errors = []

    async def bad(*args, **kw):
        raise ValueError("async boom")

    w = BackgroundAsyncWorker(func=bad, poll_delay=0.01, supervisor=supervisor,
                              on_error=lambda: errors.append(sys.exc_info()[1]))
    w.start()
    wait_until(lambda: len(errors) >= 2)
    w.stop()
    assert isinstance(errors[0], ValueError)
    w2 = BackgroundQueueWorker(func=bad, supervisor=supervisor)
    with caplog.at_level(logging.ERROR, logger="gworker"):
        w2.start()
        w2.put_threadsafe(1)
        w2.put_threadsafe(2)
        wait_until(lambda: w2.errors == 2)
    w2.stop()
    assert "async boom" in caplog.text and "Traceback" in caplog.text


def test_stop_lets_the_running_coroutine_finish(supervisor):
    inside, finished = Event(), []

    async def job(**kw):
        inside.set()
        await asyncio.sleep(0.1)
        finished.append(1)

    w = BackgroundAsyncWorker(func=job, supervisor=supervisor)
    w.start()
    assert inside.wait(2)
    w.stop()
    assert finished == [1]


def test_coroutine_tasks(supervisor):
    got = Event()
    results = []

    async def target(x, **kw):
        await asyncio.sleep(0.001)
        return x * 2, kw["_task_id"]

    task = supervisor.put_task(target, args=(21,), tt=TT_COROUTINE,
                               callback=lambda r: (results.append(r), got.set()))
    assert task.wait(3) == (42, task.id)
    assert got.wait(2) and results == [(42, task.id)]
    named = supervisor.create_aloop("t")
    task2 = supervisor.put_task(target, args=(1,), tt=TT_COROUTINE, loop="t")
    assert task2.wait(3)[0] == 2
    with pytest.raises(TypeError, match="coroutine"):
        supervisor.put_task(lambda **kw: None, tt=TT_COROUTINE)
    assert named.is_active()


def test_supervisor_aloop_api_and_stop():
    sup = TaskSupervisor()
    sup.start()
    a = sup.create_aloop("x", default=True)
    assert sup.get_aloop("x") is a and sup.get_aloop() is a
    assert sup.get_aloop("nope") is None
    with pytest.raises(ValueError, match="name"):
        sup.create_aloop("x")
    with pytest.raises(TypeError, match="name"):
        sup.create_aloop(5)
    b = sup.create_aloop("y", start=False)
    assert not b.is_active()
    assert sup.start_aloop("y") is True and b.is_active()
    sup.set_default_aloop("y")
    assert sup.get_aloop() is b
    pending = b.background_task(asyncio.sleep(10))
    assert sup.stop_aloop("y", cancel_tasks=True) is True
    assert pending.cancelled() and sup.get_aloop("y") is None
    assert "x" in sup.get_info().aloops
    sup.stop()
    assert not a.is_active()


@pytest.mark.parametrize("loop", [5, object(), 1.5])
def test_bad_loop_at_construction(loop):
    with pytest.raises(TypeError, match="loop"):
        BackgroundAsyncWorker(func=lambda **kw: None, loop=loop)


def test_unknown_loop_name_at_start(supervisor):
    async def job(**kw):
        return False

    w = BackgroundAsyncWorker(func=job, loop="missing", supervisor=supervisor)
    with pytest.raises(ValueError, match="loop"):
        w.start()
    assert not w.is_active()
    with pytest.raises(TypeError, match="_loop"):
        w.start(_loop=3)
