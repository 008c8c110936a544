"""``gevent.pywsgi`` with gworker: one process serving HTTP and running workers.

::

    from gworker.integrations import autostart
    from gworker.integrations.pywsgi import serve

    autostart(my_interval_worker, my_queue_worker)
    report = serve(application, ("0.0.0.0", 8000), graceful_timeout=30)

:func:`serve` builds a ``WSGIServer`` (with a connection pool, so it can tell
when the requests in flight have finished) and runs it with a
:class:`GracefulServer`:

1. **start** — the server starts listening, then the supervisor and the
   registered workers start (see :class:`~gworker.integrations.WorkerSet`);
2. **wait** — until SIGTERM or SIGINT (received with ``gevent.signal_handler``,
   so the handler runs in a greenlet, not inside an arbitrary frame) or
   :meth:`GracefulServer.request_stop`;
3. **graceful stop**, all within ``graceful_timeout`` seconds of the signal:
   the server stops accepting (the listening socket is closed); requests in
   flight get up to ``request_timeout`` (default: half the budget) to finish and
   are then killed — idle keep-alive connections are closed the same way; only
   then, as nothing can queue new items any more, the workers are stopped with
   the drain policy: queue workers process what is queued, and what is left at
   the deadline goes to ``on_undrained``. ``serve`` returns the
   :class:`~gworker.integrations.ShutdownReport`; exit the process after it.

The process may be monkey-patched or not: gworker and pywsgi work in both.
"""
from __future__ import annotations

import logging
import signal
import time
from typing import Any, Iterable, Optional

import gevent
from gevent.event import Event
from gevent.pool import Pool

from .._deadline import Deadline
from .lifecycle import ShutdownReport, WorkerSet, server_workers

__all__ = ["serve", "GracefulServer"]

logger = logging.getLogger("gworker")

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulServer:
    """Runs a gevent server (``WSGIServer``/``StreamServer``) and a
    :class:`~gworker.integrations.WorkerSet` together; see the module docstring.

    ``server`` should spawn its handlers in a ``gevent.pool.Pool`` (``spawn=Pool(n)``):
    without one the requests in flight cannot be waited for, and draining
    starts as soon as the server stops accepting."""

    def __init__(
        self,
        server: Any,
        workers: Optional[WorkerSet] = None,
        graceful_timeout: float = 30.0,
        request_timeout: Optional[float] = None,
        signals: Iterable[int] = DEFAULT_SIGNALS,
    ) -> None:
        if graceful_timeout < 0 or (request_timeout is not None and request_timeout < 0):
            raise ValueError("graceful_timeout and request_timeout must not be negative")
        self.server = server
        self.workers = workers if workers is not None else server_workers
        self.graceful_timeout = graceful_timeout
        self.request_timeout = request_timeout
        self.signals = tuple(signals)
        self.report: Optional[ShutdownReport] = None
        self._stop = Event()
        self._stop_requested_at: Optional[float] = None
        self._handlers: list = []
        self._previous: dict = {}
        self._stopping = False
        self._started = False

    def start(self) -> None:
        """Start listening, then the workers; install the signal handlers."""
        self._started = True
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            self._handlers.append(gevent.signal_handler(signum, self._on_signal, signum))
        self.server.start()
        self.workers.start()

    def _on_signal(self, signum: int) -> None:
        if self._stopping:
            logger.warning("signal %s: already stopping (at most %.1fs in all)", signum, self.graceful_timeout)
            return
        logger.info("signal %s: stopping gracefully", signum)
        self.request_stop()

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to stop gracefully (from any greenlet of the hub's thread)."""
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
        self._stop.set()

    def serve_forever(self) -> ShutdownReport:
        """Start (if not yet), wait for a stop request, stop gracefully, return the report."""
        if not self._started:
            self.start()
        self._stop.wait()
        return self.shutdown()

    def shutdown(self) -> ShutdownReport:
        """The graceful stop (see the module docstring); returns the report."""
        self._stopping = True
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
        deadline = Deadline(self._stop_requested_at + self.graceful_timeout)
        request_timeout = self.request_timeout
        if request_timeout is None:
            request_timeout = self.graceful_timeout / 2.0
        server = self.server
        try:
            server.close()  # stop accepting
            pool = getattr(server, "pool", None)
            if pool is not None:
                pool.join(timeout=deadline.within(request_timeout))
                if len(pool):
                    logger.warning("closing %d connection(s) still open after %.1fs", len(pool), request_timeout)
                    pool.kill(block=True, timeout=deadline.within(1.0))
            self.report = self.workers.shutdown(timeout=deadline.within(self.graceful_timeout), drain=True)
        finally:
            self._restore_signals()
        log = logger.info if self.report.ok else logger.warning
        log("%s", self.report.summary())
        return self.report

    def _restore_signals(self) -> None:
        for handler in self._handlers:
            handler.cancel()
        self._handlers = []
        for signum, previous in self._previous.items():
            try:
                signal.signal(signum, previous)
            except (TypeError, ValueError):  # not the main thread, or not a Python handler
                pass
        self._previous = {}


def serve(
    application: Any,
    listener: Any = ("127.0.0.1", 8000),
    *,
    workers: Optional[WorkerSet] = None,
    graceful_timeout: float = 30.0,
    request_timeout: Optional[float] = None,
    signals: Iterable[int] = DEFAULT_SIGNALS,
    max_connections: int = 10000,
    **server_kwargs: Any,
) -> ShutdownReport:
    """Serve ``application`` with ``gevent.pywsgi.WSGIServer`` on ``listener``
    (an address or a bound socket) until SIGTERM/SIGINT, running the registered
    workers beside it; then stop gracefully and return the report.

    ``server_kwargs`` go to ``WSGIServer`` (e.g. ``log=None`` to silence the
    access log); ``max_connections`` sizes its connection pool."""
    from gevent.pywsgi import WSGIServer

    server_kwargs.setdefault("spawn", Pool(max_connections))
    server = WSGIServer(listener, application, **server_kwargs)
    runner = GracefulServer(server, workers, graceful_timeout, request_timeout, signals)
    return runner.serve_forever()
