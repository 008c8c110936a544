"""Once per cluster: interval and cron workers that run once per scheduled time
across every process that has them (:class:`RedisSingleton`).

Under ``gunicorn -w 4`` on three machines an ``interval=60`` worker runs
twelve times a minute: each server process has its own supervisor and its own
workers. Given ``singleton=RedisSingleton(url=...)``, it runs once a minute,
in whichever process claims the minute first::

    @background_worker(interval=60, singleton=RedisSingleton(url="redis://redis:6379/0"))
    def report(_fence, **kwargs):
        ...

The mechanism: a claim per scheduled time
------------------------------------------
There is no leader. Every process computes the same scheduled times from its
wall clock, without talking to the others: a singleton interval worker's times
are the multiples of its interval since the epoch (``k × interval`` of
``time.time()``; the first run is at the first of them after ``start()``), and
a cron worker's are its expression's, which are wall-clock times already. At
each time, a process *claims* the time before it runs it — one Lua script,
atomic in Redis::

    SET <namespace>:<key>:<slot> <holder> NX PX <ttl_ms>     (the claim)
    SET <namespace>:<key>:last "<slot> <holder>"              (the record, by the winner)

``slot`` is the scheduled time in integer milliseconds, ``holder``
``<host>:<pid>:<random>``. The process that gets the claim runs; the others
skip the time (``ran_elsewhere`` in ``get_info()``; not a missed run). The
script also refuses a claim of a time at or before the one recorded last, so
that a claim arriving after the claim key expired (a process whose hub was
blocked, or whose clock is behind by more than ``ttl``) cannot run a time
again; and ``last`` is what ``get_info()`` shows as the last run anywhere in
the cluster (read with the claim, in the same round trip).

Why this rather than a leader holding a renewed lease: there is nothing to
fail over. A process that dies simply claims nothing, and the next time is
claimed by a live one — no lease to expire, no schedule to hand over, no
renewal traffic between runs; the cost is one command per worker per run, and
``ttl`` only bounds how long the claim key of a time stays in Redis.

Guarantees:

* **at most one run per scheduled time** across the cluster, by construction
  (the claim is atomic; a time already recorded is refused);
* **exactly one** while Redis and at least one process are healthy;
* **failover is immediate**: the process that ran the last time is killed →
  another runs the next time, at its time;
* **the fencing token**: the executor of a singleton worker receives
  ``_fence=<slot>``, an int that grows from one scheduled time to the next
  (the time in milliseconds), so that an executor that writes somewhere can
  reject a write from a stale holder (a run still going on after a later one
  began). A plain worker's executor does not receive it. A run asked for by
  ``trigger()`` is a local extra run, outside the cluster's schedule: it is
  not claimed, and its ``_fence`` is None.

Failure behaviour:

* **Redis down** (or unreachable from the start): no claim can succeed, so
  the worker does not run — it cannot know whether another process does. The
  failure is logged at WARNING on the ``gworker`` logger (the first of a run
  of them, then once per 30 s, with a count), counted in ``claims_failed``,
  and the worker tries again at its next scheduled time: one attempt per time,
  never a spin. Construction does not connect; ``start()`` connects in the
  background (it does not wait for it), so an unreachable server is logged
  at ``start()``, and the worker does not run until Redis answers.
* **A run in progress is not killed** when Redis goes away (or when another
  process claims the next time): a claim decides who *starts* a run. So runs
  are not serialised across processes: a run longer than the interval does
  not keep another process from running the next time (within a process a
  worker never overlaps itself). Keep runs shorter than the interval, or
  check ``_fence`` where they write.
* **Redis restarted**: claims resume at the next scheduled time. A process
  only ever claims its current time, never the times it missed, so there is
  no burst. With AOF (or RDB) persistence the records survive; without it,
  the first claim after the restart starts the record again.
* **A network partition**: a process cut off from Redis claims nothing and so
  starts nothing from its next time on (the run it is in finishes).
* **Clock skew**: a process whose clock is δ ahead of the others claims each
  time up to δ early (and wins it, typically). With δ well below the interval
  there is still one run per time; a skew comparable to the interval can give
  two runs less than an interval apart (of two different times — never two
  runs of the same time). Keep the machines' clocks in sync (NTP), as for
  cron.

Cost: the claims of a process's singleton workers that fall due together (one
turn of the hub) go to Redis in **one pipelined round trip**, made by one
greenlet for every worker on the same URL; each answer comes back as a hub
callback that makes the worker's run due (or moves it to its next time). No
greenlet waits per worker, and no round trip is made per worker. Workers of
one interval fall due together (the grid is shared), so two hundred singleton
workers at ``interval=1`` cost one round trip per second per process, not two
hundred. A run is late by the round trip (a fraction of a millisecond on a
LAN): it starts once its claim is answered.

Connections use redis-py on gevent's socket
(:class:`~gworker.redis.GeventConnection`): every wait goes through the hub,
monkey-patched or not. One connection per process, per OS thread whose hub
runs such workers, per URL; made again after a fork, and closed when the last
singleton worker using it stops.

Needs redis-py: ``pip install 'gworker[redis]'``.
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import socket as _socket
import time
import uuid
from time import monotonic
from typing import Any, Callable, Dict, List, Optional, Tuple

import gevent
from gevent.event import Event
from gevent.hub import get_hub

from .._errors import FailureLog, describe
from .._hubsafe import os_thread_ident, yield_to_hub
from .streams import CONNECTION_ERRORS, GeventConnection

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["RedisSingleton"]

logger = logging.getLogger("gworker")

#: The claim, atomic in Redis. KEYS: the time's claim key, the record of the
#: last run. ARGV: holder, slot (ms), ttl (ms). Returns {won, record of the
#: last run or false}.
CLAIM_SCRIPT = """
local last = redis.call('GET', KEYS[2])
local slot = tonumber(ARGV[2])
if last then
  local done = tonumber(string.match(last, '^(%d+)'))
  if done and done >= slot then
    return {0, last}
  end
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then
  local record = ARGV[2] .. ' ' .. ARGV[1]
  redis.call('SET', KEYS[2], record)
  return {1, record}
end
return {0, last or false}
"""

#: The lease, renewed or taken, atomic in Redis (a lease holder's renewal
#: and every other process's attempt are the same call). KEYS: the lease, the
#: fencing counter, the record of the last run, the trigger counter, the
#: triggers served. ARGV: holder, ttl (ms), the triggers the holder has served
#: ('' if it has none to report). Returns {status, value, record of the last
#: run or false, triggers, served}: status 1 renewed (value: the lease's
#: token), 2 taken (value: a new token), 0 held by another (value: its PTTL).
LEASE_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
local status, value
if cur then
  local sp = string.find(cur, ' ', 1, true)
  if sp and string.sub(cur, 1, sp - 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    status, value = 1, tonumber(string.sub(cur, sp + 1))
    if ARGV[3] ~= '' then
      redis.call('SET', KEYS[5], ARGV[3])
    end
  else
    status, value = 0, redis.call('PTTL', KEYS[1])
  end
else
  value = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. value, 'PX', ARGV[2])
  status = 2
end
return {status, value, redis.call('GET', KEYS[3]) or false, tonumber(redis.call('GET', KEYS[4]) or '0'),
        tonumber(redis.call('GET', KEYS[5]) or '0')}
"""

#: A lease holder's record of a run (its end), refused unless the lease is
#: still the holder's, with that token. KEYS: the lease, the record.
#: ARGV: holder, token, the record. Returns 1 if written, else 0.
RECORD_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] .. ' ' .. ARGV[2] then
  redis.call('SET', KEYS[2], ARGV[3])
  return 1
end
return 0
"""

#: A lease given up (its worker stopped): deleted if it is still the
#: holder's. KEYS: the lease, the triggers served. ARGV: holder, served ('' for none).
RELEASE_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ' ' then
  if ARGV[2] ~= '' then
    redis.call('SET', KEYS[2], ARGV[2])
  end
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

#: A trigger, from any process: counted, and published to the holder.
#: KEYS: the trigger counter. ARGV: the channel, '1' for force else '0'.
#: Returns the trigger's number.
TRIGGER_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], n .. ' ' .. ARGV[2])
return n
"""

#: A lease is renewed (or tried for) this many times per ``ttl``.
RENEWALS_PER_TTL = 3

#: The part of ``ttl`` after a renewal's send during which the holder may
#: start runs: Redis keeps the lease at least ``ttl`` from when it renewed it,
#: which is later than the send; the rest covers the two clocks' rates.
HELD_FOR = 0.99

#: A batch is packed, read and answered this many calls at a time, with a
#: yield between: the hub is never held for long by a batch of hundreds.
CHUNK = 32

#: How long after the holder's lease expires (seconds) another process tries
#: for it: Redis expires a key at its millisecond.
EXPIRY_MARGIN = 0.002

#: The listener's look for a change of what it listens to (seconds).
LISTEN_LOOK = 1.0

#: How long (seconds) the connection waits to connect, and for a reply,
#: unless ``redis_kwargs`` says otherwise: a claim that takes longer fails
#: (the worker does not run that time).
CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 5.0

_holder: Optional[Tuple[int, str]] = None
_holder_numbers = itertools.count(1)


def holder_id() -> str:
    """This process's name in Redis: ``<host>:<pid>:<random>`` (made again
    in a forked child). Each connection of the process (a URL, or other
    ``redis_kwargs``) is a holder of its own: this name, then ``/`` and its
    number."""
    global _holder
    pid = os.getpid()
    if _holder is None or _holder[0] != pid:
        _holder = (pid, "%s:%d:%s" % (_socket.gethostname(), pid, uuid.uuid4().hex[:8]))
    return _holder[1]


class RedisSingleton:
    """Runs an interval or cron worker once per scheduled time across a
    cluster (see the module docstring): ``singleton=RedisSingleton(...)``.

    - ``url``: a redis-py URL (``redis://host:port/db``; in an un-patched
      process only TCP ``redis://`` URLs wait through the hub).
    - ``key``: the name of the job in Redis (under ``namespace``). None (the
      default): each worker's own name — so one ``RedisSingleton`` may serve
      many workers, each claiming its own times. A ``key`` given serves one
      worker per process: the processes' workers of that key are one job.
    - ``ttl``: how long (seconds, > 0) the claim key of a time lives in Redis
      (the record of the last run stays).
    - ``namespace``: the prefix of every key.
    - ``redis_kwargs``: more keywords for redis-py's ``ConnectionPool.from_url``.

    Objects with the same ``url`` and ``redis_kwargs`` share one connection
    and one round trip per batch of claims (per process and hub).
    """

    def __init__(self, url: str = "redis://localhost:6379/0", key: Optional[str] = None, ttl: float = 10.0,
                 namespace: str = "gworker:singleton", redis_kwargs: Optional[Dict[str, Any]] = None) -> None:
        if not isinstance(url, str) or not url:
            raise TypeError("url must be a non-empty string; got %r" % (url,))
        try:
            redis.connection.parse_url(url)
        except ValueError as exc:
            raise ValueError("url: %s; got %r" % (exc, url)) from None
        if key is not None and (not isinstance(key, str) or not key):
            raise TypeError("key must be a non-empty string or None; got %r" % (key,))
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            raise TypeError("ttl must be a number of seconds; got %r" % (ttl,))
        if not ttl > 0 or math.isinf(ttl):
            raise ValueError("ttl must be a positive number of seconds; got %r" % (ttl,))
        if not isinstance(namespace, str) or not namespace:
            raise TypeError("namespace must be a non-empty string; got %r" % (namespace,))
        if redis_kwargs is not None and not isinstance(redis_kwargs, dict):
            raise TypeError("redis_kwargs must be a dict; got %r" % (redis_kwargs,))
        self.url = url
        self.key = key
        self.ttl = float(ttl)
        self.namespace = namespace
        self._redis_kwargs = dict(redis_kwargs or {})
        self._ttl_ms = max(1, int(round(self.ttl * 1000)))
        self._bound: Optional[str] = None  # the worker a given key serves

    def bind(self, worker: Any, lease: bool = False, continuous: bool = False) -> Any:
        """The state of ``worker`` as a singleton (made at its construction):
        its key, the figures ``get_info()`` shows — a claim per scheduled
        time (an interval or cron worker), or with ``lease`` a lease (a
        delay, event or, ``continuous``, a continuous worker). A ``key``
        given serves one worker per process (ValueError for a second)."""
        if self.key is not None:
            if self._bound is not None and self._bound != worker.name:
                raise ValueError("singleton: RedisSingleton(key=%r) serves worker %s already; a key names one job"
                                 " (give each worker its own RedisSingleton, or key=None)" % (self.key, self._bound))
            self._bound = worker.name
        key = self.key if self.key is not None else worker.name
        if lease:
            return LeaseMember(self, key, continuous)
        return SingletonMember(self, key)

    def _claims(self) -> "_Claims":
        """The coordinator of this process and hub for this URL."""
        place = (os.getpid(), os_thread_ident(), self.url, repr(sorted(self._redis_kwargs.items())))
        claims = _coordinators.get(place)
        if claims is None:
            if len(_coordinators) and any(p[0] != place[0] for p in _coordinators):
                _coordinators.clear()  # a forked child: the parent's are not ours
            claims = _coordinators[place] = _Claims(self.url, self._redis_kwargs)
        return claims

    def __repr__(self) -> str:
        return "RedisSingleton(url=%r, key=%r, ttl=%r, namespace=%r)" % (self.url, self.key, self.ttl,
                                                                         self.namespace)


class SingletonMember:
    """One worker's side of a :class:`RedisSingleton`: its keys, and what its
    claims found (kept over every start)."""

    __slots__ = ("singleton", "key", "prefix", "holds", "last_slot", "last_holder", "ran_elsewhere",
                 "claims_failed", "_claims")

    def __init__(self, singleton: RedisSingleton, key: str) -> None:
        self.singleton = singleton
        self.key = key
        self.prefix = "%s:%s" % (singleton.namespace, key)
        #: this process won the last scheduled time it claimed
        self.holds = False
        #: the last run anywhere in the cluster (slot ms, holder), as the last claim read it
        self.last_slot: Optional[int] = None
        self.last_holder: Optional[str] = None
        self.ran_elsewhere = 0
        self.claims_failed = 0
        self._claims: Optional[_Claims] = None

    #: its worker's triggers stay local (a triggered run is not claimed)
    forwards = False

    def attach(self, worker: Any = None) -> None:
        """A start of the worker begins: it uses this process's connection
        (connected now, in the background, if it is not yet)."""
        claims = self._claims = self.singleton._claims()
        claims.users += 1
        claims.warm()

    def detach(self) -> None:
        """The start has ended: the connection closes with its last user."""
        claims, self._claims = self._claims, None
        if claims is not None:
            claims.users -= 1
            if claims.users <= 0:
                claims.close()

    def claim(self, fire: float, then: Callable[[Any, Optional[int]], Any], arg: Any) -> None:
        """Claim the scheduled time ``fire`` (wall clock); nothing waits: the
        claim goes with the others of this turn of the hub, and the answer
        comes as a hub callback, ``then(arg, fence)`` — ``fence`` the time's
        slot (the fencing token) if this process won it, else None (it ran
        elsewhere, or the claim failed)."""
        slot = int(round(fire * 1000))
        claims = self._claims
        if claims is None:
            claims = self.singleton._claims()
        claims.claim(self.prefix, slot, self.singleton._ttl_ms, self._answer, (then, arg, slot))

    def _answer(self, context: Tuple[Callable[[Any, Optional[int]], Any], Any, int],
                answer: Optional[Tuple[int, Any]]) -> None:
        then, arg, slot = context
        then(arg, self._fence(slot, answer))

    def _fence(self, slot: int, answer: Optional[Tuple[int, Any]]) -> Optional[int]:
        """Take the answer to the claim of ``slot`` into the figures; the
        fence if it was won, else None."""
        if answer is None:
            self.claims_failed += 1
            self.holds = False
            return None
        won, record = answer
        if record is not None:
            text = record.decode() if isinstance(record, bytes) else str(record)
            done, _, who = text.partition(" ")
            try:
                self.last_slot, self.last_holder = int(done), who
            except ValueError:
                pass
        self.holds = bool(won)
        if not won:
            self.ran_elsewhere += 1
            return None
        return slot

    def info(self) -> Dict[str, Any]:
        """What ``get_info()`` shows under ``singleton``."""
        last = self.last_slot
        return {
            "key": self.key,
            "mode": "claim",
            "holds": self.holds,
            "last_run": None if last is None else last / 1000.0,
            "last_holder": self.last_holder,
            "ran_elsewhere": self.ran_elsewhere,
            "claims_failed": self.claims_failed,
            "round_trips": _round_trips(self._claims),
        }


class LeaseMember:
    """One worker's side of a :class:`RedisSingleton` as a *lease* — a
    delay, event or continuous worker (see the module docstring): whether
    this process holds the lease and until when, its fencing token, what the
    renewals found (kept over every start)."""

    __slots__ = ("singleton", "key", "prefix", "keys", "channel", "continuous", "holds", "token", "held_until",
                 "last_end", "last_holder", "acquired", "lost", "renewals_failed", "triggers_failed", "seen",
                 "served", "served_sent", "starts", "next_at", "in_flight", "record", "recording", "worker", "_claims", "_held",
                 "period", "exact")

    #: its worker's triggers go to the cluster (to whichever process holds the lease)
    forwards = True

    def __init__(self, singleton: "RedisSingleton", key: str, continuous: bool) -> None:
        self.singleton = singleton
        self.key = key
        self.prefix = prefix = "%s:%s" % (singleton.namespace, key)
        #: the lease, the fencing counter, the record of the last run, the
        #: trigger counter, the triggers served
        self.keys = (prefix + ":lease", prefix + ":fence", prefix + ":last", prefix + ":triggers",
                     prefix + ":served")
        self.channel = prefix + ":trigger"
        #: a continuous worker's records of its runs go with the renewals
        #: (one per renewal period), a delay or event worker's at once
        self.continuous = continuous
        self.holds = False
        #: the lease's fencing token while held (it grows with each new holder)
        self.token: Optional[int] = None
        #: until when (monotonic) this process may start runs: the send of the
        #: last successful renewal plus ``ttl`` (Redis keeps the lease at
        #: least that long)
        self.held_until = 0.0
        self.last_end: Optional[float] = None
        self.last_holder: Optional[str] = None
        self.acquired = 0
        self.lost = 0
        self.renewals_failed = 0
        self.triggers_failed = 0
        #: the highest trigger number handled (run, or coalesced into a run)
        self.seen = 0
        #: the highest trigger number whose run has begun, and the highest told to Redis
        self.served = 0
        self.served_sent = 0
        #: when (monotonic) the next renewal (or attempt) is due, and whether one is out
        self.next_at = 0.0
        self.in_flight = False
        #: next_at is when the holder's lease expires: not sent earlier
        self.exact = False
        #: a record of a run not yet sent, and whether one is out
        self.record: Optional[str] = None
        self.recording = False
        self.worker: Any = None
        #: the worker's starts that have not ended (two, briefly, for a
        #: start made from inside the last one's executor)
        self.starts = 0
        self._claims: Optional[_Claims] = None
        self._held = Event()
        self.period = singleton.ttl / RENEWALS_PER_TTL

    # -- the worker's side ----------------------------------------------------------------------------
    def attach(self, worker: Any) -> None:
        """A start of ``worker`` begins: it takes part in the lease (renewed,
        or tried for, with the others of this process, from now on)."""
        self.worker = worker
        self.starts += 1
        if self.starts > 1:
            return  # (a start made from inside the last one's executor: the lease goes on)
        claims = self._claims = self.singleton._claims()
        claims.users += 1
        claims.add_lease(self)

    def detach(self) -> None:
        """A start has ended: with the last one, the lease is given up
        (deleted in Redis if this process held it, so another takes it at
        its next attempt)."""
        self.starts -= 1
        if self.starts > 0:
            return
        claims, self._claims = self._claims, None
        self.worker = None
        if claims is not None:
            claims.remove_lease(self)
            claims.users -= 1
            if claims.users <= 0:
                claims.close()
        self.holds = False
        self.token = None
        self.held_until = 0.0

    def valid(self) -> bool:
        """True while this process holds the lease and may start a run."""
        return self.holds and monotonic() < self.held_until

    def hold(self, run: Any) -> Optional[int]:
        """Wait (parked: ``stop()`` interrupts it) until this process holds
        the lease; its token (None if the run stopped meanwhile)."""
        while run.active and not self.valid():
            self._held.clear()
            run.park(self._held.wait, self.period)
        return self.token if run.active else None

    def ran(self) -> None:
        """A run has ended: recorded in Redis as the last run (a delay worker's
        next run anywhere is ``delay`` after it)."""
        now = time.time()
        self.last_end, self.last_holder = now, self._claims.holder if self._claims is not None else holder_id()
        self.record = "%d %s" % (int(now * 1000), self.last_holder)
        if not self.continuous:
            self.send_record()

    def started(self) -> None:
        """An event run begins: it serves every trigger seen so far (told
        to Redis with the next renewal)."""
        self.served = self.seen

    def due(self, delay_after: float, delay_before: float) -> float:
        """When (wall clock) a delay worker's next run is due: ``delay_after``
        after the last run anywhere in the cluster, then ``delay_before``."""
        last = self.last_end
        base = time.time() if last is None else max(0.0, last + delay_after)
        return base + delay_before

    def forward(self, force: bool) -> None:
        """A trigger of the worker (in any process): counted in Redis and
        published to the holder, which runs (coalesced as a local trigger)."""
        claims = self._claims
        if claims is None:
            return
        claims.call(_TRIGGER_SHA, (self.keys[3],), (self.channel, "1" if force else "0"), self._forwarded, None)

    def _forwarded(self, _context: Any, reply: Any) -> None:
        if reply is None:
            self.triggers_failed += 1

    # -- the coordinator's side -----------------------------------------------------------------------
    def send_record(self) -> None:
        """Send the pending record of a run (at most one out at a time)."""
        claims = self._claims
        if claims is None or self.record is None or self.token is None or self.recording:
            return
        record, self.record = self.record, None
        self.recording = True
        claims.call(_RECORD_SHA, (self.keys[0], self.keys[2]), (claims.holder, str(self.token), record),
                    self._recorded, None)

    def _recorded(self, _context: Any, _reply: Any) -> None:
        self.recording = False
        if self.record is not None and not self.continuous:
            self.send_record()

    def renew(self, claims: "_Claims", now: float) -> None:
        """Renew the lease, or try to take it (one call of the batch)."""
        self.in_flight = True
        served = self.served if self.holds and self.served > self.served_sent else None
        claims.call(_LEASE_SHA, self.keys, (claims.holder, str(self.singleton._ttl_ms),
                                            "" if served is None else str(served)),
                    self._renewed, (now, served))

    def _renewed(self, context: Tuple[float, Optional[int]], reply: Any) -> None:
        sent_at, served = context
        self.in_flight = False
        claims = self._claims
        if claims is None:
            return  # (detached meanwhile)
        claims.tick()
        self.exact = False
        if reply is None:
            self.renewals_failed += 1
            self.next_at = sent_at + self.period
            if self.holds and monotonic() >= self.held_until:
                self._lose("its renewals failed for ttl")
            return
        try:
            status, value, record, triggers, served_before = int(reply[0]), int(reply[1]), reply[2], \
                int(reply[3]), int(reply[4])
        except (TypeError, ValueError, IndexError):  # (never: not the script's reply)
            self.renewals_failed += 1
            self.next_at = sent_at + self.period
            return
        if record:
            text = record.decode() if isinstance(record, bytes) else str(record)
            done, _, who = text.partition(" ")
            try:
                self.last_end, self.last_holder = int(done) / 1000.0, who
            except ValueError:
                pass
        if status == 0:  # another process holds it
            if self.holds:
                self._lose("another process holds it")
            # Try again when it expires (value: its PTTL, 0 in its last
            # millisecond, -2 if it expired meanwhile), exactly then; or at
            # the next period (-1: a lease with no expiry, set by hand).
            if value >= -2 and value != -1 and value / 1000.0 < self.period:
                self.next_at = sent_at + max(0.0, value / 1000.0) + EXPIRY_MARGIN
                self.exact = True
            else:
                self.next_at = sent_at + self.period
            return
        if served is not None:
            self.served_sent = max(self.served_sent, served)
        gained = status == 2 or not self.holds
        self.holds = True
        self.token = value
        self.held_until = sent_at + self.singleton.ttl * HELD_FOR
        self.next_at = sent_at + self.period
        if status == 2:
            self.acquired += 1
            self.served = self.served_sent = max(self.served, served_before)
            self.seen = max(self.seen, self.served)
        if triggers > self.seen:
            # Triggers not served: made while no one held the lease, or their
            # message did not reach this process (pub/sub delivers at most
            # once): served now, as one run.
            self.seen = triggers
            self._accept(False)
        if self.record is not None and self.continuous:
            self.send_record()
        if gained:
            self._held.set()

    def _lose(self, why: str) -> None:
        self.holds = False
        self.token = None
        self.lost += 1
        logger.info("RedisSingleton %s: this process no longer holds %s (%s): it starts no run of it until"
                    " it holds it again (a run in progress goes on)", self.singleton.url, self.key, why)

    def message(self, number: int, force: bool) -> None:
        """A trigger published by some process (the listener's call): the
        holder runs; any other process ignores it (the counter keeps it for
        the next holder)."""
        if number <= self.seen or not self.valid():
            return
        self.seen = number
        self._accept(force)

    def _accept(self, force: bool) -> None:
        worker = self.worker
        if worker is not None:
            worker._accept(force)

    def info(self) -> Dict[str, Any]:
        """What ``get_info()`` shows under ``singleton``."""
        held = self.valid()
        return {
            "key": self.key,
            "mode": "lease",
            "holds": held,
            "fence": self.token if held else None,
            "last_run": self.last_end,
            "last_holder": self.last_holder,
            "acquired": self.acquired,
            "lost": self.lost,
            "renewals_failed": self.renewals_failed,
            "triggers_failed": self.triggers_failed,
            "round_trips": _round_trips(self._claims),
        }


class _Call:
    """A script call waiting for its batch's answer: ``then(context, answer)``."""

    __slots__ = ("sha", "keys", "args", "then", "context")

    def __init__(self, sha: str, keys: Tuple[str, ...], args: Tuple[str, ...], then: Callable[[Any, Any], Any],
                 context: Any) -> None:
        self.sha = sha
        self.keys = keys
        self.args = args
        self.then = then
        self.context = context


class _Claims:
    """The claims of one process (and hub) on one URL: collected while the
    hub turns, sent in one pipeline by one greenlet, each waiting run woken
    with its answer (see the module docstring)."""

    def __init__(self, url: str, redis_kwargs: Dict[str, Any]) -> None:
        self.url = url
        self._redis_kwargs = redis_kwargs
        self.pending: List[_Call] = []
        self.sending = False
        self.users = 0
        self._client: Optional[redis.Redis] = None
        self._loaded = False
        self._failing = False
        self._warming = False
        self._log = FailureLog(burst=1, window=30.0, repeats=True)
        #: the leases of this process on this URL, renewed (or tried for)
        #: together by one greenlet, and the greenlet that listens for triggers
        self.leases: Dict[str, LeaseMember] = {}
        #: the batches sent (each one round trip)
        self.round_trips = 0
        #: this connection's name in the claims and leases (see holder_id)
        self.holder = "%s/%d" % (holder_id(), next(_holder_numbers))
        self._renewer: Optional[gevent.Greenlet] = None
        self._wake = Event()
        self._listener: Optional[gevent.Greenlet] = None

    def warm(self) -> None:
        """Connect and load the claim script now, in a greenlet of its own
        (not at the first claim, which would be late by that): at a start, so
        that an unreachable server is logged then."""
        if self._loaded or self._warming:
            return
        self._warming = True
        gevent.spawn(self._warm)

    def _warm(self) -> None:
        try:
            client = self._connection()
            for script in SCRIPTS:
                client.script_load(script)
            self._loaded = True
        except CONNECTION_ERRORS as exc:
            self._drop()
            self._failed(exc, 0)
        except redis.RedisError as exc:
            self._failed(exc, 0)
        finally:
            self._warming = False
            if self.users <= 0 and not self.sending:
                self._drop()  # (its last user stopped meanwhile)

    def claim(self, prefix: str, slot: int, ttl_ms: int, then: Callable[[Any, Any], Any], context: Any) -> None:
        """One claim (from the hub or any greenlet of it; nothing waits): its
        answer, ``(won, record of the last run)`` or None if it failed, comes
        as the hub callback ``then(context, answer)``."""
        self.call(_SCRIPT_SHA, ("%s:%d" % (prefix, slot), prefix + ":last"),
                  (self.holder, str(slot), str(ttl_ms)), then, context)

    def call(self, sha: str, keys: Tuple[str, ...], args: Tuple[str, ...], then: Callable[[Any, Any], Any],
             context: Any) -> None:
        """One call of one of the scripts (nothing waits): it goes with the
        others made in this turn of the hub, and its reply (None if it failed)
        comes as the hub callback ``then(context, reply)``."""
        self.pending.append(_Call(sha, keys, args, then, context))
        if not self.sending:
            self.sending = True
            gevent.spawn(self._send)  # starts after this turn of the hub: the calls made in it go together

    def _send(self) -> None:
        hub = get_hub()
        batch: List[_Call] = []
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    answers = self._round_trip(batch)
                except Exception as exc:  # (not Redis's: still an answer for every claim)
                    self._failed(exc, len(batch))
                    answers = [None] * len(batch)
                for i, (entry, answer) in enumerate(zip(batch, answers)):
                    if i and not i % CHUNK:
                        yield_to_hub()  # (the hub runs the answers so far, its timers and I/O, then this goes on)
                    hub.loop.run_callback(entry.then, entry.context, answer)
                batch = []
        finally:
            self.sending = False
            rest, self.pending = batch + self.pending, []
            for entry in rest:  # (only if this greenlet was killed: every claim gets an answer)
                hub.loop.run_callback(entry.then, entry.context, None)
            if self.users <= 0 and not self._warming:
                self._drop()  # (its last user stopped meanwhile)

    # -- leases -------------------------------------------------------------------------------------
    def add_lease(self, member: LeaseMember) -> None:
        """Take part in ``member``'s lease from now on: its first attempt
        goes with the next batch."""
        member.next_at = 0.0
        member.in_flight = member.exact = False
        self.leases[member.prefix] = member
        if self._renewer is None:
            self._renewer = gevent.spawn(self._renew)
        else:
            self._wake.set()
        if member.forwards and self._listener is None:
            self._listener = gevent.spawn(self._listen)

    def remove_lease(self, member: LeaseMember) -> None:
        """``member`` takes no part any more: its lease is given up if held."""
        if self.leases.get(member.prefix) is member:
            del self.leases[member.prefix]
        if member.token is not None:
            served = member.served if member.served > member.served_sent else None
            self.call(_RELEASE_SHA, (member.keys[0], member.keys[4]),
                      (self.holder, "" if served is None else str(served)), _ignore, None)
        self._wake.set()
        if self._listener is not None and not any(m.forwards for m in self.leases.values()):
            listener, self._listener = self._listener, None
            listener.kill(block=False)

    def tick(self) -> None:
        """An answer to a renewal came: the renewer looks again."""
        self._wake.set()

    def _renew(self) -> None:
        # One greenlet per process and URL renews every lease of its
        # workers, or tries for it, in one batch: whatever is due within half
        # a period goes now, so that the members' renewals fall together
        # (one round trip per renewal period in the steady state).
        wake = self._wake
        try:
            while self.leases:
                now = monotonic()
                soonest = None
                for member in list(self.leases.values()):
                    if member.in_flight:
                        continue
                    if member.next_at <= (now if member.exact else now + member.period * 0.5):
                        member.renew(self, now)
                    elif soonest is None or member.next_at < soonest:
                        soonest = member.next_at
                wake.clear()
                # (no member waiting: each answer wakes this greenlet)
                wake.wait(None if soonest is None else max(0.0, soonest - monotonic()))
        finally:
            self._renewer = None

    def _listen(self) -> None:
        # The triggers of the forwarding leases' workers, from any process:
        # one pub/sub connection per process and URL, subscribed to the
        # namespaces' trigger channels. A message is a fast path only: the
        # counter in Redis, read with each renewal, serves a trigger whose
        # message was lost (a reconnection, a holder that changed).
        patterns: Tuple[str, ...] = ()
        pubsub: Any = None
        try:
            while True:
                wanted = tuple(sorted({m.singleton.namespace + ":*:trigger" for m in self.leases.values()
                                       if m.forwards}))
                if not wanted:
                    return
                try:
                    if pubsub is None or wanted != patterns:
                        _close(pubsub)
                        pubsub = self._connection().pubsub(ignore_subscribe_messages=True)
                        pubsub.psubscribe(*wanted)
                        patterns = wanted
                    message = pubsub.get_message(timeout=LISTEN_LOOK)
                except Exception as exc:  # (a connection error, or redis-py's state after one)
                    _close(pubsub)
                    pubsub = None
                    self._failed(exc, 0)
                    gevent.sleep(LISTEN_LOOK)  # (never a spin while Redis is away)
                    continue
                if message is None or message.get("type") != "pmessage":
                    continue
                channel = message["channel"]
                channel = channel.decode() if isinstance(channel, bytes) else str(channel)
                member = self.leases.get(channel[:-len(":trigger")])
                if member is None:
                    continue
                data = message["data"]
                number, _, force = (data.decode() if isinstance(data, bytes) else str(data)).partition(" ")
                try:
                    member.message(int(number), force == "1")
                except ValueError:
                    continue
        finally:
            _close(pubsub)

    def _connection(self) -> redis.Redis:
        client = self._client
        if client is None:
            kwargs: Dict[str, Any] = {
                "socket_timeout": REPLY_TIMEOUT,
                "socket_connect_timeout": CONNECT_TIMEOUT,
                "retry": Retry(NoBackoff(), 0),  # a failed claim is not retried: the next time is
            }
            kwargs.update(self._redis_kwargs)
            pool = redis.ConnectionPool.from_url(self.url, connection_class=GeventConnection, **kwargs)
            client = self._client = redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        return client

    def _round_trip(self, batch: List[_Call]) -> List[Any]:
        # One round trip for the whole batch, pipelined — packed, sent and
        # read CHUNK commands at a time with a yield between (redis-py packs
        # and parses in Python: a few hundred calls in one go would hold the
        # hub for milliseconds).
        self.round_trips += 1
        try:
            client = self._connection()
            pool = client.connection_pool
            connection = pool.get_connection()
            try:
                for _attempt in range(2):
                    load = not self._loaded  # (read once: the warm-up may load them while this batch is out)
                    commands: List[Tuple[Any, ...]] = [("SCRIPT", "LOAD", script) for script in SCRIPTS] \
                        if load else []
                    commands.extend(("EVALSHA", entry.sha, len(entry.keys)) + entry.keys + entry.args
                                    for entry in batch)
                    for i in range(0, len(commands), CHUNK):
                        if i:
                            yield_to_hub()
                        connection.send_packed_command(connection.pack_commands(commands[i:i + CHUNK]),
                                                       check_health=not i)
                    replies: List[Any] = []
                    for i in range(len(commands)):
                        if i and not i % CHUNK:
                            yield_to_hub()
                        try:
                            replies.append(connection.read_response())
                        except redis.ResponseError as exc:
                            replies.append(exc)
                    if load:
                        self._loaded = True
                        replies = replies[len(SCRIPTS):]
                    if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
                        self._loaded = False  # Redis restarted (its scripts are gone): again, loading them first
                        continue
                    break
            except BaseException:
                connection.disconnect()  # (a reply may be left unread: the connection is out of step)
                raise
            finally:
                pool.release(connection)
        except CONNECTION_ERRORS as exc:
            self._drop()
            self._failed(exc, len(batch))
            return [None] * len(batch)
        except redis.RedisError as exc:
            self._failed(exc, len(batch))
            return [None] * len(batch)
        answers: List[Any] = []
        error: Optional[BaseException] = None
        for entry, reply in zip(batch, replies):
            if isinstance(reply, BaseException):
                error = reply
                answers.append(None)
            elif entry.sha == _SCRIPT_SHA and not (isinstance(reply, list) and len(reply) == 2
                                                   and reply[0] in (0, 1)):
                # (never: not the claim script's reply; not taken for a win)
                error = redis.ResponseError("unexpected reply to a claim: %r" % (reply,))
                answers.append(None)
            else:
                answers.append(reply)
        if error is not None:
            self._failed(error, sum(1 for a in answers if a is None))
        elif self._failing:
            self._failing = False
            self._log.reset()
            logger.warning("RedisSingleton %s: claims succeed again", self.url)
        return answers

    def _failed(self, exc: BaseException, n: int) -> None:
        self._failing = True
        suppressed = self._log.admit(exc)
        if suppressed is None:
            return
        note = " (%d more failures not logged)" % suppressed if suppressed else ""
        if n:
            logger.warning("RedisSingleton %s: claims failed (%s): %d claim(s), renewal(s) or trigger(s) not"
                           " answered — a singleton worker whose claim or lease fails does not run (it cannot"
                           " know who else does); it tries again at its next scheduled time or renewal%s",
                           self.url, describe(exc), n, note)
        else:
            logger.warning("RedisSingleton %s: claims failed (%s) at start: singleton workers do not run until"
                           " Redis answers (each claims again at its next scheduled time)%s", self.url,
                           describe(exc), note)

    def _drop(self) -> None:
        self._loaded = False  # (a new connection may find a restarted server: the script is loaded again)
        client = self._client
        if client is not None:
            try:
                # (not the listener's pub/sub connection, which it is reading:
                # the listener closes it, when it is stopped or it fails)
                client.connection_pool.disconnect(inuse_connections=False)
            except Exception:  # pragma: no cover - a socket already gone
                pass

    def close(self) -> None:
        """No worker uses this connection any more: close it (or the greenlet
        that uses it now does, when it is done)."""
        if not self.sending and not self._warming:
            self._drop()


def _round_trips(claims: Optional["_Claims"]) -> Optional[int]:
    """The round trips of a started worker's connection (shared by the
    process's singleton workers on its URL), else None."""
    return None if claims is None else claims.round_trips


def _close(pubsub: Any) -> None:
    """Close a pub/sub connection (None: nothing to close), whatever its state."""
    if pubsub is not None:
        try:
            pubsub.close()
        except Exception:  # pragma: no cover - a socket already gone
            pass


def _ignore(_context: Any, _reply: Any) -> None:
    """The answer to a call whose reply nothing needs."""


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


#: every script, loaded together on each connection (and again after a restart of Redis)
SCRIPTS = (CLAIM_SCRIPT, LEASE_SCRIPT, RECORD_SCRIPT, RELEASE_SCRIPT, TRIGGER_SCRIPT)
_SCRIPT_SHA = _sha(CLAIM_SCRIPT)
_LEASE_SHA = _sha(LEASE_SCRIPT)
_RECORD_SHA = _sha(RECORD_SCRIPT)
_RELEASE_SHA = _sha(RELEASE_SCRIPT)
_TRIGGER_SHA = _sha(TRIGGER_SCRIPT)

#: one coordinator per (pid, OS thread, url, redis_kwargs)
_coordinators: Dict[Tuple[int, int, str, str], _Claims] = {}
