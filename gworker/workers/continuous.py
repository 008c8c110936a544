"""Continuous workers: the executor runs again and again in the worker's own greenlet.

``BackgroundWorker`` yields to the hub between calls (a full loop iteration, see
:func:`gworker._hubsafe.yield_to_hub`), so
even an executor that never yields cannot starve other greenlets for longer
than one call. It takes no slot of the supervisor's pool: a continuous worker
*is* a long-lived greenlet, not a burst of work.
"""
from __future__ import annotations

import gevent

from .._hubsafe import yield_to_hub
from ._engine import Engine
from ._run import Halt, Run
from .base import Worker

__all__ = ["BackgroundWorker", "BackgroundAsyncWorker"]


class BackgroundWorker(Worker):
    """Calls its executor in a loop, in its own greenlet, until stopped.

    Also the base class of every other worker kind, as in atasker."""

    holds_slot = False
    kind = "continuous"

    def _launch(self, run: Run, engine: Engine) -> None:
        run.spawn_loop(self._loop, run, engine)

    def _pause(self, run: Run) -> None:
        """Between two calls: yield to the hub."""
        run.park(yield_to_hub)

    def _loop(self, run: Run, engine: Engine) -> None:
        call = engine.call
        lease = self._singleton
        try:
            while run.active:
                if lease is not None:
                    # Once per cluster (see gworker.redis.singleton): a call
                    # only while this process holds the lease.
                    fence = lease.hold(run)
                    if fence is None:
                        break
                    engine.fence = fence  # type: ignore[attr-defined]  # (a FencedEngine)
                    outcome = call()
                    lease.ran()
                    if outcome is False:
                        break
                elif call() is False:
                    break
                if not run.active:
                    break
                self._pause(run)
        except Halt:
            pass
        finally:
            run.end(self._finished)


class BackgroundAsyncWorker(BackgroundWorker):
    """Like :class:`BackgroundWorker`, for an ``async def`` executor.

    Each call runs on the worker's aloop — its ``loop``/``_loop`` (an aloop,
    an aloop name, or the asyncio loop of an aloop), else the supervisor's
    default aloop, else one the supervisor keeps for itself — while the
    worker's greenlet waits for it cooperatively. Between calls it pauses
    ``poll_delay`` seconds. ``stop(wait=True)`` lets the running coroutine
    finish; nothing is cancelled."""

    kind = "async"

    def _pause(self, run: Run) -> None:
        run.park(gevent.sleep, self.poll_delay)
