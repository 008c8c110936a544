"""Every ``wait=``: True (no limit), False (do not wait) or seconds, checked where it is given."""
import math
import time

import gevent
import pytest
from gevent.event import Event

from gworker import BackgroundQueueWorker, BackgroundWorker
from gworker._deadline import Deadline
from gworker.aio import Aloop
from gworker.jobs import AsyncJobScheduler

from conftest import wait_until

BAD_WAITS = [
    ("1", TypeError), ([], TypeError), (object(), TypeError),
    (-1, ValueError), (-0.5, ValueError), (math.nan, ValueError),
]


@pytest.mark.parametrize("wait, error", BAD_WAITS)
def test_from_wait_rejects_a_bad_value_naming_the_parameter(wait, error):
    with pytest.raises(error, match="^wait "):
        Deadline.from_wait(wait)
    with pytest.raises(error, match="^grace "):
        Deadline.from_wait(wait, parameter="grace")


def test_true_has_no_limit():
    d = Deadline.from_wait(True)
    assert d.waits and d.remaining() is None and not d.expired()
    assert d.as_wait() is True
    assert d.within(2.5) == 2.5
    assert d.allows(1e9)


@pytest.mark.parametrize("wait", [False, 0, 0.0])
def test_false_and_zero_leave_nothing_to_wait(wait):
    d = Deadline.from_wait(wait)
    assert d.remaining() == 0.0 and d.expired()
    assert d.within(3.0) == 0.0
    assert not d.allows(0.001)


def test_only_false_asks_not_to_wait_at_all():
    assert Deadline.from_wait(False).waits is False
    assert Deadline.from_wait(False).as_wait() is False
    assert Deadline.from_wait(None).waits is False  # atasker's stop(wait=None): falsy, no wait
    assert Deadline.from_wait(0).waits is True
    assert Deadline.from_wait(0).as_wait() == 0.0


def test_seconds_count_down():
    d = Deadline.from_wait(30)
    left = d.remaining()
    assert 29.0 < left <= 30.0
    assert not d.expired()
    assert 0 < d.as_wait() <= 30.0
    assert d.within(1.0) == 1.0
    assert d.allows(1.0) and not d.allows(31.0)


def test_a_passed_deadline_is_expired_and_never_negative():
    d = Deadline.after(0.01)
    wait_until(d.expired, timeout=2)
    assert d.remaining() == 0.0


# -- every stop() that takes wait= checks it before it stops anything --------------------------


@pytest.mark.parametrize("wait, error", BAD_WAITS)
def test_worker_stop_rejects_a_bad_wait(supervisor, wait, error):
    w = BackgroundWorker(func=lambda **kw: gevent.sleep(0.01), supervisor=supervisor)
    w.start()
    with pytest.raises(error, match="^wait "):
        w.stop(wait=wait)
    assert w.is_active()  # nothing was stopped
    w.stop()


@pytest.mark.parametrize("wait, error", BAD_WAITS)
def test_queue_worker_stop_rejects_a_bad_wait(supervisor, wait, error):
    w = BackgroundQueueWorker(func=lambda item, **kw: None, supervisor=supervisor)
    w.start()
    with pytest.raises(error, match="^wait "):
        w.stop(wait=wait, drain=True)
    assert w.is_active()
    w.stop()


@pytest.mark.parametrize("wait, error", BAD_WAITS)
def test_supervisor_stop_rejects_a_bad_wait(supervisor, wait, error):
    with pytest.raises(error, match="^wait "):
        supervisor.stop(wait=wait)
    assert supervisor.is_active()


@pytest.mark.parametrize("wait, error", BAD_WAITS)
def test_aloop_stops_reject_a_bad_wait(supervisor, wait, error):
    aloop = supervisor.create_aloop("deadline-test")
    with pytest.raises(error, match="^wait "):
        supervisor.stop_aloop("deadline-test", wait=wait)
    with pytest.raises(error, match="^wait "):
        aloop.stop(wait=wait)
    assert aloop.is_active()
    with pytest.raises(error, match="^wait "):
        supervisor.aloops.stop_all(wait=wait)
    assert "deadline-test" in supervisor.aloops  # still registered: nothing was stopped


@pytest.mark.parametrize("wait, error", BAD_WAITS)
def test_job_scheduler_stop_rejects_a_bad_wait(supervisor, wait, error):
    supervisor.create_aloop("jobs-deadline-test")
    scheduler = supervisor.create_async_job_scheduler("deadline-test", aloop="jobs-deadline-test")
    with pytest.raises(error, match="^wait "):
        scheduler.stop(wait=wait)
    assert scheduler.is_active()


# -- Worker.stop(wait=seconds) --------------------------------------------------------------------


def test_worker_stop_with_seconds_returns_within_its_bound(supervisor):
    running, release = Event(), Event()

    def stuck(**kwargs):
        running.set()
        release.wait()  # a run that does not finish by itself

    w = BackgroundWorker(func=stuck, supervisor=supervisor)
    w.start()
    assert running.wait(5)
    started = time.monotonic()
    w.stop(wait=0.5)
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 2.0
    assert not w.is_active() and not w.is_stopped()  # the run is still in progress
    release.set()
    wait_until(w.is_stopped)


def test_worker_stop_with_seconds_returns_when_the_run_ends(supervisor):
    running, release = Event(), Event()

    def slow(**kwargs):
        running.set()
        release.wait()

    w = BackgroundWorker(func=slow, supervisor=supervisor)
    w.start()
    assert running.wait(5)
    gevent.spawn_later(0.05, release.set)
    started = time.monotonic()
    w.stop(wait=30)
    assert time.monotonic() - started < 10
    assert w.is_stopped()
