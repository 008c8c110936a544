"""Cron workers: the next fire time across daylight-saving changes (a pure
function, no clock), runs on whole seconds of the wall clock, misfires after a
blocked hub (one late run, or a skip with misfire_grace), a wall clock that
jumps (against a fake wall clock), overrides, parameter checks, get_info, and
start/stop leaving nothing behind. (Jitter and misfire_grace of plain
interval workers: tests/test_interval_worker.py.)"""
import logging
import math
import os
import subprocess
import sys
import time
import types
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import gevent
import pytest
from gevent.event import Event

import gworker
from gworker import BackgroundIntervalWorker
from gworker.cron import CronSchedule, local_zone, zone_name
from gworker.workers import interval as interval_module

from conftest import greenlet_count, wait_until


def fires(expr, zone, start, n):
    """The next ``n`` fire times after ``start`` (ISO, with its offset), as
    ISO strings in ``zone``."""
    tz = ZoneInfo(zone)
    schedule = CronSchedule(expr, zone)
    t = datetime.fromisoformat(start).timestamp()
    out = []
    for _ in range(n):
        t = schedule.next_fire(t)
        out.append(datetime.fromtimestamp(t, tz).isoformat())
    return out


# -- when: a pure function ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "expr, zone, start, expected",
    [
        # a normal day, a normal week
        ("0 9 * * 1-5", "Europe/Berlin", "2025-06-13T10:00:00+02:00",
         ["2025-06-16T09:00:00+02:00", "2025-06-17T09:00:00+02:00"]),
        ("15 */6 * * *", "America/New_York", "2025-07-01T00:00:00-04:00",
         ["2025-07-01T00:15:00-04:00", "2025-07-01T06:15:00-04:00", "2025-07-01T12:15:00-04:00"]),
        # spring forward: 02:30 does not exist that day, and is skipped (not moved to 03:00)
        ("30 2 * * *", "Europe/Berlin", "2025-03-28T12:00:00+01:00",
         ["2025-03-29T02:30:00+01:00", "2025-03-31T02:30:00+02:00"]),
        ("30 2 * * *", "America/New_York", "2025-03-07T12:00:00-05:00",
         ["2025-03-08T02:30:00-05:00", "2025-03-10T02:30:00-04:00"]),
        # the first time after the gap exists, at the change itself
        ("0 3 * * *", "Europe/Berlin", "2025-03-29T12:00:00+01:00", ["2025-03-30T03:00:00+02:00"]),
        # fall back: the repeated time runs once, at its first occurrence
        ("30 2 * * *", "Europe/Berlin", "2025-10-25T12:00:00+02:00",
         ["2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]),
        ("30 1 * * *", "America/New_York", "2025-11-01T12:00:00-04:00",
         ["2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"]),
        ("*/30 1 * * *", "America/New_York", "2025-11-02T00:45:00-04:00",
         ["2025-11-02T01:00:00-04:00", "2025-11-02T01:30:00-04:00", "2025-11-03T01:00:00-05:00"]),
        # ... also when asked during the repeat: it ran at the first
        ("30 1 * * *", "America/New_York", "2025-11-02T01:10:00-05:00", ["2025-11-03T01:30:00-05:00"]),
        # a half-hour change (Lord Howe falls back from +11:00 to +10:30)
        ("45 1 * * *", "Australia/Lord_Howe", "2025-04-05T12:00:00+11:00",
         ["2025-04-06T01:45:00+11:00", "2025-04-07T01:45:00+10:30"]),
        # an expression that runs every hour follows the clock through the repeated hour
        ("*/20 * * * *", "America/New_York", "2025-11-02T00:50:00-04:00",
         ["2025-11-02T01:00:00-04:00", "2025-11-02T01:20:00-04:00", "2025-11-02T01:40:00-04:00",
          "2025-11-02T01:00:00-05:00", "2025-11-02T01:20:00-05:00", "2025-11-02T01:40:00-05:00",
          "2025-11-02T02:00:00-05:00"]),
        ("*/20 * * * *", "America/New_York", "2025-11-02T01:10:00-05:00", ["2025-11-02T01:20:00-05:00"]),
        ("*/20 * * * *", "America/New_York", "2025-03-09T01:30:00-05:00",
         ["2025-03-09T01:40:00-05:00", "2025-03-09T03:00:00-04:00", "2025-03-09T03:20:00-04:00"]),
        # seconds (the sixth field) across both changes: a second of real time apart
        ("* * * * * *", "Europe/Berlin", "2025-03-30T01:59:58+01:00",
         ["2025-03-30T01:59:59+01:00", "2025-03-30T03:00:00+02:00", "2025-03-30T03:00:01+02:00"]),
        ("* * * * * *", "Europe/Berlin", "2025-10-26T02:59:58+02:00",
         ["2025-10-26T02:59:59+02:00", "2025-10-26T02:00:00+01:00", "2025-10-26T02:00:01+01:00"]),
        # every second of one o'clock: the repeated hour does not run again
        ("* 1 * * * *", "America/New_York", "2025-11-02T01:59:58-04:00",
         ["2025-11-02T01:59:59-04:00", "2025-11-03T01:00:00-05:00"]),
        ("* * * * * */2", "UTC", "2025-01-01T00:00:00.500+00:00",
         ["2025-01-01T00:00:02+00:00", "2025-01-01T00:00:04+00:00"]),
        # strictly after: a fire time itself gives the next one
        ("0 * * * *", "UTC", "2025-01-01T10:00:00+00:00", ["2025-01-01T11:00:00+00:00"]),
        ("@daily", "Europe/Berlin", "2025-01-01T10:00:00+01:00", ["2025-01-02T00:00:00+01:00"]),
        # rare: years ahead, crossing a DST change each half-year
        ("0 0 29 2 *", "Europe/Berlin", "2025-01-01T00:00:00+01:00",
         ["2028-02-29T00:00:00+01:00", "2032-02-29T00:00:00+01:00"]),
    ],
)
def test_next_fire(expr, zone, start, expected):
    assert fires(expr, zone, start, len(expected)) == expected


def test_next_fire_takes_tzinfo_objects():
    after = datetime(2025, 3, 29, 12, tzinfo=timezone.utc).timestamp()
    by_name = CronSchedule("30 2 * * *", "Europe/Berlin").next_fire(after)
    assert CronSchedule("30 2 * * *", ZoneInfo("Europe/Berlin")).next_fire(after) == by_name
    assert CronSchedule("30 2 * * *", timezone.utc).next_fire(after) == datetime(
        2025, 3, 30, 2, 30, tzinfo=timezone.utc).timestamp()
    plus2 = timezone(timedelta(hours=2))
    assert CronSchedule("30 2 * * *", plus2).next_fire(after) == datetime(2025, 3, 30, 2, 30, tzinfo=plus2).timestamp()


class _PytzLike(tzinfo):
    """A tzinfo with pytz's localize/normalize (pytz itself is not a test dependency)."""

    def utcoffset(self, dt):
        return timedelta(hours=1)

    def localize(self, dt):
        return dt.replace(tzinfo=self)

    def normalize(self, dt):
        return dt


def test_pytz_zones_are_refused():
    with pytest.raises(TypeError, match="^tz: pytz zones are not supported"):
        CronSchedule("0 12 * * *", _PytzLike())


def test_importing_gworker_does_not_import_croniter():
    code = "import sys, gworker; assert 'croniter' not in sys.modules, 'croniter imported'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr


def test_the_local_zone_is_the_default(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    assert CronSchedule("0 12 * * *").tz == ZoneInfo("America/New_York")
    w = BackgroundIntervalWorker(func=lambda **kw: None, cron="0 12 * * *")
    assert w.get_info()["tz"] == "America/New_York"
    monkeypatch.setenv("TZ", ":Europe/Berlin")
    assert local_zone() == ZoneInfo("Europe/Berlin")
    monkeypatch.delenv("TZ")
    system = zone_name(local_zone())
    monkeypatch.setenv("TZ", "EST+5EDT,M3.2.0,M11.1.0")  # a POSIX rule, not a name: the system's zone
    assert zone_name(local_zone()) == system


# -- runs on the wall clock ---------------------------------------------------------------------------

def test_a_per_second_worker_runs_on_whole_seconds(supervisor):
    # Several per-second workers watched for the same three seconds: plain,
    # precise, async, with delay_before, and ten with jitter. Each start is a
    # little after a whole second of the wall clock (a loaded 2-core machine:
    # at most 0.25 s), never before it.
    starts = {}

    def recorder(name):
        starts[name] = []
        return lambda **kw: starts[name].append(time.time())

    async def async_run(**kw):
        starts["async"].append(time.time())

    starts["async"] = []
    every_second = "* * * * * *"
    workers = {
        "plain": BackgroundIntervalWorker(func=recorder("plain"), cron=every_second, supervisor=supervisor),
        "precise": BackgroundIntervalWorker(func=recorder("precise"), cron=every_second, precise=True,
                                            supervisor=supervisor),
        "async": BackgroundIntervalWorker(func=async_run, cron=every_second, supervisor=supervisor),
        "delay_before": BackgroundIntervalWorker(func=recorder("delay_before"), cron=every_second,
                                                 delay_before=0.3, supervisor=supervisor),
    }
    for i in range(10):
        workers["jitter%d" % i] = BackgroundIntervalWorker(func=recorder("jitter%d" % i), cron=every_second,
                                                           jitter=0.3, supervisor=supervisor)
    started = time.time()
    for w in workers.values():
        w.start()
    gevent.sleep(3)  # the window the runs are counted in
    for w in workers.values():
        w.stop(wait=False)
    for w in workers.values():
        w.stop()

    def fraction(t):
        return t - math.floor(t)

    plain = starts["plain"]
    assert 2 <= len(plain) <= 4, "runs in 3 s: %s" % [round(t - started, 3) for t in plain]
    assert plain[0] >= math.ceil(started) - 0.0001, "the first run is at the first cron time after start()"
    assert len({math.floor(t) for t in plain}) == len(plain), "two runs in one second"
    for name in ("plain", "precise", "async"):
        assert starts[name] and max(fraction(t) for t in starts[name]) <= 0.25, (
            "%s: starts after the whole second: %s" % (name, [round(fraction(t), 4) for t in starts[name]]))
    assert starts["delay_before"]
    assert all(0.3 <= fraction(t) <= 0.55 for t in starts["delay_before"]), [
        round(fraction(t), 4) for t in starts["delay_before"]]
    jittered = [fraction(t) for i in range(10) for t in starts["jitter%d" % i]]
    assert len(jittered) >= 20
    assert max(jittered) <= 0.3 + 0.25, "a jittered run later than its jitter: %.3f" % max(jittered)
    assert max(jittered) - min(jittered) > 0.05, "jitter: the starts are all alike: %s" % jittered


@pytest.mark.blocks_hub
def test_a_blocked_hub_gives_one_late_run_or_a_skip_with_misfire_grace(supervisor, caplog):
    # The hub is held for more than two cron periods. The worker without
    # misfire_grace runs once at once (late), then on the next whole second:
    # never a burst of the runs it missed. The one with misfire_grace skips
    # the late run (no call), counts it and logs it, and runs on the next
    # whole second.
    caplog.set_level(logging.INFO, logger="gworker")
    late, graced = [], []
    w = BackgroundIntervalWorker(func=lambda **kw: late.append(time.time()), cron="* * * * * *",
                                 supervisor=supervisor)
    g = BackgroundIntervalWorker(func=lambda **kw: graced.append(time.time()), cron="* * * * * *",
                                 misfire_grace=0.5, name="graced", supervisor=supervisor)
    w.start()
    g.start()
    wait_until(lambda: late and graced, timeout=3)
    blocked = time.time()
    while time.time() < blocked + 2.2:  # the hub's thread is busy (not a gevent wait)
        pass
    unblocked = time.time()
    then = math.floor(unblocked) + 1  # the first cron time after the block
    wait_until(lambda: time.time() > then + 0.3 and [t for t in graced if t >= then], timeout=4)
    w.stop()
    g.stop()

    after = [t for t in late if t >= unblocked]
    shown = [round(t - unblocked, 3) for t in after]
    assert after and after[0] - unblocked < 0.2, "the late run did not come at once: %s" % shown
    assert len({math.floor(t) for t in after}) == len(after), "a burst after the block: %s" % shown
    # the next run: at the first whole second after the late one's start
    assert len(after) >= 2 and 0 <= after[1] - (math.floor(after[0]) + 1) <= 0.25, (
        "the run after the late one is not on time: %s" % shown)

    assert [t for t in graced if blocked <= t < then] == [], "misfire_grace: the late run was not skipped"
    assert g.get_info()["missed"] == 1 and w.get_info()["missed"] == 0
    assert g.get_info()["runs"] == len(graced)
    skips = [r for r in caplog.records if r.levelno == logging.INFO and "skipped" in r.getMessage()]
    assert len(skips) == 1 and "worker graced" in skips[0].getMessage(), [r.getMessage() for r in skips]
    assert "s late (misfire_grace=0.5 s)" in skips[0].getMessage()


@pytest.fixture
def wall(monkeypatch):
    """A wall clock for the cron workers that a test can step (``wall.step(s)``),
    and CRON_LOOK shortened to 0.1 s."""
    clock = types.SimpleNamespace(offset=0.0)
    clock.time = lambda: time.time() + clock.offset

    def step(seconds):
        clock.offset += seconds

    clock.step = step
    monkeypatch.setattr(interval_module, "time", types.SimpleNamespace(time=clock.time))
    monkeypatch.setattr(interval_module, "CRON_LOOK", 0.1)
    return clock


def test_a_wall_clock_step_forward_is_followed_within_a_look(supervisor, wall):
    runs = []
    w = BackgroundIntervalWorker(func=lambda **kw: runs.append(wall.time()), cron="0 * * * *", tz="UTC",
                                 supervisor=supervisor)
    w.start()
    hour = CronSchedule("0 * * * *", "UTC").next_fire(wall.time())
    assert w.get_info()["next_run"] == hour
    wall.step(hour - wall.time() - 0.3)  # 0.3 s before the hour: the heap waited in monotonic time
    wait_until(lambda: runs, timeout=2)
    assert hour <= runs[0] < hour + 0.25, "ran %.3f s after the hour" % (runs[0] - hour)
    # A machine suspended for five hours: the next look finds the run late,
    # and it runs once (not five times), then at the first hour after that.
    wall.step(5 * 3600)
    wait_until(lambda: len(runs) == 2, timeout=2)
    gevent.sleep(0.3)  # three looks: a window for a run to make up, which must not come
    w.stop()
    assert len(runs) == 2
    assert w.get_info()["missed"] == 0


def test_a_wall_clock_set_back(supervisor, wall):
    # An every-minute expression follows the clock back (no pause for as
    # long as the step); a daily one keeps its time (it does not run again).
    minutely = BackgroundIntervalWorker(func=lambda **kw: None, cron="* * * * *", tz="UTC", supervisor=supervisor)
    daily = BackgroundIntervalWorker(func=lambda **kw: None, cron="30 12 * * *", tz="UTC", supervisor=supervisor)
    minutely.start()
    daily.start()
    next_daily = daily.get_info()["next_run"]
    wall.step(-2 * 3600)
    wait_until(lambda: minutely.get_info()["next_run"] <= wall.time() + 60, timeout=2)
    gevent.sleep(0.3)  # three looks of the daily worker's
    assert daily.get_info()["next_run"] == next_daily
    minutely.stop()
    daily.stop()


# -- the worker around it -----------------------------------------------------------------------------

def test_a_trigger_runs_at_once_and_leaves_the_schedule(supervisor):
    runs = []
    w = BackgroundIntervalWorker(func=lambda **kw: runs.append(time.time()), cron="0 0 1 1 *",
                                 supervisor=supervisor)
    w.start()
    planned = w.get_info()["next_run"]
    assert planned > time.time() + 60, "the first run is at the first cron time, not at start()"
    w.trigger_threadsafe()
    wait_until(lambda: runs, timeout=2)
    wait_until(lambda: w.get_info()["next_run"] is not None)
    assert w.get_info()["next_run"] == planned
    w.stop()
    assert runs and len(runs) == 1


def test_get_info(supervisor):
    before = time.time()
    w = BackgroundIntervalWorker(func=lambda **kw: None, cron="0 12 * * *", tz="Europe/Berlin", jitter=5,
                                 misfire_grace=30, supervisor=supervisor)
    info = w.get_info()
    assert {k: info[k] for k in ("cron", "tz", "jitter", "misfire_grace", "missed", "next_run", "interval",
                                 "delay")} == {"cron": "0 12 * * *", "tz": "Europe/Berlin", "jitter": 5,
                                               "misfire_grace": 30, "missed": 0, "next_run": None,
                                               "interval": None, "delay": None}
    assert w.cron == "0 12 * * *" and w.tz == ZoneInfo("Europe/Berlin") and w.delay is None
    w.start()
    noon = CronSchedule("0 12 * * *", "Europe/Berlin").next_fire(before)
    assert noon <= w.get_info()["next_run"] < noon + 5
    w.stop()
    assert w.get_info()["next_run"] is None

    seen = []
    ran = Event()

    def run(_worker, **kw):
        seen.append(_worker.get_info()["next_run"])
        ran.set()

    p = BackgroundIntervalWorker(func=run, interval=10, supervisor=supervisor)
    info = p.get_info()
    assert {k: info[k] for k in ("cron", "tz", "jitter", "misfire_grace", "missed")} == {
        "cron": None, "tz": None, "jitter": None, "misfire_grace": None, "missed": 0}
    started = time.time()
    p.start()
    assert ran.wait(2)
    wait_until(lambda: p.get_info()["next_run"] is not None)
    assert seen == [None], "next_run while a run is in progress"
    # (a schedule of a second or more starts on the 50 ms grid)
    assert started + 10 - 0.001 <= p.get_info()["next_run"] <= time.time() + 10 + 0.06
    p.stop()
    assert p.get_info()["next_run"] is None


def test_start_stop_restart_leave_nothing_behind(supervisor):
    warm = Event()
    supervisor.put_task(lambda **kw: warm.set())  # (the runner greenlet a run is made by, made now)
    assert warm.wait(2)
    wait_until(lambda: supervisor.thread_pool.running == 0)
    before = greenlet_count()
    runs = []
    w = BackgroundIntervalWorker(func=lambda **kw: runs.append(1), cron="* * * * * *", supervisor=supervisor)
    far = BackgroundIntervalWorker(func=lambda **kw: runs.append(2), cron="0 0 1 1 *", supervisor=supervisor)
    for _ in range(20):
        w.start()
        far.start()
        assert len(supervisor.timers) == 2, "one timer entry each (the far one armed for a look)"
        gevent.sleep(0.002)
        w.stop()
        far.stop()
        assert w.is_stopped() and far.is_stopped()
        assert len(supervisor.timers) == 0
    assert w.restart() is True
    wait_until(lambda: runs, timeout=3)
    w.restart()
    wait_until(lambda: len(runs) >= 2, timeout=3)
    w.stop()
    assert len(supervisor.timers) == 0 and supervisor.get_schedulers() == {}
    wait_until(lambda: supervisor.thread_pool.running == 0)
    assert greenlet_count() - before == 0
    assert 2 not in runs


def test_overrides_switch_between_cron_and_interval(supervisor):
    runs = []
    w = BackgroundIntervalWorker(func=lambda **kw: runs.append(time.time()), cron="0 0 1 1 *",
                                 tz="Europe/Berlin", supervisor=supervisor)
    # _interval makes a cron worker an interval one (first run at start())
    w.start(_interval=10)
    wait_until(lambda: runs, timeout=2)
    w.stop()
    assert (w.cron, w.tz, w.interval, w.delay_after) == (None, None, 10, None)
    # _cron makes it a cron worker again, in the local zone (it had none)
    w.start(_cron="0 0 1 1 *")
    assert (w.cron, w.interval, w.delay_after) == ("0 0 1 1 *", None, None)
    assert w.get_info()["tz"] == zone_name(local_zone())
    assert w.get_info()["next_run"] > time.time() + 60
    w.stop()
    # _tz alone moves it to another zone; the expression stays
    t = time.time()
    w.start(_tz="America/New_York")
    assert w.cron == "0 0 1 1 *" and w.get_info()["tz"] == "America/New_York"
    assert w.get_info()["next_run"] == CronSchedule("0 0 1 1 *", "America/New_York").next_fire(t)
    w.stop()
    # _cron=None: no cron any more (neither interval nor delay: delay=1)
    w.start(_cron=None)
    w.stop()
    assert (w.cron, w.interval, w.delay) == (None, None, 1)


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        ({"cron": "* * * * *", "interval": 1}, ValueError, "^cron and interval can not be used together"),
        ({"cron": "* * * * *", "delay": 1}, ValueError, "^cron and delay can not be used together"),
        ({"cron": "* * * * *", "delay_after": 1}, ValueError, "^cron and delay can not be used together"),
        ({"cron": 5}, TypeError, "^cron must be a cron expression"),
        ({"cron": "* * *"}, ValueError, r"^cron: '\* \* \*' has 3 fields; a cron expression has five"),
        ({"cron": "* * * * * * *"}, ValueError, "^cron: .* has 7 fields"),
        ({"cron": ""}, ValueError, "^cron: '' has 0 fields"),
        ({"cron": "61 * * * *"}, ValueError,
         r"^cron: '61 \* \* \* \*' is not a valid cron expression: .*out of range"),
        ({"cron": "x * * * *"}, ValueError, r"^cron: 'x \* \* \* \*' is not a valid cron expression"),
        ({"cron": "*/0 * * * *"}, ValueError, "^cron: .* is not a valid cron expression: .*step"),
        ({"cron": "@reboot"}, ValueError, "^cron: '@reboot' is not a valid cron expression"),
        ({"cron": "0 0 31 2 *"}, ValueError, r"^cron: '0 0 31 2 \*' never matches"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus_Mons"}, ValueError, "^tz: no time zone named 'Mars/Olympus_Mons'"),
        ({"cron": "* * * * *", "tz": "/etc/localtime"}, ValueError, "^tz: '/etc/localtime' is not a time zone name"),
        ({"cron": "* * * * *", "tz": 2}, TypeError, "^tz must be a time zone name or a tzinfo"),
        ({"tz": "Europe/Berlin"}, ValueError, "^tz is the time zone of a cron schedule"),
        ({"tz": "Europe/Berlin", "interval": 1}, ValueError, "^tz is the time zone of a cron schedule"),
        ({"jitter": -1}, ValueError, "^jitter must not be negative"),
        ({"jitter": "1"}, TypeError, "^jitter must be a number"),
        ({"interval": 1, "jitter": 1}, ValueError, r"^jitter \(1 s\) must be shorter than interval \(1 s\)"),
        ({"misfire_grace": -1}, ValueError, "^misfire_grace must not be negative"),
        ({"misfire_grace": 0}, ValueError, "^misfire_grace must be more than 0"),
        ({"misfire_grace": "soon"}, TypeError, "^misfire_grace must be a number"),
    ],
)
def test_bad_parameters_raise_at_construction(supervisor, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        BackgroundIntervalWorker(func=lambda **kw: None, supervisor=supervisor, **kwargs)


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        ({"_cron": "* * * * *", "_interval": 1}, ValueError, "^_cron and _interval can not be used together"),
        ({"_cron": "* * * * *", "_delay": 1}, ValueError, "^_cron and _delay can not be used together"),
        ({"_cron": "* *"}, ValueError, "^_cron: '\\* \\*' has 2 fields"),
        ({"_cron": "* * * * *", "_tz": "Nowhere/Else"}, ValueError, "^_tz: no time zone named"),
        ({"_tz": "Europe/Berlin"}, ValueError, "^_tz is the time zone of a cron schedule"),
        ({"_jitter": 10}, ValueError, r"^_jitter \(10 s\) must be shorter than interval \(10 s\)"),
        ({"_interval": 0.5}, ValueError, r"^jitter \(1 s\) must be shorter than _interval \(0.5 s\)"),
        ({"_jitter": -1}, ValueError, "^_jitter must not be negative"),
        ({"_misfire_grace": 0}, ValueError, "^_misfire_grace must be more than 0"),
    ],
)
def test_bad_overrides_raise_at_start_and_change_nothing(supervisor, kwargs, exc, pattern):
    w = BackgroundIntervalWorker(func=lambda **kw: None, interval=10, jitter=1, supervisor=supervisor)
    with pytest.raises(exc, match=pattern):
        w.start(**kwargs)
    assert not w.is_active()
    assert (w.interval, w.delay_after, w.cron, w.tz, w.jitter, w.misfire_grace) == (10, None, None, None, 1, None)


def test_bad_cron_overrides_change_nothing(supervisor):
    w = BackgroundIntervalWorker(func=lambda **kw: None, cron="0 12 * * *", tz="UTC", supervisor=supervisor)
    for kwargs in ({"_cron": "0 12 * * *", "_interval": 1}, {"_tz": "Nowhere/Else"}, {"_cron": "nope"}):
        with pytest.raises(ValueError):
            w.start(**kwargs)
    assert (w.cron, w.tz, w.interval, w.delay_after) == ("0 12 * * *", ZoneInfo("UTC"), None, None)
    with pytest.raises(ValueError, match="^delay: worker .* runs on a cron schedule"):
        w.delay = 5


def test_the_decorator_makes_cron_workers(supervisor):
    @gworker.background_worker(cron="*/5 * * * *", tz="Europe/Berlin", supervisor=supervisor)
    def tick(**kw):
        pass

    assert type(tick) is BackgroundIntervalWorker and tick.name == "tick"
    assert tick.cron == "*/5 * * * *" and tick.get_info()["tz"] == "Europe/Berlin"

    @gworker.background_worker(jitter=0.5, supervisor=supervisor)
    def spread(**kw):
        pass

    assert type(spread) is BackgroundIntervalWorker and spread.jitter == 0.5 and spread.delay == 1
    with pytest.raises(ValueError, match="^cron and interval can not be used together"):
        gworker.background_worker(cron="* * * * *", i=1, supervisor=supervisor)(lambda **kw: None)
    with pytest.raises(ValueError, match="^tz is the time zone of a cron schedule"):
        gworker.background_worker(tz="UTC", supervisor=supervisor)(lambda **kw: None)


def test_a_subclass_may_keep_a_tz_of_its_own(supervisor):
    # atasker code: an interval worker that keeps the zone of its reports
    class Report(BackgroundIntervalWorker):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.tz = "Europe/Paris"  # its own, not gworker's
            self.cron = "not a cron expression"

        def run(self, **kwargs):
            self.ran.set()

    w = Report(interval=5, supervisor=supervisor)
    w.ran = Event()
    w.start()
    assert w.ran.wait(5)
    info = w.get_info()
    w.stop()
    assert (info["cron"], info["tz"], info["interval"]) == (None, None, 5)
    assert (w.tz, w.cron) == ("Europe/Paris", "not a cron expression")
