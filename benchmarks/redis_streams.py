"""Items/s through a Redis stream: gworker's RedisStreamQueue workers beside a
raw redis-py XREADGROUP/XACK loop doing the same work, for 1, 2 and 4
consumer processes, in the same run.

    python benchmarks/redis_streams.py [--url redis://127.0.0.1:6379/0] [--items 20000]

Without ``--url`` it starts a redis-server of its own on a free loopback port
(no persistence). For each variant and process count a fresh stream is
pre-filled with ``--items`` JSON items; the consumers are started and wait;
the clock runs from "go" until the group has nothing left to deliver and
nothing pending (polled every 5 ms). Work per item, in both variants: decode
the JSON, add up its numbers. The raw loop reads ``COUNT`` entries, does the
work, and acknowledges the batch with one ``XACK``; gworker's queue worker reads
the same ``COUNT`` and sends its acknowledgements with its next read.
Consumers run un-patched (``--patched`` runs them under gevent.monkey).
"""
import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def work(item):
    return sum(item["v"])


# -- the consumer processes ------------------------------------------------------------------------

def raw_consumer(args):
    import redis

    r = redis.Redis.from_url(args.url)
    consumer = "raw-%d" % os.getpid()
    stream, group, count = args.stream, args.group, args.count
    print("ready", flush=True)
    sys.stdin.readline()
    while True:
        reply = r.xreadgroup(group, consumer, {stream: ">"}, count=count, block=200)
        if not reply:
            continue
        ids = []
        for entry_id, fields in reply[0][1]:
            work(json.loads(fields[b"d"]))
            ids.append(entry_id)
        r.xack(stream, group, *ids)


def gworker_consumer(args):
    import gevent
    from gevent.fileobject import FileObject

    from gworker import BackgroundQueueWorker, TaskSupervisor
    from gworker.redis import RedisStreamQueue

    q = RedisStreamQueue(args.stream, args.group, url=args.url, count=args.count, block_ms=200)
    sup = TaskSupervisor()
    sup.start()
    worker = BackgroundQueueWorker(func=lambda item, **kw: work(item), q=q, supervisor=sup)
    print("ready", flush=True)
    FileObject(sys.stdin).readline()
    worker.start()
    gevent.sleep(3600)


# -- the driver -------------------------------------------------------------------------------------

def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_server():
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: install it or pass --url")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="gworker-bench-redis-")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    return proc, workdir, "redis://127.0.0.1:%d/0" % port


def run_once(r, args, variant, processes):
    stream = "bench-%s-%s" % (variant, uuid.uuid4().hex[:8])
    group = "g"
    r.xgroup_create(stream, group, id="0", mkstream=True)
    pipe = r.pipeline(transaction=False)
    for i in range(args.items):
        pipe.xadd(stream, {b"d": json.dumps({"n": i, "v": [i, 1, 2, 3]})})
        if len(pipe) >= 1000:
            pipe.execute()
    pipe.execute()
    cmd = [sys.executable]
    if args.patched and variant == "gworker":
        cmd += ["-m", "gevent.monkey"]
    cmd += [os.path.abspath(__file__), "--role", variant, "--url", args.url, "--stream", stream,
            "--group", group, "--count", str(args.count)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    cpu_before = _children_cpu()
    children = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                for _ in range(processes)]
    try:
        for child in children:
            if child.stdout.readline().strip() != "ready":
                raise SystemExit("a %s consumer failed to start" % variant)
        started = time.perf_counter()
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        deadline = started + args.timeout
        while True:
            info = [g for g in r.xinfo_groups(stream) if g["name"] == b"g"][0]
            if info["lag"] == 0 and info["pending"] == 0:
                break
            if time.perf_counter() > deadline:
                raise SystemExit("%s with %d processes did not finish in %ss" % (variant, processes, args.timeout))
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
    finally:
        for child in children:
            child.send_signal(signal.SIGKILL)
            child.wait()
        r.delete(stream)
    cpu_us = (_children_cpu() - cpu_before) / args.items * 1e6
    return args.items / elapsed, cpu_us


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv=None):
    p = argparse.ArgumentParser(description="RedisStreamQueue vs a raw redis-py loop")
    p.add_argument("--url", help="a Redis to use (default: start a redis-server of its own)")
    p.add_argument("--items", type=int, default=20000)
    p.add_argument("--count", type=int, default=100, help="entries per XREADGROUP")
    p.add_argument("--processes", default="1,2,4")
    p.add_argument("--repeat", type=int, default=3, help="runs per cell; the best is reported")
    p.add_argument("--patched", action="store_true", help="run gworker consumers monkey-patched")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--role", choices=["raw", "gworker"], help=argparse.SUPPRESS)
    p.add_argument("--stream", help=argparse.SUPPRESS)
    p.add_argument("--group", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "raw":
        return raw_consumer(args)
    if args.role == "gworker":
        return gworker_consumer(args)

    import redis

    server = None
    if args.url is None:
        server, workdir, args.url = start_server()
    try:
        r = redis.Redis.from_url(args.url)
        for _ in range(200):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.025)
        print("%d items per run, COUNT %d, best of %d; gworker consumers %s"
              % (args.items, args.count, args.repeat, "monkey-patched" if args.patched else "un-patched"))
        print("(CPU: the consumer processes' user+system time per item, start-up included)")
        print("%-10s %14s %16s %8s %14s %14s" % ("processes", "raw items/s", "gworker items/s", "ratio",
                                               "raw CPU us", "gworker CPU us"))
        results = {}
        for n in [int(x) for x in args.processes.split(",")]:
            raw = max(run_once(r, args, "raw", n) for _ in range(args.repeat))
            gw = max(run_once(r, args, "gworker", n) for _ in range(args.repeat))
            results[n] = (raw[0], gw[0])
            print("%-10d %14.0f %16.0f %8.2f %14.1f %14.1f"
                  % (n, raw[0], gw[0], gw[0] / raw[0], raw[1], gw[1]), flush=True)
        return results
    finally:
        if server is not None:
            server.kill()
            server.wait()
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    out = main()
    sys.exit(0 if isinstance(out, dict) or out is None else 1)
