"""Async executors and aloops: coroutines and greenlets in one thread.

Run it with ``python examples/async_workers.py`` (or under
``python -m gevent.monkey``). Two aloops — asyncio loops running as greenlets
of the hub — each run an async worker; a queue worker with an async executor
is fed from a coroutine with ``await worker.put(...)``; a greenlet waits for a
coroutine's result with ``aloop.run(...)``.
"""
import asyncio

import gevent

from gworker import BackgroundAsyncWorker, background_worker, task_supervisor

log = []


async def beat(tag, **kwargs):
    loop = asyncio.get_running_loop()   # always this coroutine's own aloop
    await asyncio.sleep(0.02)
    gevent.sleep(0.001)                 # gevent-blocking calls are fine too
    assert asyncio.get_running_loop() is loop
    log.append(tag)


@background_worker(q=True)
async def store(item, **kwargs):
    await asyncio.sleep(0.001)
    log.append("stored %s" % item)


def main():
    task_supervisor.start()
    fast = task_supervisor.create_aloop("fast")
    slow = task_supervisor.create_aloop("slow", default=True)
    a = BackgroundAsyncWorker(func=beat, loop=fast, poll_delay=0.01, name="a")
    b = BackgroundAsyncWorker(func=beat, loop="slow", poll_delay=0.05, name="b")
    a.start("fast")
    b.start("slow")
    store.start()

    async def produce():
        for n in range(3):
            await store.put(n)
        return "produced 3 items"

    print(slow.run(produce()))          # a greenlet waits for a coroutine's result
    gevent.sleep(0.3)
    task_supervisor.stop()              # stops the workers, then the aloops
    print("fast beats: %d, slow beats: %d" % (log.count("fast"), log.count("slow")))
    print([entry for entry in log if entry.startswith("stored")])
    assert log.count("fast") > log.count("slow") > 0


if __name__ == "__main__":
    main()
