"""One process of tests/test_singleton.py: a singleton interval (or cron)
worker on a RedisSingleton that appends a line per run to ``--out`` as the
run starts — ``<fence> <pid> <wall time>`` — then takes ``--sleep`` seconds.
Prints ``ready`` once started, and ``ran <fence>`` per run; SIGTERM stops it
cleanly."""
import argparse
import os
import signal
import sys
import time

import gevent
from gevent.event import Event

from gworker import BackgroundIntervalWorker, TaskSupervisor
from gworker.redis import RedisSingleton


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--interval", type=float, default=None)
    p.add_argument("--cron", default=None)
    p.add_argument("--ttl", type=float, default=1.0)
    p.add_argument("--sleep", type=float, default=0.0, help="seconds each run takes")
    a = p.parse_args()

    out = open(a.out, "a", buffering=1)
    pid = os.getpid()

    def run(_fence, **kw):
        out.write("%d %d %.6f\n" % (_fence, pid, time.time()))
        print("ran %d" % _fence, flush=True)
        if a.sleep:
            gevent.sleep(a.sleep)

    sup = TaskSupervisor()
    sup.start()
    timing = {"cron": a.cron} if a.cron else {"interval": a.interval}
    worker = BackgroundIntervalWorker(func=run, supervisor=sup, name="job",
                                      singleton=RedisSingleton(a.url, key=a.key, ttl=a.ttl), **timing)
    stopped = Event()
    gevent.signal_handler(signal.SIGTERM, stopped.set)
    worker.start()
    print("ready", flush=True)
    stopped.wait()
    worker.stop()
    sup.stop()
    out.close()
    print("stopped", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
