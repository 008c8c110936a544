"""Context propagation: a worker's call runs in the context of whoever asked for it.

A greenlet starts with an empty ``contextvars`` context, so a request id or an
OpenTelemetry span that a request handler set is gone by the time a worker's
greenlet, a runner or a coroutine on an aloop makes the call the request asked
for. gworker carries the context across that hop: it *captures* the
producer's context (``contextvars.copy_context()``, which costs about as much
as a small function call: the context is an immutable mapping, and the copy
shares it) where the work is produced, and makes the call inside it
(``Context.run``):

* a queue item — ``put_threadsafe(item)`` (from any greenlet or OS thread) and
  ``await put(item)`` capture per item; the item's run is made in that
  context. Items put into the queue object directly (``get_queue_obj().put``)
  carry none and run in the worker's own context (below). This one is
  opt-in, per worker (``propagate_context=True``; see the README's measured
  cost); every other kind propagates by default;
* a trigger — ``trigger_threadsafe()``, ``await trigger()``, setting the
  worker's event: the run it asks for is made in the context of the trigger
  that was accepted (a forced trigger's for the extra run it asks for);
* a task — ``put_task`` and ``background_task`` capture per task, every try
  of it runs there (a coroutine task: its ``asyncio`` task is made there);
* the worker itself — ``start()`` captures once: its loop greenlet (or
  coroutine) runs in that context, and so do the scheduled runs of an
  interval or cron worker and the calls of a continuous worker. A run asked
  for by a trigger, or an item that carries a context, runs in its own instead.

Each run gets a context of its own making, never the producer's: changes a
run makes to context variables stay in it (a captured context is used by the
one run it was captured for; a worker's start context by its runs, one after
another, as a thread's state would be). The run's events
(:mod:`gworker.events`) are sent inside it, so a listener sees — and may set —
what the executor sees.

``propagate_context=False`` (any worker kind) captures nothing: the calls run
in the context of the greenlet that makes them.

An ``async def`` executor called from a coroutine loop that is shared between
items (an ``async def`` queue worker) runs each step of its coroutine in the
item's context (:func:`in_context`): no task per item. A process-pool call
(a static ``run``, a ``TT_MP`` task) has its events made in the context in
this process; the child runs in its own (a context does not pickle).

Across processes — a broker's queue, such as
:class:`~gworker.redis.RedisStreamQueue` — a context cannot travel, but what a
*propagator* writes into the entry can: :func:`add_propagator` installs one
(gworker's OpenTelemetry integration installs the W3C ``traceparent`` one),
:func:`inject` writes the current context's part into a dict of strings, and
:func:`context_from` makes the consumer's run context from such a dict.
"""
from __future__ import annotations

import contextvars
from typing import Any, Awaitable, Dict, Generator, List, Mapping, Optional, Protocol, TypeVar

__all__ = ["capture", "in_context", "Propagator", "add_propagator", "remove_propagator", "inject", "context_from"]

T = TypeVar("T")

#: The producer's context, captured (``contextvars.copy_context``).
capture = contextvars.copy_context


class _InContext:
    """Awaits a coroutine with each of its steps run in ``ctx`` (see
    :func:`in_context`)."""

    __slots__ = ("_coro", "_ctx")

    def __init__(self, coro: Any, ctx: contextvars.Context) -> None:
        self._coro = coro
        self._ctx = ctx

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, run = self._coro, self._ctx.run
        send, throw = coro.send, coro.throw
        value: Any = None
        error: Optional[BaseException] = None
        while True:
            try:
                if error is None:
                    yielded = run(send, value)
                else:
                    yielded, error = run(throw, error), None
            except StopIteration as stop:
                return stop.value
            try:
                value = yield yielded
            except BaseException as exc:  # (a cancellation: thrown into the coroutine, in its context)
                error = exc


def in_context(ctx: contextvars.Context, coro: Awaitable[T]) -> Awaitable[T]:
    """``await in_context(ctx, coro)``: await ``coro`` in the current task,
    each of its steps run inside ``ctx`` (``ctx.run``) — the context-switching
    a task of its own would give, without the task (no loop wake-up, no
    object per step). Whatever the coroutine sets stays in ``ctx``; the
    awaiting task's own context is left as it was."""
    return _InContext(coro, ctx)


class Propagator(Protocol):
    """What :func:`add_propagator` takes: carries a part of the context across
    a process boundary as strings (OpenTelemetry's W3C ``traceparent``, say)."""

    def inject(self, carrier: Dict[str, str]) -> None:
        """Write the current context's part into ``carrier``."""

    def extract(self, carrier: Mapping[str, str]) -> None:
        """Set in the current context (a fresh one, being made for a run) what
        ``carrier`` carries."""


_propagators: List[Propagator] = []


def add_propagator(propagator: Propagator) -> None:
    """Install ``propagator`` (process-wide): brokers' queues carry its part
    of the producer's context in each entry. Installing one twice does nothing."""
    if not callable(getattr(propagator, "inject", None)) or not callable(getattr(propagator, "extract", None)):
        raise TypeError("propagator must have inject(carrier) and extract(carrier) methods; got %r" % (propagator,))
    if propagator not in _propagators:
        _propagators.append(propagator)


def remove_propagator(propagator: Propagator) -> None:
    """Uninstall ``propagator`` (``ValueError`` if it is not installed)."""
    try:
        _propagators.remove(propagator)
    except ValueError:
        raise ValueError("propagator: %r is not installed" % (propagator,)) from None


def inject(carrier: Dict[str, str]) -> Dict[str, str]:
    """Write into ``carrier`` what the installed propagators carry of the
    current context (nothing without one); returns ``carrier``."""
    for propagator in _propagators:
        propagator.inject(carrier)
    return carrier


def context_from(carrier: Mapping[str, str]) -> Optional[contextvars.Context]:
    """The context for a run of an entry that carried ``carrier``: a copy of
    the current one (the consuming worker's) with what the installed
    propagators extract set in it; None when no propagator is installed."""
    if not _propagators:
        return None
    ctx = contextvars.copy_context()
    for propagator in _propagators:
        ctx.run(propagator.extract, carrier)
    return ctx


def propagators() -> bool:
    """True if a propagator is installed (a broker then writes its fields)."""
    return bool(_propagators)
