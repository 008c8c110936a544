"""Three processes, one job: a singleton interval worker runs once per time
across all of them, and a singleton event worker runs once per trigger,
wherever it is triggered.

    python examples/once_per_cluster.py --url redis://127.0.0.1:6379/0

The script starts three worker processes (itself, with ``--child``), as
``gunicorn -w 3`` would. Each has the same two workers, both
``singleton=RedisSingleton(url)``:

* ``tick`` — an interval worker, every 0.5 s: each time is claimed in Redis,
  and only the process that wins it runs it;
* ``rebuild`` — an event worker, holding a lease: whichever process holds it
  runs the triggers that any of the three makes.

After 3 s it stops them (SIGTERM) and prints what ran where. Works
monkey-patched (``python -m gevent.monkey examples/once_per_cluster.py``) or
not. Needs ``pip install gworker[redis]`` and a Redis server.
"""
import argparse
import os
import signal
import sys
import time
import uuid

import gevent
import gevent.subprocess
from gevent.event import Event

from gworker import BackgroundEventWorker, BackgroundIntervalWorker, TaskSupervisor
from gworker.redis import RedisSingleton


def child(args):
    """A worker process: prints one line per run — ``<worker> <fence> <pid>``."""
    single = RedisSingleton(args.url, ttl=2, namespace=args.namespace)
    pid = os.getpid()
    supervisor = TaskSupervisor()
    supervisor.start()
    tick = BackgroundIntervalWorker(func=lambda _fence, **kw: print("tick", _fence, pid, flush=True),
                                    interval=0.5, name="tick", supervisor=supervisor, singleton=single)
    rebuild = BackgroundEventWorker(func=lambda _fence, **kw: print("rebuild", _fence, pid, flush=True),
                                    name="rebuild", supervisor=supervisor, singleton=single)
    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGUSR1, rebuild.trigger_threadsafe)  # the parent's way to say "trigger"
    tick.start()
    rebuild.start()
    print("ready", flush=True)
    stop.wait()
    tick.stop()
    rebuild.stop()
    supervisor.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", default="example:%s" % uuid.uuid4().hex[:8], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    cmd = [sys.executable] + (["-m", "gevent.monkey"] if "gevent.monkey" in sys.modules and
                              gevent.monkey.is_module_patched("socket") else [])
    cmd += [os.path.abspath(__file__), "--child", "--url", args.url, "--namespace", args.namespace]
    procs = [gevent.subprocess.Popen(cmd, stdout=gevent.subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise SystemExit("a worker process did not start: %s" % p.wait())
    gevent.sleep(0.5)
    for i in range(3):  # each process triggers once, in turn
        os.kill(procs[i].pid, signal.SIGUSR1)
        gevent.sleep(0.5)
    gevent.sleep(1.0)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    runs = []
    for p in procs:
        out, _ = p.communicate(timeout=10)
        runs.extend(line.split() for line in out.splitlines())
    ticks = sorted(int(fence) for name, fence, _pid in runs if name == "tick")
    rebuilds = [pid for name, _fence, pid in runs if name == "rebuild"]
    print("tick: %d runs in %d processes, each time once: %s"
          % (len(ticks), len({pid for name, _f, pid in runs if name == "tick"}), len(set(ticks)) == len(ticks)))
    print("rebuild: 3 triggers from 3 processes, %d runs, all in one process: %s"
          % (len(rebuilds), len(set(rebuilds)) == 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
