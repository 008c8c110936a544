"""Prometheus metrics, in-process (issue 21, part 1): what each metric counts,
the queue burst's sampling, the pool's waits, the processes' figures merged
and folded. Real gunicorn processes with max_requests recycling are in
tests/test_observe_e2e.py."""
import gc
import io
import json
import os
import time

import gevent
import pytest
from gevent.event import Event

from gworker import TASK_LOW, BackgroundEventWorker, BackgroundIntervalWorker, BackgroundQueueWorker

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from gworker.integrations.metrics import (GworkerCollector, mark_process_dead, publish,  # noqa: E402
                                          register)
from gworker.integrations.status import status_app  # noqa: E402

from conftest import wait_until  # noqa: E402
from test_observe import redis_server  # noqa: E402,F401  (a redis-server of this module's own)


def scrape(registry):
    """{(sample name, frozenset(labels)): value} of one scrape."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def bucket(samples, name, le, **labels):
    return value(samples, name + "_bucket", le=le, **labels)


@pytest.fixture
def registry(supervisor):
    reg = CollectorRegistry()
    register(reg, supervisor, directory=None)
    return reg


# -- counters and what each run records ----------------------------------------------------------
def test_runs_and_failures_are_counted_per_worker_and_kind_and_survive_a_stop(supervisor, registry):
    def flaky(item, **kw):
        if item % 4 == 0:
            raise ValueError(item)

    q = BackgroundQueueWorker(func=flaky, name="flaky", supervisor=supervisor, on_error=lambda: None)
    q.start()
    for i in range(40):
        q.put_threadsafe(i)
    wait_until(lambda: q.runs == 40)
    samples = scrape(registry)
    assert value(samples, "gworker_runs_total", worker="flaky", kind="queue") == 40
    assert value(samples, "gworker_failures_total", worker="flaky", kind="queue") == 10
    for i in range(8):
        q.put_threadsafe(i * 4 + 1)  # (none fails)
    wait_until(lambda: q.runs == 48)
    q.stop()  # its last figures are read as it stops: nothing is lost with it
    q = None  # (and garbage collected: the counts stay)
    gc.collect()
    samples = scrape(registry)
    assert value(samples, "gworker_runs_total", worker="flaky", kind="queue") == 48
    assert value(samples, "gworker_failures_total", worker="flaky", kind="queue") == 10
    assert value(samples, "gworker_run_timeouts_total", worker="flaky") == 0


def test_run_durations_fall_into_their_buckets_and_the_last_success_is_the_latest_run_that_returned(
        supervisor, registry):
    outcomes = iter([None, None, ValueError("no")])

    def run(**kw):
        gevent.sleep(0.02)
        outcome = next(outcomes, None)
        if outcome is not None:
            raise outcome

    ev = BackgroundEventWorker(func=run, name="ev", supervisor=supervisor, on_error=lambda: None)
    ev.start()
    ends = []
    for _ in range(3):
        runs, took = ev.runs, ev.last_duration
        ev.trigger_threadsafe()
        wait_until(lambda: ev.runs == runs + 1 and ev.last_duration != took, timeout=3)  # (set as the run ends)
        ends.append(time.time())
    samples = scrape(registry)
    name = "gworker_run_duration_seconds"
    assert value(samples, name + "_count", worker="ev", kind="event") == 3
    assert bucket(samples, name, "0.01", worker="ev", kind="event") == 0
    assert bucket(samples, name, "0.05", worker="ev", kind="event") == 3
    assert 0.06 <= value(samples, name + "_sum", worker="ev", kind="event") < 0.15
    # the third run failed: the last success is the second run's end
    last = value(samples, "gworker_last_success_timestamp_seconds", worker="ev")
    assert ends[0] < last <= ends[1]
    ev.stop()


def test_a_queue_burst_is_sampled_and_spaced_items_are_all_observed(supervisor, registry):
    q = BackgroundQueueWorker(func=lambda item, **kw: None, name="burst", supervisor=supervisor)
    q.start()
    for i in range(20000):
        q.put_threadsafe(i)
    wait_until(lambda: q.runs == 20000, timeout=10)
    samples = scrape(registry)
    observed = value(samples, "gworker_run_duration_seconds_count", worker="burst", kind="queue")
    assert value(samples, "gworker_runs_total", worker="burst", kind="queue") == 20000
    assert 1 <= observed < 20000  # at most one per millisecond of the burst
    assert value(samples, "gworker_last_success_timestamp_seconds", worker="burst") is not None
    for i in range(5):  # items that do not queue up behind each other: each one observed
        q.put_threadsafe(i)
        wait_until(lambda: q.runs == 20001 + i)
        gevent.sleep(0.003)
    samples = scrape(registry)
    assert value(samples, "gworker_run_duration_seconds_count", worker="burst", kind="queue") == observed + 5
    q.stop()


def test_lateness_of_scheduled_runs_and_the_pools_waits(supervisor, registry):
    """A run that waited 0.2 s for a pool slot was that late, and the wait is in the pool's histogram."""
    supervisor.set_thread_pool(pool_size=1, reserve_normal=0, reserve_high=0)
    gate = Event()
    try:
        tick = BackgroundIntervalWorker(func=lambda **kw: None, interval=0.05, name="tick", priority=TASK_LOW,
                                        supervisor=supervisor)
        tick.start()
        wait_until(lambda: tick.runs >= 3)
        hog = supervisor.put_task(lambda **kw: gate.wait(), priority=TASK_LOW)
        wait_until(lambda: supervisor.get_info().thread_pool["running"] == 1 and hog.is_started())
        runs = tick.runs
        gevent.sleep(0.2)
        gate.set()
        wait_until(lambda: tick.runs >= runs + 2)
        tick.trigger_threadsafe()  # a triggered run: not scheduled, no lateness
        wait_until(lambda: tick.runs >= runs + 3)
        tick.stop()
        samples = scrape(registry)
        late = "gworker_run_lateness_seconds"
        scheduled = value(samples, late + "_count", worker="tick")
        assert scheduled is not None and tick.runs - 1 <= scheduled + 1 <= tick.runs
        assert bucket(samples, late, "0.1", worker="tick") == scheduled - 1  # one run came late
        assert value(samples, late + "_sum", worker="tick") >= 0.12
        wait = "gworker_pool_wait_seconds"
        assert value(samples, wait + "_bucket", le="+Inf") == value(samples, wait + "_count") >= tick.runs
        assert value(samples, wait + "_count") - value(samples, wait + "_bucket", le="0.1") >= 1
        assert value(samples, wait + "_sum") >= 0.12
    finally:
        gate.set()
        supervisor.set_thread_pool(pool_size=100, reserve_normal=10, reserve_high=10)


def test_gauges_queue_items_slots_in_use_and_hub_lag(supervisor, registry):
    gate = Event()
    q = BackgroundQueueWorker(func=lambda item, **kw: gate.wait(), name="slow", supervisor=supervisor)
    q.start()
    for i in range(5):
        q.put_threadsafe(i)
    wait_until(lambda: q.get_queue_obj().qsize() == 4)
    scrape(registry)  # (starts the hub probe: its first look comes half a second later)
    wait_until(lambda: value(scrape(registry), "gworker_hub_lag_seconds") is not None, timeout=3)
    samples = scrape(registry)
    assert value(samples, "gworker_queue_items", worker="slow") == 4
    assert value(samples, "gworker_pool_slots_in_use", priority="normal") == 1
    assert value(samples, "gworker_pool_slots_in_use", priority="critical") == 0
    assert 0 <= value(samples, "gworker_hub_lag_seconds") < 1
    gate.set()
    wait_until(lambda: q.runs == 5)
    assert value(scrape(registry), "gworker_queue_items", worker="slow") == 0
    q.stop()


def test_redis_pending_and_lag(supervisor, registry, redis_server):
    from gworker.redis import RedisStreamQueue

    gate = Event()
    stream = "metrics-%d-%d" % (os.getpid(), int(time.time() * 1000))
    rq = RedisStreamQueue(stream, "g", url=redis_server.url, count=2, block_ms=200)
    w = BackgroundQueueWorker(func=lambda item, **kw: gate.wait(), q=rq, name="billing", supervisor=supervisor)
    try:
        for i in range(5):
            rq.put_threadsafe(i)
        w.start()
        wait_until(lambda: w.get_info()["runs"] == 1)
        samples = scrape(registry)
        assert value(samples, "gworker_redis_pending", stream=stream, group="g") == 2  # the batch it fetched
        lag = value(samples, "gworker_redis_lag", stream=stream, group="g")
        assert lag is None or lag == 3  # (Redis >= 7 says how many are not delivered yet)
    finally:
        gate.set()
        w.stop()
        rq.close()


def test_the_status_app_serves_the_exposition(supervisor, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    q = BackgroundQueueWorker(func=lambda item, **kw: None, name="served", supervisor=supervisor)
    q.start()
    q.put_threadsafe(1)
    wait_until(lambda: q.runs == 1)
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    app = status_app(supervisor)
    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "wsgi.input": io.BytesIO()},
                        start_response)).decode()
    assert seen["status"] == "200 OK" and seen["headers"]["Content-Type"].startswith("text/plain")
    assert 'gworker_runs_total{kind="queue",worker="served"} 1.0' in body
    q.stop()


def test_collector_and_publish_refuse_bad_parameters(supervisor, monkeypatch):
    with pytest.raises(TypeError, match="supervisor"):
        GworkerCollector(supervisor=42)
    with pytest.raises(TypeError, match="directory"):
        GworkerCollector(supervisor, directory=42)
    for bad, error in (("1", TypeError), (True, TypeError), (0, ValueError), (-1, ValueError)):
        with pytest.raises(error, match="redis_timeout"):
            GworkerCollector(supervisor, redis_timeout=bad)
        with pytest.raises(error, match="interval"):
            publish(supervisor, directory="/tmp", interval=bad)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(ValueError, match="directory"):
        publish(supervisor)
    with pytest.raises(TypeError, match="directory"):
        publish(supervisor, directory=7)


# -- several processes ---------------------------------------------------------------------------------
def _fake_process(directory, pid, token, runs, durations_le_1ms, queue_items, hub_lag):
    """A file as another process would publish it."""
    counts = [0] * 13
    counts[2] = durations_le_1ms
    state = {"pid": pid, "time": time.time(), "kinds": {"shared": "queue"},
             "counters": {"shared": [runs, 1, 0, 0]}, "durations": {"shared": [counts, durations_le_1ms * 0.001]},
             "lateness": {}, "waits": {"": [[runs] + [0] * 8, 0.0]}, "last_success": {"shared": 1000.0 + pid},
             "queue_items": {"shared": queue_items}, "slots_in_use": {"normal": 1}, "hub_lag": hub_lag}
    with open(os.path.join(directory, "gworker-metrics-%d-%s.json" % (pid, token)), "w") as f:
        json.dump(state, f)


def test_processes_figures_are_summed_and_a_dead_ones_are_folded_into_the_archive(supervisor, tmp_path):
    directory = str(tmp_path)
    stop = publish(supervisor, directory=directory, interval=0.05)
    assert publish(supervisor, directory=directory) is not None  # (once per process)
    q = BackgroundQueueWorker(func=lambda item, **kw: None, name="shared", supervisor=supervisor)
    q.start()
    for i in range(3):
        q.put_threadsafe(i)
    wait_until(lambda: q.runs == 3)
    dead = 2 ** 22 + 4321  # past pid_max's default: no such process
    _fake_process(directory, os.getppid(), "aaaa", runs=10, durations_le_1ms=10, queue_items=7,
                  hub_lag=50.0)  # alive
    _fake_process(directory, dead, "bbbb", runs=100, durations_le_1ms=100, queue_items=50,
                  hub_lag=500.0)  # exited
    reg = CollectorRegistry()
    register(reg, supervisor, directory=directory)

    def figures():
        samples = scrape(reg)
        return (value(samples, "gworker_runs_total", worker="shared", kind="queue"),
                value(samples, "gworker_failures_total", worker="shared", kind="queue"),
                bucket(samples, "gworker_run_duration_seconds", "0.001", worker="shared", kind="queue"),
                value(samples, "gworker_queue_items", worker="shared"),
                value(samples, "gworker_pool_slots_in_use", priority="normal"),
                value(samples, "gworker_hub_lag_seconds"),
                value(samples, "gworker_last_success_timestamp_seconds", worker="shared"))

    runs, failures, fast, items, slots, lag, last = figures()
    assert runs == 3 + 10 + 100 and failures == 0 + 1 + 1  # counters: every process, the exited one too
    assert fast >= 110
    assert items == 0 + 7 and slots == 0 + 1 and lag == 50.0  # gauges: the live processes only
    assert last > 1000.0 + dead  # this process's own last success is the latest
    files = sorted(os.listdir(directory))
    dead_file = next(n for n in files if "-%d-" % dead in n)
    with open(os.path.join(directory, dead_file)) as f:
        dead_state = f.read()
    mark_process_dead(dead, directory)
    assert figures()[:3] == (runs, failures, fast)  # folded: nothing counted twice, nothing lost
    # a reader that listed the file before the fold removed it reads it after the
    # archive: the archive names the folded process, and the file is skipped
    with open(os.path.join(directory, dead_file), "w") as f:
        f.write(dead_state)
    assert figures()[:3] == (runs, failures, fast)
    os.unlink(os.path.join(directory, dead_file))
    after = sorted(os.listdir(directory))
    assert "gworker-metrics-archive.json" in after and not any("-%d-" % dead in n for n in after)
    assert len(after) == len(files)  # one file less for the dead process, one more for the archive
    mark_process_dead(dead, directory)  # (again: nothing left to fold)
    assert figures()[:3] == (runs, failures, fast)
    stop()
    stop()
