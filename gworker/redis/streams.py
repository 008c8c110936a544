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

* ``put_threadsafe(item)`` appends ``{d: serializer.dumps(item)}`` with ``XADD``
  — and, with a propagator installed (:mod:`gworker.context`; gworker's
  OpenTelemetry integration installs one), the fields it writes of the
  producer's context, such as ``traceparent``: the consumer's run continues
  the producer's trace (:meth:`RedisStreamQueue.run_context`).
* The worker reads with ``XREADGROUP GROUP <group> <consumer> COUNT <count>
  BLOCK <ms>`` (the group is made with ``MKSTREAM`` from the stream's start if
  missing) and calls the executor once per item, in stream order.
* Acknowledgement (``XACK``) only after the executor returned: at-least-once.
  Acks are collected and sent in the same round trip as the next read.
* An executor that raises leaves its entry pending (its error text is kept in
  the hash ``<stream>:errors:<group>``) and the entry is *retried* by this
  consumer after a backoff wait — see below. Entries pending longer than
  ``claim_idle`` seconds — those of a consumer that died — are taken over with
  ``XAUTOCLAIM`` and run again; an entry already delivered ``max_deliveries``
  times is instead appended to the dead-letter stream with its last error, and
  acknowledged.
* Entries fetched in a batch but not yet run, and failed entries waiting for
  their retry, are kept owned (``XCLAIM JUSTID`` every ``claim_idle / 2`` s) so
  that others do not take them while this worker is alive, and handed back at
  ``stop()`` (made claimable at once).

Retries of an entry
-------------------
The retry parameters are those of the workers' own retries
(:mod:`gworker.limits`): after the entry's n-th delivery failed, it waits
``retry_delay × retry_backoff^(n−1)`` s (capped at ``retry_max_delay``, plus up
to a tenth at random), then this consumer claims it again (``XCLAIM``, which
counts a delivery) and ``get()`` hands it out before the rest of the batch. An
entry that failed with an exception outside ``retry_for``, or whose
``max_deliveries``-th delivery failed, is dead-lettered at once instead.

The wait holds up nothing: other entries keep flowing while a failed one
waits, so a retried entry runs *out of stream order* (a worker's own
``retries=`` retry in place instead, and keep the order). No greenlet waits per
entry: the waiting entries are a heap of due times that ``get()`` looks at
between two items; while the consumer is idle in ``XREADGROUP … BLOCK``, the
read's timeout is cut to the next due time and a hub timer ends the read when
that time comes (``CLIENT UNBLOCK`` from a second connection — Redis times a
``BLOCK`` out only to about 100 ms; where the server denies ``CLIENT``, the
retry is that much late). Meanwhile the entry stays pending in Redis, owned by
this consumer: if the process dies, another consumer still reclaims it after
``claim_idle`` (at-least-once). At ``stop()`` the waiting entries are handed
back at once, their deliveries counted (each of those ran and failed); the
consumer that claims one next runs it without the rest of the wait.
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

import contextvars
import json
import logging
import heapq
import ipaddress
import os
import random
import socket as _socket
import uuid
from time import monotonic
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

import gevent
import gevent.socket
from gevent.monkey import get_original

from .. import context
from .._deadline import Deadline
from .._errors import FailureLog
from .._gevent import get_hub_if_exists
from .._hubsafe import MAIN_THREAD_IDENT, os_thread_ident, yield_to_hub
from ..limits import RetryPolicy, retry_policy

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.connection import Connection
    from redis.retry import Retry
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "gworker.redis needs redis-py, which is not installed: pip install redis (the redis"
        " extra of gworker: pip install 'gworker[redis]', or pip install '.[redis]' in a clone)"
    ) from _exc

if TYPE_CHECKING:
    from redis.typing import StreamIdT

__all__ = ["RedisStreamQueue", "GeventConnection", "BlockingConnection"]

logger = logging.getLogger("gworker")

_ThreadLocal = get_original("_thread", "_local")
_os_sleep = get_original("time", "sleep")

#: How much later than its timeout a ``BLOCK`` may end, in seconds: Redis
#: times blocked clients out on its server clock, 10 Hz by default (``hz``).
BLOCK_SLACK = 0.1

#: Errors after which the connection is dropped and the call retried with backoff.
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


def _addresses(getaddrinfo: Any, host: str, port: int) -> List[Tuple[Any, ...]]:
    """``getaddrinfo``'s answer for a TCP connection to ``host``; a numeric
    address is its own answer (gevent's resolver would otherwise look it up
    in its thread pool, starting threads for nothing)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return getaddrinfo(host, port, 0, _socket.SOCK_STREAM)
    if ip.version == 6:
        return [(_socket.AF_INET6, _socket.SOCK_STREAM, 0, "", (host, port, 0, 0))]
    return [(_socket.AF_INET, _socket.SOCK_STREAM, 0, "", (host, port))]


def _connect(sock_cls: Any, getaddrinfo: Any, host: str, port: int, timeout: Optional[float]) -> Any:
    err: Optional[BaseException] = None
    for family, socktype, proto, _name, address in _addresses(getaddrinfo, host, port):
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
    hub whether or not the process is monkey-patched. ``on_connect_made``, if
    given, is called with no argument each time a socket to the server is made
    (before redis-py's handshake on it)."""

    _socket_class: Any = gevent.socket.socket
    _getaddrinfo: Any = staticmethod(gevent.socket.getaddrinfo)

    def __init__(self, *args: Any, on_connect_made: Optional[Callable[[], None]] = None,
                 **kwargs: Any) -> None:
        self._on_connect_made = on_connect_made
        super().__init__(*args, **kwargs)

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
        if self._on_connect_made is not None:
            self._on_connect_made()
        return sock


class BlockingConnection(GeventConnection):
    """The same on the original (un-patched) blocking socket, for OS threads
    that run no hub: it blocks only the thread that uses it."""

    _socket_class = get_original("socket", "socket")
    _getaddrinfo = staticmethod(get_original("socket", "getaddrinfo"))


def _hub_thread() -> bool:
    """True in a thread whose waits must go through a gevent hub."""
    return get_hub_if_exists() is not None or os_thread_ident() == MAIN_THREAD_IDENT


def _fields(data: Any, carried: Optional[Dict[str, str]]) -> Dict[Any, Any]:
    """An entry's fields: the item's ``d``, and what the propagators carry."""
    if not carried:
        return {b"d": data}
    fields: Dict[Any, Any] = dict(carried)
    fields[b"d"] = data
    return fields


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Waiting:
    """A failed entry waiting for its retry: when it is due, when this consumer
    last owned it (delivered or kept it; monotonic, after the reply), and how
    many times it was delivered."""

    __slots__ = ("due", "owned", "deliveries")

    def __init__(self, due: float, owned: float, deliveries: int) -> None:
        self.due = due
        self.owned = owned
        self.deliveries = deliveries


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
    - ``claim_idle``: seconds an entry may stay pending (unacknowledged) and
      not kept owned before another consumer — or this one — takes it over and
      runs it again. It must exceed the longest run of one item.
    - ``max_deliveries``: deliveries after which an entry is dead-lettered
      instead of being run again.
    - ``retry_delay``, ``retry_backoff``, ``retry_max_delay``: the wait before
      a failed entry is delivered again to this consumer, ``retry_delay ×
      retry_backoff^(n−1)`` s after its n-th delivery failed, capped at
      ``retry_max_delay`` (None: no cap), plus up to 10 % at random.
    - ``retry_for``: the exception class, or tuple of them, whose failures are
      retried (default: every ``Exception`` and :class:`gworker.RunTimeout`);
      an entry that failed with anything else is dead-lettered at once.
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
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        retry_max_delay: Optional[float] = None,
        retry_for: Any = None,
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
        checked = retry_policy(1, retry_delay, retry_backoff, retry_max_delay, retry_for)
        assert checked is not None
        # The tries after the first are the deliveries after the first: the
        # policy's retries_after(exc, n) is "n < max_deliveries and exc in retry_for".
        policy = RetryPolicy(max_deliveries - 1, checked.delay, checked.backoff, checked.max_delay,
                             checked.retry_for)
        self.stream = stream
        self.group = group
        self.url = url
        self._consumer = consumer
        self._consumer_given = consumer is not None
        self._dumps = serializer.dumps
        self._loads = serializer.loads
        self.claim_idle = float(claim_idle)
        self.max_deliveries = max_deliveries
        #: the waits before a failed entry's next delivery, and the exceptions retried
        self.retry_policy: RetryPolicy = policy
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
        self._current: Optional[Tuple[bytes, Dict[bytes, bytes]]] = None  # the entry get() returned last
        self._acks: List[bytes] = []
        self._clear: List[bytes] = []
        self._errors: Dict[bytes, str] = {}
        self._retried: Dict[bytes, int] = {}  # entry id → deliveries, for entries delivered before
        # failed entries waiting for their retry, owned by this consumer meanwhile
        self._waiting: Dict[bytes, _Waiting] = {}
        self._retry_heap: List[Tuple[float, bytes]] = []  # (due, entry id); stale pairs skipped
        self._bury: List[Tuple[bytes, Any, int, str, str]] = []  # to dead-letter at the next round trip
        self._due = float("inf")  # the earliest of _touch_at, the next retry, and now when _bury
        self._reader_id: Optional[int] = None  # the reader connection's CLIENT ID
        self._reader_up = False  # the reader has a connection that _drop_reader did not drop
        self._unblocks = True  # False once the server denied CLIENT ID / UNBLOCK
        self._reading: Optional[int] = None  # the reader's id while it waits in XREADGROUP BLOCK
        self._recover = True
        self._recover_from: Any = "-"  # where the next page of this consumer's pending list starts
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
        self.retried = 0
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
        self._waiting, self._retry_heap, self._bury = {}, [], []
        self._touch_at = self._due = float("inf")
        self._reader_id = self._reading = None
        self._recover, self._recover_from = True, "-"

    def _make_client(self, connection_class: Any, socket_timeout: Optional[float],
                     **extra: Any) -> redis.Redis:
        kwargs: Dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": 5,
            "retry": Retry(NoBackoff(), 0),  # we retry ourselves, without time.sleep
        }
        kwargs.update(self._redis_kwargs)
        kwargs.update(extra)
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
            self._reader_up = False
            r = self._reader = self._make_client(GeventConnection, timeout,
                                                 on_connect_made=self._reader_connected)
        return r

    def _reader_connected(self) -> None:
        """The reader has a new connection: a first one, one after a lost one,
        or one that redis-py's pool made unasked in place of a connection the
        server cut while it was idle (it checks before each use)."""
        self._reader_id = None  # a new connection has a CLIENT ID of its own
        if self._reader_up:  # not dropped by _drop_reader: lost while idle
            self.reconnects += 1
            logger.warning("redis stream %s (group %s): the connection was lost while idle;"
                           " reconnected", self.stream, self.group)
        self._reader_up = True

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
        # what the installed propagators carry of the caller's context (an
        # OpenTelemetry traceparent), as fields of each entry: the consumer's
        # run continues it (see run_context)
        carried = context.inject({}) if context.propagators() else None
        while True:
            try:
                if not self._group_ready:
                    self._ensure_group(client)
                    self._group_ready = True
                if len(payloads) == 1:
                    return [client.xadd(self.stream, _fields(payloads[0], carried), maxlen=self.maxlen,
                                        approximate=True)]
                pipe = client.pipeline(transaction=True)  # visible together (see put_many)
                for data in payloads:
                    pipe.xadd(self.stream, _fields(data, carried), maxlen=self.maxlen, approximate=True)
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
        without waiting — 0 when a round trip is due first (a keep-alive, a retry
        that came due, a dead letter to send), so that the worker makes it
        parked, interruptible by ``stop()``. :meth:`pending` and :meth:`lag`
        count in Redis; :attr:`waiting` the entries waiting for their retry."""
        n = len(self._batch) - self._i
        if n and monotonic() >= self._due:
            return 0
        return n

    def get(self) -> Any:
        """The next item — a retried entry whose wait is over first, then the
        batch in stream order; waits through the hub (interruptible)."""
        while True:
            if monotonic() >= self._due:
                self._guarded(self._chores)
                continue
            i = self._i
            batch = self._batch
            if i < len(batch):
                self._i = i + 1
                entry = batch[i]
                self._current = entry
                try:
                    return self._loads(entry[1][b"d"])
                except Exception as exc:  # not ours, or corrupt: dead-letter it, never retry
                    self._current = None
                    self._bury_undecodable(entry[0], entry[1], exc)
                    continue
            self._guarded(self._fill)

    def run_context(self, item: Any) -> Optional[contextvars.Context]:
        """The context the run of the item ``get()`` returned last is made in
        (optional member of the queue-object protocol): when its entry carries
        fields of an installed propagator (an OpenTelemetry ``traceparent``,
        written by the producer's ``put``), a copy of the consumer's context
        with what they carry set in it — the run continues the producer's
        trace; else None (the worker's own context)."""
        entry = self._current
        if entry is None or len(entry[1]) < 2 or not context.propagators():
            return None
        carrier = {_text(key): _text(value) for key, value in entry[1].items() if key != b"d"}
        return context.context_from(carrier)

    @property
    def current_id(self) -> Optional[str]:
        """The stream id of the entry ``get()`` returned last, until it is
        acknowledged or failed (for tracing: its ``messaging.message.id``)."""
        entry = self._current
        return None if entry is None else _text(entry[0])

    def ack(self, item: Any) -> None:
        """The executor returned for the item ``get()`` returned last: acknowledge
        it (sent with the next read, or at ``release()``)."""
        entry = self._current
        if entry is None:
            return
        self._current = None
        entry_id = entry[0]
        self._acks.append(entry_id)
        if self._retried and entry_id in self._retried:
            del self._retried[entry_id]
            self._clear.append(entry_id)  # its error record, if any
        self.acked += 1

    def fail(self, item: Any, exc: Optional[BaseException]) -> None:
        """The executor raised ``exc``: keep the entry's error text (sent with the
        next round trip) and either schedule its retry — the entry stays pending,
        owned by this consumer, and is delivered again after the policy's wait —
        or, when ``exc`` is not in ``retry_for`` or this was its
        ``max_deliveries``-th delivery, dead-letter it at the next round trip."""
        entry = self._current
        if entry is None:
            return
        self._current = None
        entry_id = entry[0]
        self.failed += 1
        deliveries = self._retried.pop(entry_id, 1)
        if exc is None:
            error = "(no error given)"
        else:
            error = ("%s: %s" % (type(exc).__name__, exc))[:4000]
        self._errors[entry_id] = error  # for whoever dead-letters it, if this consumer dies
        policy = self.retry_policy
        if exc is not None and not isinstance(exc, policy.retry_for):
            self._bury.append((entry_id, entry[1], deliveries, error,
                               " (%s is not in retry_for)" % type(exc).__name__))
            self._due = 0.0
            return
        if deliveries >= self.max_deliveries:
            self._bury.append((entry_id, entry[1], deliveries, error, ""))
            self._due = 0.0
            return
        due = monotonic() + policy.wait(deliveries)
        owned = self._batch_at  # when this consumer last claimed (or kept) it
        self._waiting[entry_id] = _Waiting(due, owned, deliveries)
        heapq.heappush(self._retry_heap, (due, entry_id))
        self.retried += 1
        if self._touch_at == float("inf"):
            self._touch_at = owned + self._every
        self._reschedule()

    def release(self) -> None:
        """The worker stopped: send outstanding acks, error texts and dead
        letters, and hand back the entries fetched but not run (their delivery
        count restored) and those waiting for their retry (their deliveries
        counted: each ran): claimable at once. Entries another consumer took
        over meanwhile are left alone. Tries for up to ``release_timeout`` s."""
        now = monotonic()
        back = [(entry_id, self._retried.pop(entry_id, 1) - 1, self._batch_at)
                for entry_id, _fields in self._batch[self._i:]]
        back.extend((entry_id, w.deliveries, w.owned) for entry_id, w in self._waiting.items())
        bury = self._bury
        self._batch, self._i, self._touch_at = [], 0, float("inf")
        self._waiting, self._retry_heap, self._bury, self._due = {}, [], [], float("inf")
        if not (back or bury or self._acks or self._clear or self._errors):
            return
        # (retry count, min idle) → entry ids: the min idle keeps an entry that
        # another consumer claimed meanwhile from being taken back
        groups: Dict[Tuple[int, int], List[StreamIdT]] = {}
        for entry_id, retrycount, owned in back:
            groups.setdefault((retrycount, self._min_idle(now, owned)), []).append(entry_id)
        deadline = Deadline.after(self.release_timeout)
        failures = 0
        while True:
            try:
                r = self._reader_client()
                pipe = r.pipeline(transaction=False)
                self._queue_flush(pipe)
                for (retrycount, min_idle), ids in groups.items():
                    pipe.xclaim(self.stream, self.group, self.consumer, min_idle, ids, idle=self._claim_ms,
                                retrycount=retrycount, justid=True)
                pipe.execute()
                self._flushed()
                groups = {}
                if bury:
                    self._dead_letter(r, bury)
                    bury = []
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

    @property
    def waiting(self) -> int:
        """Failed entries waiting for their retry (pending, owned by this consumer)."""
        return len(self._waiting)

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
        self._recover, self._recover_from = True, "-"
        self._reader_id = None
        self._reader_up = False
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
        if entries:
            self._touch_at = min(self._touch_at, now + self._every)
            self._reschedule()
        self.delivered += len(entries)

    def _reschedule(self) -> None:
        """``_due``: the time of the next chore that get() must do first."""
        due = self._touch_at
        heap, waiting = self._retry_heap, self._waiting
        while heap:
            at, entry_id = heap[0]
            w = waiting.get(entry_id)
            if w is not None and w.due == at:
                if at < due:
                    due = at
                break
            heapq.heappop(heap)  # retried, handed back or taken over meanwhile
        if self._bury:
            due = 0.0
        self._due = due

    def _min_idle(self, now: float, owned: float) -> int:
        """The MIN-IDLE (ms) of an XCLAIM of entries this consumer last owned at
        ``owned``: their idle time is at least ``now - owned``, while one that
        another consumer took over (idle for claim_idle first) has been idle
        for less than ``now - owned - claim_idle``. Half claim_idle each way
        spares clock differences."""
        return max(0, int((now - owned - self.claim_idle / 2) * 1000))

    def _chores(self, r: redis.Redis) -> None:
        """What get() does before the next item when ``_due`` came: claim again
        the entries whose retry wait is over (they go first), keep the rest of
        the batch and the waiting entries owned (``XCLAIM JUSTID``: their idle
        time reset, no delivery counted), send the acks and error texts
        collected so far, and dead-letter the entries that failed for good."""
        now = monotonic()
        heap, waiting = self._retry_heap, self._waiting
        due: List[Tuple[bytes, _Waiting]] = []
        while heap and heap[0][0] <= now:
            at, entry_id = heapq.heappop(heap)
            w = waiting.get(entry_id)
            if w is not None and w.due == at:
                due.append((entry_id, w))
        rest = self._batch[self._i:]
        touch = now >= self._touch_at
        touch_rest = bool(rest) and (touch or bool(due))  # retried entries go before a fresh rest
        groups: Dict[float, List[bytes]] = {}
        if touch:
            for entry_id, w in waiting.items():
                if w.due > now:
                    groups.setdefault(w.owned, []).append(entry_id)
        stream, group, consumer = self.stream, self.group, self.consumer
        pipe = r.pipeline(transaction=False)
        self._queue_flush(pipe)
        flushes = len(pipe)
        for entry_id, w in due:
            pipe.xclaim(stream, group, consumer, self._min_idle(now, w.owned), [entry_id])
        if touch_rest:
            pipe.xclaim(stream, group, consumer, self._min_idle(now, self._batch_at),
                        [e[0] for e in rest], justid=True)
        for owned, ids in groups.items():
            pipe.xclaim(stream, group, consumer, self._min_idle(now, owned), [i for i in ids], justid=True)
        try:
            replies = pipe.execute()[flushes:]
        except BaseException:
            for entry_id, w in due:  # due again at the next try
                heapq.heappush(heap, (w.due, entry_id))
            raise
        at = monotonic()
        self._flushed()
        claimed, gone = [], []
        for (entry_id, w), reply in zip(due, replies):
            del waiting[entry_id]
            if not reply:
                continue  # acknowledged, or taken over by another consumer meanwhile
            fields = reply[0][1]
            if fields:
                claimed.append((entry_id, fields))
                self._retried[entry_id] = w.deliveries + 1
            else:
                gone.append(entry_id)  # deleted from the stream (Redis < 7): nothing to run
        replies = replies[len(due):]
        if touch_rest:
            kept = set(replies[0])
            rest = [e for e in rest if e[0] in kept]
            replies = replies[1:]
        for (owned, ids), reply in zip(groups.items(), replies):
            kept = set(reply)
            for entry_id in ids:
                if entry_id in kept:
                    waiting[entry_id].owned = at
                else:
                    del waiting[entry_id]  # taken over by another consumer meanwhile
        if claimed or touch_rest:
            self._batch = claimed + rest
            self._i = 0
            self._batch_at = at
            self.delivered += len(claimed)
        if touch:
            self._touch_at = at + self._every if (rest or claimed or waiting) else float("inf")
        elif claimed:
            self._touch_at = min(self._touch_at, at + self._every)
        if gone:
            r.xack(stream, group, *gone)
        if self._bury:
            self._dead_letter(r, self._bury)
            self._bury = []
        self._reschedule()

    def _fill(self, r: redis.Redis) -> None:
        """Fetch the next batch: recovered, claimed, or new entries."""
        if not self._waiting and self._touch_at != float("inf"):
            self._touch_at = float("inf")  # the batch is done: nothing left to keep owned
            self._reschedule()
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
        now = monotonic()
        until_due = self._due - now
        if until_due < 0.005:
            # Too close for a BLOCK (see BLOCK_SLACK): wait here, then get() does
            # what came due.
            if until_due > 0:
                gevent.sleep(until_due)
            return
        block = int(min(self._next_claim - now, until_due) * 1000)
        block = max(1, min(self.block_ms, block))
        pipe = r.pipeline(transaction=False)
        self._queue_flush(pipe)
        pipe.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=self.count, block=block)
        wake = None
        if self._retry_heap and self._unblocks:
            retry_in = self._retry_heap[0][0] - now
            if retry_in < block / 1000.0 + BLOCK_SLACK:  # before the read would end
                wake = self._wake_at(r, retry_in)
        try:
            reply = pipe.execute()[-1]
        finally:
            if wake is not None:
                self._reading = None
                wake.close()
        self._flushed()
        if reply:
            entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
            self._set_batch(entries)

    def _recover_own(self, r: redis.Redis) -> None:
        """Take back this consumer's own pending entries (after a restart, an
        interrupted read or a lost connection) instead of waiting for them to idle."""
        pipe = r.pipeline(transaction=False)
        self._queue_flush(pipe)
        pipe.xpending_range(self.stream, self.group, self._recover_from, "+", self.count,
                            consumername=self.consumer)
        pending = pipe.execute()[-1]
        self._flushed()
        self._recover = len(pending) >= self.count  # more next time
        self._recover_from = b"(" + pending[-1]["message_id"] if self._recover else "-"
        # (entries waiting for their retry are this consumer's too, and stay waiting)
        pending = [p for p in pending if p["message_id"] not in self._waiting]
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
        waiting = self._waiting
        for (entry_id, fields), pend, error in zip(entries, replies[:-1], errors):
            if not pend or _text(pend[0]["consumer"]) != consumer:
                continue  # acknowledged or taken by another consumer meanwhile
            if waiting and entry_id in waiting:
                del waiting[entry_id]  # idle past claim_idle (its keep-alive came too late): runs now
            if not fields:
                gone.append(entry_id)  # deleted from the stream: nothing to run
                continue
            n = int(pend[0]["times_delivered"])
            if n > self.max_deliveries:
                dead.append((entry_id, fields, n - 1, error, ""))
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
        """Append each (entry id, fields, deliveries, error, note for the log)
        to the dead-letter stream and acknowledge it."""
        pipe = r.pipeline(transaction=True)  # all or nothing: never acked without its dead letter
        for entry_id, fields, attempts, error, _note in dead:
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
        for entry_id, _fields, attempts, error, note in dead:
            logger.warning("redis stream %s: entry %s dead-lettered to %s after %d deliveries%s: %s",
                           self.stream, _text(entry_id), self.dead_letter, attempts, note,
                           _text(error) if error is not None else "(no error recorded)")

    def _bury_undecodable(self, entry_id: bytes, fields: Dict[bytes, bytes], exc: BaseException) -> None:
        # One attempt (get() may run unparked here): if Redis is unreachable the
        # entry stays pending and is claimed, and buried, later.
        error = "cannot decode: %s: %s" % (type(exc).__name__, exc)
        try:
            self._dead_letter(self._reader_client(), [(entry_id, fields, 1, error, "")])
        except CONNECTION_ERRORS:
            self._drop_reader()

    def _wake_at(self, r: redis.Redis, delay: float) -> Any:
        """A hub timer that ends the read about to wait in XREADGROUP BLOCK in
        ``delay`` s, when the next retry is due; None when the server does not
        let this consumer do that (then the read's own timeout ends it)."""
        if self._reader_id is None:
            try:
                self._reader_id = int(r.client_id())
            except redis.ResponseError as exc:
                self._cannot_unblock(exc)
                return None
        self._reading = reader_id = self._reader_id
        timer = gevent.get_hub().loop.timer(max(0.0, delay), ref=False)
        timer.start(self._wake, reader_id, update=True)  # (from now, not the loop's cached time)
        return timer

    def _wake(self, reader_id: int) -> None:
        # in the hub: no I/O here
        if self._reading == reader_id:
            gevent.spawn(self._unblock, reader_id)

    def _unblock(self, reader_id: int) -> None:
        """End the reader's BLOCK as if it timed out (CLIENT UNBLOCK, from this
        thread's other connection)."""
        if self._reading != reader_id:
            return  # the read ended meanwhile
        try:
            self._thread_client()[0].client_unblock(reader_id)
        except redis.ResponseError as exc:
            self._cannot_unblock(exc)
        except Exception:
            pass  # the read still ends at its own timeout

    def _cannot_unblock(self, exc: BaseException) -> None:
        if self._unblocks:
            self._unblocks = False
            logger.info("redis stream %s: CLIENT ID/UNBLOCK refused (%s): a retry that comes due"
                        " while the consumer waits for entries runs up to ~0.1 s late",
                        self.stream, exc)

    def __repr__(self) -> str:
        return "<RedisStreamQueue %s group=%s consumer=%s>" % (self.stream, self.group, self._consumer)
