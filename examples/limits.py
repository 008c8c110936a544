"""Bounded runs: a time limit, retries with backoff, and a cron schedule.

Run it with ``python examples/limits.py``; it exits 0 in about three seconds.

* ``fetch`` — a queue worker whose upstream fails twice, then answers: each
  item is retried in place (0.1 s, then 0.2 s later), in order;
* ``poll`` — an interval worker whose every run is cut off after 0.2 s: its
  ``on_error`` sees ``RunTimeout`` and the worker goes on;
* ``export`` — a task retried once after it timed out;
* ``tick`` — a cron worker, at every whole second of the wall clock.
"""
import sys
import time

import gevent

from gworker import RunTimeout, background_task, background_worker, task_supervisor

calls = {"fetch": [], "poll_timeouts": 0, "tick": []}


@background_worker(q=True, retries=3, retry_delay=0.1, retry_backoff=2, retry_for=ConnectionError)
def fetch(item, **kwargs):
    """Fails on its first two tries of each item; the third one succeeds."""
    calls["fetch"].append(item)
    if calls["fetch"].count(item) < 3:
        raise ConnectionError("upstream busy")


def poll_failed(**kwargs):
    if isinstance(sys.exc_info()[1], RunTimeout):
        calls["poll_timeouts"] += 1


@background_worker(interval=0.5, timeout=0.2, on_error=poll_failed)
def poll(**kwargs):
    """Takes too long every time: cut off at its limit."""
    gevent.sleep(1)


@background_task(timeout=0.2, retries=1, retry_delay=0.1)
def export(name):
    """Too slow on its first try, quick on its second."""
    gevent.sleep(1 if export_tries() == 1 else 0)
    return "exported %s" % name


_export_tries = []


def export_tries():
    _export_tries.append(1)
    return len(_export_tries)


@background_worker(cron="* * * * * *")  # six fields: the sixth is seconds
def tick(**kwargs):
    calls["tick"].append(time.time())


def main():
    task_supervisor.start()
    for worker in (fetch, poll, tick):
        worker.start()
    for item in ("a", "b"):
        fetch.put_threadsafe(item)
    task = export("report")
    print(task.wait(5), "after %d tries" % task.tries)
    gevent.sleep(2.6)
    for worker in (fetch, poll, tick):
        worker.stop()
    task_supervisor.stop()
    print("fetch calls:", calls["fetch"])
    info = fetch.get_info()
    print("fetch retries: %(retries)d, final failures: %(failures)d" % info)
    print("poll runs cut off by their time limit: %d" % calls["poll_timeouts"])
    print("cron ticks: %d, each just after a whole second: %s"
          % (len(calls["tick"]), all(t % 1 < 0.25 for t in calls["tick"])))
    assert calls["fetch"] == ["a", "a", "a", "b", "b", "b"] and info["failures"] == 0
    assert calls["poll_timeouts"] >= 3 and task.tries == 2
    assert len(calls["tick"]) >= 2


if __name__ == "__main__":
    main()
