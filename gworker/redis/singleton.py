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
import logging
import math
import os
import socket as _socket
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

import gevent
from gevent.hub import get_hub

from .._errors import FailureLog, describe
from .._hubsafe import os_thread_ident
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

#: How long (seconds) the connection waits to connect, and for a reply,
#: unless ``redis_kwargs`` says otherwise: a claim that takes longer fails
#: (the worker does not run that time).
CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 5.0

_holder: Optional[Tuple[int, str]] = None


def holder_id() -> str:
    """This process's holder name in the claims: ``<host>:<pid>:<random>``
    (made again in a forked child)."""
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

    def bind(self, worker: Any) -> "SingletonMember":
        """The state of ``worker`` as a singleton (made at its construction):
        its key, the figures ``get_info()`` shows. A ``key`` given serves
        one worker per process (ValueError for a second)."""
        if self.key is not None:
            if self._bound is not None and self._bound != worker.name:
                raise ValueError("singleton: RedisSingleton(key=%r) serves worker %s already; a key names one job"
                                 " (give each worker its own RedisSingleton, or key=None)" % (self.key, self._bound))
            self._bound = worker.name
        return SingletonMember(self, self.key if self.key is not None else worker.name)

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

    def attach(self) -> None:
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
            "holds": self.holds,
            "last_run": None if last is None else last / 1000.0,
            "last_holder": self.last_holder,
            "ran_elsewhere": self.ran_elsewhere,
            "claims_failed": self.claims_failed,
        }


class _Claim:
    """A claim waiting for its batch's answer: ``then(context, answer)``."""

    __slots__ = ("keys", "slot", "ttl", "then", "context")

    def __init__(self, prefix: str, slot: int, ttl_ms: int, then: Callable[[Any, Any], Any], context: Any) -> None:
        self.keys = ("%s:%d" % (prefix, slot), prefix + ":last")
        self.slot = slot
        self.ttl = str(ttl_ms)
        self.then = then
        self.context = context


class _Claims:
    """The claims of one process (and hub) on one URL: collected while the
    hub turns, sent in one pipeline by one greenlet, each waiting run woken
    with its answer (see the module docstring)."""

    def __init__(self, url: str, redis_kwargs: Dict[str, Any]) -> None:
        self.url = url
        self._redis_kwargs = redis_kwargs
        self.pending: List[_Claim] = []
        self.sending = False
        self.users = 0
        self._client: Optional[redis.Redis] = None
        self._loaded = False
        self._failing = False
        self._warming = False
        self._log = FailureLog(burst=1, window=30.0, repeats=True)

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
            self._connection().script_load(CLAIM_SCRIPT)
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
        self.pending.append(_Claim(prefix, slot, ttl_ms, then, context))
        if not self.sending:
            self.sending = True
            gevent.spawn(self._send)  # starts after this turn of the hub: the claims made in it go together

    def _send(self) -> None:
        hub = get_hub()
        batch: List[_Claim] = []
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    answers = self._round_trip(batch)
                except Exception as exc:  # (not Redis's: still an answer for every claim)
                    self._failed(exc, len(batch))
                    answers = [None] * len(batch)
                for entry, answer in zip(batch, answers):
                    hub.loop.run_callback(entry.then, entry.context, answer)
                batch = []
        finally:
            self.sending = False
            rest, self.pending = batch + self.pending, []
            for entry in rest:  # (only if this greenlet was killed: every claim gets an answer)
                hub.loop.run_callback(entry.then, entry.context, None)
            if self.users <= 0 and not self._warming:
                self._drop()  # (its last user stopped meanwhile)

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

    def _round_trip(self, batch: List[_Claim]) -> List[Optional[Tuple[int, Any]]]:
        holder = holder_id()
        try:
            client = self._connection()
            for _attempt in range(2):
                pipe = client.pipeline(transaction=False)
                load = not self._loaded  # (read once: the warm-up may load it while this pipeline is out)
                if load:
                    pipe.script_load(CLAIM_SCRIPT)
                for entry in batch:
                    pipe.evalsha(_SCRIPT_SHA, 2, entry.keys[0], entry.keys[1], holder, str(entry.slot),
                                 entry.ttl)
                replies = pipe.execute(raise_on_error=False)
                if load:
                    self._loaded = True
                    replies = replies[1:]
                if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
                    self._loaded = False  # Redis restarted (its scripts are gone): again, loading it first
                    continue
                break
        except CONNECTION_ERRORS as exc:
            self._drop()
            self._failed(exc, len(batch))
            return [None] * len(batch)
        except redis.RedisError as exc:
            self._failed(exc, len(batch))
            return [None] * len(batch)
        answers: List[Optional[Tuple[int, Any]]] = []
        error: Optional[BaseException] = None
        for reply in replies:
            if isinstance(reply, BaseException):
                error = reply
                answers.append(None)
            elif isinstance(reply, list) and len(reply) == 2 and reply[0] in (0, 1):
                answers.append((reply[0], reply[1]))
            else:  # (never: not the script's reply; not taken for a win)
                error = redis.ResponseError("unexpected reply to a claim: %r" % (reply,))
                answers.append(None)
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
            logger.warning("RedisSingleton %s: claims failed (%s): %d singleton run(s) not started — a worker"
                           " whose claim fails does not run (it cannot know who else does); it claims again"
                           " at its next scheduled time%s", self.url, describe(exc), n, note)
        else:
            logger.warning("RedisSingleton %s: claims failed (%s) at start: singleton workers do not run until"
                           " Redis answers (each claims again at its next scheduled time)%s", self.url,
                           describe(exc), note)

    def _drop(self) -> None:
        self._loaded = False  # (a new connection may find a restarted server: the script is loaded again)
        client = self._client
        if client is not None:
            try:
                client.connection_pool.disconnect()
            except Exception:  # pragma: no cover - a socket already gone
                pass

    def close(self) -> None:
        """No worker uses this connection any more: close it (or the greenlet
        that uses it now does, when it is done)."""
        if not self.sending and not self._warming:
            self._drop()


_SCRIPT_SHA = hashlib.sha1(CLAIM_SCRIPT.encode()).hexdigest()

#: one coordinator per (pid, OS thread, url, redis_kwargs)
_coordinators: Dict[Tuple[int, int, str, str], _Claims] = {}
