"""Queue workers fed by Redis Streams: :class:`RedisStreamQueue`.

A ``RedisStreamQueue`` is an object of the queue-object protocol (see
:mod:`gworker.workers.queue`), so any queue worker takes it as ``q=``::

    orders = RedisStreamQueue("orders", group="billing", url="redis://redis:6379/0")

    @background_worker(q=orders)
    def bill(order, **kwargs):
        ...

Items live in a Redis stream; every worker (in any process, on any machine)
reading the stream with the same *group* shares its items, each worker being
one *consumer* of that group.

* ``put_threadsafe(item)`` appends ``{d: serializer.dumps(item)}`` with ``XADD``.
* The worker reads with ``XREADGROUP GROUP <group> <consumer> COUNT <count>
  BLOCK <ms>`` (the group is made with ``MKSTREAM`` from the stream's start if
  missing) and calls the executor once per item, in stream order.
* Acknowledgement (``XACK``) only after the executor returned: at-least-once.
  Acks are collected and sent in the same round trip as the next read.
* An executor that raises leaves its entry pending; its error text is kept in
  the hash ``<stream>:errors:<group>``. Entries pending longer than
  ``claim_idle`` seconds — failed ones, or those of a consumer that died — are
  taken over with ``XAUTOCLAIM`` and run again; an entry already delivered
  ``max_deliveries`` times is instead appended to the dead-letter stream with
  its last error, and acknowledged.
* Entries fetched in a batch but not yet run are kept owned (``XCLAIM
  JUSTID`` every ``claim_idle / 2`` s) so that others do not take them while
  this worker is busy, and handed back at ``stop()`` (made claimable at once,
  their delivery count restored).
* A lost connection is retried with capped exponential backoff (with jitter),
  logged; the worker never dies and never spins. While Redis is down, ``stop()``
  waits at most ``release_timeout`` s to send outstanding acks (the entries are
  then delivered again later: at-least-once).

Cooperative I/O in both worlds: the connections the worker's hub uses are
redis-py connections on gevent's socket (:class:`GeventConnection`), so every
wait — ``BLOCK`` included — goes through the hub, monkey-patched or not. From an
OS thread that runs no hub, ``put_threadsafe`` uses a connection of its own on
the original blocking socket (blocking that thread only). Connections are per
OS thread and per process (they are dropped after a fork).
"""
from __future__ import annotations

import json
import logging
import os
import random
import socket as _socket
import uuid
from time import monotonic
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple

import gevent
import gevent.socket
from gevent.monkey import get_original

from .._deadline import Deadline
from .._errors import FailureLog
from .._gevent import get_hub_if_exists
from .._hubsafe import MAIN_THREAD_IDENT, os_thread_ident, yield_to_hub

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.connection import Connection
    from redis.retry import Retry
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "gworker.redis needs redis-py: pip install 'gworker[redis]'"
    ) from _exc

if TYPE_CHECKING:
    from redis.typing import StreamIdT

__all__ = ["RedisStreamQueue", "GeventConnection", "BlockingConnection"]

logger = logging.getLogger("gworker")

_ThreadLocal = get_original("_thread", "_local")
_os_sleep = get_original("time", "sleep")

#: Errors after which the connection is dropped and the call retried with backoff.
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


def _connect(sock_cls: Any, getaddrinfo: Any, host: str, port: int, timeout: Optional[float]) -> Any:
    err: Optional[BaseException] = None
    for family, socktype, proto, _name, address in getaddrinfo(host, port, 0, _socket.SOCK_STREAM):
        sock = sock_cls(family, socktype, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as exc:
            err = exc
            sock.close()
    raise err if err is not None else OSError("getaddrinfo returned nothing for %s" % host)


class GeventConnection(Connection):
    """A redis-py TCP connection on gevent's socket: its waits go through the
    hub whether or not the process is monkey-patched."""

    _socket_class: Any = gevent.socket.socket
    _getaddrinfo: Any = staticmethod(gevent.socket.getaddrinfo)

    def _connect(self) -> Any:
        sock = _connect(self._socket_class, self._getaddrinfo, self.host, self.port,
                        self.socket_connect_timeout)
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            if self.socket_keepalive:
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1)
                for k, v in self.socket_keepalive_options.items():
                    sock.setsockopt(_socket.IPPROTO_TCP, k, v)
            sock.settimeout(self.socket_timeout)
        except BaseException:
            sock.close()
            raise
        return sock


class BlockingConnection(GeventConnection):
    """The same on the original (un-patched) blocking socket, for OS threads
    that run no hub: it blocks only the thread that uses it."""

    _socket_class = get_original("socket", "socket")
    _getaddrinfo = staticmethod(get_original("socket", "getaddrinfo"))


def _hub_thread() -> bool:
    """True in a thread whose waits must go through a gevent hub."""
    return get_hub_if_exists() is not None or os_thread_ident() == MAIN_THREAD_IDENT


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStreamQueue:
    """A queue object for queue workers, backed by a Redis stream and consumer
    group (see the module docstring for the delivery guarantees).

    - ``stream``, ``group``: the stream key and the consumer group's name.
    - ``url``: a redis-py URL (``redis://host:port/db``; in an un-patched process
      only TCP ``redis://`` URLs wait through the hub).
    - ``consumer``: this queue object's consumer name in the group; default
      ``<host>:<pid>:<random>`` (made again in a forked child). One queue object
      feeds one worker at a time.
    - ``serializer``: any object with ``dumps`` and ``loads`` (default ``json``).
    - ``claim_idle``: seconds an entry may stay pending (unacknowledged) before
      another consumer — or this one — takes it over and runs it again. It must
      exceed the longest run of one item.
    - ``max_deliveries``: deliveries after which an entry is dead-lettered
      instead of being run again.
    - ``dead_letter``: the dead-letter stream (default ``"<stream>:dead"``).
    - ``count``: entries fetched per read; ``block_ms``: the longest ``BLOCK``.
    - ``maxlen``: trim the stream to about this many entries on each ``XADD``
      (``MAXLEN ~``); default: never trim.
    - ``backoff_max``: the cap of the reconnect backoff, in seconds.
    - ``put_timeout``: how long ``put_threadsafe`` retries a lost connection
      before it raises; ``release_timeout``: how long ``stop()`` tries to send
      outstanding acks.
    - ``redis_kwargs``: more keywords for redis-py's ``ConnectionPool.from_url``.
    """

    def __init__(
        self,
        stream: str,
        group: str,
        url: str = "redis://localhost:6379/0",
        consumer: Optional[str] = None,
        serializer: Any = json,
        claim_idle: float = 60.0,
        max_deliveries: int = 5,
        dead_letter: Optional[str] = None,
        count: int = 100,
        block_ms: int = 2000,
        maxlen: Optional[int] = None,
        backoff_max: float = 5.0,
        put_timeout: float = 30.0,
        release_timeout: float = 5.0,
        redis_kwargs: Optional[Dict[str, Any]] = None,
    ) -> None:
        value: object  # each loop below checks parameters of its own type
        for name, value in (("stream", stream), ("group", group), ("url", url)):
            if not isinstance(value, str) or not value:
                raise TypeError("%s must be a non-empty string; got %r" % (name, value))
        if consumer is not None and (not isinstance(consumer, str) or not consumer):
            raise TypeError("consumer must be a non-empty string; got %r" % (consumer,))
        if not (callable(getattr(serializer, "dumps", None)) and callable(getattr(serializer, "loads", None))):
            raise TypeError("serializer must have dumps and loads; got %r" % (serializer,))
        for name, value in (("claim_idle", claim_idle), ("backoff_max", backoff_max),
                            ("put_timeout", put_timeout), ("release_timeout", release_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError("%s must be a positive number of seconds; got %r" % (name, value))
        for name, value in (("max_deliveries", max_deliveries), ("count", count), ("block_ms", block_ms)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError("%s must be a positive integer; got %r" % (name, value))
        if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1):
            raise ValueError("maxlen must be a positive integer or None; got %r" % (maxlen,))
        self.stream = stream
        self.group = group
        self.url = url
        self._consumer = consumer
        self._consumer_given = consumer is not None
        self._dumps = serializer.dumps
        self._loads = serializer.loads
        self.claim_idle = float(claim_idle)
        self.max_deliveries = max_deliveries
        self.dead_letter = dead_letter if dead_letter is not None else stream + ":dead"
        self.errors_key = "%s:errors:%s" % (stream, group)
        self.count = count
        self.block_ms = block_ms
        self.maxlen = maxlen
        self.backoff_max = float(backoff_max)
        self.put_timeout = float(put_timeout)
        self.release_timeout = float(release_timeout)
        self._redis_kwargs = dict(redis_kwargs or {})
        self._claim_ms = max(1, int(self.claim_idle * 1000))
        self._every = self.claim_idle / 2  # claim scans and batch keep-alive
        # connections
        self._pid = os.getpid()
        self._tls = _ThreadLocal()
        self._reader: Optional[redis.Redis] = None
        self._clients: List[redis.Redis] = []
        self._group_ready = False
        # the consumer side (used by one worker greenlet at a time)
        self._batch: List[Tuple[bytes, Dict[bytes, bytes]]] = []
        self._i = 0
        self._batch_at = 0.0
        self._touch_at = float("inf")
        self._current: Optional[bytes] = None
        self._acks: List[bytes] = []
        self._clear: List[bytes] = []
        self._errors: Dict[bytes, str] = {}
        self._retried: Dict[bytes, int] = {}  # entry id → deliveries, for entries delivered before
        self._recover = True
        self._next_claim = 0.0
        self._claim_cursor: Any = "0-0"
        self._failures_in_row = 0
        # the first failure of a run of them, then one per 30 s; reset by the reconnect
        self._failure_log = FailureLog(burst=1, window=30.0, repeats=True)
        # figures
        self.delivered = 0
        self.acked = 0
        self.failed = 0
        self.claimed = 0
        self.dead_lettered = 0
        self.reconnects = 0

    # -- connections --------------------------------------------------------------------------
    @property
    def consumer(self) -> str:
        """This object's consumer name in the group."""
        if self._consumer is None or self._pid != os.getpid():
            self._check_fork()
            if self._consumer is None:
                self._consumer = "%s:%d:%s" % (_socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])
        return self._consumer

    def _check_fork(self) -> None:
        if self._pid == os.getpid():
            return
        # A forked child: the parent's connections (and, unless given, its
        # consumer name) are not ours. redis-py checks the pid before it shuts a
        # socket down, so dropping them leaves the parent's connections alone.
        self._pid = os.getpid()
        self._tls = _ThreadLocal()
        self._reader = None
        self._clients = []
        if not self._consumer_given:
            self._consumer = None
        self._batch, self._i, self._current = [], 0, None
        self._acks, self._clear, self._errors, self._retried = [], [], {}, {}
        self._recover = True

    def _make_client(self, connection_class: Any, socket_timeout: Optional[float]) -> redis.Redis:
        kwargs: Dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": 5,
            "retry": Retry(NoBackoff(), 0),  # we retry ourselves, without time.sleep
        }
        kwargs.update(self._redis_kwargs)
        pool = redis.ConnectionPool.from_url(self.url, connection_class=connection_class, **kwargs)
        client = redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        self._clients.append(client)
        return client

    def _reader_client(self) -> redis.Redis:
        if self._pid != os.getpid():
            self._check_fork()
        r = self._reader
        if r is None:
            # BLOCK must end before the socket times out
            timeout = max(10.0, 2 * self.block_ms / 1000.0 + 5)
            r = self._reader = self._make_client(GeventConnection, timeout)
        return r

    def _thread_client(self) -> Tuple[redis.Redis, bool]:
        """(client, cooperative) for the calling OS thread."""
        if self._pid != os.getpid():
            self._check_fork()
        tls = self._tls
        client = getattr(tls, "client", None)
        if client is None:
            coop = _hub_thread()
            client = self._make_client(GeventConnection if coop else BlockingConnection, 30.0)
            tls.client = client
            tls.coop = coop
        return client, tls.coop

    def _ensure_group(self, r: redis.Redis) -> None:
        try:
            r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- the producer side ------------------------------------------------------------------------
    def put_threadsafe(self, item: Any) -> str:
        """Append ``item`` to the stream (``XADD``); returns its entry id.

        From any greenlet or OS thread. A lost connection is retried with
        backoff for up to ``put_timeout`` s, then the error is raised. (A retry
        after a lost reply may append the item twice: at-least-once.)"""
        return _text(self._produce([self._dumps(item)])[0])

    def put(self, item: Any) -> str:
        """The same as :meth:`put_threadsafe`."""
        return self.put_threadsafe(item)

    def put_many(self, items: Iterable[Any], chunk: int = 100) -> List[str]:
        """Append many items, pipelined ``chunk`` at a time; returns their ids.

        Each chunk is one ``MULTI``/``EXEC`` transaction: its entries become
        visible together, so a consumer blocked in ``XREADGROUP`` is served
        once, after the whole chunk, and reads up to ``count`` of them in one
        batch (Redis serves blocked readers after each command otherwise: the
        first entry alone). A chunk is added whole or not at all.

        Packing a chunk and reading its replies is CPU work in the calling
        greenlet, about 20 µs per entry: in a thread with a hub, the hub runs
        between two chunks, so a chunk of 100 holds it for ~2 ms (a chunk of
        1,000 held it for over 20 ms, and for over 100 ms on a loaded
        machine)."""
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError("chunk must be a positive integer; got %r" % (chunk,))
        dumps = self._dumps
        ids: List[str] = []
        batch: List[Any] = []
        for item in items:
            batch.append(dumps(item))
            if len(batch) >= chunk:
                ids.extend(map(_text, self._produce(batch)))
                batch = []
                if self._thread_client()[1]:
                    yield_to_hub()  # let the hub run between two chunks
        if batch:
            ids.extend(map(_text, self._produce(batch)))
        return ids

    def _produce(self, payloads: List[Any]) -> List[Any]:
        client, coop = self._thread_client()
        deadline = monotonic() + self.put_timeout
        failures = 0
        while True:
            try:
                if not self._group_ready:
                    self._ensure_group(client)
                    self._group_ready = True
                if len(payloads) == 1:
                    return [client.xadd(self.stream, {b"d": payloads[0]}, maxlen=self.maxlen, approximate=True)]
                pipe = client.pipeline(transaction=True)  # visible together (see put_many)
                for data in payloads:
                    pipe.xadd(self.stream, {b"d": data}, maxlen=self.maxlen, approximate=True)
                return pipe.execute()
            except CONNECTION_ERRORS as exc:
                client.connection_pool.disconnect()
                failures += 1
                delay = self._delay(failures)
                if monotonic() + delay > deadline:
                    raise
                if failures == 1:
                    logger.warning("redis stream %s: XADD failed (%s); retrying for up to %.0fs",
                                   self.stream, exc, self.put_timeout)
                (gevent.sleep if coop else _os_sleep)(delay)

    # -- the queue-object protocol (consumer side) ---------------------------------------------------
    def qsize(self) -> int:
        """Items fetched and not yet returned by ``get()``, which returns them
        without waiting — 0 when the batch is due for its keep-alive round trip
        (so the worker makes it parked, interruptible by ``stop()``).
        :meth:`pending` and :meth:`lag` count in Redis."""
        n = len(self._batch) - self._i
        if n and monotonic() >= self._touch_at:
            return 0
        return n

    def get(self) -> Any:
        """The next item, in stream order; waits through the hub (interruptible)."""
        while True:
            i = self._i
            batch = self._batch
            if i < len(batch):
                if monotonic() >= self._touch_at:
                    self._guarded(self._touch)
                    continue
                self._i = i + 1
                entry_id, fields = batch[i]
                self._current = entry_id
                try:
                    return self._loads(fields[b"d"])
                except Exception as exc:  # not ours, or corrupt: dead-letter it, never retry
                    self._current = None
                    self._bury_undecodable(entry_id, fields, exc)
                    continue
            self._guarded(self._fill)

    def ack(self, item: Any) -> None:
        """The executor returned for the item ``get()`` returned last: acknowledge
        it (sent with the next read, or at ``release()``)."""
        entry_id = self._current
        if entry_id is None:
            return
        self._current = None
        self._acks.append(entry_id)
        if self._retried and entry_id in self._retried:
            del self._retried[entry_id]
            self._clear.append(entry_id)  # its error record, if any
        self.acked += 1

    def fail(self, item: Any, exc: BaseException) -> None:
        """The executor raised: leave the entry pending and keep its error text
        (sent with the next round trip) for the dead-letter stream."""
        entry_id = self._current
        if entry_id is None:
            return
        self._current = None
        self._retried.pop(entry_id, None)
        self._errors[entry_id] = ("%s: %s" % (type(exc).__name__, exc))[:4000]
        self.failed += 1

    def release(self) -> None:
        """The worker stopped: send outstanding acks and error texts, and hand
        back fetched entries not yet run (claimable at once, delivery count
        restored). Tries for up to ``release_timeout`` s."""
        rest = self._batch[self._i:]
        self._batch, self._i, self._touch_at = [], 0, float("inf")
        if monotonic() - self._batch_at > self._every:
            rest = []  # possibly taken over by now: leave them to the claim scans
        if not (rest or self._acks or self._clear or self._errors):
            return
        deadline = Deadline.after(self.release_timeout)
        failures = 0
        while True:
            try:
                r = self._reader_client()
                pipe = r.pipeline(transaction=False)
                self._queue_flush(pipe)
                by_count: Dict[int, List[StreamIdT]] = {}  # (entry ids, as bytes)
                for entry_id, _fields in rest:
                    by_count.setdefault(self._retried.pop(entry_id, 1), []).append(entry_id)
                for deliveries, ids in by_count.items():
                    pipe.xclaim(self.stream, self.group, self.consumer, 0, ids, idle=self._claim_ms,
                                retrycount=deliveries - 1, justid=True)
                pipe.execute()
                self._flushed()
                self._io_ok()
                return
            except CONNECTION_ERRORS as exc:
                self._drop_reader()
                failures += 1
                delay = self._delay(failures)
                if not deadline.allows(delay):
                    logger.warning(
                        "redis stream %s: could not send %d acknowledgement(s) at stop (%s);"
                        " those items will be delivered again", self.stream, len(self._acks), exc)
                    self._recover = True
                    return
                gevent.sleep(delay)
            except redis.ResponseError as exc:
                logger.warning("redis stream %s: release failed: %s", self.stream, exc)
                self._recover = True
                return

    # -- in Redis -------------------------------------------------------------------------------------
    def pending(self) -> int:
        """Entries of the group delivered and not yet acknowledged (``XPENDING``)."""
        client, _ = self._thread_client()
        return int(client.xpending(self.stream, self.group)["pending"])

    def lag(self) -> Optional[int]:
        """Entries not yet delivered to the group (Redis ≥ 7), else None."""
        client, _ = self._thread_client()
        for info in client.xinfo_groups(self.stream):
            if _text(info.get("name")) == self.group:
                lag = info.get("lag")
                return None if lag is None else int(lag)
        return None

    def close(self) -> None:
        """Release (as at ``stop()``) and close this object's connections."""
        self.release()
        for client in self._clients:
            try:
                client.connection_pool.disconnect()
            except Exception:
                pass
        self._clients = []
        self._reader = None
        self._tls = _ThreadLocal()

    # -- internals ---------------------------------------------------------------------------------------
    def _guarded(self, step: Any, *args: Any) -> None:
        """Run one consumer step; retry a lost connection with backoff, forever
        (the worker is parked here, so ``stop()`` interrupts the wait)."""
        nogroup = False
        while True:
            try:
                step(self._reader_client(), *args)
                self._io_ok()
                return
            except CONNECTION_ERRORS as exc:
                self._drop_reader()
                self._backoff(exc)
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc) and not nogroup:
                    nogroup = True  # the stream or group vanished (e.g. a Redis without persistence)
                    self._group_ready = False
                    continue
                self._recover = True
                self._backoff(exc)
            except Exception as exc:  # anything else (a connection closed under us...): never die
                self._drop_reader()
                self._backoff(exc)
            except BaseException:
                # interrupted (stop): a reply may be half-read; what was delivered is recovered later
                self._drop_reader()
                raise

    def _drop_reader(self) -> None:
        self._recover = True
        r = self._reader
        if r is not None:
            try:
                r.connection_pool.disconnect()
            except Exception:
                pass

    def _delay(self, failures: int) -> float:
        return min(self.backoff_max, 0.05 * 2 ** min(failures - 1, 20)) * random.uniform(0.5, 1.0)

    def _backoff(self, exc: BaseException) -> None:
        self._failures_in_row += 1
        n = self._failures_in_row
        delay = self._delay(n)
        if self._failure_log.admit() is not None:
            logger.warning("redis stream %s (group %s): %s: %s; retrying in %.2fs (attempt %d)",
                           self.stream, self.group, type(exc).__name__, exc, delay, n)
        gevent.sleep(delay)

    def _io_ok(self) -> None:
        if self._failures_in_row:
            logger.warning("redis stream %s (group %s): reconnected after %d failed attempt(s)",
                           self.stream, self.group, self._failures_in_row)
            self._failures_in_row = 0
            self._failure_log.reset()
            self.reconnects += 1

    def _queue_flush(self, pipe: Any) -> None:
        if self._acks:
            pipe.xack(self.stream, self.group, *self._acks)
        if self._clear:
            pipe.hdel(self.errors_key, *self._clear)
        if self._errors:
            pipe.hset(self.errors_key, mapping=self._errors)

    def _flushed(self) -> None:
        self._acks = []
        self._clear = []
        self._errors = {}

    def _set_batch(self, entries: List[Any]) -> None:
        self._batch = entries
        self._i = 0
        self._batch_at = now = monotonic()
        self._touch_at = now + self._every
        self.delivered += len(entries)

    def _fill(self, r: redis.Redis) -> None:
        """Fetch the next batch: recovered, claimed, or new entries."""
        if not self._group_ready:
            self._ensure_group(r)
            self._group_ready = True
        if self._recover:
            self._recover_own(r)
            if self._batch:
                return
        if monotonic() >= self._next_claim:
            self._claim(r)
            if self._batch:
                return
        block = int((self._next_claim - monotonic()) * 1000)
        block = max(1, min(self.block_ms, block))
        pipe = r.pipeline(transaction=False)
        self._queue_flush(pipe)
        pipe.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=self.count, block=block)
        reply = pipe.execute()[-1]
        self._flushed()
        if reply:
            entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
            self._set_batch(entries)

    def _recover_own(self, r: redis.Redis) -> None:
        """Take back this consumer's own pending entries (after a restart, an
        interrupted read or a lost connection) instead of waiting for them to idle."""
        pipe = r.pipeline(transaction=False)
        self._queue_flush(pipe)
        pipe.xpending_range(self.stream, self.group, "-", "+", self.count, consumername=self.consumer)
        pending = pipe.execute()[-1]
        self._flushed()
        self._recover = len(pending) >= self.count  # more next time
        ids = [p["message_id"] for p in pending]
        if not ids:
            return
        min_idle = min(p["time_since_delivered"] for p in pending)
        entries = r.xclaim(self.stream, self.group, self.consumer, min_idle, ids)
        self._admit(r, entries)

    def _claim(self, r: redis.Redis) -> None:
        """XAUTOCLAIM entries idle for longer than claim_idle (any consumer's)."""
        self._next_claim = monotonic() + self._every
        reply = r.xautoclaim(self.stream, self.group, self.consumer, self._claim_ms,
                             start_id=self._claim_cursor, count=self.count)
        cursor, entries = reply[0], reply[1]
        self._claim_cursor = cursor
        if _text(cursor) != "0-0":
            self._next_claim = 0.0  # more of the pending list to scan
        if entries:
            self._admit(r, entries)

    def _admit(self, r: redis.Redis, entries: List[Any]) -> None:
        """Entries just claimed by this consumer: dead-letter those delivered
        more than max_deliveries times, batch the rest."""
        pipe = r.pipeline(transaction=False)
        ids = [e[0] for e in entries]
        for entry_id in ids:
            pipe.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
        pipe.hmget(self.errors_key, ids)
        replies = pipe.execute()
        errors = replies[-1]
        keep, dead, gone = [], [], []
        consumer = self.consumer
        for (entry_id, fields), pend, error in zip(entries, replies[:-1], errors):
            if not pend or _text(pend[0]["consumer"]) != consumer:
                continue  # acknowledged or taken by another consumer meanwhile
            if not fields:
                gone.append(entry_id)  # deleted from the stream: nothing to run
                continue
            n = int(pend[0]["times_delivered"])
            if n > self.max_deliveries:
                dead.append((entry_id, fields, n - 1, error))
            else:
                keep.append((entry_id, fields))
                self._retried[entry_id] = n
        if gone:
            r.xack(self.stream, self.group, *gone)
        if dead:
            self._dead_letter(r, dead)
        self.claimed += len(keep)
        self._set_batch(keep)

    def _dead_letter(self, r: redis.Redis, dead: List[Any]) -> None:
        pipe = r.pipeline(transaction=True)  # all or nothing: never acked without its dead letter
        for entry_id, fields, attempts, error in dead:
            record = dict(fields)
            record[b"error"] = error if error is not None else b"(no error recorded)"
            record[b"source_id"] = entry_id
            record[b"source_stream"] = self.stream
            record[b"group"] = self.group
            record[b"deliveries"] = attempts
            pipe.xadd(self.dead_letter, record)
            pipe.xack(self.stream, self.group, entry_id)
        pipe.hdel(self.errors_key, *[d[0] for d in dead])
        pipe.execute()
        self.dead_lettered += len(dead)
        for entry_id, _fields, attempts, error in dead:
            logger.warning("redis stream %s: entry %s dead-lettered to %s after %d deliveries: %s",
                           self.stream, _text(entry_id), self.dead_letter, attempts,
                           _text(error) if error is not None else "(no error recorded)")

    def _bury_undecodable(self, entry_id: bytes, fields: Dict[bytes, bytes], exc: BaseException) -> None:
        # One attempt (get() may run unparked here): if Redis is unreachable the
        # entry stays pending and is claimed, and buried, later.
        error = "cannot decode: %s: %s" % (type(exc).__name__, exc)
        try:
            self._dead_letter(self._reader_client(), [(entry_id, fields, 1, error)])
        except CONNECTION_ERRORS:
            self._drop_reader()

    def _touch(self, r: redis.Redis) -> None:
        """Keep the rest of a long batch owned (reset its idle time without
        counting a delivery) and send the acks collected so far."""
        rest = self._batch[self._i:]
        pipe = r.pipeline(transaction=False)
        self._queue_flush(pipe)
        pipe.xclaim(self.stream, self.group, self.consumer, max(0, int(self._every * 500)),
                    [e[0] for e in rest], justid=True)
        kept = set(pipe.execute()[-1])
        self._flushed()
        self._batch = [e for e in rest if e[0] in kept]
        self._i = 0
        self._batch_at = now = monotonic()
        self._touch_at = now + self._every

    def __repr__(self) -> str:
        return "<RedisStreamQueue %s group=%s consumer=%s>" % (self.stream, self.group, self._consumer)
