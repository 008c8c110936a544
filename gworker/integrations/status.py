"""A status endpoint: JSON of ``supervisor.get_info()`` over WSGI.

:func:`status_app` makes a tiny WSGI application that answers ``GET`` (and
``HEAD``) with the state of one supervisor — ``id``, ``active``, ``started``,
pool and task figures — and, per started worker, ``name``, ``kind``,
``priority``, ``active``, ``runs``, ``errors``, ``last_run`` (a Unix time),
``last_duration`` (seconds) and ``queue_length`` (queue workers; ``null`` for the
others), plus ``pid`` and ``time`` of the answering process. Each server process
has its own supervisor, so under gunicorn with several workers each answer
describes the process that served it.

:func:`mount` puts it beside an application at a path prefix (default
``/_gworker``) without any framework::

    from gworker.integrations.status import mount
    application = mount(my_app)            # /_gworker -> status, the rest -> my_app

The endpoint reveals worker names and figures: put it behind whatever protects
your other internal endpoints.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, Iterable, Optional

from .._default import supervisor_or_default
from ..supervisor import TaskSupervisor

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


def status_app(supervisor: Optional[TaskSupervisor] = None) -> WSGIApp:
    """A WSGI app answering ``GET`` with :func:`info_dict` as JSON (405 otherwise)."""

    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
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


def mount(
    app: WSGIApp,
    path: str = DEFAULT_PATH,
    status: Optional[WSGIApp] = None,
    supervisor: Optional[TaskSupervisor] = None,
) -> WSGIApp:
    """Dispatch requests under ``path`` to the status app, everything else to ``app``.

    ``status`` defaults to ``status_app(supervisor)``. The status app sees the
    usual WSGI prefix split: ``SCRIPT_NAME`` gains ``path``, ``PATH_INFO`` keeps
    the rest."""
    if not path.startswith("/") or path.endswith("/"):
        raise ValueError("path must start with '/' and not end with it; got %r" % (path,))
    status = status if status is not None else status_app(supervisor)
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
