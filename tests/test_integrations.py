"""The server integrations in-process: status app, mount, WorkerSet, hooks, GracefulServer."""
import io
import json
import os

import gevent
import gevent.queue
import pytest
from gevent.event import Event
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from gworker import BackgroundIntervalWorker, BackgroundQueueWorker
from gworker.integrations import WorkerSet
from gworker.integrations import gunicorn as gunicorn_hooks
from gworker.integrations.pywsgi import GracefulServer
from gworker.integrations.status import info_dict, mount, status_app

from conftest import wait_until


def call(app, path="/", method="GET", script_name=""):
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": script_name,
               "wsgi.input": io.BytesIO()}
    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body, environ


def test_status_app_reports_every_worker_figure(supervisor):
    q = BackgroundQueueWorker(func=lambda item, **kw: None, name="q", supervisor=supervisor)
    q.start()
    q.put_threadsafe(1)
    wait_until(lambda: q.runs == 1)
    q.stop()  # stopped workers leave get_info(); a started one shows up:
    q.start()
    status, headers, body, _ = call(status_app(supervisor), "")
    assert status == "200 OK" and headers["Content-Type"] == "application/json"
    info = json.loads(body)
    assert info["id"] == supervisor.id and info["active"] is True and info["pid"] == os.getpid()
    (w,) = info["workers"]
    assert {k: w[k] for k in ("name", "kind", "active", "runs", "errors", "queue_length")} == {
        "name": "q", "kind": "queue", "active": True, "runs": 1, "errors": 0, "queue_length": 0}
    for key in ("priority", "last_run", "last_duration"):
        assert key in w
    assert call(status_app(supervisor), "", "POST")[0].startswith("405")


def test_mount_dispatches_by_prefix(supervisor):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"app:" + environ["PATH_INFO"].encode()]

    def status(environ, start_response):
        start_response("200 OK", [])
        return [("status:%s|%s" % (environ["SCRIPT_NAME"], environ["PATH_INFO"])).encode()]

    mounted = mount(app, "/_gworker", status=status)
    assert call(mounted, "/_gworker")[2] == b"status:/_gworker|"
    assert call(mounted, "/_gworker/x", script_name="/api")[2] == b"status:/api/_gworker|/x"
    assert call(mounted, "/_gworkers")[2] == b"app:/_gworkers"
    assert call(mounted, "/")[2] == b"app:/"
    with pytest.raises(ValueError):
        mount(app, "_gworker")
    assert json.loads(call(mount(app, supervisor=supervisor), "/_gworker")[2])["id"] == supervisor.id
    assert info_dict(supervisor)["workers"] == []


def test_worker_set_starts_once_and_drains(supervisor):
    done = []
    q = BackgroundQueueWorker(func=lambda item, **kw: (gevent.sleep(0.001), done.append(item)),
                              supervisor=supervisor)
    called = []
    workers = WorkerSet(supervisor)
    assert workers.add(q, lambda: called.append(1)) is q
    with pytest.raises(TypeError):
        workers.add(42)
    assert workers.start() and not workers.start()
    assert q.is_active() and called == [1]
    for i in range(50):
        q.put_threadsafe(i)
    report = workers.shutdown(timeout=5)
    assert done == list(range(50)) and report.ok
    assert report.drained[q.name] >= 1 and report.undrained == {}
    assert not supervisor.is_active() and not q.is_active()


def test_worker_set_reports_what_the_deadline_cut_off(supervisor):
    done, reported = [], []
    q = BackgroundQueueWorker(func=lambda item, **kw: (gevent.sleep(0.05), done.append(item)),
                              supervisor=supervisor)
    tick = BackgroundIntervalWorker(func=lambda **kw: None, interval=0.01, supervisor=supervisor)
    workers = WorkerSet(supervisor, on_undrained=lambda w, items: reported.extend(items))
    workers.add(q, tick)
    workers.start()
    for i in range(20):
        q.put_threadsafe(i)
    report = workers.shutdown(timeout=0.12)
    assert report.elapsed < 0.12 + 0.3
    assert sorted(done + reported) == list(range(20))  # processed or reported, never both
    assert reported and report.undrained[q.name] == reported
    assert report.interrupted == {q.name: reported[0]}  # the run cut off at the deadline
    assert not report.ok and q.name in report.unfinished
    assert "left undrained" in report.summary()


def test_worker_set_shutdown_without_drain_reports_everything(supervisor):
    q = BackgroundQueueWorker(func=lambda item, **kw: None, supervisor=supervisor)
    workers = WorkerSet(supervisor, on_undrained=lambda w, items: None)
    workers.add(q)
    workers.start()
    q.stop()
    for i in range(5):
        q.put_threadsafe(i)
    q.start()
    q.stop(wait=False)
    report = workers.shutdown(timeout=1, drain=False)
    assert sum(report.drained.values()) + len(report.undrained.get(q.name, [])) == 5


class MinimalQueue:
    """The queue-object protocol's required part only: get, qsize, put_threadsafe."""

    def __init__(self):
        self._q = gevent.queue.Queue()

    def get(self):
        return self._q.get()

    def qsize(self):
        return self._q.qsize()

    def put_threadsafe(self, item):
        self._q.put(item)


def test_worker_set_shutdown_reports_what_a_minimal_queue_object_holds(supervisor):
    gate, reported, done = Event(), [], []
    mq = MinimalQueue()
    q = BackgroundQueueWorker(func=lambda item, **kw: (gate.wait(), done.append(item)), q=mq,
                              supervisor=supervisor)
    workers = WorkerSet(supervisor, on_undrained=lambda w, items: reported.extend(items))
    workers.add(q)
    workers.start()
    for i in range(5):
        q.put_threadsafe(i)
    wait_until(lambda: mq.qsize() == 4)  # the worker holds item 0, blocked in its executor
    report = workers.shutdown(timeout=0.1)
    assert done == [] and reported == [0, 1, 2, 3, 4]
    assert report.interrupted == {q.name: 0} and report.undrained == {q.name: [0, 1, 2, 3, 4]}
    assert mq.qsize() == 0


@pytest.mark.parametrize("drain", [True, False])
def test_worker_set_shutdown_leaves_a_gevent_queue_joinable(supervisor, drain):
    gate = Event()
    q = BackgroundQueueWorker(func=lambda item, **kw: gate.wait(), supervisor=supervisor)
    workers = WorkerSet(supervisor, on_undrained=lambda w, items: None)
    workers.add(q)
    workers.start()
    for i in range(5):
        q.put_threadsafe(i)
    wait_until(lambda: q.get_queue_obj().qsize() == 4)  # item 0 is in the executor
    report = workers.shutdown(timeout=0.1, drain=drain)
    assert report.interrupted == {q.name: 0} and len(report.undrained[q.name]) == 5
    assert q.get_queue_obj().join(timeout=1), "the reported items are done"


def test_gunicorn_install_chains_hooks_with_gunicorn_arity():
    calls = []
    config = {
        "post_worker_init": lambda worker: calls.append("theirs-init"),
        "worker_exit": lambda server, worker: calls.append("theirs-exit"),
    }
    gunicorn_hooks.install(config)
    assert config["worker_int"] is gunicorn_hooks.worker_int
    assert config["worker_abort"] is gunicorn_hooks.worker_abort
    util = pytest.importorskip("gunicorn.util")
    assert [util.get_arity(config[n]) for n in ("post_worker_init", "worker_int", "worker_abort", "worker_exit")] \
        == [1, 1, 1, 2]
    config["worker_exit"](None, None)  # not a worker process where post_worker_init ran: ours is a no-op
    assert calls == ["theirs-exit"]
    again = dict(config)
    gunicorn_hooks.install(again)  # installing twice does not chain twice
    assert again["worker_exit"] is config["worker_exit"]


def test_graceful_server_stops_accepting_then_drains(supervisor):
    done = []
    q = BackgroundQueueWorker(func=lambda item, **kw: (gevent.sleep(0.002), done.append(item)),
                              supervisor=supervisor)

    def app(environ, start_response):
        q.put_threadsafe(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    workers = WorkerSet(supervisor)
    workers.add(q)
    server = WSGIServer(("127.0.0.1", 0), app, spawn=Pool(10), log=None)
    runner = GracefulServer(server, workers, graceful_timeout=5, signals=())
    finished = Event()
    glet = gevent.spawn(lambda: (runner.serve_forever(), finished.set()))
    wait_until(lambda: server.started and q.is_active())
    from test_wsgi_e2e import request

    for i in range(20):
        assert request(server.server_port, path="/%d" % i)[0] == 200
    runner.request_stop()
    assert finished.wait(5)
    glet.join()
    assert done == ["/%d" % i for i in range(20)] and runner.report.ok
    assert server.closed and not supervisor.is_active()
