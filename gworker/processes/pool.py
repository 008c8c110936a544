"""The parent's side: :class:`ProcessPool`, its children and their scheduling
(see :mod:`gworker.processes`)."""
from __future__ import annotations

import logging
import os
import signal
from time import monotonic
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple, Union

import _socket
import gevent
import gevent.os
from gevent.hub import Waiter, get_hub, getcurrent

from .._gevent import fork_apart
from .._hubsafe import call_in_hub, in_hub_thread, os_thread_ident
from ..limits import RunTimeout, check_timeout
from ._child import child_main, flush_std_streams
from ._registry import live_pids, parent_sockets, register_atexit
from ._wire import (
    HEADER,
    K_CALL,
    K_CALL_SPIN,
    K_CONTROL,
    K_ERR_EXIT,
    K_OK,
    K_READY,
    RECV_SIZE,
    STOP_FRAME,
    FrameReader,
    call_payload,
    describe,
    describe_status,
    load_exception,
    loads,
    pickle_error,
    send_error,
)
from .errors import ChildProcessDied, PoolClosed
from .result import ERR, OK, ProcessResult, failed_result, reader_greenlets

log = logging.getLogger("gworker")

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


# -- the parent's view of one child --------------------------------------------
class _Child:
    __slots__ = (
        "sock", "fd", "pid", "calls", "nsent", "idle", "retiring", "exited", "exitcode",
        "waiter", "io_read", "io_write", "outbuf", "init_error", "busy_since",
        "ready", "clocked", "deadline", "clock",
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
        # It runs the calls it is given: set when it says so (K_READY, after
        # its initializer), unset once it is on its way out.
        self.ready = False
        # The time limit of the call at the head of ``calls``, if it has one
        # and has started (see ProcessPool._start_clock): that call, the
        # monotonic time the limit passes, and a loop timer that wakes the
        # slot greenlet then. All None otherwise.
        self.clocked: Optional[_TimedResult] = None
        self.deadline: Optional[float] = None
        self.clock: Any = None

    def on_exit(self, watcher: Any) -> None:
        # libev child watcher callback (a raw hub callback): record and wake.
        status = watcher.rstatus
        if os.WIFSIGNALED(status):
            self.exitcode = -os.WTERMSIG(status)
        elif os.WIFEXITED(status):
            self.exitcode = os.WEXITSTATUS(status)
        self.exited = True
        live_pids.discard(self.pid)
        waiter = self.waiter
        if waiter is not None:
            waiter.switch(None)


class _TimedResult(ProcessResult):
    """The result of a call with a time limit (``submit(timeout=)``): it holds
    the limit, and keeps the pool's count of such calls in flight, which is
    what lets calls without a limit skip every step of the feature."""

    __slots__ = ("limit", "_pool")

    def __init__(self, hub: Any, fn: Any, limit: float, pool: "ProcessPool") -> None:
        ProcessResult.__init__(self, hub, fn)
        self.limit = limit
        self._pool: Optional[ProcessPool] = pool
        pool._timed += 1

    def settle(self, state: int, value: Any) -> None:
        pool = self._pool
        if pool is not None:
            self._pool = None
            pool._timed -= 1
        ProcessResult.settle(self, state, value)


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
        #: False, or why the children are being killed (see _kill_children)
        self._terminating: Union[bool, str] = False
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
        # calls with a time limit submitted and not finished yet (see _TimedResult)
        self._timed = 0
        self._timeouts = 0
        register_atexit()
        self._slots = [gevent.spawn(self._run_slot, index) for index in range(self._processes)]

    # -- public figures ----------------------------------------------------------
    @property
    def hub(self) -> Any:
        """The hub the pool belongs to (its children are watched by that hub's
        loop; calls from other OS threads are handed to it)."""
        return self._hub

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
    def timeouts(self) -> int:
        """How many calls were cut off by their time limit (``submit(timeout=)``):
        each failed with :class:`~gworker.RunTimeout`, and its child was killed
        and replaced."""
        return self._timeouts

    @property
    def closed(self) -> bool:
        """True once :meth:`shutdown` or :meth:`terminate` was called."""
        return self._state != _RUNNING

    def __repr__(self) -> str:
        return "<ProcessPool processes=%d size=%d busy=%d pending=%d%s>" % (
            self._processes, self.size, self.busy, self.pending, " closed" if self.closed else "",
        )

    # -- submitting --------------------------------------------------------------
    def submit(
        self, fn: Callable[..., Any], args: Any = (), kwargs: Optional[dict] = None,
        timeout: Optional[float] = None,
    ) -> ProcessResult:
        """Run ``fn(*args, **kwargs)`` in a child; return its :class:`ProcessResult`.

        Never waits: the call goes to an idle child at once, or into the FIFO
        queue. A call that does not pickle gives a result that has already failed
        with :class:`TaskPickleError`. After :meth:`shutdown`, raises
        :class:`PoolClosed`. Safe from another OS thread (handed to the pool's hub).

        ``timeout`` (seconds, None for none) is the call's time limit, counted
        from when it starts running in its child — time spent queued does not
        count. A call still running at its limit fails with
        :class:`~gworker.RunTimeout`; its child is killed and replaced, and the
        calls that were waiting in that child go to other children (see "Time
        limits" in :mod:`gworker.processes`). It is not a wait limit: for that,
        ``result.get(timeout=)``."""
        return self.submit_with_id(fn, args, kwargs, None, timeout)

    def submit_with_id(
        self, fn: Callable[..., Any], args: Any, kwargs: Optional[dict], task_id: Any,
        timeout: Optional[float] = None,
    ) -> ProcessResult:
        """:meth:`submit`; a ``task_id`` that is not None is passed to ``fn`` as
        the keyword ``_task_id`` (over any in ``kwargs``), added in the child:
        the supervisor's TT_MP tasks need no copy of their keywords per call."""
        if timeout is not None:
            timeout = check_timeout(timeout)
        hub = self._hub
        if hub.thread_ident != os_thread_ident():
            return call_in_hub(hub, self.submit_with_id, fn, args, kwargs, task_id, timeout)
        if self._state != _RUNNING:
            raise PoolClosed("the process pool is shut down; %s was not submitted" % describe(fn))
        try:
            payload = call_payload(fn, args, kwargs, task_id)
        except Exception as exc:
            return failed_result(hub, fn, send_error(fn, exc))
        result = ProcessResult(hub, fn) if timeout is None else _TimedResult(hub, fn, timeout, self)
        idle = self._idle
        while idle:
            child = idle.pop()
            child.idle = False
            if not child.exited:  # (one that died idle is being buried)
                # A call that finds a child idle may be one of a sequence (each
                # submitted once the last is done): let that child poll for the
                # next one, while few enough others are busy (see K_CALL_SPIN).
                kind = K_CALL
                if self._spin and len(self._children) - len(idle) <= self._spin_slots:
                    kind = K_CALL_SPIN
                self._give(child, [(HEADER.pack(len(payload), kind) + payload, result)])
                return result
        self._queue.append((HEADER.pack(len(payload), K_CALL) + payload, result))
        return result

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Any = (),
        kwds: Optional[dict] = None,
        callback: Optional[Callable[[Any], Any]] = None,
        error_callback: Optional[Callable[[BaseException], Any]] = None,
        timeout: Optional[float] = None,
    ) -> ProcessResult:
        """``multiprocessing.Pool.apply_async`` look-alike over :meth:`submit`
        (``timeout``: the call's time limit, as in :meth:`submit`)."""
        result = self.submit(func, args, kwds, timeout)
        if callback is not None or error_callback is not None:

            def dispatch(res: ProcessResult) -> None:
                exc = res.exception()
                if exc is None:
                    if callback is not None:
                        callback(res.value)
                elif error_callback is not None:
                    error_callback(exc)

            result.rawlink(dispatch)
        return result

    def apply(
        self, func: Callable[..., Any], args: Any = (), kwds: Optional[dict] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Run ``func`` in a child and return its value (waits cooperatively;
        ``timeout``: the call's time limit, as in :meth:`submit`)."""
        return self.submit(func, args, kwds, timeout).get()

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
            result.fail(PoolClosed("the process pool was shut down before %s started" % describe(result.fn)))
        idle = self._idle
        while idle:
            child = idle.pop()
            child.idle = False
            child.retiring = True
            self._send(child, STOP_FRAME)
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
        reader_greenlets.add(getcurrent())  # (ProcessResult.wait refuses to wait in it)
        try:
            self._slot_loop()
        finally:
            reader_greenlets.discard(getcurrent())
            # Done for good: forget the finished greenlet.
            try:
                self._slots.remove(getcurrent())  # type: ignore[arg-type]  # (this slot's Greenlet)
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
                        queue.popleft()[1].fail(ChildProcessDied("no child process could be started: %s" % exc))
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
        flush_std_streams()
        try:
            # (fork_apart: the child's at-fork hooks, other libraries', never run this hub)
            pid = gevent.os.fork_and_watch(child.on_exit, fork=fork_apart)
        except BaseException:
            parent_sock.close()
            child_sock.close()
            raise
        if pid == 0:  # pragma: no cover - runs in the child, never returns
            child_main(child_sock, parent_sock, self._initializer, self._initargs, self._spin, self._hub)
        child_sock.close()
        child.pid = pid
        live_pids.add(pid)
        parent_sock.setblocking(False)
        parent_sockets.add(parent_sock)
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
        reader = FrameReader()
        while True:
            try:
                data = recv(RECV_SIZE)
            except BlockingIOError:
                if child.exited:
                    return  # dead, and all it wrote is read
                # Nothing more to read and no reply begun: if the running
                # call is past its time limit, it has not answered in time.
                if child.deadline is not None and reader.partial is None and self._past_limit(child):
                    return  # cut off: killed, its calls settled or put back
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
                if child.deadline is not None and not child.clock.active:
                    # The time limit's timer fired while this greenlet was
                    # busy (or early): read once more, then judge.
                    continue
                # All it sent so far is read: wait rather than ask again (a
                # recv that would only say EAGAIN).
                self._wait(child)

    def _wait(self, child: _Child, timeout: Optional[float] = None) -> None:
        """Wait until ``child``'s socket is readable, it exits, or ``timeout``."""
        waiter: Waiter[None] = Waiter(self._hub)
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
        if kind >= K_CONTROL:
            if kind == K_READY:
                child.ready = True
                if self._timed:
                    self._start_clock(child)  # a call written before it was ready starts now
            else:  # K_INIT_FAILED
                child.init_error = bytes(payload).decode("utf-8", "replace")
            return
        calls = child.calls
        if not calls:  # pragma: no cover - a protocol error
            log.error("gworker process pool: child %d sent a result nobody asked for", child.pid)
            return
        result = calls.popleft()[1]
        if kind == K_ERR_EXIT:
            child.retiring = True  # it is on its way out: give it nothing more
            child.ready = False  # (nor does it start what it was given)
            # It exits after this reply, so the calls written after this one
            # never start: back to the head of the queue now (left in its
            # window, the first of them would be failed as the call it died in).
            rest, child.calls = child.calls, deque()
            self._put_back(rest)
        elif not calls:
            self._refill(child)  # keep the child busy before settling the result
        if self._timed:
            # The child began its next call (written ahead) when it sent this
            # reply: if that call has a time limit, it counts from now.
            self._start_clock(child)
        if kind == K_OK:
            try:
                value = loads(payload)
            except Exception as exc:
                result.settle(ERR, pickle_error(
                    "the result of %s could not be unpickled in the parent" % describe(result.fn), exc))
            else:
                result.settle(OK, value)
        else:
            result.settle(ERR, load_exception(payload))

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
                self._send(child, STOP_FRAME)
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
        calls = child.calls
        if self._timed and not calls:
            calls.extend(batch)
            self._start_clock(child)  # an idle child: its first call starts now
        else:
            calls.extend(batch)
        child.nsent += len(batch)
        if self._maxtasks is not None and child.nsent >= self._maxtasks:
            child.retiring = True  # it exits after this last call
            self._send(child, b"".join([frame for frame, _ in batch] + [STOP_FRAME]))
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
        # (started only while the child has an outbuf; stopped when it is None)
        try:
            sent = child.sock.send(child.outbuf)
        except BlockingIOError:
            return
        except OSError:
            sent = len(child.outbuf)  # type: ignore[arg-type]
        rest = child.outbuf[sent:]  # type: ignore[index]
        if len(rest):
            child.outbuf = rest
        else:
            child.outbuf = None
            child.io_write.stop()

    def _bury(self, child: _Child) -> None:
        """The child's socket is done: make sure it exited, fail its call, clean up."""
        child.ready = False
        if child.clock is not None:
            self._stop_clock(child)
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
        parent_sockets.discard(child.sock)
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
                result.fail(PoolClosed("%s: child process %d was stopped while running %s"
                                        % (why, child.pid, describe(result.fn))))
            else:
                message = "child process %d died (%s) while running %s" % (
                    child.pid, describe_status(child.exitcode), describe(result.fn))
                if child.init_error:
                    message += "; its initializer raised:\n" + child.init_error
                result.fail(ChildProcessDied(message, child.pid, child.exitcode))
            # The calls written after it never started (a child runs them in
            # order): they go back to the head of the queue.
            self._put_back(calls)
        elif child.init_error and not child.retiring:
            log.error("gworker process pool: the initializer of child %d raised:\n%s", child.pid, child.init_error)

    def _put_back(self, calls: Any) -> None:
        """Calls written to a child that never started them: back to the head
        of the queue, in their order (failed if the pool is closing)."""
        if not calls:
            return
        if self._state == _RUNNING:
            self._queue.extendleft(reversed(calls))
            self._kick()
        else:
            for frame, result in calls:
                result.fail(PoolClosed("the process pool was shut down before %s started"
                                        % describe(result.fn)))

    # -- time limits (submit(timeout=); see "Time limits" in the module docs) -------
    def _start_clock(self, child: _Child) -> None:
        """The call at the head of ``child``'s window has started, as far as the
        parent can know (it was written to the child, idle and ready; or the
        reply before it was read; or the child said it is ready): start its
        time limit if it has one. Called only while some call has a limit."""
        calls = child.calls
        head = calls[0][1] if calls and child.ready else None
        if head is child.clocked:
            return  # its limit runs already (from when it started)
        if child.clock is not None:
            child.clock.close()
            child.clock = None
        if type(head) is _TimedResult:
            child.clocked = head
            child.deadline = monotonic() + head.limit
            clock = child.clock = self._hub.loop.timer(head.limit)
            clock.start(self._on_limit, child)
        else:
            child.clocked = None
            child.deadline = None

    def _stop_clock(self, child: _Child) -> None:
        if child.clock is not None:
            child.clock.close()
        child.clock = child.clocked = child.deadline = None

    def _on_limit(self, child: _Child) -> None:
        # The limit's timer (a raw hub callback): wake the slot greenlet if it
        # waits on the socket; otherwise it looks at the clock before it
        # waits next (see _serve).
        waiter = child.waiter
        if waiter is not None:
            waiter.switch(None)

    def _past_limit(self, child: _Child) -> bool:
        """In the slot greenlet, once a read found nothing more from ``child``
        (so its running call has not answered): cut that call off if it is
        past its time limit, and say so; otherwise make sure the timer will
        wake the greenlet when it is."""
        result = child.clocked
        calls = child.calls
        if result is None or not calls or calls[0][1] is not result:  # pragma: no cover - kept in step
            self._stop_clock(child)
            return False
        left = child.deadline - monotonic()  # type: ignore[operator]  # (set with clocked)
        if left > 0:
            clock = child.clock
            if not clock.active:
                # libev counts a timer from the loop's time of this turn,
                # which may lag behind: it fired early. Wait out the rest.
                clock.close()
                clock = child.clock = self._hub.loop.timer(left)
                clock.start(self._on_limit, child)
            return False
        if self._terminating:
            # terminate() or a timed-out shutdown is stopping the children:
            # the call fails with PoolClosed like every other running call.
            self._stop_clock(child)
            return False
        self._cut_off(child, result)
        return True

    def _cut_off(self, child: _Child, result: _TimedResult) -> None:
        """Kill ``child``, whose running call ``result`` is past its time limit;
        put the calls written after it back (they had not started); fail it
        with RunTimeout. The slot greenlet then buries the child (reaps it)
        and forks a replacement."""
        self._stop_clock(child)
        child.retiring = True  # give it nothing more
        child.ready = False
        try:
            os.kill(child.pid, signal.SIGKILL)  # (not reaped yet: the pid is still its own)
        except OSError:
            pass
        self._timeouts += 1
        calls, child.calls = child.calls, deque()
        calls.popleft()
        self._put_back(calls)
        result.fail(RunTimeout(result.limit, "process call %s" % describe(result.fn)))

    def _wait_exit(self, child: _Child, timeout: float) -> None:
        """Wait (cooperatively, at most ``timeout`` s) for the child watcher."""
        waiter: Waiter[None] = Waiter(self._hub)
        child.waiter = waiter
        timer = self._hub.loop.timer(timeout)
        timer.start(waiter.switch, None)
        try:
            if not child.exited:
                waiter.get()
        finally:
            child.waiter = None
            timer.close()
