"""The one rate limit for failure logs: a burst per window, no repeat in a row, the rest counted."""
import logging

import pytest

import gworker._errors as errors
from gworker._errors import FailureLog

from conftest import wait_until


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(errors, "monotonic", lambda: now[0])
    return now


def test_a_burst_per_window_then_the_count(clock):
    log = FailureLog(burst=3, window=10.0)
    admitted = [log.admit(ValueError(i)) for i in range(10)]
    assert admitted == [0, 0, 0] + [None] * 7
    clock[0] += 10.0
    assert log.admit(ValueError("next window")) == 7  # the suppressed ones, reported once
    assert log.admit(ValueError("again")) == 0


def test_the_same_failure_twice_in_a_row_is_suppressed(clock):
    log = FailureLog()
    assert log.admit(KeyError("x")) == 0
    assert log.admit(KeyError("x")) is None
    assert log.admit(KeyError("y")) == 1
    assert log.admit(ValueError("y")) == 0  # another type is another failure
    clock[0] += FailureLog.WINDOW
    assert log.admit(ValueError("y")) == 0  # a new window forgets the last one


def test_repeats_allowed_and_reset(clock):
    log = FailureLog(burst=1, window=30.0, repeats=True)
    assert log.admit() == 0
    assert log.admit() is None
    clock[0] += 29.0
    assert log.admit() is None
    log.reset()
    assert log.admit() == 2


def test_error_logs_the_traceback_and_the_note(clock, logged_errors):
    log = FailureLog(burst=1)
    for i in range(3):
        try:
            raise RuntimeError("boom %d" % i)
        except RuntimeError as exc:
            log.error(exc, "thing %s failed", "t")
    clock[0] += FailureLog.WINDOW
    log.error(RuntimeError("late"), "thing %s failed", "t")
    assert [r.getMessage() for r in logged_errors] == [
        "thing t failed", "thing t failed (2 similar failures not logged)"]
    assert logged_errors[0].exc_info[0] is RuntimeError and str(logged_errors[0].exc_info[1]) == "boom 0"


def test_an_async_job_failing_every_run_is_rate_limited(supervisor, logged_errors):
    supervisor.create_aloop("failing-jobs")
    supervisor.create_async_job_scheduler("failing", aloop="failing-jobs", default=True)
    runs = []

    async def fails():
        runs.append(1)
        raise RuntimeError("same")

    job = supervisor.create_async_job(target=fails, interval=0.001)
    wait_until(lambda: len(runs) >= 50)
    job.cancel()
    assert len(logged_errors) == 1
    assert logged_errors[0].getMessage().startswith("async job %s (" % job.id)
    assert logged_errors[0].levelno == logging.ERROR and logged_errors[0].exc_info[0] is RuntimeError
