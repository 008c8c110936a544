"""``python -m benchmarks --plot FILE``: the run-cost scenario as a small PNG.

CPU µs per run (y) against the number of one-second workers (x, log scale),
one line each for gworker, bare greenlets and bare libev timers, from the
medians of the run; the issue's 6 µs target dashed. matplotlib (the ``bench``
extra) is imported only here, only when a plot is asked for, with the Agg
backend (no display needed).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from . import scenarios

SCENARIO = "run-cost"
TARGET_US = 6.0
MISSING = "--plot needs matplotlib: pip install .[bench] (or pip install matplotlib)"
LABELS = {"gworker": "gworker BackgroundIntervalWorker", "greenlets": "bare greenlets (gevent.sleep(1))",
          "timers": "bare libev timers (the floor)"}


def missing() -> Optional[str]:
    """None when matplotlib can be imported; else the message that says how to get it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return MISSING
    return None


def series(m: Dict[str, Any]) -> Dict[str, List[Tuple[float, float]]]:
    """``{kind: [(workers, cpu_us_per_run), ...]}`` from the run-cost medians, in
    size order; a point whose part failed or was skipped is left out. The
    worker count is the part's own ``n`` (so a --quick run plots its smaller
    sizes where they are)."""
    out: Dict[str, List[Tuple[float, float]]] = {}
    for kind in scenarios.RUN_COST_KINDS:
        points = []
        for size, (n, _quick_n) in scenarios.RUN_COST_SIZES.items():
            y = m.get("%s_%s.cpu_us_per_run" % (kind, size))
            x = m.get("%s_%s.n" % (kind, size), n)
            if isinstance(y, (int, float)) and isinstance(x, (int, float)) and y > 0:
                points.append((float(x), float(y)))
        out[kind] = points
    return out


def _count_label(n: float) -> str:
    """``1000`` → ``"1k"``, ``100000`` → ``"100k"``, ``2500`` → ``"2.5k"``."""
    return ("%gk" % (n / 1000)) if n >= 1000 else "%g" % n


def caption(meta: Dict[str, Any], m: Dict[str, Any]) -> str:
    """The machine and the run, in one line: CPUs, the core pinned, Python, gevent."""
    pinned = m.get("gworker_1k.pinned_cpu")
    cpus = "%s CPUs" % meta.get("cpus", "?")
    if isinstance(pinned, (int, float)):
        cpus += ", each part pinned to CPU %d" % pinned
    bits = [cpus, "Python %s" % meta.get("python", "?")]
    if meta.get("gevent"):
        bits.append("gevent %s" % meta["gevent"])
    bits.append("medians of %s run(s) per part%s" % (meta.get("repeat", "?"), ", --quick" if meta.get("quick") else ""))
    if meta.get("started"):
        bits.append(str(meta["started"]))
    return "; ".join(bits)


def plot_run_cost(report: Dict[str, Any], path: str) -> None:
    """Write the PNG for ``report`` (what ``python -m benchmarks`` collects) to
    ``path``; ``ValueError`` if the run-cost scenario is not in it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullLocator

    if SCENARIO not in report.get("scenarios", {}):
        raise ValueError("the %s scenario was not run: nothing to plot" % SCENARIO)
    m = report["scenarios"][SCENARIO]["medians"]
    meta = report.get("meta", {})
    fig = Figure(figsize=(8.6, 4.4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    counts = set()
    for kind, points in series(m).items():
        if not points:
            continue
        xs, ys = zip(*points)
        counts.update(xs)
        ax.plot(xs, ys, marker="o", label=LABELS[kind])
        for x, y in points:
            ax.annotate("%.3g" % y, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axhline(TARGET_US, linestyle="--", color="grey", linewidth=1, label="target ≤ %g µs" % TARGET_US)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = sorted(counts) or [n for n, _ in scenarios.RUN_COST_SIZES.values()]
    ax.set_xticks(ticks)
    ax.set_xticklabels([_count_label(n) for n in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.margins(x=0.08, y=0.15)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: "%g" % v))
    ax.set_xlabel("interval=1 workers (log scale)")
    ax.set_ylabel("CPU µs per run (log scale)")
    title = "What a run costs: interval=1 workers on one core"
    if meta.get("quick"):
        title += "\n(--quick: a smoke run, not a measurement)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.text(0.01, 0.01, caption(meta, m), fontsize=6.5, color="dimgray")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, format="png")
