"""RedisSingleton: interval and cron workers once per cluster, against a real
redis-server (AOF on) of this file's own and real worker processes
(tests/singleton_proc.py), in this run's world."""
import io
import json
import logging
import os
import shutil
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
from test_redis_streams import SERVER_BIN, RedisServer, _free_port  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@pytest.fixture(scope="module")
def server():
    """A redis-server of this file's own (the restart test kills it)."""
    if SERVER_BIN is None:
        message = "redis-server not found (install it, e.g. apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " -- required in CI", pytrace=False)
        pytest.skip(message)
    srv = RedisServer(SERVER_BIN)
    srv.start()
    yield srv
    srv.stop()
    shutil.rmtree(srv.dir, ignore_errors=True)


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
    procs = start_procs(server, key, tmp_path, 2, cron="* * * * * *", ttl=1.0)
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
    assert info == {"key": key, "holds": False, "last_run": None, "last_holder": None, "ran_elsewhere": 0,
                    "claims_failed": 0}
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
    for make in (lambda: BackgroundIntervalWorker(func=print, delay=1, singleton=s, supervisor=supervisor),
                 lambda: BackgroundEventWorker(func=print, singleton=s, supervisor=supervisor),
                 lambda: BackgroundWorker(func=print, singleton=s, supervisor=supervisor),
                 lambda: background_worker(singleton=s)(print),
                 lambda: background_worker(delay=2, singleton=s)(print)):
        with pytest.raises(TypeError, match="need a lease"):
            make()
    with pytest.raises(TypeError, match="singleton must be"):
        BackgroundIntervalWorker(func=print, interval=1, singleton="redis://x", supervisor=supervisor)
    w = BackgroundIntervalWorker(func=print, interval=1, singleton=s, supervisor=supervisor)
    with pytest.raises(TypeError, match="need a lease"):
        w.start(_delay=1)
    assert not w.is_active() and w.interval == 1
    keyed = RedisSingleton(key="report")
    BackgroundIntervalWorker(func=print, interval=1, singleton=keyed, supervisor=supervisor, name="a")
    with pytest.raises(ValueError, match="key"):
        BackgroundIntervalWorker(func=print, interval=1, singleton=keyed, supervisor=supervisor, name="b")
    # one object serves many workers with key=None, each under its own name
    many = [BackgroundIntervalWorker(func=print, interval=1, singleton=s, supervisor=supervisor, name="w%d" % i)
            for i in range(3)]
    assert [m.get_info()["singleton"]["key"] for m in many] == ["w0", "w1", "w2"]
