"""Functions the process-pool time-limit tests send to child processes (a
call travels by reference, so they live in an importable module; see
``tests/proc_funcs.py``)."""
import os
import time


def echo_pid(value):
    """``(value, pid)``: which child ran the call."""
    return value, os.getpid()


def slow_init(seconds):
    """An initializer that takes ``seconds``."""
    time.sleep(seconds)


def touch_then(path, value):
    """Create ``path`` (the parent sees the call has run), then return ``value``."""
    open(path, "w").close()
    return value
