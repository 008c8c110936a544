"""The parent's handle on one call: :class:`ProcessResult`."""
from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional, Set

import gevent
from gevent.hub import Waiter, getcurrent

from .._errors import report
from .._hubsafe import call_in_hub, in_hub_thread
from ._wire import describe
from .errors import ResultTimeout

log = logging.getLogger("gworker")


# -- results -------------------------------------------------------------------
#: A result's states: not finished; returned (the value is the return value);
#: failed (the value is the exception).
PENDING, OK, ERR = 0, 1, 2

#: The pool's reader greenlets, which settle results and run their callbacks:
#: waiting for a result in one of them could wait for itself (see ``wait``).
reader_greenlets: Set[Any] = set()


class ProcessResult:
    """The outcome of one :meth:`ProcessPool.submit` call.

    ``get(timeout=None)`` waits cooperatively (through the hub) and returns the
    value or raises the call's exception; ``wait``, ``ready``, ``successful``,
    ``exception`` and ``rawlink``/``add_done_callback`` are as in
    ``multiprocessing`` and ``concurrent.futures``.

    The pool's side — :meth:`on_settle`, :meth:`settle` and :meth:`fail` — is
    for gworker's own layers (the pool, the supervisor), in the hub's thread."""

    __slots__ = (
        "_hub", "fn", "_state", "_value", "_waiters", "_callbacks", "_hook", "_hook_arg", "__weakref__",
    )

    def __init__(self, hub: Any, fn: Any) -> None:
        self._hub = hub
        #: the function that was submitted (for messages and for the curious)
        self.fn = fn
        self._state = PENDING
        self._value: Any = None
        self._waiters: Optional[List[Waiter]] = None
        self._callbacks: Optional[List[Callable[[Any], Any]]] = None
        self._hook: Optional[Callable[[Any, Optional[BaseException], Any], Any]] = None
        self._hook_arg: Any = None

    def __repr__(self) -> str:
        state = ("pending", "done", "failed")[self._state]
        return "<ProcessResult %s %s>" % (describe(self.fn), state)

    # -- state ---------------------------------------------------------------
    def ready(self) -> bool:
        """True once the call has finished (returned, raised or failed)."""
        return self._state != PENDING

    def successful(self) -> bool:
        """True if the call returned a value. ``ValueError`` if not ready yet
        (as ``multiprocessing``'s ``AsyncResult``)."""
        if self._state == PENDING:
            raise ValueError("%r is not ready" % self)
        return self._state == OK

    def exception(self) -> Optional[BaseException]:
        """The exception of a failed call, ``None`` if it returned (or is pending)."""
        return self._value if self._state == ERR else None

    @property
    def value(self) -> Any:
        """The return value, or ``None`` while pending or after a failure."""
        return self._value if self._state == OK else None

    # -- waiting -------------------------------------------------------------
    def get(self, timeout: Optional[float] = None) -> Any:
        """Return the value, or raise the call's exception; wait cooperatively
        at most ``timeout`` seconds (:class:`ResultTimeout` past it)."""
        state = self._state
        if state == PENDING:
            if not in_hub_thread(self._hub):
                return call_in_hub(self._hub, self.get, timeout)
            if not self.wait(timeout):
                raise ResultTimeout("%s did not finish within %ss" % (describe(self.fn), timeout))
            state = self._state
        if state == OK:
            return self._value
        raise self._value.with_traceback(None)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait cooperatively until ready or ``timeout`` seconds; return ``ready()``."""
        if self._state != PENDING:
            return True
        if not in_hub_thread(self._hub):
            return call_in_hub(self._hub, self.wait, timeout)
        if getcurrent() in reader_greenlets:
            # A callback runs in a reader greenlet; waiting there could wait for
            # the very greenlet that has to read the result: refuse, always.
            raise RuntimeError(
                "cannot wait for %r inside a ProcessResult callback (callbacks run in"
                " the pool's reader greenlet): spawn a greenlet to wait, or use rawlink" % self
            )
        waiter: Waiter[None] = Waiter(self._hub)
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
            if self._state == PENDING:
                try:
                    self._waiters.remove(waiter)
                except (ValueError, AttributeError):
                    pass
        return self._state != PENDING

    # -- callbacks -----------------------------------------------------------
    def rawlink(self, callback: Callable[["ProcessResult"], Any]) -> None:
        """Call ``callback(self)`` when the call finishes (see the module docs
        for where it runs)."""
        if not callable(callback):
            raise TypeError("callback must be callable; got %r" % (callback,))
        if self._state != PENDING:
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

    def on_settle(self, hook: Callable[[Any, Optional[BaseException], Any], Any], arg: Any) -> None:
        """For gworker's own layers: call ``hook(arg, exception, value)`` when
        the call finishes (``exception`` is None if it returned), before waiters
        and callbacks; from a hub callback if it has finished already (a call
        that did not pickle), so that a long run of those is spread over turns
        of the loop. One hook per result; it runs where the result settles (the
        pool's reader greenlet), so it must not wait. Cheaper than
        :meth:`rawlink` with a closure: no greenlet, no list, no object per
        call."""
        if self._state == PENDING:
            self._hook = hook
            self._hook_arg = arg
        else:
            self._hub.loop.run_callback(_run_hook, hook, arg, self._state, self._value)

    # -- settling: the pool's side (hub thread only) ------------------------------
    def settle(self, state: int, value: Any) -> None:
        """Finish the call: ``state`` is :data:`OK` (``value`` is what it
        returned) or :data:`ERR` (``value`` is its exception). Runs the
        :meth:`on_settle` hook, then wakes the waiters, then the callbacks.
        Once per result: the pool settles each exactly once."""
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

    def fail(self, exc: BaseException) -> None:
        """Fail the call with ``exc`` unless it has finished already."""
        if self._state == PENDING:
            self.settle(ERR, exc)


def _run_callbacks(result: ProcessResult, callbacks: List[Callable[[Any], Any]]) -> None:
    for callback in callbacks:
        try:
            callback(result)
        except Exception:
            report("callback %r of %r raised", callback, result)


def _run_hook(
    hook: Callable[[Any, Optional[BaseException], Any], Any], arg: Any, state: int, value: Any
) -> None:
    try:
        if state == OK:
            hook(arg, None, value)
        else:
            hook(arg, value, None)
    except Exception:
        report("hook %r of a process pool result raised", hook)


def failed_result(hub: Any, fn: Any, exc: BaseException) -> ProcessResult:
    """A result that failed before it was submitted (nothing waits for it yet)."""
    result = ProcessResult(hub, fn)
    result.settle(ERR, exc)
    return result
