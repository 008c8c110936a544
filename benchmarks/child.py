"""Run one part of one scenario in this (fresh) process; print its figures.

``python -m benchmarks.child SCENARIO PART [--quick] [--patched]``. With
``--patched`` the process monkey-patches before anything imports gevent's users,
as ``python -m gevent.monkey`` would. The last line of output is
``RESULT {json}``.
"""
import os
import sys

# A child of ``--jobs`` runs on the one CPU it was given, set before anything
# starts (a part that pins itself then pins to it).
if os.environ.get("GWORKER_BENCH_CPU") and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {int(os.environ["GWORKER_BENCH_CPU"])})

if "--patched" in sys.argv[1:]:
    from gevent import monkey

    monkey.patch_all()

import json  # noqa: E402


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 2:
        print("usage: python -m benchmarks.child SCENARIO PART [--quick] [--patched]", file=sys.stderr)
        return 2
    from benchmarks import scenarios

    scenario = scenarios.get(args[0])
    part = scenario.parts[args[1]]
    figures = part("--quick" in argv)
    figures["patched"] = "--patched" in argv
    sys.stdout.flush()
    print("RESULT " + json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    # Do not wait for what a part left running (greenlets, scheduler threads).
    os._exit(code)
