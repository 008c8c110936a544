"""Runs the documentation's scripts for tests/test_docs.py, a fork per script.

Started as ``python [-m gevent.monkey] tests/docs_runner.py``: it imports gevent
and gworker once (the part of a script's start that costs most), then reads
jobs from stdin, one JSON object a line — ``{"key": ..., "argv": [script, args...],
"cwd": ..., "path": [dirs for sys.path], "timeout": s}`` — and runs each in a
forked child as ``python SCRIPT ARGS`` would: ``__name__ == "__main__"``,
``sys.argv``, ``sys.path[0]`` the script's directory, its stdout and stderr to
files. Up to ``--jobs`` children run at once. For each it writes a JSON line
``{"key", "code", "out", "err"}`` to stdout (``code`` None: killed at its
timeout). An empty line ends the input; the runner exits when all are done.

Importing gworker creates no hub, thread or greenlet, and the runner starts
none, so a forked child starts as clean as a fresh interpreter that imported
the same modules.
"""
import json
import os
import signal
import sys
import tempfile
import time

import gevent.monkey
import gworker  # noqa: F401  (imported once, for every child)

# The runner itself never starts gevent's hub (a child would inherit it): the
# process calls are the originals, even where `python -m gevent.monkey` patched them.
fork = gevent.monkey.get_original("os", "fork")
waitpid = gevent.monkey.get_original("os", "waitpid")
pause = gevent.monkey.get_original("time", "sleep")


def child(job, out_path, err_path):
    """In the forked child: run the script, then exit with its status."""
    code = 0
    try:
        out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        script = job["argv"][0]
        os.chdir(job["cwd"])
        sys.argv = list(job["argv"])
        sys.path[:] = [os.path.dirname(os.path.abspath(script))] + job["path"] + [
            p for p in sys.path[1:] if p not in job["path"]]
        import runpy
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main():
    jobs_at_once = int(sys.argv[sys.argv.index("--jobs") + 1]) if "--jobs" in sys.argv else 4
    tmp = tempfile.mkdtemp(prefix="gworker-docs-run-")
    pending = []
    for line in sys.stdin:
        if not line.strip():
            break
        pending.append(json.loads(line))
    running = {}
    n = 0
    while pending or running:
        while pending and len(running) < jobs_at_once:
            job = pending.pop(0)
            n += 1
            out_path, err_path = os.path.join(tmp, "%d.out" % n), os.path.join(tmp, "%d.err" % n)
            sys.stdout.flush()
            pid = fork()
            if pid == 0:
                child(job, out_path, err_path)
            running[pid] = (job, out_path, err_path, time.monotonic() + job["timeout"])
        pid, status = waitpid(-1, os.WNOHANG)
        if pid == 0:
            now = time.monotonic()
            for p, (job, _, _, deadline) in running.items():
                if now > deadline:
                    os.kill(p, signal.SIGKILL)
            pause(0.01)
            continue
        job, out_path, err_path, deadline = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        with open(out_path) as f:
            out = f.read()
        with open(err_path) as f:
            err = f.read()
        if code == -signal.SIGKILL and time.monotonic() > deadline:
            code, err = None, err + "\n[killed: still running after %s s]" % job["timeout"]
        print(json.dumps({"key": job["key"], "code": code, "out": out, "err": err}), flush=True)


if __name__ == "__main__":
    main()
