"""RedisStreamQueue against a real redis-server on 127.0.0.1, in this run's world.

The session fixture starts its own redis-server on a free loopback port
(``appendonly yes``, ``appendfsync always``, in a temporary directory), so that
what it acknowledged survives the restart test. Without the binary the file is
skipped — except in CI (``CI=true``), where that is a failure.
"""
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid

import gevent
import gevent.subprocess as gsubprocess
import pytest
from gevent.event import Event

import gworker
from gworker import BackgroundQueueWorker

from conftest import PATCHED, Ticker, native_thread, wait_until

redis = pytest.importorskip("redis") if os.environ.get("CI") != "true" else __import__("redis")
from gworker.redis import RedisStreamQueue  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SERVER_BIN = os.environ.get("GWORKER_REDIS_SERVER") or shutil.which("redis-server")


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RedisServer:
    """A redis-server process of the tests' own; stop() and start() keep its data."""

    def __init__(self, binary):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="gworker-redis-")
        self.port = _free_port()
        self.url = "redis://127.0.0.1:%d/0" % self.port
        self.proc = None

    def start(self, timeout=10):
        self.proc = gsubprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--protected-mode", "no", "--loglevel", "warning"],
            stdout=open(os.path.join(self.dir, "server.log"), "ab"), stderr=gsubprocess.STDOUT,
        )
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start; see %s/server.log" % self.dir)
                gevent.sleep(0.02)
        client.connection_pool.disconnect()

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self):
        from gworker.redis import GeventConnection

        pool = redis.ConnectionPool.from_url(self.url, connection_class=GeventConnection,
                                             socket_timeout=10)
        return redis.Redis(connection_pool=pool)


@contextlib.contextmanager
def own_server():
    """A redis-server of the caller's own, started, then stopped and its
    directory removed; without redis-server the test skips (fails in CI)."""
    if SERVER_BIN is None:
        message = "redis-server not found (install it, e.g. apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " -- required in CI", pytrace=False)
        pytest.skip(message)
    server = RedisServer(SERVER_BIN)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    with own_server() as server:
        yield server


@pytest.fixture
def rdb(redis_server):
    client = redis_server.client()
    yield client
    client.connection_pool.disconnect()


@pytest.fixture
def names():
    token = uuid.uuid4().hex[:8]
    return "s-" + token, "g-" + token


@pytest.fixture
def queues():
    made = []
    yield made
    for q in made:
        q.close()


def make_queue(redis_server, names, queues, **kw):
    stream, group = names
    kw.setdefault("claim_idle", 1.0)
    kw.setdefault("block_ms", 500)
    kw.setdefault("backoff_max", 0.5)
    q = RedisStreamQueue(stream, group, url=redis_server.url, **kw)
    queues.append(q)
    return q


# -- consumer processes ------------------------------------------------------------------------------

class Consumer:
    def __init__(self, redis_server, names, out, **options):
        stream, group = names
        cmd = [sys.executable]
        if PATCHED:
            cmd += ["-m", "gevent.monkey"]
        cmd += [os.path.join(HERE, "redis_consumer.py"), "--url", redis_server.url,
                "--stream", stream, "--group", group, "--out", out]
        for key, value in options.items():
            cmd += ["--" + key.replace("_", "-"), str(value)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, HERE]))
        self.out = out
        self.proc = gsubprocess.Popen(cmd, stdout=gsubprocess.PIPE, stderr=gsubprocess.PIPE,
                                      env=env, cwd=ROOT, text=True)

    def readline(self, timeout=15):
        with gevent.Timeout(timeout, AssertionError("no output from consumer in %ss" % timeout)):
            line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=5)
            raise AssertionError("consumer ended: %s" % self.proc.stderr.read())
        return line.strip()

    def processed(self):
        if not os.path.exists(self.out):
            return []
        with open(self.out) as f:
            return [line.strip() for line in f if line.endswith("\n")]

    def terminate(self, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode, err

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()


def start_consumers(redis_server, names, tmp_path, n=3, **options):
    consumers = [Consumer(redis_server, names, str(tmp_path / ("c%d.txt" % i)), **options)
                 for i in range(n)]
    for c in consumers:
        assert c.readline().startswith("ready")
    return consumers


def union_done(consumers):
    seen = []
    for c in consumers:
        seen.extend(c.processed())
    return seen


# -- in one process --------------------------------------------------------------------------------------

def test_order_within_one_consumer_and_acks(supervisor, redis_server, names, queues, rdb):
    q = make_queue(redis_server, names, queues, count=7)
    got = []
    w = BackgroundQueueWorker(func=lambda item, **kw: got.append(item), q=q, supervisor=supervisor)
    assert w.get_queue_obj() is q
    w.start()
    items = [{"n": i, "text": "item %d" % i} for i in range(200)]
    for item in items[:50]:
        w.put_threadsafe(item)            # through the worker
    q.put_many(items[50:])                # pipelined
    wait_until(lambda: len(got) == 200, timeout=10)
    w.stop()
    assert got == items
    assert q.pending() == 0, "every entry acknowledged"
    assert rdb.xlen(q.dead_letter) == 0
    assert q.acked == 200 and q.delivered == 200


def test_put_many_is_read_as_one_batch(supervisor, redis_server, names, queues):
    # Each put_many chunk is one transaction: a consumer waiting in XREADGROUP
    # is served after the whole chunk, so its first call finds the rest fetched.
    q = make_queue(redis_server, names, queues, count=100)
    left_at_call = []
    w = BackgroundQueueWorker(func=lambda item, **kw: left_at_call.append(q.qsize()), q=q,
                              supervisor=supervisor)
    w.start()
    q.put_many(range(20))
    wait_until(lambda: len(left_at_call) == 20, timeout=10)
    w.stop()
    assert left_at_call == list(range(19, -1, -1))


def test_put_many_lets_the_hub_run_between_chunks(redis_server, names, queues):
    # Packing is ~20 us of CPU per entry: 3,000 in one go would hold the hub
    # for 60 ms and more; chunks of 100 with the hub running between them ~2 ms.
    q = make_queue(redis_server, names, queues)
    with Ticker(0.001) as ticker:
        ids = q.put_many(range(3000))
    assert len(set(ids)) == 3000
    assert ticker.max_busy < 0.02, "the hub was held for %.1f ms" % (ticker.max_busy * 1000)


@pytest.mark.parametrize("chunk", [0, -1, 1.5, "10", True])
def test_put_many_rejects_a_bad_chunk(redis_server, names, queues, chunk):
    q = make_queue(redis_server, names, queues)
    with pytest.raises(ValueError, match="chunk"):
        q.put_many([1, 2], chunk=chunk)


def test_the_former_module_name_still_imports_the_same_names():
    import gworker.redis
    import gworker.redis_streams

    assert set(gworker.redis_streams.__all__) == set(gworker.redis.__all__) - {"RedisSingleton"}
    for name in gworker.redis_streams.__all__:
        assert getattr(gworker.redis_streams, name) is getattr(gworker.redis, name)


def test_put_threadsafe_from_a_native_thread(supervisor, redis_server, names, queues):
    q = make_queue(redis_server, names, queues)
    got = []
    w = BackgroundQueueWorker(func=lambda item, **kw: got.append(item), q=q, supervisor=supervisor)
    w.start()

    def feed():
        # a real OS thread: its connection is a blocking one of its own
        return [q.put_threadsafe(["t", i]) for i in range(50)]

    ids = native_thread(feed).join(15)
    assert len(set(ids)) == 50
    wait_until(lambda: len(got) == 50, timeout=10)
    w.stop()
    assert got == [["t", i] for i in range(50)]


def test_stop_acks_the_current_item_and_hands_back_the_rest(supervisor, redis_server, names, queues, rdb):
    # B allows one delivery only: entries A handed back must not count as delivered.
    a = make_queue(redis_server, names, queues, count=10)
    entered, gate = Event(), Event()
    seen_a = []

    def run_a(item, **kw):
        seen_a.append(item)
        entered.set()
        gate.wait()

    wa = BackgroundQueueWorker(func=run_a, q=a, supervisor=supervisor)
    wa.start()
    a.put_many(range(10))
    assert entered.wait(10)
    stopper = gevent.spawn(wa.stop)
    gevent.sleep(0.05)
    assert not stopper.ready(), "stop() waits for the item in progress"
    gate.set()
    stopper.get(timeout=10)
    assert seen_a == [0]
    assert a.acked == 1
    assert rdb.xpending(a.stream, a.group)["pending"] == 9, "the other nine are handed back, pending"

    b = make_queue(redis_server, names, queues, max_deliveries=1)
    seen_b = []
    wb = BackgroundQueueWorker(func=lambda item, **kw: seen_b.append(item), q=b, supervisor=supervisor)
    started = time.monotonic()
    wb.start()
    wait_until(lambda: len(seen_b) == 9, timeout=5)
    assert time.monotonic() - started < 1.0, "handed-back entries are claimable at once"
    wb.stop()
    assert seen_b == list(range(1, 10))
    assert b.pending() == 0
    assert rdb.xlen(b.dead_letter) == 0


def test_worker_set_shutdown_hands_a_redis_queue_back_to_its_group(supervisor, redis_server, names,
                                                                   queues, rdb):
    # A broker's queue keeps its items: shutdown must not try to empty it (the
    # protocol has no get_nowait) nor report its entries as lost — they are
    # handed back to the group, and another consumer runs every one of them.
    from gworker.integrations import WorkerSet

    a = make_queue(redis_server, names, queues, count=10, claim_idle=0.5)
    entered, reported = Event(), []

    def stuck(item, **kw):
        entered.set()
        Event().wait()  # until interrupted at the deadline

    wa = BackgroundQueueWorker(func=stuck, q=a, supervisor=supervisor)
    workers = WorkerSet(supervisor, on_undrained=lambda w, items: reported.extend(items))
    workers.add(wa)
    workers.start()
    a.put_many(range(10))
    assert entered.wait(10)
    report = workers.shutdown(timeout=0.2)
    assert report.undrained == {} and reported == []
    assert report.interrupted == {wa.name: 0} and wa.name in report.unfinished
    assert rdb.xpending(a.stream, a.group)["pending"] == 10, "all ten still pending in the group"

    sup2 = gworker.TaskSupervisor()
    sup2.start()
    try:
        b = make_queue(redis_server, names, queues, claim_idle=0.5)
        seen = []
        wb = BackgroundQueueWorker(func=lambda item, **kw: seen.append(item), q=b, supervisor=sup2)
        wb.start()
        wait_until(lambda: len(seen) == 10, timeout=10)  # item 0 after claim_idle
        wb.stop()
    finally:
        sup2.stop(wait=5)
    assert sorted(seen) == list(range(10)) and seen[-1] == 0
    assert b.pending() == 0


def test_raises_twice_then_succeeds(supervisor, redis_server, names, queues, rdb):
    q = make_queue(redis_server, names, queues, claim_idle=0.5, max_deliveries=3, retry_delay=0.05)
    attempts = {}
    done = []

    def run(item, **kw):
        attempts[item] = attempts.get(item, 0) + 1
        if item == "flaky" and attempts[item] <= 2:
            raise RuntimeError("flaky attempt %d" % attempts[item])
        done.append(item)

    w = BackgroundQueueWorker(func=run, q=q, supervisor=supervisor, on_error=lambda: None)
    w.start()
    q.put_many(["a", "flaky", "b"])
    wait_until(lambda: "flaky" in done, timeout=8)
    w.stop()
    assert attempts == {"a": 1, "flaky": 3, "b": 1}
    assert sorted(done) == ["a", "b", "flaky"]
    assert q.pending() == 0, "acknowledged after its success"
    assert rdb.xlen(q.dead_letter) == 0, "not dead-lettered"
    assert rdb.hlen(q.errors_key) == 0, "its error record is gone"


def test_always_raising_is_dead_lettered_after_max_deliveries(supervisor, redis_server, names, queues, rdb):
    q = make_queue(redis_server, names, queues, claim_idle=0.4, max_deliveries=3, retry_delay=0.05)
    attempts = []
    errors = []

    def run(item, **kw):
        if item == "poison":
            attempts.append(item)
            raise ValueError("cannot handle poison (attempt %d)" % len(attempts))

    w = BackgroundQueueWorker(func=run, q=q, supervisor=supervisor,
                              on_error=lambda: errors.append(sys.exc_info()[1]))
    w.start()
    q.put_many(["ok", "poison", "ok2"])
    wait_until(lambda: rdb.xlen(q.dead_letter) == 1, timeout=8)
    gevent.sleep(0.6)  # one more claim interval: it must not run again
    w.stop()
    assert len(attempts) == 3 and len(errors) == 3
    [(dead_id, dead)] = rdb.xrange(q.dead_letter)
    assert dead[b"d"] == b'"poison"'
    assert dead[b"error"] == b"ValueError: cannot handle poison (attempt 3)"
    assert dead[b"deliveries"] == b"3"
    assert dead[b"source_stream"] == q.stream.encode() and dead[b"group"] == q.group.encode()
    assert q.pending() == 0, "acknowledged once dead-lettered"
    assert rdb.hlen(q.errors_key) == 0
    assert q.dead_lettered == 1


# -- retries of an entry ------------------------------------------------------------------------------

#: What a loaded 2-core machine may add to a wait (the hub's turn, two round trips).
LATE = 0.05


def failing(calls, fails=lambda item, n: True, exc=RuntimeError):
    """An executor that records (item, monotonic time) in ``calls`` and raises
    ``exc`` on the n-th call for an item (1 for the first) when ``fails(item, n)``."""
    def run(item, **kw):
        calls.append((item, time.monotonic()))
        n = sum(1 for i, _ in calls if i == item)
        if fails(item, n):
            raise exc("%s failed (call %d)" % (item, n))
    return run


def times_of(calls, item):
    return [t for i, t in calls if i == item]


def blocked_readers(rdb):
    """The CLIENT IDs of the connections waiting in XREADGROUP BLOCK now."""
    return [c["id"] for c in rdb.client_list(_type="normal")
            if c["cmd"] == "xreadgroup" and "b" in c["flags"]]


def test_a_failing_entry_is_retried_with_backoff_then_dead_lettered(supervisor, redis_server, names,
                                                                    queues, rdb):
    # claim_idle is long: the waits are the retry policy's, not the claim scans'
    q = make_queue(redis_server, names, queues, claim_idle=5, max_deliveries=3,
                   retry_delay=0.1, retry_backoff=2)
    calls = []
    w = BackgroundQueueWorker(func=failing(calls), q=q, supervisor=supervisor, on_error=lambda: None)
    w.start()
    q.put_threadsafe("poison")
    wait_until(lambda: q.dead_lettered == 1, timeout=5)
    w.stop()
    at = times_of(calls, "poison")
    assert len(at) == 3, "three deliveries, then the dead-letter stream"
    gaps = [b - a for a, b in zip(at, at[1:])]
    for gap, base in zip(gaps, (0.1, 0.2)):
        assert base <= gap <= base * 1.1 + LATE, "waits %s, expected about 0.1 then 0.2" % gaps
    [(_id, dead)] = rdb.xrange(q.dead_letter)
    assert dead[b"d"] == b'"poison"'
    assert dead[b"error"] == b"RuntimeError: poison failed (call 3)"
    assert dead[b"deliveries"] == b"3"
    assert (q.failed, q.retried, q.dead_lettered, q.waiting) == (3, 2, 1, 0)
    assert q.pending() == 0 and rdb.hlen(q.errors_key) == 0


def test_new_entries_run_while_a_failed_one_waits(supervisor, redis_server, names, queues, rdb):
    q = make_queue(redis_server, names, queues, claim_idle=5, retry_delay=0.5)
    calls = []
    w = BackgroundQueueWorker(func=failing(calls, lambda item, n: item == "flaky" and n == 1),
                              q=q, supervisor=supervisor, on_error=lambda: None)
    w.start()
    q.put_many(["flaky", "a", "b"])
    wait_until(lambda: q.waiting == 1 and len(calls) == 3, timeout=5)
    q.put_threadsafe("c")  # while the consumer waits for entries, one of its own waiting
    wait_until(lambda: len(times_of(calls, "flaky")) == 2, timeout=5)
    w.stop()
    assert [i for i, _ in calls] == ["flaky", "a", "b", "c", "flaky"]
    failed_at, retried_at = times_of(calls, "flaky")
    assert times_of(calls, "c")[0] - failed_at < 0.25, "c did not wait for flaky's retry"
    assert 0.5 <= retried_at - failed_at <= 0.55 + LATE
    assert (q.acked, q.retried, q.waiting) == (4, 1, 0)
    assert q.pending() == 0 and rdb.xlen(q.dead_letter) == 0


def test_a_retry_that_comes_due_mid_batch_runs_before_the_rest(supervisor, redis_server, names, queues):
    q = make_queue(redis_server, names, queues, claim_idle=5, retry_delay=0.1)
    calls = []
    inner = failing(calls, lambda item, n: item == "flaky" and n == 1)

    def run(item, **kw):
        gevent.sleep(0.02)  # 16 items: 0.32 s, the retry comes due after about five
        inner(item)

    w = BackgroundQueueWorker(func=run, q=q, supervisor=supervisor, on_error=lambda: None)
    w.start()
    q.put_many(["flaky"] + list(range(15)))
    wait_until(lambda: len(calls) == 17, timeout=5)
    w.stop()
    order = [i for i, _ in calls]
    again = order.index("flaky", 1)
    assert 3 <= again <= 10, "retried at once after its wait, not after the batch: %s" % order
    assert [i for i in order if i != "flaky"] == list(range(15)), "the others in stream order"
    failed_at, retried_at = times_of(calls, "flaky")
    # at most one item (0.02 s) runs past the due time
    assert 0.1 <= retried_at - failed_at <= 0.11 + 0.02 + LATE
    assert q.pending() == 0


def test_retry_for_dead_letters_other_errors_at_once(supervisor, redis_server, names, queues, rdb):
    q = make_queue(redis_server, names, queues, claim_idle=5, retry_delay=0.05, retry_for=KeyError)
    calls = []

    def run(item, **kw):
        calls.append(item)
        if item == "value":
            raise ValueError("not for retry_for")
        if item == "key" and calls.count("key") == 1:
            raise KeyError("retried")

    w = BackgroundQueueWorker(func=run, q=q, supervisor=supervisor, on_error=lambda: None)
    w.start()
    q.put_many(["value", "key"])
    wait_until(lambda: calls.count("key") == 2 and q.dead_lettered == 1, timeout=5)
    w.stop()
    assert calls == ["value", "key", "key"]
    [(_id, dead)] = rdb.xrange(q.dead_letter)
    assert dead[b"d"] == b'"value"' and dead[b"deliveries"] == b"1"
    assert dead[b"error"] == b"ValueError: not for retry_for"
    assert q.retried == 1 and q.pending() == 0


def test_by_default_a_run_timeout_is_retried_and_a_bare_timeout_is_not(supervisor, redis_server, names,
                                                                      queues, rdb):
    q = make_queue(redis_server, names, queues, claim_idle=5, retry_delay=0.05)
    calls = []

    def run(item, **kw):
        calls.append(item)
        if calls.count(item) == 1:
            raise gworker.RunTimeout(0.5, "run") if item == "limit" else gevent.Timeout(0.5)

    w = BackgroundQueueWorker(func=run, q=q, supervisor=supervisor, on_error=lambda: None)
    w.start()
    q.put_many(["limit", "bare"])
    wait_until(lambda: calls.count("limit") == 2 and q.dead_lettered == 1, timeout=5)
    w.stop()
    assert calls == ["limit", "bare", "limit"]
    [(_id, dead)] = rdb.xrange(q.dead_letter)
    assert dead[b"d"] == b'"bare"' and dead[b"error"].startswith(b"Timeout: ")
    assert q.pending() == 0


def test_stop_during_the_wait_hands_the_entry_back_with_its_deliveries(supervisor, redis_server, names,
                                                                       queues, rdb):
    # A waits 5 s before its retry (and claim_idle is 5 s): B gets the entry at
    # once. A's delivery still counts, so B's is the last one max_deliveries=2 allows.
    a = make_queue(redis_server, names, queues, claim_idle=5, retry_delay=5, max_deliveries=2)
    wa = BackgroundQueueWorker(func=failing([]), q=a, supervisor=supervisor, on_error=lambda: None)
    wa.start()
    a.put_threadsafe("x")
    wait_until(lambda: a.waiting == 1, timeout=5)
    wa.stop()
    assert a.waiting == 0
    assert rdb.xpending(a.stream, a.group)["pending"] == 1, "handed back, still pending"

    b = make_queue(redis_server, names, queues, claim_idle=5, max_deliveries=2)
    calls = []
    wb = BackgroundQueueWorker(func=failing(calls), q=b, supervisor=supervisor, on_error=lambda: None)
    started = time.monotonic()
    wb.start()
    wait_until(lambda: b.dead_lettered == 1, timeout=5)
    wb.stop()
    assert times_of(calls, "x")[0] - started < 1.0, "claimable at once"
    [(_id, dead)] = rdb.xrange(b.dead_letter)
    assert dead[b"deliveries"] == b"2", "A's delivery was counted"
    assert dead[b"error"] == b"RuntimeError: x failed (call 1)"
    assert b.retried == 0 and b.pending() == 0


def test_waiting_entries_are_kept_owned(supervisor, redis_server, names, queues):
    # B scans for entries idle for claim_idle (0.6 s) every 0.3 s; A's entry
    # waits 1.5 s for its retry and must stay A's all along.
    a = make_queue(redis_server, names, queues, claim_idle=0.6, retry_delay=1.5)
    calls_a, calls_b = [], []
    wa = BackgroundQueueWorker(func=failing(calls_a, lambda item, n: n == 1), q=a, supervisor=supervisor,
                               on_error=lambda: None)
    wa.start()
    a.put_threadsafe("x")
    wait_until(lambda: a.waiting == 1, timeout=5)
    b = make_queue(redis_server, names, queues, claim_idle=0.6)
    wb = BackgroundQueueWorker(func=failing(calls_b, lambda item, n: False), q=b, supervisor=supervisor)
    wb.start()
    wait_until(lambda: len(calls_a) == 2, timeout=5)
    wa.stop()
    wb.stop()
    assert calls_b == [], "another consumer took the waiting entry"
    assert b.claimed == 0
    failed_at, retried_at = times_of(calls_a, "x")
    assert 1.5 <= retried_at - failed_at <= 1.65 + LATE
    assert a.pending() == 0


def test_a_lost_connection_does_not_cut_the_wait_short(supervisor, redis_server, names, queues, rdb):
    # After a reconnect the consumer takes back its own pending entries at once,
    # except those waiting for their retry.
    q = make_queue(redis_server, names, queues, claim_idle=5, retry_delay=0.5)
    calls = []
    w = BackgroundQueueWorker(func=failing(calls, lambda item, n: n == 1), q=q, supervisor=supervisor,
                              on_error=lambda: None)
    w.start()
    q.put_threadsafe("x")
    wait_until(lambda: q.waiting == 1, timeout=5)
    # Cut the reader while it waits in XREADGROUP BLOCK (until the retry, 0.5 s):
    # a connection cut while idle is made again by redis-py's pool before it is used.
    blocked = []
    wait_until(lambda: blocked.extend(blocked_readers(rdb)) or blocked, timeout=5)
    assert len(blocked) == 1, blocked
    assert rdb.client_kill_filter(_id=blocked[0]) == 1
    wait_until(lambda: q.reconnects == 1, timeout=5)
    wait_until(lambda: len(calls) == 2, timeout=5)
    w.stop()
    failed_at, retried_at = times_of(calls, "x")
    assert 0.5 <= retried_at - failed_at <= 0.55 + LATE
    assert q.pending() == 0


def test_a_connection_lost_while_idle_is_counted_and_retries_stay_on_time(supervisor, redis_server,
                                                                         names, queues, rdb, caplog):
    # redis-py's pool makes a connection the server cut while it was idle again
    # before its next use, unasked: the consumer counts that reconnect, and a
    # retry that comes due during a BLOCK on the new connection is still woken.
    hz = rdb.config_get("hz")["hz"]
    rdb.config_set("hz", 1)  # a BLOCK left to time out ends up to 1 s late
    try:
        q = make_queue(redis_server, names, queues, claim_idle=5, retry_delay=0.2)
        calls = []
        fail_first = failing(calls, lambda item, n: item != "y" and n == 1)
        running, release = Event(), Event()

        def run(item, **kw):
            if item == "y":
                running.set()
                release.wait(5)
            fail_first(item)

        w = BackgroundQueueWorker(func=run, q=q, supervisor=supervisor, on_error=lambda: None)
        with caplog.at_level(logging.WARNING, logger="gworker"):
            w.start()
            q.put_threadsafe("x")  # its retry's wake-up learns the reader's CLIENT ID
            wait_until(lambda: len(times_of(calls, "x")) == 2, timeout=5)
            q.put_threadsafe("y")
            assert running.wait(5)
            # the reader is idle while "y" runs
            assert rdb.client_kill_filter(_type="normal", skipme=True) >= 1
            release.set()
            q.put_threadsafe("z")
            wait_until(lambda: len(times_of(calls, "z")) == 2, timeout=5)
            w.stop()
        assert q.reconnects == 1
        assert "lost while idle" in caplog.text
        failed_at, retried_at = times_of(calls, "z")
        assert 0.2 <= retried_at - failed_at <= 0.21 + LATE
        assert q.pending() == 0
    finally:
        rdb.config_set("hz", hz)


def test_a_consumer_killed_during_the_wait_leaves_the_entry_to_the_others(supervisor, redis_server,
                                                                            names, queues, tmp_path, rdb):
    victim = Consumer(redis_server, names, str(tmp_path / "victim.txt"), fail_item="x", retry_delay=30,
                      claim_idle=0.5)
    assert victim.readline().startswith("ready")
    survivor = make_queue(redis_server, names, queues, claim_idle=0.5)
    try:
        survivor.put_threadsafe("x")
        assert victim.readline() == "failed x"
        # its error text goes out with its next read: the entry is waiting then
        wait_until(lambda: rdb.hlen(survivor.errors_key) == 1, timeout=5)
    finally:
        victim.kill()
    got = []
    w = BackgroundQueueWorker(func=lambda item, **kw: got.append(item), q=survivor, supervisor=supervisor)
    w.start()
    wait_until(lambda: got == ["x"], timeout=5)  # once idle for claim_idle
    w.stop()
    assert survivor.pending() == 0 and rdb.hlen(survivor.errors_key) == 0


def test_without_client_unblock_a_retry_is_at_most_a_redis_timeout_late(supervisor, redis_server, names,
                                                                      queues, rdb, caplog):
    user = "noclient-" + names[0]
    rdb.acl_setuser(user, enabled=True, nopass=True, keys=["*"], channels=["*"],
                    commands=["+@all", "-client"])
    try:
        stream, group = names
        url = redis_server.url.replace("redis://", "redis://%s:x@" % user)
        q = RedisStreamQueue(stream, group, url=url, claim_idle=5, block_ms=500, retry_delay=0.1)
        queues.append(q)
        calls = []
        w = BackgroundQueueWorker(func=failing(calls, lambda item, n: n == 1), q=q, supervisor=supervisor,
                                  on_error=lambda: None)
        with caplog.at_level(logging.INFO, logger="gworker"):
            w.start()
            q.put_threadsafe("x")
            wait_until(lambda: len(calls) == 2, timeout=5)
            w.stop()
        failed_at, retried_at = times_of(calls, "x")
        # Redis times a BLOCK out on its 100 ms clock (hz 10)
        assert 0.1 <= retried_at - failed_at <= 0.11 + 0.1 + LATE
        assert "CLIENT ID/UNBLOCK refused" in caplog.text
        assert q.pending() == 0
    finally:
        rdb.acl_deluser(user)


@pytest.mark.parametrize("kw, error", [
    ({"retry_delay": -1}, ValueError),
    ({"retry_delay": "1"}, TypeError),
    ({"retry_delay": float("nan")}, ValueError),
    ({"retry_backoff": 0.5}, ValueError),
    ({"retry_backoff": "2"}, TypeError),
    ({"retry_backoff": True}, TypeError),
    ({"retry_max_delay": -0.1}, ValueError),
    ({"retry_max_delay": True}, TypeError),
    ({"retry_for": "ValueError"}, TypeError),
    ({"retry_for": (ValueError, int)}, TypeError),
    ({"retry_for": ()}, TypeError),
])
def test_bad_retry_parameters_fail_at_construction(kw, error):
    [name] = kw
    with pytest.raises(error, match=name):
        RedisStreamQueue("s", "g", **kw)


def test_hub_stays_responsive_while_consumers_block_in_xreadgroup(supervisor, redis_server, names,
                                                                    queues, rdb):
    workers = []
    for i in range(3):
        q = make_queue(redis_server, (names[0], names[1]), queues, block_ms=300)
        w = BackgroundQueueWorker(func=lambda item, **kw: None, q=q, supervisor=supervisor)
        w.start()
        workers.append(w)

    def blocked():
        clients = rdb.client_list()
        return sum(1 for c in clients if "b" in c["flags"] and c["cmd"] == "xreadgroup") >= 3

    wait_until(blocked, timeout=5)
    # The hub's CPU time between two turns of a 5 ms ticker, not their wall
    # gap: on a loaded machine the gap also holds the time the OS gave the CPU
    # to other processes (redis-server among them), which is none of the
    # consumers' doing.
    with Ticker(0.005) as ticker:
        gevent.sleep(1.5)
    assert blocked(), "the consumers wait in XREADGROUP BLOCK"
    for w in workers:
        w.stop()
    assert ticker.max_busy < 0.020, "the hub was held for %.1f ms" % (ticker.max_busy * 1000)
    assert len(ticker.gaps) > 100


def test_stop_interrupts_a_blocked_read_promptly(supervisor, redis_server, names, queues):
    q = make_queue(redis_server, names, queues, block_ms=5000, claim_idle=30)
    got = []
    w = BackgroundQueueWorker(func=lambda item, **kw: got.append(item), q=q, supervisor=supervisor)
    w.start()
    gevent.sleep(0.2)
    started = time.monotonic()
    w.stop()
    assert time.monotonic() - started < 0.5
    assert got == []  # (nothing was put)
    # and it works after a restart
    w.start()
    q.put_threadsafe(1)
    wait_until(lambda: got == [1], timeout=5)
    w.stop()


# -- several processes ------------------------------------------------------------------------------------

def test_three_processes_share_3000_items(redis_server, names, queues, tmp_path):
    producer = make_queue(redis_server, names, queues)
    consumers = start_consumers(redis_server, names, tmp_path, sleep=0.0003)
    try:
        producer.put_many(range(3000))
        wait_until(lambda: len(union_done(consumers)) >= 3000, timeout=20)
        wait_until(lambda: producer.pending() == 0, timeout=5)
    finally:
        results = [c.terminate() for c in consumers]
    for code, err in results:
        assert code == 0, err
    per = [len(c.processed()) for c in consumers]
    seen = union_done(consumers)
    assert set(seen) == {str(i) for i in range(3000)}, "every item processed at least once"
    duplicates = len(seen) - 3000
    print("3 consumers: %s items each, %d duplicates" % (per, duplicates))
    assert all(n > 0 for n in per), per
    assert duplicates == 0, "no failure happened, so no item ran twice"


def test_sigkill_one_consumer_mid_item(redis_server, names, queues, tmp_path):
    producer = make_queue(redis_server, names, queues)
    survivors = start_consumers(redis_server, names, tmp_path, n=2, sleep=0.002, count=20)
    victim = Consumer(redis_server, names, str(tmp_path / "victim.txt"), hold_after=5, count=20)
    assert victim.readline().startswith("ready")
    try:
        producer.put_many(range(600))
        held = victim.readline()
        assert held.startswith("holding"), held
        held_item = held.split()[1]
        victim.kill()
        killed_at = time.monotonic()
        everyone = survivors + [victim]
        wait_until(lambda: len(set(union_done(everyone))) >= 600, timeout=1.0 + 8)
        finished = time.monotonic() - killed_at
        wait_until(lambda: producer.pending() == 0, timeout=5)
    finally:
        results = [c.terminate() for c in survivors]
    for code, err in results:
        assert code == 0, err
    seen = union_done(survivors + [victim])
    assert set(seen) == {str(i) for i in range(600)}, "none lost"
    assert held_item in union_done(survivors), "the item the victim held was finished by the others"
    print("victim killed mid-item; the rest finished %.2fs later; %d duplicates"
          % (finished, len(seen) - 600))
    assert finished < 1.0 + 5


def test_redis_restart_mid_run(redis_server, names, queues, tmp_path, rdb):
    producer = make_queue(redis_server, names, queues)
    consumers = start_consumers(redis_server, names, tmp_path, sleep=0.002, count=20)
    try:
        producer.put_many(range(1500))
        wait_until(lambda: len(union_done(consumers)) >= 300, timeout=10)
        redis_server.stop()
        gevent.sleep(0.3)  # consumers find the server gone
        redis_server.start()
        producer.put_many(range(1500, 2000))  # the producer reconnects too
        wait_until(lambda: len(set(union_done(consumers))) >= 2000, timeout=20)
        wait_until(lambda: producer.pending() == 0, timeout=5)
    finally:
        if redis_server.proc is None:
            redis_server.start()
        results = [c.terminate() for c in consumers]
    for code, err in results:
        assert code == 0, err
        assert "reconnected" in err, "the reconnect is logged"
    seen = union_done(consumers)
    assert set(seen) == {str(i) for i in range(2000)}, "nothing lost"
    print("redis restarted mid-run: %d duplicates" % (len(seen) - 2000))


def test_fanout_example(redis_server):
    cmd = [sys.executable]
    if PATCHED:
        cmd += ["-m", "gevent.monkey"]
    cmd += [os.path.join(ROOT, "examples", "redis_fanout.py"), "--url", redis_server.url,
            "--items", "600"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = gsubprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert "600 items processed by 3 consumers" in out.stdout, out.stdout
    assert "lost: 0" in out.stdout
