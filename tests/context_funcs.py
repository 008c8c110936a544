"""A context variable and what reads it, for tests/test_context.py: module-level,
so that a process-pool child (which gets a call by reference) can look them up."""
import contextvars

from gworker import BackgroundQueueWorker

#: what the tests set in a producer's context
request_id = contextvars.ContextVar("request_id", default=None)


def read_request_id(*_args, **_kwargs):
    """Run in a child process: what the child's context holds."""
    return request_id.get()


class ReadingQueueWorker(BackgroundQueueWorker):
    """A static ``run`` (the process pool's): returns what its child sees."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.results = []

    @staticmethod
    def run(task, **kwargs):
        return task, request_id.get()

    def process_result(self, result):
        self.results.append(result)
