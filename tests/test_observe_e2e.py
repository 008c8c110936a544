"""End to end: the live page and the metrics of real gunicorn processes (issue 21).

gunicorn (``-k gevent -w 3``) serves the example application
(examples/gunicorn.conf.py, examples/wsgi_pywsgi.py) with a shared status
directory. The page is loaded in a real headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven by selenium): it must load with
no console error, show the workers of all three processes, and show new
figures at its next refresh. A screenshot is written under the test's tmp
dir (and to ``$GWORKER_UI_SCREENSHOT`` when set: how the README's picture is
made). Without the browser (or selenium) the browser test is skipped — except
in CI (``CI=true``), where that is a failure.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import gevent
import gevent.subprocess
import pytest

from conftest import PATCHED, native_thread, wait_until
from test_wsgi_e2e import ROOT, EXAMPLES, free_port, needs_gunicorn, request, status_by_pid

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
except ImportError:  # pragma: no cover - the test extra installs it
    selenium = None


def drive(fn, *args):
    """``fn(*args)``, a call of selenium's (a blocking HTTP request to
    chromedriver): made from a native OS thread in the un-patched world, so
    that this process's hub keeps turning while it waits."""
    if PATCHED:  # (selenium's sockets are gevent's: the wait is cooperative)
        return fn(*args)
    return native_thread(fn, *args).join(60)


def needs_browser():
    missing = [what for what, there in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER),
                                        ("selenium", selenium)) if not there]
    if missing:
        message = "%s not found (apt-get install chromium chromium-driver; pip install selenium)" % (
            ", ".join(missing))
        if os.environ.get("CI") == "true":
            pytest.fail(message + " -- required in CI", pytrace=False)
        pytest.skip(message)


class Gunicorn:
    def __init__(self, proc, port, log_path, shared):
        self.proc, self.port, self.log_path, self.shared = proc, port, log_path, shared

    @property
    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def wait_ready(self, processes, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "gunicorn exited early:\n" + self.log
            if request(self.port, timeout=1)[0] == 200:
                return status_by_pid(self.port, processes)
            gevent.sleep(0.05)
        raise AssertionError("gunicorn not ready in %ss:\n%s" % (timeout, self.log))


@pytest.fixture
def gunicorn_server(tmp_path):
    procs = []

    def _launch(workers=3, max_requests=None, env_dir="GWORKER_STATUS_DIR"):
        shared = tmp_path / "shared"
        shared.mkdir()
        port = free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GEVENT_", "GWORKER_")) and k != "PROMETHEUS_MULTIPROC_DIR"}
        env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        env[env_dir] = str(shared)
        cmd = [sys.executable, "-m", "gunicorn", "-c", os.path.join(EXAMPLES, "gunicorn.conf.py"),
               "-k", "gevent", "-w", str(workers), "-b", "127.0.0.1:%d" % port, "--graceful-timeout", "5"]
        if max_requests:
            cmd += ["--max-requests", str(max_requests)]
        if hasattr(__import__("gunicorn.config").config, "ControlSocketDisable"):
            cmd.append("--no-control-socket")  # gunicorn >= 24: no shared socket in $HOME
        log_path = str(tmp_path / "gunicorn.log")
        with open(log_path, "wb") as log:
            proc = gevent.subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        procs.append(proc)
        return Gunicorn(proc, port, log_path, str(shared))

    yield _launch
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


def snapshot_pids(shared):
    return {int(n[len("gworker-ui-"):-len(".json")]) for n in os.listdir(shared)
            if n.startswith("gworker-ui-") and n.endswith(".json")}


@pytest.fixture
def browser(tmp_path):
    needs_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,900",
                 "--user-data-dir=%s" % (tmp_path / "chromium-profile")):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = drive(lambda: webdriver.Chrome(service=service, options=options))
    drive(driver.set_page_load_timeout, 20)
    try:
        yield driver
    finally:
        drive(driver.quit)


#: Read in the page's own thread, in one go: the page rebuilds itself each second.
_READ_PAGE = """
var shown = {};
document.querySelectorAll("section.proc[data-state=live]").forEach(function (card) {
  var rows = {};
  card.querySelectorAll("tr[data-worker]").forEach(function (row) {
    rows[row.getAttribute("data-worker")] = {
      runs: parseInt(row.querySelector("td[data-field=runs]").textContent, 10),
      points: parseInt(row.querySelector("svg.spark").getAttribute("data-points"), 10)};
  });
  shown[card.getAttribute("data-pid")] = {rows: rows, slots: card.querySelectorAll(".slot[data-priority]").length};
});
return {shown: shown, refreshes: parseInt(document.getElementById("updated").getAttribute("data-refreshes"), 10)};
"""


def page_figures(driver):
    """Per pid shown live: {pid: {"rows": {worker: {runs, points}}, "slots": n}}, and
    how many refreshes the page made."""
    read = drive(driver.execute_script, _READ_PAGE)
    return {int(pid): v for pid, v in read["shown"].items()}, read["refreshes"]


@needs_gunicorn
def test_the_live_page_shows_every_gunicorn_process_and_refreshes(gunicorn_server, browser, tmp_path):
    server = gunicorn_server(workers=3)
    pids = set(server.wait_ready(processes=3))
    wait_until(lambda: snapshot_pids(server.shared) >= pids, timeout=10)
    drive(browser.get, server.url("/_gworker/ui"))

    def all_shown():
        shown, _ = page_figures(browser)
        return set(shown) == pids and all({"heartbeat", "process_item"} <= set(p["rows"]) for p in shown.values())

    wait_until(all_shown, timeout=15)
    first, refreshes = page_figures(browser)
    # the next refresh shows new figures: the heartbeat (every 0.1 s) ran in every process
    wait_until(lambda: page_figures(browser)[1] > refreshes, timeout=5)
    wait_until(lambda: all(page_figures(browser)[0][pid]["rows"]["heartbeat"]["runs"]
                           > first[pid]["rows"]["heartbeat"]["runs"] for pid in pids), timeout=5)
    # a sparkline of recent runs has points, and each pool shows its slots by priority
    wait_until(lambda: all(p["rows"]["heartbeat"]["points"] >= 2 for p in page_figures(browser)[0].values()),
               timeout=10)
    assert all(p["slots"] == 4 for p in page_figures(browser)[0].values())
    shot = str(tmp_path / "ui.png")
    assert drive(browser.save_screenshot, shot) and os.path.getsize(shot) > 10000
    if os.environ.get("GWORKER_UI_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["GWORKER_UI_SCREENSHOT"])
    errors = [entry for entry in drive(browser.get_log, "browser") if entry["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
    # the JSON endpoint keeps answering as before
    status, body, _ = request(server.port, path="/_gworker")
    assert status == 200 and json.loads(body)["pid"] in pids


def metric_values(port, name, label="worker"):
    """{label value: sample value} of one scrape of /_gworker/metrics, or None if it did not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body, _ = request(port, path="/_gworker/metrics")
    if status != 200:
        return None
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                out[sample.labels.get(label)] = sample.value
    return out


def gworker_files(shared):
    names = os.listdir(shared)
    return ([n for n in names if n.startswith("gworker-metrics-") and n.endswith(".json")
             and n != "gworker-metrics-archive.json"],
            [n for n in names if n.startswith("gworker-ui-") and n.endswith(".json")])


@needs_gunicorn
def test_metrics_sum_every_gunicorn_process_across_max_requests_recycling(gunicorn_server):
    """gunicorn -w 3 --max-requests 40 with PROMETHEUS_MULTIPROC_DIR: while the
    worker processes are recycled, any process's scrape shows every process's
    runs (a counter never goes back), every accepted item is counted once in
    the end, and the files of the exited processes are folded, not piled up."""
    pytest.importorskip("prometheus_client")
    server = gunicorn_server(workers=3, max_requests=40, env_dir="PROMETHEUS_MULTIPROC_DIR")
    deadline = time.monotonic() + 20
    while len(gworker_files(server.shared)[0]) < 3:  # each process publishes as it starts
        assert server.proc.poll() is None and time.monotonic() < deadline, server.log
        gevent.sleep(0.05)
    pids, accepted, heartbeats = set(), [], []
    i = 0
    deadline = time.monotonic() + 30
    # (a process told to restart goes on serving until its loop notices, within
    # a second: the requests are paced so that recycled processes take over)
    while len(pids) < 6 and time.monotonic() < deadline:
        i += 1
        gevent.sleep(0.01)
        if i % 8 == 0:
            seen = metric_values(server.port, "gworker_runs_total")
            if seen is not None:
                heartbeats.append(seen.get("heartbeat", 0))
            continue
        status, body, _ = request(server.port, "POST", "/items", b"item-%d" % i)
        if status == 200:
            accepted.append(i)
            pids.add(json.loads(body)["pid"])
    assert len(pids) >= 6, "worker processes were not recycled: %s\n%s" % (sorted(pids), server.log)
    assert len(heartbeats) >= 10
    assert heartbeats == sorted(heartbeats), heartbeats  # the sum over the processes never went back
    assert heartbeats[-1] > heartbeats[0]

    def counted():
        seen = metric_values(server.port, "gworker_runs_total")
        return seen is not None and seen.get("process_item") == len(accepted)

    wait_until(counted, timeout=10)  # every accepted item, in whichever process ran it, once
    queued = metric_values(server.port, "gworker_queue_items")
    assert queued is not None and queued.get("process_item") == 0
    wait_until(lambda: len(gworker_files(server.shared)[0]) <= 3 and len(gworker_files(server.shared)[1]) <= 3,
               timeout=10)  # the exited processes' files were folded or removed
    assert os.path.exists(os.path.join(server.shared, "gworker-metrics-archive.json"))
