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
import logging
import time
import gevent
import gevent.event
import gevent.events
import gevent.monkey
import pytest

import gworker
import gworker._runners

# Idle runner greenlets of a supervisor that a test left running (the default
# supervisor, above all) would end IDLE_TIMEOUT after they idled: at some
# moment of a later test, whose greenlet counts they would move. In the suite
# they end only as documented otherwise — at once beyond IDLE_MAX, and when
# their supervisor stops; tests/test_runners.py sets its own timeout to test
# the reaping.
gworker._runners.IDLE_TIMEOUT = 3600.0

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

class BlockReport:
    """One report of gevent's monitor thread: the hub did not switch for a whole
    monitoring period. ``at`` is when the monitor made the check that found the
    block (``time.perf_counter()``, in the monitor thread): the blocked code was
    running then. ``info`` is gevent's report (the blocked stack, then "Info:").

    The check covers the time since the previous check, from ``since``.
    ``held`` is how much of it the hub thread was not waiting for a CPU
    (running, or blocked in a system call), less the garbage collector's time
    and the previous check's own, in seconds; ``waited`` is the time the
    operating system had it runnable but gave the CPU to other processes. On a
    loaded machine 12 ms of work can take the whole period.
    Both None where the kernel does not say (no /proc)."""

    __slots__ = ("at", "blocking_time", "info", "since", "held", "waited")

    def __init__(self, at, blocking_time, info, since=None, held=None, waited=None):
        self.at = at
        self.blocking_time = blocking_time
        self.info = info
        self.since = since
        self.held = held
        self.waited = waited


#: Every report since the test session began (the guard picks those of a test by time).
_blocked_reports = []
#: perf_counter() at which the check now running in the monitor thread began, else None
_check_started = [None]
#: [perf_counter(), the hub thread's run-queue wait in s, the check's own duration,
#: the garbage collector's time so far] at the check now running, and at the one
#: before it (None before the first)
_check_window = [None, None]
#: seconds the garbage collector has run so far (any thread), and when the
#: collection now running began
_gc_time = [0.0, None]


def _on_gc(phase, info):
    if phase == "start":
        _gc_time[1] = time.perf_counter()
    elif _gc_time[1] is not None:
        _gc_time[0] += time.perf_counter() - _gc_time[1]
        _gc_time[1] = None


gc.callbacks.append(_on_gc)

# The hub runs in the main thread (both worlds), whose thread id is the pid. Its
# second figure is the time (ns) the thread has waited on a run queue so far.
# Opened once, for the whole session: a file opened at each check would be an
# fd that comes and goes under tests that count the process's fds.
try:
    _HUB_SCHEDSTAT = os.open("/proc/self/task/%d/schedstat" % os.getpid(), os.O_RDONLY)
except OSError:  # no /proc: the guard charges every report, as gevent's would
    _HUB_SCHEDSTAT = None


def _hub_run_queue_wait():
    if _HUB_SCHEDSTAT is None:
        return None
    try:
        return int(os.pread(_HUB_SCHEDSTAT, 128, 0).split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _on_gevent_event(event):
    # Called by the monitor thread, inside the check that found the block.
    if isinstance(event, gevent.events.EventLoopBlocked):
        at = _check_started[0]
        since = held = waited = None
        now, before = _check_window
        if now is not None and before is not None and now[1] is not None and before[1] is not None:
            since = before[0]
            waited = now[1] - before[1]
            # Less the previous check's own time (building a report, the monitor
            # thread holds the GIL for long stretches, and the hub thread waiting
            # for it is neither the code's doing nor on a run queue), and less the
            # garbage collector's (a full collection of the suite's heap can take
            # 100 ms wherever it is triggered).
            held = max(0.0, (now[0] - before[0]) - waited - before[2] - (now[3] - before[3]))
        _blocked_reports.append(BlockReport(time.perf_counter() if at is None else at,
                                            event.blocking_time, event.info, since, held, waited))


gevent.events.subscribers.append(_on_gevent_event)


def _timed_check(monitor):
    # gevent's blocked-loop check, wrapped to note when it began: a report can be
    # delivered after the block ended (building it walks every greenlet), when
    # the next test may be running; its time says which test it belongs to.
    check = monitor.monitor_blocking

    def timed_monitor_blocking(hub):
        _check_started[0] = now = time.perf_counter()
        entry = [now, _hub_run_queue_wait(), 0.0, _gc_time[0]]
        _check_window[:] = [entry, _check_window[0]]
        try:
            return check(hub)
        finally:
            entry[2] = time.perf_counter() - now
            _check_started[0] = None

    return timed_monitor_blocking


def _caused_by_gworker(report):
    # Only the blocked stack counts: the "Info:" part that follows lists every
    # greenlet with the stack that spawned it, and greenlets spawned in gworker
    # (a supervisor's, a worker's) are in that tree whoever blocked the hub.
    stack = []
    for line in report.info or ():
        if str(line).strip() == "Info:":
            break
        stack.append(str(line))
    return GWORKER_DIR in "\n".join(stack)


def _charged(reports):
    """The reports of blocks that are the code's. A block is the reports of
    checks one after another (each window starting where the last ended); it
    is the code's when the hub thread itself — running, or in a blocking call —
    accounted for (nearly) the blocking time, and for more of it than it spent
    waiting for a CPU. One that the machine's load stretched that long (12 ms
    of work while other processes had the CPU) is not."""
    charged = []
    block, held, waited = [], 0.0, 0.0
    for r in sorted(reports, key=lambda r: r.at) + [None]:
        if r is not None and block and r.since is not None and r.since == block[-1].at:
            block.append(r)
        else:
            if block and (held is None or (held >= 0.9 * block[0].blocking_time and held >= waited)):
                charged.extend(block)  # (0.9: a real block's thread may wait a few ms for a CPU)
            if r is None:
                break
            block, held, waited = [r], 0.0, 0.0
        if held is not None and r.held is not None:
            held += r.held
            waited += r.waited
        else:
            held = None
    return charged


def blocked_reports_between(start, end):
    """The reports of blocks caused by gworker that the monitor found between
    ``start`` and ``end`` (``time.perf_counter()``), less those of blocks that
    only the machine's load made that long (see _charged). Waits (cooperatively,
    at most 2 s) for a check that began before ``end`` and is still building its
    report."""
    deadline = time.perf_counter() + 2.0
    while True:
        running = _check_started[0]
        if running is None or running > end or time.perf_counter() > deadline:
            break
        gevent.sleep(0.005)
    return [r for r in _charged(list(_blocked_reports))
            if start <= r.at <= end and _caused_by_gworker(r)]


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
    monitor = hub.start_periodic_monitoring_thread()
    assert monitor is not None, "gevent's monitor thread is off"
    if not getattr(monitor, "gworker_timed", False):
        # Swap gevent's check for the timed one (the public add/remove API; the
        # check keeps gevent's period, max_blocking_time).
        monitor.add_monitoring_function(monitor.monitor_blocking, None)
        monitor.add_monitoring_function(_timed_check(monitor), gevent.config.max_blocking_time)
        monitor.gworker_timed = True


@pytest.fixture(autouse=True)
def _no_blocked_hub(request):
    _ensure_monitor()
    started = time.perf_counter()
    # forget the reports of earlier tests (each was judged in its own teardown)
    _blocked_reports[:] = [r for r in _blocked_reports if r.at >= started]
    yield
    reports = blocked_reports_between(started, time.perf_counter())
    if reports and request.node.get_closest_marker("blocks_hub") is None:
        first = reports[0]
        pytest.fail(
            "gworker blocked the gevent hub for %.3fs (the hub thread ran or waited in a call"
            " for %s s of it):\n%s"
            % (first.blocking_time, "?" if first.held is None else "%.3f" % first.held,
               "\n".join(map(str, first.info))),
            pytrace=False,
        )


class _ErrorRecords(logging.Handler):
    """Keeps every ERROR (or higher) record of the ``gworker`` logger."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record)


_error_records = _ErrorRecords()
logging.getLogger("gworker").addHandler(_error_records)


@pytest.fixture
def logged_errors():
    """The ERROR (or higher) records the ``gworker`` logger emits during the
    test, as a list of ``logging.LogRecord``. A test that expects gworker to
    log an error takes this fixture (and asserts on it); any other test fails
    on such a record (see ``_no_error_logged``)."""
    return _error_records.records


@pytest.fixture(autouse=True)
def _no_error_logged(request):
    # A failure inside an executor is caught and logged by gworker: without this
    # guard a test would only see its consequence later (a timeout).
    del _error_records.records[:]
    yield
    records = list(_error_records.records)
    del _error_records.records[:]
    if records and "logged_errors" not in request.fixturenames:
        pytest.fail(
            "gworker logged %d unexpected ERROR record(s) (a test that expects them takes the"
            " `logged_errors` fixture); the first:\n%s"
            % (len(records), _error_records.format(records[0])),
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


#: The calling OS thread's id (not a greenlet's, even when patched).
os_thread_ident = gevent.monkey.get_original("_thread", "get_ident")


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


@pytest.fixture
def without_gc():
    """The garbage collector off for the test (after one full collection).

    For tests that time the scheduler to tens of microseconds over tens of
    milliseconds: a full collection of the test session's heap takes 30-45 ms
    on this machine and, landing in the window, holds every greenlet — the
    test would then measure the collector, not gworker."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


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
    """A greenlet that sleeps ``period`` again and again and records, between
    two of its wake-ups, the wall time (``gaps``) and the CPU time this thread
    (the hub's) spent (``busy``). Use as a context manager::

        with Ticker(0.005) as ticker:
            ...  # the work under test
        assert ticker.max_busy < 0.05

    ``max_busy`` is how long the hub was held by the work between two turns of
    the ticker: the wall gap less the time the operating system gave the CPU to
    other processes, which on a loaded machine is the larger part of a long gap
    and none of the code's doing. Assert on it that code yields to the hub;
    ``max_gap`` is what a greenlet waited in all.
    """

    def __init__(self, period):
        self.period = period
        self.gaps = []
        self.busy = []
        self._stop = gevent.event.Event()
        self._ticked = gevent.event.Event()
        self._glet = None

    def _run(self):
        last, last_cpu = time.monotonic(), time.thread_time()
        while not self._stop.is_set():
            gevent.sleep(self.period)
            now, cpu = time.monotonic(), time.thread_time()
            self.gaps.append(now - last)
            self.busy.append(cpu - last_cpu)
            last, last_cpu = now, cpu
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

    @property
    def max_busy(self):
        return max(self.busy)
