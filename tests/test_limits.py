"""Time limits (``timeout=``) and retries (``retries=``) of worker runs and
tasks: the backoff schedule as a pure function, the parameter checks, a run
cut off (sync, async), a run that could not be (logged), retries in place
for queue workers (timings, order, ``retry_for``, stop during a wait) and
for tasks of every type."""
import asyncio
import logging
import sys
import time

import gevent
import pytest
from gevent.event import Event

import gworker
import gworker.limits
from gworker import (
    TT_COROUTINE, BackgroundEventWorker, BackgroundIntervalWorker, BackgroundQueueWorker, BackgroundWorker,
    RetryPolicy, RunTimeout, background_task,
)
from gworker.limits import retry_policy

from conftest import wait_until

#: Slack for a loaded 2-core machine: a wake-up may come this much later.
LATE = 0.25


def _counts(worker, *names):
    info = worker.get_info()
    return tuple(info[name] for name in names)


# -- the retry schedule, without a clock ------------------------------------------------------------
def test_the_nth_wait_grows_by_the_backoff_is_capped_and_jittered_upwards_only():
    policy = retry_policy(retries=5, retry_delay=0.5, retry_backoff=3, retry_max_delay=6)
    assert [policy.base_wait(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 6, 6]
    assert [policy.wait(n, rand=lambda: 0.0) for n in range(1, 4)] == [0.5, 1.5, 4.5]
    assert [policy.wait(n, rand=lambda: 1.0) for n in range(1, 4)] == pytest.approx([0.55, 1.65, 4.95])
    waits = [policy.wait(1) for _ in range(200)]
    assert min(waits) >= 0.5 and max(waits) <= 0.55 and len(set(waits)) > 100


def test_the_defaults_and_which_failures_are_retried():
    policy = retry_policy(retries=2)
    assert (policy.delay, policy.backoff, policy.max_delay) == (1.0, 2.0, None)
    assert policy.base_wait(10) == 2.0 ** 9 and policy.base_wait(5000) == gworker.limits.MAX_WAIT
    assert policy.retries_after(ValueError(), 1) and policy.retries_after(ValueError(), 2)
    assert not policy.retries_after(ValueError(), 3), "two retries: a third failure is final"
    assert policy.retries_after(RunTimeout(1), 1), "a run cut off by its limit is retried by default"
    assert not policy.retries_after(gevent.GreenletExit(), 1)
    only = retry_policy(retries=2, retry_for=KeyError)
    assert only.retries_after(KeyError(), 1) and not only.retries_after(ValueError(), 1)
    assert retry_policy() is None and retry_policy(retries=0) is None
    assert isinstance(policy, RetryPolicy)


BAD_LIMITS = [
    ({"timeout": -1}, ValueError, "timeout"),
    ({"timeout": 0}, ValueError, "timeout"),
    ({"timeout": "1"}, TypeError, "timeout"),
    ({"timeout": True}, TypeError, "timeout"),
    ({"retries": -1}, ValueError, "retries"),
    ({"retries": 1.5}, TypeError, "retries"),
    ({"retries": True}, TypeError, "retries"),
    ({"retries": 1, "retry_delay": -1}, ValueError, "retry_delay"),
    ({"retries": 1, "retry_delay": "x"}, TypeError, "retry_delay"),
    ({"retries": 1, "retry_backoff": 0.5}, ValueError, "retry_backoff"),
    ({"retries": 1, "retry_backoff": "2"}, TypeError, "retry_backoff"),
    ({"retries": 1, "retry_max_delay": -2}, ValueError, "retry_max_delay"),
    ({"retries": 1, "retry_for": "ValueError"}, TypeError, "retry_for"),
    ({"retries": 1, "retry_for": (ValueError, 3)}, TypeError, "retry_for"),
    ({"retries": 1, "retry_for": ()}, TypeError, "retry_for"),
    ({"retry_delay": -1}, ValueError, "retry_delay"),  # checked even without retries
]


@pytest.mark.parametrize("kwargs, error, word", BAD_LIMITS)
def test_bad_limits_are_refused_where_they_are_given(kwargs, error, word, supervisor):
    with pytest.raises(error, match=word):
        BackgroundQueueWorker(func=lambda item, **kw: None, supervisor=supervisor, **kwargs)
    with pytest.raises(error, match=word):
        supervisor.put_task(lambda **kw: None, **kwargs)
    with pytest.raises(error, match=word):
        background_task(lambda: None, supervisor=supervisor, **kwargs)
    assert not supervisor.get_tasks()


@pytest.mark.parametrize("cls, kwargs", [
    (BackgroundIntervalWorker, {"interval": 1}), (BackgroundEventWorker, {}), (BackgroundWorker, {}),
])
def test_only_queue_workers_retry(cls, kwargs, supervisor):
    with pytest.raises(TypeError, match="retries"):
        cls(func=lambda **kw: None, supervisor=supervisor, retries=2, **kwargs)
    with pytest.raises(TypeError, match="retries"):
        cls(func=lambda **kw: None, supervisor=supervisor, retry_delay=2, **kwargs)
    cls(func=lambda **kw: None, supervisor=supervisor, timeout=1, **kwargs)  # a time limit is for every kind


# -- time limits of worker runs ------------------------------------------------------------------
class Failures:
    """An ``on_error`` that records the exception being handled."""

    def __init__(self):
        self.seen = []
        self.event = Event()

    def __call__(self):
        self.seen.append(sys.exc_info()[1])
        self.event.set()


def _sleeper(seconds, done):
    def run(*args, **kwargs):
        try:
            gevent.sleep(seconds)
        finally:
            done.append(time.monotonic())
        return None
    return run


@pytest.mark.parametrize("kind", ["queue", "interval", "event", "continuous"])
def test_a_sync_run_past_its_limit_fails_with_RunTimeout_and_the_worker_goes_on(kind, supervisor):
    ends = []
    failures = Failures()
    common = dict(supervisor=supervisor, timeout=0.1, on_error=failures)
    run = _sleeper(5, ends)
    w = {
        "queue": lambda: BackgroundQueueWorker(func=run, **common),
        "interval": lambda: BackgroundIntervalWorker(func=run, interval=0.05, **common),
        "event": lambda: BackgroundEventWorker(func=run, **common),
        "continuous": lambda: BackgroundWorker(func=run, **common),
    }[kind]()
    started = time.monotonic()
    w.start()
    if kind == "queue":
        w.put_threadsafe(1)
        w.put_threadsafe(2)
    elif kind == "event":
        w.trigger_threadsafe()
    wait_until(lambda: len(failures.seen) >= 2 if kind != "event" else failures.seen)
    w.stop()
    assert all(isinstance(exc, RunTimeout) for exc in failures.seen)
    assert failures.seen[0].seconds == 0.1 and w.name in str(failures.seen[0])
    assert 0.1 <= ends[0] - started <= 0.1 + LATE, "cut off at its limit, not at the end of its sleep"
    info = w.get_info()
    assert info["timeouts"] == info["failures"] == info["errors"] == len(failures.seen)
    assert info["timeout"] == 0.1 and info["overruns"] == 0


def test_a_run_within_its_limit_is_left_alone(supervisor):
    done = []
    w = BackgroundQueueWorker(func=lambda item, **kw: (gevent.sleep(0.05), done.append(item)),
                              supervisor=supervisor, timeout=0.5)
    w.start()
    for i in range(3):
        w.put_threadsafe(i)
    wait_until(lambda: len(done) == 3)
    gevent.sleep(0.6)  # (a limit left armed after its run would fire in here)
    w.stop()
    assert done == [0, 1, 2] and w.get_info()["timeouts"] == 0 and w.errors == 0


@pytest.mark.parametrize("kind", ["queue", "interval", "continuous"])
def test_an_async_run_past_its_limit_is_cancelled(kind, supervisor):
    cancelled = []
    failures = Failures()

    async def run(*args, **kwargs):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(time.monotonic())
            raise

    common = dict(func=run, supervisor=supervisor, timeout=0.1, on_error=failures)
    w = {
        "queue": lambda: BackgroundQueueWorker(**common),  # a coroutine loop: engine.call_async
        "interval": lambda: BackgroundIntervalWorker(interval=0.05, **common),  # a greenlet waits: aloop.run
        "continuous": lambda: gworker.BackgroundAsyncWorker(poll_delay=0.01, **common),
    }[kind]()
    started = time.monotonic()
    w.start()
    if kind == "queue":
        w.put_threadsafe(1)
        w.put_threadsafe(2)
    wait_until(lambda: len(failures.seen) >= 2)
    w.stop()
    assert all(isinstance(exc, RunTimeout) for exc in failures.seen), failures.seen
    assert cancelled and 0.1 <= cancelled[0] - started <= 0.1 + LATE
    assert w.get_info()["timeouts"] == len(failures.seen)


@pytest.mark.blocks_hub
def test_a_run_that_never_switches_is_logged_as_a_limit_that_could_not_be_enforced(supervisor, caplog):
    def spin(item, **kwargs):
        until = time.monotonic() + 0.3
        while time.monotonic() < until:
            pass
        return item

    done = []
    w = BackgroundQueueWorker(func=lambda item, **kw: done.append(spin(item)), name="spinner",
                              supervisor=supervisor, timeout=0.1)
    with caplog.at_level(logging.WARNING, logger="gworker"):
        w.start()
        w.put_threadsafe("x")
        wait_until(lambda: done)
        w.stop()
    assert done == ["x"], "it ran to its end: nothing can interrupt it"
    info = w.get_info()
    assert (info["overruns"], info["timeouts"], info["errors"]) == (1, 0, 0)
    record = next(r for r in caplog.records if "could not be enforced" in r.getMessage())
    assert record.levelno == logging.WARNING
    assert "spinner" in record.getMessage() and "time limit of 0.1 s" in record.getMessage()


class FailingBroker:
    """A protocol queue object that records how each item ended."""

    def __init__(self, items):
        self.q = gevent.queue.Queue()
        for item in items:
            self.q.put(item)
        self.acked, self.failed = [], []

    def get(self):
        return self.q.get()

    def qsize(self):
        return self.q.qsize()

    def put_threadsafe(self, item):
        self.q.put(item)

    def ack(self, item):
        self.acked.append(item)

    def fail(self, item, exc):
        self.failed.append((item, exc))


def test_a_queue_item_that_timed_out_is_failed_like_one_that_raised(supervisor, logged_errors):
    broker = FailingBroker(["slow", "quick"])
    w = BackgroundQueueWorker(func=lambda item, **kw: gevent.sleep(5 if item == "slow" else 0),
                              q=broker, supervisor=supervisor, timeout=0.1)
    w.start()
    wait_until(lambda: broker.acked)
    w.stop()
    assert [item for item, _ in broker.failed] == ["slow"] and isinstance(broker.failed[0][1], RunTimeout)
    assert broker.acked == ["quick"]
    assert logged_errors and "RunTimeout" in logged_errors[0].exc_text


# -- retries of queue items --------------------------------------------------------------------------
def test_a_failing_item_is_retried_in_place_with_backoff_and_the_next_item_waits(supervisor):
    calls = []

    def run(item, **kwargs):
        calls.append((item, time.monotonic()))
        if item == "flaky" and sum(1 for i, _ in calls if i == "flaky") <= 3:
            raise ValueError("not yet")

    w = BackgroundQueueWorker(func=run, supervisor=supervisor, retries=3, retry_delay=0.05, retry_backoff=2)
    w.start()
    w.put_threadsafe("flaky")
    w.put_threadsafe("next")
    wait_until(lambda: any(i == "next" for i, _ in calls))
    w.stop()
    assert [i for i, _ in calls] == ["flaky"] * 4 + ["next"], "order kept: the next item waits"
    times = [t for _, t in calls]
    gaps = [b - a for a, b in zip(times, times[1:4])]
    for gap, base in zip(gaps, [0.05, 0.1, 0.2]):
        assert base <= gap <= base * 1.1 + LATE, gaps
    info = w.get_info()
    assert (info["retries"], info["errors"], info["failures"], info["runs"]) == (3, 3, 0, 5)


def test_after_the_last_try_the_failure_is_final(supervisor):
    failures = Failures()
    tries = []

    def run(item, **kwargs):
        tries.append(item)
        raise KeyError("try %d" % len(tries))

    w = BackgroundQueueWorker(func=run, supervisor=supervisor, retries=2, retry_delay=0.01, on_error=failures)
    w.start()
    w.put_threadsafe("a")
    failures.event.wait(5)
    w.stop()
    assert tries == ["a"] * 3
    assert len(failures.seen) == 1 and str(failures.seen[0]) == "'try 3'", "on_error: the final failure only"
    assert _counts(w, "retries", "failures", "errors") == (2, 1, 3)


def test_retry_for_retries_only_the_failures_it_names(supervisor):
    failures = Failures()
    tries = []

    def run(item, **kwargs):
        tries.append(item)
        raise (KeyError if item == "key" else ValueError)(item)

    w = BackgroundQueueWorker(func=run, supervisor=supervisor, retries=2, retry_delay=0.01,
                              retry_for=KeyError, on_error=failures)
    w.start()
    w.put_threadsafe("value")
    w.put_threadsafe("key")
    wait_until(lambda: len(failures.seen) == 2)
    w.stop()
    assert tries == ["value", "key", "key", "key"]


def test_a_run_cut_off_by_its_limit_is_retried(supervisor):
    calls = []

    def run(item, **kwargs):
        calls.append(item)
        if len(calls) == 1:
            gevent.sleep(5)

    w = BackgroundQueueWorker(func=run, supervisor=supervisor, timeout=0.1, retries=1, retry_delay=0.01)
    w.start()
    w.put_threadsafe("x")
    wait_until(lambda: len(calls) == 2)
    w.stop()
    assert _counts(w, "timeouts", "retries", "failures") == (1, 1, 0)


def test_stop_ends_a_retry_wait_and_the_failure_is_final(supervisor):
    failures = Failures()
    tried = Event()

    def run(item, **kwargs):
        tried.set()
        raise ValueError(item)

    w = BackgroundQueueWorker(func=run, supervisor=supervisor, retries=3, retry_delay=30, on_error=failures)
    w.start()
    w.put_threadsafe("x")
    assert tried.wait(5)
    wait_until(lambda: w.get_info()["retries"] == 1)  # (now in its 30 s wait)
    started = time.monotonic()
    w.stop()
    assert time.monotonic() - started < 1, "stop() does not wait out a retry's wait"
    assert [str(e) for e in failures.seen] == ["x"] and _counts(w, "failures", "retries") == (1, 1)


def test_async_queue_items_are_retried_too(supervisor):
    calls = []

    async def run(item, **kwargs):
        calls.append((item, time.monotonic()))
        if len(calls) < 3:
            raise ValueError("again")

    w = BackgroundQueueWorker(func=run, supervisor=supervisor, retries=2, retry_delay=0.05)
    w.start()
    w.put_threadsafe("a")
    wait_until(lambda: len(calls) == 3)
    w.stop()
    times = [t for _, t in calls]
    assert 0.05 <= times[1] - times[0] <= 0.055 + LATE
    assert 0.1 <= times[2] - times[1] <= 0.11 + LATE
    assert _counts(w, "retries", "failures") == (2, 0)


def test_stop_ends_an_async_retry_wait(supervisor):
    failures = Failures()

    async def run(item, **kwargs):
        raise ValueError(item)

    w = BackgroundQueueWorker(func=run, supervisor=supervisor, retries=3, retry_delay=30, on_error=failures)
    w.start()
    w.put_threadsafe("x")
    wait_until(lambda: w.get_info()["retries"] == 1)
    started = time.monotonic()
    w.stop()
    assert time.monotonic() - started < 1
    assert w.get_info()["failures"] == 1 and len(failures.seen) == 1


# -- tasks ---------------------------------------------------------------------------------------------
def test_a_task_is_retried_until_it_succeeds(supervisor):
    starts = []

    def flaky(_task_id=None):
        starts.append(time.monotonic())
        if len(starts) < 3:
            raise ValueError("not yet")
        return "done"

    task = supervisor.put_task(flaky, retries=3, retry_delay=0.05)
    assert task.wait(5) == "done"
    assert task.tries == 3 and task.is_completed() and not task.is_failed()
    assert 0.05 <= starts[1] - starts[0] <= 0.055 + LATE and 0.1 <= starts[2] - starts[1] <= 0.11 + LATE


def test_a_task_fails_after_its_last_try(supervisor, logged_errors):
    task = supervisor.put_task(lambda _task_id=None: 1 / 0, retries=1, retry_delay=0.01)
    with pytest.raises(ZeroDivisionError):
        task.wait(5)
    assert task.tries == 2 and task.is_failed()
    assert len(logged_errors) == 1 and "(2 tries)" in logged_errors[0].getMessage()


def test_a_task_past_its_limit_fails_with_RunTimeout(supervisor, logged_errors):
    task = supervisor.put_task(lambda _task_id=None: gevent.sleep(5), timeout=0.1)
    with pytest.raises(RunTimeout):
        task.wait(5)
    assert task.is_failed() and task.duration < 0.1 + LATE

    async def slow(_task_id=None):
        await asyncio.sleep(5)

    task = supervisor.put_task(slow, tt=TT_COROUTINE, timeout=0.1)
    with pytest.raises(RunTimeout):
        task.wait(5)
    assert task.is_failed()


def test_a_coroutine_task_is_retried(supervisor):
    tries = []

    async def flaky(_task_id=None):
        tries.append(1)
        if len(tries) < 2:
            raise ValueError("once")
        return "ok"

    task = supervisor.put_task(flaky, tt=TT_COROUTINE, retries=2, retry_delay=0.01)
    assert task.wait(5) == "ok" and task.tries == 2


def test_a_task_waiting_for_its_retry_holds_no_slot_and_can_be_cancelled(supervisor):
    supervisor.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    task = supervisor.put_task(lambda _task_id=None: 1 / 0, retries=2, retry_delay=30)
    wait_until(lambda: task.tries == 1 and task.status == gworker.TASK_STATUS_DELAYED)
    other = supervisor.put_task(lambda _task_id=None: "ran")
    assert other.wait(5) == "ran", "the one slot is free while the task waits"
    assert task.cancel() is True
    assert task.status == gworker.TASK_STATUS_CANCELED and supervisor.get_task(task.id) is None


def test_a_supervisor_stop_makes_a_waiting_retry_final(logged_errors):
    sup = gworker.TaskSupervisor()
    sup.start()
    task = sup.put_task(lambda _task_id=None: 1 / 0, retries=2, retry_delay=30)
    wait_until(lambda: task.tries == 1)
    started = time.monotonic()
    sup.stop(wait=5)
    assert time.monotonic() - started < 1
    assert task.is_failed() and isinstance(task.exception, ZeroDivisionError)
    assert "stopped before its next try" in logged_errors[-1].getMessage()


def test_background_task_passes_its_limits_on(supervisor, logged_errors):
    tries = []

    @background_task(supervisor=supervisor, retries=1, retry_delay=0.01, timeout=0.1)
    def job(x):
        tries.append(x)
        gevent.sleep(5)

    task = job("a")
    with pytest.raises(RunTimeout):
        task.wait(5)
    assert tries == ["a", "a"] and task.tries == 2


def test_a_subclass_may_keep_a_timeout_and_retries_of_its_own(supervisor):
    # atasker code: attributes of the subclass's own, set after the base's __init__
    class Poller(BackgroundIntervalWorker):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.timeout = 0.01
            self.retries = 3

        def run(self, **kwargs):
            gevent.sleep(0.05)
            self.done.set()

    w = Poller(interval=1, supervisor=supervisor)
    w.done = Event()
    w.start()
    assert w.done.wait(5)
    w.stop()
    assert w.errors == 0 and w.get_info()["timeout"] is None and (w.timeout, w.retries) == (0.01, 3)


# -- runs in the process pool ---------------------------------------------------------------------
@pytest.fixture
def mp_supervisor():
    sup = gworker.TaskSupervisor()
    sup.start()
    sup.create_mp_pool(processes=1)
    yield sup
    sup.stop(wait=10)


def test_a_process_run_past_its_limit_has_its_child_replaced_and_the_next_item_runs(mp_supervisor):
    from mp_workers import SlowQueueWorker

    failures = Failures()
    w = SlowQueueWorker(supervisor=mp_supervisor, timeout=0.3, on_error=failures)
    w.start()
    w.put_threadsafe(0)
    wait_until(lambda: w.results)
    first_pid = w.results[0][1]
    w.put_threadsafe(30)  # past its limit: the child is killed
    w.put_threadsafe(0)
    wait_until(lambda: len(w.results) == 2, timeout=10)
    w.stop()
    assert len(failures.seen) == 1 and isinstance(failures.seen[0], RunTimeout)
    assert w.results[1][1] != first_pid, "the next item ran in the child that replaced the killed one"
    assert w.get_info()["timeouts"] == 1 and mp_supervisor.get_info().mp_pool["timeouts"] == 1


def test_a_process_task_past_its_limit_fails_and_one_that_failed_is_retried(mp_supervisor, tmp_path,
                                                                           logged_errors):
    from mp_workers import fails_first, sleep_then

    task = mp_supervisor.put_task(sleep_then, args=(30, "never"), tt=gworker.TT_MP, timeout=0.3)
    with pytest.raises(RunTimeout):
        task.wait(10)
    assert task.is_failed()
    task = mp_supervisor.put_task(fails_first, args=(str(tmp_path / "tried"),), tt=gworker.TT_MP,
                                  retries=1, retry_delay=0.01)
    assert task.wait(10) == "ok" and task.tries == 2
