"""The fast paths added for speed keep the behaviour of the general path.

A queue worker whose executor is sync and started without arguments runs a
burst of queued items back to back in one pool slot (``_burst``). These tests
pin down that the outcome is the same as one call at a time (they pass on the
general path too), and that the burst is there at all: the slot is taken once
per burst, not once per item. An interval run takes its pool slot before it
gets a greenlet.
"""
import gevent
import gevent.queue
import greenlet
from gevent.event import Event

from gworker import TASK_HIGH, BackgroundQueueWorker

from conftest import wait_until


def test_burst_calls_are_exactly_the_general_calls(supervisor):
    seen = []

    def run(task, **kwargs):
        seen.append((task, kwargs, supervisor.thread_pool.running))

    w = BackgroundQueueWorker(func=run, supervisor=supervisor, o="obj")
    w.start()
    for i in range(500):
        w.put_threadsafe(i)
    wait_until(lambda: len(seen) == 500)
    assert [t for t, _, _ in seen] == list(range(500))
    ids = [kw["_task_id"] for _, kw, _ in seen]
    assert ids == sorted(set(ids))
    for _, kw, running in seen:
        assert list(kw) == ["_name", "o", "_worker", "_task_id"]
        assert kw["_worker"] is w and kw["o"] == "obj" and kw["_name"] == w.name
        assert running == 1  # one slot held during each call
    assert w.runs == 500 and w.last_duration is not None and w.last_run is not None
    wait_until(lambda: supervisor.thread_pool.running == 0)  # given back once the queue is empty
    w.stop()
    assert supervisor.thread_pool.running == 0


def _retaken_without_a_yield(supervisor, monkeypatch):
    """Runs a 500-item burst; the items before which the worker took its slot
    again without having switched out since the item before."""
    pool = supervisor.thread_pool
    admissions = [0]
    try_acquire = pool.try_acquire

    def counting_try_acquire(slot):
        admitted = try_acquire(slot)
        admissions[0] += admitted
        return admitted

    monkeypatch.setattr(pool, "try_acquire", counting_try_acquire)
    seen = []
    with SwitchesOut() as switches:
        def run(task, **kwargs):
            if switches.glet is None:
                switches.watch(gevent.getcurrent())
            seen.append((admissions[0], switches.count))

        w = BackgroundQueueWorker(func=run, supervisor=supervisor)
        q = w.get_queue_obj()
        for i in range(500):
            q.put(i)  # all queued before the start: one long burst
        w.start()
        wait_until(lambda: len(seen) == 500)
        w.stop()
    assert seen[0][0] == 1  # (the count sees the worker's admissions)
    assert supervisor.get_info().thread_pool["running"] == 0
    return [i for i in range(1, 500) if seen[i][0] > seen[i - 1][0] and seen[i][1] == seen[i - 1][1]]


class SwitchesOut:
    """Counts how often one greenlet switched out (to the hub or any other
    greenlet), with ``greenlet.settrace``, chained to the tracer installed before
    (gevent's monitor thread has one). ``watch(glet)`` picks the greenlet."""

    def __init__(self):
        self.count = 0
        self.glet = None
        self._previous = None

    def watch(self, glet):
        self.glet = glet

    def _trace(self, event, args):
        if event in ("switch", "throw") and args[0] is self.glet:
            self.count += 1
        if self._previous is not None:
            self._previous(event, args)

    def __enter__(self):
        self._previous = greenlet.settrace(self._trace)
        return self

    def __exit__(self, *exc):
        greenlet.settrace(self._previous)


def test_a_burst_takes_the_slot_again_only_after_the_worker_yielded(supervisor, monkeypatch):
    # The point of the fast path: items queued back to back run in one pool
    # slot. The general path takes a slot and gives it back for every item,
    # without switching (get() does not wait when an item is queued); the burst
    # takes it again only after it gave it up to let the hub run (every few ms)
    # or because the queue ran empty. So between two consecutive items the slot
    # is taken again only if the worker's greenlet switched out in between.
    # Counted, not timed: true however slow the machine.
    retaken = _retaken_without_a_yield(supervisor, monkeypatch)
    assert retaken == [], "the slot was taken again without a yield before %d of 500 items" % len(retaken)


def test_burst_keeps_the_order_of_priority_and_lifo_queues(supervisor):
    # The burst takes items as the queue's own get() would: by priority, last in first out.
    for q, items, expected in [
        (gevent.queue.PriorityQueue(), [5, 1, 4, 2, 3], [1, 2, 3, 4, 5]),
        (gevent.queue.LifoQueue(), [1, 2, 3, 4, 5], [5, 4, 3, 2, 1]),
    ]:
        seen = []
        for item in items:
            q.put(item)
        w = BackgroundQueueWorker(func=lambda task, **kw: seen.append(task), q=q, supervisor=supervisor)
        w.start()
        wait_until(lambda: len(seen) == 5)
        w.stop()
        assert seen == expected, type(q).__name__


def test_burst_on_a_bounded_queue_wakes_its_putters(supervisor):
    # A bounded queue: producers wait in put() while it is full; every item
    # they put gets through, in order, while the worker takes them in bursts.
    q = gevent.queue.Queue(maxsize=3)
    seen = []
    w = BackgroundQueueWorker(func=lambda task, **kw: seen.append(task), q=q, supervisor=supervisor)
    producer = gevent.spawn(lambda: [q.put(i) for i in range(200)])
    w.start()
    wait_until(lambda: len(seen) == 200, timeout=5)
    assert producer.dead
    w.stop()
    assert seen == list(range(200))


def test_burst_failures_and_false(supervisor):
    errors, seen = [], []

    def run(task, **kwargs):
        seen.append(task)
        if task % 10 == 3:
            raise ValueError(task)
        if task == 57:
            return False

    w = BackgroundQueueWorker(func=run, supervisor=supervisor,
                              on_error=lambda: errors.append(1))
    w.start()
    for i in range(100):
        w.put_threadsafe(i)
    wait_until(w.is_stopped)
    assert seen == list(range(58))
    assert len(errors) == 6 and w.errors == 6
    assert w.get_queue_obj().qsize() == 42  # left for the next start
    assert supervisor.thread_pool.running == 0
    w.start()
    wait_until(lambda: len(seen) == 100)
    w.stop()
    assert supervisor.thread_pool.running == 0


def test_burst_gives_its_slot_to_a_waiter_between_items(supervisor):
    supervisor.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    order = []

    def task(**kwargs):
        order.append("task")

    def run(item, **kwargs):
        order.append(item)
        if item == 1:
            supervisor.put_task(task, priority=TASK_HIGH)  # waits: the pool is full

    w = BackgroundQueueWorker(func=run, supervisor=supervisor)
    w.start()
    for i in range(4):
        w.put_threadsafe(i)
    wait_until(lambda: len(order) == 5)
    assert order == [0, 1, "task", 2, 3]
    w.stop()


def test_once_the_waiters_are_served_a_burst_keeps_its_slot_again(supervisor, monkeypatch):
    # A burst gives its slot up between items while anyone waits for one
    # (above); once the line is empty again, it runs back to back again.
    supervisor.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    release = Event()
    blocker = supervisor.put_task(lambda _task_id=None: release.wait(5))
    waiter = supervisor.put_task(lambda _task_id=None: "served")
    wait_until(lambda: supervisor.get_info().thread_pool["waiting"] == 1)
    release.set()
    assert waiter.wait(5) == "served" and blocker.wait(5)
    wait_until(lambda: supervisor.get_info().thread_pool["running"] == 0)
    assert supervisor.get_info().thread_pool["waiting"] == 0
    retaken = _retaken_without_a_yield(supervisor, monkeypatch)
    assert retaken == [], "the slot was taken again without a yield before %d of 500 items" % len(retaken)


def test_burst_stop_from_inside_and_drain(supervisor):
    seen, stopped = [], Event()

    def run(task, _worker, **kwargs):
        seen.append(task)
        if task == 5:
            _worker.stop(drain=True)
            stopped.set()

    w = BackgroundQueueWorker(func=run, supervisor=supervisor)
    w.start()
    for i in range(20):
        w.put_threadsafe(i)
    wait_until(w.is_stopped)
    assert seen == list(range(20))  # drain: everything queued at stop() is processed
    assert supervisor.thread_pool.running == 0


def test_interval_runs_waiting_for_a_slot_hold_no_greenlet(supervisor):
    from gworker import BackgroundIntervalWorker
    from conftest import greenlet_count

    supervisor.set_thread_pool(pool_size=5, reserve_normal=0, reserve_high=0)
    release, ran = Event(), []

    def run(**kwargs):
        ran.append(1)
        release.wait()

    before = greenlet_count()
    workers = [BackgroundIntervalWorker(func=run, interval=10, supervisor=supervisor) for _ in range(200)]
    for w in workers:
        w.start()
    wait_until(lambda: len(ran) == 5)
    wait_until(lambda: supervisor.get_info().thread_pool["waiting"] == 195)  # the rest are in line
    assert len(ran) == 5 and supervisor.thread_pool.running == 5
    assert greenlet_count() - before < 20  # the 195 waiting runs are heap entries
    release.set()
    wait_until(lambda: len(ran) == 200)
    for w in workers:
        w.stop()
    assert supervisor.thread_pool.running == 0


def test_interval_stopped_while_waiting_for_a_slot(supervisor):
    # A due run still waiting for its slot has not started: after stop() it
    # never does (before, it ran if its greenlet had begun waiting in admit).
    from gworker import BackgroundIntervalWorker

    supervisor.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    release, ran = Event(), []
    blocker = BackgroundIntervalWorker(func=lambda **k: release.wait(), interval=10, supervisor=supervisor)
    blocker.start()
    wait_until(lambda: supervisor.thread_pool.running == 1)
    w = BackgroundIntervalWorker(func=lambda **k: ran.append(1), interval=10, supervisor=supervisor)
    w.start()
    wait_until(lambda: supervisor.get_info().thread_pool["waiting"] == 1)  # its run is in line
    w.stop(wait=False)
    assert w.is_stopped(), "its run, still in line, is withdrawn: nothing is left to wait for"
    release.set()
    blocker.stop()
    # A task put now, at w's priority, is admitted behind anything still in
    # line: once it ran, a run of w that had (wrongly) kept its place would have too.
    assert supervisor.put_task(lambda **kw: "probe", priority=w.priority).wait(2) == "probe"
    assert ran == [] and supervisor.thread_pool.running == 0
