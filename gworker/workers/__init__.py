"""The worker kinds: each decides *when* its executor runs.

*How* it runs is written once: :mod:`gworker.workers._engine` (the call path,
built at each ``start()``), :mod:`gworker.workers._run` (what one start owns,
and its end) and :mod:`gworker.workers.base` (parameters, hooks, lifecycle).
"""
from .continuous import BackgroundAsyncWorker, BackgroundWorker
from .decorator import background_worker
from .event import BackgroundEventWorker
from .interval import BackgroundIntervalWorker
from .queue import BackgroundQueueWorker

__all__ = [
    "BackgroundWorker", "BackgroundAsyncWorker", "BackgroundEventWorker", "BackgroundIntervalWorker",
    "BackgroundQueueWorker", "background_worker",
]
