"""A quick measurement of what singleton workers cost (not a test; issue 20's
figures): N singleton interval workers per process × P processes against one
redis-server, for S seconds; prints Redis commands per second (``INFO
stats``: the commands inside the claim script count too, about three per
claim), claims per second (EVALSHA calls, ``INFO commandstats``), and per
process the runs made, the times run elsewhere, and the largest lag a 1 ms
ticker saw (wall time: on a small machine it includes the OS's preemption).

    python tests/singleton_cost.py --url redis://127.0.0.1:6379/0 --workers 200 --procs 3 --seconds 10

(Under ``python -m gevent.monkey`` for the patched world.)
"""
import argparse
import json
import multiprocessing
import time
import uuid


def process(url, n, seconds, prefix, queue):
    import gevent

    from gworker import BackgroundIntervalWorker, TaskSupervisor
    from gworker.redis import RedisSingleton

    sup = TaskSupervisor()
    sup.start()
    runs = [0]

    def job(**kw):
        runs[0] += 1

    single = RedisSingleton(url, ttl=5)
    workers = [BackgroundIntervalWorker(func=job, interval=1, name="%s-%d" % (prefix, i), supervisor=sup,
                                        singleton=single) for i in range(n)]
    for w in workers:
        w.start()
    lag = [0.0]

    def ticker():
        while True:
            t = time.monotonic()
            gevent.sleep(0.001)
            lag[0] = max(lag[0], time.monotonic() - t - 0.001)

    g = gevent.spawn(ticker)
    gevent.sleep(seconds)
    g.kill()
    for w in workers:
        w.stop()
    sup.stop()
    queue.put({"runs": runs[0], "max_hub_lag_ms": round(lag[0] * 1000, 2),
               "ran_elsewhere": sum(w.get_info()["singleton"]["ran_elsewhere"] for w in workers)})


def main():
    import redis

    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--workers", type=int, default=200)
    p.add_argument("--procs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    r = redis.Redis.from_url(a.url)
    prefix = "cost-" + uuid.uuid4().hex[:6]
    before, stats0 = r.info("stats")["total_commands_processed"], r.info("commandstats")
    t0 = time.time()
    q = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=process, args=(a.url, a.workers, a.seconds, prefix, q))
             for _ in range(a.procs)]
    for proc in procs:
        proc.start()
    results = [q.get() for _ in procs]
    for proc in procs:
        proc.join()
    elapsed = time.time() - t0
    after, stats1 = r.info("stats")["total_commands_processed"], r.info("commandstats")
    evalsha = stats1.get("cmdstat_evalsha", {}).get("calls", 0) - stats0.get("cmdstat_evalsha", {}).get("calls", 0)
    print(json.dumps({"workers_per_process": a.workers, "processes": a.procs, "seconds": round(elapsed, 2),
                      "redis_commands_per_s": round((after - before) / elapsed, 1),
                      "claims_per_s": round(evalsha / elapsed, 1), "processes_figures": results}, indent=1))


if __name__ == "__main__":
    main()
