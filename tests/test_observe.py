"""Health, readiness, the live page's data and snapshots, in-process (issue 21, parts 2-3).

The page itself, in a real browser against real gunicorn processes, is in
tests/test_observe_e2e.py.
"""
import io
import json
import os
import shutil
import time

import gevent
import pytest
from gevent.event import Event
from gevent.monkey import get_original

from gworker import (TASK_CRITICAL, TASK_HIGH, TASK_LOW, TASK_NORMAL, BackgroundIntervalWorker,
                     BackgroundQueueWorker)
from gworker.integrations import WorkerSet
from gworker.integrations import gunicorn as gunicorn_hooks
from gworker.integrations.health import HubProbe, check_health, check_ready, health_app, hub_probe, overdue
from gworker.integrations.status import mount, status_app
from gworker.integrations.ui import (SnapshotPublisher, mark_process_dead, process_snapshot, read_snapshots,
                                     status_dir, ui_app, ui_data)

from conftest import native_thread, wait_until
from test_wsgi_e2e import free_port

_os_sleep = get_original("time", "sleep")


@pytest.fixture(scope="module")
def redis_server():
    """A redis-server of this module's own, stopped at its end (a session's
    would outlive the module: tests/test_processes.py counts the children)."""
    streams = pytest.importorskip("test_redis_streams")
    if streams.SERVER_BIN is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server not found -- required in CI", pytrace=False)
        pytest.skip("redis-server not found (install it, e.g. apt-get install redis-server)")
    server = streams.RedisServer(streams.SERVER_BIN)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


def call(app, path="", method="GET"):
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "wsgi.input": io.BytesIO()}
    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def answer(app, path="", method="GET"):
    status, _, body = call(app, path, method)
    return int(status.split()[0]), json.loads(body) if body else None


# -- health ---------------------------------------------------------------------------------------
def test_healthz_answers_200_while_the_supervisor_runs_and_503_once_it_stopped(supervisor):
    app = status_app(supervisor)
    code, body = answer(app, "/healthz")
    assert code == 200 and body["ok"] and body["reasons"] == []
    assert body["pid"] == os.getpid() and body["supervisor"] == supervisor.id and body["hub_answer"] < 1
    supervisor.stop()
    code, body = answer(app, "/healthz")
    assert code == 503 and body["reasons"] == ["supervisor %s is not active" % supervisor.id]
    assert call(app, "/healthz", "POST")[0].startswith("405")
    supervisor.start()


@pytest.mark.blocks_hub
def test_healthz_fails_while_the_hub_is_held_and_names_it_after(supervisor):
    """Asked from another OS thread while the hub is held: no answer within the
    bound. Asked in the hub afterwards: the probe saw the turn that came late."""
    probe = hub_probe(supervisor)
    assert probe is hub_probe(supervisor) and probe.running
    wait_until(lambda: probe.lag is not None, timeout=3)
    held = Event()

    def from_a_thread():
        while not held.is_set():
            _os_sleep(0.001)
        return check_health(supervisor, bound=0.2)

    thread = native_thread(from_a_thread)
    held.set()
    _os_sleep(1.0)  # the hub is held: no greenlet, no callback, no timer runs
    result = thread.join(5)
    assert not result["ok"] and result["hub_answer"] is None
    assert "the hub did not answer within 0.2 s" in result["reasons"]
    # (the probe looks every 0.5 s: a 1 s hold makes one look at least 0.5 s late)
    wait_until(lambda: (probe.max_lag or 0) >= 0.45, timeout=3)
    late = check_health(supervisor, bound=0.2)
    assert not late["ok"] and late["hub_lag"] >= 0.45
    assert any("the hub ran" in r and "late" in r for r in late["reasons"]), late
    assert check_health(supervisor, bound=5)["ok"]


def test_hub_probe_measures_lateness_cheaply():
    hub = gevent.get_hub()
    probe = HubProbe(hub, period=0.01)
    probe.start()
    probe.start()  # (a no-op)
    try:
        looks = []
        wait_until(lambda: looks.append(probe.lag) or len([x for x in looks if x is not None]) >= 3, timeout=3)
        assert 0 <= probe.lag < 0.5 and probe.max_lag >= probe.lag
    finally:
        probe.stop()
    assert not probe.running
    for bad in (0, -1, "1", True):
        with pytest.raises((TypeError, ValueError), match="period"):
            HubProbe(hub, period=bad)


# -- readiness --------------------------------------------------------------------------------------
def test_readyz_waits_for_the_worker_set_then_for_each_registered_worker(supervisor):
    q = BackgroundQueueWorker(func=lambda item, **kw: None, name="mailer", supervisor=supervisor)
    tick = BackgroundIntervalWorker(func=lambda **kw: None, interval=1, name="tick", supervisor=supervisor)
    workers = WorkerSet(supervisor)
    workers.add(q, tick)
    app = status_app(supervisor, workers)
    code, body = answer(app, "/readyz")
    assert code == 503 and body["reasons"] == [
        "the workers are not started in this process (WorkerSet.start() has not run)"]
    workers.start()
    code, body = answer(app, "/readyz")
    assert code == 200 and body["ok"] and body["reasons"] == [] and body["overdue"] == {}
    q.stop()
    code, body = answer(app, "/readyz")
    assert code == 503 and body["reasons"] == ["worker mailer is not running"]
    q.start()
    assert answer(app, "/readyz")[0] == 200
    assert check_ready(workers=workers)["supervisor"] == supervisor.id  # (the set's supervisor by default)


def test_readyz_names_an_interval_worker_overdue_by_more_than_three_periods(supervisor):
    release, began = Event(), []
    stuck = BackgroundIntervalWorker(func=lambda **kw: (began.append(time.monotonic()), release.wait()),
                                     interval=0.05, name="stuck", supervisor=supervisor)
    steady = BackgroundIntervalWorker(func=lambda **kw: None, interval=0.05, name="steady", supervisor=supervisor)
    slow = BackgroundIntervalWorker(func=lambda **kw: release.wait(), delay=0.05, name="slow-delay",
                                    supervisor=supervisor)
    workers = WorkerSet(supervisor)
    workers.add(stuck, steady, slow)
    workers.start()
    try:
        wait_until(lambda: began)
        assert check_ready(supervisor, workers)["ok"] or time.monotonic() - began[0] > 0.2
        # its run began 0.25 s ago: the next one was due 0.2 s ago, more than 3 periods (0.15 s)
        gevent.sleep(max(0.0, began[0] + 0.25 - time.monotonic()))
        result = check_ready(supervisor, workers)
        assert list(result["overdue"]) == ["stuck"] and result["overdue"]["stuck"] > 0.15
        (reason,) = result["reasons"]
        assert reason.startswith("worker stuck is overdue by") and "3 of its 0.05 s periods" in reason
        # a delay worker's next time comes after its run: a long run is not overdue
        assert "slow-delay" not in result["overdue"]
    finally:
        release.set()
    wait_until(lambda: check_ready(supervisor, workers)["ok"], timeout=3)


def test_overdue_reads_an_interval_or_cron_workers_figures():
    now = 1_000_000.0
    assert overdue({"kind": "interval", "active": True, "interval": 2.0, "next_run": now - 7}, now) == (7, 2.0)
    assert overdue({"kind": "interval", "active": True, "interval": 2.0, "next_run": None,
                    "last_run": now - 10, "delay_before": 1.0}, now) == (7, 2.0)
    late, period = overdue({"kind": "interval", "active": True, "cron": "*/5 * * * *", "tz": "UTC",
                            "next_run": None, "last_run": 1_799_999_990.0}, 1_800_000_000.0 + 1000)
    assert period == 300 and late == 1000  # due at the first */5 time after the last run
    assert overdue({"kind": "interval", "active": True, "delay": 1, "next_run": None, "last_run": now - 50}, now) \
        is None
    assert overdue({"kind": "queue", "active": True}, now) is None
    assert overdue({"kind": "interval", "active": False, "interval": 1, "next_run": 0}, now) is None


def test_readyz_names_a_redis_queue_that_cannot_reach_redis(supervisor):
    pytest.importorskip("redis")
    from gworker.redis import RedisStreamQueue

    down = RedisStreamQueue("orders", "billing", url="redis://127.0.0.1:%d/0" % free_port(), backoff_max=0.2)
    w = BackgroundQueueWorker(func=lambda item, **kw: None, q=down, name="bill", supervisor=supervisor)
    workers = WorkerSet(supervisor)
    workers.add(w)
    workers.start()
    try:
        result = check_ready(supervisor, workers, redis_timeout=0.5)
        assert not result["ok"] and result["redis"]["orders/billing"] != "ok"
        (reason,) = result["reasons"]
        assert reason.startswith("worker bill: Redis queue orders (group billing) cannot reach Redis: ")
    finally:
        w.stop()
        down.close()


def test_readyz_with_a_reachable_redis(supervisor, redis_server):
    from gworker.redis import RedisStreamQueue

    up = RedisStreamQueue("ready-%d" % os.getpid(), "g", url=redis_server.url)
    w = BackgroundQueueWorker(func=lambda item, **kw: None, q=up, name="bill", supervisor=supervisor)
    w.start()
    try:
        result = check_ready(supervisor, WorkerSet(supervisor))
        assert result["ok"] and result["redis"] == {"ready-%d/g" % os.getpid(): "ok"}
    finally:
        w.stop()
        up.close()


def test_checks_refuse_bad_parameters(supervisor):
    for bad, error in (("1", TypeError), (True, TypeError), (0, ValueError), (-1, ValueError)):
        with pytest.raises(error, match="bound"):
            check_health(supervisor, bound=bad)
        with pytest.raises(error, match="overdue_periods"):
            check_ready(supervisor, overdue_periods=bad)
        with pytest.raises(error, match="redis_timeout"):
            check_ready(supervisor, redis_timeout=bad)
    with pytest.raises(TypeError, match="workers"):
        check_ready(supervisor, workers=[1])
    with pytest.raises(TypeError, match="workers"):
        status_app(supervisor, workers=object())
    with pytest.raises(TypeError, match="check"):
        health_app(42)
    with pytest.raises(TypeError, match="path"):
        mount(lambda e, s: [], path=7)


def test_status_app_keeps_answering_its_json_and_404s_the_rest(supervisor):
    app = status_app(supervisor)
    code, body = answer(app, "")
    assert code == 200 and body["id"] == supervisor.id
    assert body["thread_pool"]["in_use"] == {"0": 0, "50": 0, "100": 0, "200": 0}
    assert answer(app, "/")[0] == 200
    assert answer(app, "/nothing-here")[0] == 404
    mounted = mount(lambda e, s: [], supervisor=supervisor)
    assert answer(mounted, "/_gworker/healthz")[0] == 200


# -- slots in use ------------------------------------------------------------------------------------
def test_slots_in_use_by_priority_add_up_to_the_pools_running_count(supervisor):
    gate = Event()
    supervisor.set_thread_pool(pool_size=3, reserve_normal=0, reserve_high=0)
    try:
        hi = BackgroundQueueWorker(func=lambda item, **kw: gate.wait(), priority=TASK_HIGH, supervisor=supervisor)
        crit = BackgroundQueueWorker(func=lambda item, **kw: gate.wait(), priority=TASK_CRITICAL,
                                     supervisor=supervisor)
        hi.start()
        crit.start()
        hi.put_threadsafe(1)
        crit.put_threadsafe(1)
        wait_until(lambda: supervisor.get_info().thread_pool["running"] == 2)
        tasks = [supervisor.put_task(lambda **kw: gate.wait(), priority=TASK_LOW) for _ in range(3)]  # 1 runs
        wait_until(lambda: supervisor.get_info().thread_pool["running"] == 3)
        assert supervisor.slots_in_use() == {TASK_CRITICAL: 1, TASK_HIGH: 1, TASK_NORMAL: 0, TASK_LOW: 1}
        assert supervisor.get_info().thread_pool["waiting"] == 2
        gate.set()
        for t in tasks:
            assert t.wait(5)
        wait_until(lambda: supervisor.get_info().thread_pool["running"] == 0)
        assert sum(supervisor.slots_in_use().values()) == 0
        hi.stop()
        crit.stop()
    finally:
        supervisor.set_thread_pool(pool_size=100, reserve_normal=10, reserve_high=10)


# -- the page's data and snapshots ------------------------------------------------------------------------
def test_ui_page_is_self_contained_and_its_data_lists_the_workers(supervisor):
    runs = []
    tick = BackgroundIntervalWorker(func=lambda **kw: runs.append(gevent.sleep(0.002)), interval=0.02,
                                    name="tick", supervisor=supervisor)
    q = BackgroundQueueWorker(func=lambda item, **kw: None, name="<b>q</b>", supervisor=supervisor)
    tick.start()
    q.start()
    app = status_app(supervisor)
    status, headers, page = call(app, "/ui")
    assert status == "200 OK" and headers["Content-Type"].startswith("text/html")
    text = page.decode()
    assert "<script>" in text and "src=" not in text and "https://" not in text  # nothing fetched from elsewhere
    assert "/data" in text and "setTimeout(refresh, 1000)" in text and "textContent" in text
    assert call(app, "/ui/nope")[0].startswith("404") and call(app, "/ui", "POST")[0].startswith("405")
    for _ in range(4):  # each snapshot after a run adds a point to the sparkline
        before = len(runs)
        wait_until(lambda: len(runs) > before)
        code, data = answer(app, "/ui/data")
    assert code == 200 and data["pid"] == os.getpid()
    (proc,) = data["processes"]
    assert not proc["stale"] and not proc["exited"] and proc["workers_total"] == 2
    rows = {w["name"]: w for w in proc["workers"]}
    assert rows["tick"]["kind"] == "interval" and rows["tick"]["state"] == "active"
    assert rows["tick"]["runs"] >= 4 and len(rows["tick"]["durations"]) >= 3
    assert all(0.001 < d < 1 for d in rows["tick"]["durations"])  # (each the mean since the last snapshot)
    assert 0 <= rows["tick"]["lateness"] < 0.5  # its scheduled runs' mean lateness since the last snapshot
    assert rows["<b>q</b>"]["queue_length"] == 0 and rows["<b>q</b>"]["durations"] == []
    assert set(proc["pool"]["in_use"]) == {"0", "50", "100", "200"}
    tick.stop()
    q.stop()


def test_ui_samples_the_lateness_of_an_interval_worker_that_ran_once_between_two_snapshots(supervisor):
    ran = Event()
    tick = BackgroundIntervalWorker(func=lambda **kw: ran.set(), interval=0.3, name="tick", supervisor=supervisor)
    tick.start()
    assert ran.wait(2)
    ran.clear()
    wait_until(lambda: tick.get_info()["next_run"] is not None)
    process_snapshot(supervisor)  # notes when the next run is due
    assert ran.wait(2)
    wait_until(lambda: tick.get_info()["next_run"] is not None)
    (row,) = process_snapshot(supervisor)["workers"]
    assert row["lateness"] is not None and 0 <= row["lateness"] < 0.25
    tick.stop()


def test_published_snapshots_are_merged_and_marked_stale_or_exited(supervisor, tmp_path):
    w = BackgroundQueueWorker(func=lambda item, **kw: None, name="mine", supervisor=supervisor)
    w.start()
    publisher = SnapshotPublisher(str(tmp_path), supervisor, interval=0.05)
    assert publisher.start() and not publisher.start() and publisher.is_running()
    assert os.path.exists(publisher.path)
    first = json.loads(open(publisher.path).read())["time"]
    wait_until(lambda: json.loads(open(publisher.path).read())["time"] > first, timeout=3)

    def fake(pid, age, name):
        snap = process_snapshot(supervisor, interval=1.0)
        snap.update(pid=pid, time=time.time() - age, workers=[dict(snap["workers"][0], name=name)])
        with open(os.path.join(str(tmp_path), "gworker-ui-%d.json" % pid), "w") as f:
            json.dump(snap, f)

    dead = 2 ** 22 + 12345  # past pid_max's default: no such process
    fake(os.getppid(), 10.0, "stuck-one")      # alive, stopped publishing 10 s ago
    fake(dead, 5.0, "gone-one")                # exited 5 s ago
    fake(dead + 1, 3600.0, "long-gone")        # exited an hour ago: forgotten
    (tmp_path / "gworker-ui-garbage.json").write_text("{not json")
    found = {s["pid"]: s for s in read_snapshots(str(tmp_path))}
    assert set(found) == {os.getpid(), os.getppid(), dead}
    assert found[os.getppid()]["stale"] and not found[os.getppid()]["exited"]
    assert found[dead]["exited"] and not found[os.getpid()]["stale"]
    data = ui_data(supervisor, str(tmp_path))
    assert [p["pid"] for p in data["processes"]] == sorted({os.getpid(), os.getppid(), dead})
    names = {p["pid"]: [w["name"] for w in p["workers"]] for p in data["processes"]}
    assert names[os.getpid()] == ["mine"] and names[dead] == ["gone-one"]
    code, body = answer(ui_app(supervisor, str(tmp_path)), "/data")
    assert code == 200 and len(body["processes"]) == 3
    mark_process_dead(dead, str(tmp_path))
    assert dead not in {s["pid"] for s in read_snapshots(str(tmp_path))}
    mark_process_dead(dead, str(tmp_path))  # (gone already: nothing happens)
    publisher.stop()
    assert not os.path.exists(publisher.path) and not publisher.is_running()
    w.stop()


def test_status_dir_and_publisher_parameters(monkeypatch, tmp_path, supervisor):
    monkeypatch.delenv("GWORKER_STATUS_DIR", raising=False)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert status_dir() is None
    with pytest.raises(ValueError, match="directory"):
        SnapshotPublisher(supervisor=supervisor)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prom"))
    assert status_dir() == str(tmp_path / "prom")
    monkeypatch.setenv("GWORKER_STATUS_DIR", str(tmp_path / "ui"))
    assert status_dir() == str(tmp_path / "ui") and status_dir(tmp_path) == str(tmp_path)
    with pytest.raises(TypeError, match="directory"):
        status_dir(42)
    for bad, error in (("1", TypeError), (True, TypeError), (0, ValueError), (-2, ValueError)):
        with pytest.raises(error, match="interval"):
            SnapshotPublisher(str(tmp_path), supervisor, interval=bad)


def test_gunicorn_child_exit_removes_the_snapshot_of_a_dead_worker_process(monkeypatch, tmp_path):
    monkeypatch.setenv("GWORKER_STATUS_DIR", str(tmp_path))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    path = tmp_path / "gworker-ui-4242.json"
    path.write_text("{}")

    class Log:
        def warning(self, *args):
            raise AssertionError(args)

    class Proc:
        pid = 4242
        log = Log()

    gunicorn_hooks.child_exit(Proc(), Proc())
    assert not path.exists()
    gunicorn_hooks.child_exit(Proc(), Proc())  # nothing left to remove: no complaint
    config = {}
    gunicorn_hooks.install(config)
    assert config["child_exit"] is gunicorn_hooks.child_exit
    util = pytest.importorskip("gunicorn.util")
    assert util.get_arity(config["child_exit"]) == 2
