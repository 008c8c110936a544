"""Test harness shared by the whole suite.

The suite runs in two worlds:

* ``py`` (tox) — monkey-patched, started as ``python -m gevent.monkey --module pytest``;
* ``plain`` — an un-patched gevent program (``GWORKER_TEST_WORLD=plain``).

In both, gevent's monitor thread watches the hub. A report of a blocked loop whose
stack runs through the ``gworker`` package fails the test during which it happened,
unless the test is marked ``blocks_hub`` (it blocks on purpose).
"""
import os

# The monitor thread reads its settings when the hub is created: set them first.
os.environ.setdefault("GEVENT_MONITOR_THREAD_ENABLE", "1")
os.environ.setdefault("GEVENT_MAX_BLOCKING_TIME", "0.1")

import gc
import time
import gevent
import gevent.event
import gevent.events
import gevent.monkey
import pytest

import gworker

WORLD = os.environ.get("GWORKER_TEST_WORLD", "patched")
PATCHED = gevent.monkey.is_module_patched("socket")
GWORKER_DIR = os.path.dirname(os.path.abspath(gworker.__file__))

if WORLD == "plain" and PATCHED:
    raise RuntimeError("GWORKER_TEST_WORLD=plain, yet the process is monkey-patched")
if WORLD != "plain" and not PATCHED:
    raise RuntimeError(
        "the patched world must be started as `python -m gevent.monkey --module pytest`"
        " (or set GWORKER_TEST_WORLD=plain for the un-patched run)"
    )

_blocked_reports = []


def _on_gevent_event(event):
    if isinstance(event, gevent.events.EventLoopBlocked):
        _blocked_reports.append(event)


gevent.events.subscribers.append(_on_gevent_event)


def _caused_by_gworker(event):
    # Only the blocked stack counts: the "Info:" part that follows lists every
    # greenlet with the stack that spawned it, and greenlets spawned in gworker
    # (a supervisor's, a worker's) are in that tree whoever blocked the hub.
    stack = []
    for line in event.info or ():
        if str(line).strip() == "Info:":
            break
        stack.append(str(line))
    return GWORKER_DIR in "\n".join(stack)


def pytest_report_header(config):
    return "gworker test world: %s (monkey-patched: %s)" % (WORLD, PATCHED)


@pytest.fixture(scope="session", autouse=True)
def _monitor_thread_is_on():
    # gevent may have read its config before this module ran: set it here too.
    gevent.config.monitor_thread = True
    gevent.config.max_blocking_time = float(os.environ["GEVENT_MAX_BLOCKING_TIME"])
    gevent.config.print_blocking_reports = False  # the ones gworker caused fail their test
    _ensure_monitor()
    yield


def _ensure_monitor():
    # The monitor thread ends itself when it finds the hub greenlet not running,
    # which is the case until something first switches into the hub (e.g. a test
    # that blocks in a subprocess first thing). Start the hub, and the monitor
    # again if it ended.
    hub = gevent.get_hub()
    gevent.sleep(0)
    monitor = hub.periodic_monitoring_thread
    if monitor is not None and not monitor.should_run:
        hub.periodic_monitoring_thread = None
    hub.start_periodic_monitoring_thread()
    assert hub.periodic_monitoring_thread is not None, "gevent's monitor thread is off"


@pytest.fixture(autouse=True)
def _no_blocked_hub(request):
    _ensure_monitor()
    del _blocked_reports[:]
    yield
    reports = [e for e in _blocked_reports if _caused_by_gworker(e)]
    del _blocked_reports[:]
    if reports and request.node.get_closest_marker("blocks_hub") is None:
        first = reports[0]
        pytest.fail(
            "gworker blocked the gevent hub for %.3fs:\n%s"
            % (first.blocking_time, "\n".join(map(str, first.info))),
            pytrace=False,
        )


@pytest.fixture
def supervisor():
    """A started TaskSupervisor of the test's own, stopped (and checked) afterwards."""
    sup = gworker.TaskSupervisor()
    sup.start()
    yield sup
    sup.stop(wait=5)
    assert not sup.is_active()
    # A stopped supervisor holds no pool slot: a leak shows here, whichever test
    # made it. (A task withdrawn after its admission, before its start, gives its
    # slot back at the hub's next turn: hence a wait, not a single look.)
    def slots():
        pool = sup.get_info().thread_pool
        return pool["running"], pool["waiting"]

    try:
        wait_until(lambda: slots() == (0, 0), timeout=2)
    except AssertionError:
        raise AssertionError("the stopped supervisor holds pool slots (running, waiting): %r"
                             % (slots(),)) from None


def native_thread(fn, *args):
    """Run ``fn(*args)`` in a real OS thread (not a greenlet, even when patched).

    Returns a handle whose ``join(timeout)`` waits cooperatively and re-raises
    whatever ``fn`` raised; ``ident`` is the OS thread's id.
    """
    start_new_thread = gevent.monkey.get_original("_thread", "start_new_thread")
    get_ident = gevent.monkey.get_original("_thread", "get_ident")
    box = {}

    def body():
        box["ident"] = get_ident()
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # handed back to the test
            box["error"] = exc
        finally:
            box["done"] = True

    class Handle:
        def join(self, timeout=10):
            wait_until(lambda: "done" in box, timeout, step=0.001)
            if "error" in box:
                raise box["error"]
            return box.get("result")

        @property
        def ident(self):
            return box.get("ident")

    start_new_thread(body, ())
    return Handle()


def wait_until(predicate, timeout=5.0, step=0.005):
    """Cooperatively wait until ``predicate()`` is true; fail the test on timeout."""
    with gevent.Timeout(timeout, AssertionError("condition not met in %ss" % timeout)):
        while not predicate():
            gevent.sleep(step)


def greenlet_count():
    gc.collect()
    import greenlet

    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)


class Ticker:
    """A greenlet that sleeps ``period`` again and again and records the gaps
    between its wake-ups: how late the hub let it run. Use as a context manager::

        with Ticker(0.005) as ticker:
            ...  # the work under test
        assert ticker.max_gap < 0.05
    """

    def __init__(self, period):
        self.period = period
        self.gaps = []
        self._stop = gevent.event.Event()
        self._ticked = gevent.event.Event()
        self._glet = None

    def _run(self):
        last = time.monotonic()
        while not self._stop.is_set():
            gevent.sleep(self.period)
            now = time.monotonic()
            self.gaps.append(now - last)
            last = now
            self._ticked.set()

    def __enter__(self):
        self._glet = gevent.spawn(self._run)
        assert self._ticked.wait(2), "the ticker never ticked"  # it runs before the work does
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._glet.join(2)

    @property
    def max_gap(self):
        return max(self.gaps)
