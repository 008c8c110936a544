"""``python -m benchmarks`` still runs and prints its table (no figure is checked:
benchmarks are never assertions in the tests); and the pieces of the run-cost
scenario (issue 18) that decide its figures and rows — the count of runs made and missed,
the rows' ``met``, the lag meter's rebasing, ``--plot`` — do what they say."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # benchmarks/ is not installed with the package: import it from the tree
    sys.path.insert(0, ROOT)

from benchmarks import __main__ as bench_main  # noqa: E402
from benchmarks import plot, scenarios  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _has_matplotlib():
    """Whether matplotlib is installed (looked up, not imported: an import takes
    the hub for half a second)."""
    return importlib.util.find_spec("matplotlib") is not None


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


@pytest.mark.timeout(180)
def test_run_cost_quick_prints_its_rows_and_plots(tmp_path):
    """``--quick --only run-cost --plot FILE``: the table has the run-cost rows and
    FILE is a PNG. Without matplotlib the table is still checked (run without
    ``--plot``), then the test skips: the plot was not."""
    png = tmp_path / "run_cost.png"
    report = tmp_path / "report.json"
    # two parts at a time where there are two CPUs, each pinned to its own
    cpus = sorted(os.sched_getaffinity(0))[-2:]
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--only", "run-cost", "--jobs", str(len(cpus)),
           "--json", str(report)]
    plotting = _has_matplotlib()
    if plotting:
        cmd += ["--plot", str(png)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=170, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    with open(report) as f:
        (run,) = json.load(f)["scenarios"]["run-cost"]["runs"]
    assert {figures["pinned_cpu"] for figures in run.values()} == set(cpus)
    rows = [line for line in out.stdout.splitlines() if line.startswith("run-cost ")]
    for metric in ("100k: runs made", "100k: RSS per idle worker", "100k: worst hub lag", "100k: CPU",
                   "1k: CPU per run", "10k: CPU per run", "100k: CPU per run", "CPU per run flat: 100k / 1k"):
        assert any(metric in row for row in rows), (metric, out.stdout)
    assert all("patched" in row and "greenlets" in row and "timers" in row for row in rows)
    assert not any(" n/a " in row for row in rows), out.stdout  # every figure was measured
    if not plotting:
        pytest.skip("matplotlib is not installed (pip install .[bench]): the table was checked, the PNG was not")
    with open(png, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE


# -- counting the runs made and missed ----------------------------------------------------------------------

def test_runs_missed_are_counted_from_the_gaps_between_a_workers_runs():
    assert scenarios.missed_runs([1.0, 1.02, 0.98, 1.49]) == 0
    assert scenarios.missed_runs([2.0]) == 1 and scenarios.missed_runs([3.1, 1.6]) == 3
    assert scenarios.missed_at_end(1.4) == 0 and scenarios.missed_at_end(1.6) == 1
    assert scenarios.missed_at_end(3.5) == 3  # never ran in a 3.5 s window


def test_the_run_tracker_holds_a_late_first_round_against_no_one_but_a_stall_against_its_worker():
    tracker = scenarios.RunTracker(3)
    tracker.ran(0)  # before the window: a first round that the start delayed
    tracker.window()
    tracker.ran(0)
    tracker.ran(1)
    tracker.start -= 2.6  # as if the window had begun 2.6 s ago ...
    tracker.last[1] -= 2.1  # ... and worker 1's run was 2.1 s ago
    tracker.ran(1)  # a gap of 2.1 s: one run missed
    missed = tracker.close()
    # worker 0: ran just now; worker 1: one missed; worker 2: never ran in 2.6 s: two missed
    assert missed == 1 + 2
    assert tracker.counts == [2, 2, 0]


# -- the rows' targets ---------------------------------------------------------------------------------

RUN_COST_OK = {
    "gworker_100k.runs_pct": 99.95, "gworker_100k.rss_per_kib": 2.4, "gworker_100k.rss_all_ran": 1,
    "gworker_100k.lag_max_ms": 19.0,
    "gworker_100k.cpu_pct": 59.0, "gworker_100k.start_s": 0.9,
    "gworker_1k.cpu_us_per_run": 4.0, "gworker_10k.cpu_us_per_run": 5.0, "gworker_100k.cpu_us_per_run": 5.9,
    "greenlets_1k.cpu_us_per_run": 7.0, "greenlets_100k.cpu_us_per_run": 6.0,
    "timers_1k.cpu_us_per_run": 0.9, "timers_100k.cpu_us_per_run": 0.5,
}

#: one figure off target at a time, and the row that must then say NO
RUN_COST_MISSES = [
    ("gworker_100k.runs_pct", 99.8, "100k: runs made"),
    ("gworker_100k.rss_per_kib", 2.6, "100k: RSS per idle worker"),
    ("gworker_100k.lag_max_ms", 20.5, "100k: worst hub lag"),
    ("gworker_100k.cpu_pct", 61.0, "100k: CPU"),
    ("gworker_1k.cpu_us_per_run", 6.1, "1k: CPU per run"),
    ("gworker_10k.cpu_us_per_run", 7.0, "10k: CPU per run"),
    ("gworker_100k.cpu_us_per_run", 6.2, "100k: CPU per run"),
]


def _verdicts(name, medians):
    """``{metric: met}`` of scenario ``name``'s rows over ``medians`` (plus what it derives)."""
    scenario = scenarios.get(name)
    m = dict(medians)
    if scenario.derived is not None:
        m.update(scenario.derived(m))
    return {row.metric: row.met(m) for row in scenario.rows}


def test_run_cost_rows_are_met_on_target():
    verdicts = _verdicts("run-cost", RUN_COST_OK)
    assert verdicts.pop("100k: start time") is None  # reported
    assert all(v is True for v in verdicts.values()), verdicts


@pytest.mark.parametrize("key, value, metric", RUN_COST_MISSES)
def test_run_cost_rows_fail_when_the_figure_misses(key, value, metric):
    verdicts = _verdicts("run-cost", dict(RUN_COST_OK, **{key: value}))
    assert verdicts[metric] is False
    assert all(v is not False for k, v in verdicts.items() if k not in (metric, "CPU per run flat: 100k / 1k"))


def test_run_cost_flat_row_is_100k_over_1k():
    # 5.9 / 4.0 = 1.475: flat enough
    assert _verdicts("run-cost", RUN_COST_OK)["CPU per run flat: 100k / 1k"] is True
    steep = dict(RUN_COST_OK, **{"gworker_1k.cpu_us_per_run": 3.0})  # 5.9 / 3.0 > 1.5
    assert _verdicts("run-cost", steep)["CPU per run flat: 100k / 1k"] is False
    assert scenarios.get("run-cost").derived(steep)["gworker.cpu_per_run_100k_over_1k"] == pytest.approx(5.9 / 3)


def test_run_cost_rss_is_not_judged_when_read_before_every_worker_ran():
    late = dict(RUN_COST_OK, **{"gworker_100k.rss_all_ran": 0})
    assert _verdicts("run-cost", late)["100k: RSS per idle worker"] is None


def test_run_cost_rows_cannot_tell_without_the_figure():
    verdicts = _verdicts("run-cost", {"gworker_100k.runs_pct": "skipped"})
    assert all(v is None for v in verdicts.values()), verdicts


def test_tasks_target_is_four_fifths_of_the_pool():
    assert _verdicts("tasks", {"gworker.tasks_per_s": 80.0, "raw.tasks_per_s": 100.0})["tasks/s"] is True
    assert _verdicts("tasks", {"gworker.tasks_per_s": 79.0, "raw.tasks_per_s": 100.0})["tasks/s"] is False


def test_event_target_is_raw_plus_ten_microseconds():
    on = _verdicts("event", {"gworker.median_us": 40.0, "raw.median_us": 30.0})
    off = _verdicts("event", {"gworker.median_us": 40.5, "raw.median_us": 30.0})
    assert on["latency median"] is True and off["latency median"] is False
    assert _verdicts("event", {"gworker.median_us": 40.0, "raw.median_us": "skipped"})["latency median"] is None


def test_cpu_rows_are_reported_not_judged():
    for scenario in scenarios.REGISTRY:
        for row in scenario.rows:
            if row.metric.startswith("CPU per ") and scenario.name != "run-cost":
                assert row.target == "(reported)" and row.met({}) is None, (scenario.name, row.metric)


# -- the lag meter: the start loop's block rebased, the RSS reading's left out ----------------------

def test_lag_meter_rebases_ticks_past_the_start_and_drops_those_past_an_rss_reading():
    lag = scenarios.LagMeter()
    lag.samples = [(10.000, 12.100), (20.000, 20.050), (30.000, 30.002)]
    lag.rebased = [(9.0, 12.0)]     # the start loop: the tick woke 100 ms after it ended
    lag.excluded = [(19.9, 20.04)]  # an RSS reading: that tick is left out
    figures = lag.stop()
    assert figures["lag_max_ms"] == pytest.approx(100.0)


# -- --plot ---------------------------------------------------------------------------------------------

def test_plot_without_run_cost_is_a_usage_error_before_anything_runs(capsys):
    with pytest.raises(SystemExit) as exc:
        bench_main.main(["--only", "event", "--plot", "unused.png"])
    assert exc.value.code == 2
    assert "run-cost" in capsys.readouterr().err


@pytest.mark.parametrize("jobs", ["0", "1000"])
def test_jobs_beyond_the_cpus_is_a_usage_error_that_names_it(jobs, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_main.main(["--only", "event", "--jobs", jobs])
    assert exc.value.code == 2
    assert "--jobs must be at" in capsys.readouterr().err


def test_plot_without_matplotlib_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(SystemExit) as exc:
        bench_main.main(["--only", "run-cost", "--plot", "unused.png"])
    assert exc.value.code == 2
    assert "pip install .[bench]" in capsys.readouterr().err


def test_plot_series_takes_each_parts_worker_count_and_leaves_out_failed_parts():
    m = {"gworker_1k.n": 1000, "gworker_1k.cpu_us_per_run": 30.0,
         "gworker_10k.n": 2000, "gworker_10k.cpu_us_per_run": 31.0,
         "gworker_100k.error": "exit 1: boom",
         "timers_1k.cpu_us_per_run": 0.6}
    series = plot.series(m)
    assert series["gworker"] == [(1000.0, 30.0), (2000.0, 31.0)]
    assert series["greenlets"] == []
    assert series["timers"] == [(1000.0, 0.6)]  # no n figure: the size's own count
