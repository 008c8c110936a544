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

from conftest import greenlet_count, wait_until


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

    fut = aloop.create_task(feed())
    wait_until(lambda: bounded.get_queue_obj().full())  # b0 is in; b1 waits for room
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


def test_async_executor_errors_go_to_on_error_or_the_log(supervisor, caplog, logged_errors):
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
    assert [r.exc_info[0] for r in logged_errors] == [ValueError], "on_error took the first worker's"


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
    with pytest.raises(TypeError, match="name"):
        sup.create_aloop(5)
    b = sup.create_aloop("y", start=False)
    assert not b.is_active()
    assert sup.start_aloop("y") is True and b.is_active()
    sup.set_default_aloop("y")
    assert sup.get_aloop() is b
    pending = b.create_task(asyncio.sleep(10))
    assert sup.stop_aloop("y", cancel_tasks=True) is True
    assert pending.cancelled() and not b.is_active()
    assert sup.get_aloop("y") is b  # kept, as in atasker: start_aloop("y") starts it again
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


# -- the async queue worker's loop runs as a coroutine on its aloop (no task per item) --------------

def test_async_queue_worker_runs_as_one_task_on_its_aloop(supervisor):
    aloop = supervisor.create_aloop("q")
    tasks = []

    async def run(item, **kw):
        tasks.append(asyncio.current_task())

    w = BackgroundQueueWorker(func=run, loop=aloop, supervisor=supervisor)
    wait_until(lambda: aloop.is_active())
    before = greenlet_count()  # (the aloop's greenlet included)
    w.start()
    for i in range(5):
        w.put_threadsafe(i)
    wait_until(lambda: len(tasks) == 5)
    # waiting for the next item, the loop awaits one greenlet parked in the
    # queue's peek() (see gworker.workers.queue); it has none of its own
    wait_until(lambda: greenlet_count() == before + 1)
    assert all(t is tasks[0] for t in tasks)  # the worker's own task: none made per item
    assert not tasks[0].done()  # (it waits for the next item)
    w.stop()
    assert w.is_stopped() and tasks[0].done()
    assert w.start()  # restart: a new task
    w.put_threadsafe(5)
    wait_until(lambda: len(tasks) == 6)
    assert tasks[-1] is not tasks[0] and not tasks[-1].done()
    w.stop()
    assert tasks[-1].done() and greenlet_count() == before


def test_async_queue_burst_keeps_order_and_never_overlaps(supervisor):
    n = 10_000
    got, task_ids, running, overlaps = [], [], [0], []

    async def run(item, *args, **kw):
        running[0] += 1
        if running[0] > 1:
            overlaps.append(item)
        assert args == ("a",) and kw["x"] == 1 and kw["_worker"] is w and kw["_name"] == "burst"
        assert kw["o"] == "obj"
        task_ids.append(kw["_task_id"])
        if item % 7 == 0:
            await asyncio.sleep(0)
        if item % 1000 == 0:
            await asyncio.sleep(0.001)
            gevent.sleep(0)  # gevent-blocking inside the coroutine: other greenlets run
        got.append(item)
        running[0] -= 1

    w = BackgroundQueueWorker(func=run, name="burst", o="obj", supervisor=supervisor)
    w.start("a", x=1)
    for i in range(n // 2):
        w.put_threadsafe(i)
    wait_until(lambda: got)  # it is working
    for i in range(n // 2, n):  # more items while it works
        w.put_threadsafe(i)
    wait_until(lambda: len(got) == n, 20)
    w.stop()
    assert got == list(range(n)) and overlaps == []
    assert len(set(task_ids)) == n and task_ids == sorted(task_ids)
    info = w.get_info()
    assert info["runs"] == n and info["errors"] == 0 and info["queue_length"] == 0
    assert info["last_run"] is not None and info["last_duration"] is not None


def test_async_queue_stop_mid_burst_leaves_the_rest_queued_and_drain_processes_it(supervisor):
    got = []

    async def run(item, **kw):
        await asyncio.sleep(0)
        got.append(item)

    w = BackgroundQueueWorker(func=run, supervisor=supervisor)
    w.start()
    for i in range(5000):
        w.put_threadsafe(i)
    wait_until(lambda: len(got) >= 100)
    w.stop()  # waits for the call in progress; takes no more items
    assert w.is_stopped()
    done = len(got)
    assert got == list(range(done)) and done < 5000
    assert w.get_queue_obj().qsize() == 5000 - done  # nothing lost, nothing half-taken
    gevent.sleep(0.05)  # a window in which the stopped worker must not take an item
    assert len(got) == done
    w.start()
    wait_until(lambda: len(got) >= done + 50)
    w.stop(drain=True)  # processes everything still queued, then stops
    assert got == list(range(5000)) and w.get_queue_obj().qsize() == 0 and w.is_stopped()


def test_async_queue_stop_while_idle_and_stop_wait_lets_the_call_finish(supervisor):
    inside, finished = Event(), []

    async def run(item, **kw):
        inside.set()
        await asyncio.sleep(0.1)
        finished.append(item)

    w = BackgroundQueueWorker(func=run, supervisor=supervisor)
    w.start()
    w.put_threadsafe("first")
    wait_until(lambda: finished == ["first"])  # then it waits for the next item
    inside.clear()
    t0 = time.monotonic()
    w.stop()  # parked, waiting for an item: ends at once
    assert w.is_stopped() and time.monotonic() - t0 < 0.5
    w.start()
    w.put_threadsafe("x")
    w.put_threadsafe("y")
    assert inside.wait(2)
    w.stop()
    assert finished == ["first", "x"]  # the call in progress finished, nothing was cancelled
    assert list(w.get_queue_obj().queue) == ["y"]


def test_async_queue_stop_from_inside_the_executor_and_false(supervisor):
    got = []

    async def run(item, **kw):
        got.append(item)
        if item == 3:
            kw["_worker"].stop()  # wait=True: must not deadlock
            got.append("after stop")

    w = BackgroundQueueWorker(func=run, supervisor=supervisor)
    w.start()
    for i in range(10):
        w.put_threadsafe(i)
    wait_until(w.is_stopped, 3)
    assert got == [0, 1, 2, 3, "after stop"] and w.get_queue_obj().qsize() == 6

    async def run2(item, **kw):
        got.append(item)
        return item != 5 and None

    w2 = BackgroundQueueWorker(func=run2, supervisor=supervisor)
    w2.start()
    for i in range(4, 10):
        w2.put_threadsafe(i)
    wait_until(w2.is_stopped, 3)
    assert got[5:] == [4, 5] and w2.get_queue_obj().qsize() == 4


def test_async_queue_errors_hooks_and_await_put(supervisor, caplog):
    errors, seen = [], []

    class Hooked(BackgroundQueueWorker):
        def before_queue_get(self):
            seen.append("before")

        def after_queue_get(self, task):
            seen.append(("after", task))

        async def run(self, item, **kw):
            seen.append(("run", item))
            if item == "bad":
                raise ValueError("bad item")

    w = Hooked(supervisor=supervisor, on_error=lambda: errors.append(sys.exc_info()[1]))
    w.start()
    feeder = supervisor.create_aloop("feeder")

    async def feed():
        for item in ("a", "bad", "b"):
            await w.put(item)

    feeder.run(feed())
    wait_until(lambda: ("run", "b") in seen)
    w.stop()
    assert [s for s in seen if s != "before"] == [
        ("after", "a"), ("run", "a"), ("after", "bad"), ("run", "bad"), ("after", "b"), ("run", "b")]
    assert seen.count("before") >= 3 and seen[0] == "before"
    assert len(errors) == 1 and isinstance(errors[0], ValueError) and w.errors == 1


def test_tickers_keep_ticking_during_an_async_queue_burst(supervisor):
    n = 100_000
    count = [0]
    aloop = supervisor.create_aloop("burst")
    other = supervisor.create_aloop("other")
    glet_ticks, coro_ticks, same_loop_ticks = [], [], []
    stop = Event()

    async def run(item, **kw):
        count[0] += 1  # never awaits: only the worker's loop yields

    def ticker():
        while not stop.is_set():
            glet_ticks.append(time.monotonic())
            gevent.sleep(0.005)

    async def coro_ticker(ticks):
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.005)

    w = BackgroundQueueWorker(func=run, loop=aloop, supervisor=supervisor)
    w.start()
    t = gevent.spawn(ticker)
    f1 = other.create_task(coro_ticker(coro_ticks))
    f2 = aloop.create_task(coro_ticker(same_loop_ticks))
    wait_until(lambda: glet_ticks and coro_ticks and same_loop_ticks)  # all three tick
    start = time.monotonic()
    for i in range(n):
        w.put_threadsafe(i)
    wait_until(lambda: count[0] == n, 30)
    end = time.monotonic()
    stop.set()
    t.join(2)
    wait_until(lambda: f1.done() and f2.done(), 2)
    w.stop()
    for ticks in (glet_ticks, coro_ticks, same_loop_ticks):
        during = [x for x in ticks if start <= x <= end + 0.01]
        gaps = [b - a for a, b in zip(during, during[1:])]
        assert gaps and max(gaps) < 0.05, (len(during), max(gaps or [0]))


def test_stopping_the_aloop_under_an_async_queue_worker_stops_it(supervisor, caplog):
    aloop = supervisor.create_aloop("gone")
    got = []

    async def run(item, **kw):
        got.append(item)

    w = BackgroundQueueWorker(func=run, loop="gone", supervisor=supervisor)
    w.start()
    w.put_threadsafe(1)
    wait_until(lambda: got == [1])
    with caplog.at_level(logging.WARNING, logger="gworker"):
        assert supervisor.stop_aloop("gone", wait=3) is True  # does not wait for ever
    assert not aloop.is_active() and w.is_stopped()
    assert "stopping" in caplog.text
    w.put_threadsafe(2)
    assert w.get_queue_obj().qsize() == 1  # stays queued


def test_async_queue_worker_on_an_aloop_that_is_not_running(supervisor, caplog, logged_errors):
    supervisor.create_aloop("idle", start=False)

    async def run(item, **kw):
        pass

    w = BackgroundQueueWorker(func=run, loop="idle", supervisor=supervisor)
    with caplog.at_level(logging.ERROR, logger="gworker"):
        w.start()  # the greenlet loop: each item fails and is reported
        w.put_threadsafe(1)
        wait_until(lambda: w.errors == 1)
    w.stop()
    assert "not active" in caplog.text
    assert len(logged_errors) == 1


def test_graceful_shutdown_interrupts_an_async_queue_run_and_reports_its_item(supervisor):
    from gworker.integrations.lifecycle import WorkerSet

    done, reported = [], []

    async def run(item, **kw):
        await asyncio.sleep(0.05)
        done.append(item)

    q = BackgroundQueueWorker(func=run, supervisor=supervisor)
    workers = WorkerSet(supervisor, on_undrained=lambda w, items: reported.extend(items))
    workers.add(q)
    workers.start()
    for i in range(20):
        q.put_threadsafe(i)
    report = workers.shutdown(timeout=0.12)
    assert report.elapsed < 0.12 + 0.5
    gevent.sleep(0.1)  # a window for an interrupted call to finish after all, which must not come
    assert sorted(done + reported) == list(range(20))  # processed or reported, never both
    assert reported and report.undrained[q.name] == reported
    assert report.interrupted == {q.name: reported[0]}
