"""``python -m benchmarks``: every scenario, gworker beside its baselines.

Each part of each scenario runs ``--repeat`` times, each time in a fresh
subprocess (parts of one scenario alternate, so drifting machine load hits
them alike); the table shows the medians. ``--jobs N`` runs up to N parts at
once, each child on a CPU of its own: quicker, for ``--quick`` smoke runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

from . import scenarios

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: set for a child of ``--jobs``: the CPU it runs on (benchmarks.child reads it first)
CPU_ENV = "GWORKER_BENCH_CPU"


def run_part(name: str, part: str, patched: bool, quick: bool, timeout: float,
             cpu: Optional[int] = None) -> Dict[str, Any]:
    """One part in a fresh child; ``cpu``: the one CPU the child runs on (it
    sets that first, see benchmarks.child), else this process's CPUs."""
    cmd = [sys.executable, "-m", "benchmarks.child", name, part]
    if quick:
        cmd.append("--quick")
    if patched:
        cmd.append("--patched")
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("GEVENT_MONITOR_THREAD_ENABLE", None)  # e.g. inherited from the test suite: not measured
    if cpu is not None:
        env[CPU_ENV] = str(cpu)  # (not a preexec_fn: this process has threads when jobs run)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after %ss" % timeout}
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": "exit %s: %s" % (out.returncode, tail)}


def run_parts(scenario: scenarios.Scenario, order: List[str], label: str, args: argparse.Namespace,
              cpu_set: List[int]) -> Dict[str, Dict[str, Any]]:
    """One repeat of a scenario's parts, in ``order``: one after another, or
    ``--jobs`` at a time, each job on its own CPU (the parts that pin
    themselves pin to it)."""
    def one(part: str, cpu: Optional[int]) -> Dict[str, Any]:
        print("[%s %s] %s ..." % (scenario.name, label, part), file=sys.stderr, flush=True)
        return run_part(scenario.name, part, scenario.part_patched(part), args.quick, args.timeout, cpu)

    if args.jobs == 1:
        return {part: one(part, None) for part in order}
    free = list(cpu_set[-args.jobs:])
    lock = threading.Lock()

    def job(part: str) -> Dict[str, Any]:
        with lock:
            cpu = free.pop()
        try:
            return one(part, cpu)
        finally:
            with lock:
                free.append(cpu)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(job, order))
    return dict(zip(order, results))


def medians(runs: List[Dict[str, Dict[str, Any]]]) -> Dict[str, Any]:
    """``{"part.figure": median}`` over the repeats; skips and errors kept as text."""
    merged: Dict[str, List[Any]] = {}
    for run in runs:
        for part, figures in run.items():
            for key, value in figures.items():
                merged.setdefault("%s.%s" % (part, key), []).append(value)
    out: Dict[str, Any] = {}
    for key, values in merged.items():
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers and len(numbers) == len(values):
            out[key] = statistics.median(numbers)
        else:
            out[key] = values[-1]
    return out


def fmt(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "n/a"
    a = abs(value)
    if a >= 10000:
        return "{:,.0f}".format(value)
    if a >= 100:
        return "%.0f" % value
    if a >= 10:
        return "%.1f" % value
    if a >= 1:
        return "%.2f" % value
    return "%.3f" % value


def table_rows(scenario: scenarios.Scenario, m: Dict[str, Any]) -> List[List[str]]:
    rows = []
    world = scenario.world
    for row in scenario.rows:
        unit = (" " + row.unit) if row.unit else ""
        bases = []
        for key in row.bases:
            part, figure = key.split(".", 1)
            if figure.startswith("off_"):  # (a part that measures both sides: its other side)
                part += " off"
            value = m.get(key)
            shown = fmt(value) if isinstance(value, (int, float)) else "skipped"
            bases.append("%s %s" % (part, shown))
        ratio = scenarios.ratio_of(row, m)
        met = row.met(m)
        rows.append([
            scenario.name, world, row.metric + unit, fmt(m.get(row.ours)),
            "; ".join(bases) or "-", "-" if ratio is None else "%.2f" % ratio, row.target,
            "-" if met is None else ("yes" if met else "NO"),
        ])
    return rows


def render(header: List[str], rows: List[List[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: " | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    sep = "-+-".join("-" * w for w in widths)
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def check_plot(parser: argparse.ArgumentParser, chosen: List[scenarios.Scenario]) -> None:
    """Before anything runs: ``--plot`` needs the run-cost scenario among those
    chosen, and matplotlib; else a usage error (exit 2) that says which."""
    from . import plot

    if plot.SCENARIO not in [s.name for s in chosen]:
        parser.error("--plot draws the %s scenario, which --only leaves out (add it: --only %s)"
                     % (plot.SCENARIO, plot.SCENARIO))
    problem = plot.missing()
    if problem:
        parser.error(problem)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", metavar="FILE", help="write every figure (each run and the medians) here")
    parser.add_argument("--repeat", type=int, default=None, metavar="N",
                        help="runs per part of each scenario; the table shows medians (default 5, --quick 1)")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="run only these scenarios: "
                        + ", ".join(s.name for s in scenarios.REGISTRY))
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: smaller sizes, shorter runs")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed per subprocess")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="run up to N parts of a scenario at once, each on a CPU of its own (at most one"
                        " job per CPU; for --quick smoke runs: a measurement wants the default, 1)")
    parser.add_argument("--plot", metavar="FILE", help="after the run, draw the run-cost scenario's CPU per run "
                        "against the worker count to this PNG (needs matplotlib: pip install .[bench]; "
                        "run-cost must be among the scenarios run)")
    args = parser.parse_args(argv)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 5)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    cpu_set = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if args.jobs > len(cpu_set):
        parser.error("--jobs must be at most the number of CPUs this process may use (%d)" % len(cpu_set))
    chosen = scenarios.REGISTRY
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        try:
            chosen = [scenarios.get(n) for n in names]
        except KeyError as exc:
            parser.error(str(exc.args[0]))
    if args.plot:
        check_plot(parser, chosen)

    report: Dict[str, Any] = {
        "meta": {
            "python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "repeat": repeat, "quick": args.quick,
            "loadavg_before": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "scenarios": {},
    }
    try:
        import gevent

        report["meta"]["gevent"] = gevent.__version__
    except ImportError:
        pass
    all_rows: List[List[str]] = []
    notes: List[str] = []
    for scenario in chosen:
        runs: List[Dict[str, Dict[str, Any]]] = []
        parts = list(scenario.parts)
        for i in range(repeat):
            order = parts if i % 2 == 0 else parts[::-1]
            runs.append(run_parts(scenario, order, "%d/%d" % (i + 1, repeat), args, cpu_set))
        m = medians(runs)
        if scenario.derived is not None:
            m.update(scenario.derived(m))
        for key, value in sorted(m.items()):
            if key.endswith(".skipped") or key.endswith(".error"):
                note = "%s: %s %s" % (scenario.name, key.rsplit(".", 1)[0], value)
                if note not in notes:
                    notes.append(note)
        rows = table_rows(scenario, m)
        all_rows.extend(rows)
        report["scenarios"][scenario.name] = {
            "title": scenario.title, "patched": scenario.patched, "runs": runs, "medians": m,
            "rows": [dict(zip(["scenario", "world", "metric", "gworker", "baselines", "ratio", "target", "met"], r))
                     for r in rows],
        }
    header = ["scenario", "world", "metric", "gworker", "baseline(s)", "ratio", "target", "met"]
    print("gworker benchmarks — medians of %d run(s) per part%s; %d CPUs, load %.2f" % (
        repeat, ", --quick" if args.quick else "", os.cpu_count() or 0, os.getloadavg()[0]))
    print(render(header, all_rows))
    for note in notes:
        print("note: " + note)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
    if args.plot:
        from . import plot

        plot.plot_run_cost(report, args.plot)
        print("plot: " + args.plot)
    return 1 if any(k.endswith(".error") for s in report["scenarios"].values() for k in s["medians"]) else 0


if __name__ == "__main__":
    sys.exit(main())
