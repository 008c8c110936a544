"""Functions the process-pool tests send to child processes.

They live in an importable module on purpose: a call travels to the child as a
pickle, and a function is pickled by reference (module and name), so it must be
a module-level function the child can look up. With the fork start method the
child has a copy of the parent, so this only needs to be importable in the
parent; with spawn it would have to be importable from scratch.
"""
import os
import signal
import threading
import time


def echo(value):
    return value


def add(a, b=0):
    return a + b


def getpid(*_args):
    return os.getpid()


def poll_counts():
    from gworker.processes import child_poll_counts

    return child_poll_counts()


def boom(message):
    raise ValueError(message)


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


def sleep_forever():
    while True:
        time.sleep(1)


def sleep_forever_once_announced(path):
    """Create ``path`` (the parent can see the call has begun), then sleep for ever."""
    open(path, "w").close()
    sleep_forever()


def kill_self(signum=signal.SIGKILL):
    os.kill(os.getpid(), signum)
    time.sleep(10)


def exit_hard(code):
    os._exit(code)


def unpicklable_result():
    return threading.Lock()


def sys_exit(code):
    raise SystemExit(code)


class NeedsTwoArgs(Exception):
    """An exception that pickles but does not unpickle (args do not match __init__)."""

    def __init__(self, a, b):
        super().__init__("%s/%s" % (a, b))


def raise_odd_exception():
    raise NeedsTwoArgs(1, 2)


_state = {}


def init_state(value):
    _state["init"] = value


def read_state():
    return _state.get("init")


def failing_init():
    raise RuntimeError("initializer says no")


def gevent_sleep(seconds, value=None):
    """Yields to the child's own hub while it waits."""
    import gevent

    gevent.sleep(seconds)
    return value


def big(nbytes):
    return b"x" * nbytes


def length(data):
    return len(data)


def child_info():
    """What the child knows about itself and about gevent's state in it."""
    import gevent

    hub = gevent.get_hub()
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "monitor": hub.periodic_monitoring_thread is not None,
        "threads": threading.active_count(),
    }


def leave_greenlet_behind(path, delay):
    """Returns at once; a greenlet it spawned in the child writes ``path`` later."""
    import gevent

    def write():
        gevent.sleep(delay)
        with open(path + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(path + ".tmp", path)  # whoever sees the file sees it whole

    gevent.spawn(write)
    return os.getpid()


class Scaled:
    """A callable object whose state may change between calls."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, value):
        return value * self.factor
