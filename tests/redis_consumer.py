"""One consumer process for tests/test_redis_streams.py and the benchmark:
a queue worker on a RedisStreamQueue that appends each item it processed to
``--out`` (one line per item, written before the executor returns, so before
the acknowledgement). SIGTERM stops it cleanly."""
import argparse
import signal

import gevent
from gevent.event import Event

from gworker import BackgroundQueueWorker, TaskSupervisor
from gworker.redis import RedisStreamQueue


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--claim-idle", type=float, default=1.0)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--sleep", type=float, default=0.0, help="seconds each item takes")
    p.add_argument("--hold-after", type=int, default=-1,
                   help="after this many items, hang inside the next one (to be killed)")
    p.add_argument("--fail-item", default=None,
                   help="raise for this item (printing 'failed ITEM' first)")
    p.add_argument("--retry-delay", type=float, default=1.0)
    a = p.parse_args()

    q = RedisStreamQueue(a.stream, a.group, url=a.url, claim_idle=a.claim_idle, count=a.count,
                         block_ms=500, backoff_max=0.5, retry_delay=a.retry_delay)
    out = open(a.out, "a", buffering=1)
    done = [0]

    def run(item, **kw):
        if a.fail_item is not None and str(item) == a.fail_item:
            print("failed %s" % item, flush=True)
            raise RuntimeError("told to fail %s" % item)
        if 0 <= a.hold_after <= done[0]:
            print("holding %s" % item, flush=True)
            gevent.sleep(3600)
        if a.sleep:
            gevent.sleep(a.sleep)
        out.write("%s\n" % item)
        done[0] += 1

    sup = TaskSupervisor()
    sup.start()
    quiet = (lambda: None) if a.fail_item is not None else None  # the failure is on purpose
    worker = BackgroundQueueWorker(func=run, q=q, supervisor=sup, on_error=quiet)
    stopped = Event()
    gevent.signal_handler(signal.SIGTERM, stopped.set)
    worker.start()
    print("ready %s" % q.consumer, flush=True)
    stopped.wait()
    worker.stop()
    sup.stop()
    q.close()
    out.close()
    print("stopped after %d items" % done[0], flush=True)


if __name__ == "__main__":
    main()
