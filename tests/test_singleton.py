"""RedisSingleton: interval and cron workers once per cluster, against a real
redis-server (AOF on) of this file's own and real worker processes
(tests/singleton_proc.py), in this run's world."""
import argparse
import io
import json
import logging
import os
import signal
import sys
import time
import uuid

import gevent
import gevent.queue
import gevent.subprocess as gsubprocess
import pytest
from gevent.event import Event

import gworker
from gworker import (BackgroundEventWorker, BackgroundIntervalWorker, BackgroundQueueWorker, BackgroundWorker,
                     background_worker)

from conftest import PATCHED, greenlet_count, wait_until

redis = pytest.importorskip("redis") if os.environ.get("CI") != "true" else __import__("redis")
from gworker.redis import RedisSingleton  # noqa: E402
from test_redis_streams import _free_port, own_server  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@pytest.fixture(scope="module")
def server():
    """A redis-server of this file's own (the restart test kills it)."""
    with own_server() as srv:
        yield srv


@pytest.fixture
def rdb(server):
    client = server.client()
    yield client
    client.connection_pool.disconnect()


@pytest.fixture
def key():
    return "job-" + uuid.uuid4().hex[:8]


class Proc:
    """A worker process of tests/singleton_proc.py."""

    def __init__(self, server, key, out, **options):
        cmd = [sys.executable]
        if PATCHED:
            cmd += ["-m", "gevent.monkey"]
        cmd += [os.path.join(HERE, "singleton_proc.py"), "--url", server.url, "--key", key, "--out", out]
        for name, value in options.items():
            cmd += ["--" + name, str(value)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, HERE]))
        self.out = out
        self.proc = gsubprocess.Popen(cmd, stdout=gsubprocess.PIPE, stderr=gsubprocess.PIPE, env=env, cwd=ROOT,
                                      text=True)
        self.pid = self.proc.pid

    def readline(self, timeout=15):
        with gevent.Timeout(timeout, AssertionError("no output from worker process in %ss" % timeout)):
            line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=5)
            raise AssertionError("worker process ended: %s" % self.proc.stderr.read())
        return line.strip()

    def runs(self):
        """(fence, pid, wall time) of each run this process started."""
        if not os.path.exists(self.out):
            return []
        with open(self.out) as f:
            rows = [line.split() for line in f if line.endswith("\n")]
        return [(int(a), int(b), float(c)) for a, b, c in rows]

    def ends(self):
        """(fence, pid, wall time) of each run this process finished."""
        if not os.path.exists(self.out + ".end"):
            return []
        with open(self.out + ".end") as f:
            rows = [line.split() for line in f if line.endswith("\n")]
        return [(int(a), int(b), float(c)) for a, b, c in rows]

    def trigger(self):
        os.kill(self.pid, signal.SIGUSR1)

    def terminate(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=15)
        self.close()
        return self.proc.returncode

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.close()

    def close(self):
        self.proc.stdout.close()
        self.proc.stderr.close()


def start_procs(server, key, tmp_path, n, **options):
    procs = [Proc(server, key, str(tmp_path / ("p%d.txt" % i)), **options) for i in range(n)]
    for p in procs:
        assert p.readline() == "ready"
    return procs


def all_runs(procs):
    runs = []
    for p in procs:
        runs.extend(p.runs())
    return sorted(runs, key=lambda r: r[2])


def check_once_per_time(runs, min_gap):
    fences = [r[0] for r in runs]
    assert len(set(fences)) == len(fences), "a scheduled time ran twice: %r" % runs
    assert fences == sorted(fences), "fences not increasing with the start times: %r" % runs
    starts = [r[2] for r in runs]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    if gaps and min(gaps) < min_gap:
        i = gaps.index(min(gaps))
        raise AssertionError("two runs %.3f s apart: %r" % (gaps[i], runs[max(0, i - 2):i + 3]))


# -- across processes --------------------------------------------------------------------------------

def test_three_processes_run_each_time_once_and_fail_over(server, key, tmp_path):
    procs = start_procs(server, key, tmp_path, 3, interval=0.2, ttl=1.0, sleep=0.1)
    try:
        t0 = time.time()
        gevent.sleep(6.0)
        t1 = time.time()
        runs = all_runs(procs)
        window = [r for r in runs if t0 <= r[2] < t1]
        assert 27 <= len(window) <= 33, "%d runs in 6 s at interval=0.2" % len(window)
        check_once_per_time(runs, 0.1)
        for fence, pid, start in runs:
            assert pid in {p.pid for p in procs}
            assert fence % 200 == 0  # the epoch's grid, in ms
            assert -0.02 < start - fence / 1000.0 < 0.1  # run at (about) its time
        # SIGKILL the process that holds the times now, mid-run (it sleeps 0.1 s in every run)
        last_pid = runs[-1][1]
        victim = next(p for p in procs if p.pid == last_pid)
        seen = len(victim.runs())
        wait_until(lambda: len(victim.runs()) > seen, timeout=3, step=0.002)
        victim.kill()
        killed_at = time.time()
        assert killed_at - victim.runs()[-1][2] < 0.1  # mid-run (each run takes 0.1 s)
        others = [p for p in procs if p is not victim]
        wait_until(lambda: any(r[2] > killed_at for r in all_runs(others)), timeout=1.2 + 1.0)
        first = min(r[2] for r in all_runs(others) if r[2] > killed_at)
        assert first - killed_at <= 1.0 + 0.2, "no run for %.3f s after the holder died" % (first - killed_at)
        gevent.sleep(0.5)
        check_once_per_time(all_runs(procs), 0.1)  # (the victim's file keeps its runs)
    finally:
        for p in procs:
            if p.proc.poll() is None:
                assert p.terminate() == 0
            elif not p.proc.stdout.closed:
                p.close()


def test_redis_restart_resumes_without_a_burst(server, key, tmp_path):
    procs = start_procs(server, key, tmp_path, 2, interval=0.2, ttl=1.0)
    try:
        wait_until(lambda: len(all_runs(procs)) >= 3, timeout=3)
        server.stop(signal.SIGKILL)
        down_at = time.time()
        gevent.sleep(1.0)
        server.start()
        up_at = time.time()
        down = [r for r in all_runs(procs) if down_at + 0.05 < r[2] < up_at]
        assert down == [], "ran while Redis was down: %r" % down
        wait_until(lambda: any(r[2] > up_at for r in all_runs(procs)), timeout=1.0 + 0.2 + 1.0)
        first = min(r[2] for r in all_runs(procs) if r[2] > up_at)
        assert first - up_at <= 1.0 + 0.2
        gevent.sleep(1.0)
        runs = all_runs(procs)
        check_once_per_time(runs, 0.1)
        after = [r for r in runs if r[2] > up_at]
        # no burst: no time missed while Redis was down is run after it is back
        assert all(r[0] / 1000.0 > up_at - 0.2 - 0.05 for r in after), after
        assert 4 <= len(after) <= (time.time() - up_at) / 0.2 + 1.5, after
    finally:
        if server.proc is None:
            server.start()
        for p in procs:
            assert p.terminate() == 0


def test_cron_singleton_runs_each_second_once(server, key, tmp_path):
    procs = start_procs(server, key, tmp_path, 2, kind="cron", cron="* * * * * *", ttl=1.0)
    try:
        t0 = time.time()
        gevent.sleep(3.0)
        runs = [r for r in all_runs(procs) if r[2] >= t0]
        check_once_per_time(runs, 0.5)
        assert all(r[0] % 1000 == 0 for r in runs)
        assert 2 <= len(runs) <= 4, runs
    finally:
        for p in procs:
            assert p.terminate() == 0


# -- leases: continuous, delay and event workers -----------------------------------------------------

def spans(procs, cut=None):
    """(start, end, pid, fence) of each run, by start; a run with no end
    (its process was killed) ends at ``cut``."""
    out = []
    for p in procs:
        ends = {}
        for fence, pid, t in p.ends():
            ends.setdefault((fence, pid), []).append(t)
        for fence, pid, start in p.runs():
            done = [t for t in ends.get((fence, pid), []) if t >= start]
            end = min(done) if done else cut
            if done:
                ends[(fence, pid)].remove(end)
            out.append((start, end, pid, fence))
    return sorted(out)


def check_one_at_a_time(runs):
    """No two processes' runs overlap, and a later holder's token is larger."""
    for a, b in zip(runs, runs[1:]):
        if a[2] != b[2]:
            assert a[1] is not None and b[0] >= a[1], "runs of two processes overlap: %r %r" % (a, b)
            assert b[3] > a[3], "a later holder with a smaller fence: %r %r" % (a, b)
        else:
            assert b[3] >= a[3]


def stop_all(procs):
    for p in procs:
        if p.proc.poll() is None:
            assert p.terminate() == 0
        elif not p.proc.stdout.closed:
            p.close()


def test_continuous_lease_one_process_at_a_time_and_fail_over(server, key, tmp_path):
    procs = start_procs(server, key, tmp_path, 3, kind="continuous", ttl=1.0, sleep=0.05)
    try:
        wait_until(lambda: len(all_runs(procs)) >= 10, timeout=3)
        (holder,) = {r[1] for r in all_runs(procs)}  # one process runs it, again and again
        first = next(p for p in procs if p.pid == holder)
        others = [p for p in procs if p is not first]
        # stopped (SIGTERM): it gives the lease up, another takes it at its next attempt
        stopped_at = time.time()
        assert first.terminate() == 0
        wait_until(lambda: all_runs(others), timeout=1.0)
        assert min(r[2] for r in all_runs(others)) - stopped_at < 1.0 / 3 + 0.2
        # killed mid-run: another within ttl (plus a renewal's round trip)
        (second,) = {r[1] for r in all_runs(others)}
        victim = next(p for p in others if p.pid == second)
        seen = len(victim.runs())
        wait_until(lambda: len(victim.runs()) > seen, timeout=2, step=0.002)
        victim.kill()
        killed_at = time.time()
        (last,) = [p for p in others if p is not victim]
        wait_until(lambda: any(r[2] > killed_at for r in last.runs()), timeout=1.0 + 1.0)
        took = min(r[2] for r in last.runs() if r[2] > killed_at) - killed_at
        # (not before its lease expired: at most a renewal period, ttl / 3, after its last renewal)
        assert 1.0 - 1.0 / 3 - 0.05 <= took <= 1.0 + 0.2, "the next holder began %.3f s after the kill" % took
        gevent.sleep(0.2)
        check_one_at_a_time(spans(procs, cut=killed_at))
        assert len({r[3] for r in spans(procs, cut=killed_at)}) == 3  # a token per holder
    finally:
        stop_all(procs)


def test_delay_lease_runs_from_the_last_run_anywhere(server, key, tmp_path):
    procs = start_procs(server, key, tmp_path, 3, kind="delay", delay=0.2, ttl=1.0, sleep=0.05)
    try:
        wait_until(lambda: len(all_runs(procs)) >= 4, timeout=3)
        runs = spans(procs)
        holder = runs[0][2]
        victim = next(p for p in procs if p.pid == holder)
        ended = len(victim.ends())
        wait_until(lambda: len(victim.ends()) > ended, timeout=2, step=0.002)
        victim.kill()  # just after a run ended: its record is in Redis
        killed_at = time.time()
        others = [p for p in procs if p is not victim]
        wait_until(lambda: all_runs(others), timeout=1.0 + 1.0)
        runs = spans(procs, cut=killed_at)
        check_one_at_a_time(runs)
        for a, b in zip(runs, runs[1:]):  # delay=0.2 from the end of one run to the start of the next, anywhere
            assert b[0] - a[1] >= 0.2 - 0.01, "%.3f s from a run's end to the next start" % (b[0] - a[1])
        took = min(r[2] for r in all_runs(others)) - killed_at
        assert took <= 1.0 + 0.2, "the next holder began %.3f s after the kill" % took
        assert len({r[2] for r in runs}) == 2
    finally:
        stop_all(procs)


def test_event_lease_triggered_anywhere_runs_once_per_trigger(server, key, tmp_path):
    procs = start_procs(server, key, tmp_path, 3, kind="event", ttl=1.0)
    try:
        for i in range(6):  # each process in turn triggers: one run per trigger, in whichever holds the lease
            procs[i % 3].trigger()
            wait_until(lambda: len(all_runs(procs)) == i + 1, timeout=3, step=0.002)
        gevent.sleep(0.2)
        runs = all_runs(procs)
        assert len(runs) == 6 and len({r[1] for r in runs}) == 1 and len({r[0] for r in runs}) == 1, runs
        victim = next(p for p in procs if p.pid == runs[0][1])
        victim.kill()
        killed_at = time.time()
        others = [p for p in procs if p is not victim]
        others[0].trigger()  # no holder now: counted in Redis, run by the next holder
        wait_until(lambda: len(all_runs(procs)) == 7, timeout=1.0 + 1.0, step=0.002)
        late = all_runs(procs)[-1]
        assert late[1] != victim.pid and late[0] > runs[0][0] and late[2] - killed_at <= 1.0 + 0.2
        gevent.sleep(0.3)
        assert len(all_runs(procs)) == 7
    finally:
        stop_all(procs)


def test_lease_redis_restart_stops_runs_within_ttl_and_resumes(server, key, tmp_path):
    procs = start_procs(server, key, tmp_path, 2, kind="delay", delay=0.1, ttl=1.0)
    try:
        wait_until(lambda: len(all_runs(procs)) >= 3, timeout=3)
        server.stop(signal.SIGKILL)
        down_at = time.time()
        gevent.sleep(1.5)
        starting_at = time.time()
        server.start()
        up_at = time.time()
        late = [r for r in all_runs(procs) if down_at + 1.0 < r[2] < starting_at]
        assert late == [], "started runs longer than ttl after Redis went away: %r" % late
        wait_until(lambda: any(r[2] > up_at for r in all_runs(procs)), timeout=1.0 + 1.0)
        first = min(r[2] for r in all_runs(procs) if r[2] > up_at)
        assert first - up_at <= 1.0 / 3 + 0.3
        gevent.sleep(0.6)
        runs = spans(procs)
        check_one_at_a_time(runs)
        after = [r for r in runs if r[0] > up_at]
        assert all(b[0] - a[1] >= 0.1 - 0.01 for a, b in zip(after, after[1:])), after  # no burst
    finally:
        if server.proc is None:
            server.start()
        stop_all(procs)


# -- in one process --------------------------------------------------------------------------------

def test_fence_info_and_a_competitor(supervisor, server, key, rdb):
    seen = []
    other = []

    def job(_fence, **kw):
        seen.append((_fence, time.time()))

    w = BackgroundIntervalWorker(func=job, interval=0.1, supervisor=supervisor, name="job",
                                 singleton=RedisSingleton(server.url, key=key, ttl=1))
    # a second worker of the same job (as in another process): one of the two runs each time
    rival = BackgroundIntervalWorker(func=lambda _fence, **kw: other.append(_fence), interval=0.1,
                                     supervisor=supervisor, singleton=RedisSingleton(server.url, key=key, ttl=1))
    info = w.get_info()["singleton"]
    assert info == {"key": key, "mode": "claim", "holds": False, "last_run": None, "last_holder": None,
                    "ran_elsewhere": 0, "claims_failed": 0, "round_trips": None}
    started = time.time()
    w.start()
    rival.start()
    wait_until(lambda: len(seen) + len(other) >= 6, timeout=3)
    w.stop()
    rival.stop()
    fences = sorted(f for f, _ in seen) + other
    assert len(set(fences)) == len(fences)
    assert all(f % 100 == 0 for f in fences)
    assert min(fences) / 1000.0 > started  # the first time after start(), not start() itself
    ours = [f for f, _ in seen]
    assert ours == sorted(ours)
    a, b = w.get_info()["singleton"], rival.get_info()["singleton"]
    assert a["ran_elsewhere"] + b["ran_elsewhere"] >= len(fences) - 2
    assert a["ran_elsewhere"] + len(seen) >= 5 and b["ran_elsewhere"] + len(other) >= 5
    last = max(fences) / 1000.0
    for i in (a, b):
        assert i["last_run"] == pytest.approx(last, abs=0.11)
        assert i["claims_failed"] == 0
    assert a["holds"] or b["holds"]  # (the winner of the last time holds it)
    record = rdb.get("gworker:singleton:%s:last" % key).decode()
    assert int(record.split()[0]) == max(fences)
    assert gworker.redis.singleton.holder_id() in record
    assert rdb.pttl("gworker:singleton:%s:%d" % (key, max(fences))) <= 1000


def test_first_claims_race_the_connection_warm_up(supervisor, server, key):
    # Five workers of one job, each on a connection of its own (as in five
    # processes), started together, whose first time comes within the
    # connection's warm-up at start(): still one run per time.
    seen = []
    workers = [BackgroundIntervalWorker(func=lambda _fence, **kw: seen.append(_fence), interval=0.005,
                                        supervisor=supervisor, name="w%d" % i,
                                        singleton=RedisSingleton(server.url, key=key, ttl=1,
                                                                 redis_kwargs={"client_name": "%s-%d" % (key, i)}))
               for i in range(5)]
    for w in workers:
        w.start()
    wait_until(lambda: len(seen) >= 20, timeout=3)
    for w in workers:
        w.stop()
    assert len(set(seen)) == len(seen), sorted(seen)
    assert sum(w.get_info()["singleton"]["ran_elsewhere"] for w in workers) > 0


def test_triggered_run_is_local_with_no_fence_and_plain_keywords_unchanged(supervisor, server, key):
    got = []
    w = BackgroundIntervalWorker(func=lambda **kw: got.append(kw), interval=60, supervisor=supervisor,
                                 singleton=RedisSingleton(server.url, key=key))
    w.start()
    w.trigger_threadsafe()
    wait_until(lambda: got, timeout=2)
    w.stop()
    assert got[0]["_fence"] is None
    plain = []

    def plain_job(_name, o, _worker, _task_id):  # exactly the four keywords
        plain.append(_name)

    p = BackgroundIntervalWorker(func=plain_job, interval=0.05, supervisor=supervisor, name="plain")
    p.start()
    wait_until(lambda: len(plain) >= 2, timeout=2)
    p.stop()
    assert p.get_info()["singleton"] is None


def test_redis_down_no_run_warns_rate_limited_and_does_not_spin(supervisor, caplog):
    url = "redis://127.0.0.1:%d/0" % _free_port()  # nothing listens there
    ran = []
    w = BackgroundIntervalWorker(func=lambda **kw: ran.append(1), interval=0.1, supervisor=supervisor,
                                 singleton=RedisSingleton(url, ttl=1))
    cpu = time.process_time()
    with caplog.at_level(logging.WARNING, logger="gworker"):
        w.start()  # (does not connect: no error here)
        gevent.sleep(1.05)
        w.stop()
    cpu = time.process_time() - cpu
    assert ran == []
    failed = w.get_info()["singleton"]["claims_failed"]
    assert 7 <= failed <= 11  # one attempt per scheduled time
    warnings = [r for r in caplog.records if r.name == "gworker" and "claims failed" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING  # the first, then once per 30 s
    assert url in warnings[0].getMessage()
    assert cpu < 0.3, "%.3f s of CPU in 1 s with Redis down" % cpu


def test_start_stop_restart_leaves_nothing_behind(supervisor, server, key, rdb):
    seen = []
    w = BackgroundIntervalWorker(func=lambda _fence, **kw: seen.append(_fence), interval=0.1,
                                 supervisor=supervisor, singleton=RedisSingleton(server.url, key=key, ttl=1))

    def clients():
        return len(rdb.client_list())

    # the supervisor's runner greenlet (reused from call to call) made first: it is not the worker's
    done = Event()
    supervisor.put_task(lambda **kw: done.set())
    assert done.wait(2)
    before_clients, before_greenlets = clients(), greenlet_count()
    timers = supervisor.get_info().timers
    for _ in range(2):
        n = len(seen)
        w.start()
        wait_until(lambda: len(seen) >= n + 2, timeout=2)
        w.stop()
        stopped_at = len(seen)
        gevent.sleep(0.25)
        assert len(seen) == stopped_at  # stopped: no claim, no run
        assert not w.get_info()["active"] and w.get_info()["next_run"] is None
        wait_until(lambda: clients() == before_clients, timeout=2)  # its connection closed
        wait_until(lambda: greenlet_count() <= before_greenlets, timeout=2)
        assert supervisor.get_info().timers == timers
        assert supervisor.get_info().thread_pool["running"] == 0
    w.restart()
    wait_until(lambda: len(seen) >= stopped_at + 1, timeout=2)
    w.stop()
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


def test_status_endpoint_shows_singleton(supervisor, server, key):
    from gworker.integrations.status import status_app

    seen = []
    w = BackgroundIntervalWorker(func=lambda **kw: seen.append(1), interval=0.1, supervisor=supervisor, name="st",
                                 singleton=RedisSingleton(server.url, key=key, ttl=1))
    w.start()
    wait_until(lambda: seen, timeout=2)
    got = {}
    body = b"".join(status_app(supervisor)({"REQUEST_METHOD": "GET", "PATH_INFO": "", "SCRIPT_NAME": "",
                                            "wsgi.input": io.BytesIO()},
                                           lambda status, headers: got.setdefault("status", status)))
    w.stop()
    assert got["status"] == "200 OK"
    (info,) = [i for i in json.loads(body)["workers"] if i["name"] == "st"]
    single = info["singleton"]
    assert single["key"] == key and single["holds"] is True and single["claims_failed"] == 0
    assert single["last_run"] == pytest.approx(time.time(), abs=0.5)


def test_bad_input(supervisor):
    for ttl in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ttl"):
            RedisSingleton(ttl=ttl)
    for ttl in ("10", True, None):
        with pytest.raises(TypeError, match="ttl"):
            RedisSingleton(ttl=ttl)
    with pytest.raises(TypeError, match="url"):
        RedisSingleton(url=6379)
    with pytest.raises(ValueError, match="url"):
        RedisSingleton(url="http://localhost:6379")
    for bad in ({"key": ""}, {"key": 3}, {"namespace": ""}, {"redis_kwargs": [1]}):
        with pytest.raises(TypeError, match=list(bad)[0]):
            RedisSingleton(**bad)
    s = RedisSingleton()
    with pytest.raises(TypeError, match="a queue already shares its items"):
        BackgroundQueueWorker(func=lambda item, **kw: None, singleton=s, supervisor=supervisor)
    with pytest.raises(TypeError, match="a queue already shares its items"):
        background_worker(q=gevent.queue.Queue(), singleton=s)(lambda item, **kw: None)
    for bad in ("redis://x", object()):
        for make in (BackgroundIntervalWorker, BackgroundWorker, BackgroundEventWorker):
            with pytest.raises(TypeError, match="singleton must be"):
                make(func=print, interval=1, singleton=bad, supervisor=supervisor)
    # a worker claims its times or holds a lease, decided when it is made
    w = BackgroundIntervalWorker(func=print, interval=1, singleton=s, supervisor=supervisor, name="i")
    with pytest.raises(TypeError, match="can not become a delay worker"):
        w.start(_delay=1)
    assert not w.is_active() and w.interval == 1
    d = BackgroundIntervalWorker(func=print, delay=1, singleton=s, supervisor=supervisor, name="d")
    for override in ({"_interval": 1}, {"_cron": "* * * * *"}):
        with pytest.raises(TypeError, match="can not become an interval or cron worker"):
            d.start(**override)
    assert not d.is_active() and d.delay == 1
    assert [x.get_info()["singleton"]["mode"] for x in (
        w, d, BackgroundWorker(func=print, singleton=s, supervisor=supervisor, name="c"),
        BackgroundEventWorker(func=print, singleton=s, supervisor=supervisor, name="e"),
        background_worker(singleton=s, supervisor=supervisor)(print),
        background_worker(delay=2, singleton=s, supervisor=supervisor, name="dd")(print))] == \
        ["claim", "lease", "lease", "lease", "lease", "lease"]
    keyed = RedisSingleton(key="report")
    BackgroundIntervalWorker(func=print, interval=1, singleton=keyed, supervisor=supervisor, name="a")
    with pytest.raises(ValueError, match="key"):
        BackgroundIntervalWorker(func=print, interval=1, singleton=keyed, supervisor=supervisor, name="b")
    # one object serves many workers with key=None, each under its own name
    many = [BackgroundIntervalWorker(func=print, interval=1, singleton=s, supervisor=supervisor, name="w%d" % i)
            for i in range(3)]
    assert [m.get_info()["singleton"]["key"] for m in many] == ["w0", "w1", "w2"]


def test_lease_in_one_process_info_handover_and_nothing_left(supervisor, server, key, rdb):
    ran = {"a": [], "b": []}

    def job(tag):
        def run(_fence, **kw):
            ran[tag].append(_fence)
            gevent.sleep(0.01)
        return run

    # two workers of one job, each on a connection of its own (as in two processes)
    a = BackgroundWorker(func=job("a"), supervisor=supervisor, name="a",
                         singleton=RedisSingleton(server.url, key=key, ttl=1, redis_kwargs={"client_name": "a"}))
    b = BackgroundWorker(func=job("b"), supervisor=supervisor, name="b",
                         singleton=RedisSingleton(server.url, key=key, ttl=1, redis_kwargs={"client_name": "b"}))
    assert a.get_info()["singleton"] == {"key": key, "mode": "lease", "holds": False, "fence": None,
                                         "last_run": None, "last_holder": None, "acquired": 0, "lost": 0,
                                         "renewals_failed": 0, "triggers_failed": 0, "round_trips": None}
    before_clients, before_greenlets = len(rdb.client_list()), greenlet_count()
    a.start()
    wait_until(lambda: len(ran["a"]) >= 3, timeout=2)
    b.start()
    gevent.sleep(0.5)  # (more than a renewal period: b has tried and found a holding it)
    assert ran["b"] == []
    info = a.get_info()["singleton"]
    assert info["holds"] and info["fence"] == ran["a"][0] and info["acquired"] == 1
    assert info["last_run"] == pytest.approx(time.time(), abs=0.2)
    assert not b.get_info()["singleton"]["holds"]
    assert rdb.get("gworker:singleton:%s:lease" % key).decode().endswith(" %d" % info["fence"])
    a.stop()
    wait_until(lambda: ran["b"], timeout=1.0)  # given up at stop: b takes it at its next attempt
    assert ran["b"][0] > ran["a"][-1] and set(ran["a"]) == {ran["a"][0]}
    assert not a.get_info()["singleton"]["holds"]
    b.stop()
    wait_until(lambda: len(rdb.client_list()) == before_clients, timeout=2)  # the connections closed
    wait_until(lambda: greenlet_count() <= before_greenlets, timeout=2)  # renewer, listener: gone
    assert rdb.get("gworker:singleton:%s:lease" % key) is None


def test_lease_redis_down_no_run_warns_and_does_not_spin(supervisor, caplog):
    url = "redis://127.0.0.1:%d/0" % _free_port()  # nothing listens there
    ran = []
    workers = [BackgroundWorker(func=lambda **kw: ran.append(1), supervisor=supervisor, name="c",
                                singleton=RedisSingleton(url, ttl=0.3)),
               BackgroundEventWorker(func=lambda **kw: ran.append(1), supervisor=supervisor, name="e",
                                     singleton=RedisSingleton(url, ttl=0.3)),
               BackgroundIntervalWorker(func=lambda **kw: ran.append(1), delay=0.01, supervisor=supervisor,
                                        name="d", singleton=RedisSingleton(url, ttl=0.3))]
    cpu = time.process_time()
    with caplog.at_level(logging.WARNING, logger="gworker"):
        for w in workers:
            w.start()
        workers[1].trigger_threadsafe()
        gevent.sleep(1.05)
        for w in workers:
            w.stop()
    cpu = time.process_time() - cpu
    assert ran == []
    for w in workers:
        assert 7 <= w.get_info()["singleton"]["renewals_failed"] <= 12  # one attempt per renewal period (0.1 s)
    assert workers[1].get_info()["singleton"]["triggers_failed"] == 1
    warnings = [r for r in caplog.records if r.name == "gworker" and "claims failed" in r.getMessage()]
    assert len(warnings) == 1 and url in warnings[0].getMessage()
    assert cpu < 0.3, "%.3f s of CPU in 1 s with Redis down" % cpu


@pytest.mark.timeout(60)
def test_two_hundred_workers_per_process_take_a_round_trip_per_period_not_per_worker(server):
    """200 singleton interval=1 workers in each of 3 processes (the
    benchmark's own processes, benchmarks/singleton.py): the cluster runs
    each worker once a second, each process sends its claims in a couple of
    round trips per second, and Redis sees one script call per worker per
    process per second. (The hub's lag meanwhile is a benchmark figure.)"""
    sys.path.insert(0, ROOT)
    try:
        from benchmarks import singleton as bench
    finally:
        sys.path.remove(ROOT)
    # (the benchmark's driver blocks, by design: its Redis client is redis-py's
    # own, not gworker's GeventConnection, and no gworker hub runs here)
    r = redis.Redis.from_url(server.url)
    try:
        args = argparse.Namespace(url=server.url, workers=200, procs=3, seconds=3.0, patched=PATCHED)
        got = bench.run_once(r, args, "singleton")
    finally:
        r.connection_pool.disconnect()
    assert 200 * 0.95 <= got["runs_per_s"] <= 200 * 1.05, got  # once per cluster, not 3 times
    assert 600 * 0.9 <= got["script_calls_per_s"] <= 600 * 1.1, got  # a claim per worker per process
    assert got["round_trips_per_s_per_process"] <= 4, got  # pipelined: not 200 a second


def test_once_per_cluster_example(server):
    cmd = [sys.executable] + (["-m", "gevent.monkey"] if PATCHED else [])
    cmd += [os.path.join(ROOT, "examples", "once_per_cluster.py"), "--url", server.url]
    out = gsubprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr
    assert "each time once: True" in out.stdout and "tick: 0 runs" not in out.stdout, out.stdout
    assert "rebuild: 3 triggers from 3 processes, 3 runs, all in one process: True" in out.stdout, out.stdout
    assert "Traceback" not in out.stderr, out.stderr


def test_lease_kept_over_a_restart_from_inside_its_executor(supervisor, server, key, rdb):
    calls = []

    def job(_fence, **kw):
        calls.append(_fence)
        if len(calls) == 3:
            w.restart()  # from inside: the new start begins before this one ends
        gevent.sleep(0.01)

    w = BackgroundWorker(func=job, supervisor=supervisor, name="r",
                         singleton=RedisSingleton(server.url, key=key, ttl=0.3))
    w.start()
    wait_until(lambda: len(calls) >= 4, timeout=2)
    n = len(calls)
    gevent.sleep(1.0)  # more than three ttl: still renewed, still running
    assert len(calls) > n + 20 and w.get_info()["singleton"]["holds"]
    assert len(set(calls)) == 1  # one lease, never lost
    w.stop()
    assert rdb.get("gworker:singleton:%s:lease" % key) is None
