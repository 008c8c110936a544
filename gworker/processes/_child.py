"""The child's side: a fresh hub after fork, then the loop that serves the
parent's calls (see "A child waiting for its next call" in
:mod:`gworker.processes`)."""
from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections import deque
from typing import Any, Deque, Dict, Tuple

import gevent
from gevent.hub import get_hub

from .._gevent import drop_hub
from ._registry import forget_parent_sockets
from ._wire import (
    HEADER,
    K_CALL_SPIN,
    K_ERR,
    K_ERR_EXIT,
    K_INIT_FAILED,
    K_OK,
    K_READY,
    K_STOP,
    POLLIN,
    PROTOCOL,
    RECV_SIZE,
    describe,
    dump_exception,
    dumps,
    exc_name,
    FrameReader,
    load_call,
    pickle_error,
)
from .errors import ProcessPoolError, RemoteError


def flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


# -- the child side --------------------------------------------------------------
#: This process's polls for its next call (see child_poll_counts): [polls, caught]
_polls = [0, 0]


def child_poll_counts() -> Dict[str, int]:
    """In a child process of a :class:`~gworker.processes.ProcessPool` (call it
    from a function submitted to the pool): how often the child, having
    answered a call, polled for its next one (``polls``; see ``spin`` in
    :mod:`gworker.processes`) and how often that call came while it polled
    (``caught``). In any other process both are 0."""
    return {"polls": _polls[0], "caught": _polls[1]}


def child_main(sock: Any, own_parent_sock: Any, initializer: Any, initargs: tuple, spin: float,
               parent_hub: Any) -> None:  # pragma: no cover
    """Entry point in a freshly forked child (forked by ``fork_apart``: the
    parent's hub is ``parent_hub``); never returns."""
    code = 1
    try:
        try:
            own_parent_sock.close()
            forget_parent_sockets()  # (the at-fork hook did it already)
            _fresh_hub(parent_hub)
            code = _serve_parent(sock, initializer, initargs, spin)
        except BaseException:
            traceback.print_exc()
    finally:
        flush_std_streams()
        os._exit(code)


def _fresh_hub(parent_hub: Any) -> None:  # pragma: no cover - child only
    """Make the thread's hub a new one on a new default loop, so that none of
    the parent's greenlets, timers or watchers can run in the child: the
    parent's hub (which never ran here: the fork swapped it out, see
    :func:`gworker._gevent.fork_apart`) and the stand-in the child's at-fork
    hooks ran in are both let go, their loops destroyed."""
    for signum in range(1, signal.NSIG):
        if signum in (signal.SIGKILL, signal.SIGSTOP, signal.SIGPIPE):
            continue
        try:
            signal.signal(signum, signal.SIG_IGN if signum == signal.SIGINT else signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    gevent.config.monitor_thread = False
    stand_in = gevent.get_hub()  # (reinitialised by fork_apart)
    for hub in (stand_in, parent_hub):
        monitor = hub.periodic_monitoring_thread
        if monitor is not None:
            monitor.kill()
            hub.periodic_monitoring_thread = None
    # The thread pools' threads did not survive fork: drop the hubs without
    # Hub.destroy(), which would try to kill them and may hang.
    drop_hub(stand_in)
    stand_in.loop.destroy()
    drop_hub(parent_hub)
    # (reinitialised first: a loop that still shared the parent's epoll
    # instance could, as it closes, take the parent's file descriptors out of it)
    parent_hub.loop.reinit()
    parent_hub.loop.destroy()
    new_hub = gevent.get_hub()
    if new_hub is parent_hub or new_hub is stand_in or not new_hub.loop.default:
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
    poller.register(fd, POLLIN)
    poll = poller.poll

    def send(kind: int, payload: bytes) -> None:
        data = memoryview(HEADER.pack(len(payload), kind) + payload)
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
            send(K_INIT_FAILED, traceback.format_exc().encode("utf-8", "replace"))
            return 1
    # From now on calls run: the parent starts the clock of a time limit
    # (``submit(timeout=)``) on a call it wrote to this child before it was
    # ready only when it reads this, so neither the fork nor the initializer
    # counts against the limit.
    send(K_READY, b"")

    frames: Deque[Tuple[int, Any]] = deque()
    reader = FrameReader()
    # Polling for the next call (module docs, "A child waiting for its next
    # call"): allowed per call by the parent (K_CALL_SPIN), done while each
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
                    caught = poll(0)
                    while not caught and perf_counter() < deadline:
                        sched_yield()
                        caught = poll(0)
                    _polls[0] += 1
                    if caught:
                        _polls[1] += 1
                poll()  # (at once when a call is already there)
            try:
                data = recv(RECV_SIZE)
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
        if kind == K_STOP:
            return 0
        may_spin = kind == K_CALL_SPIN
        fatal = False
        fn = None
        err: ProcessPoolError  # a RemoteError or a TaskPickleError (annotation only: no runtime cost)
        try:
            fn, args, kwargs = load_call(payload)
            del payload
            value = fn(*args, **kwargs)
        except Exception as exc:
            kind, out = K_ERR, dump_exception(exc, fn)
        except BaseException as exc:
            fatal = True
            err = RemoteError("%s raised %s in child process %d, which exits"
                              % (describe(fn), exc_name(exc), os.getpid()))
            kind, out = K_ERR_EXIT, dump_exception(err, fn, traceback.format_exc())
        else:
            try:
                out = dumps(value, PROTOCOL)
                kind = K_OK
            except Exception as exc:
                err = pickle_error("the result of %s (%s) could not be pickled in the child"
                                    % (describe(fn), type(value).__name__), exc)
                err.__cause__ = None
                kind, out = K_ERR, dump_exception(err, fn, "")
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
