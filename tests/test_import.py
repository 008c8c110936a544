"""Importing gworker creates no hub, thread, greenlet or supervisor."""
import subprocess
import sys
import textwrap


def test_import_creates_nothing():
    code = textwrap.dedent(
        """
        import gc, threading, sys
        import greenlet
        before_threads = threading.active_count()
        import gworker
        from gevent._hub_local import get_hub_if_exists
        assert get_hub_if_exists() is None, "a hub was created at import"
        assert threading.active_count() == before_threads, "a thread was started at import"
        glets = [o for o in gc.get_objects() if isinstance(o, greenlet.greenlet)]
        assert all(g is greenlet.getcurrent() for g in glets), glets
        made = [o for o in gc.get_objects() if isinstance(o, gworker.TaskSupervisor)]
        assert not made, "a supervisor was made at import: %r" % made
        from gworker import task_supervisor
        assert get_hub_if_exists() is None, "touching task_supervisor created a hub"
        assert not task_supervisor.is_active()
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_import_before_patch_all_then_patch():
    # e.g. a gunicorn master imports the app (and gworker) before its worker patches.
    code = textwrap.dedent(
        """
        import gworker
        from gevent import monkey
        monkey.patch_all()
        import gevent
        hits = []
        @gworker.background_worker(interval=0.01)
        def tick(**kw):
            hits.append(1)
            return len(hits) < 3 or False
        tick.start()
        with gevent.Timeout(5):
            while tick.is_active():
                gevent.sleep(0.01)
        gworker.task_supervisor.stop()
        print(len(hits))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"


def test_public_names():
    import gworker

    for name in (
        "task_supervisor", "TaskSupervisor", "TASK_LOW", "TASK_NORMAL", "TASK_HIGH",
        "TASK_CRITICAL", "TT_COROUTINE", "TT_THREAD", "TT_MP", "background_worker",
        "BackgroundWorker", "BackgroundQueueWorker", "BackgroundEventWorker",
        "BackgroundIntervalWorker",
    ):
        assert hasattr(gworker, name), name
    assert (gworker.TASK_LOW, gworker.TASK_NORMAL, gworker.TASK_HIGH, gworker.TASK_CRITICAL) == (200, 100, 50, 0)
    assert (gworker.TT_COROUTINE, gworker.TT_THREAD, gworker.TT_MP) == (0, 1, 2)
    assert isinstance(gworker.task_supervisor, gworker.TaskSupervisor)
