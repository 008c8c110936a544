"""gworker's benchmarks: every figure beside raw gevent, measured in the same run.

Run ``python -m benchmarks`` from the repository root (``--help`` for the options;
``benchmarks/README.md`` explains the scenarios, the table and how to add one).

Layout:

* :mod:`benchmarks.scenarios` — the *registry*: one :class:`Scenario` per
  benchmark, each made of *parts* (``gworker``, ``raw``, ``apscheduler``, …) and
  of the table *rows* computed from the parts' figures;
* :mod:`benchmarks.child` — runs one part of one scenario in a fresh process
  (monkey-patched or not, as the scenario says) and prints its figures as JSON;
* :mod:`benchmarks.__main__` — the command: runs every part ``--repeat`` times,
  each in its own subprocess, takes medians and prints the table;
* :mod:`benchmarks.plot` — ``--plot FILE``: the run-cost scenario's CPU per run
  against the worker count, as a PNG (matplotlib, imported only for it).

Benchmarks are never assertions in ``tests/``; ``tests/test_benchmarks_smoke.py``
only checks that the command still runs and prints a table.
"""
