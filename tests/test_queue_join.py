"""``get_queue_obj().join()`` returns once every item put was processed: the
queue worker calls ``task_done()`` for each item it took, on every path (the
burst of a plain sync executor, the general loop, the coroutine loop)."""
import gevent
import gevent.queue
import pytest
from gevent.event import Event

from gworker import BackgroundQueueWorker


def sync_run(item, *args, **kw):
    pass


async def async_run(item, *args, **kw):
    pass


# (executor, start arguments): the burst path needs a sync executor started
# without arguments of its own; start arguments take the general loop.
PATHS = {
    "burst": (sync_run, ()),
    "general": (sync_run, ("arg",)),
    "coroutine": (async_run, ()),
}


@pytest.fixture
def aloop(supervisor):
    return supervisor.create_aloop("join", default=True)


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("qclass", [gevent.queue.Queue, gevent.queue.JoinableQueue,
                                    gevent.queue.PriorityQueue], ids=["Queue", "JoinableQueue", "PriorityQueue"])
def test_join_returns_once_every_item_was_processed(supervisor, aloop, path, qclass):
    func, args = PATHS[path]
    q = qclass()
    w = BackgroundQueueWorker(func=func, q=q, supervisor=supervisor)
    w.start(*args)
    for i in range(300):
        w.put_threadsafe(i)
    assert q.join(timeout=5), "join() timed out with %s unfinished" % getattr(q, "unfinished_tasks", "?")
    assert w.runs == 300
    w.stop()


@pytest.mark.parametrize("path", sorted(PATHS))
def test_an_item_whose_executor_raised_is_done_too(supervisor, aloop, path, logged_errors):
    plain, args = PATHS[path]

    if plain is async_run:
        async def func(item, *a, **kw):
            raise ValueError(item)
    else:
        def func(item, *a, **kw):
            raise ValueError(item)

    w = BackgroundQueueWorker(func=func, supervisor=supervisor)
    w.start(*args)
    for i in range(3):
        w.put_threadsafe(i)
    assert w.get_queue_obj().join(timeout=5)
    w.stop()
    assert w.errors == 3 and logged_errors


def test_items_left_at_stop_stay_unfinished_until_processed_after_the_next_start(supervisor):
    entered, gate = Event(), Event()

    def run(item, **kw):
        entered.set()
        gate.wait()

    w = BackgroundQueueWorker(func=run, supervisor=supervisor)
    q = w.get_queue_obj()
    w.start()
    for i in range(5):
        w.put_threadsafe(i)
    assert entered.wait(5)
    stopper = gevent.spawn(w.stop)
    gate.set()
    stopper.get(timeout=5)
    assert q.qsize() == 4
    assert not q.join(timeout=0.05), "four items are still queued"
    w.start()
    assert q.join(timeout=5)
    assert w.runs == 5
    w.stop()


def test_stop_drain_leaves_the_queue_joined(supervisor):
    gate = Event()
    w = BackgroundQueueWorker(func=lambda item, **kw: gate.wait(), supervisor=supervisor)
    q = w.get_queue_obj()
    w.start()
    for i in range(20):
        w.put_threadsafe(i)
    stopper = gevent.spawn(w.stop, drain=True)
    gate.set()
    stopper.get(timeout=5)
    assert q.join(timeout=0.5) and q.qsize() == 0 and w.runs == 20
