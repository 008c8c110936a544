"""The worker kinds; the engine they share is in :mod:`gworker.workers.base`."""
from .continuous import BackgroundAsyncWorker, BackgroundWorker
from .decorator import background_worker
from .event import BackgroundEventWorker
from .interval import BackgroundIntervalWorker
from .queue import BackgroundQueueWorker

__all__ = [
    "BackgroundWorker", "BackgroundAsyncWorker", "BackgroundEventWorker", "BackgroundIntervalWorker",
    "BackgroundQueueWorker", "background_worker",
]
