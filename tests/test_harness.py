"""The suite's own guard: a hub blocked inside gworker is noticed, and charged
to the test during which the block happened."""
import time

import gevent
import gevent.event
import gevent.events
import pytest
from gevent.monkey import get_original

from gworker import BackgroundWorker

import conftest

real_sleep = get_original("time", "sleep")


@pytest.mark.blocks_hub
def test_monitor_reports_a_hub_blocked_inside_a_worker(supervisor):
    # An executor that blocks the hub (un-patched sleep) is seen by the monitor thread
    # with gworker's engine on the stack: that is what fails ordinary tests.
    window = []
    done = gevent.event.Event()

    def block(**kw):
        window.append(time.perf_counter())
        real_sleep(0.4)
        window.append(time.perf_counter())
        done.set()
        return False

    started = time.perf_counter()
    w = BackgroundWorker(func=block, supervisor=supervisor)
    w.start()
    assert done.wait(5)
    w.stop()
    # Every report of the block carries the time of the check that found it,
    # inside the block — also one delivered after the block ended (the guard
    # waits for a check still building its report), so a late report is
    # charged to the test that blocked, never to the next one.
    reports = conftest.blocked_reports_between(started, time.perf_counter())
    assert reports, "the monitor thread did not report the blocked hub"
    begin, end = window
    assert all(begin <= r.at <= end + 0.05 for r in reports), [(r.at - begin) for r in reports]
    assert conftest.blocked_reports_between(end + 0.05, time.perf_counter()) == []


@pytest.mark.blocks_hub
def test_a_report_delivered_after_the_block_is_charged_to_the_block(supervisor):
    # gevent builds a report by walking every greenlet; with many of them (or a
    # busy machine) it is delivered after the block ended, when the next test
    # may already run. Make the delivery slow on purpose: the report must still
    # be found by the test that blocked, with a time inside the block.
    window = []
    done = gevent.event.Event()

    def slow_delivery(event):
        if isinstance(event, gevent.events.EventLoopBlocked):
            real_sleep(0.3)  # in the monitor thread, not the hub

    def block(**kw):
        window.append(time.perf_counter())
        real_sleep(0.25)
        window.append(time.perf_counter())
        done.set()
        return False

    gevent.events.subscribers.insert(0, slow_delivery)
    try:
        started = time.perf_counter()
        w = BackgroundWorker(func=block, supervisor=supervisor)
        w.start()
        assert done.wait(5)
        reports = conftest.blocked_reports_between(started, time.perf_counter())
    finally:
        gevent.events.subscribers.remove(slow_delivery)
    w.stop()
    assert reports, "the late report was not waited for"
    begin, end = window
    assert all(begin <= r.at <= end + 0.05 for r in reports), [(r.at - begin) for r in reports]
