"""gunicorn configuration for examples/gunicorn_app.py, with gworker's hooks.

``gunicorn -c examples/gunicorn.conf.py`` serves the example on 127.0.0.1:8000
with two gevent worker processes. Command-line options override these values
(e.g. ``-b 127.0.0.1:9000 --graceful-timeout 5``).
"""
import os

from gworker.integrations.gunicorn import install

chdir = os.path.dirname(os.path.abspath(__file__))  # so "gunicorn_app" is importable
wsgi_app = "gunicorn_app:application"
bind = "127.0.0.1:8000"
worker_class = "gevent"          # gworker needs gunicorn's gevent worker
workers = 2
graceful_timeout = 10            # SIGTERM -> finish requests -> drain queues -> exit, within this

# post_worker_init starts the registered workers in each worker process (never in the
# master); worker_exit drains them; worker_int/worker_abort make the stop quick; child_exit
# (in the master) cleans up after a worker process that exited. With GWORKER_STATUS_DIR (or
# PROMETHEUS_MULTIPROC_DIR) set to a directory they all share, /_gworker/ui served by any
# process shows every process's workers, and /_gworker/metrics sums every process's figures.
install(globals())
