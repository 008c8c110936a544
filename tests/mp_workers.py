"""Worker classes with static ``run`` executors, for the multiprocessing tests.

They live in an importable module: a static ``run`` travels to the child
process by reference (module, class and name).
"""
import os
import signal
import time

from gworker import BackgroundIntervalWorker, BackgroundQueueWorker


class PidQueueWorker(BackgroundQueueWorker):
    """Returns where and with what each item ran; the results are kept in order."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.results = []

    @staticmethod
    def run(task, *args, **kwargs):
        if task == "boom":
            raise ValueError("boom in the child")
        if task == "die":
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(10)
        return (task, os.getpid(), args, sorted(kwargs))

    def process_result(self, result):
        self.results.append(result)


class CountingIntervalWorker(BackgroundIntervalWorker):
    """Stops itself through process_result after three runs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    @staticmethod
    def run(*args, **kwargs):
        return os.getpid()

    def process_result(self, result):
        self.seen.append(result)
        return len(self.seen) < 3


def square(x, **kwargs):
    return x * x, sorted(kwargs)


def kwargs_of(**kwargs):
    return kwargs


def sleep_then(seconds, value, **_kwargs):
    time.sleep(seconds)
    return value



def echo_task(value, **_kwargs):
    """Return ``value``: a tiny put_task(tt=TT_MP) target (it takes ``_task_id``)."""
    return value


class SlowQueueWorker(BackgroundQueueWorker):
    """Sleeps (in its child) as long as the item says; returns the child's pid."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.results = []

    @staticmethod
    def run(seconds, *args, **kwargs):
        time.sleep(seconds)
        return seconds, os.getpid()

    def process_result(self, result):
        self.results.append(result)


def fails_first(path, **_kwargs):
    """Fails on its first call for ``path`` (a file marks that it was made), then returns "ok"."""
    if not os.path.exists(path):
        open(path, "w").close()
        raise ValueError("first try")
    return "ok"
