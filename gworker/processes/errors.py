"""The process pool's exceptions (see :mod:`gworker.processes`)."""
from __future__ import annotations

import pickle
from multiprocessing import TimeoutError as _MPTimeoutError
from typing import Optional


# -- exceptions ----------------------------------------------------------------
class ProcessPoolError(RuntimeError):
    """Base class of the process pool's own errors."""


class ChildProcessDied(ProcessPoolError):
    """The child process running a call died before it sent a result back.

    ``pid`` is the child's pid, ``exitcode`` its exit status (negative: killed by
    that signal; ``None`` if unknown)."""

    def __init__(self, message: str, pid: Optional[int] = None, exitcode: Optional[int] = None):
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode

    def __reduce__(self):
        return (type(self), (self.args[0], self.pid, self.exitcode))


class PoolClosed(ProcessPoolError):
    """The pool was shut down or terminated: the call was refused, never started,
    or its child was stopped while it ran."""


class TaskPickleError(ProcessPoolError, pickle.PicklingError, TypeError):
    """A call's function or arguments, or its result, could not be pickled (or
    unpickled) on the way between the processes. ``unsent`` is True when the
    call never reached a child: its function or arguments did not pickle."""

    unsent = False


class RemoteError(ProcessPoolError):
    """The child raised an exception that could not be sent back as itself (it
    would not pickle), or one that must not be re-raised in the parent
    (``SystemExit``, ``KeyboardInterrupt``...). The text names the original."""


class RemoteTraceback(Exception):
    """Carries the child's traceback text; set as ``__cause__`` of a re-raised
    child exception, so it is printed with it."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n\nTraceback in the child process:\n" + self.tb


class ResultTimeout(_MPTimeoutError, TimeoutError):
    """:meth:`ProcessResult.get` timed out (both a ``multiprocessing.TimeoutError``,
    as the stock pool raises, and a builtin ``TimeoutError``)."""
