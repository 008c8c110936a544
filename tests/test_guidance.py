"""The mistakes a newcomer makes first get a message from gworker that says what to do.

Each message is written out here as the getting-started page shows it
(docs/getting-started.md); tests/test_docs.py checks that the page's text is
one of these.
"""
import os
import subprocess
import sys
import textwrap

import gevent
import gevent.subprocess as gsubprocess
import pytest

from gworker import TT_MP, BackgroundEventWorker, BackgroundQueueWorker, background_worker

from conftest import PATCHED

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import gunicorn  # noqa: F401
except ImportError:  # pragma: no cover - the gunicorn extra is installed by tox
    gunicorn = None

KEYWORDS_MESSAGE = (
    "worker poll: its executor poll() cannot take the keywords gworker passes to every call"
    " (_name, o, _worker, _task_id): give it **kwargs, as in def poll(**kwargs)"
)
REDIS_MESSAGE = (
    "ImportError: gworker.redis needs redis-py, which is not installed: pip install redis (the"
    " redis extra of gworker: pip install 'gworker[redis]', or pip install '.[redis]' in a clone)"
)
MASTER_MESSAGE = (
    "Error: worker tick was started in the gunicorn master process; workers must start in each"
    " worker process, after gevent patched it: register them with gworker.integrations.autostart(...)"
    " in the application module and call gworker.integrations.gunicorn.install(globals()) in"
    " gunicorn.conf.py (see the servers page of gworker's docs)"
)
LAMBDA_HINT = (
    "functions travel to the child processes by reference (module and name): a lambda or a"
    " function defined inside another cannot; define it at the top level of a module"
)


# -- an executor that cannot take the keywords ----------------------------------------
def test_an_executor_without_kwargs_is_refused_at_start(supervisor):
    def poll():
        pass

    worker = BackgroundEventWorker(func=poll, supervisor=supervisor)
    with pytest.raises(TypeError) as info:
        worker.start()
    assert str(info.value) == KEYWORDS_MESSAGE
    assert not worker.is_active()


def test_a_partial_of_an_executor_without_kwargs_is_refused_too(supervisor):
    import functools

    def poll(host):
        pass

    worker = BackgroundEventWorker(func=functools.partial(functools.partial(poll), "db1"), supervisor=supervisor)
    with pytest.raises(TypeError, match=r"cannot take the keywords .*\(_name, o, _worker, _task_id\)"):
        worker.start()
    assert not worker.is_active()


def test_the_message_names_only_the_missing_keywords_and_the_item(supervisor):
    def save(item, _name, o):
        pass

    worker = BackgroundQueueWorker(func=save, supervisor=supervisor)
    with pytest.raises(TypeError, match=r"\(extra, _worker, _task_id\): give it \*\*kwargs, as in "
                                        r"def save\(item, \*\*kwargs\)"):
        worker.start(extra=1)


def test_executors_that_take_the_keywords_start(supervisor):
    import functools

    class Explicit(BackgroundEventWorker):
        def run(self, _name=None, o=None, _worker=None, _task_id=None):
            pass

    def strict():
        pass

    @functools.wraps(strict)
    def wrapper(*args, **kwargs):  # takes them, and drops them: its own signature counts
        return strict()

    for worker in (Explicit(supervisor=supervisor), BackgroundEventWorker(func=wrapper, supervisor=supervisor),
                   BackgroundEventWorker(func=functools.partial(lambda a, **kw: None, 1), supervisor=supervisor)):
        assert worker.start() is True
        worker.stop()


# -- a function the process pool cannot send --------------------------------------------
def _outer():
    def inner():
        pass
    return inner


@pytest.mark.parametrize("fn", [lambda: 42, _outer()], ids=["lambda", "nested"])
def test_a_lambda_for_the_process_pool_says_to_define_it_at_module_level(supervisor, fn, logged_errors):
    supervisor.create_mp_pool(processes=1)
    task = supervisor.put_task(fn, tt=TT_MP)
    with pytest.raises(TypeError) as info:
        task.wait(10)
    assert str(info.value).startswith("could not send %s.%s to a child process: " % (__name__, fn.__qualname__))
    assert str(info.value).endswith(": " + LAMBDA_HINT)
    # the log says the call was not sent, not that it failed in a child
    logged = [r.getMessage() for r in logged_errors]
    assert any(m == "task %s (%s) failed" % (task.id, fn.__qualname__) for m in logged), logged


def test_an_argument_that_does_not_pickle_gets_no_such_hint(supervisor):
    supervisor.create_mp_pool(processes=1)
    result = supervisor.mp_pool.submit(print, (open(os.devnull),))
    with pytest.raises(TypeError) as info:
        result.get(10)
    assert "could not send builtins.print to a child process" in str(info.value)
    assert LAMBDA_HINT not in str(info.value)


# -- gworker.redis without redis-py -----------------------------------------------------
def test_gworker_redis_without_redis_py_says_what_to_install():
    code = "import sys; sys.modules['redis'] = None\nfrom gworker.redis import RedisStreamQueue\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT), timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == REDIS_MESSAGE


# -- a worker started in the gunicorn master ----------------------------------------------
APP = """
from gworker import background_worker

@background_worker(interval=0.5)
def tick(**kwargs):
    print("tick", flush=True)

tick.start()

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def _gunicorn(tmp_path, *args):
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    cmd = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "-b", "127.0.0.1:0",
           "--chdir", str(tmp_path)] + list(args)
    if hasattr(__import__("gunicorn.config").config, "ControlSocketDisable"):
        cmd.append("--no-control-socket")  # gunicorn >= 24: no shared socket in $HOME
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEVENT_", "GWORKER_"))}
    return gsubprocess.Popen(cmd + ["app:application"], cwd=str(tmp_path), env=dict(env, PYTHONPATH=ROOT),
                             stdout=gsubprocess.PIPE, stderr=gsubprocess.STDOUT, text=True)


@pytest.mark.skipif(gunicorn is None, reason="gunicorn is not installed (the gunicorn extra)")
def test_a_worker_started_in_the_gunicorn_master_stops_gunicorn_with_what_to_do(tmp_path):
    proc = _gunicorn(tmp_path, "--preload")
    try:
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:  # it booted: the refusal is missing
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert MASTER_MESSAGE in out.splitlines(), out
    assert "tick" not in out.splitlines()


@pytest.mark.skipif(gunicorn is None, reason="gunicorn is not installed (the gunicorn extra)")
def test_a_worker_started_by_the_application_in_a_worker_process_runs(tmp_path):
    proc = _gunicorn(tmp_path)
    try:
        line = ""
        with gevent.Timeout(20):
            while line.strip() != "tick":
                line = proc.stdout.readline()
                assert line, "gunicorn ended without a tick"
                assert "Error" not in line, line
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_outside_gunicorn_a_supervisor_starts_anywhere(supervisor):
    @background_worker(e=True, supervisor=supervisor)
    def anywhere(**kwargs):
        pass

    assert anywhere.start() is True
    anywhere.stop()

