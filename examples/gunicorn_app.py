"""The pywsgi example's application, served by gunicorn's gevent worker.

Run it (from anywhere; the config file points gunicorn at this directory)::

    pip install gunicorn            # or: pip install gworker[gunicorn]
    gunicorn -c examples/gunicorn.conf.py

The application module (``wsgi_pywsgi``) registers its workers with
``gworker.integrations.autostart`` at import. It is imported in every gunicorn
worker process, and the hooks installed by ``gunicorn.conf.py`` start those
workers there once gevent has patched the process, then drain them on a
graceful stop (SIGTERM to the master) within ``graceful_timeout``. Each worker
process has its own supervisor, queues and status: ``/_gworker`` describes the
process that answered.
"""
from wsgi_pywsgi import application  # noqa: F401  (the WSGI callable gunicorn serves)
