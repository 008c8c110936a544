"""``python -m benchmarks`` still runs and prints its table (no figure is checked:
benchmarks are never assertions in the tests)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmarks_command_prints_a_table():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "event"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(line for line in lines if line.startswith("scenario"))
    for column in ("gworker", "baseline(s)", "ratio", "target", "met"):
        assert column in header
    rows = [line for line in lines if line.startswith("event ")]
    assert rows and all("patched" in row for row in rows)
