"""Function and task collections: run a set of registered functions at once.

Collections suit the things a program does in a batch — at start-up, at
shutdown, on reload. Functions are registered with the collection used as a
decorator, then run together::

    startup = FunctionCollection(on_error=report)

    @startup
    def open_db(): ...

    @startup(priority=TASK_HIGH)
    def load_config(): ...

    results = startup.run()              # {'mymod.load_config': ..., 'mymod.open_db': ...}
    results, all_ok = startup.execute()

:class:`FunctionCollection` calls the functions one after another, in priority
order (a smaller number first; registration order within one priority), in the
calling greenlet. :class:`TaskCollection` starts each as a background task
(a greenlet admitted by the supervisor's pool at the function's priority), so
they run concurrently, and returns once all have finished.

The result is a dict ``{'<module>.<function name>': <return value>}`` in the
order the functions were started. A function that raises gives ``None`` there
(or ``(exception, traceback text)`` with ``include_exceptions=True``) and makes
``all_ok`` false; ``on_error(**on_error_kwargs)`` is called inside the
``except`` block, as atasker calls it (so a handler that takes no arguments
works, and ``sys.exc_info()`` there is the function's exception), through
:meth:`FunctionCollection.error`, which a subclass may override as in atasker.
Without ``on_error`` the exception propagates out of
``run()``/``execute()``, as in atasker: at once for a function collection (the
remaining functions are not called), after all tasks have finished for a task
collection.
"""
from __future__ import annotations

import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

import sys

from ._checks import check_seconds
from .priorities import TASK_NORMAL, check_priority
from ._default import supervisor_or_default
from .tasks import wait_completed

__all__ = ["FunctionCollection", "TaskCollection"]


def _key(f: Callable[..., Any]) -> str:
    return "%s.%s" % (getattr(f, "__module__", None), getattr(f, "__name__", repr(f)))


class FunctionCollection:
    """Registered functions, called in priority order by :meth:`run` (see the
    module docstring).

    ``on_error``: called as ``on_error(**on_error_kwargs)`` inside the
    ``except`` block when a function raises; ``include_exceptions``: put
    ``(exception, traceback)`` into the result instead of ``None``. Other
    keywords are ignored, as atasker ignores them (a ``UserWarning`` for one
    that looks like a misspelling).
    """

    #: the keywords the collections know (others are ignored)
    _parameters: Tuple[str, ...] = ("on_error", "on_error_kwargs", "include_exceptions")

    def __init__(
        self,
        *,
        on_error: Optional[Callable[..., Any]] = None,
        on_error_kwargs: Optional[Dict[str, Any]] = None,
        include_exceptions: bool = False,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            from .workers.base import check_unknown_keywords

            check_unknown_keywords(type(self).__name__, kwargs, self._parameters)
        if on_error is not None and not callable(on_error):
            raise TypeError("on_error must be callable or None; got %r" % (on_error,))
        if on_error_kwargs is not None and not isinstance(on_error_kwargs, dict):
            raise TypeError("on_error_kwargs must be a dict or None; got %r" % (on_error_kwargs,))
        self.on_error = on_error
        self.on_error_kwargs: Dict[str, Any] = dict(on_error_kwargs or {})
        self.include_exceptions = bool(include_exceptions)
        self.default_priority = TASK_NORMAL
        self._entries: List[Tuple[Any, Callable[..., Any]]] = []

    # -- registering -----------------------------------------------------------
    def __call__(self, f: Optional[Callable[..., Any]] = None, **kwargs: Any) -> Any:
        """``@collection`` and ``@collection(priority=...)`` register the function
        (and return it unchanged); ``collection()`` with no argument runs the
        collection (same as :meth:`run`)."""
        if f is not None:
            self.append(f, **kwargs)
            return f
        if kwargs:
            def register(func: Callable[..., Any]) -> Callable[..., Any]:
                self.append(func, **kwargs)
                return func

            return register
        return self.run()

    def _check_priority(self, priority: Any) -> Any:
        # Only the order matters here: any number will do.
        if isinstance(priority, bool) or not isinstance(priority, (int, float)):
            raise TypeError("priority must be a number (e.g. TASK_NORMAL); got %r" % (priority,))
        return priority

    def append(self, f: Callable[..., Any], priority: Any = None) -> None:
        """Register ``f`` (no-op if it is registered already) at ``priority``
        (default ``TASK_NORMAL``; a smaller number runs first)."""
        if not callable(f):
            raise TypeError("f must be callable; got %r" % (f,))
        priority = self.default_priority if priority is None else self._check_priority(priority)
        if any(func is f for _, func in self._entries):
            return
        self._entries.append((priority, f))

    def remove(self, f: Callable[..., Any]) -> None:
        """Unregister ``f``; ``ValueError`` if it is not registered."""
        for i, (_, func) in enumerate(self._entries):
            if func is f:
                del self._entries[i]
                return
        raise ValueError("f: %r is not in this collection" % (f,))

    @property
    def functions(self) -> List[Callable[..., Any]]:
        """The registered functions, in the order they run."""
        return [f for _, f in self._ordered()]

    def _ordered(self) -> List[Tuple[Any, Callable[..., Any]]]:
        return sorted(self._entries, key=lambda entry: entry[0])  # stable: FIFO per priority

    # -- running -----------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        """Run every function; return ``{'<module>.<name>': result}``."""
        return self.execute()[0]

    def execute(self) -> Tuple[Dict[str, Any], bool]:
        """Run every function; return ``(results, all_ok)``, ``all_ok`` false if
        any function raised."""
        result: Dict[str, Any] = {}
        all_ok = True
        for _, f in self._ordered():
            ok, value = self._call(f)
            result[_key(f)] = value
            all_ok = all_ok and ok
        return result, all_ok

    def _call(self, f: Callable[..., Any]) -> Tuple[bool, Any]:
        try:
            return True, f()
        except Exception as exc:
            value = (exc, traceback.format_exc()) if self.include_exceptions else None
            self.error()
            return False, value

    def error(self) -> None:
        """Handle the exception being handled (call it in an ``except`` block),
        as atasker does: call ``on_error(**on_error_kwargs)``, or without
        ``on_error`` re-raise it."""
        if self.on_error is None:
            if sys.exc_info()[1] is None:
                raise RuntimeError("error() handles the exception being handled: call it in an except block")
            raise
        self.on_error(**self.on_error_kwargs)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return "<%s of %d>" % (type(self).__name__, len(self._entries))


class TaskCollection(FunctionCollection):
    """Like :class:`FunctionCollection`, but :meth:`run` starts every function
    as a background task (concurrently, admitted by priority — so a priority
    must be one of ``TASK_LOW``/``NORMAL``/``HIGH``/``CRITICAL``) and returns
    once all have finished.

    ``supervisor``: the :class:`TaskSupervisor` to run on (default
    ``task_supervisor``, which the attribute holds then, as in atasker).
    ``poll_delay`` is accepted for
    atasker compatibility and unused: completion is waited for on events, not
    polled.
    """

    def __init__(
        self,
        *,
        on_error: Optional[Callable[..., Any]] = None,
        on_error_kwargs: Optional[Dict[str, Any]] = None,
        include_exceptions: bool = False,
        supervisor: Any = None,
        poll_delay: Optional[float] = None,
        **kwargs: Any,
    ) -> None:

        super().__init__(on_error=on_error, on_error_kwargs=on_error_kwargs,
                         include_exceptions=include_exceptions, **kwargs)
        if supervisor is not None and not hasattr(supervisor, "put_task"):
            raise TypeError("supervisor must be a TaskSupervisor or None; got %r" % (supervisor,))
        self.supervisor = supervisor_or_default(supervisor)
        self.poll_delay = check_seconds(poll_delay, "poll_delay")

    _parameters = FunctionCollection._parameters + ("supervisor", "poll_delay")

    def _check_priority(self, priority: Any) -> Any:
        return check_priority(priority)

    def execute(self) -> Tuple[Dict[str, Any], bool]:
        """Run every function as a task and wait for all; return ``(results, all_ok)``.

        Waits cooperatively (only the calling greenlet). Without ``on_error``
        (or if ``on_error`` itself raised), the first such exception in
        priority order is raised once all tasks have finished."""
        supervisor = supervisor_or_default(self.supervisor)
        ordered = self._ordered()
        tasks = [
            supervisor.put_task(self._run_one, (f,), priority=priority)
            for priority, f in ordered
        ]
        outcomes = wait_completed(tasks)
        result: Dict[str, Any] = {}
        all_ok = True
        to_raise: Optional[BaseException] = None
        for (_, f), outcome in zip(ordered, outcomes):
            if outcome is None:  # the task was cancelled (supervisor stopped)
                ok, value, exc = False, None, None
            else:
                ok, value, exc = outcome
            result[_key(f)] = value
            all_ok = all_ok and ok
            if exc is not None and to_raise is None:
                to_raise = exc
        if to_raise is not None:
            raise to_raise
        return result, all_ok

    def _run_one(self, f: Callable[..., Any], _task_id: Any = None) -> Tuple[bool, Any, Optional[BaseException]]:
        # Runs as a task. Returns (ok, value, exception to raise from execute()):
        # the function's exception when there is no on_error, the handler's own
        # if on_error (or an overridden error()) raised. Nothing is logged as a
        # failed task.
        try:
            return True, f(), None
        except Exception as exc:
            value = (exc, traceback.format_exc()) if self.include_exceptions else None
            try:
                self.error()
            except Exception as raised:
                return False, value, raised
            return False, value, None
