"""End to end: the examples served by real gunicorn / pywsgi processes on 127.0.0.1.

Each test launches its servers as process groups of their own (killed with
SIGKILL at teardown whatever happens), talks HTTP to them with a small gevent
client (one connection per request, gevent sockets in both worlds), and reads
what the example's queue worker processed from the per-process files it writes
(``GWORKER_EXAMPLE_STATE_DIR``). Subprocesses import this checkout's gworker
(``PYTHONPATH``). gunicorn always runs its gevent worker (patched); the pywsgi
example runs in the test's own world.
"""
import collections
import glob
import json
import math
import os
import signal
import subprocess
import sys
import time

import gevent
import gevent.pool
import gevent.socket
import gevent.subprocess
import psutil
import pytest

from conftest import PATCHED, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")

try:
    import gunicorn  # noqa: F401
except ImportError:  # pragma: no cover - the gunicorn extra is installed by tox
    gunicorn = None

needs_gunicorn = pytest.mark.skipif(
    gunicorn is None,
    reason="gunicorn is not importable: install the extra (pip install -e .[gunicorn]); tox does",
)

HEARTBEAT_INTERVAL = 0.1  # the example's interval worker


# -- a tiny HTTP client ---------------------------------------------------------------------
def request(port, method="GET", path="/", body=b"", timeout=10.0):
    """One request on a fresh connection: (status or None, body, seconds)."""
    t0 = time.perf_counter()
    try:
        sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % (
                method, path, len(body))
            sock.sendall(head.encode("ascii") + body)
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        finally:
            sock.close()
    except OSError as exc:
        return None, repr(exc).encode(), time.perf_counter() - t0
    raw = b"".join(chunks)
    status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/") else None
    return status, raw.partition(b"\r\n\r\n")[2], time.perf_counter() - t0


def p99(latencies):
    ordered = sorted(latencies)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def run_load(port, n, concurrency=50, post_every=4, tag="load"):
    """``n`` requests, ``concurrency`` at a time; every ``post_every``-th POSTs an item."""
    def one(i):
        if i % post_every == 0:
            name = "%s-%d" % (tag, i)
            status, body, latency = request(port, "POST", "/items", name.encode())
            return name, status, body, latency
        status, body, latency = request(port)
        return None, status, body, latency

    started = time.perf_counter()
    results = list(gevent.pool.Pool(concurrency).imap_unordered(one, range(n)))
    elapsed = time.perf_counter() - started
    bad = [(s, b[:200]) for _, s, b, _ in results if s != 200]
    return {
        "bad": bad,
        "accepted": [name for name, s, _, _ in results if name is not None and s == 200],
        "p99": p99([lat for _, _, _, lat in results]),
        "elapsed": elapsed,
        "n": n,
    }


def post_items(port, names, work, concurrency=20):
    def one(name):
        return name, request(port, "POST", "/items?work=%s" % work, name.encode())[0]
    results = list(gevent.pool.Pool(concurrency).imap_unordered(one, names))
    assert all(status == 200 for _, status in results), results
    return [name for name, _ in results]


def status_by_pid(port, pids_wanted, tries=60):
    """GET the status endpoint until ``pids_wanted`` distinct processes answered."""
    seen = {}
    for _ in range(tries):
        status, body, _ = request(port, path="/_gworker")
        if status == 200:
            info = json.loads(body)
            seen.setdefault(info["pid"], info)
            if len(seen) >= pids_wanted:
                return seen
        gevent.sleep(0.02)
    raise AssertionError("only %d of %d server processes answered the status endpoint" % (len(seen), pids_wanted))


def worker_info(info, name):
    return next(w for w in info["workers"] if w["name"] == name)


def check_schedule(server, before, after):
    """The interval worker ran every HEARTBEAT_INTERVAL between the two readings:
    never more runs than the schedule has slots (no catch-up bursts), and no
    fewer than a bare gevent loop on the same schedule in the same process made
    in the same time (the example's probe, see examples/wsgi_pywsgi.py). A hub
    late by more than an interval while serving the load costs both a slot; how
    often that happens is the machine's business, not gworker's."""
    probes = collections.defaultdict(list)
    for path in glob.glob(os.path.join(server.state_dir, "probe-*.log")):
        pid = int(path.rsplit("-", 1)[1].split(".")[0])
        with open(path) as f:
            probes[pid] = [float(line) for line in f if line.strip()]
    for pid, info in after.items():
        hb1, hb2 = worker_info(before[pid], "heartbeat"), worker_info(info, "heartbeat")
        span = hb2["last_run"] - hb1["last_run"]
        expected = span / HEARTBEAT_INTERVAL
        runs = hb2["runs"] - hb1["runs"]
        baseline = sum(1 for t in probes[pid] if hb1["last_run"] < t <= hb2["last_run"])
        # The two loops' phases differ until the first late wake-up aligns them,
        # and the window's two ends may each cut one of them: 2 slots apart at most.
        assert baseline - 2 <= runs <= expected + 1.0, (pid, runs, baseline, expected, hb1, hb2)
        assert info["time"] - hb2["last_run"] <= 2 * HEARTBEAT_INTERVAL, (pid, info["time"], hb2)
        assert hb2["errors"] == 0 and hb2["active"], hb2


def read_lines(state_dir, kind):
    lines = []
    for path in glob.glob(os.path.join(state_dir, "%s-*.log" % kind)):
        with open(path) as f:
            lines.extend(line.strip() for line in f if line.strip())
    return lines


def read_pid_lines(state_dir, kind):
    """(pid, line) of every line of every ``<kind>-<pid>.log`` in ``state_dir``."""
    out = []
    for path in glob.glob(os.path.join(state_dir, "%s-*.log" % kind)):
        pid = int(os.path.basename(path)[len(kind) + 1:-4])
        with open(path) as f:
            out.extend((pid, line.strip()) for line in f if line.endswith("\n"))
    return out


def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- launching servers -------------------------------------------------------------------------
class Server:
    def __init__(self, proc, port, state_dir, log_path):
        self.proc, self.port, self.state_dir, self.log_path = proc, port, state_dir, log_path

    @property
    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_ready(self, processes=1, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "server exited early:\n" + self.log
            if request(self.port, timeout=1)[0] == 200:
                return status_by_pid(self.port, processes)
            gevent.sleep(0.05)
        raise AssertionError("server not ready in %ss:\n%s" % (timeout, self.log))

    def tree(self):
        return [self.proc.pid] + [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]

    def terminate_and_wait(self, timeout):
        """SIGTERM the top process; return seconds until it exited."""
        pids = self.tree()
        t0 = time.monotonic()
        os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        elapsed = time.monotonic() - t0
        wait_until(lambda: not any(alive(p) for p in pids), timeout=2)
        with pytest.raises(ProcessLookupError):
            os.killpg(self.proc.pid, 0)  # nothing at all left in its process group
        return elapsed


def free_port():
    sock = gevent.socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
def launch(tmp_path):
    procs = []

    def _launch(kind, name="server", workers_on=True, graceful_timeout=10, processes=2, redis_url=None):
        state_dir = tmp_path / name
        state_dir.mkdir()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GEVENT_", "GWORKER_"))}
        env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        env["GWORKER_EXAMPLE_STATE_DIR"] = str(state_dir)
        env["GWORKER_EXAMPLE_WORKERS"] = "on" if workers_on else "off"
        env.pop("REDIS_URL", None)
        if redis_url is not None:
            env["REDIS_URL"] = redis_url
        if kind == "gunicorn":
            cmd = [sys.executable, "-m", "gunicorn", "-c", os.path.join(EXAMPLES, "gunicorn.conf.py"),
                   "-k", "gevent", "-w", str(processes), "-b", "127.0.0.1:%d" % port,
                   "--graceful-timeout", str(graceful_timeout)]
            if hasattr(__import__("gunicorn.config").config, "ControlSocketDisable"):
                cmd.append("--no-control-socket")  # gunicorn >= 24: no shared socket in $HOME
        else:
            cmd = [sys.executable] + (["-m", "gevent.monkey"] if PATCHED else [])
            cmd += [os.path.join(EXAMPLES, "wsgi_pywsgi.py"), "--port", str(port),
                    "--graceful-timeout", str(graceful_timeout)]
        log_path = str(state_dir / "server.log")
        with open(log_path, "wb") as log:
            proc = gevent.subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        procs.append(proc)
        return Server(proc, port, str(state_dir), log_path)

    yield _launch
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


def check_exactly_once(server, accepted, timeout=10):
    """Every accepted item was processed by the server exactly once."""
    wait_until(lambda: len(read_lines(server.state_dir, "processed")) >= len(accepted), timeout=timeout)
    counts = collections.Counter(read_lines(server.state_dir, "processed"))
    assert set(counts) == set(accepted)
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:10]


# -- gunicorn ------------------------------------------------------------------------------------
@needs_gunicorn
def test_gunicorn_four_processes_run_a_singleton_once_per_interval(launch, tmp_path):
    """gunicorn -k gevent -w 4 with the example's cluster_report (interval=1,
    RedisSingleton, a real redis-server): one run per second across the four
    processes, not four; SIGTERM to the master stops every process cleanly
    (exit 0, every queued item processed)."""
    from test_redis_streams import own_server

    with own_server() as redis_server:
        server = launch("gunicorn", processes=4, redis_url=redis_server.url)
        server.wait_ready(processes=4)
        t0 = time.time()
        gevent.sleep(5.0)
        t1 = time.time()
        accepted = post_items(server.port, ["item-%d" % i for i in range(20)], work=0.01)
        runs = sorted((int(fence), float(at), pid) for pid, line in read_pid_lines(server.state_dir, "report")
                      for fence, at in [line.split()])
        window = [r for r in runs if t0 <= r[1] < t1]
        assert 4 <= len(window) <= 6, "%d runs in 5 s at interval=1 under -w 4: %r" % (len(window), window)
        fences = [r[0] for r in runs]
        assert len(set(fences)) == len(fences) and all(f % 1000 == 0 for f in fences), runs
        assert all(b[1] - a[1] > 0.5 for a, b in zip(runs, runs[1:])), runs
        assert server.terminate_and_wait(timeout=15) < 10
        assert server.proc.returncode == 0, server.log
        check_exactly_once(server, accepted, timeout=1)
        assert server.log.count("0 left undrained") == 4, server.log


@needs_gunicorn
def test_gunicorn_load_schedule_items_and_latency(launch):
    """2,000 requests at concurrency 50, twice, against gunicorn -k gevent -w 2 with the
    workers running and (a second server) with them off: all 200, the interval worker
    on schedule, every POSTed item processed exactly once, p99 with workers within 2x
    of p99 without (each the better of two runs; a 5 ms floor)."""
    on = launch("gunicorn", "on")
    off = launch("gunicorn", "off", workers_on=False)
    before = on.wait_ready(processes=2)
    off.wait_ready(processes=2)
    runs = {"on": [], "off": []}
    for round_ in range(2):
        for label, server in (("on", on), ("off", off)):
            result = run_load(server.port, 2000, tag="%s%d" % (label, round_))
            assert not result["bad"], result["bad"][:5]
            runs[label].append(result)
    after = status_by_pid(on.port, 2)
    check_schedule(on, before, after)
    check_exactly_once(on, [name for r in runs["on"] for name in r["accepted"]])
    assert read_lines(off.state_dir, "processed") == []  # its workers were off indeed
    p99_on = min(r["p99"] for r in runs["on"])
    p99_off = min(r["p99"] for r in runs["off"])
    print("\ngunicorn p99 with workers %.1f ms, without %.1f ms; req/s %s" % (
        p99_on * 1e3, p99_off * 1e3,
        ["%s %.0f" % (k, r["n"] / r["elapsed"]) for k in runs for r in runs[k]]))
    assert p99_on <= 2 * max(p99_off, 0.005), (p99_on, p99_off)


@needs_gunicorn
def test_gunicorn_sigterm_drains_queued_items(launch):
    """SIGTERM to the master while items are queued: each worker process drains its
    queue (every accepted item processed once), all stop within graceful_timeout, and
    no process is left."""
    server = launch("gunicorn", graceful_timeout=10)
    server.wait_ready(processes=2)
    accepted = post_items(server.port, ["slow-%d" % i for i in range(80)], work=0.03)
    queued_at_sigterm = len(accepted) - len(read_lines(server.state_dir, "processed"))
    assert queued_at_sigterm >= 20, queued_at_sigterm  # the drain is really exercised
    elapsed = server.terminate_and_wait(timeout=15)
    assert server.proc.returncode == 0, server.log
    assert elapsed < 10, elapsed
    check_exactly_once(server, accepted, timeout=1)
    assert read_lines(server.state_dir, "undrained") == []
    assert server.log.count("0 left undrained") == 2, server.log


@needs_gunicorn
def test_gunicorn_sigterm_reports_what_it_cannot_drain(launch):
    """More queued work than graceful_timeout allows: what was not processed before the
    deadline is reported (on_undrained), before gunicorn's master would SIGKILL."""
    server = launch("gunicorn", graceful_timeout=2)
    server.wait_ready(processes=2)
    accepted = post_items(server.port, ["late-%d" % i for i in range(60)], work=0.1)
    elapsed = server.terminate_and_wait(timeout=10)
    assert elapsed < 2.5, elapsed
    processed = read_lines(server.state_dir, "processed")
    undrained = read_lines(server.state_dir, "undrained")
    assert undrained, server.log
    assert sorted(processed + undrained) == sorted(accepted)  # each exactly once, in one of the two
    # both worker processes finished their shutdown (and logged it) before the master's SIGKILL
    assert server.log.count("gworker stopped in") == 2, server.log
    assert "Worker graceful timeout" not in server.log and "SIGKILL" not in server.log, server.log


# -- pywsgi --------------------------------------------------------------------------------------
def test_pywsgi_load_then_sigterm_drains(launch):
    """The pywsgi example under load (all 200, interval on schedule, items exactly once),
    then SIGTERM with items queued: every item processed, exit 0 in time, nothing left."""
    server = launch("pywsgi", graceful_timeout=10)
    before = server.wait_ready()
    result = run_load(server.port, 1000)
    assert not result["bad"], result["bad"][:5]
    after = status_by_pid(server.port, 1)
    check_schedule(server, before, after)
    print("\npywsgi p99 with workers %.1f ms, %.0f req/s" % (result["p99"] * 1e3, result["n"] / result["elapsed"]))
    accepted = result["accepted"] + post_items(server.port, ["slow-%d" % i for i in range(40)], work=0.03)
    elapsed = server.terminate_and_wait(timeout=15)
    assert server.proc.returncode == 0, server.log
    assert elapsed < 10, elapsed
    check_exactly_once(server, accepted, timeout=1)
    assert read_lines(server.state_dir, "undrained") == []
    assert "0 left undrained" in server.log, server.log


def test_pywsgi_sigterm_reports_what_it_cannot_drain(launch):
    server = launch("pywsgi", graceful_timeout=1)
    server.wait_ready()
    accepted = post_items(server.port, ["late-%d" % i for i in range(30)], work=0.1)
    elapsed = server.terminate_and_wait(timeout=10)
    assert server.proc.returncode == 0, server.log
    assert elapsed < 1.5, elapsed
    processed = read_lines(server.state_dir, "processed")
    undrained = read_lines(server.state_dir, "undrained")
    assert processed and undrained, server.log
    assert sorted(processed + undrained) == sorted(accepted)
