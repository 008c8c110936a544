"""Quick start: one worker of each kind, working side by side, then a clean stop.

Run it with ``python examples/quickstart.py``; it exits 0 in about a second.
"""
import gevent

from gworker import background_worker, task_supervisor

seen = {"continuous": 0, "queue": [], "event": 0, "interval": 0}


@background_worker
def heartbeat(**kwargs):
    """A continuous worker: called again and again, yielding between calls."""
    seen["continuous"] += 1
    gevent.sleep(0.1)


@background_worker(q=True)
def consumer(item, **kwargs):
    """A queue worker: called once per item, in order."""
    seen["queue"].append(item)


@background_worker(e=True)
def on_event(**kwargs):
    """An event worker: called each time it is triggered."""
    seen["event"] += 1


@background_worker(interval=0.1)
def ticker(**kwargs):
    """An interval worker: called every 100 ms, start to start."""
    seen["interval"] += 1


def main():
    task_supervisor.start()
    for worker in (heartbeat, consumer, on_event, ticker):
        worker.start()
    for item in range(5):
        consumer.put_threadsafe(item)
    on_event.trigger_threadsafe()
    gevent.sleep(0.55)
    for worker in (heartbeat, consumer, on_event, ticker):
        worker.stop()
    task_supervisor.stop()
    print("continuous worker ran %(continuous)d times" % seen)
    print("queue worker got %s" % seen["queue"])
    print("event worker ran %(event)d time(s)" % seen)
    print("interval worker ran %(interval)d times in 0.55 s" % seen)
    assert seen["queue"] == [0, 1, 2, 3, 4] and seen["event"] == 1 and seen["interval"] >= 5


if __name__ == "__main__":
    main()
