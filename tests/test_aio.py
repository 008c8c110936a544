"""aloops: asyncio loops as greenlets of the hub, the running-loop seam, the bridges."""
import asyncio
import gc
import sys
import time

import gevent
import gevent.event
import gevent.monkey
import gevent.subprocess
import greenlet
import psutil
import pytest

from conftest import greenlet_count, native_thread, wait_until
from gworker.aio import (
    SUPERVISOR_ALOOP,
    Aloop,
    AloopNotActive,
    AloopRegistry,
    UnknownAloopError,
    await_greenlet,
    wait_future,
)

running_loop = asyncio.events._get_running_loop


def gworkers_tracer_on_top():
    """Is the thread's trace function one of gworker's (the running-loop seam
    an aloop installs, see gworker.aio)?"""
    return str(getattr(greenlet.gettrace(), "__module__", "")).startswith("gworker")


@pytest.fixture(scope="module", autouse=True)
def _settle_after_collection():
    """Collecting this module imports asyncio and gworker.aio in the main
    greenlet, which can hold the hub past the monitor's threshold; the monitor
    reports that up to one period later. Let it arrive before the first test's
    blocked-hub check starts, so it is not blamed on that test."""
    gevent.sleep(0.25)
    yield


@pytest.fixture
def make_aloop():
    """Start aloops for a test; stop them (and check they ended) afterwards."""
    made = []

    def make(name="t", **kw):
        aloop = Aloop(name, **kw)
        assert aloop.start() is True
        made.append(aloop)
        return aloop

    yield make
    for aloop in made:
        assert aloop.stop(wait=5, cancel_tasks=True) is True


@pytest.fixture
def registry():
    reg = AloopRegistry()
    yield reg
    reg.stop_all(wait=5, cancel_tasks=True)
    assert len(reg) == 0


def open_loops():
    gc.collect()
    return sum(
        1 for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and not o.is_closed()
    )


# -- run / background_task ------------------------------------------------------


def test_run_returns_the_result(make_aloop):
    aloop = make_aloop()

    async def answer(x):
        await asyncio.sleep(0.001)
        return x * 2, asyncio.get_running_loop()

    value, loop = aloop.run(answer(21))
    assert value == 42
    assert loop is aloop.get_loop()


def test_run_raises_the_coroutines_exception(make_aloop):
    aloop = make_aloop()

    async def fail():
        await asyncio.sleep(0)
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        aloop.run(fail())
    assert aloop.run(asyncio.sleep(0, result="still fine")) == "still fine"


def test_run_rejects_a_non_coroutine(make_aloop):
    aloop = make_aloop()
    with pytest.raises(TypeError, match="coro"):
        aloop.run(lambda: 1)


def test_run_timeout_cancels_the_task(make_aloop):
    aloop = make_aloop()
    cancelled = gevent.event.Event()

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        aloop.run(slow(), timeout=0.05)
    assert cancelled.wait(2)


def test_run_from_its_own_loop_raises_instead_of_deadlocking(make_aloop):
    aloop = make_aloop()

    async def inner():
        return 1

    async def outer():
        coro = inner()
        try:
            aloop.run(coro)
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    message = aloop.run(outer(), timeout=2)
    assert "await" in message and "'t'" in message


def test_run_in_the_hub_greenlet_raises(make_aloop):
    aloop = make_aloop()
    box = gevent.event.AsyncResult()

    def in_hub():
        try:
            aloop.run(asyncio.sleep(0))
        except RuntimeError as exc:
            box.set(exc)

    gevent.get_hub().loop.run_callback(in_hub)
    assert "hub" in str(box.get(timeout=2))


def test_create_task_returns_the_asyncio_task(make_aloop):
    aloop = make_aloop()
    started = gevent.event.Event()

    async def work():
        started.set()
        await asyncio.sleep(0.01)
        return "done"

    task = aloop.create_task(work())
    assert isinstance(task, asyncio.Task)
    assert task.get_loop() is aloop.get_loop()
    assert started.wait(2)  # it runs without anyone waiting for it
    assert wait_future(task, timeout=2) == "done"


def test_create_task_in_asyncio_debug_mode(make_aloop):
    # Debug mode insists that tasks are made by the loop's own thread, which
    # after patch_all() means the loop's greenlet.
    aloop = make_aloop()
    aloop.get_loop().set_debug(True)

    async def where():
        await asyncio.sleep(0)
        return asyncio.get_running_loop()

    task = aloop.create_task(where())
    assert isinstance(task, asyncio.Task)
    assert wait_future(task, timeout=2) is aloop.get_loop()
    assert aloop.run(where(), timeout=2) is aloop.get_loop()


def test_inactive_aloop_refuses_work_and_closes_the_coroutine():
    aloop = Aloop("idle")

    async def never():
        return 1

    coro = never()
    with pytest.raises(AloopNotActive, match="idle"):
        aloop.create_task(coro)
    assert coro.cr_frame is None  # closed, so no "never awaited" warning
    assert aloop.get_loop() is None and not aloop.is_active()


def test_restart_makes_a_fresh_loop():
    aloop = Aloop("again")
    assert aloop.start() is True
    assert aloop.start() is False
    first = aloop.get_loop()
    assert aloop.stop() is True
    assert first.is_closed() and not aloop.is_active()
    assert aloop.start() is True
    try:
        assert aloop.get_loop() is not first
        assert aloop.run(asyncio.sleep(0, result=5)) == 5
    finally:
        assert aloop.stop() is True


# -- the running-loop seam ---------------------------------------------------------


def test_two_aloops_interleave_each_seeing_its_own_loop(make_aloop):
    a, b = make_aloop("a"), make_aloop("b")
    trail = []

    async def co(name, aloop):
        mine = aloop.get_loop()
        for i in range(6):
            assert asyncio.get_running_loop() is mine
            if i % 2:
                gevent.sleep(0.003)  # gevent-blocking: the loop's greenlet switches out
            else:
                await asyncio.sleep(0.003)
            assert asyncio.get_running_loop() is mine, (name, i)
            assert asyncio.current_task() is not None
            trail.append(name)
        return name

    ga = gevent.spawn(a.run, co("a", a))
    gb = gevent.spawn(b.run, co("b", b))
    assert gevent.joinall([ga, gb], timeout=5, raise_error=True)
    assert (ga.value, gb.value) == ("a", "b")
    assert trail.count("a") == trail.count("b") == 6
    # interleaved: neither ran all its steps before the other started
    assert trail.index("b") < len(trail) - trail[::-1].index("a") - 1
    assert trail.index("a") < len(trail) - trail[::-1].index("b") - 1


def test_plain_greenlet_sees_no_running_loop(make_aloop):
    aloop = make_aloop()
    inside = gevent.event.Event()
    release = gevent.event.Event()

    async def parked():
        inside.set()
        release.wait(5)  # gevent-blocking, with the loop marked running
        return asyncio.get_running_loop()

    runner = gevent.spawn(aloop.run, parked())
    assert inside.wait(2)
    assert running_loop() is None  # the test's own greenlet

    def plain():
        seen = running_loop()

        async def own():
            await asyncio.sleep(0)
            gevent.sleep(0.001)  # the seam keeps this plain asyncio.run working too
            return asyncio.get_running_loop()

        loop_seen_inside = asyncio.run(own())
        return seen, loop_seen_inside

    seen, inner = gevent.spawn(plain).get(timeout=5)
    assert seen is None
    assert inner is not aloop.get_loop()
    hub_seen = gevent.event.AsyncResult()
    gevent.get_hub().loop.run_callback(lambda: hub_seen.set(running_loop()))
    assert hub_seen.get(timeout=2) is None
    release.set()
    assert runner.get(timeout=5) is aloop.get_loop()


def test_another_greenlet_keeps_ticking(make_aloop):
    aloop = make_aloop()
    ticks = []

    def ticker():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.005)

    tick = gevent.spawn(ticker)
    try:
        gevent.sleep(0.01)
        start = len(ticks)
        gevent.sleep(0.15)  # the loop is idle, waiting in select()
        assert len(ticks) - start >= 10

        async def sleeper():
            await asyncio.sleep(0.15)
            return len(ticks)

        before = len(ticks)
        after = aloop.run(sleeper())
        assert after - before >= 10
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        assert max(gaps) < 0.08
    finally:
        tick.kill()


def test_previous_trace_function_is_still_called():
    # No aloop runs: the seam is not installed, so ours goes on top of this one.
    assert not gworkers_tracer_on_top()
    before = greenlet.gettrace()
    calls = []

    def mine(event, args):
        calls.append(event)
        if before is not None:
            before(event, args)

    greenlet.settrace(mine)
    try:
        aloop = Aloop("traced")
        aloop.start()
        assert greenlet.gettrace() is not mine and gworkers_tracer_on_top()

        async def co():
            gevent.sleep(0.001)
            return asyncio.get_running_loop()

        count = len(calls)
        assert aloop.run(co()) is aloop.get_loop()
        assert len(calls) > count and set(calls) <= {"switch", "throw"}
        assert aloop.stop() is True
        assert greenlet.gettrace() is mine  # ours removed, last in first out
        count = len(calls)
        gevent.sleep(0)
        assert len(calls) > count
    finally:
        greenlet.settrace(before)


def test_seam_stays_when_another_tracer_sits_on_top():
    seen = []
    aloop = Aloop("under")
    aloop.start()
    ours = greenlet.gettrace()

    def later(event, args):
        seen.append(event)
        ours(event, args)

    greenlet.settrace(later)
    try:
        aloop.stop()
        assert greenlet.gettrace() is later  # not removed from under `later`
        # and a new aloop reuses the seam still in the chain: loops stay right
        again = Aloop("again")
        again.start()
        try:
            async def co():
                gevent.sleep(0.001)
                return asyncio.get_running_loop()

            assert again.run(co()) is again.get_loop()
            assert running_loop() is None
        finally:
            again.stop()
    finally:
        greenlet.settrace(ours)
    assert seen


def test_seam_reinstalls_when_dropped():
    aloop = Aloop("dropped")
    aloop.start()
    previous = greenlet.settrace(None)  # someone removes every trace function
    try:
        other = Aloop("other")
        other.start()  # finds the seam gone and installs it again
        try:
            async def co():
                gevent.sleep(0.001)
                return asyncio.get_running_loop()

            assert other.run(co()) is other.get_loop()
            assert aloop.run(co()) is aloop.get_loop()
        finally:
            other.stop()
    finally:
        aloop.stop()
        greenlet.settrace(previous)


def test_import_installs_nothing():
    code = (
        "import greenlet, gworker, gworker.aio, gevent\n"
        "assert greenlet.gettrace() is None, greenlet.gettrace()\n"
        "assert gevent.get_hub.__module__\n"
        "import gevent._hub_local as h\n"
        "assert h.get_hub_if_exists() is None\n"
    )
    # gevent's subprocess: waiting for the child must not block the hub
    proc = gevent.subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


# -- stop ----------------------------------------------------------------------------


def test_stop_waits_for_pending_tasks():
    aloop = Aloop("drain")
    aloop.start()
    finished = []

    async def work(i):
        await asyncio.sleep(0.02)
        gevent.sleep(0.005)
        if i == 0:  # a task made while draining is waited for too
            asyncio.get_running_loop().create_task(work(99))
        finished.append(i)

    tasks = [aloop.create_task(work(i)) for i in range(3)]
    loop = aloop.get_loop()
    assert aloop.stop(wait=True) is True
    assert sorted(finished) == [0, 1, 2, 99]
    assert all(t.done() and not t.cancelled() for t in tasks)
    assert loop.is_closed() and aloop.greenlet is None
    with pytest.raises(AloopNotActive):
        aloop.create_task(asyncio.sleep(0))


def test_stop_cancel_tasks():
    aloop = Aloop("cancel")
    aloop.start()
    started, cleaned = [], []

    async def forever():
        started.append(1)
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append(1)

    tasks = [aloop.create_task(forever()) for _ in range(3)]
    wait_until(lambda: len(started) == 3)  # each is inside its try: the cancel runs its finally
    t0 = time.monotonic()
    assert aloop.stop(wait=True, cancel_tasks=True) is True
    assert time.monotonic() - t0 < 1
    assert all(t.cancelled() for t in tasks) and len(cleaned) == 3


def test_stop_wait_false_and_numeric_wait():
    aloop = Aloop("numeric")
    aloop.start()

    started, cleaned = [], []

    async def slow():
        started.append(1)
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.03)  # slow clean-up after the cancellation
            cleaned.append(1)

    task = aloop.create_task(slow())
    loop = aloop.get_loop()
    wait_until(lambda: started)  # inside its try: the cancellation runs the clean-up
    assert aloop.stop(wait=False) is False  # returns at once, loop still draining
    assert not aloop.is_active()
    t0 = time.monotonic()
    assert aloop.stop(wait=0.1) is False  # timed out: remaining tasks cancelled
    assert 0.05 < time.monotonic() - t0 < 1
    wait_until(lambda: aloop.greenlet is None, 2)
    # the loop closed only after the cancelled task finished its clean-up
    assert loop.is_closed() and task.cancelled() and cleaned == [1]


def test_a_first_stop_whose_wait_runs_out_at_once_still_ends_the_loop():
    # stop(wait=0.0) queues the drain and, its wait over at once, the cancelling
    # of every task, in the same turn of the loop: the drain, not begun yet, is
    # not one of them (cancelled before its first step, it never stopped the loop).
    aloop = Aloop("no-wait")
    aloop.start()
    started = []

    async def long():
        started.append(1)
        await asyncio.sleep(30)

    task = aloop.create_task(long())
    loop = aloop.get_loop()
    wait_until(lambda: started)
    assert aloop.stop(wait=0.0) is False
    wait_until(lambda: aloop.greenlet is None, 5)
    assert loop.is_closed() and task.cancelled()


def test_stop_from_inside_its_own_coroutine_does_not_deadlock():
    aloop = Aloop("self-stop")
    aloop.start()
    loop = aloop.get_loop()

    async def stopper():
        return aloop.stop(wait=True)

    task = aloop.create_task(stopper())
    wait_until(lambda: loop.is_closed(), 3)
    assert task.result() is False


def test_killed_loop_greenlet_cleans_up():
    proc = psutil.Process()
    tracer = greenlet.gettrace()  # (the seam is installed while an aloop runs)
    aloop = Aloop("killed")
    aloop.start()
    aloop.stop()  # the hub, the seam and friends exist now
    fds = proc.num_fds()
    for settle in (None, 0.01):  # killed before its greenlet ever ran; killed while idle
        aloop.start()
        loop = aloop.get_loop()
        if settle is not None:
            gevent.sleep(settle)
        aloop.greenlet.kill()
        wait_until(lambda: aloop.greenlet is None, 2)
        assert loop.is_closed() and not aloop.is_active()
        assert proc.num_fds() == fds
        assert greenlet.gettrace() is tracer  # nothing of its own left installed
    assert aloop.start() is True
    assert aloop.run(asyncio.sleep(0, result=3)) == 3
    assert aloop.stop() is True


def test_create_stop_cycles_leak_nothing():
    proc = psutil.Process()

    async def touch():
        await asyncio.sleep(0)
        return 1

    def cycle():
        aloop = Aloop("cycle")
        aloop.start()
        assert aloop.run(touch()) == 1
        assert aloop.stop() is True

    def measure():
        # Each gc scan holds the hub for tens of ms: yield between them so the
        # test's own counting is not reported as a blocked hub.
        counts = []
        for count in (proc.num_fds, greenlet_count, open_loops):
            counts.append(count())
            gevent.sleep(0)
        return counts

    tracer = greenlet.gettrace()
    for _ in range(5):  # warm-up: lazily made objects
        cycle()
    fds, glets, loops = measure()
    for _ in range(100):
        cycle()
    fds_after, glets_after, loops_after = measure()
    assert fds_after <= fds
    assert glets_after <= glets
    assert loops_after <= loops
    assert greenlet.gettrace() is tracer  # nothing of theirs left installed


# -- foreign OS threads ------------------------------------------------------------------


def test_run_and_create_task_from_a_native_thread(make_aloop):
    aloop = make_aloop()
    os_ident = gevent.monkey.get_original("_thread", "get_ident")
    hub_ident = os_ident()

    async def where(x):
        await asyncio.sleep(0.01)
        return x, os_ident(), asyncio.get_running_loop()

    def from_thread():
        result = aloop.run(where(1))
        with pytest.raises(ValueError):
            aloop.run(_raise(ValueError("in thread")))
        task = aloop.create_task(where(2))
        other = aloop.create_task(where(3))
        waited = wait_future(other, timeout=5)
        # everything went through the aloop's hub: no hub was made in this thread
        from gevent._hub_local import get_hub_if_exists

        assert get_hub_if_exists() is None
        return result, task, waited, os_ident()

    handle = native_thread(from_thread)
    (value, ran_in, loop), task, other, thread_ident = handle.join(10)
    assert value == 1 and loop is aloop.get_loop()
    assert ran_in == hub_ident != thread_ident
    assert wait_future(task, timeout=2)[0] == 2
    assert other[0] == 3


def test_stop_from_a_native_thread():
    aloop = Aloop("remote")
    aloop.start()
    assert native_thread(aloop.stop, True).join(10) is True
    assert not aloop.is_active() and aloop.greenlet is None


async def _raise(exc):
    raise exc


# -- bridges ---------------------------------------------------------------------------------


def test_await_greenlet(make_aloop):
    aloop = make_aloop()
    ticks = []

    async def count_ticks():
        while True:
            ticks.append(1)
            await asyncio.sleep(0.005)

    ok = gevent.spawn(lambda: (gevent.sleep(0.05), "value")[1])
    bad = gevent.spawn(lambda: (gevent.sleep(0.01), 1 / 0))

    async def waiter():
        ticker = asyncio.get_running_loop().create_task(count_ticks())
        try:
            value = await await_greenlet(ok)
            with pytest.raises(ZeroDivisionError):
                await await_greenlet(bad)
            again = await await_greenlet(ok)  # already dead: at once
            return value, again
        finally:
            ticker.cancel()

    assert aloop.run(waiter(), timeout=5) == ("value", "value")
    assert len(ticks) >= 4  # the loop ran other tasks while awaiting


def test_await_greenlet_cancel_leaves_the_greenlet(make_aloop):
    aloop = make_aloop()
    glet = gevent.spawn(gevent.sleep, 0.1)

    async def co():
        return await asyncio.wait_for(await_greenlet(glet), 0.01)

    with pytest.raises(asyncio.TimeoutError):
        aloop.run(co())
    assert not glet.dead
    glet.join(2)
    assert glet.successful()

    async def bad():
        return await await_greenlet(object())

    with pytest.raises(TypeError, match="glet"):
        aloop.run(bad())


def test_wait_future(make_aloop):
    aloop = make_aloop()
    loop = aloop.get_loop()
    fut = aloop.run(_make_future())
    with pytest.raises(TimeoutError):
        wait_future(fut, timeout=0.02)
    assert not fut.done()  # not cancelled by the timeout
    gevent.spawn_later(0.02, loop.call_soon_threadsafe, fut.set_result, "late")
    assert wait_future(fut, timeout=2) == "late"
    assert wait_future(fut) == "late"  # done: returns at once

    failed = aloop.run(_make_future())
    loop.call_soon_threadsafe(failed.set_exception, OSError("nope"))
    with pytest.raises(OSError, match="nope"):
        wait_future(failed, timeout=2)

    with pytest.raises(TypeError, match="fut"):
        wait_future("not a future")
    foreign = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="fut"):
            wait_future(foreign.create_future())
    finally:
        foreign.close()


async def _make_future():
    return asyncio.get_running_loop().create_future()


# -- the registry ----------------------------------------------------------------------------------


def test_registry_create_get_default(registry):
    a = registry.create("a")
    b = registry.create("b", daemon=True, start=False, default=True)
    assert a.is_active() and not b.is_active() and b.daemon
    assert registry.get("a") is a and registry.get() is b and registry.default is b
    assert sorted(registry.names()) == ["a", "b"] and set(registry) == {a, b}
    with pytest.raises(ValueError, match="'a'"):
        registry.create("a")
    with pytest.raises(ValueError, match="reserved"):
        registry.create(SUPERVISOR_ALOOP)
    with pytest.raises(UnknownAloopError, match="'nope'") as info:
        registry.get("nope")
    assert isinstance(info.value, KeyError)
    assert registry.start("b") is True and b.is_active()
    registry.set_default("a")
    assert registry.get() is a
    with pytest.raises(TypeError, match="aloop"):
        registry.set_default(42)
    assert registry.stop("a") is True
    assert "a" not in registry and registry.get() is None and not a.is_active()
    outsider = Aloop("outsider")
    registry.set_default(outsider)  # adopted under its name
    assert registry.get("outsider") is outsider
    with pytest.raises(ValueError, match="'outsider'"):
        registry.set_default(Aloop("outsider"))


def test_registry_resolve(registry):
    a = registry.create("a")
    assert registry.resolve(a) is a
    assert registry.resolve("a") is a
    assert registry.resolve(a.get_loop()) is a
    with pytest.raises(ValueError, match="loop"):
        registry.resolve("missing")
    foreign = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="loop"):
            registry.resolve(foreign)
    finally:
        foreign.close()
    with pytest.raises(TypeError, match="loop"):
        registry.resolve(3.5)


def test_registry_for_workers(registry):
    private = registry.for_workers()
    assert private.name == SUPERVISOR_ALOOP and private.daemon and private.is_active()
    assert registry.for_workers() is private  # kept
    assert registry.resolve(None) is private
    chosen = registry.create("chosen", default=True)
    assert registry.for_workers() is chosen


def test_registry_stop_all(registry):
    normal = registry.create("normal")
    daemon = registry.create("daemon", daemon=True)
    started, finished = [], []

    async def work(tag):
        started.append(tag)
        await asyncio.sleep(0.05)
        finished.append(tag)

    normal.create_task(work("normal"))
    daemon_task = daemon.create_task(work("daemon"))
    wait_until(lambda: len(started) == 2)  # both running when stop_all begins
    registry.stop_all(wait=True)
    assert finished == ["normal"]  # waited for; the daemon aloop's task cancelled
    assert daemon_task.cancelled()
    assert not normal.is_active() and not daemon.is_active() and registry.names() == []


def test_registry_stop_and_start_unknown(registry):
    with pytest.raises(UnknownAloopError, match="'x'"):
        registry.stop("x")
    with pytest.raises(UnknownAloopError, match="'x'"):
        registry.start("x")


def test_stop_callbacks_run_when_a_stop_begins_and_can_be_removed(make_aloop):
    aloop = make_aloop("callbacks")
    seen = []
    kept, removed = (lambda: seen.append("kept")), (lambda: seen.append("removed"))
    aloop.add_stop_callback(kept)
    aloop.add_stop_callback(removed)
    aloop.remove_stop_callback(removed)
    aloop.remove_stop_callback(removed)  # unknown by now: nothing happens
    assert aloop.stop(wait=5) is True
    assert seen == ["kept"]
