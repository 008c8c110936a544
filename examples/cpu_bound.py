"""CPU-bound work in child processes, while the hub stays responsive.

Run it with ``python examples/cpu_bound.py`` (or monkey-patched:
``python -m gevent.monkey examples/cpu_bound.py``). A queue worker whose class
(in examples/cpu_workers.py) has a static ``run`` sends each item to the
supervisor's process pool; a ticker greenlet keeps its 10 ms beat meanwhile.
"""
import os
import sys
import time

import gevent

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cpu_workers import PrimeCounter  # noqa: E402

from gworker import task_supervisor  # noqa: E402


def main():
    task_supervisor.start()
    task_supervisor.create_mp_pool(processes=2)
    worker = PrimeCounter()
    worker.start()
    limits = [3_000_000 + i for i in range(6)]
    gaps = []

    def ticker():
        last = time.monotonic()
        while True:
            gevent.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    beat = gevent.spawn(ticker)
    t0 = time.monotonic()
    for limit in limits:
        worker.put_threadsafe(limit)
    with gevent.Timeout(60):
        while len(worker.answers) < len(limits):
            gevent.sleep(0.01)
    elapsed = time.monotonic() - t0
    beat.kill()
    task_supervisor.stop()  # stops the worker and shuts the pool down
    pids = {pid for _, pid in worker.answers.values()}
    print("counted primes below %d limits in %.2fs in child process(es) %s (parent %d)"
          % (len(limits), elapsed, sorted(pids), os.getpid()))
    print("primes below %d: %d" % (limits[0], worker.answers[limits[0]][0]))
    print("slowest 10 ms tick meanwhile: %.1f ms" % (max(gaps) * 1000))
    assert os.getpid() not in pids and worker.answers[limits[0]][0] == 216816


if __name__ == "__main__":
    main()
