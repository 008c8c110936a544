"""One process of tests/test_singleton.py: a singleton worker (``--kind``
interval, cron, delay, event or continuous) on a RedisSingleton that appends
a line per run to ``--out`` as the run starts — ``<fence> <pid> <wall time>``
— then takes ``--sleep`` seconds, and appends ``<fence> <pid> <wall time>``
to ``--out``.end as it ends. Prints ``ready`` once started; SIGUSR1 triggers
the worker; SIGTERM stops it cleanly."""
import argparse
import os
import signal
import sys
import time

import gevent
from gevent.event import Event

from gworker import BackgroundEventWorker, BackgroundIntervalWorker, BackgroundWorker, TaskSupervisor
from gworker.redis import RedisSingleton


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--kind", default="interval")
    p.add_argument("--interval", type=float, default=None)
    p.add_argument("--delay", type=float, default=None)
    p.add_argument("--cron", default=None)
    p.add_argument("--ttl", type=float, default=1.0)
    p.add_argument("--sleep", type=float, default=0.0, help="seconds each run takes")
    a = p.parse_args()

    out = open(a.out, "a", buffering=1)
    end = open(a.out + ".end", "a", buffering=1)
    pid = os.getpid()

    def run(_fence, **kw):
        out.write("%d %d %.6f\n" % (_fence, pid, time.time()))
        if a.sleep:
            gevent.sleep(a.sleep)
        end.write("%d %d %.6f\n" % (_fence, pid, time.time()))

    sup = TaskSupervisor()
    sup.start()
    single = RedisSingleton(a.url, key=a.key, ttl=a.ttl)
    if a.kind == "event":
        worker = BackgroundEventWorker(func=run, supervisor=sup, name="job", singleton=single)
    elif a.kind == "continuous":
        worker = BackgroundWorker(func=run, supervisor=sup, name="job", singleton=single)
    else:
        timing = {"cron": a.cron} if a.kind == "cron" else (
            {"delay": a.delay} if a.kind == "delay" else {"interval": a.interval})
        worker = BackgroundIntervalWorker(func=run, supervisor=sup, name="job", singleton=single, **timing)
    stopped = Event()
    gevent.signal_handler(signal.SIGTERM, stopped.set)
    if a.kind in ("event", "delay"):
        gevent.signal_handler(signal.SIGUSR1, worker.trigger_threadsafe)
    worker.start()
    print("ready", flush=True)
    stopped.wait()
    worker.stop()
    sup.stop()
    out.close()
    end.close()
    print("stopped", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
