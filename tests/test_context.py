"""Context propagation (gworker.context): a run is made in the contextvars
context of what asked for it — a queue item's producer (greenlets, OS threads,
coroutines; the batched path too), a trigger, a task's ``put_task``, a
worker's ``start()`` — for sync, async and process executors; what a run sets
stays in it; ``propagate_context=False``; what the queue keeps beside its
items does not outlive them."""
import asyncio
import contextvars
import gc
import weakref

import gevent
import gevent.queue
import pytest

import gworker
from gworker import (
    RUN_FINISHED, RUN_STARTED, TT_COROUTINE, TT_MP, BackgroundAsyncWorker, BackgroundEventWorker,
    BackgroundIntervalWorker, BackgroundQueueWorker, BackgroundWorker,
)
from gworker.context import in_context

from conftest import native_thread, wait_until
from context_funcs import ReadingQueueWorker, read_request_id, request_id


def in_greenlet(value, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a new greenlet whose context holds ``request_id=value``."""
    def body():
        request_id.set(value)
        return fn(*args, **kwargs)

    return gevent.spawn(body).get(timeout=5)


class Item:
    """A queue item that can be weakly referenced."""

    def __init__(self, n):
        self.n = n


# -- queue workers ------------------------------------------------------------------------------------------
def test_each_item_runs_in_its_producers_context_batched_or_not(supervisor):
    seen = []
    w = BackgroundQueueWorker(func=lambda item, **kw: seen.append((item, request_id.get())),
                              propagate_context=True, supervisor=supervisor)
    w.start()
    def burst():  # without a switch: the batched path; each put in the context of its moment
        for i in range(40):
            request_id.set("r%d" % i)
            w.put_threadsafe(i)

    gevent.spawn(burst).join()
    wait_until(lambda: len(seen) == 40)
    gevent.sleep(0.01)
    in_greenlet("alone", w.put_threadsafe, "alone")  # after a park: the plain call
    w.put_threadsafe("no request")
    wait_until(lambda: len(seen) == 42)
    w.stop()
    assert seen == [(i, "r%d" % i) for i in range(40)] + [("alone", "alone"), ("no request", None)]


def test_what_a_run_sets_stays_in_it(supervisor):
    seen = []

    def run(item, **kw):
        seen.append(request_id.get())
        request_id.set("set by run %s" % item)

    w = BackgroundQueueWorker(func=run, propagate_context=True, supervisor=supervisor)
    w.start()
    request_id.set("producer")
    try:
        for i in range(3):
            w.put_threadsafe(i)
        wait_until(lambda: len(seen) == 3)
        assert request_id.get() == "producer"
    finally:
        request_id.set(None)
    w.stop()
    assert seen == ["producer"] * 3, "no run sees what the one before it set"


def test_items_put_from_os_threads_and_coroutines_carry_their_context(supervisor):
    seen = []
    w = BackgroundQueueWorker(func=lambda item, **kw: seen.append((item, request_id.get())),
                              propagate_context=True, supervisor=supervisor)
    w.start()

    def feed(tid):
        request_id.set("thread %d" % tid)
        for i in range(5):
            w.put_threadsafe((tid, i))

    for handle in [native_thread(feed, tid) for tid in range(3)]:
        handle.join()
    wait_until(lambda: len(seen) == 15)
    assert all(value == "thread %d" % item[0] for item, value in seen)

    async def produce():
        request_id.set("coroutine")
        await w.put("from a coroutine")

    aloop = supervisor.create_aloop("ctx-test")
    aloop.run(produce())
    wait_until(lambda: len(seen) == 16)
    w.stop()
    assert seen[-1] == ("from a coroutine", "coroutine")


def test_an_async_queue_executor_runs_in_each_items_context(supervisor):
    seen = []

    async def run(item, **kw):
        await asyncio.sleep(0)
        seen.append((item, request_id.get()))
        request_id.set("changed")  # stays in the item's context

    w = BackgroundQueueWorker(func=run, propagate_context=True, supervisor=supervisor)
    w.start()
    for i in range(5):
        in_greenlet("r%d" % i, w.put_threadsafe, i)
    w.put_threadsafe("plain")
    wait_until(lambda: len(seen) == 6)
    w.stop()
    assert seen == [(i, "r%d" % i) for i in range(5)] + [("plain", None)]


def test_without_propagation_a_run_does_not_see_its_producers_context(supervisor):
    seen = []
    w = BackgroundQueueWorker(func=lambda item, **kw: seen.append(request_id.get()),
                              propagate_context=False, supervisor=supervisor)
    e = BackgroundEventWorker(func=lambda **kw: seen.append(request_id.get()), propagate_context=False,
                              supervisor=supervisor)
    in_greenlet("started", w.start)
    in_greenlet("started", e.start)
    in_greenlet("request", w.put_threadsafe, 1)
    in_greenlet("request", e.trigger_threadsafe)
    wait_until(lambda: len(seen) == 2)
    w.stop()
    e.stop()
    assert seen == [None, None]


def test_queue_workers_propagate_only_when_asked_and_the_other_kinds_by_default(supervisor):
    seen = []
    w = BackgroundQueueWorker(func=lambda item, **kw: seen.append(("queue", request_id.get())),
                              supervisor=supervisor)
    e = BackgroundEventWorker(func=lambda **kw: seen.append(("event", request_id.get())), supervisor=supervisor)
    w.start()
    e.start()
    in_greenlet("request", w.put_threadsafe, 1)
    wait_until(lambda: len(seen) == 1)
    in_greenlet("request", e.trigger_threadsafe)
    wait_until(lambda: len(seen) == 2)
    w.stop()
    e.stop()
    assert seen == [("queue", None), ("event", "request")]
    assert (w.propagate_context, e.propagate_context) == (False, True)


def test_propagate_context_must_be_a_bool():
    with pytest.raises(TypeError, match="propagate_context"):
        BackgroundQueueWorker(func=lambda item, **kw: None, propagate_context="yes")


def test_the_contexts_kept_beside_items_do_not_outlive_them(supervisor):
    # Items taken out of the queue another way (a direct get, shutdown's
    # hand-back) leave nothing of theirs behind in the worker.
    seen = []
    w = BackgroundQueueWorker(func=lambda item, **kw: seen.append(item.n), propagate_context=True,
                              supervisor=supervisor)
    w.start()
    w.stop()
    taken, left = Item(1), Item(2)
    refs = [weakref.ref(taken), weakref.ref(left)]
    in_greenlet("r", w.put_threadsafe, taken)
    assert w.get_queue_obj().get() is taken
    in_greenlet("r", w.put_threadsafe, left)
    assert [i.n for i in w.shutdown(False).left] == [2]
    del taken, left
    w.start()
    in_greenlet("r", w.put_threadsafe, Item(3))  # its run: then the queue is empty
    wait_until(lambda: seen == [3])
    gevent.sleep(0.01)
    w.stop()
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


def test_the_same_item_put_twice_runs_once_in_each_context(supervisor):
    seen = []
    w = BackgroundQueueWorker(func=lambda item, **kw: seen.append((item, request_id.get())),
                              propagate_context=True, q=gevent.queue.PriorityQueue, supervisor=supervisor)
    w.stop()
    for value in ("first", "second"):
        in_greenlet(value, w.put_threadsafe, (1, "same"))
    w.start()
    wait_until(lambda: len(seen) == 2)
    w.stop()
    assert [value for _, value in seen] == ["first", "second"]


# -- triggers, starts -------------------------------------------------------------------------------------
def test_a_triggered_run_is_made_in_the_triggers_context(supervisor):
    seen = []
    release = gevent.event.Event()

    def run(**kw):
        seen.append(request_id.get())
        if len(seen) == 1:
            release.wait(5)

    e = BackgroundEventWorker(func=run, supervisor=supervisor)
    in_greenlet("starter", e.start)
    in_greenlet("first", e.trigger_threadsafe)
    wait_until(lambda: len(seen) == 1)
    in_greenlet("forced", e.trigger_threadsafe, True)  # one more run, after this one
    in_greenlet("coalesced", e.trigger_threadsafe, True)
    release.set()
    wait_until(lambda: len(seen) == 2)

    def from_thread():
        request_id.set("os thread")
        e.trigger_threadsafe()

    native_thread(from_thread).join()
    wait_until(lambda: len(seen) == 3)

    async def from_coroutine():
        request_id.set("coroutine")
        await e.trigger()

    supervisor.create_aloop("ctx-trigger").run(from_coroutine())
    wait_until(lambda: len(seen) == 4)
    in_greenlet("event", e.get_event_obj().set)
    wait_until(lambda: len(seen) == 5)
    e.stop()
    assert seen == ["first", "forced", "os thread", "coroutine", "event"]


@pytest.mark.parametrize("interval", [0.02, 0.3], ids=["kept-greenlet", "timer-heap"])
def test_interval_runs_are_made_in_the_start_context_and_triggered_ones_in_the_triggers(supervisor, interval):
    seen = []

    def run(**kw):
        seen.append(request_id.get())
        request_id.set("set by a run")  # in the start context: the next scheduled run sees it

    w = BackgroundIntervalWorker(func=run, interval=interval, supervisor=supervisor)
    in_greenlet("at start", w.start)
    wait_until(lambda: len(seen) >= 2, timeout=5)
    count = len(seen)
    gevent.sleep(interval / 3)
    in_greenlet("trigger", w.trigger_threadsafe)
    wait_until(lambda: "trigger" in seen, timeout=2)
    wait_until(lambda: len(seen) > seen.index("trigger") + 1, timeout=5)
    w.stop()
    assert seen[0] == "at start" and set(seen[1:count]) == {"set by a run"}
    assert seen[seen.index("trigger") + 1] == "set by a run", "the triggered run's change stays in its own context"


def test_an_event_worker_leaves_each_triggers_context_after_its_run(supervisor):
    # The loop runs each triggered run in the trigger's context and returns
    # to its own (the start's) after it: after_stop, made by the loop as it
    # ends, sees the start's context, not the last trigger's.
    seen = []

    class Recording(BackgroundEventWorker):
        def run(self, **kw):
            seen.append(request_id.get())
            request_id.set("set by the run")

        def after_stop(self):
            seen.append(("after_stop", request_id.get()))

    e = Recording(supervisor=supervisor)
    in_greenlet("starter", e.start)
    in_greenlet("first", e.trigger_threadsafe)
    wait_until(lambda: len(seen) == 1)
    in_greenlet("second", e.trigger_threadsafe)
    wait_until(lambda: len(seen) == 2)
    e.stop()
    assert seen == ["first", "second", ("after_stop", "starter")]


def test_a_runner_leaves_a_runs_context_before_its_next_call(supervisor):
    # Interval runs of many workers share runner greenlets: the context of one
    # worker's run must not be what the next call in the same runner sees.
    seen = {"with": [], "without": []}

    def with_context(**kw):
        seen["with"].append(request_id.get())

    def without_context(**kw):
        seen["without"].append(request_id.get())

    workers = []
    for i in range(20):
        workers.append(BackgroundIntervalWorker(func=with_context, interval=0.3, supervisor=supervisor))
        workers.append(BackgroundIntervalWorker(func=without_context, interval=0.3, supervisor=supervisor,
                                                propagate_context=False))
    in_greenlet("started here", lambda: [w.start() for w in workers])
    wait_until(lambda: len(seen["with"]) >= 40 and len(seen["without"]) >= 40, timeout=5)
    for w in workers:
        w.stop()
    assert set(seen["with"]) == {"started here"}
    assert set(seen["without"]) == {None}


def test_continuous_workers_run_in_their_start_context(supervisor):
    seen = []

    def run(**kw):
        seen.append(request_id.get())
        return len(seen) < 3 or False

    async def arun(**kw):
        seen.append(request_id.get())
        return False

    c = BackgroundWorker(func=run, supervisor=supervisor)
    a = BackgroundAsyncWorker(func=arun, supervisor=supervisor)
    in_greenlet("sync", c.start)
    wait_until(lambda: len(seen) == 3)
    in_greenlet("async", a.start)
    wait_until(lambda: len(seen) == 4)
    assert seen == ["sync"] * 3 + ["async"]


def test_an_async_event_executor_sees_the_triggers_context(supervisor):
    seen = []

    async def run(**kw):
        await asyncio.sleep(0)
        seen.append(request_id.get())

    e = BackgroundEventWorker(func=run, supervisor=supervisor)
    e.start()
    in_greenlet("async trigger", e.trigger_threadsafe)
    wait_until(lambda: seen)
    e.stop()
    assert seen == ["async trigger"]


# -- tasks ----------------------------------------------------------------------------------------------------
def test_tasks_run_in_the_context_of_their_put(supervisor):
    def job(_task_id=None):
        gevent.sleep(0)
        return request_id.get()

    async def coro_job(_task_id=None):
        await asyncio.sleep(0)
        return request_id.get()

    assert in_greenlet("thread task", supervisor.put_task, job).wait(5) == "thread task"
    assert in_greenlet("delayed", supervisor.put_task, job, delay=0.01).wait(5) == "delayed"
    assert in_greenlet("coroutine", supervisor.put_task, coro_job, tt=TT_COROUTINE).wait(5) == "coroutine"
    bg = gworker.background_task(lambda: request_id.get(), supervisor=supervisor)
    assert in_greenlet("background", bg).wait(5) == "background"


def test_listeners_see_the_runs_context(supervisor):
    # The run's events come in its context: a listener reads (and may set)
    # what the executor sees.
    seen = []
    supervisor.add_listener(lambda event: seen.append((event.event, request_id.get())),
                            events=[RUN_STARTED, RUN_FINISHED])
    w = BackgroundQueueWorker(func=lambda item, **kw: None, propagate_context=True, supervisor=supervisor)
    w.start()
    in_greenlet("item", w.put_threadsafe, 1)
    wait_until(lambda: len(seen) == 2)
    w.stop()
    assert seen == [(RUN_STARTED, "item"), (RUN_FINISHED, "item")]


@pytest.fixture
def mp_supervisor():
    sup = gworker.TaskSupervisor()
    sup.start()
    sup.create_mp_pool(processes=1)
    yield sup
    sup.stop(wait=10)


def test_process_runs_have_their_events_in_the_producers_context_and_the_child_its_own(mp_supervisor):
    seen = []
    mp_supervisor.add_listener(lambda event: seen.append((event.kind, event.event, request_id.get())),
                               events=[RUN_STARTED, RUN_FINISHED])
    task = in_greenlet("mp task", mp_supervisor.put_task, read_request_id, tt=TT_MP)
    assert task.wait(10) is None, "the child process runs in a context of its own"
    wait_until(lambda: len(seen) == 2)
    assert seen == [("task", RUN_STARTED, "mp task"), ("task", RUN_FINISHED, "mp task")]
    w = ReadingQueueWorker(propagate_context=True, supervisor=mp_supervisor)
    w.start()
    in_greenlet("mp item", w.put_threadsafe, "x")
    wait_until(lambda: w.results, timeout=10)
    w.stop()
    assert w.results == [("x", None)]
    assert seen[2:] == [("queue", RUN_STARTED, "mp item"), ("queue", RUN_FINISHED, "mp item")]


# -- in_context ------------------------------------------------------------------------------------------------
def test_in_context_runs_each_step_of_a_coroutine_in_the_context_and_passes_cancellation():
    async def body():
        first = request_id.get()
        await asyncio.sleep(0)
        request_id.set("inner")
        await asyncio.sleep(0)
        return first, request_id.get()

    async def blocked():
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return "cancelled in %s" % request_id.get()

    async def main():
        ctx = contextvars.copy_context()
        ctx.run(request_id.set, "outer ctx")
        result = await in_context(ctx, body())
        task = asyncio.ensure_future(in_context(ctx, blocked()))
        await asyncio.sleep(0.01)
        task.cancel()
        return result, ctx[request_id], request_id.get(), await task

    assert asyncio.run(main()) == (("outer ctx", "inner"), "inner", None, "cancelled in inner")


def test_the_example_runs():
    # examples/context.py, in this run's world, with this checkout's gworker
    import os
    import subprocess
    import sys

    from conftest import PATCHED

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable] + (["-m", "gevent.monkey"] if PATCHED else []) + [os.path.join(root, "examples", "context.py")]
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=root, env=env)
    assert out.returncode == 0, out.stderr
    assert "mail 'hello from r2' put by request r2" in out.stdout
    assert "refresh asked for by request r1" in out.stdout
    assert "runs timed by the listener: {'refresh': 2, 'send': 2}" in out.stdout
    if "span gworker.run" in out.stdout:  # (OpenTelemetry's SDK installed)
        assert "span gworker.run of send, child of 'request r1'" in out.stdout
