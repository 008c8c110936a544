"""Cron schedules: when the next run of a cron expression is, in a time zone.

A :class:`CronSchedule` is a cron expression read by ``croniter`` — five
fields (minute, hour, day of month, month, day of week), or six with seconds
as the *sixth* field (``"* * * * * */2"``: every two seconds), or one of
croniter's ``@hourly``/``@daily``/... shorthands — and the time zone whose
clock it reads (any IANA name through :mod:`zoneinfo`, or a ``tzinfo``;
default: the local zone). Its one question, :meth:`CronSchedule.next_fire`,
is a pure function of an instant: *the first time after it at which the
schedule fires*, as a ``time.time()`` value. Nothing here reads a clock or
keeps state between calls, so the daylight-saving rules below are tested
without a clock, and an interval worker with ``cron=`` only asks it (see
:mod:`gworker.workers.interval`).

What a wall-clock time means is the zone's business, and twice a year it is
not one instant:

* a wall time that does **not exist** (the hour skipped when clocks spring
  forward, e.g. 02:30 in Europe/Berlin on the last Sunday of March) is
  **skipped** that day — not moved to 03:00, as croniter's own time-zone
  handling would; the schedule goes on with its next time;
* a wall time that happens **twice** (the hour repeated when clocks fall
  back) **runs once**, at its first occurrence. An expression whose hour
  field is ``*`` (it runs every hour: ``*/5 * * * *``, ``@hourly``) is the
  exception: it follows the clock through the repeated hour too, as cron
  itself does for such jobs, since that hour is a real hour for a job that
  runs every hour (an every-five-minutes job would otherwise pause for an
  hour each autumn).

How: croniter iterates *wall* times, as naive readings of the clock, with
no zone at all; each is mapped to an instant with the zone's UTC offset. The
walk goes from offset to offset: from an instant, with the offset in force
there, the first matching wall time is an instant again; if the offset
changes before that instant, the walk starts over at the change. Offset
changes are found by comparing the offset at both ends, and by looking at
every day in between when the ends are more than a day apart (a pair of
changes less than a day apart, which no zone has in practice, could be
missed).

croniter is imported with the first schedule, not with gworker (it takes
tens of milliseconds to import).

A schedule is not thread-safe (its croniter iterator is reused from call to
call); gworker only calls it in the hub.
"""
from __future__ import annotations

import math
import os
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING, Any, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from croniter import croniter

__all__ = ["CronSchedule", "check_tz", "local_zone", "zone_name"]

_DAY = 86400.0
#: How many offset changes one ``next_fire`` may cross before it gives up
#: (each change costs a step; a schedule that fires once a year crosses two).
_MAX_STEPS = 1000


class CronSchedule:
    """A cron expression in a time zone (see the module docstring).

    ``expr``: five fields, or six with seconds as the sixth, or an ``@``
    shorthand; ``tz``: an IANA name, a ``tzinfo``, or None for the local zone
    (:func:`local_zone`). A bad expression raises ``ValueError`` with the
    expression and what is wrong with it (one that can never fire, such as
    ``0 0 31 2 *``, too); a bad zone raises naming ``tz``. ``parameter`` and
    ``tz_parameter`` are the names used in those messages.
    """

    __slots__ = ("expr", "tz", "every_hour", "_iter")

    def __init__(self, expr: Any, tz: Any = None, parameter: str = "cron", tz_parameter: str = "tz") -> None:
        if not isinstance(expr, str):
            raise TypeError("%s must be a cron expression (a string); got %r" % (parameter, expr))
        fields = expr.split()
        if not (len(fields) == 1 and fields[0].startswith("@")) and len(fields) not in (5, 6):
            raise ValueError(
                "%s: %r has %d fields; a cron expression has five (minute hour day month weekday),"
                " or six with seconds as the sixth" % (parameter, expr, len(fields)))
        # (imported here: croniter takes tens of milliseconds to import, and
        # importing gworker must not cost that to a program without cron workers)
        from croniter import CroniterBadDateError, CroniterError, croniter

        try:
            it = croniter(expr, 0.0)
        except (CroniterError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise ValueError("%s: %r is not a valid cron expression: %s" % (parameter, expr, exc)) from None
        #: the expression, as given
        self.expr = expr
        #: the zone whose clock the expression reads
        self.tz: tzinfo = check_tz(tz, tz_parameter)
        #: the hour field is ``*``: the repeated hour of a fall-back runs too
        self.every_hour = it.expanded[1] == ["*"]
        self._iter: croniter = it
        try:
            self._next_wall(0.0)
        except CroniterBadDateError:
            raise ValueError("%s: %r never matches a date" % (parameter, expr)) from None

    def __repr__(self) -> str:
        return "CronSchedule(%r, tz=%r)" % (self.expr, zone_name(self.tz))

    def next_fire(self, after: float) -> float:
        """The first instant (``time.time()`` seconds) later than ``after`` at
        which the schedule fires, following the zone's offset changes as the
        module docstring says."""
        tz = self.tz
        start, inclusive = after, False
        for _ in range(_MAX_STEPS):
            offset = _offset(start, tz)
            # (wall times are counted in seconds, as if the clock read UTC)
            wall = self._next_wall(start + offset - (0.001 if inclusive else 0.0))
            fire = wall - offset
            change = _offset_change(start, fire, offset, tz)
            if change is not None:
                start, inclusive = change, True  # a new offset from there: walk on with it
                continue
            if not self.every_hour:
                local = datetime.fromtimestamp(fire, tz)
                if local.fold:
                    # The second occurrence of a repeated wall time: it ran at
                    # the first. Walk on from the end of the repeated stretch.
                    first = local.replace(fold=0).utcoffset()
                    shift = first.total_seconds() - offset if first is not None else 0.0
                    if shift > 0:
                        back = _offset_change(fire - shift, fire, offset + shift, tz)
                        if back is not None:
                            start, inclusive = back + shift, True
                            continue
            return fire
        raise ValueError("cron: %r: no time found after %r (%d offset changes crossed)"
                         % (self.expr, after, _MAX_STEPS))

    def _next_wall(self, wall: float) -> float:
        # croniter with a float start reads it as UTC: no zone, no DST
        it = self._iter
        it.set_current(wall, force=True)
        return it.get_next(float)


def _offset(t: float, tz: tzinfo) -> float:
    """The zone's UTC offset (seconds) at instant ``t``."""
    offset = datetime.fromtimestamp(t, tz).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


def _offset_change(a: float, b: float, offset: float, tz: tzinfo) -> Optional[float]:
    """The first instant in ``(a, b]`` whose offset is not ``offset`` (the
    offset at ``a``), in whole seconds; None if there is none. Looks at every
    day in between, then bisects the day of the change."""
    lo = a
    x = a + _DAY
    while x < b:
        if _offset(x, tz) != offset:
            return _bisect(lo, x, offset, tz)
        lo = x
        x += _DAY
    if b > a and _offset(b, tz) != offset:
        return _bisect(lo, b, offset, tz)
    return None


def _bisect(lo: float, hi: float, offset: float, tz: tzinfo) -> float:
    # offset at lo is ``offset``, at hi it is not; offsets change at whole seconds
    lo_s, hi_s = math.floor(lo), math.ceil(hi)
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if _offset(mid, tz) == offset:
            lo_s = mid
        else:
            hi_s = mid
    return float(hi_s)


def check_tz(tz: Any, parameter: str = "tz") -> tzinfo:
    """The ``tzinfo`` for a ``tz`` parameter: an IANA name (through
    :mod:`zoneinfo`), a ``tzinfo`` as is, None for :func:`local_zone`. An
    unknown name raises ``ValueError``, anything else ``TypeError``, each
    naming ``parameter``. pytz zones are refused: they give wrong offsets
    unless used through their own ``localize``; give the name instead."""
    if tz is None:
        return local_zone()
    if isinstance(tz, str):
        try:
            return ZoneInfo(tz)
        except ZoneInfoNotFoundError:
            raise ValueError("%s: no time zone named %r" % (parameter, tz)) from None
        except ValueError as exc:
            raise ValueError("%s: %r is not a time zone name (%s)" % (parameter, tz, exc)) from None
    if isinstance(tz, tzinfo):
        if hasattr(tz, "localize") and hasattr(tz, "normalize"):
            raise TypeError("%s: pytz zones are not supported (their offsets are right only through"
                            " localize()); give the zone's name, e.g. %r" % (parameter, str(tz)))
        return tz
    raise TypeError("%s must be a time zone name or a tzinfo; got %r" % (parameter, tz))


def local_zone() -> tzinfo:
    """The local time zone, with its daylight-saving rules: the zone ``TZ``
    names if it names one, else ``/etc/localtime``, else UTC."""
    name = os.environ.get("TZ")
    if name:
        name = name[1:] if name.startswith(":") else name
        try:
            if os.path.isabs(name):
                with open(name, "rb") as f:
                    return ZoneInfo.from_file(f, key=name)
            return ZoneInfo(name)
        except (OSError, ValueError):  # (ZoneInfoNotFoundError is a KeyError: below)
            pass
        except ZoneInfoNotFoundError:
            pass  # a POSIX rule string, not a zone's name: the system's zone instead
    try:
        link = os.readlink("/etc/localtime")
    except OSError:
        link = ""
    marker = "zoneinfo/"
    if marker in link:
        try:
            return ZoneInfo(link.split(marker, 1)[1])
        except (ValueError, ZoneInfoNotFoundError):
            pass
    try:
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return timezone.utc


def zone_name(tz: Optional[tzinfo]) -> Optional[str]:
    """A zone's name for ``get_info()``: its IANA key, else its ``str()``."""
    if tz is None:
        return None
    key = getattr(tz, "key", None)
    return key if isinstance(key, str) else str(tz)
