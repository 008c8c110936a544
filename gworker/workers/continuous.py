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
from .base import Halt, Worker

__all__ = ["BackgroundWorker", "BackgroundAsyncWorker"]


class BackgroundWorker(Worker):
    """Calls its executor in a loop, in its own greenlet, until stopped.

    Also the base class of every other worker kind, as in atasker."""

    holds_slot = False
    kind = "continuous"

    def _launch(self, gen: int) -> None:
        self._greenlet = gevent.spawn(self._loop, gen)

    def _pause(self) -> None:
        """Between two calls: yield to the hub."""
        self._park(yield_to_hub)

    def _loop(self, gen: int) -> None:
        try:
            while self._active and self._gen == gen:
                if not self._execute():
                    break
                self._pause()
        except Halt:
            pass
        finally:
            self._finished(gen)


class BackgroundAsyncWorker(BackgroundWorker):
    """Like :class:`BackgroundWorker`, for an ``async def`` executor.

    Each call runs on the worker's aloop — its ``loop``/``_loop`` (an aloop,
    an aloop name, or the asyncio loop of an aloop), else the supervisor's
    default aloop, else one the supervisor keeps for itself — while the
    worker's greenlet waits for it cooperatively. Between calls it pauses
    ``poll_delay`` seconds. ``stop(wait=True)`` lets the running coroutine
    finish; nothing is cancelled."""

    kind = "async"

    def _pause(self) -> None:
        self._park(gevent.sleep, self.poll_delay)
