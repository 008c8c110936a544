"""The worker kinds; the engine they share is in :mod:`gworker.workers.base`."""
from .continuous import BackgroundWorker
from .decorator import background_worker
from .event import BackgroundEventWorker
from .interval import BackgroundIntervalWorker
from .queue import BackgroundQueueWorker

__all__ = [
    "BackgroundWorker", "BackgroundEventWorker", "BackgroundIntervalWorker",
    "BackgroundQueueWorker", "background_worker",
]
