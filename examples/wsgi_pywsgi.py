"""A plain WSGI app served by gevent.pywsgi, with background workers beside it.

Run it::

    python examples/wsgi_pywsgi.py --port 8000

and try::

    curl http://127.0.0.1:8000/                      # hello
    curl -d 42 http://127.0.0.1:8000/items           # queue item "42" for the queue worker
    curl http://127.0.0.1:8000/_gworker              # JSON status of the workers

Stop it with Ctrl-C or SIGTERM: it stops accepting, lets requests finish, lets
the queue worker process every queued item (within ``--graceful-timeout``),
reports any item it could not process, and exits 0.

What runs:

* ``heartbeat`` — an interval worker, every 0.1 s;
* ``process_item`` — a queue worker fed by ``POST /items`` (the body is the
  item; ``?work=0.05`` makes processing it take that many seconds);
* the status endpoint at ``/_gworker`` (:mod:`gworker.integrations.status`);
* with ``REDIS_URL`` set (e.g. ``REDIS_URL=redis://127.0.0.1:6379/0``, and
  ``pip install gworker[redis]``): ``cluster_report`` — an interval worker,
  every second, that runs **once per cluster**: under ``gunicorn -w 4`` on
  three machines it still runs once a second, in whichever process claims
  that second first (:class:`gworker.redis.RedisSingleton`). It logs each
  run with the process that made it.

The same module is the application of the gunicorn example
(``examples/gunicorn_app.py``). Two environment variables exist for the
end-to-end tests: ``GWORKER_EXAMPLE_STATE_DIR`` — append every processed item to
``processed-<pid>.log`` and every unprocessed one to ``undrained-<pid>.log``
there, and run a bare gevent loop on the heartbeat's schedule that appends the
time of each of its wake-ups to ``probe-<pid>.log`` (what a loop written
without gworker gets from the same hub: the tests' baseline for the heartbeat);
``GWORKER_EXAMPLE_WORKERS=off`` — do not start the workers (a baseline).
"""
import argparse
import json
import logging
import os
import time
from urllib.parse import parse_qs

import gevent

from gworker import background_worker
from gworker.integrations import autostart, server_workers
from gworker.integrations.status import mount

STATE_DIR = os.environ.get("GWORKER_EXAMPLE_STATE_DIR")
WORKERS_ON = os.environ.get("GWORKER_EXAMPLE_WORKERS", "on") != "off"
REDIS_URL = os.environ.get("REDIS_URL")

heartbeats = {"count": 0}


@background_worker(interval=0.1)
def heartbeat(**kwargs):
    """Interval worker: a little periodic work, every 0.1 s (start to start)."""
    heartbeats["count"] += 1
    sum(range(1000))


@background_worker(q=True)
def process_item(item, **kwargs):
    """Queue worker: called once per POSTed item, in order."""
    name, work = item
    if work:
        gevent.sleep(work)  # stands for real work: I/O, a call to another service...
    _record("processed", name)


def report_undrained(worker, items):
    """Items still queued when the shutdown ran out of time: keep them somewhere."""
    logging.getLogger("example").warning("%s: %d item(s) not processed", worker.name, len(items))
    for name, _work in items:
        _record("undrained", name)


def schedule_probe(interval=0.1):
    """For the end-to-end tests: a bare gevent loop on the heartbeat's schedule
    (start to start; a wake-up later than the next time restarts the schedule
    from there, as an interval worker does), recording when it woke."""
    tick = time.monotonic()
    while True:
        _record("probe", "%.6f" % time.time())
        tick += interval
        now = time.monotonic()
        if tick < now:
            tick = now
        gevent.sleep(tick - now)


cluster_report = None
if REDIS_URL:
    from gworker.redis import RedisSingleton

    @background_worker(interval=1, singleton=RedisSingleton(url=REDIS_URL))
    def cluster_report(_fence, **kwargs):
        """Once per cluster, every second: ``_fence`` is the second's claim
        (it grows from run to run: a store written by this worker can refuse a
        write with a smaller one, from a run that is late)."""
        logging.getLogger("example").info("cluster_report %d in pid %d", _fence, os.getpid())
        _record("report", "%d %.6f" % (_fence, time.time()))

server_workers.on_undrained = report_undrained
if WORKERS_ON:
    autostart(heartbeat, process_item)  # started by the server integration, in each server process
    if cluster_report is not None:
        autostart(cluster_report)
    if STATE_DIR is not None:
        autostart(lambda: gevent.spawn(schedule_probe))

_files = {}


def _record(kind, name):
    if STATE_DIR is None:
        return
    key = (kind, os.getpid())
    f = _files.get(key)
    if f is None:
        f = _files[key] = open(os.path.join(STATE_DIR, "%s-%d.log" % key), "a", buffering=1)
    f.write("%s\n" % name)


def app(environ, start_response):
    """The application: GET / says hello, POST /items queues the body as an item."""
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    if path == "/" and method == "GET":
        return _reply(start_response, "200 OK", b"hello\n", "text/plain")
    if path == "/items" and method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        name = environ["wsgi.input"].read(length).decode("utf-8").strip()
        work = float(parse_qs(environ.get("QUERY_STRING", "")).get("work", ["0"])[0])
        if not name:
            return _reply(start_response, "400 Bad Request", b'{"error": "empty item"}')
        process_item.put_threadsafe((name, work))
        body = json.dumps({"queued": name, "pid": os.getpid()}).encode()
        return _reply(start_response, "200 OK", body)
    return _reply(start_response, "404 Not Found", b'{"error": "not found"}')


def _reply(start_response, status, body, ctype="application/json"):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


# The status endpoint beside the app: /_gworker -> JSON of task_supervisor.get_info().
application = mount(app, "/_gworker")


def main():
    from gworker.integrations.pywsgi import serve

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--graceful-timeout", type=float, default=10.0,
                        help="seconds from SIGTERM/SIGINT to exit, draining included")
    parser.add_argument("--access-log", action="store_true", help="log every request to stderr")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    print("serving on http://%s:%d (pid %d)" % (args.host, args.port, os.getpid()), flush=True)
    # Returns after SIGTERM/SIGINT and the graceful stop; the report was logged.
    serve(application, (args.host, args.port), graceful_timeout=args.graceful_timeout,
          log="default" if args.access_log else None)


if __name__ == "__main__":
    main()
