"""A process pool that never blocks the gevent hub.

:class:`ProcessPool` takes the arguments of :class:`multiprocessing.Pool`
(``processes``, ``initializer``, ``initargs``, ``maxtasksperchild``, ``context``)
and runs calls in child processes. Stock ``multiprocessing.Pool`` cannot be used
under gevent: after ``patch_all()`` its helper threads become greenlets that block
on pipe reads and the whole process hangs. This pool talks to its children over
its own non-blocking sockets, and every wait goes through the hub.

How it works
------------

* **Start method: fork, done by gworker itself.** Each child is forked with
  :func:`gevent.os.fork_and_watch` (gevent's fork: ``gevent.reinit()`` in the child,
  a libev child watcher in the parent, so exits are seen cooperatively and children
  are reaped by the loop). In the child the inherited hub is then thrown away — its
  loop destroyed, a fresh hub made — so none of the parent's greenlets, timers or
  servers ever run in the child; signal handlers are reset (SIGINT is ignored: the
  parent decides when its children stop) and the parent's other pool sockets are
  closed. Fork is fast (a few ms) and needs nothing to be importable at start-up;
  spawn would be safe but slow, and would re-import ``__main__`` in every child.
  The ``context`` argument is accepted for ``multiprocessing.Pool`` compatibility,
  but only a fork context (or ``None``/``"fork"``) is allowed.

  Forking a process that has other OS threads (gevent's monitor thread, its
  thread pool, native threads) copies only the calling thread: the child must
  not rely on locks those threads held. This is the same rule as for
  ``multiprocessing``'s fork start method.

* **Why not gipc** (the pure-gevent library that also forks children): its pipe
  writer takes a lock and may wait cooperatively, which must not happen in a hub
  callback (where a :class:`~gworker.pool.PriorityPool` starts admitted work);
  it starts children through ``multiprocessing.Process``, i.e. whatever the
  default start method is (``forkserver`` on Linux from Python 3.14); and
  importing it patches ``multiprocessing`` process-wide (``Popen.poll`` becomes a
  no-op), which breaks any stock ``multiprocessing.Pool`` elsewhere in the
  program. gworker borrows its child-side hub reset, not the library.

* **Functions must be importable.** The call ``(fn, args, kwargs)`` is pickled once
  in :meth:`ProcessPool.submit`; ``fn`` travels by reference (module and name), so it
  must be a module-level function the child can find. With fork the child has a
  copy of the parent as it was when the child started, so functions in
  ``__main__`` work — but a function defined (or a module imported) in the parent
  *after* the child started is unknown to it. Lambdas, nested functions and bound
  methods of unpicklable objects fail at ``submit`` with :class:`TaskPickleError`.
  A plain function's pickle (its name) is made once and kept; any other callable
  (a partial, a callable object) is pickled at each call, state and all.

* **Children start at construction**, one slot greenlet per child: each slot
  greenlet forks its child when it first runs (the next turn of the hub, never at
  import), serves it, and forks a replacement when the child dies or retires
  (``maxtasksperchild``: the child is told to exit together with its last call).
  Calls submitted before the children are up wait in the FIFO queue. A child
  also exits on its own when its socket reports EOF, i.e. when the parent is
  gone, so a parent that dies without shutting its pool down leaves nothing
  running once the children finish their current call.

* **One reader per child.** The slot greenlet waits on its child's socket through
  the hub (a libev io watcher) and wakes the moment a result arrives — no
  polling, no greenlet per call. A child runs its calls one at a time, in the
  order they were written to it. When a result arrives the child's next call is
  written *before* the result is settled, so the child keeps working while the
  parent unpickles and runs callbacks.

* **Writing ahead, only under a backlog.** A call goes to an idle child, else
  into the pool's FIFO queue. When the queue holds at least two calls per child,
  a child is given its fair share of it (``len(queue) // processes``, at most its
  *window*) in one write, so it finds its next call already in its socket and
  many results come back per wake-up (this more than doubles throughput for small
  calls). The window (``ProcessPool.window``) is about 4 ms of work by the
  measured time per call, a power of two from 1 to 64: tiny calls go 64 at a time
  (one wake-up of a sleeping child per 64 calls, not per 16), calls of 1 ms or
  more one at a time, so that nothing queued later waits behind seconds of calls
  written ahead. It starts at 16, and is timed from the reads of children that
  were busy all along (time since the last read over the results it brought, in
  decaying sums). Without a backlog nothing is written ahead, so a short call
  never waits behind a long one while another child is free. Calls written
  ahead to a child that dies had not started (a child runs them in order): they
  go back to the head of the queue; only the call that was running fails.

* **A child waiting for its next call.** When nothing else runs in a child (the
  calls left no greenlet or timer behind) it waits in ``poll()`` on its socket,
  not in a turn of its own hub: fewer system calls. Calls that keep coming one
  after another (each submitted once the last is done) cost a wake-up of a
  sleeping process each way, and on a virtual machine that is most of a round
  trip (a cross-CPU interrupt and the idle CPU's exit: ~50 µs each on a 2-core
  VM, against ~20 µs for the whole call otherwise). So a child that has just
  answered such a call keeps polling for the next one for up to ``spin``
  seconds (default 250 µs, ``spin=0`` turns it off), yielding the CPU to any
  other process that wants it (``sched_yield``) while it does. It polls only
  (a) after a call that found it idle while few enough other children were
  busy — at most one core fewer than the machine has, so one stays the
  parent's — and (b) while it pays: the child keeps on only while each call
  came within ``spin`` of its last result, so calls that come seldom never make
  it poll more than once. Cost: at most ``spin`` of CPU per call in a
  one-after-another sequence; none under a backlog (the children have calls
  written ahead) and none for seldom calls. One after another it more than
  halves the round trip on the 2-core VM the benchmarks run on.

* **Writes never wait.** ``submit`` writes the pickled call straight into an idle
  child's socket (non-blocking); what does not fit is finished by a write watcher.
  So ``submit`` may be called from a greenlet or from a hub callback alike.

* **Faults.** A child's exception is re-raised by :meth:`ProcessResult.get` with the
  child's traceback text attached as ``__cause__`` (a :class:`RemoteTraceback`); the
  child keeps serving. An exception that cannot travel back becomes a
  :class:`RemoteError`. A child that dies mid-call (``SIGKILL``, OOM, ``os._exit``)
  fails that call with :class:`ChildProcessDied` (pid, exit code or signal) as soon
  as its exit is seen — either the socket reports EOF or the child watcher fires,
  whichever comes first — and a replacement child is forked. An unpicklable
  argument fails the returned result at once, an unpicklable result fails that
  call only; both with :class:`TaskPickleError` (a ``TypeError`` and a
  ``pickle.PicklingError``). An initializer that raises fails the call that was
  sent to that child with :class:`ChildProcessDied` carrying the initializer's
  traceback; re-forking after such failures backs off (up to 5 s).

* **Threads.** Every gevent object here belongs to the hub of the OS thread that
  created the pool (it must be the main thread's hub: libev watches children
  only on the default loop). :meth:`ProcessPool.submit`, :meth:`ProcessPool.shutdown`,
  :meth:`ProcessPool.terminate` and :meth:`ProcessResult.get` called from another
  OS thread are handed to that hub with :func:`gworker.hubsafe.call_in_hub`; the
  calling thread waits, the hub never does.

* **Callbacks** given to :meth:`ProcessResult.rawlink` / ``add_done_callback`` are
  called with the result, in the hub's thread, in a greenlet — normally the reader
  (slot) greenlet that read the result, so no greenlet is made per call. A
  callback that waits therefore delays the next results of that one child, and a
  callback must not wait for another pool result: :meth:`ProcessResult.get` /
  ``wait`` called in a reader greenlet raise ``RuntimeError`` at once (they could
  be waiting for the very greenlet that has to read the answer) — spawn a greenlet
  for such work. A callback added to a result that is already done is called at
  once, or in a new greenlet when the caller is the hub itself. ``get()`` and
  ``wait()`` need a greenlet (not a raw hub callback).

* **Figures** for ``get_info``: ``processes`` (configured), ``size`` (children
  alive), ``busy`` (children with a call), ``pending`` (calls queued in the pool,
  not yet written to a child), ``pids``.
"""
from __future__ import annotations

import atexit
import logging
import os
import pickle
import signal
import struct
import sys
import time
from time import monotonic
import traceback
import types
from collections import deque
from multiprocessing import TimeoutError as _MPTimeoutError
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

import _socket
import gevent
import gevent.os
from gevent.hub import Waiter, get_hub, getcurrent

from .hubsafe import call_in_hub, in_hub_thread, os_thread_ident

__all__ = [
    "ProcessPool",
    "ProcessResult",
    "ProcessPoolError",
    "ChildProcessDied",
    "PoolClosed",
    "TaskPickleError",
    "RemoteError",
    "RemoteTraceback",
    "ResultTimeout",
]

log = logging.getLogger("gworker")

# -- wire format -------------------------------------------------------------
# Every frame: 4-byte length, 1-byte kind, then ``length`` bytes of payload.
_HEADER = struct.Struct("!IB")
_HSIZE = _HEADER.size
# parent -> child
_K_CALL = 0  # payload: 4-byte length n, pickle of fn (n bytes), pickle of (args, kwargs, task id or None)
_K_STOP = 1  # no payload: finish and exit
_K_CALL_SPIN = 2  # as _K_CALL; then, if no call is waiting, poll for one for up to `spin`
# child -> parent
_K_OK = 0  # payload: pickle of the return value
_K_ERR = 1  # payload: pickle of (exception, traceback text)
_K_INIT_FAILED = 2  # payload: the initializer's traceback, utf-8
_K_ERR_EXIT = 3  # as _K_ERR, and the child exits (SystemExit & co. in the call)

_STOP_FRAME = _HEADER.pack(0, _K_STOP)
_POLLIN = 1  # select.POLLIN (select.poll itself is gone after monkey-patching)
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_RECV_SIZE = 256 * 1024
_EXIT_GRACE = 2.0  # s a child may take to exit once its socket is closed
_KILL_WAIT = 5.0  # s to wait for the exit of a child that was sent SIGKILL
_MAX_BACKOFF = 5.0  # s, cap of the re-fork delay after initializer failures
# How many calls a child is given at a time under a backlog: its *window*, sized
# so that it holds about _WINDOW_HORIZON seconds of work by the measured time per
# call, a power of two from 1 to _WINDOW_MAX (see _refill and _measure).
_WINDOW_START = 16  # until calls have been timed
_WINDOW_MAX = 64
_WINDOW_HORIZON = 0.004
_DECAY = 0.75  # per timed read, of the sums the time per call is taken from
#: default ``spin`` of a ProcessPool: how long (s) a child that has just answered
#: keeps polling for its next call before it sleeps (see the module docs)
DEFAULT_SPIN = 0.00025
MAX_SPIN = 0.01

_dumps = pickle.dumps
_loads = pickle.loads

# A call's function travels as its own pickle (a call frame: _FN_LEN, the
# function, then args, kwargs and a task id). A plain function pickles by
# reference (module and qualified name), and finding it by name is a third of
# the cost of pickling a tiny call; the bytes never change, so they are kept
# here, for up to
# _FN_CACHE_SIZE functions (then the cache starts over). Only plain functions:
# anything else (a bound method, a partial, a callable object) may pickle its
# state, which can change.
_FN_LEN = struct.Struct("!I")
_FN_CACHE_SIZE = 512
_fn_pickles: Dict[Any, bytes] = {}

#: Parent-side sockets of every live child of every pool in this process; a new
#: child closes its inherited copies (else a sibling would hold them open, and
#: neither EOF nor "parent gone" would ever be seen).
_parent_sockets: set = set()
_live_pids: set = set()
_atexit_registered = False


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
    unpickled) on the way between the processes."""


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


def _describe(fn: Any) -> str:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return repr(fn)
    return "%s.%s" % (module, name) if module else name


def _describe_status(exitcode: Optional[int]) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            return "killed by %s" % signal.Signals(-exitcode).name
        except ValueError:
            return "killed by signal %d" % -exitcode
    return "exit code %d" % exitcode


# -- results -------------------------------------------------------------------
_PENDING, _OK, _ERR = 0, 1, 2


class ProcessResult:
    """The outcome of one :meth:`ProcessPool.submit` call.

    ``get(timeout=None)`` waits cooperatively (through the hub) and returns the
    value or raises the call's exception; ``wait``, ``ready``, ``successful``,
    ``exception`` and ``rawlink``/``add_done_callback`` are as in
    ``multiprocessing`` and ``concurrent.futures``."""

    __slots__ = (
        "_hub", "fn", "_state", "_value", "_waiters", "_callbacks", "_hook", "_hook_arg", "__weakref__",
    )

    def __init__(self, hub: Any, fn: Any) -> None:
        self._hub = hub
        #: the function that was submitted (for messages and for the curious)
        self.fn = fn
        self._state = _PENDING
        self._value: Any = None
        self._waiters: Optional[List[Waiter]] = None
        self._callbacks: Optional[List[Callable[[Any], Any]]] = None
        self._hook: Optional[Callable[[Any, Optional[BaseException], Any], Any]] = None
        self._hook_arg: Any = None

    def __repr__(self) -> str:
        state = ("pending", "done", "failed")[self._state]
        return "<ProcessResult %s %s>" % (_describe(self.fn), state)

    # -- state ---------------------------------------------------------------
    def ready(self) -> bool:
        """True once the call has finished (returned, raised or failed)."""
        return self._state != _PENDING

    def successful(self) -> bool:
        """True if the call returned a value. ``ValueError`` if not ready yet
        (as ``multiprocessing``'s ``AsyncResult``)."""
        if self._state == _PENDING:
            raise ValueError("%r is not ready" % self)
        return self._state == _OK

    def exception(self) -> Optional[BaseException]:
        """The exception of a failed call, ``None`` if it returned (or is pending)."""
        return self._value if self._state == _ERR else None

    @property
    def value(self) -> Any:
        """The return value, or ``None`` while pending or after a failure."""
        return self._value if self._state == _OK else None

    # -- waiting -------------------------------------------------------------
    def get(self, timeout: Optional[float] = None) -> Any:
        """Return the value, or raise the call's exception; wait cooperatively
        at most ``timeout`` seconds (:class:`ResultTimeout` past it)."""
        state = self._state
        if state == _PENDING:
            if not in_hub_thread(self._hub):
                return call_in_hub(self._hub, self.get, timeout)
            if not self.wait(timeout):
                raise ResultTimeout("%s did not finish within %ss" % (_describe(self.fn), timeout))
            state = self._state
        if state == _OK:
            return self._value
        raise self._value.with_traceback(None)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait cooperatively until ready or ``timeout`` seconds; return ``ready()``."""
        if self._state != _PENDING:
            return True
        if not in_hub_thread(self._hub):
            return call_in_hub(self._hub, self.wait, timeout)
        if getattr(getcurrent(), "_gworker_reader", False):
            # A callback runs in a reader greenlet; waiting there could wait for
            # the very greenlet that has to read the result: refuse, always.
            raise RuntimeError(
                "cannot wait for %r inside a ProcessResult callback (callbacks run in"
                " the pool's reader greenlet): spawn a greenlet to wait, or use rawlink" % self
            )
        waiter = Waiter(self._hub)
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)
        timer = None
        if timeout is not None:
            timer = self._hub.loop.timer(max(timeout, 0.0))
            timer.start(waiter.switch, None)
        try:
            waiter.get()
        finally:
            if timer is not None:
                timer.close()
            if self._state == _PENDING:
                try:
                    self._waiters.remove(waiter)
                except (ValueError, AttributeError):
                    pass
        return self._state != _PENDING

    # -- callbacks -----------------------------------------------------------
    def rawlink(self, callback: Callable[["ProcessResult"], Any]) -> None:
        """Call ``callback(self)`` when the call finishes (see the module docs
        for where it runs)."""
        if not callable(callback):
            raise TypeError("callback must be callable; got %r" % (callback,))
        if self._state != _PENDING:
            if getcurrent() is self._hub:
                gevent.spawn(_run_callbacks, self, [callback])
            else:
                _run_callbacks(self, [callback])
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)

    add_done_callback = rawlink

    def unlink(self, callback: Callable[["ProcessResult"], Any]) -> None:
        """Forget a callback given to :meth:`rawlink` (if not yet called)."""
        if self._callbacks:
            try:
                self._callbacks.remove(callback)
            except ValueError:
                pass

    def _on_settle(self, hook: Callable[[Any, Optional[BaseException], Any], Any], arg: Any) -> None:
        """For gworker's own layers: call ``hook(arg, exception, value)`` when
        the call finishes (``exception`` is None if it returned), before waiters
        and callbacks; from a hub callback if it has finished already (a call
        that did not pickle), so that a long run of those is spread over turns
        of the loop. One hook per result; it runs where the result settles (the
        pool's reader greenlet), so it must not wait. Cheaper than
        :meth:`rawlink` with a closure: no greenlet, no list, no object per
        call."""
        if self._state == _PENDING:
            self._hook = hook
            self._hook_arg = arg
        else:
            self._hub.loop.run_callback(_run_hook, hook, arg, self._state, self._value)

    # -- settling (hub thread only) ---------------------------------------------
    def _settle(self, state: int, value: Any) -> None:
        self._state = state
        self._value = value
        hook = self._hook
        if hook is not None:
            arg = self._hook_arg
            self._hook = self._hook_arg = None
            _run_hook(hook, arg, state, value)
        waiters = self._waiters
        if waiters:
            self._waiters = None
            current_is_hub = getcurrent() is self._hub
            run_callback = self._hub.loop.run_callback
            for waiter in waiters:
                if current_is_hub:
                    waiter.switch(None)
                else:
                    run_callback(waiter.switch, None)
        callbacks = self._callbacks
        if callbacks:
            self._callbacks = None
            if getcurrent() is self._hub:
                gevent.spawn(_run_callbacks, self, callbacks)
            else:
                _run_callbacks(self, callbacks)

    def _fail(self, exc: BaseException) -> None:
        if self._state == _PENDING:
            self._settle(_ERR, exc)


def _run_callbacks(result: ProcessResult, callbacks: List[Callable[[Any], Any]]) -> None:
    for callback in callbacks:
        try:
            callback(result)
        except Exception:
            log.exception("callback %r of %r raised", callback, result)


def _run_hook(
    hook: Callable[[Any, Optional[BaseException], Any], Any], arg: Any, state: int, value: Any
) -> None:
    try:
        if state == _OK:
            hook(arg, None, value)
        else:
            hook(arg, value, None)
    except Exception:
        log.exception("hook %r of a process pool result raised", hook)


def _failed_result(hub: Any, fn: Any, exc: BaseException) -> ProcessResult:
    result = ProcessResult(hub, fn)
    result._state = _ERR
    result._value = exc
    return result


# -- the parent's view of one child --------------------------------------------
class _Child:
    __slots__ = (
        "sock", "fd", "pid", "calls", "nsent", "idle", "retiring", "exited", "exitcode",
        "waiter", "io_read", "io_write", "outbuf", "init_error", "busy_since",
    )

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.pid = 0
        #: calls written to the child and not answered yet, oldest (running) first
        self.calls: Deque[Tuple[bytes, ProcessResult]] = deque()
        self.nsent = 0  # calls written to it in its life (for maxtasksperchild)
        self.idle = False  # in the pool's idle list
        self.retiring = False  # told to stop (or will be, with its last call)
        self.exited = False
        self.exitcode: Optional[int] = None
        self.waiter: Optional[Waiter] = None
        self.io_read: Any = None
        self.io_write: Any = None
        self.outbuf: Optional[memoryview] = None
        self.init_error: Optional[str] = None
        # when the last read left it with calls to work on (None: it may have
        # been idle since): the start of the interval the next read times
        self.busy_since: Optional[float] = None

    def on_exit(self, watcher: Any) -> None:
        # libev child watcher callback (a raw hub callback): record and wake.
        status = watcher.rstatus
        if os.WIFSIGNALED(status):
            self.exitcode = -os.WTERMSIG(status)
        elif os.WIFEXITED(status):
            self.exitcode = os.WEXITSTATUS(status)
        self.exited = True
        _live_pids.discard(self.pid)
        waiter = self.waiter
        if waiter is not None:
            waiter.switch(None)


_RUNNING, _CLOSING, _CLOSED = 0, 1, 2


def _check_processes(processes: Any) -> int:
    if processes is None:
        return os.cpu_count() or 1
    if isinstance(processes, bool) or not isinstance(processes, int):
        raise TypeError("processes must be an integer or None; got %r" % (processes,))
    if processes < 1:
        raise ValueError("processes must be at least 1; got %r" % (processes,))
    return processes


def _check_spin(spin: Any) -> float:
    if isinstance(spin, bool) or not isinstance(spin, (int, float)) or not 0 <= spin <= MAX_SPIN:
        raise ValueError("spin must be a number of seconds from 0 to %g; got %r" % (MAX_SPIN, spin))
    return float(spin)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_context(context: Any) -> None:
    if context is None:
        return
    method = context if isinstance(context, str) else None
    if method is None:
        get = getattr(context, "get_start_method", None)
        if get is None:
            raise TypeError("context must be a multiprocessing context, 'fork' or None; got %r" % (context,))
        method = get()
    if method != "fork":
        raise ValueError(
            "context: gworker's ProcessPool forks its children (see gworker.processes);"
            " the %r start method is not supported" % (method,)
        )


class ProcessPool:
    """A pool of child processes for a gevent program (see the module docs).

    ``ProcessPool(processes=None, initializer=None, initargs=(),
    maxtasksperchild=None, context=None, spin=DEFAULT_SPIN)`` takes
    ``multiprocessing.Pool``'s arguments. ``processes`` defaults to
    ``os.cpu_count()``. ``spin`` (seconds, 0 to ``MAX_SPIN``) is how long a
    child that answered a call keeps polling for the next one of a
    one-after-another sequence before it sleeps (see the module docs; 0: never).
    The children are forked right after construction, by the pool's slot
    greenlets.
    """

    def __init__(
        self,
        processes: Optional[int] = None,
        initializer: Optional[Callable[..., Any]] = None,
        initargs: Any = (),
        maxtasksperchild: Optional[int] = None,
        context: Any = None,
        spin: float = DEFAULT_SPIN,
    ) -> None:
        self._processes = _check_processes(processes)
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be callable or None; got %r" % (initializer,))
        try:
            initargs = tuple(initargs)
        except TypeError:
            raise TypeError("initargs must be a tuple (or another iterable); got %r" % (initargs,)) from None
        if maxtasksperchild is not None and (
            isinstance(maxtasksperchild, bool) or not isinstance(maxtasksperchild, int) or maxtasksperchild < 1
        ):
            raise ValueError("maxtasksperchild must be a positive integer or None; got %r" % (maxtasksperchild,))
        _check_context(context)
        if not hasattr(os, "fork"):
            raise RuntimeError("gworker's ProcessPool needs os.fork (POSIX)")
        hub = get_hub()
        if not hub.loop.default:
            raise RuntimeError(
                "a ProcessPool must be created in the main thread's hub: child processes"
                " are watched by the default event loop only"
            )
        self._initializer = initializer
        self._initargs = initargs
        self._maxtasks = maxtasksperchild
        self._spin = _check_spin(spin)
        # Children that may poll after a call at once: one core stays the parent's.
        self._spin_slots = max(1, _cpu_count() - 1)
        self._hub = hub
        self._state = _RUNNING
        self._terminating = False
        self._queue: Deque[Tuple[bytes, ProcessResult]] = deque()
        self._idle: List[_Child] = []
        self._children: List[_Child] = []
        self._backing_off: set = set()
        #: how many calls wait to be submitted by a layer above (the supervisor's
        #: admission by priority): counted as backlog when writing ahead (see _refill)
        self.backlog_hint: Optional[Callable[[], int]] = None
        #: how many calls a child is given at a time under a backlog (see the
        #: module docs, "Writing ahead"); follows the measured time per call
        self.window = _WINDOW_START
        #: called with the new ``window`` when it changes (the supervisor sizes
        #: its admission by it)
        self.on_window: Optional[Callable[[int], Any]] = None
        # the time per call: decaying sums of timed seconds and calls (see _measure)
        self._timed_seconds = 0.0
        self._timed_calls = 0.0
        _register_atexit()
        self._slots = [gevent.spawn(self._run_slot, index) for index in range(self._processes)]

    # -- public figures ----------------------------------------------------------
    @property
    def processes(self) -> int:
        """How many children the pool keeps (the ``processes`` argument)."""
        return self._processes

    @property
    def size(self) -> int:
        """How many child processes are alive now."""
        return sum(1 for child in self._children if not child.exited)

    @property
    def busy(self) -> int:
        """How many children are running a call."""
        return sum(1 for child in self._children if child.calls)

    @property
    def pending(self) -> int:
        """How many submitted calls wait for a free child."""
        return len(self._queue)

    @property
    def pids(self) -> List[int]:
        """The pids of the live children."""
        return [child.pid for child in self._children if not child.exited]

    @property
    def closed(self) -> bool:
        """True once :meth:`shutdown` or :meth:`terminate` was called."""
        return self._state != _RUNNING

    def __repr__(self) -> str:
        return "<ProcessPool processes=%d size=%d busy=%d pending=%d%s>" % (
            self._processes, self.size, self.busy, self.pending, " closed" if self.closed else "",
        )

    # -- submitting --------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], args: Any = (), kwargs: Optional[dict] = None) -> ProcessResult:
        """Run ``fn(*args, **kwargs)`` in a child; return its :class:`ProcessResult`.

        Never waits: the call goes to an idle child at once, or into the FIFO
        queue. A call that does not pickle gives a result that has already failed
        with :class:`TaskPickleError`. After :meth:`shutdown`, raises
        :class:`PoolClosed`. Safe from another OS thread (handed to the pool's hub)."""
        return self._submit(fn, args, kwargs, None)

    def _submit(
        self, fn: Callable[..., Any], args: Any, kwargs: Optional[dict], task_id: Any
    ) -> ProcessResult:
        """``submit``; a ``task_id`` that is not None is passed to ``fn`` as the
        keyword ``_task_id`` (over any in ``kwargs``), added in the child: the
        supervisor's TT_MP tasks need no copy of their keywords per call."""
        hub = self._hub
        if hub.thread_ident != os_thread_ident():
            return call_in_hub(hub, self._submit, fn, args, kwargs, task_id)
        if self._state != _RUNNING:
            raise PoolClosed("the process pool is shut down; %s was not submitted" % _describe(fn))
        try:
            payload = _call_payload(fn, args, kwargs, task_id)
        except Exception as exc:
            return _failed_result(hub, fn, _pickle_error("could not send %s to a child process" % _describe(fn), exc))
        result = ProcessResult(hub, fn)
        idle = self._idle
        while idle:
            child = idle.pop()
            child.idle = False
            if not child.exited:  # (one that died idle is being buried)
                # A call that finds a child idle may be one of a sequence (each
                # submitted once the last is done): let that child poll for the
                # next one, while few enough others are busy (see _K_CALL_SPIN).
                kind = _K_CALL
                if self._spin and len(self._children) - len(idle) <= self._spin_slots:
                    kind = _K_CALL_SPIN
                self._give(child, [(_HEADER.pack(len(payload), kind) + payload, result)])
                return result
        self._queue.append((_HEADER.pack(len(payload), _K_CALL) + payload, result))
        return result

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Any = (),
        kwds: Optional[dict] = None,
        callback: Optional[Callable[[Any], Any]] = None,
        error_callback: Optional[Callable[[BaseException], Any]] = None,
    ) -> ProcessResult:
        """``multiprocessing.Pool.apply_async`` look-alike over :meth:`submit`."""
        result = self.submit(func, args, kwds)
        if callback is not None or error_callback is not None:

            def dispatch(res: ProcessResult) -> None:
                if res._state == _OK:
                    if callback is not None:
                        callback(res._value)
                elif error_callback is not None:
                    error_callback(res._value)

            result.rawlink(dispatch)
        return result

    def apply(self, func: Callable[..., Any], args: Any = (), kwds: Optional[dict] = None) -> Any:
        """Run ``func`` in a child and return its value (waits cooperatively)."""
        return self.submit(func, args, kwds).get()

    # -- stopping ----------------------------------------------------------------
    def shutdown(self, wait: bool = True, timeout: Optional[float] = None) -> None:
        """Stop the pool. Safe to call more than once, and from another OS thread.

        Calls still queued fail at once with :class:`PoolClosed`; calls running in
        a child finish and deliver their result, then each child is told to exit.
        With ``wait=True`` this returns once every child has exited and been
        reaped, the slot greenlets have ended and every socket is closed; children
        still running after ``timeout`` seconds are killed (``SIGKILL``; their
        calls fail with :class:`PoolClosed`). ``wait=False`` returns at once; the
        same clean-up then happens in the background (children running a call exit
        when it is done)."""
        if not in_hub_thread(self._hub):
            return call_in_hub(self._hub, self.shutdown, wait, timeout)
        self._close()
        if not wait:
            return
        current = getcurrent()
        slots = [slot for slot in self._slots if slot is not current]
        if timeout is None:
            gevent.joinall(slots)
        else:
            gevent.joinall(slots, timeout=timeout)
            if any(not slot.dead for slot in slots):
                self._kill_children(signal.SIGKILL, "the pool's shutdown timed out after %ss" % timeout)
                gevent.joinall(slots, timeout=_KILL_WAIT + _EXIT_GRACE)

    def terminate(self) -> None:
        """Stop at once: queued calls fail, children are sent ``SIGTERM`` (then
        ``SIGKILL`` if still alive after 2 s) and their running calls fail with
        :class:`PoolClosed`. Returns once all are reaped (waits cooperatively)."""
        if not in_hub_thread(self._hub):
            return call_in_hub(self._hub, self.terminate)
        self._close()
        self._kill_children(signal.SIGTERM, "the pool was terminated")
        current = getcurrent()
        slots = [slot for slot in self._slots if slot is not current]
        gevent.joinall(slots, timeout=_EXIT_GRACE)
        if any(not slot.dead for slot in slots):
            self._kill_children(signal.SIGKILL, "the pool was terminated")
            gevent.joinall(slots, timeout=_KILL_WAIT + _EXIT_GRACE)

    def __enter__(self) -> "ProcessPool":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.shutdown()

    def _close(self) -> None:
        if self._state != _RUNNING:
            return
        self._state = _CLOSING
        queue = self._queue
        while queue:
            _, result = queue.popleft()
            result._fail(PoolClosed("the process pool was shut down before %s started" % _describe(result.fn)))
        idle = self._idle
        while idle:
            child = idle.pop()
            child.idle = False
            child.retiring = True
            self._send(child, _STOP_FRAME)
        for slot in list(self._backing_off):
            # A slot waiting out a re-fork back-off has no child: end it now.
            slot.kill(block=False)

    def _kill_children(self, signum: int, why: str) -> None:
        self._terminating = why
        for child in self._children:
            if child.pid and not child.exited:
                try:
                    os.kill(child.pid, signum)
                except OSError:
                    pass

    # -- one slot: fork a child, serve it, repeat ------------------------------------
    def _run_slot(self, index: int) -> None:
        # (No frame here keeps the greenlet in a local: a GreenletExit's
        # traceback would make a cycle that outlives the pool.)
        getcurrent()._gworker_reader = True
        try:
            self._slot_loop()
        finally:
            # Done for good: forget the finished greenlet.
            try:
                self._slots.remove(getcurrent())
            except ValueError:
                pass
            if not self._slots and self._state != _RUNNING:
                self._state = _CLOSED

    def _slot_loop(self) -> None:
        backoff = 0.0
        while self._state == _RUNNING:
            if backoff:
                self._backing_off.add(getcurrent())
                try:
                    gevent.sleep(backoff)
                finally:
                    self._backing_off.discard(getcurrent())
                if self._state != _RUNNING:
                    break
            try:
                child = self._fork_child()
            except Exception as exc:
                log.error("gworker process pool: cannot start a child process: %s", exc)
                if not any(not c.exited for c in self._children):
                    queue = self._queue
                    while queue:
                        queue.popleft()[1]._fail(ChildProcessDied("no child process could be started: %s" % exc))
                backoff = min(max(backoff * 2, 0.1), _MAX_BACKOFF)
                continue
            try:
                self._serve(child)
            finally:
                self._bury(child)
            if child.init_error is not None:
                backoff = min(max(backoff * 2, 0.1), _MAX_BACKOFF)
            else:
                backoff = 0.0

    def _fork_child(self) -> _Child:
        parent_sock, child_sock = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        child = _Child(parent_sock)
        _flush_std_streams()
        try:
            pid = gevent.os.fork_and_watch(child.on_exit)
        except BaseException:
            parent_sock.close()
            child_sock.close()
            raise
        if pid == 0:  # pragma: no cover - runs in the child, never returns
            _child_main(child_sock, parent_sock, self._initializer, self._initargs, self._spin)
        child_sock.close()
        child.pid = pid
        _live_pids.add(pid)
        parent_sock.setblocking(False)
        _parent_sockets.add(parent_sock)
        loop = self._hub.loop
        child.io_read = loop.io(child.fd, 1)
        child.io_write = loop.io(child.fd, 2)
        self._children.append(child)
        self._refill(child)
        return child

    def _serve(self, child: _Child) -> None:
        """Read results from ``child`` until its socket reports EOF or it exits."""
        recv = child.sock.recv
        on_reply = self._on_reply
        reader = _FrameReader()
        while True:
            try:
                data = recv(_RECV_SIZE)
            except BlockingIOError:
                if child.exited:
                    return  # dead, and all it wrote is read
                self._wait(child)
                continue
            except OSError:
                return
            if not data:
                return
            now = monotonic()
            replies = 0
            for kind, payload in reader.feed(data):
                on_reply(child, kind, payload)
                replies += 1
            if replies and child.busy_since is not None:
                self._measure(now - child.busy_since, replies)
            self._refill(child)
            child.busy_since = now if child.calls else None
            if reader.partial is None and not child.exited:
                # All it sent so far is read: wait rather than ask again (a
                # recv that would only say EAGAIN).
                self._wait(child)

    def _wait(self, child: _Child, timeout: Optional[float] = None) -> None:
        """Wait until ``child``'s socket is readable, it exits, or ``timeout``."""
        waiter = Waiter(self._hub)
        child.waiter = waiter
        io = child.io_read
        io.start(waiter.switch, None)
        timer = None
        if timeout is not None:
            timer = self._hub.loop.timer(timeout)
            timer.start(waiter.switch, None)
        try:
            waiter.get()
        finally:
            io.stop()
            child.waiter = None
            if timer is not None:
                timer.close()

    def _on_reply(self, child: _Child, kind: int, payload: Any) -> None:
        if kind == _K_INIT_FAILED:
            child.init_error = bytes(payload).decode("utf-8", "replace")
            return
        calls = child.calls
        if not calls:  # pragma: no cover - a protocol error
            log.error("gworker process pool: child %d sent a result nobody asked for", child.pid)
            return
        result = calls.popleft()[1]
        if kind == _K_ERR_EXIT:
            child.retiring = True  # it is on its way out: give it nothing more
        elif not calls:
            self._refill(child)  # keep the child busy before settling the result
        if kind == _K_OK:
            try:
                value = _loads(payload)
            except Exception as exc:
                result._settle(_ERR, _pickle_error(
                    "the result of %s could not be unpickled in the parent" % _describe(result.fn), exc))
            else:
                result._settle(_OK, value)
        else:
            result._settle(_ERR, _load_exception(payload))

    def _measure(self, seconds: float, calls: int) -> None:
        """Fold in one read of a child that was busy all along (``calls``
        results in ``seconds`` since the last read) and resize the window when
        the time per call calls for another power of two. The time per call is
        a ratio of decaying sums, so a read that brought many results weighs
        more than one that brought a single straggler."""
        total = self._timed_seconds = self._timed_seconds * _DECAY + seconds
        self._timed_calls = self._timed_calls * _DECAY + calls
        fits = _WINDOW_HORIZON * self._timed_calls / total if total > 0 else _WINDOW_MAX
        window = 1
        while window * 2 <= fits and window < _WINDOW_MAX:
            window *= 2
        if window != self.window:
            self.window = window
            if self.on_window is not None:
                self.on_window(window)

    def _refill(self, child: _Child) -> None:
        """Give ``child`` queued calls: one when it has none, up to
        its ``window`` while there is a backlog (at least one queued call per
        child), so a busy child finds its next call already in its socket.

        The backlog counts the calls waiting above the pool (``backlog_hint``,
        e.g. ``put_task`` calls not yet admitted): a layer that admits only a few
        calls at a time would otherwise never leave a queue long enough to write
        ahead, and the children would wait for each round trip."""
        if child.retiring or child.idle:
            return
        calls = child.calls
        if self._state != _RUNNING:
            if not calls:
                child.retiring = True
                self._send(child, _STOP_FRAME)
            return
        queue = self._queue
        if not queue:
            if not calls:
                child.idle = True
                self._idle.append(child)
            return
        # Its fair share of the backlog (at least one call, at most the window),
        # so that calls are written ahead only when every child will be busy.
        backlog = len(queue)
        if self.backlog_hint is not None:
            backlog += self.backlog_hint()
        room = max(1, min(self.window, backlog // self._processes)) - len(calls)
        if self._maxtasks is not None:
            room = min(room, self._maxtasks - child.nsent)
        if room <= 0:
            return
        room = min(room, len(queue))
        if room == 1:
            self._give(child, [queue.popleft()])
        else:
            popleft = queue.popleft
            self._give(child, [popleft() for _ in range(room)])

    def _give(self, child: _Child, batch: List[Tuple[bytes, ProcessResult]]) -> None:
        """Write ``batch`` (``(frame, result)`` pairs) to ``child`` in one send."""
        child.calls.extend(batch)
        child.nsent += len(batch)
        if self._maxtasks is not None and child.nsent >= self._maxtasks:
            child.retiring = True  # it exits after this last call
            self._send(child, b"".join([frame for frame, _ in batch] + [_STOP_FRAME]))
        elif len(batch) == 1:
            self._send(child, batch[0][0])
        else:
            self._send(child, b"".join([frame for frame, _ in batch]))

    def _kick(self) -> None:
        """Hand queued calls to idle children (after calls were put back)."""
        idle = self._idle
        while idle and self._queue:
            child = idle.pop()
            child.idle = False
            if not child.exited:
                self._refill(child)

    def _send(self, child: _Child, frame: bytes) -> None:
        if child.outbuf is not None:
            child.outbuf = memoryview(bytes(child.outbuf) + frame)
            return
        try:
            sent = child.sock.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            return  # the child is gone; its slot sees EOF and fails its call
        if sent < len(frame):
            child.outbuf = memoryview(frame)[sent:]
            child.io_write.start(self._on_writable, child)

    def _on_writable(self, child: _Child) -> None:
        # A raw hub callback: non-blocking sends only.
        try:
            sent = child.sock.send(child.outbuf)
        except BlockingIOError:
            return
        except OSError:
            sent = len(child.outbuf)
        rest = child.outbuf[sent:]
        if len(rest):
            child.outbuf = rest
        else:
            child.outbuf = None
            child.io_write.stop()

    def _bury(self, child: _Child) -> None:
        """The child's socket is done: make sure it exited, fail its call, clean up."""
        if child.idle:
            child.idle = False
            self._idle.remove(child)
        if not child.exited:
            self._wait_exit(child, _EXIT_GRACE)
        if not child.exited:
            try:
                os.kill(child.pid, signal.SIGKILL)
            except OSError:
                pass
            self._wait_exit(child, _KILL_WAIT)
        if child.io_write is not None:
            child.io_write.close()
        if child.io_read is not None:
            child.io_read.close()
        child.outbuf = None
        _parent_sockets.discard(child.sock)
        child.sock.close()
        try:
            self._children.remove(child)
        except ValueError:
            pass
        calls, child.calls = child.calls, deque()
        if calls:
            frame, result = calls.popleft()
            if self._terminating:
                why = self._terminating
                result._fail(PoolClosed("%s: child process %d was stopped while running %s"
                                        % (why, child.pid, _describe(result.fn))))
            else:
                message = "child process %d died (%s) while running %s" % (
                    child.pid, _describe_status(child.exitcode), _describe(result.fn))
                if child.init_error:
                    message += "; its initializer raised:\n" + child.init_error
                result._fail(ChildProcessDied(message, child.pid, child.exitcode))
            # The calls written after it never started (a child runs them in
            # order): they go back to the head of the queue.
            if self._state == _RUNNING:
                self._queue.extendleft(reversed(calls))
                self._kick()
            else:
                for frame, result in calls:
                    result._fail(PoolClosed("the process pool was shut down before %s started"
                                            % _describe(result.fn)))
        elif child.init_error and not child.retiring:
            log.error("gworker process pool: the initializer of child %d raised:\n%s", child.pid, child.init_error)

    def _wait_exit(self, child: _Child, timeout: float) -> None:
        """Wait (cooperatively, at most ``timeout`` s) for the child watcher."""
        waiter = Waiter(self._hub)
        child.waiter = waiter
        timer = self._hub.loop.timer(timeout)
        timer.start(waiter.switch, None)
        try:
            if not child.exited:
                waiter.get()
        finally:
            child.waiter = None
            timer.close()


def _call_payload(fn: Any, args: Any, kwargs: Optional[dict], task_id: Any = None) -> bytes:
    """The payload of a call frame (see _FN_LEN); raises if it does not pickle."""
    plain = type(fn) is types.FunctionType
    fn_pickle = _fn_pickles.get(fn) if plain else None
    if fn_pickle is None:
        fn_pickle = _dumps(fn, _PROTOCOL)
        if plain:
            if len(_fn_pickles) >= _FN_CACHE_SIZE:
                _fn_pickles.clear()
            _fn_pickles[fn] = fn_pickle
    return _FN_LEN.pack(len(fn_pickle)) + fn_pickle + _dumps((args, kwargs or {}, task_id), _PROTOCOL)


def _load_call(payload: Any) -> Tuple[Any, Any, Any]:  # pragma: no cover - child only
    """``(fn, args, kwargs)`` out of a call frame's payload."""
    (size,) = _FN_LEN.unpack_from(payload)
    end = _FN_LEN.size + size
    fn = _loads(payload[_FN_LEN.size:end])
    args, kwargs, task_id = _loads(payload[end:])
    if task_id is not None:
        kwargs["_task_id"] = task_id  # (a dict of the child's own, just unpickled)
    return fn, args, kwargs


def _frames(data: Any) -> Any:
    """Split ``data`` into ``(kind, payload, None)`` frames; an incomplete tail
    comes last as ``(None, None, bytearray)``."""
    pos = 0
    n = len(data)
    while n - pos >= _HSIZE:
        size, kind = _HEADER.unpack_from(data, pos)
        end = pos + _HSIZE + size
        if end > n:
            break
        yield kind, data[pos + _HSIZE:end], None
        pos = end
    if pos < n:
        rest = data if pos == 0 and isinstance(data, bytearray) else bytearray(data[pos:])
        yield None, None, rest


class _FrameReader:
    """Frames out of a stream of socket reads, for both ends of a pipe:
    ``feed(data)`` yields each complete ``(kind, payload)``; an incomplete tail
    is kept in ``partial`` and completed by the next read."""

    __slots__ = ("partial",)

    def __init__(self) -> None:
        self.partial: Optional[bytearray] = None

    def feed(self, data: Any) -> Iterator[Tuple[int, Any]]:
        partial = self.partial
        if partial is not None:
            partial += data
            data, self.partial = partial, None
        for kind, payload, rest in _frames(data):
            if payload is None:
                self.partial = rest
            else:
                yield kind, payload


def _pickle_error(message: str, exc: BaseException) -> TaskPickleError:
    err = TaskPickleError("%s: %s: %s" % (message, type(exc).__name__, exc))
    err.__cause__ = exc
    return err


def _load_exception(payload: bytes) -> BaseException:
    try:
        exc, tb = _loads(payload)
    except Exception as err:  # pragma: no cover - the child checked it loads
        return RemoteError("the child's exception could not be unpickled: %s: %s" % (type(err).__name__, err))
    exc.__cause__ = RemoteTraceback(tb)
    return exc


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


def _register_atexit() -> None:
    # Done when the first pool is made, never at import.
    global _atexit_registered
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(_kill_leftovers)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_forget_parent_sockets)


def _forget_parent_sockets() -> None:
    # In any forked child (ours, multiprocessing's, a user's os.fork()): the
    # parent's ends of the pool sockets are not its business, and holding them
    # would keep the pool's children from seeing their parent go away.
    for sock in list(_parent_sockets):
        try:
            sock.close()
        except OSError:
            pass
    _parent_sockets.clear()
    _live_pids.clear()


def _kill_leftovers() -> None:
    # At interpreter exit: children of pools nobody shut down get SIGTERM (they
    # would also leave on their own once they see the parent's sockets close).
    for pid in list(_live_pids):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


# -- the child side --------------------------------------------------------------
def _child_main(sock: Any, own_parent_sock: Any, initializer: Any, initargs: tuple, spin: float) -> None:  # pragma: no cover
    """Entry point in a freshly forked child; never returns."""
    code = 1
    try:
        try:
            own_parent_sock.close()
            _forget_parent_sockets()  # (the at-fork hook did it already)
            _fresh_hub()
            code = _serve_parent(sock, initializer, initargs, spin)
        except BaseException:
            traceback.print_exc()
    finally:
        _flush_std_streams()
        os._exit(code)


def _fresh_hub() -> None:  # pragma: no cover - child only
    """Replace the hub inherited through fork by a new one, so that none of the
    parent's greenlets, timers or watchers can run in the child."""
    for signum in range(1, signal.NSIG):
        if signum in (signal.SIGKILL, signal.SIGSTOP, signal.SIGPIPE):
            continue
        try:
            signal.signal(signum, signal.SIG_IGN if signum == signal.SIGINT else signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    gevent.config.monitor_thread = False
    hub = gevent.get_hub()  # reinit() already ran (gevent's fork)
    monitor = hub.periodic_monitoring_thread
    if monitor is not None:
        monitor.kill()
        hub.periodic_monitoring_thread = None
    # The thread pool's threads did not survive fork; drop it (as gipc does:
    # Hub.destroy() would try to kill it and may hang).
    hub._threadpool = None
    gevent.hub.set_hub(None)
    hub.loop.destroy()
    new_hub = gevent.get_hub()
    if new_hub is hub or not new_hub.loop.default:
        raise RuntimeError("gworker: could not make a fresh gevent hub in the child")


def _serve_parent(sock: Any, initializer: Any, initargs: tuple, spin: float) -> int:  # pragma: no cover - child only
    # While the child's hub has nothing else to run (no active watcher, no
    # callback: the calls left no greenlet or timer behind), the child waits for
    # its next call in the original poll() on its socket, for input only: fewer
    # system calls than a turn of the hub. Not a blocking recv: the wait queue
    # it sleeps on is also woken each time the parent reads a result ("room to
    # write"), which would wake the child for nothing once per call; poll and
    # epoll sleep only for the events they asked for. Otherwise the child waits
    # through its hub, so what the calls left behind keeps running. Either way
    # only this child waits: the parent's hub is another process.
    sock.setblocking(False)
    hub = get_hub()
    loop = hub.loop
    fd = sock.fileno()
    io_read = loop.io(fd, 1)
    io_write = loop.io(fd, 2)
    recv = sock.recv
    # libev counts pending callbacks among its active watchers; libuv's count
    # leaves out timers and callbacks, so a libuv child always waits in its hub.
    # The count starts where the loop destroyed by _fresh_hub left it (libev's
    # default loop reuses its struct), so "nothing else to run" is "no more
    # than now", taken before the initializer can start anything.
    idle_count = loop.activecnt if type(loop).__module__.startswith("gevent.libev") else -1
    poller = _original_poll()
    poller.register(fd, _POLLIN)
    poll = poller.poll

    def send(kind: int, payload: bytes) -> None:
        data = memoryview(_HEADER.pack(len(payload), kind) + payload)
        while data:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                hub.wait(io_write)
                continue
            data = data[sent:]

    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException:
            send(_K_INIT_FAILED, traceback.format_exc().encode("utf-8", "replace"))
            return 1

    frames: Deque[Tuple[int, Any]] = deque()
    reader = _FrameReader()
    # Polling for the next call (module docs, "A child waiting for its next
    # call"): allowed per call by the parent (_K_CALL_SPIN), done while each
    # call came within `spin` of the last result.
    spinning = True  # (try it once)
    answered = 0.0  # when the last result was sent, if it may spin after it
    perf_counter = time.perf_counter
    sched_yield = os.sched_yield
    while True:
        # Take the next frame, reading (after poll() or a turn of the hub) if needed.
        while not frames:
            idle = loop.activecnt <= idle_count
            if idle:
                if answered and spinning:
                    deadline = answered + spin
                    while not poll(0) and perf_counter() < deadline:
                        sched_yield()
                poll()  # (at once when a call is already there)
            try:
                data = recv(_RECV_SIZE)
            except BlockingIOError:
                if not idle:
                    hub.wait(io_read)
                continue
            except OSError:
                return 0
            if not data:
                return 0  # the parent is gone
            frames.extend(reader.feed(data))
            if answered:
                # Spin next time only if this call came within the spin time.
                spinning = perf_counter() - answered < spin
                answered = 0.0
        kind, payload = frames.popleft()
        if kind == _K_STOP:
            return 0
        may_spin = kind == _K_CALL_SPIN
        fatal = False
        fn = None
        try:
            fn, args, kwargs = _load_call(payload)
            del payload
            value = fn(*args, **kwargs)
        except Exception as exc:
            kind, out = _K_ERR, _dump_exception(exc, fn)
        except BaseException as exc:
            fatal = True
            err = RemoteError("%s raised %s in child process %d, which exits"
                              % (_describe(fn), _exc_name(exc), os.getpid()))
            kind, out = _K_ERR_EXIT, _dump_exception(err, fn, traceback.format_exc())
        else:
            try:
                out = _dumps(value, _PROTOCOL)
                kind = _K_OK
            except Exception as exc:
                err = _pickle_error("the result of %s (%s) could not be pickled in the child"
                                    % (_describe(fn), type(value).__name__), exc)
                err.__cause__ = None
                kind, out = _K_ERR, _dump_exception(err, fn, "")
            del value
        args = kwargs = None
        send(kind, out)
        del out
        if may_spin and not frames:
            answered = perf_counter()
        if fatal:
            return 1


def _original_poll() -> Any:  # pragma: no cover - child only
    # monkey.patch_all() removes select.poll; the child wants the real one.
    from gevent.monkey import get_original
    return get_original("select", "poll")()


def _exc_name(exc: BaseException) -> str:
    return "%s(%s)" % (type(exc).__name__, ", ".join(map(repr, exc.args)))


def _dump_exception(exc: BaseException, fn: Any, tb: Optional[str] = None) -> bytes:  # pragma: no cover
    if tb is None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    exc.__traceback__ = None
    try:
        data = _dumps((exc, tb), _PROTOCOL)
        _loads(data)  # an exception that pickles may still not unpickle
        return data
    except Exception as err:
        substitute = RemoteError(
            "%s raised %s.%s: %s (it could not be sent back as itself: %s: %s)"
            % (_describe(fn), type(exc).__module__, type(exc).__qualname__, exc, type(err).__name__, err)
        )
        return _dumps((substitute, tb), _PROTOCOL)
