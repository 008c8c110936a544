"""A request id set by the code that asks for work is seen by the worker that does it,
and a listener times every run. Runs as-is: python examples/context.py

With OpenTelemetry installed (pip install gworker[otel] opentelemetry-sdk) it also
prints the spans: each run a child of the "request" span that asked for it.
"""
import contextvars

import gevent

from gworker import RUN_FINISHED, TaskSupervisor, background_worker

request_id = contextvars.ContextVar("request_id", default="-")
supervisor = TaskSupervisor("example")
supervisor.start()

durations = {}
supervisor.add_listener(lambda event: durations.setdefault(event.name, []).append(event.duration),
                        events=[RUN_FINISHED])


@background_worker(e=True, supervisor=supervisor)
def refresh(**kwargs):
    print("refresh asked for by request", request_id.get())


@background_worker(q=True, propagate_context=True, supervisor=supervisor)  # opt-in for queue workers
def send(mail, **kwargs):
    print("mail %r put by request %s" % (mail, request_id.get()))


def handle(rid):
    """What a request handler does: set its id, then ask for work."""
    request_id.set(rid)
    refresh.trigger_threadsafe()
    send.put_threadsafe("hello from %s" % rid)


try:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from gworker.integrations import otel
except ImportError:
    tracer = exporter = None
else:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(supervisor, tracer_provider=provider)
    tracer = provider.get_tracer("example")

refresh.start()
send.start()
for rid in ("r1", "r2"):
    if tracer is None:
        gevent.spawn(handle, rid).join()
    else:
        def traced(rid=rid):
            with tracer.start_as_current_span("request %s" % rid):
                handle(rid)
        gevent.spawn(traced).join()
    gevent.sleep(0.05)
send.stop()
refresh.stop()
supervisor.stop()
print("runs timed by the listener:", {name: len(times) for name, times in sorted(durations.items())})
if exporter is not None:
    spans = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in spans}
    for span in spans:
        if span.name == "gworker.run":
            parent = by_id.get(span.parent.span_id) if span.parent else None
            print("span gworker.run of %s, child of %r" % (span.attributes["gworker.worker"],
                                                         parent.name if parent else None))
