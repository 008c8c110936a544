"""OpenTelemetry tracing (gworker.integrations.otel) with the SDK's in-memory
exporter: a run's span, its attributes, its parent (the producer's span,
carried in process and through a real redis-server's stream entries), the
executor's own spans nested under it, failures, tasks, uninstrument()."""
import asyncio
import logging

import gevent
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

import gworker.context  # noqa: E402
from gworker import (  # noqa: E402
    TT_COROUTINE, BackgroundEventWorker, BackgroundIntervalWorker, BackgroundQueueWorker,
)
from gworker.integrations import otel  # noqa: E402

from conftest import wait_until  # noqa: E402
from test_redis_streams import make_queue, names, own_server, queues  # noqa: E402,F401


@pytest.fixture(scope="module")
def redis_server():
    # This module's own server, stopped when its tests end.
    with own_server() as server:
        yield server


@pytest.fixture
def rdb(redis_server):
    client = redis_server.client()
    yield client
    client.connection_pool.disconnect()


class OtelErrors(logging.Handler):
    """ERROR records of OpenTelemetry's own loggers (a failed context detach, say)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def tracing(supervisor):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    errors = OtelErrors()
    logging.getLogger("opentelemetry").addHandler(errors)
    instrumentation = otel.instrument(supervisor, tracer_provider=provider)
    try:
        yield exporter, provider.get_tracer("tests")
    finally:
        instrumentation.uninstrument()
        logging.getLogger("opentelemetry").removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]


def runs(exporter):
    return [s for s in exporter.get_finished_spans() if s.name == otel.SPAN_NAME]


def test_a_triggered_run_is_a_child_of_the_triggers_span_and_the_parent_of_the_executors(supervisor, tracing):
    exporter, tracer = tracing

    def run(**kw):
        with tracer.start_as_current_span("inside"):
            pass

    w = BackgroundEventWorker(func=run, name="events", supervisor=supervisor)
    w.start()

    def request():
        with tracer.start_as_current_span("request"):
            w.trigger_threadsafe()

    gevent.spawn(request).join()
    wait_until(lambda: runs(exporter))
    w.stop()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    request_span, run_span, inside = spans["request"], spans[otel.SPAN_NAME], spans["inside"]
    assert run_span.parent.span_id == request_span.context.span_id
    assert run_span.context.trace_id == request_span.context.trace_id
    assert inside.parent.span_id == run_span.context.span_id, "the executor's spans nest under the run's"
    assert run_span.kind == SpanKind.INTERNAL and run_span.status.status_code == StatusCode.UNSET
    assert dict(run_span.attributes) == {"gworker.worker": "events", "gworker.kind": "event",
                                         "gworker.priority": w.priority}
    assert run_span.start_time <= inside.start_time and inside.end_time <= run_span.end_time


def test_queue_runs_are_consumer_spans_with_messaging_attributes(supervisor, tracing):
    exporter, tracer = tracing
    carried = BackgroundQueueWorker(func=lambda item, **kw: None, name="jobs", propagate_context=True,
                                    supervisor=supervisor)
    plain = BackgroundQueueWorker(func=lambda item, **kw: None, name="plain", supervisor=supervisor)
    carried.start()
    plain.start()
    with tracer.start_as_current_span("producer") as producer:
        carried.put_threadsafe("a")
        plain.put_threadsafe("b")
    wait_until(lambda: len(runs(exporter)) == 2)
    carried.stop()
    plain.stop()
    by_worker = {s.attributes["gworker.worker"]: s for s in runs(exporter)}
    span = by_worker["jobs"]
    assert span.kind == SpanKind.CONSUMER
    assert span.parent.span_id == producer.get_span_context().span_id
    assert {k: span.attributes[k] for k in ("messaging.system", "messaging.operation.type",
                                            "messaging.destination.name")} == {
        "messaging.system": "gworker", "messaging.operation.type": "process", "messaging.destination.name": "jobs"}
    assert by_worker["plain"].parent is None, "a queue worker's capture is opt-in: without it, a root span"


def test_a_failed_run_has_an_error_status_and_its_exception(supervisor, tracing, logged_errors):
    exporter, _ = tracing
    w = BackgroundEventWorker(func=lambda **kw: 1 / 0, supervisor=supervisor)
    w.start()
    w.trigger_threadsafe()
    wait_until(lambda: runs(exporter))
    w.stop()
    span = runs(exporter)[0]
    assert span.status.status_code == StatusCode.ERROR and "ZeroDivisionError" in span.status.description
    assert span.attributes["error.type"] == "ZeroDivisionError"
    assert [e.name for e in span.events] == ["exception"]
    assert len(logged_errors) == 1


def test_tasks_and_scheduled_runs_are_spans_too(supervisor, tracing):
    exporter, tracer = tracing

    async def coro(_task_id=None):
        with tracer.start_as_current_span("in coroutine"):
            await asyncio.sleep(0)

    with tracer.start_as_current_span("request") as request:
        thread_task = supervisor.put_task(lambda _task_id=None: None)
        coro_task = supervisor.put_task(coro, tt=TT_COROUTINE)
    thread_task.wait(5)
    coro_task.wait(5)
    w = BackgroundIntervalWorker(func=lambda **kw: None, interval=0.3, supervisor=supervisor)
    w.start()
    wait_until(lambda: len(runs(exporter)) >= 4, timeout=5)
    w.stop()
    spans = runs(exporter)
    tasks = {s.attributes["gworker.task_id"]: s for s in spans if s.attributes["gworker.kind"] == "task"}
    for task in (thread_task, coro_task):
        assert tasks[task.id].parent.span_id == request.get_span_context().span_id
    inner = [s for s in exporter.get_finished_spans() if s.name == "in coroutine"][0]
    assert inner.parent.span_id == tasks[coro_task.id].context.span_id
    scheduled = [s for s in spans if s.attributes["gworker.kind"] == "interval"]
    # (the timer heap fires up to its LEAD, half a millisecond, early)
    assert len(scheduled) >= 2 and all(-0.002 <= s.attributes["gworker.lateness_s"] < 0.25 for s in scheduled)


def test_a_redis_entry_carries_the_producers_trace_to_the_consumers_run(supervisor, tracing, redis_server,
                                                                          names, queues, rdb):
    exporter, tracer = tracing
    q = make_queue(redis_server, names, queues)
    w = BackgroundQueueWorker(func=lambda item, **kw: None, q=q, supervisor=supervisor)
    w.start()
    with tracer.start_as_current_span("producer") as producer:
        entry_id = q.put_threadsafe({"n": 1})
    q.put_threadsafe({"n": 2})  # no span: no traceparent
    wait_until(lambda: len(runs(exporter)) == 2, timeout=10)
    w.stop()
    fields = dict(rdb.xrange(q.stream)[0][1])
    context = producer.get_span_context()
    assert fields[b"traceparent"].decode().startswith("00-%032x-%016x-" % (context.trace_id, context.span_id))
    assert b"traceparent" not in dict(rdb.xrange(q.stream)[1][1])
    first, second = runs(exporter)
    assert first.parent.span_id == context.span_id and first.parent.is_remote
    assert first.context.trace_id == context.trace_id
    assert second.parent is None
    assert first.attributes["messaging.system"] == "redis"
    assert first.attributes["messaging.destination.name"] == q.stream
    assert first.attributes["messaging.message.id"] == entry_id


def test_uninstrument_ends_the_tracing_and_the_propagation(supervisor):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentation = otel.instrument(supervisor, tracer_provider=provider)
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("request"):
        assert "traceparent" in gworker.context.inject({})
    instrumentation.uninstrument()
    instrumentation.uninstrument()  # (twice: nothing more)
    with tracer.start_as_current_span("request"):
        assert gworker.context.inject({}) == {}
    supervisor.put_task(lambda _task_id=None: None).wait(5)
    assert runs(exporter) == []
    with pytest.raises(TypeError, match="supervisor"):
        otel.instrument("not a supervisor")


def test_the_propagator_is_a_general_hook():
    class Custom:
        def inject(self, carrier):
            carrier["x-request"] = "r1"

        def extract(self, carrier):
            pass

    custom = Custom()
    gworker.context.add_propagator(custom)
    try:
        assert gworker.context.inject({}) == {"x-request": "r1"}
        assert gworker.context.context_from({"x-request": "r1"}) is not None
    finally:
        gworker.context.remove_propagator(custom)
    assert gworker.context.context_from({}) is None
    with pytest.raises(ValueError, match="propagator"):
        gworker.context.remove_propagator(custom)
    with pytest.raises(TypeError, match="propagator"):
        gworker.context.add_propagator(object())


def test_the_global_tracer_provider_is_the_default(supervisor):
    # instrument() without a provider uses OpenTelemetry's global one (a
    # no-op until the application sets one): runs go on, untraced.
    instrumentation = otel.instrument(supervisor)
    try:
        assert supervisor.put_task(lambda _task_id=None: "ok").wait(5) == "ok"
    finally:
        instrumentation.uninstrument()
    assert trace.get_tracer_provider() is not None
