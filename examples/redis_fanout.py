"""One producer, three consumer processes, one Redis stream.

    python examples/redis_fanout.py --url redis://127.0.0.1:6379/0

The producer appends ``--items`` orders to a stream; three consumer processes
— each a plain gworker queue worker whose queue is a ``RedisStreamQueue`` of
the same consumer group — share them. When the group has nothing left to
deliver and nothing pending, the producer stops the consumers (SIGTERM: each
finishes and acknowledges its current item) and prints a summary. Works
monkey-patched (``python -m gevent.monkey examples/redis_fanout.py``) or not.
"""
import argparse
import json
import os
import signal
import sys
import time
import uuid

import gevent
import gevent.subprocess
from gevent.event import Event

from gworker import BackgroundQueueWorker, TaskSupervisor
from gworker.redis import RedisStreamQueue


def consume(args):
    """A consumer process: bill each order, report what it did at the end."""
    orders = RedisStreamQueue(args.stream, group="billing", url=args.url, claim_idle=5)
    billed = []

    def bill(order, **kwargs):
        gevent.sleep(0.001)  # some I/O: a payment API call, say
        billed.append(order["id"])

    supervisor = TaskSupervisor()
    supervisor.start()
    worker = BackgroundQueueWorker(func=bill, q=orders, supervisor=supervisor, name="bill")
    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    worker.start()
    print("ready", flush=True)
    stop.wait()
    worker.stop()  # finishes and acknowledges the current order
    supervisor.stop()
    orders.close()
    print(json.dumps({"consumer": orders.consumer, "billed": billed}), flush=True)


def produce(args):
    stream = "orders-" + uuid.uuid4().hex[:8]
    orders = RedisStreamQueue(stream, group="billing", url=args.url)
    me = [sys.executable] + (["-m", "gevent.monkey"] if _patched() else []) + [os.path.abspath(__file__)]
    children = [
        gevent.subprocess.Popen(me + ["--consumer", "--url", args.url, "--stream", stream],
                                stdout=gevent.subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for child in children:
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("a consumer failed to start")
    started = time.monotonic()
    orders.put_many({"id": i, "amount": i % 97} for i in range(args.items))
    deadline = started + args.timeout
    while (orders.lag() or orders.pending()) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    elapsed = time.monotonic() - started
    reports = []
    for child in children:
        child.send_signal(signal.SIGTERM)
    for child in children:
        out, _ = child.communicate(timeout=30)
        reports.append(json.loads(out.strip().splitlines()[-1]))
    seen = [i for r in reports for i in r["billed"]]
    lost = set(range(args.items)) - set(seen)
    print("%d items processed by %d consumers in %.2fs" % (args.items, len(reports), elapsed))
    for r in reports:
        print("  %s: %d" % (r["consumer"], len(r["billed"])))
    print("duplicates: %d, lost: %d" % (len(seen) - len(set(seen)), len(lost)))
    client = orders._thread_client()[0]
    client.delete(stream, orders.dead_letter, orders.errors_key)
    orders.close()
    return 1 if lost else 0


def _patched():
    import gevent.monkey

    return gevent.monkey.is_module_patched("socket")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="redis://localhost:6379/0")
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--consumer", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--stream", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.consumer:
        consume(args)
        return 0
    return produce(args)


if __name__ == "__main__":
    sys.exit(main())
