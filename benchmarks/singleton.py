"""What once-per-cluster costs: N interval workers per process × P processes
at ``interval=1`` — plain (each process runs all of them: the baseline) and
with ``singleton=RedisSingleton(...)`` (the cluster runs each once per
second) — and N idle singleton event workers per process (``leases``: what
their leases' renewals cost, ``ttl=3``, a renewal each second), in the same
run, against one redis-server.

    python benchmarks/singleton.py [--url redis://127.0.0.1:6379/0] [--workers 200] [--procs 3]
                                   [--seconds 10] [--rounds 2] [--patched]

Without ``--url`` it starts a redis-server of its own on a free loopback port
(no persistence). Variants alternate, ``--rounds`` times each; each figure is
the median of its rounds. Per variant: the runs made per second across the
cluster; Redis commands per second (``INFO stats``: the commands inside the
scripts count too) and script calls per second (``EVALSHA``); per process
the round trips per second to Redis, and the hub's lag seen by a 1 ms
ticker — as wall time (on a small machine it includes the OS preempting
the process) and as the CPU time the hub thread spent between two ticks
(what the process itself did without yielding: the figure gworker answers
for). In both variants the longest stretch is mostly the runs themselves:
the workers of one interval fall due together.
"""
import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- a worker process ------------------------------------------------------------------------------

def child(args):
    import gevent
    from gevent.fileobject import FileObject

    from gworker import BackgroundEventWorker, BackgroundIntervalWorker, TaskSupervisor
    from gworker.redis import RedisSingleton

    sup = TaskSupervisor()
    sup.start()
    runs = [0]
    window = [float("inf"), float("inf")]

    def job(**kw):
        if window[0] <= time.time() < window[1]:  # (counted by wall time: the same window in every process)
            runs[0] += 1

    single = RedisSingleton(args.url, ttl=3) if args.variant in ("singleton", "leases") else None
    if args.variant == "leases":  # idle event workers: their leases' renewals (or tries), nothing else
        workers = [BackgroundEventWorker(func=job, name="%s-%d" % (args.prefix, i), supervisor=sup, singleton=single)
                   for i in range(args.workers)]
    else:
        workers = [BackgroundIntervalWorker(func=job, interval=1, name="%s-%d" % (args.prefix, i), supervisor=sup,
                                            singleton=single) for i in range(args.workers)]
    for w in workers:
        w.start()
    print("ready", flush=True)
    # measure from the same wall time in every process (the driver's, once all are ready)
    at = float(FileObject(sys.stdin).readline())
    window[:] = [at, at + args.seconds]
    gevent.sleep(max(0.0, at - time.time()))
    lags, cpus = [], []
    trips0 = workers[0].get_info()["singleton"]["round_trips"] if single else 0
    end = at + args.seconds
    while time.time() < end:
        t, c = time.perf_counter(), time.thread_time()
        gevent.sleep(0.001)
        lags.append(time.perf_counter() - t - 0.001)
        cpus.append(time.thread_time() - c)
    trips = (workers[0].get_info()["singleton"]["round_trips"] - trips0) if single else 0
    made = runs[0]
    for w in workers:
        w.stop()
    sup.stop()
    lags.sort()
    cpus.sort()
    print(json.dumps({"runs": made, "round_trips": trips,
                      "lag_max_ms": lags[-1] * 1000, "lag_p99_ms": lags[int(len(lags) * 0.99)] * 1000,
                      "cpu_max_ms": cpus[-1] * 1000, "cpu_p99_ms": cpus[int(len(cpus) * 0.99)] * 1000}),
          flush=True)


# -- the driver -------------------------------------------------------------------------------------

if ROOT not in sys.path:  # (run as a script: benchmarks/ is on the path, not the tree's root)
    sys.path.insert(0, ROOT)
from benchmarks.redis_streams import start_server  # noqa: E402  (a redis-server of its own)


def run_once(r, args, variant):
    prefix = "bench-%s" % uuid.uuid4().hex[:8]
    cmd = [sys.executable] + (["-m", "gevent.monkey"] if args.patched else []) + [
        os.path.abspath(__file__), "--child", "--url", args.url, "--variant", variant, "--prefix", prefix,
        "--workers", str(args.workers), "--seconds", str(args.seconds)]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    children = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                for _ in range(args.procs)]
    for c in children:
        if c.stdout.readline().strip() != "ready":
            raise SystemExit("a worker process did not start")
    # Every process measures from the same wall time: half-way between two
    # whole seconds (the singleton workers' times: none falls near the
    # window's edges), after a second of warm-up with all of them started.
    at = math.floor(time.time()) + 1.5
    for c in children:
        c.stdin.write("%r\n" % at)
        c.stdin.flush()
    time.sleep(max(0.0, at - time.time()))
    stats0, calls0 = r.info("stats")["total_commands_processed"], _evalsha(r)
    t0 = time.time()
    outs = [json.loads(c.communicate(timeout=args.seconds + 60)[0].strip().splitlines()[-1]) for c in children]
    elapsed = min(time.time() - t0, args.seconds)
    stats1, calls1 = r.info("stats")["total_commands_processed"], _evalsha(r)
    seconds = args.seconds
    return {
        "runs_per_s": sum(o["runs"] for o in outs) / seconds,
        "redis_commands_per_s": (stats1 - stats0) / max(elapsed, seconds),
        "script_calls_per_s": (calls1 - calls0) / max(elapsed, seconds),
        "round_trips_per_s_per_process": max(o["round_trips"] for o in outs) / seconds,
        "hub_lag_max_ms": max(o["lag_max_ms"] for o in outs),
        "hub_lag_p99_ms": max(o["lag_p99_ms"] for o in outs),
        "hub_cpu_max_ms": max(o["cpu_max_ms"] for o in outs),
        "hub_cpu_p99_ms": max(o["cpu_p99_ms"] for o in outs),
    }


def _evalsha(r):
    return r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="a Redis to use (default: start a redis-server of its own)")
    p.add_argument("--workers", type=int, default=200, help="interval workers per process")
    p.add_argument("--procs", type=int, default=3, help="worker processes")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--patched", action="store_true", help="run the worker processes under gevent.monkey")
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--prefix", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    import redis

    server = workdir = None
    if args.url is None:
        server, workdir, args.url = start_server()
    try:
        r = redis.Redis.from_url(args.url)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        rounds = {"plain": [], "singleton": [], "leases": []}
        for _ in range(args.rounds):
            for variant in rounds:  # alternating: the machine's speed swings
                rounds[variant].append(run_once(r, args, variant))
        best = {variant: {k: statistics.median(got[k] for got in results) for k in results[0]}
                for variant, results in rounds.items()}
        print("%d interval=1 workers per process x %d processes, %s, median of %d rounds of %.0f s"
              % (args.workers, args.procs, "patched" if args.patched else "un-patched", args.rounds, args.seconds))
        keys = list(best["plain"])
        print("%-32s %12s %12s %12s" % ("", "plain", "singleton", "leases"))
        for k in keys:
            print("%-32s %12.2f %12.2f %12.2f" % (k, best["plain"][k], best["singleton"][k], best["leases"][k]))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"workers": args.workers, "procs": args.procs, "patched": args.patched, **best}, f,
                          indent=1)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait()
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
