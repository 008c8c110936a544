"""The status endpoints: JSON of ``supervisor.get_info()``, health, the live page, metrics.

:func:`status_app` makes a tiny WSGI application that answers ``GET`` (and
``HEAD``) with the state of one supervisor — ``id``, ``active``, ``started``,
pool and task figures (``thread_pool["in_use"]``: the slots held, by
priority) — and, per started worker, ``name``, ``kind``,
``priority``, ``active``, ``runs``, ``errors``, ``last_run`` (a Unix time),
``last_duration`` (seconds) and ``queue_length`` (queue workers; ``null`` for the
others), plus ``pid`` and ``time`` of the answering process. Each server process
has its own supervisor, so under gunicorn with several workers each answer
describes the process that served it.

:func:`mount` puts it beside an application at a path prefix (default
``/_gworker``) without any framework::

    from gworker.integrations.status import mount
    application = mount(my_app)            # /_gworker -> status, the rest -> my_app

Below that path, the same app answers

* ``/healthz`` and ``/readyz`` — the health and readiness checks of
  :mod:`gworker.integrations.health` (``200``, or ``503`` with the reasons);
* ``/ui`` — the live status page of :mod:`gworker.integrations.ui`, which
  reads ``/ui/data``;
* ``/metrics`` — the Prometheus exposition of
  :mod:`gworker.integrations.metrics` (``pip install gworker[prometheus]``;
  without prometheus_client it answers ``501`` saying so).

The endpoints reveal worker names and figures: put them behind whatever
protects your other internal endpoints.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

from .._default import supervisor_or_default
from ..supervisor import TaskSupervisor
from .lifecycle import WorkerSet

__all__ = ["status_app", "mount", "info_dict", "DEFAULT_PATH"]

DEFAULT_PATH = "/_gworker"

WSGIApp = Callable[[Dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def info_dict(supervisor: Optional[TaskSupervisor] = None) -> Dict[str, Any]:
    """``supervisor.get_info()`` as a JSON-ready dict (default: ``task_supervisor``).

    atasker's object-valued fields are summarised: ``aloops`` and
    ``async_job_schedulers`` as lists of names, ``tasks`` as a count;
    ``schedulers`` is left out (``workers`` describes them)."""
    supervisor = supervisor_or_default(supervisor)
    info = dict(vars(supervisor.get_info(schedulers=False)))
    info["aloops"] = list(info["aloops"])
    info["async_job_schedulers"] = list(info["async_job_schedulers"])
    info["tasks"] = len(info["tasks"])
    info["pid"] = os.getpid()
    info["time"] = time.time()
    return info


def status_app(
    supervisor: Optional[TaskSupervisor] = None,
    workers: Optional[WorkerSet] = None,
    directory: Optional[str] = None,
) -> WSGIApp:
    """A WSGI app answering ``GET`` of its root with :func:`info_dict` as JSON
    (405 for other methods), and the sub-paths of the module docstring
    (404 for any other). ``workers``: the
    :class:`~gworker.integrations.WorkerSet` whose start ``/readyz`` awaits
    (default :data:`~gworker.integrations.server_workers`); ``directory``:
    where the page finds the other processes' snapshots (default
    :func:`gworker.integrations.ui.status_dir`)."""
    if workers is not None and not isinstance(workers, WorkerSet):
        raise TypeError("workers must be a WorkerSet; got %r" % (workers,))
    from .health import check_health, check_ready, health_app
    from .ui import ui_app

    healthz = health_app(lambda: check_health(supervisor))
    readyz = health_app(lambda: check_ready(supervisor, workers))
    ui = ui_app(supervisor, directory)
    metrics: List[Any] = []

    def sub(environ: Dict[str, Any], start_response: Callable[..., Any], prefix: str,
            target: WSGIApp) -> Iterable[bytes]:
        environ = dict(environ)
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
        environ["PATH_INFO"] = environ.get("PATH_INFO", "")[len(prefix):]
        return target(environ, start_response)

    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("", "/"):
            if path == "/healthz":
                return healthz(environ, start_response)
            if path == "/readyz":
                return readyz(environ, start_response)
            if path == "/ui" or path.startswith("/ui/"):
                return sub(environ, start_response, "/ui", ui)
            if path == "/metrics":
                if not metrics:
                    metrics.append(_metrics_app(supervisor))
                return metrics[0](environ, start_response)
            body = b'{"error": "not found"}'
            start_response("404 Not Found", [("Content-Type", "application/json"),
                                             ("Content-Length", str(len(body)))])
            return [body]
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            body = b'{"error": "method not allowed"}'
            start_response("405 Method Not Allowed", [
                ("Content-Type", "application/json"), ("Allow", "GET, HEAD"),
                ("Content-Length", str(len(body))),
            ])
            return [body]
        body = json.dumps(info_dict(supervisor), default=repr).encode("utf-8")
        start_response("200 OK", [
            ("Content-Type", "application/json"), ("Cache-Control", "no-store"),
            ("Content-Length", str(len(body))),
        ])
        return [b""] if method == "HEAD" else [body]

    return app


def _metrics_app(supervisor: Optional[TaskSupervisor]) -> WSGIApp:
    try:
        from .metrics import metrics_app
    except ImportError as exc:
        message = json.dumps({"error": str(exc)}).encode("utf-8")

        def unavailable(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            start_response("501 Not Implemented", [("Content-Type", "application/json"),
                                                   ("Content-Length", str(len(message)))])
            return [message]
        return unavailable
    return metrics_app(supervisor)


def mount(
    app: WSGIApp,
    path: str = DEFAULT_PATH,
    status: Optional[WSGIApp] = None,
    supervisor: Optional[TaskSupervisor] = None,
    workers: Optional[WorkerSet] = None,
    directory: Optional[str] = None,
) -> WSGIApp:
    """Dispatch requests under ``path`` to the status app, everything else to ``app``.

    ``status`` defaults to ``status_app(supervisor, workers, directory)``. The
    status app sees the usual WSGI prefix split: ``SCRIPT_NAME`` gains
    ``path``, ``PATH_INFO`` keeps the rest."""
    if not isinstance(path, str):
        raise TypeError("path must be a string; got %r" % (path,))
    if not path.startswith("/") or path.endswith("/"):
        raise ValueError("path must start with '/' and not end with it; got %r" % (path,))
    status = status if status is not None else status_app(supervisor, workers, directory)
    prefix = path + "/"

    def dispatcher(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path_info = environ.get("PATH_INFO", "")
        if path_info == path or path_info.startswith(prefix):
            environ = dict(environ)
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + path
            environ["PATH_INFO"] = path_info[len(path):]
            return status(environ, start_response)
        return app(environ, start_response)

    return dispatcher
