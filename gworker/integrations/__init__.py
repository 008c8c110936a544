"""Running gworker inside a gevent web server.

* :mod:`gworker.integrations.gunicorn` — hooks for a ``gunicorn.conf.py``
  (gunicorn ``-k gevent``): start the workers in every worker process after it
  patched itself, drain them within ``graceful_timeout`` when it exits.
* :mod:`gworker.integrations.pywsgi` — run a ``gevent.pywsgi.WSGIServer``
  together with the workers, with a graceful stop on SIGTERM/SIGINT.
* :mod:`gworker.integrations.status` — a tiny WSGI app answering JSON of
  ``supervisor.get_info()``, and a helper to mount it beside an application,
  with, below its path, the health and readiness probes
  (:mod:`gworker.integrations.health`), the live status page
  (:mod:`gworker.integrations.ui`) and the Prometheus metrics
  (:mod:`gworker.integrations.metrics`, ``pip install gworker[prometheus]``).

What both servers share lives in :mod:`gworker.integrations.lifecycle`: the
application registers its workers once, at import, with :func:`autostart`
(the default :class:`WorkerSet`, :data:`server_workers`); the server
integration starts them where and when it is safe, and stops them with the
drain policy described there. Importing this package imports no server and
creates no hub, thread or greenlet.
"""
from .lifecycle import ShutdownReport, WorkerSet, autostart, server_workers

__all__ = ["WorkerSet", "ShutdownReport", "server_workers", "autostart"]
