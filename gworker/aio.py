"""aloops: asyncio event loops that run as greenlets of the gevent hub.

An *aloop* is an ``asyncio.SelectorEventLoop`` whose selector is gevent's
:class:`gevent.selectors.GeventSelector`, driven by ``run_forever()`` in a
greenlet of its own. When the loop has nothing to do, its ``select()`` waits
*through the hub*, so other greenlets keep running — in a monkey-patched process
and in a plain one alike. There is no side thread: coroutines, greenlets and hub
callbacks all take turns in one OS thread.

Several aloops run side by side in one thread. asyncio itself allows one
running loop per thread; gworker keeps one per greenlet instead (see
:mod:`gworker._running_loop`), so inside a coroutine ``asyncio.get_running_loop()``
is always that coroutine's own loop — even after the coroutine called something
gevent-blocking (``gevent.sleep``, a patched socket) and the hub ran other
greenlets meanwhile — and a plain greenlet sees no running loop at all.

A coroutine that calls a gevent-blocking function blocks *its own loop* (the
loop's greenlet is suspended in that call) but not the hub: other aloops and
greenlets go on.

Crossing between the two worlds:

* :meth:`Aloop.run` — from a greenlet (or another OS thread): run a coroutine
  on the loop and wait cooperatively for its result;
* :meth:`Aloop.background_task` — schedule a coroutine, get a gworker
  :class:`~gworker.tasks.Task` (as atasker's: ``result``, ``wait_completed``);
* :meth:`Aloop.create_task` — schedule a coroutine, get its ``asyncio.Task``;
* :func:`wait_future` — from a greenlet, wait for an asyncio future of an aloop;
* :func:`await_greenlet` — from a coroutine, await a gevent greenlet without
  blocking the loop.

:class:`AloopRegistry` is the set of named aloops a supervisor keeps.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from typing import (
    Any,
    Callable,
    Coroutine,
    Dict,
    Iterator,
    List,
    Optional,
    TypeVar,
    Union,
    cast,
    overload,
)

import gevent
from gevent.event import AsyncResult, Event
from gevent.hub import Hub, get_hub
from gevent.selectors import GeventSelector
from greenlet import getcurrent

from ._errors import report
from . import _running_loop, _thread_names
from ._checks import named_or_default
from ._deadline import Deadline
from ._hubsafe import call_in_hub, in_hub_thread
from .tasks import Task, follow_future

__all__ = [
    "Aloop",
    "ALoop",
    "AloopRegistry",
    "AloopNotActive",
    "UnknownAloopError",
    "await_greenlet",
    "wait_future",
    "SUPERVISOR_ALOOP",
]

T = TypeVar("T")

logger = logging.getLogger("gworker.aio")

#: Name of the private aloop an :class:`AloopRegistry` keeps for async workers
#: when no default aloop is set (reserved: ``create`` refuses it).
SUPERVISOR_ALOOP = "__supervisor__"

# asyncio loop -> the Aloop running it (while it exists), for resolve() and
# wait_future(). Weak both ways: neither keeps the other alive.
_owners: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Aloop]" = weakref.WeakKeyDictionary()


class AloopNotActive(RuntimeError):
    """The aloop is not running (never started, or stopping/stopped)."""


class UnknownAloopError(KeyError):
    """No aloop of that name is registered (a ``KeyError``, with a readable message)."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else "unknown aloop"


def _noop() -> None:
    pass


def _check_coro(coro: Any) -> None:
    if not asyncio.iscoroutine(coro):
        raise TypeError("coro must be a coroutine object; got %r" % (coro,))


# -- bridges -------------------------------------------------------------------


def wait_future(fut: "asyncio.Future[T]", timeout: Optional[float] = None) -> T:
    """From a greenlet, wait cooperatively for ``fut`` and return its result.

    ``fut`` is an ``asyncio.Future`` or ``Task`` of one of gworker's aloops. Its
    exception is raised here (``asyncio.CancelledError`` if it was cancelled).
    Only the calling greenlet waits: the hub, the aloop and everything else go
    on. ``timeout`` (seconds) bounds the wait: past it ``TimeoutError`` is raised
    and ``fut`` is left alone (not cancelled). A future that is already done
    returns at once, without switching.

    Call it from a greenlet of the hub thread — not from the hub greenlet
    itself (a hub callback must not wait) and not from a coroutine of
    ``fut``'s own loop (the loop could never finish ``fut``): both raise
    ``RuntimeError``. From another OS thread it works too: that thread waits
    and a greenlet of the aloop's hub does the waiting there.
    """
    if not asyncio.isfuture(fut):
        raise TypeError("fut must be an asyncio Future or Task; got %r" % (fut,))
    if fut.done():
        return fut.result()
    loop = fut.get_loop()
    owner = _owners.get(loop)
    if owner is None:
        raise ValueError("fut belongs to an asyncio loop that is not a gworker aloop: %r" % (loop,))
    if owner.hub is not None and not in_hub_thread(owner.hub):
        # Another OS thread: that thread waits, a greenlet of the hub does the work.
        return call_in_hub(owner.hub, wait_future, fut, timeout)
    owner._check_can_wait("wait_future()")
    done = Event()

    def on_done(_: Any) -> None:
        # Runs in the aloop's greenlet (asyncio calls done-callbacks from its
        # loop); Event.set only schedules the waiter's wake-up through the hub.
        done.set()

    # Same OS thread, and fut is not done: this only appends to its callbacks
    # (no call_soon, so the sleeping loop needs no wake-up).
    fut.add_done_callback(on_done)
    try:
        if not done.wait(timeout):
            raise TimeoutError("the future was not done within %ss" % (timeout,))
    finally:
        fut.remove_done_callback(on_done)
    return fut.result()


async def await_greenlet(glet: gevent.Greenlet) -> Any:
    """Await a gevent greenlet's result from a coroutine, without blocking the loop.

    Returns what ``glet.get()`` would: its return value, or raises its
    exception (a killed greenlet returns its ``GreenletExit``, as in gevent).
    Cancelling the awaiting coroutine does not kill ``glet``.
    """
    if not hasattr(glet, "rawlink") or not hasattr(glet, "ready"):
        raise TypeError("glet must be a gevent Greenlet; got %r" % (glet,))
    if glet.ready():
        return glet.get(block=False)
    await await_link(glet)
    return glet.get(block=False)


async def await_link(source: Any) -> None:
    """Wait, in a coroutine and without blocking its loop, until gevent runs
    the links of ``source`` (anything with ``rawlink``/``unlink``: a greenlet
    that dies, an ``Event`` that is set, an ``AsyncResult``). For gworker's
    own use (:func:`await_greenlet`, ``co_mp_apply``).

    The coroutine awaits an asyncio future of its own loop, which the link
    settles thread-safely; the link is removed however the wait ends
    (cancelling the awaiting coroutine included)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def settle() -> None:  # in the loop
        if not fut.done():
            fut.set_result(None)

    def on_link(_: Any) -> None:
        # gevent runs links from the hub greenlet: wake the loop thread-safely
        # (its select() may be waiting, and call_soon alone would not wake it).
        try:
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop was closed meanwhile: nobody awaits
            pass

    source.rawlink(on_link)
    try:
        await fut
    finally:
        source.unlink(on_link)


# -- Aloop ---------------------------------------------------------------------


class Aloop:
    """An asyncio event loop running in a greenlet of the gevent hub.

    ``Aloop(name=None, supervisor=None, daemon=False, hub=None)`` makes a
    stopped aloop (``ALoop`` is the same class, spelled as atasker spells it;
    without a name it gets a unique one, as in atasker); :meth:`start`
    creates a fresh ``asyncio.SelectorEventLoop(GeventSelector())`` and runs it
    in a new greenlet. An aloop can be started again after it was stopped (a
    new asyncio loop each time).

    The aloop belongs to ``hub`` (default: the hub of the OS thread that first
    starts it). Every public method may be called from any greenlet of that
    hub's thread and from other OS threads (those calls are handed to the hub
    through :mod:`gworker._hubsafe`; the calling thread waits, never the hub).

    ``supervisor`` (the :class:`~gworker.TaskSupervisor` it belongs to, if any)
    names it in ``threading.current_thread().name`` inside its coroutines
    (``supervisor_<id>_aloop_<name>``, see :mod:`gworker._thread_names`); an
    aloop made with ``create_aloop`` has its supervisor's.

    ``daemon`` is kept for atasker compatibility and read by
    :meth:`AloopRegistry.stop_all`: a daemon aloop's pending tasks are cancelled
    rather than waited for when everything stops (as a daemon thread is
    abandoned at exit).
    """

    def __init__(
        self,
        name: Optional[str] = None,
        supervisor: Any = None,
        daemon: bool = False,
        hub: Optional[Hub] = None,
    ) -> None:
        if name is None:
            name = str(uuid.uuid4())
        if not isinstance(name, str) or not name:
            raise TypeError("name must be a non-empty string or None; got %r" % (name,))
        if supervisor is not None and not hasattr(supervisor, "put_task"):
            raise TypeError("supervisor must be a TaskSupervisor or None; got %r" % (supervisor,))
        self.name = name
        #: the supervisor this aloop belongs to (None for a free-standing one)
        self.supervisor = supervisor
        self.daemon = bool(daemon)
        if hub is None and supervisor is not None:
            hub = supervisor.bound_hub
        self._hub = hub
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._greenlet: Optional[gevent.Greenlet] = None
        self._active = False
        #: called (no arguments, in the loop) when a stop begins, before the
        #: pending tasks are drained: lets a long-lived task that serves gworker
        #: (an async queue worker's loop) end instead of keeping the loop alive.
        self._stop_callbacks: List[Any] = []
        #: while the loop drains at stop (see _shutdown): the draining task,
        #: which no cancelling of "every task" may cancel (cancelled before
        #: its first step, it would never stop the loop), and whether it
        #: cancels the tasks it waits for
        self._drainer: "Optional[asyncio.Task[None]]" = None
        self._cancel_rest = False

    def add_stop_callback(self, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` (in the loop) when a stop of this aloop begins, before
        its pending tasks are drained: a long-lived task that serves gworker
        (an async queue worker's loop) ends then instead of keeping the loop
        alive."""
        self._stop_callbacks.append(fn)

    def remove_stop_callback(self, fn: Callable[[], Any]) -> None:
        """Forget ``fn`` (see :meth:`add_stop_callback`); nothing if unknown."""
        try:
            self._stop_callbacks.remove(fn)
        except ValueError:
            pass

    def __repr__(self) -> str:
        state = "active" if self._active else ("stopping" if self._greenlet else "stopped")
        return "<Aloop %r %s%s>" % (self.name, state, " daemon" if self.daemon else "")

    # -- state -------------------------------------------------------------
    @property
    def hub(self) -> Optional[Hub]:
        """The hub this aloop runs in (None until first started)."""
        return self._hub

    def is_active(self) -> bool:
        """True from :meth:`start` until :meth:`stop` begins."""
        return self._active

    def get_loop(self) -> Optional[asyncio.AbstractEventLoop]:
        """The asyncio loop while the aloop is active, else None (as atasker)."""
        return self._loop if self._active else None

    @property
    def greenlet(self) -> Optional[gevent.Greenlet]:
        """The greenlet running the loop (None when not running).

        Use :meth:`stop`, not ``greenlet.kill()``: a kill that lands while one of
        the loop's coroutines sits in a gevent-blocking call raises
        ``GreenletExit`` *in that coroutine*, and asyncio's task machinery
        stores it as that task's exception — the loop runs on, and a blocking
        ``kill()`` waits for ever. (A kill while the loop idles does end it, and
        the aloop cleans up.)
        """
        return self._greenlet

    # -- start / stop ----------------------------------------------------------
    def start(self) -> bool:
        """Start the loop in a new greenlet; False if it is already running.

        Returns at once: the loop begins when the hub next runs the greenlet,
        but coroutines may be submitted right away.
        """
        if self._hub is None:
            self._hub = get_hub()
        if not in_hub_thread(self._hub):
            return call_in_hub(self._hub, self.start)
        if self._greenlet is not None:
            return False
        _thread_names.install()
        # Made in the hub thread: the selector's watchers belong to this hub.
        loop = asyncio.SelectorEventLoop(GeventSelector(self._hub))
        self._loop = loop
        _owners[loop] = self
        _running_loop.acquire()  # before the greenlet first runs
        self._active = True
        self._greenlet = glet = gevent.Greenlet(self._run_loop, loop)
        glet.name = "aloop:%s" % self.name  # type: ignore[attr-defined]
        # Normally _run_loop cleans up as it ends; the link covers a greenlet
        # killed before it ever ran (its body then never runs).
        glet.rawlink(lambda g: self._finish(loop, g))
        glet.start()
        logger.debug("aloop %s started", self.name)
        return True

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        # The body of the aloop's greenlet.
        try:
            loop.run_forever()
            # stop() drained or cancelled the tasks; finish the loop's own
            # housekeeping before closing it.
            loop.run_until_complete(loop.shutdown_asyncgens())
            shutdown_executor = getattr(loop, "shutdown_default_executor", None)
            if shutdown_executor is not None:
                loop.run_until_complete(shutdown_executor())
        finally:
            self._finish(loop, getcurrent())

    def _finish(self, loop: asyncio.AbstractEventLoop, glet: Any) -> None:
        # Once per loop, in its greenlet or (if that never ran) in a hub link:
        # nothing here blocks.
        if _owners.pop(loop, None) is None:
            return
        if self._loop is loop:
            self._active = False
        try:
            loop.close()  # releases the self-pipe and the selector's watchers
        finally:
            _running_loop.forget(glet)
            _running_loop.release()
            if self._loop is loop:
                self._loop = None
                self._greenlet = None
            logger.debug("aloop %s finished", self.name)

    def stop(self, wait: Union[bool, float] = True, cancel_tasks: bool = False) -> bool:
        """Stop the loop: no new coroutines are accepted, then it ends.

        ``cancel_tasks=False`` lets the pending tasks finish first (tasks they
        create are waited for too); ``cancel_tasks=True`` cancels them first.
        ``wait=True`` returns once the loop's greenlet has ended (the loop is
        closed and its file descriptors released); ``wait=False`` returns at
        once; a number waits that many seconds, and if the loop has not ended by
        then its remaining tasks are cancelled (logged as a warning) and stop
        returns without waiting further.

        Returns True when the loop has ended. Called from one of the loop's own
        coroutines it never waits (that would deadlock) and returns False.
        """
        deadline = Deadline.from_wait(wait)
        hub = self._hub
        if hub is not None and not in_hub_thread(hub):
            return call_in_hub(hub, self.stop, deadline.as_wait(), cancel_tasks)
        glet, loop = self._greenlet, self._loop
        if glet is None or loop is None:
            self._active = False
            return True
        if self._active:
            self._active = False
            loop.call_soon_threadsafe(self._shutdown, loop, cancel_tasks)
            logger.debug("aloop %s stopping", self.name)
        elif cancel_tasks:
            loop.call_soon_threadsafe(self._cancel_all, loop)
        if not deadline.waits or getcurrent() is glet:
            return glet.dead
        if getcurrent() is self._hub:
            raise RuntimeError("Aloop.stop(wait=...) cannot wait in the hub greenlet; use wait=False")
        glet.join(deadline.remaining())
        if not glet.dead:
            logger.warning("aloop %s did not stop within %ss: cancelling its tasks", self.name, wait)
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._cancel_all, loop)
            return False
        return True

    def _cancel_all(self, loop: asyncio.AbstractEventLoop) -> None:
        # In the loop's greenlet: every task but the drainer (it cancels what is
        # made from now on, and then stops the loop).
        self._cancel_rest = True
        me = asyncio.current_task(loop)
        for task in asyncio.all_tasks(loop):
            if task is not me and task is not self._drainer:
                task.cancel()

    def _shutdown(self, loop: asyncio.AbstractEventLoop, cancel_tasks: bool) -> None:
        # In the loop's greenlet: finish (or cancel) what is pending, then stop.
        for callback in list(self._stop_callbacks):
            try:
                callback()
            except Exception:
                report("aloop %s: stop callback %r failed", self.name, callback)
        self._cancel_rest = cancel_tasks
        self._drainer = loop.create_task(self._drain(loop))

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        me = asyncio.current_task()
        cancelled: set = set()  # each task is cancelled once: its clean-up may await
        try:
            while True:
                pending = [t for t in asyncio.all_tasks(loop) if t is not me]
                if not pending:
                    break
                if self._cancel_rest:
                    for task in pending:
                        if task not in cancelled:
                            cancelled.add(task)
                            task.cancel()
                try:
                    await asyncio.wait(pending)
                except asyncio.CancelledError:
                    # a coroutine cancelled every task, this one included: keep
                    # draining (cancelling the tasks made from now on), so the
                    # loop never closes over pending tasks.
                    cancelled.update(pending)
                    self._cancel_rest = True
        finally:
            if self._drainer is me:
                self._drainer = None
            loop.stop()

    # -- submitting work --------------------------------------------------------
    def _check_can_wait(self, what: str) -> None:
        current = getcurrent()
        if current is self._greenlet:
            raise RuntimeError(
                "%s was called from a coroutine of aloop %r and would wait for that same "
                "loop forever; await the coroutine instead" % (what, self.name)
            )
        if self._hub is not None and current is self._hub:
            raise RuntimeError("%s cannot wait in the hub greenlet (e.g. a hub callback)" % what)

    def background_task(self, coro: Coroutine[Any, Any, T]) -> Task:
        """Schedule ``coro`` on the loop and return a :class:`~gworker.tasks.Task`
        for it, as atasker's ``ALoop.background_task`` does.

        The task is started at once (``TT_COROUTINE``); ``wait_completed(task)``
        and ``task.wait()`` wait for it cooperatively; its ``result`` attribute
        is the coroutine's result once it has completed. A coroutine that raises
        fails the task (``task.exception``; logged at ERROR on the ``gworker``
        logger), one that is cancelled cancels it. ``task.future`` is the
        ``asyncio.Task`` (see :meth:`create_task`, which returns only that).
        Callable from any greenlet and from other OS threads. Raises
        :class:`AloopNotActive` (a ``RuntimeError``) if the aloop is not running.
        """
        return follow_future(coro, self.create_task(coro), self.name)

    def create_task(self, coro: Coroutine[Any, Any, T]) -> "asyncio.Task[T]":
        """Schedule ``coro`` on the loop and return its ``asyncio.Task``.

        Callable from any greenlet and from other OS threads (the task object is
        then made in the hub and handed back; touch it from the hub thread only,
        e.g. with :func:`wait_future`). Raises :class:`AloopNotActive` if the
        aloop is not running (the coroutine is closed, so it does not warn).
        """
        _check_coro(coro)
        hub = self._hub
        if hub is not None and not in_hub_thread(hub):
            return call_in_hub(hub, self.create_task, coro)
        loop = self._loop
        if not self._active or loop is None:
            coro.close()
            raise AloopNotActive("aloop %r is not active" % self.name)
        if getcurrent() is self._greenlet:
            return loop.create_task(coro)
        if loop.get_debug():
            # Debug mode checks that tasks are made by the loop's own "thread"
            # (after patch_all(): its greenlet); make it there.
            return self._create_in_loop(loop, coro)
        # Another greenlet of the same OS thread: making the task only queues
        # its first step; the self-pipe write wakes the loop's select().
        task = loop.create_task(coro)
        loop.call_soon_threadsafe(_noop)
        return task

    def _create_in_loop(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> "asyncio.Task[T]":
        self._check_can_wait("create_task() in asyncio debug mode")
        made: "AsyncResult[asyncio.Task[T]]" = AsyncResult()

        def create() -> None:
            try:
                made.set(loop.create_task(coro))
            except BaseException as exc:  # handed back to the caller
                made.set_exception(exc)

        loop.call_soon_threadsafe(create)
        # (the stub types get() as Optional; create() always sets a task or raises)
        return cast("asyncio.Task[T]", made.get())

    def run(self, coro: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        """Run ``coro`` on the loop and return its result (or raise its exception).

        Only the calling greenlet waits, cooperatively. From another OS thread,
        the calling thread waits and the hub does the work. ``timeout``
        (seconds): past it the task is cancelled and ``TimeoutError`` raised. If
        the waiting greenlet is killed, the task is cancelled too.

        Calling ``run`` from a coroutine of this same aloop raises
        ``RuntimeError`` (it would deadlock): ``await`` the coroutine instead.
        Called from a coroutine of *another* aloop, it works but holds that
        other loop until done.
        """
        _check_coro(coro)
        hub = self._hub
        if hub is not None and not in_hub_thread(hub):
            return call_in_hub(hub, self.run, coro, timeout)
        try:
            self._check_can_wait("Aloop.run()")
        except RuntimeError:
            coro.close()
            raise
        task = self.create_task(coro)
        try:
            return wait_future(task, timeout)
        except BaseException:
            if not task.done():
                loop = task.get_loop()
                if not loop.is_closed():
                    loop.call_soon_threadsafe(task.cancel)
            raise


# -- the registry ----------------------------------------------------------------


class AloopRegistry:
    """The named aloops of one supervisor, and its default.

    ``get`` of an unknown name raises :class:`UnknownAloopError` (a
    ``KeyError``); ``get()`` with no name returns the default aloop, or None
    when no default is set. Iterating yields the aloops; :meth:`names` lists
    their names. The registry is meant to be used from its hub's thread;
    :class:`Aloop` methods themselves are thread-safe.
    """

    def __init__(self, hub: Optional[Hub] = None, supervisor: Any = None) -> None:
        self._hub = hub
        #: the supervisor the aloops belong to (names their threads)
        self.supervisor = supervisor
        self._aloops: Dict[str, Aloop] = {}
        self._default: Optional[Aloop] = None

    def bind_hub(self, hub: Hub) -> None:
        """Make the aloops created from now on belong to ``hub`` (the
        supervisor's, bound as it starts)."""
        self._hub = hub

    # -- info --------------------------------------------------------------
    def names(self) -> List[str]:
        """Names of the registered aloops (the private one included once made)."""
        return list(self._aloops)

    def __iter__(self) -> Iterator[Aloop]:
        return iter(list(self._aloops.values()))

    def __len__(self) -> int:
        return len(self._aloops)

    def __contains__(self, name: object) -> bool:
        return name in self._aloops

    @property
    def default(self) -> Optional[Aloop]:
        """The default aloop, or None."""
        return self._default

    # -- management -----------------------------------------------------------
    def create(self, name: str, daemon: bool = False, start: bool = True, default: bool = False) -> Aloop:
        """Make and register aloop ``name``; start it unless ``start=False``;
        make it the default if ``default=True``. ``ValueError`` if ``name`` is
        taken (or is the reserved ``"__supervisor__"``)."""
        if name == SUPERVISOR_ALOOP:
            raise ValueError("name %r is reserved for the supervisor's own aloop" % name)
        return self._create(name, daemon, start, default)

    def _create(self, name: str, daemon: bool, start: bool, default: bool) -> Aloop:
        if name in self._aloops:
            raise ValueError("name: an aloop named %r already exists" % (name,))
        aloop = Aloop(name, supervisor=self.supervisor, daemon=daemon, hub=self._hub)
        self._aloops[name] = aloop
        if start:
            aloop.start()
        if default:
            self._default = aloop
        return aloop

    @overload
    def get(self, name: str) -> Aloop: ...
    @overload
    def get(self, name: None = None) -> Optional[Aloop]: ...
    def get(self, name: Optional[str] = None) -> Optional[Aloop]:
        """The aloop named ``name``; with no name, the default aloop (or None).

        Raises :class:`UnknownAloopError` (a ``KeyError``) for unknown names.
        """
        return named_or_default(self._aloops, name, self._default, "name", "aloop", UnknownAloopError)

    def start(self, name: str) -> bool:
        """Start the registered aloop ``name`` (False if already running)."""
        return self.get(name).start()

    def stop(self, name: str, wait: Union[bool, float] = True, cancel_tasks: bool = False) -> bool:
        """Stop aloop ``name`` (see :meth:`Aloop.stop`) and remove it from the
        registry (it stops being the default). Returns what ``Aloop.stop`` does."""
        aloop = self.get(name)
        assert aloop is not None
        del self._aloops[name]
        if self._default is aloop:
            self._default = None
        return aloop.stop(wait=wait, cancel_tasks=cancel_tasks)

    def set_default(self, aloop: Union[Aloop, str, None]) -> None:
        """Make ``aloop`` (an :class:`Aloop` or a registered name) the default;
        None clears it. An Aloop not registered yet is registered under its name
        (``ValueError`` if another aloop has that name)."""
        if aloop is None:
            self._default = None
            return
        if isinstance(aloop, str):
            self._default = self.get(aloop)
            return
        if not isinstance(aloop, Aloop):
            raise TypeError("aloop must be an Aloop, an aloop name or None; got %r" % (aloop,))
        known = self._aloops.get(aloop.name)
        if known is None:
            self._aloops[aloop.name] = aloop
        elif known is not aloop:
            raise ValueError("aloop: another aloop named %r is registered" % (aloop.name,))
        self._default = aloop

    def stop_all(self, wait: Union[bool, float] = True, cancel_tasks: bool = False) -> None:
        """Stop and remove every aloop, the private one included.

        Non-daemon aloops stop with ``wait``/``cancel_tasks``; daemon aloops have
        their pending tasks cancelled (they are not waited for, as a daemon
        thread is abandoned at exit). All stops begin together, then the waiting
        is done (a numeric ``wait`` bounds it in total)."""
        deadline = Deadline.from_wait(wait)
        aloops = list(self._aloops.values())
        self._aloops.clear()
        self._default = None
        for aloop in aloops:
            aloop.stop(wait=False, cancel_tasks=cancel_tasks or aloop.daemon)
        if not deadline.waits:
            return
        for aloop in aloops:
            aloop.stop(wait=deadline.as_wait())

    def for_workers(self) -> Aloop:
        """The aloop async workers use when given no ``loop``: the default aloop
        if set, else a private daemon aloop named ``"__supervisor__"`` that the
        registry makes (and starts) on first use and keeps."""
        if self._default is not None:
            return self._default
        aloop = self._aloops.get(SUPERVISOR_ALOOP)
        if aloop is None:
            aloop = self._create(SUPERVISOR_ALOOP, daemon=True, start=True, default=False)
        elif not aloop.is_active():
            aloop.start()
        return aloop

    def resolve(self, loop: Union[Aloop, str, asyncio.AbstractEventLoop, None]) -> Aloop:
        """The aloop meant by an executor's ``loop=`` value.

        Accepts an :class:`Aloop`, the name of a registered aloop, an asyncio
        loop run by one of gworker's aloops, or None (→ :meth:`for_workers`).
        Anything else raises ``TypeError``; an unknown name or a loop gworker
        did not make raises ``ValueError`` — both naming ``loop``.
        """
        if loop is None:
            return self.for_workers()
        if isinstance(loop, Aloop):
            return loop
        if isinstance(loop, str):
            aloop = self._aloops.get(loop)
            if aloop is None:
                raise ValueError("loop: no aloop named %r" % (loop,))
            return aloop
        if isinstance(loop, asyncio.AbstractEventLoop):
            owner = _owners.get(loop)
            if owner is None:
                raise ValueError(
                    "loop: %r is not run by a gworker aloop (create one with create_aloop())" % (loop,)
                )
            return owner
        raise TypeError("loop must be an aloop, an aloop name or an asyncio loop of an aloop; got %r" % (loop,))


ALoop = Aloop
"""atasker's spelling of :class:`Aloop`."""
