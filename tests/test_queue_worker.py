"""BackgroundQueueWorker with sync executors: order, arguments, queue classes,
thread safety, the stop policy, hooks, hub fairness and pool admission."""
import asyncio
import time

import gevent
import gevent.queue
import pytest
from gevent.event import Event

import gworker
from gworker import TASK_LOW, BackgroundQueueWorker

from conftest import Ticker, native_thread, wait_until


def test_calls_in_order_with_start_arguments(supervisor):
    calls = []
    marker = object()

    def run(task, *args, **kwargs):
        calls.append((task, args, kwargs))

    w = BackgroundQueueWorker(func=run, o=marker, supervisor=supervisor)
    assert w.start(1, "two", key="value") is True
    for i in range(10):
        w.put_threadsafe(i)
    wait_until(lambda: len(calls) == 10)
    w.stop()

    assert [c[0] for c in calls] == list(range(10))
    task_ids = set()
    for task, args, kwargs in calls:
        assert args == (1, "two")
        assert set(kwargs) == {"key", "_worker", "_name", "_task_id", "o"}
        assert kwargs["key"] == "value"
        assert kwargs["_worker"] is w
        assert kwargs["_name"] == "run" == w.name
        assert kwargs["o"] is marker
        task_ids.add(kwargs["_task_id"])
    assert len(task_ids) == 10, "each call has its own _task_id"
    assert all(supervisor.get_task(t) is None for t in task_ids), "_task_id is not registered"


def test_start_overrides_are_passed_on_without_renaming_the_worker(supervisor):
    calls = []
    w = BackgroundQueueWorker(func=lambda task, **kw: calls.append(kw), supervisor=supervisor)
    w.start(_name="renamed", o=42)
    w.put_threadsafe("x")
    wait_until(lambda: calls)
    w.stop()
    assert calls[0]["_name"] == "renamed" and calls[0]["o"] == 42
    assert w.name == "<lambda>" and w.o is None  # as in atasker: for that start only


@pytest.mark.parametrize(
    "spec, expected_class",
    [
        (gevent.queue.PriorityQueue, gevent.queue.PriorityQueue),
        (asyncio.PriorityQueue, gevent.queue.PriorityQueue),
        (gevent.queue.LifoQueue, gevent.queue.LifoQueue),
        (asyncio.LifoQueue, gevent.queue.LifoQueue),
        (asyncio.Queue, gevent.queue.Queue),
        (True, gevent.queue.Queue),
    ],
)
def test_queue_classes(supervisor, spec, expected_class):
    seen = []
    w = BackgroundQueueWorker(func=lambda task, **kw: seen.append(task), q=spec, supervisor=supervisor)
    q = w.get_queue_obj()
    assert type(q) is expected_class
    items = [5, 1, 4, 2, 3]
    for item in items:  # queued before the start: the order is the queue's own
        w.put_threadsafe(item)
    w.start()
    wait_until(lambda: len(seen) == 5)
    w.stop()
    if expected_class is gevent.queue.PriorityQueue:
        assert seen == [1, 2, 3, 4, 5]
    elif expected_class is gevent.queue.LifoQueue:
        assert seen == [3, 2, 4, 1, 5]
    else:
        assert seen == items


def test_queue_keyword_and_queue_object(supervisor):
    mine = gevent.queue.PriorityQueue()
    w = BackgroundQueueWorker(func=lambda task, **kw: None, queue=mine, supervisor=supervisor)
    assert w.get_queue_obj() is mine


def test_never_two_concurrent_calls(supervisor):
    inside = [0]
    most = [0]
    done = []

    def run(task, **kw):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        gevent.sleep(0.0005 if task % 3 else 0)
        inside[0] -= 1
        done.append(task)

    w = BackgroundQueueWorker(func=run, supervisor=supervisor)
    w.start()
    for i in range(150):
        w.put_threadsafe(i)
    # more items from other greenlets while it works
    feeders = [gevent.spawn(lambda base=b: [w.put_threadsafe(base + i) for i in range(50)])
               for b in (1000, 2000)]
    gevent.joinall(feeders)
    wait_until(lambda: len(done) == 250)
    w.stop()
    assert most[0] == 1
    assert sorted(done) == list(range(150)) + list(range(1000, 1050)) + list(range(2000, 2050))


def test_put_threadsafe_from_native_threads(supervisor):
    got = []
    w = BackgroundQueueWorker(func=lambda task, **kw: got.append(task), supervisor=supervisor)
    w.start()
    per_thread = 5000

    def feed(tid):
        for i in range(per_thread):
            w.put_threadsafe((tid, i))

    handles = [native_thread(feed, tid) for tid in range(4)]
    idents = set()
    for h in handles:
        h.join(20)
        idents.add(h.ident)
    assert len(idents) == 4 and gevent.monkey.get_original("_thread", "get_ident")() not in idents
    # A last item, put from another thread after every feeder ended, is queued
    # behind all of theirs: once it is processed, so is everything handed over.
    native_thread(w.put_threadsafe, "end").join(10)
    wait_until(lambda: got and got[-1] == "end", timeout=10)
    w.stop()
    assert got.pop() == "end"
    assert len(got) == 4 * per_thread
    assert set(got) == {(t, i) for t in range(4) for i in range(per_thread)}
    for tid in range(4):  # each thread's items in the order it put them
        assert [i for t, i in got if t == tid] == list(range(per_thread))


def _blocking_worker(supervisor, **options):
    """A worker whose executor waits on ``gate`` for the item 'block'."""
    processed = []
    gate = Event()
    entered = Event()

    def run(task, **kw):
        if task == "block":
            entered.set()
            gate.wait()
        processed.append(task)

    w = BackgroundQueueWorker(func=run, supervisor=supervisor, **options)
    return w, processed, gate, entered


def test_an_interrupt_between_two_items_loses_none(supervisor):
    # The executor never switches and runs longer than the loop's yield period,
    # so the worker's greenlet is switched out only between two items, when
    # its loop yields to the hub. The shutdown deadline interrupts it there:
    # every item must still be processed or reported.
    from gworker.integrations.lifecycle import WorkerSet

    done, reported = [], []

    def run(item, **kw):
        t_end = time.perf_counter() + 0.006
        while time.perf_counter() < t_end:  # CPU, never yields
            pass
        done.append(item)

    w = BackgroundQueueWorker(func=run, supervisor=supervisor)
    for i in range(50):
        w.get_queue_obj().put(i)
    workers = WorkerSet(supervisor, on_undrained=lambda worker, items: reported.extend(items))
    workers.add(w)
    workers.start()
    wait_until(lambda: len(done) >= 2)
    report = workers.shutdown(timeout=0)
    assert w.name in report.unfinished  # interrupted, not drained
    assert sorted(done + reported) == list(range(50)), "lost: %s" % sorted(
        set(range(50)) - set(done + reported))


def test_stop_leaves_queued_items_for_the_next_start(supervisor):
    w, processed, gate, entered = _blocking_worker(supervisor)
    q = w.get_queue_obj()
    w.start()
    w.put_threadsafe("block")
    entered.wait(5)
    for i in range(5):
        w.put_threadsafe(i)
    stopper = gevent.spawn(w.stop)
    wait_until(lambda: not w.is_active())
    assert not stopper.ready(), "stop() waits for the run in progress"
    gate.set()
    stopper.get(timeout=5)
    assert w.is_stopped()
    assert processed == ["block"]
    assert q.qsize() == 5, "items queued at stop() stay in the queue"
    assert w.get_queue_obj() is q

    w.start()
    wait_until(lambda: len(processed) == 6)
    w.stop()
    assert processed == ["block", 0, 1, 2, 3, 4]
    assert w.get_queue_obj() is q, "the queue object survives restarts"


def test_stop_drain_processes_every_queued_item_first(supervisor):
    w, processed, gate, entered = _blocking_worker(supervisor)
    w.start()
    w.put_threadsafe("block")
    entered.wait(5)
    for i in range(20):
        w.put_threadsafe(i)
    gevent.spawn_later(0.02, gate.set)
    w.stop(drain=True)
    assert processed == ["block"] + list(range(20))
    assert w.get_queue_obj().qsize() == 0
    assert w.is_stopped()
    # and it can be started again, working normally
    w.start()
    w.put_threadsafe("again")
    wait_until(lambda: processed[-1] == "again")
    w.stop()


def test_stop_drain_when_idle_returns(supervisor):
    w = BackgroundQueueWorker(func=lambda task, **kw: None, supervisor=supervisor)
    w.start()
    with gevent.Timeout(2):
        w.stop(drain=True)
    assert w.is_stopped()


def test_restarts_keep_the_queue_and_never_put_a_sentinel(supervisor, caplog):
    seen = []
    w = BackgroundQueueWorker(
        func=lambda task, **kw: seen.append(task), q=gevent.queue.PriorityQueue,
        supervisor=supervisor,
    )
    q = w.get_queue_obj()
    for round_ in range(5):
        for i in (3, 1, 2):
            w.put_threadsafe((i, "r%d" % round_))  # while stopped
        w.start()
        # Once the round's items are processed the worker waits in get() on the
        # empty queue: it switches out between items only while more are queued,
        # so when this greenlet sees the last one done, the worker is parked.
        wait_until(lambda: len(seen) == 3 * (round_ + 1))
        w.stop()
        assert w.is_stopped()
        assert q.qsize() == 0, "stop() put something into the queue"
        assert w.get_queue_obj() is q
    # each start processed the items put while it was stopped, in priority order
    assert seen == [(i, "r%d" % r) for r in range(5) for i in (1, 2, 3)]
    assert all(isinstance(t, tuple) for t in seen)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_restart_many_times_while_busy(supervisor):
    seen = []
    w = BackgroundQueueWorker(func=lambda task, **kw: (seen.append(task), gevent.sleep(0)),
                              supervisor=supervisor)
    for i in range(200):
        w.put_threadsafe(i)
    for _ in range(20):
        w.start()
        gevent.sleep(0)
        w.stop()
    w.start()
    wait_until(lambda: len(seen) == 200)
    w.stop()
    assert seen == list(range(200)), "nothing lost, duplicated or reordered by restarts"


def test_hooks_in_a_subclass_with_run(supervisor):
    events = []

    class MyWorker(BackgroundQueueWorker):
        def before_queue_get(self):
            events.append(("before",))

        def after_queue_get(self, task):
            events.append(("after", task))

        def run(self, task, **kwargs):
            assert kwargs["_worker"] is self
            events.append(("run", task))

    w = MyWorker(supervisor=supervisor)
    assert w.name.startswith("MyWorker")
    w.start()
    w.put_threadsafe("a")
    wait_until(lambda: ("run", "a") in events)
    w.put_threadsafe("b")
    wait_until(lambda: ("run", "b") in events)
    w.stop()
    assert events[:6] == [
        ("before",), ("after", "a"), ("run", "a"),
        ("before",), ("after", "b"), ("run", "b"),
    ]


def test_yields_to_the_hub_during_a_burst_and_poll_delay_does_not_throttle(supervisor):
    n = 20000
    done = [0]

    def run(task, **kw):
        done[0] += 1
        sum(range(20))  # a little CPU, no yield

    w = BackgroundQueueWorker(func=run, poll_delay=1, supervisor=supervisor)
    for i in range(n):
        w.put_threadsafe(i)

    with Ticker(0.001) as ticker:
        started = time.monotonic()
        w.start()
        wait_until(lambda: done[0] == n, timeout=10)
        elapsed = time.monotonic() - started
    w.stop()
    assert elapsed < 3, "%d items took %.2fs" % (n, elapsed)
    assert ticker.max_busy < 0.03, "the hub was held for %.1f ms" % (ticker.max_busy * 1000)
    assert len(ticker.gaps) > elapsed / 0.01, "the ticker barely ran"


def test_poll_delay_is_no_pause_between_items(supervisor):
    done = []
    w = BackgroundQueueWorker(func=lambda task, **kw: done.append(task), poll_delay=1,
                              supervisor=supervisor)
    w.start()
    started = time.monotonic()
    for i in range(30):  # one at a time: the worker parks between items
        w.put_threadsafe(i)
        wait_until(lambda: len(done) == i + 1, timeout=2)
    elapsed = time.monotonic() - started
    w.stop()
    assert elapsed < 0.5, "30 single items took %.2fs with poll_delay=1" % elapsed


def test_each_call_holds_one_pool_slot(supervisor):
    running = []
    w = BackgroundQueueWorker(func=lambda task, **kw: running.append(supervisor.thread_pool.running),
                              supervisor=supervisor)
    w.start()
    assert supervisor.thread_pool.running == 0, "a parked queue worker holds no slot"
    for i in range(5):
        w.put_threadsafe(i)
    wait_until(lambda: len(running) == 5)
    wait_until(lambda: supervisor.thread_pool.running == 0)
    w.stop()
    assert running == [1] * 5


def test_a_low_queue_worker_waits_for_a_free_slot(supervisor):
    supervisor.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    release = Event()
    blocker_started = Event()

    def blocker(**kw):
        blocker_started.set()
        release.wait()

    task = supervisor.put_task(blocker)
    blocker_started.wait(5)
    assert supervisor.thread_pool.running == 1

    ran = Event()
    seen = []

    def run(item, **kw):
        seen.append(supervisor.thread_pool.running)
        ran.set()

    w = BackgroundQueueWorker(func=run, priority=TASK_LOW, supervisor=supervisor)
    w.start()
    w.put_threadsafe("x")
    wait_until(lambda: supervisor.get_info().thread_pool["waiting"] == 1)  # the item waits for the slot
    assert not ran.is_set(), "ran while the only slot was held"
    release.set()
    assert ran.wait(2)
    assert seen == [1]
    wait_until(task.is_completed)
    w.stop()
    assert supervisor.thread_pool.running == 0


def test_stop_while_waiting_for_a_slot_lets_the_taken_item_run(supervisor):
    supervisor.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    release = Event()
    started = Event()
    supervisor.put_task(lambda **kw: (started.set(), release.wait()))
    started.wait(5)
    seen = []
    w = BackgroundQueueWorker(func=lambda task, **kw: seen.append(task), priority=TASK_LOW,
                              supervisor=supervisor)
    w.start()
    w.put_threadsafe("taken")
    # taken out of the queue, waiting for the slot the task holds
    wait_until(lambda: supervisor.get_info().thread_pool["waiting"] == 1)
    assert w.get_info()["queue_length"] == 0
    stopper = gevent.spawn(w.stop)
    wait_until(lambda: not w.is_active())
    assert not stopper.ready(), "stop() waits for the run of the item taken"
    release.set()
    stopper.get(timeout=5)
    assert seen == ["taken"]
    assert w.get_queue_obj().qsize() == 0
    wait_until(lambda: supervisor.thread_pool.running == 0)


def test_return_false_stops_and_leaves_the_rest(supervisor):
    seen = []

    def run(task, **kw):
        seen.append(task)
        return task != 2

    w = BackgroundQueueWorker(func=run, supervisor=supervisor)
    for i in range(5):
        w.put_threadsafe(i)
    w.start()
    wait_until(w.is_stopped)
    assert seen == [0, 1, 2]
    assert w.get_queue_obj().qsize() == 2


def test_stop_from_inside_the_executor(supervisor):
    seen = []

    def run(task, _worker, **kw):
        seen.append(task)
        with gevent.Timeout(2, AssertionError("stop() from the executor deadlocked")):
            _worker.stop()

    w = BackgroundQueueWorker(func=run, supervisor=supervisor)
    w.start()
    w.put_threadsafe(1)
    w.put_threadsafe(2)
    wait_until(w.is_stopped)
    assert seen == [1]


@pytest.mark.parametrize(
    "kwargs, pattern, exc",
    [
        ({"q": 5}, "^q must", TypeError),
        ({"q": "yes"}, "^q must", TypeError),
        ({"q": int}, "^q must", TypeError),
        ({"q": False}, "^q must", TypeError),
        ({"queue": 5}, "^queue must", TypeError),
        ({"queue": dict}, "^queue must", TypeError),
        ({"q": True, "queue": True}, "q or queue", TypeError),
    ],
)
def test_bad_queue_values_raise_at_construction(supervisor, kwargs, pattern, exc):
    with pytest.raises(exc, match=pattern):
        BackgroundQueueWorker(func=lambda task, **kw: None, supervisor=supervisor, **kwargs)


def test_bad_queue_objects_raise_at_construction(supervisor):
    for obj in (asyncio.Queue(), [1, 2], object()):
        with pytest.raises(TypeError, match="^q must"):
            BackgroundQueueWorker(func=lambda task, **kw: None, q=obj, supervisor=supervisor)


def test_decorator_makes_queue_workers(supervisor):
    @gworker.background_worker(q=True, supervisor=supervisor)
    def plain(task, **kw):
        pass

    @gworker.background_worker(queue=asyncio.PriorityQueue, supervisor=supervisor)
    def prio(task, **kw):
        pass

    assert type(plain) is BackgroundQueueWorker and plain.name == "plain"
    assert type(plain.get_queue_obj()) is gevent.queue.Queue
    assert type(prio) is BackgroundQueueWorker
    assert type(prio.get_queue_obj()) is gevent.queue.PriorityQueue


class _ProtocolQueue:
    """A minimal object of the queue-object protocol, recording what the worker calls."""

    def __init__(self):
        self.q = gevent.queue.Queue()
        self.calls = []

    def get(self):
        item = self.q.get()
        self.calls.append(("get", item))
        return item

    def qsize(self):
        return self.q.qsize()

    def put_threadsafe(self, item):
        self.q.put(item)

    def ack(self, item):
        self.calls.append(("ack", item))

    def fail(self, item, exc):
        self.calls.append(("fail", item, str(exc)))

    def release(self):
        self.calls.append(("release",))


def test_a_protocol_object_is_acked_after_each_return_failed_on_raise_released_at_stop(supervisor):
    q = _ProtocolQueue()
    ran = []

    def run(item, **kw):
        ran.append(item)
        assert q.calls[-1] == ("get", item), "ack comes after the executor, not before"
        if item == "bad":
            raise ValueError("bad item")
        return item != "last"

    w = BackgroundQueueWorker(func=run, q=q, supervisor=supervisor, on_error=lambda: None)
    assert w.get_queue_obj() is q
    w.start()
    for item in ("a", "bad", "b"):
        w.put_threadsafe(item)         # handed to the object's own put_threadsafe
    wait_until(lambda: ("ack", "b") in q.calls)
    assert w.get_info()["queue_length"] == 0
    w.stop()
    assert q.calls == [("get", "a"), ("ack", "a"), ("get", "bad"), ("fail", "bad", "bad item"),
                       ("get", "b"), ("ack", "b"), ("release",)]
    # an executor returning False: its item is acked (it returned), then the worker ends
    del q.calls[:]
    w.start()
    w.put_threadsafe("last")
    wait_until(w.is_stopped)
    assert q.calls == [("get", "last"), ("ack", "last"), ("release",)]


def test_await_put_on_a_protocol_object(supervisor):
    q = _ProtocolQueue()
    got = []
    w = BackgroundQueueWorker(func=lambda item, **kw: got.append(item), q=q, supervisor=supervisor)
    w.start()
    aloop = supervisor.create_aloop("protocol-put")

    async def feed():
        for i in range(3):
            await w.put(i)

    aloop.run(feed())
    wait_until(lambda: got == [0, 1, 2])
    w.stop()
    supervisor.stop_aloop("protocol-put")


def test_a_protocol_object_with_an_async_executor_is_acked_failed_and_released(supervisor):
    q = _ProtocolQueue()

    async def run(item, **kw):
        await asyncio.sleep(0)
        if item == "bad":
            raise ValueError("bad item")

    w = BackgroundQueueWorker(func=run, q=q, supervisor=supervisor, on_error=lambda: None)
    w.start()
    for item in ("a", "bad", "b"):
        w.put_threadsafe(item)
    wait_until(lambda: ("ack", "b") in q.calls)
    w.stop()
    assert q.calls == [("get", "a"), ("ack", "a"), ("get", "bad"), ("fail", "bad", "bad item"),
                       ("get", "b"), ("ack", "b"), ("release",)]


# -- shutdown(deadline) ----------------------------------------------------------------------------
def _start_busy(w, entered, n):
    """Start a _blocking_worker on the item 'block', with ``n`` items queued behind it."""
    w.start()
    w.put_threadsafe("block")
    entered.wait(5)
    for i in range(n):
        w.put_threadsafe(i)


def test_shutdown_drains_within_the_deadline(supervisor):
    w, processed, gate, entered = _blocking_worker(supervisor)
    _start_busy(w, entered, 5)
    gevent.spawn_later(0.02, gate.set)
    result = w.shutdown(5)
    assert result == (True, (), [])
    assert result.finished and result.interrupted == () and result.left == []
    assert processed == ["block", 0, 1, 2, 3, 4] and w.is_stopped()
    w.get_queue_obj().join(timeout=1)  # returns: every item was marked done


def test_shutdown_at_the_deadline_interrupts_and_hands_back_the_rest(supervisor):
    w, processed, gate, entered = _blocking_worker(supervisor)
    _start_busy(w, entered, 3)
    t0 = time.monotonic()
    result = w.shutdown(0.1)
    took = time.monotonic() - t0
    assert not result.finished
    assert result.interrupted == ("block",), "the run in progress was cut off"
    assert result.left == ["block", 0, 1, 2], "the interrupted item first, then the queued ones"
    assert processed == [], "the interrupted call did not finish"
    assert w.is_stopped() and w.get_queue_obj().qsize() == 0
    assert 0.1 <= took < 2
    assert w.get_queue_obj().join(timeout=1), "handed-back items are marked done"
    gate.set()
    # the worker starts again on an empty queue
    w.start()
    w.put_threadsafe("again")
    wait_until(lambda: processed == ["again"])
    w.stop()


def test_shutdown_without_drain_hands_back_the_queued_items(supervisor):
    w, processed, gate, entered = _blocking_worker(supervisor)
    _start_busy(w, entered, 3)
    gevent.spawn_later(0.02, gate.set)
    result = w.shutdown(5, drain=False)
    assert result == (True, (), [0, 1, 2]), "the run in progress finished, nothing else ran"
    assert processed == ["block"]


def test_shutdown_of_an_idle_or_never_started_worker(supervisor):
    w = BackgroundQueueWorker(func=lambda task, **kw: None, supervisor=supervisor)
    for i in range(3):
        w.put_threadsafe(i)
    with gevent.Timeout(2):
        assert w.shutdown() == (True, (), [0, 1, 2]), "never started: the queue is emptied"
    w.start()
    t0 = time.monotonic()
    assert w.shutdown(5) == (True, (), []), "idle: its parked get() is interrupted"
    assert time.monotonic() - t0 < 1 and w.is_stopped()
    w.start()
    # no time at all: even an idle loop has not ended yet, so it is cut off, losing nothing
    assert w.shutdown(False) == (False, (), [])
    assert w.is_stopped()


def test_shutdown_of_a_queue_that_keeps_its_items(supervisor):
    q = _ProtocolQueue()  # has release(): a broker's queue delivers its items again
    entered = Event()

    def run(item, **kw):
        entered.set()
        gevent.sleep(10)

    w = BackgroundQueueWorker(func=run, q=q, supervisor=supervisor)
    w.start()
    w.put_threadsafe("a")
    w.put_threadsafe("b")
    entered.wait(5)
    result = w.shutdown(0.05)
    assert result == (False, ("a",), []), "named as interrupted, but not handed back"
    assert q.calls[-1] == ("release",) and q.qsize() == 1


def test_shutdown_interrupts_an_async_executor(supervisor):
    entered = Event()
    cancelled = []

    async def run(item, **kw):
        entered.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(item)
            raise

    w = BackgroundQueueWorker(func=run, supervisor=supervisor)
    w.start()
    w.put_threadsafe("a")
    w.put_threadsafe("b")
    entered.wait(5)
    result = w.shutdown(0.05)
    assert result == (False, ("a",), ["a", "b"])
    assert cancelled == ["a"]


def test_shutdown_from_its_own_executor_raises(supervisor):
    errors = []

    def run(item, _worker, **kw):
        try:
            _worker.shutdown(False)
        except RuntimeError as e:
            errors.append(str(e))
        return False

    w = BackgroundQueueWorker(func=run, supervisor=supervisor)
    w.start()
    w.put_threadsafe("a")
    wait_until(w.is_stopped)
    assert errors and "own executor" in errors[0]


def test_shutdown_checks_its_deadline(supervisor):
    w = BackgroundQueueWorker(func=lambda task, **kw: None, supervisor=supervisor)
    with pytest.raises((TypeError, ValueError), match="deadline"):
        w.shutdown(-1)


def test_the_queue_object_protocol_is_a_typing_protocol():
    from gworker.workers import queue as queue_module
    from gworker.workers.queue import QueueObject, is_queue_object

    assert "QueueObject" in queue_module.__all__
    assert is_queue_object(_ProtocolQueue()) and not is_queue_object(gevent.queue.Queue())
    with pytest.raises(TypeError):  # not runtime-checkable: is_queue_object is the check
        isinstance(_ProtocolQueue(), QueueObject)
