"""The suite's own guard: a hub blocked inside gworker is noticed."""
import time

import gevent
import pytest
from gevent.monkey import get_original

from gworker import BackgroundWorker

import conftest

real_sleep = get_original("time", "sleep")


@pytest.mark.blocks_hub
def test_monitor_reports_a_hub_blocked_inside_a_worker(supervisor):
    # An executor that blocks the hub (un-patched sleep) is seen by the monitor thread
    # with gworker's engine on the stack: that is what fails ordinary tests.
    del conftest._blocked_reports[:]
    w = BackgroundWorker(func=lambda **kw: real_sleep(0.4) or False, supervisor=supervisor)
    w.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(map(conftest._caused_by_gworker, conftest._blocked_reports)):
        gevent.sleep(0.05)
    assert any(map(conftest._caused_by_gworker, conftest._blocked_reports))
