"""No slot leaks: every way a slot-holding run can end gives its pool slot back.

A slot that is never given back is invisible at first: the pool just admits
one run fewer, until a full pool admits nothing. So these tests end each way a
run can end early (withdrawn, cancelled, killed before it ran, killed while it
ran, killed while it waited for its slot) and then read the pool's figures in
``get_info()``: nothing running, nobody waiting, and a new run admitted.
"""
import gevent
import pytest
from gevent.event import Event

from gworker import TASK_HIGH, TASK_LOW, BackgroundQueueWorker
from gworker.integrations.lifecycle import WorkerSet
from gworker.tasks import TASK_STATUS_CANCELED

from conftest import wait_until


def pool_figures(supervisor):
    info = supervisor.get_info().thread_pool
    return info["running"], info["waiting"]


def assert_pool_admits_again(supervisor):
    # A full pool after a leak would leave this task waiting for ever.
    assert supervisor.put_task(lambda **kw: "admitted").wait(2) == "admitted"


@pytest.mark.parametrize("turns", range(4))
def test_stop_cancel_tasks_gives_back_the_slots_of_tasks_that_never_ran(supervisor, turns):
    # put_task admits a task, a hub callback spawns its greenlet, a later one
    # starts it: stopping with cancel_tasks=True after 0, 1, 2 or 3 turns of the
    # hub lands in each of those moments (1 turn: spawned, not started), while
    # the tasks beyond the pool's size wait in line.
    supervisor.set_thread_pool(pool_size=2, reserve_normal=0, reserve_high=0)
    never = Event()
    tasks = [supervisor.put_task(lambda **kw: never.wait()) for _ in range(4)]
    for _ in range(turns):
        gevent.sleep(0)  # one turn of the hub (the moment under test, not a wait)
    supervisor.stop(cancel_tasks=True)
    assert [t.status for t in tasks] == [TASK_STATUS_CANCELED] * 4
    # A withdrawn task that was admitted but not yet started gives its slot
    # back when the hub would have started it: at the hub's next turn.
    wait_until(lambda: pool_figures(supervisor) == (0, 0))
    supervisor.start()
    assert_pool_admits_again(supervisor)


def test_a_task_cancelled_before_its_start_gives_its_slot_back(supervisor):
    # Admitted at once (a slot is free), cancelled before the hub started it.
    task = supervisor.put_task(lambda **kw: None)
    assert task.cancel() is True
    assert_pool_admits_again(supervisor)
    assert pool_figures(supervisor) == (0, 0)


def test_a_task_cancelled_while_waiting_in_line_takes_no_slot(supervisor):
    supervisor.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    release = Event()
    first = supervisor.put_task(lambda **kw: release.wait())
    queued = supervisor.put_task(lambda **kw: None)
    delayed = supervisor.put_task(lambda **kw: None, delay=0.01)
    wait_until(first.is_started)
    assert queued.cancel() is True and delayed.cancel() is True
    assert pool_figures(supervisor) == (1, 0)
    release.set()
    first.wait(2)
    assert_pool_admits_again(supervisor)
    assert pool_figures(supervisor) == (0, 0)


def _a_waiter_behind_a_full_pool(supervisor):
    """A pool of one slot, held by ``blocker``; a greenlet waiting in
    ``acquire(token)``: (pool, blocker, token, waiter)."""
    supervisor.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    pool = supervisor.thread_pool
    blocker, token = pool.slot(TASK_LOW), pool.slot(TASK_HIGH)
    assert pool.try_acquire(blocker)
    waiter = gevent.spawn(pool.acquire, token)
    wait_until(lambda: pool.waiting == 1)
    return pool, blocker, token, waiter


def test_a_waiter_killed_just_after_its_grant_passes_the_slot_on(supervisor):
    # The slot is granted to a waiter whose kill is already on its way: the
    # kill lands first, and the granted slot must go back to the pool.
    pool, blocker, token, waiter = _a_waiter_behind_a_full_pool(supervisor)
    waiter.kill(block=False)  # the kill is scheduled before the grant's wake-up
    pool.release(blocker)  # grants the slot to the waiter
    waiter.join(2)
    assert waiter.dead
    assert pool.running == 0 and pool.waiting == 0
    assert not token.held  # given back, not left held by a dead greenlet
    assert pool.try_acquire(token)  # and idle: the token can be used again
    pool.release(token)  # (the supervisor fixture checks that no slot is left held)


def test_a_slot_waiting_in_acquire_is_its_greenlets_and_cancel_leaves_it(supervisor):
    # cancel() withdraws what defer() put in line; a slot in acquire() belongs
    # to the greenlet waiting there (kill that greenlet to withdraw it), so
    # cancel() refuses it — and the greenlet still gets the slot when it frees.
    pool, blocker, token, waiter = _a_waiter_behind_a_full_pool(supervisor)
    assert token.cancel() is False
    pool.release(blocker)
    waiter.join(2)
    assert waiter.dead and token.held
    pool.release(token)
    assert pool.running == 0 and pool.waiting == 0


def test_a_worker_run_killed_at_the_shutdown_deadline_gives_its_slot_back(supervisor):
    # WorkerSet.shutdown interrupts the queue workers still busy at its
    # deadline, in the order they were added: one waiting for a slot (killed
    # before its run), then one running its executor (GreenletExit thrown into it).
    supervisor.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    inside, never = Event(), Event()
    busy = BackgroundQueueWorker(func=lambda item, **kw: (inside.set(), never.wait()),
                                 supervisor=supervisor)
    behind = BackgroundQueueWorker(func=lambda item, **kw: None, supervisor=supervisor)
    workers = WorkerSet(supervisor, on_undrained=lambda w, items: None)
    workers.add(behind, busy)
    workers.start()
    busy.put_threadsafe("stuck")
    assert inside.wait(2)
    behind.put_threadsafe("waits for the slot")
    wait_until(lambda: pool_figures(supervisor) == (1, 1))
    report = workers.shutdown(timeout=0.05)
    assert report.interrupted[busy.name] == "stuck"
    assert busy.is_stopped() and behind.is_stopped()
    assert pool_figures(supervisor) == (0, 0)
    supervisor.start()
    assert_pool_admits_again(supervisor)


def test_a_burst_stopped_from_inside_and_a_stopped_worker_hold_no_slot(supervisor):
    # A burst (items queued back to back in one slot) ends by stop(): the slot
    # is given back, and the items left stay queued.
    seen = []

    def run(item, _worker, **kw):
        seen.append(item)
        if item == 3:
            _worker.stop(wait=False)

    w = BackgroundQueueWorker(func=run, supervisor=supervisor)
    for i in range(10):
        w.get_queue_obj().put(i)
    w.start()
    wait_until(w.is_stopped)
    assert seen == [0, 1, 2, 3] and w.get_queue_obj().qsize() == 6
    assert pool_figures(supervisor) == (0, 0)
    assert_pool_admits_again(supervisor)
