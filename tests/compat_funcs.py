"""Module-level functions the compat tests send to process-pool children
(functions travel by reference, so they must live in an importable module)."""
import os
import time


def args_of(*args, **kwargs):
    """Return exactly what the child was called with, and the child's pid."""
    return args, kwargs, os.getpid()


def add(a, b=0):
    return a + b


def slow_add(a, b, seconds):
    time.sleep(seconds)
    return a + b


def boom(message):
    raise ValueError(message)
