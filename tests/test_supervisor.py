"""TaskSupervisor: lifecycle, put_task and its task objects, info, foreign threads."""
import time

import gevent
import pytest
from gevent.event import Event

import gworker
from gworker import TASK_HIGH, TT_THREAD, TaskSupervisor
from gworker.tasks import TASK_STATUS_CANCELED, TASK_STATUS_COMPLETED, TASK_STATUS_FAILED

from conftest import native_thread, os_thread_ident, wait_until


def test_start_stop_block():
    sup = TaskSupervisor("mine")
    assert sup.id == "mine" and not sup.is_active() and not sup.is_started()
    assert sup.start() is True
    assert sup.start() is False
    assert sup.is_active() and sup.is_started()
    unblocked = Event()
    gevent.spawn(lambda: (sup.block(), unblocked.set()))
    gevent.sleep(0.01)  # a window in which block() must not return
    assert not unblocked.is_set()
    sup.stop()
    assert unblocked.wait(2)
    assert not sup.is_active()
    # a supervisor can be started again
    assert sup.start() is True
    sup.stop()


def test_put_task_result_status_and_task_id(supervisor):
    seen = {}

    def target(a, b=0, **kwargs):
        seen.update(kwargs)
        return a + b

    task = supervisor.put_task(target, args=(2,), kwargs={"b": 3})
    assert task.wait(2) == 5
    assert task.result == 5 and task.status == TASK_STATUS_COMPLETED
    assert task.is_started() and task.is_completed()
    assert seen["_task_id"] == task.id
    assert task.duration is not None and task.duration >= 0
    assert supervisor.get_task(task.id) is None  # finished tasks are forgotten


def test_put_task_custom_id_callback_and_registry(supervisor):
    got = Event()
    results = []
    release = Event()
    task = supervisor.put_task(lambda **kw: release.wait(5) and "done", task_id="job-1",
                               callback=lambda r: (results.append(r), got.set()))
    wait_until(task.is_started)
    assert task.id == "job-1"
    assert supervisor.get_task("job-1") is task
    assert supervisor.get_tasks()[task.id] is task
    assert supervisor.get_info().thread_tasks_count == 1
    release.set()
    assert got.wait(2)
    assert results == ["done"]


def test_failed_task_is_logged_and_wait_raises(supervisor, logged_errors):
    def boom(**kw):
        raise KeyError("nope")

    task = supervisor.put_task(boom)
    with pytest.raises(KeyError):
        task.wait(2)
    assert task.status == TASK_STATUS_FAILED
    assert len(logged_errors) == 1
    assert "boom" in logged_errors[0].getMessage() and logged_errors[0].exc_info[0] is KeyError


def test_delayed_task(supervisor):
    t0 = time.monotonic()
    task = supervisor.put_task(lambda **kw: time.monotonic(), delay=0.1)
    assert not task.is_started()
    started = task.wait(2)
    assert started - t0 >= 0.095


def test_delayed_task_can_be_cancelled(supervisor):
    ran = []
    task = supervisor.put_task(lambda **kw: ran.append(1), delay=0.05)
    assert task.cancel() is True
    assert task.status == TASK_STATUS_CANCELED
    gevent.sleep(0.1)  # past the delay: the withdrawn task would have run by now
    assert ran == []


def test_a_task_waiting_for_admission_can_be_cancelled(supervisor):
    supervisor.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    release = Event()
    ran = []
    first = supervisor.put_task(lambda **kw: release.wait(5))
    queued = supervisor.put_task(lambda **kw: ran.append(1))
    wait_until(first.is_started)
    assert queued.cancel() is True
    assert queued.status == TASK_STATUS_CANCELED
    release.set()
    assert first.wait(2) is True
    # a task put now is admitted behind anything still in line: once it ran,
    # the withdrawn one would have run too
    assert supervisor.put_task(lambda **kw: "probe").wait(2) == "probe"
    assert ran == []
    assert queued.wait(1) is None  # withdrawn before it started: no result, nothing raised


def test_a_cancelled_task_is_forgotten(supervisor):
    # get_task/get_tasks list unfinished tasks only: a withdrawn task is finished.
    supervisor.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    release = Event()
    first = supervisor.put_task(lambda **kw: release.wait(5))
    queued = supervisor.put_task(lambda **kw: None)
    delayed = supervisor.put_task(lambda **kw: None, delay=5)
    wait_until(first.is_started)
    assert queued.cancel() is True and delayed.cancel() is True
    assert supervisor.get_task(queued.id) is None and supervisor.get_task(delayed.id) is None
    assert supervisor.get_tasks() == {first.id: first} and supervisor.get_info().tasks == {first.id: first}
    release.set()
    first.wait(2)
    soon = supervisor.put_task(lambda **kw: None)  # admitted at once, cancelled before it starts
    assert soon.cancel() is True
    assert supervisor.get_tasks() == {} and supervisor.get_info().tasks == {}


def test_waiting_for_a_task_that_finished_before_anyone_waited(supervisor):
    task = supervisor.put_task(lambda **kw: "done")
    wait_until(task.is_completed)
    assert task.wait(0) == "done"
    assert gworker.wait_completed([task], timeout=0) == ["done"]


def test_wait_timeout(supervisor):
    release = Event()
    task = supervisor.put_task(lambda **kw: release.wait(5))
    with pytest.raises(TimeoutError):
        task.wait(0.05)
    release.set()
    assert task.wait(2) is True


def test_stop_waits_for_tasks_or_cancels_them():
    sup = TaskSupervisor()
    sup.start()
    task = sup.put_task(lambda **kw: gevent.sleep(0.1) or "ok")
    sup.stop()
    assert task.result == "ok"
    sup.start()
    sup.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    running = sup.put_task(lambda **kw: gevent.sleep(10))
    queued = sup.put_task(lambda **kw: "never")
    wait_until(running.is_started)
    t0 = time.monotonic()
    sup.stop(cancel_tasks=True)
    assert time.monotonic() - t0 < 2
    assert running.status == TASK_STATUS_CANCELED
    assert queued.status == TASK_STATUS_CANCELED
    assert sup.thread_pool.running == 0


def test_stop_wait_seconds_bounds_the_wait():
    sup = TaskSupervisor()
    sup.start()
    sup.put_task(lambda **kw: gevent.sleep(3))
    t0 = time.monotonic()
    sup.stop(wait=0.1)
    assert time.monotonic() - t0 < 1
    assert not sup.is_active()


def test_stop_wait_false_returns_at_once():
    sup = TaskSupervisor()
    sup.start()
    sup.put_task(lambda **kw: gevent.sleep(0.2))
    t0 = time.monotonic()
    sup.stop(wait=False)
    assert time.monotonic() - t0 < 0.05
    wait_until(lambda: not sup.is_active(), 3)


def test_put_task_starts_the_supervisor(caplog):
    sup = TaskSupervisor()
    with caplog.at_level("INFO", logger="gworker"):
        assert sup.put_task(lambda **kw: 1).wait(2) == 1
    assert sup.is_active()
    assert any("not started" in r.getMessage() for r in caplog.records)
    sup.stop()


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(target=42), TypeError, "target"),
        (dict(priority=7), ValueError, "priority"),
        (dict(priority="high"), ValueError, "priority"),
        (dict(delay=-1), ValueError, "delay"),
        (dict(delay="soon"), TypeError, "delay"),
        (dict(tt=9), ValueError, "tt"),
        (dict(callback=3), TypeError, "callback"),
        (dict(args=5), TypeError, "args"),
        (dict(kwargs=[1]), TypeError, "kwargs"),
    ],
)
def test_put_task_bad_input(supervisor, kwargs, exc, word):
    kwargs.setdefault("target", lambda **kw: None)
    with pytest.raises(exc, match=word):
        supervisor.put_task(**kwargs)


def test_stop_bad_wait(supervisor):
    with pytest.raises(ValueError, match="wait"):
        supervisor.stop(wait=-1)


def test_start_stop_and_put_task_from_a_native_thread():
    sup = TaskSupervisor()
    sup.start()  # binds to this hub
    hub_ident = os_thread_ident()
    idents = []

    def target(**kw):
        idents.append(os_thread_ident())
        return "from-hub"

    def in_thread():
        assert os_thread_ident() != hub_ident
        task = sup.put_task(target, tt=TT_THREAD, priority=TASK_HIGH)
        sup.stop()
        return task

    task = native_thread(in_thread).join(10)
    assert task.result == "from-hub"
    assert idents == [hub_ident]
    assert not sup.is_active()
    native_thread(sup.start).join(10)
    assert sup.is_active()
    sup.stop()


def test_get_info_shape(supervisor):
    w = gworker.BackgroundWorker(func=lambda **kw: gevent.sleep(0.01), name="w1", supervisor=supervisor)
    w.start()
    wait_until(lambda: w.runs > 0)
    info = supervisor.get_info()
    for field in ("id", "active", "started", "thread_tasks_count", "mp_tasks_count"):
        assert hasattr(info, field)
    assert info.active and info.started
    (winfo,) = info.workers
    assert winfo["name"] == "w1" and winfo["kind"] == "continuous" and winfo["active"]
    for field in ("priority", "runs", "errors", "last_run", "last_duration", "queue_length"):
        assert field in winfo
    assert supervisor.get_schedulers() == {w: None}
    w.stop()
    assert supervisor.get_schedulers() == {}


def test_threadsafe_call_before_the_supervisor_has_a_hub_is_refused():
    sup = TaskSupervisor()
    w = gworker.BackgroundQueueWorker(func=lambda item, **kw: None, supervisor=sup)
    with pytest.raises(RuntimeError, match="no hub yet"):
        native_thread(w.put_threadsafe, 1).join(10)
    w.put_threadsafe(2)  # from the hub's thread it is fine: the queue exists already
    assert w.get_queue_obj().qsize() == 1


def test_an_unknown_async_job_scheduler_name_is_a_value_error_naming_scheduler():
    sup = TaskSupervisor()
    assert sup.get_async_job_scheduler() is None  # no name: the default, none yet
    with pytest.raises(ValueError, match=r"^scheduler: no async job scheduler named 'nope'$"):
        sup.get_async_job_scheduler("nope")
    with pytest.raises(ValueError, match="scheduler: no async job scheduler named 'nope'"):
        sup.set_default_async_job_scheduler("nope")
