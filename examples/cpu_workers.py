"""The worker class of examples/cpu_bound.py, in a module of its own.

A static ``run`` travels to the child process by reference (this module, the
class, the method name), so it must live in an importable module.
"""
import os

from gworker import BackgroundQueueWorker


def count_primes(limit):
    """CPU-bound work: how many primes are below ``limit``."""
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\x00\x00"
    for i in range(2, int(limit ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = bytearray(len(range(i * i, limit, i)))
    return sum(sieve)


class PrimeCounter(BackgroundQueueWorker):
    """Counts primes below each queued limit, in the supervisor's process pool."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.answers = {}

    @staticmethod
    def run(limit, **kwargs):
        # Runs in a child process: no access to self, and no _worker keyword.
        return limit, count_primes(limit), os.getpid()

    def process_result(self, result):
        # Runs back in the hub, in order.
        limit, primes, pid = result
        self.answers[limit] = (primes, pid)
