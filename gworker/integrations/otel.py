"""Tracing with OpenTelemetry: every run a span, child of the span that asked for it.

``pip install gworker[otel]`` (``opentelemetry-api``; the SDK, its exporters
and their setup are the application's)::

    from gworker.integrations import otel
    otel.instrument()                     # the default supervisor, the global tracer provider

Each run of a worker's executor, and each try of a task, is a span named
``gworker.run`` with the attributes ``gworker.worker`` (the worker's name, a
task target's), ``gworker.kind`` (``queue``, ``interval``, ... ``task``),
``gworker.priority``, and as they apply ``gworker.task_id``, ``gworker.try``
(from the second try on), ``gworker.lateness_s`` (a scheduled interval/cron
run: its start less its due time), ``gworker.retrying`` (a failed try that
will be retried). A queue item's run is a ``CONSUMER`` span with the messaging
attributes of the semantic conventions: ``messaging.system`` (``gworker``, or
``redis`` for a :class:`~gworker.redis.RedisStreamQueue`),
``messaging.operation.type`` = ``process``, ``messaging.destination.name``
(the worker's name, or the stream's) and, for a Redis entry,
``messaging.message.id``. A run that raised ends with status ``ERROR``, the
exception recorded (``error.type`` its class).

The span's parent is the span current in the run's context — the producer's,
carried by gworker's context propagation (:mod:`gworker.context`): a request
that puts an item (into a worker made with ``propagate_context=True``: a queue
worker's capture is opt-in), triggers a worker or puts a task has the run as a
child of its span. While the executor runs, the run's span is the current
one, so what the executor traces nests under it.

Across processes, :func:`instrument` installs a propagator
(:func:`gworker.context.add_propagator`) that writes the producer's trace
context with OpenTelemetry's configured text-map propagator (W3C
``traceparent`` and ``tracestate`` by default, ``baggage``) into each
``RedisStreamQueue`` entry, and the consumer's run continues it: its span is a
child of the producer's span in the other process.

It is built on the supervisor's listeners (:mod:`gworker.events`): a span is
started at ``run_started`` and ended at ``run_finished``/``run_failed``, in the
run's greenlet and context, and costs nothing where it is not installed.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, Mapping, Optional, Tuple

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError("gworker.integrations.otel needs opentelemetry-api: pip install 'gworker[otel]'") from _exc

from .. import __version__, context
from .._default import supervisor_or_default
from .._errors import describe
from ..events import RUN_FAILED, RUN_FINISHED, RUN_STARTED, WorkerEvent
from ..supervisor import TaskSupervisor

__all__ = ["instrument", "Instrumentation", "SPAN_NAME", "TextMapPropagator"]

#: The name of every run's span.
SPAN_NAME = "gworker.run"


class TextMapPropagator:
    """A :class:`gworker.context.Propagator` of OpenTelemetry's configured
    text-map propagator (``opentelemetry.propagate``: W3C trace context and
    baggage unless the application set another)."""

    def inject(self, carrier: Dict[str, str]) -> None:
        """Write the current context's trace context into ``carrier``."""
        propagate.inject(carrier)

    def extract(self, carrier: Mapping[str, str]) -> None:
        """Make what ``carrier`` carries the current OpenTelemetry context (of
        the fresh context a run is being given; it is never detached: that
        context ends with its run)."""
        otel_context.attach(propagate.extract(carrier))


_propagator = TextMapPropagator()
_installed = 0  # instrumentations that installed the propagator, still in place
_installed_lock = threading.Lock()  # (held for a counter only, never across a switch)


class Instrumentation:
    """The tracing of one supervisor's runs (what :func:`instrument` returns)."""

    def __init__(self, supervisor: TaskSupervisor, tracer_provider: Any = None) -> None:
        self.supervisor = supervisor
        self._tracer = trace.get_tracer("gworker", __version__, tracer_provider=tracer_provider)
        #: the span of each run in progress, and the token of its attach, by
        #: the worker (whose runs never overlap) or task
        self._open: Dict[int, Tuple[Any, Any, Any]] = {}
        self._active = False

    def install(self) -> "Instrumentation":
        """Listen to the supervisor's runs and install the propagator."""
        global _installed
        if self._active:
            return self
        self.supervisor.add_listener(self._on_event, events=[RUN_STARTED, RUN_FINISHED, RUN_FAILED])
        with _installed_lock:
            _installed += 1
            if _installed == 1:
                context.add_propagator(_propagator)
        self._active = True
        return self

    def uninstrument(self) -> None:
        """Stop tracing this supervisor's runs (runs in progress end their
        spans as they end). The propagator goes with the last instrumentation."""
        global _installed
        if not self._active:
            return
        self._active = False
        self.supervisor.remove_listener(self._on_event)
        with _installed_lock:
            _installed -= 1
            if _installed == 0:
                context.remove_propagator(_propagator)
        for owner, span, token in list(self._open.values()):
            span.end()
        self._open.clear()

    # -- the listener ------------------------------------------------------------------------------
    def _on_event(self, event: WorkerEvent) -> None:
        # In the run's greenlet and context, synchronously: only OpenTelemetry
        # calls that do not block (a span processor that exports in batches).
        if event.event == RUN_STARTED:
            self._start(event)
        else:
            self._end(event)

    def _start(self, event: WorkerEvent) -> None:
        owner = event.worker if event.worker is not None else event.task
        stale = self._open.pop(id(owner), None)
        if stale is not None:  # (never expected: a run's events always end it)
            stale[1].end()
        attributes: Dict[str, Any] = {
            "gworker.worker": event.name, "gworker.kind": event.kind, "gworker.priority": event.priority,
        }
        if event.task is not None:
            attributes["gworker.task_id"] = event.task.id
        if event.tries > 1:
            attributes["gworker.try"] = event.tries
        if event.due is not None:
            attributes["gworker.lateness_s"] = event.time - event.due
        kind = SpanKind.INTERNAL
        if event.kind == "queue":
            kind = SpanKind.CONSUMER
            _messaging(attributes, event.worker)
        span = self._tracer.start_span(SPAN_NAME, kind=kind, attributes=attributes,
                                       start_time=int(event.time * 1e9))
        token = otel_context.attach(trace.set_span_in_context(span))
        self._open[id(owner)] = (owner, span, token)

    def _end(self, event: WorkerEvent) -> None:
        owner = event.worker if event.worker is not None else event.task
        entry = self._open.pop(id(owner), None)
        if entry is None:  # its run began before the instrumentation
            return
        _, span, token = entry
        if event.event == RUN_FAILED:
            exc = event.exception
            if exc is not None:
                span.record_exception(exc)
                span.set_attribute("error.type", type(exc).__qualname__)
                span.set_status(Status(StatusCode.ERROR, describe(exc)))
            if event.retrying:
                span.set_attribute("gworker.retrying", True)
        otel_context.detach(token)
        span.end(end_time=int(event.time * 1e9))


def _messaging(attributes: Dict[str, Any], worker: Any) -> None:
    """The messaging attributes of a queue item's run (semantic conventions)."""
    q: Any = worker.get_queue_obj() if worker is not None else None
    stream = getattr(q, "stream", None)
    attributes["messaging.operation.type"] = "process"
    if stream is not None and hasattr(q, "current_id"):  # a RedisStreamQueue
        attributes["messaging.system"] = "redis"
        attributes["messaging.destination.name"] = stream
        message_id = q.current_id
        if message_id is not None:
            attributes["messaging.message.id"] = message_id
    else:
        attributes["messaging.system"] = "gworker"
        attributes["messaging.destination.name"] = worker.name if worker is not None else ""


def instrument(supervisor: Optional[TaskSupervisor] = None, tracer_provider: Any = None) -> Instrumentation:
    """Trace every run of ``supervisor`` (default: ``task_supervisor``) with
    ``tracer_provider`` (default: the global one, ``trace.set_tracer_provider``)
    and carry trace contexts through brokers' queues; returns the
    :class:`Instrumentation` (``uninstrument()`` undoes it)."""
    if supervisor is not None and not isinstance(supervisor, TaskSupervisor):
        raise TypeError("supervisor must be a TaskSupervisor or None; got %r" % (supervisor,))
    return Instrumentation(supervisor_or_default(supervisor), tracer_provider).install()
