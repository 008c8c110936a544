"""Admission by priority: the supervisor's thread pool (``thread_pool``), alone
(a supervisor of its own, never started: its pool admits as the started one's
does) and through put_task."""
import gevent
import pytest
from gevent.event import Event

from gworker import TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL, TaskSupervisor

from conftest import wait_until


def make_pool(**limits):
    """The thread pool of a supervisor of its own, set with ``limits``
    (``set_thread_pool``'s parameters)."""
    sup = TaskSupervisor()
    sup.set_thread_pool(**limits)
    return sup.thread_pool


def take(pool, priority):
    """``try_acquire`` with a token of its own: True if it got a slot."""
    return pool.try_acquire(pool.slot(priority))


def held_slot(pool, priority=TASK_LOW, holder=None):
    """A token that holds one of ``pool``'s slots."""
    slot = pool.slot(priority, holder)
    assert pool.try_acquire(slot)
    return slot


def test_limits_per_priority():
    pool = make_pool(pool_size=2, reserve_normal=1, reserve_high=1)
    assert pool.limit(TASK_LOW) == 2
    assert pool.limit(TASK_NORMAL) == 3
    assert pool.limit(TASK_HIGH) == 4
    assert pool.limit(TASK_CRITICAL) == float("inf")
    assert take(pool, TASK_LOW) and take(pool, TASK_LOW)
    assert not take(pool, TASK_LOW)
    assert take(pool, TASK_NORMAL)
    assert not take(pool, TASK_NORMAL)
    assert take(pool, TASK_HIGH)
    assert not take(pool, TASK_HIGH)
    assert take(pool, TASK_CRITICAL) and take(pool, TASK_CRITICAL)
    assert pool.running == 6


def test_max_size_caps_all_but_critical():
    pool = make_pool(pool_size=5, reserve_normal=5, reserve_high=5, max_size=2)
    assert pool.limit(TASK_HIGH) == 2
    assert take(pool, TASK_HIGH) and take(pool, TASK_HIGH)
    assert not take(pool, TASK_HIGH)
    assert take(pool, TASK_CRITICAL)


def test_waiters_start_by_priority_then_fifo_without_polling():
    pool = make_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    blocker = held_slot(pool)
    order = []

    def job(tag, priority):
        slot = pool.slot(priority, tag)
        pool.acquire(slot)
        order.append(tag)
        pool.release(slot)

    glets = [
        gevent.spawn(job, tag, prio)
        for tag, prio in [("low1", TASK_LOW), ("normal1", TASK_NORMAL), ("high", TASK_HIGH),
                          ("low2", TASK_LOW), ("normal2", TASK_NORMAL)]
    ]
    gevent.sleep(0)
    assert order == [] and pool.waiting == 5 and pool.queued() == 5
    # (what a queue worker's burst does while anyone waits, and once no one
    # does: tests/test_fast_paths.py)
    pool.release(blocker)  # one slot frees: handed straight to the most urgent waiter
    gevent.joinall(glets, timeout=5, raise_error=True)
    assert order == ["high", "normal1", "normal2", "low1", "low2"]
    assert pool.running == 0
    assert pool.waiting == 0 and pool.queued() == 0


def test_killed_waiter_gives_up_its_place():
    pool = make_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    blocker = held_slot(pool)
    ran = Event()
    waiter = gevent.spawn(pool.acquire, pool.slot(TASK_HIGH))
    gevent.sleep(0)
    waiter.kill()
    other = gevent.spawn(lambda: (pool.acquire(pool.slot(TASK_LOW)), ran.set()))
    gevent.sleep(0)
    pool.release(blocker)
    assert ran.wait(2)
    other.join(2)
    assert pool.running == 1


def test_deferred_start_and_cancel():
    pool = make_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    started = []

    def start(slot):
        started.append(slot.holder)

    a = pool.defer(pool.slot(TASK_LOW, "a"), start)
    b = pool.defer(pool.slot(TASK_LOW, "b"), start)
    pool.defer(pool.slot(TASK_LOW, "c"), start)
    gevent.sleep(0)
    assert started == ["a"]
    assert b() is True
    pool.release(a)
    gevent.sleep(0)
    assert started == ["a", "c"]


def test_deferred_start_gets_its_slot_and_cancel_before_the_flush():
    pool = make_pool(pool_size=2, reserve_normal=0, reserve_high=0)
    started = []
    a = pool.defer(pool.slot(TASK_LOW, "a"), started.append)  # start(slot), no closure needed
    b = pool.defer(pool.slot(TASK_LOW, "b"), started.append)  # admitted at once, not started yet
    assert b() is True
    assert b() is False  # (once)
    gevent.sleep(0)
    assert started == [a] and a.held and not b.held
    assert pool.running == 1  # the withdrawn slot was given back


def test_a_grant_that_gives_its_slot_back_at_once_does_not_nest():
    pool = make_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    blocker = held_slot(pool)
    started = []

    def start(slot):
        started.append(slot.holder)
        pool.release(slot)  # (work that fails at once)

    for i in range(5000):
        pool.defer(pool.slot(TASK_LOW, i), start)
    pool.release(blocker)
    assert started == list(range(5000))
    assert pool.running == 0 and pool.queued() == 0


def test_resize_admits_waiters():
    pool = make_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    held_slot(pool)
    got = Event()
    gevent.spawn(lambda: (pool.acquire(pool.slot(TASK_LOW)), got.set()))
    gevent.sleep(0)
    assert not got.is_set()
    pool.configure(pool_size=2, reserve_normal=0, reserve_high=0)
    assert got.wait(2)


def test_ready_heap_starts_in_priority_order():
    pool = make_pool()
    order = []
    for prio in (TASK_LOW, TASK_NORMAL, TASK_CRITICAL, TASK_HIGH):
        pool.start_soon(prio, order.append, prio)
    gevent.sleep(0)
    assert order == [TASK_CRITICAL, TASK_HIGH, TASK_NORMAL, TASK_LOW]


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(pool_size=-1), ValueError, "pool_size"),
        (dict(pool_size="3"), TypeError, "pool_size"),
        (dict(reserve_normal=-1), ValueError, "reserve_normal"),
        (dict(reserve_high=1.5), TypeError, "reserve_high"),
        (dict(min_size=-2), ValueError, "min_size"),
        (dict(max_size=-2), ValueError, "max_size"),
    ],
)
def test_bad_pool_settings(kwargs, exc, word, supervisor):
    with pytest.raises(exc, match=word):
        make_pool(**kwargs)
    with pytest.raises(exc, match=word):
        supervisor.set_thread_pool(**kwargs)


def test_priority_admission_order_with_pool_of_one(supervisor):
    """CRITICAL at once; then HIGH, NORMAL, LOW, as slots free."""
    supervisor.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    release = Event()
    order = []
    blocker = supervisor.put_task(lambda **kw: release.wait(5))
    wait_until(blocker.is_started)  # it holds the one slot
    tasks = [
        supervisor.put_task(lambda tag=tag, **kw: order.append(tag), priority=prio)
        for tag, prio in [("LOW", TASK_LOW), ("NORMAL", TASK_NORMAL),
                          ("HIGH", TASK_HIGH), ("CRITICAL", TASK_CRITICAL)]
    ]
    tasks[-1].wait(2)
    assert order == ["CRITICAL"]
    release.set()
    for task in tasks:
        task.wait(2)
    assert order == ["CRITICAL", "HIGH", "NORMAL", "LOW"]
    info = supervisor.get_info()
    assert info.thread_pool["running"] == 0


def test_min_size_is_accepted_and_changes_nothing(supervisor):
    supervisor.set_thread_pool(pool_size=3, min_size=2)
    assert supervisor.thread_pool.running == 0
    assert supervisor.thread_pool.min_size == 2
