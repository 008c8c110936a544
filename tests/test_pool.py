"""Admission by priority: the supervisor's thread pool (``thread_pool``), alone
(a supervisor of its own, never started: its pool admits as the started one's
does) and through put_task."""
import gevent
import pytest
from gevent.event import Event

from gworker import TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL, TaskSupervisor
from gworker._admission import PriorityPool, Slot, SlotError

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
    pool.release(blocker)  # each grant hands its start to a runner: no nested call
    wait_until(lambda: len(started) == 5000, timeout=5)
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


def test_configure_keeps_what_is_left_out():
    pool = PriorityPool()
    limits = lambda: (pool.pool_size, pool.reserve_normal, pool.reserve_high, pool.min_size, pool.max_size)
    assert limits() == (100, 10, 10, 0, None)
    pool.configure(pool_size=3, max_size=20)
    assert limits() == (3, 10, 10, 0, 20)
    pool.configure(reserve_high=1, min_size="max")
    assert limits() == (3, 10, 1, "max", 20)
    pool.configure(None, None, None, None, None)  # None is "left out" too
    pool.configure()
    assert limits() == (3, 10, 1, "max", 20)
    assert [pool.limit(p) for p in (TASK_LOW, TASK_NORMAL, TASK_HIGH)] == [3, 13, 14]
    with pytest.raises(ValueError, match="reserve_normal"):
        pool.configure(pool_size=50, reserve_normal=-1)
    assert limits() == (3, 10, 1, "max", 20), "a bad value changes nothing, the good ones neither"
    # and through the supervisor, which passes what it is given on
    sup = TaskSupervisor()
    sup.set_thread_pool(pool_size=7)
    sup.set_thread_pool(reserve_normal=2)
    sup.thread_reserve_high = 0
    assert sup.thread_pool.limit(TASK_HIGH) == 9
    assert (sup.thread_pool_size, sup.thread_reserve_normal, sup.thread_reserve_high) == (7, 2, 0)


# -- slots are tokens ------------------------------------------------------------


def test_a_second_release_raises():
    pool = make_pool()
    slot = held_slot(pool)
    pool.release(slot)
    with pytest.raises(SlotError, match="not held"):
        pool.release(slot)
    assert pool.running == 0 and not slot.held


def test_releasing_a_slot_never_acquired_raises():
    pool = make_pool()
    held_slot(pool)
    with pytest.raises(SlotError, match="never acquired"):
        pool.release(pool.slot(TASK_LOW))
    assert pool.running == 1


def test_a_slot_of_another_pool_is_refused_and_changes_neither_pool():
    pool, other = make_pool(), make_pool()
    held_slot(pool)
    theirs = held_slot(other)
    with pytest.raises(SlotError, match="another pool"):
        pool.release(theirs)
    with pytest.raises(SlotError, match="another pool"):
        pool.try_acquire(other.slot(TASK_LOW))
    assert pool.running == 1 and other.running == 1
    assert theirs.held
    other.release(theirs)  # its own pool takes it
    assert other.running == 0


def test_acquiring_a_slot_already_held_raises():
    pool = make_pool()
    slot = held_slot(pool)
    with pytest.raises(SlotError, match="not idle"):
        pool.try_acquire(slot)
    with pytest.raises(SlotError, match="not idle"):
        pool.acquire(slot)
    with pytest.raises(SlotError, match="not idle"):
        pool.defer(slot, lambda slot: None)
    assert pool.running == 1 and slot.held


@pytest.mark.parametrize("in_line", [True, False], ids=["in line", "admitted, not started"])
def test_defer_returns_the_slot_and_cancel_withdraws_it_for_good(in_line):
    pool = make_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    blocker = held_slot(pool) if in_line else None
    started = []
    slot = pool.slot(TASK_LOW, "withdrawn")
    assert pool.defer(slot, started.append) is slot
    assert slot.cancel() is True
    assert slot.cancel() is False and slot() is False  # once
    with pytest.raises(SlotError, match="not idle"):
        pool.defer(slot, started.append)  # its holder is gone: never again
    if blocker is not None:
        pool.release(blocker)
    gevent.sleep(0)
    assert started == [] and not slot.held
    assert pool.running == 0 and pool.queued() == 0 and pool.waiting == 0


def test_a_greenlet_killed_waiting_in_acquire_leaves_its_token_idle_and_reusable():
    pool = make_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    blocker = held_slot(pool)
    slot = pool.slot(TASK_HIGH)
    waiter = gevent.spawn(pool.acquire, slot)
    wait_until(lambda: pool.waiting == 1)
    waiter.kill()
    assert not slot.held and pool.waiting == 0 and pool.queued() == 0
    pool.release(blocker)
    pool.acquire(slot)  # the same token, again: a slot is free, so no wait
    assert slot.held and pool.running == 1
    pool.release(slot)
    assert pool.running == 0


@pytest.mark.parametrize("call", [
    lambda pool: pool.try_acquire(TASK_LOW),  # (the old API took a priority)
    lambda pool: pool.acquire(TASK_LOW),
    lambda pool: pool.defer(TASK_LOW, lambda slot: None),
    lambda pool: pool.release(None),
    lambda pool: pool.release(object()),
], ids=["try_acquire", "acquire", "defer", "release None", "release object"])
def test_a_slot_argument_that_is_not_a_slot_is_a_type_error_naming_slot(call):
    pool = make_pool()
    with pytest.raises(TypeError, match="slot must be a Slot"):
        call(pool)
    assert pool.running == 0 and pool.queued() == 0


def test_a_slot_of_an_unknown_priority_is_refused():
    pool = make_pool()
    with pytest.raises(ValueError, match=r"priority must be one of .* got 99"):
        pool.slot(priority=99)
    slot = pool.slot(TASK_HIGH, holder="me")
    assert isinstance(slot, Slot) and slot.priority == TASK_HIGH and slot.holder == "me"
    assert not slot.held


def test_deferred_starts_admitted_together_start_in_priority_order():
    pool = make_pool()
    order = []
    for prio in (TASK_LOW, TASK_NORMAL, TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_CRITICAL):
        pool.defer(pool.slot(prio), lambda slot: (order.append(slot.priority), pool.release(slot)))
    wait_until(lambda: len(order) == 6)
    assert order == [TASK_CRITICAL, TASK_CRITICAL, TASK_HIGH, TASK_NORMAL, TASK_LOW, TASK_LOW]


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
