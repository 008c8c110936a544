"""Every example in examples/ runs as-is (in this test run's world) and exits 0."""
import os
import subprocess
import sys


from conftest import PATCHED

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(name, timeout=30):
    cmd = [sys.executable]
    if PATCHED:
        cmd += ["-m", "gevent.monkey"]
    cmd.append(os.path.join(ROOT, "examples", name))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_quickstart():
    out = run_example("quickstart.py")
    assert out.returncode == 0, out.stderr
    assert "queue worker got [0, 1, 2, 3, 4]" in out.stdout
    assert "event worker ran 1 time" in out.stdout


def test_cpu_bound():
    out = run_example("cpu_bound.py", timeout=90)
    assert out.returncode == 0, out.stderr
    assert "primes below 3000000: 216816" in out.stdout


def test_async_workers():
    out = run_example("async_workers.py")
    assert out.returncode == 0, out.stderr
    assert "['stored 0', 'stored 1', 'stored 2']" in out.stdout


def test_limits():
    out = run_example("limits.py")
    assert out.returncode == 0, out.stderr
    assert "exported report after 2 tries" in out.stdout
    assert "fetch calls: ['a', 'a', 'a', 'b', 'b', 'b']" in out.stdout
    assert "each just after a whole second: True" in out.stdout
    assert "retrying in" in out.stderr, "each retry is logged (at WARNING)"
