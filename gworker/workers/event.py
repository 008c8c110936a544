"""Event workers: one executor call each time the worker is triggered.

The worker's greenlet waits for a trigger, which wakes it directly: a trigger
made in the hub's thread switches into it from the hub; ``trigger_threadsafe``
queues the trigger on the run (``remote``) and sends the run's libev async
watcher, whose callback — while the greenlet waits, and only then — is the
greenlet's own switch, so no Python code runs in the hub between the wake-up
and the loop. The loop takes the queued triggers itself (those made while a
run was in progress count as made during it), and the trigger that woke it
begins its run at once. Made in the hub's own thread, ``trigger_threadsafe``
takes its trigger from the queue before it returns (the send then costs no
system call: the loop is not waiting in its poll). A trigger is *accepted* when
no run is pending or in progress; from then until that run ends, further
triggers are ignored — unless ``force=True``, which asks for one more run right
after the current one (any number of forced triggers during one run coalesce
into that one extra run). There is no ``poll_delay`` pause after a run.

``get_event_obj()`` returns a gevent ``Event`` kept in step with the worker
(made on first use): it is set while an accepted trigger waits for its run,
cleared as the run begins, and setting it triggers the worker, as setting
atasker's event did.
"""
from __future__ import annotations

import contextvars
from collections import deque
from typing import Any, Optional

from gevent import getcurrent
from gevent.event import Event
from gevent.hub import get_hub

from .._hubsafe import inbox_of, os_thread_ident
from ..context import capture
from ._engine import Engine
from ._run import Halt, Run
from .continuous import BackgroundAsyncWorker

__all__ = ["BackgroundEventWorker"]


class EventRun(Run):
    """A start of an event worker: whether a run is pending or in progress
    (``busy``), and whether a forced trigger asked for one more (``again``)."""

    __slots__ = ("busy", "again", "wake", "post", "asked", "remote", "watcher")

    def __init__(self, supervisor: Any) -> None:
        super().__init__(supervisor)
        self.busy = False
        self.again = False
        #: the loop greenlet while it waits for a trigger (in ``hub.switch()``,
        #: which only a switch from the hub with the trigger ends — or stop's Halt)
        self.wake: Any = None
        #: ``(hub's OS thread, remote.append, watcher.send, capture)`` for
        #: trigger_threadsafe's short path (``capture``: the trigger's context,
        #: or None for a worker that does not propagate it); a singleton's:
        #: ``(thread, None, the hub inbox's post, None)``
        self.post: Any = None
        #: the context of the trigger that asked for the next run (see
        #: gworker.context), until that run takes it; else None
        self.asked: Optional[contextvars.Context] = None
        #: ``(force, context)`` of the triggers made in other OS threads, not
        #: yet taken by the loop; and the async watcher they send, whose
        #: callback, while the loop waits, is the loop greenlet's switch
        #: (made by an event worker's launch: None for the kinds built on
        #: this run, which take such triggers in the hub)
        self.remote: "Optional[deque[tuple]]" = None
        self.watcher: Any = None


def _no_context() -> None:
    return None


def _wake(run: EventRun) -> None:
    # In the hub: switch into the loop greenlet if it still waits for a trigger
    # (run.wake is set only while it does, and only the hub reads it then).
    glet = run.wake
    if glet is not None:
        run.wake = None
        glet.switch()


class TriggerEvent(Event):
    """The ``Event`` of :meth:`BackgroundEventWorker.get_event_obj`: setting it
    triggers its worker."""

    def __init__(self, worker: "BackgroundEventWorker") -> None:
        super().__init__()
        self._worker = worker

    def set(self) -> None:
        """Set the event and trigger the worker (as ``trigger()``)."""
        Event.set(self)
        worker = self._worker
        worker._trigger(False, False, capture() if worker.propagate_context else None)


class BackgroundEventWorker(BackgroundAsyncWorker):
    """Calls its executor once per accepted trigger (see the module docstring).

    A :class:`BackgroundAsyncWorker`, as in atasker (which ran every
    event-driven worker on an event loop); it waits for triggers, not
    ``poll_delay``."""

    holds_slot = True
    kind = "event"
    _lease_continuous = False
    _run: Optional[EventRun]  # type: ignore[assignment]  # (made by _new_run)

    def __init__(self, *args: Any, e: Any = None, event: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._event: Optional[TriggerEvent] = None  # made by get_event_obj

    def _new_run(self) -> EventRun:
        return EventRun(self.supervisor)

    def get_event_obj(self) -> Event:
        """The worker's gevent ``Event``: set while a trigger waits for its
        run; setting it triggers the worker (see the module docstring)."""
        event = self._event
        if event is None:
            event = self._event = TriggerEvent(self)
            run = self._run
            if run is not None and run.active and run.busy and run.wake is not None:
                Event.set(event)  # a trigger accepted, its run not begun
        return event

    def trigger_threadsafe(self, force: bool = False) -> None:
        """Trigger a run, from any greenlet or any OS thread (see ``force``
        above). The run is made in the caller's context (see :mod:`gworker.context`)."""
        run = self._run
        post = run.post if run is not None else None
        if post is not None and post[1] is not None:
            # To the loop itself, from any thread: the watcher's callback is
            # the loop greenlet's switch. Sent before anything else is asked
            # (the latency of a trigger from another thread is the steps
            # before the send); in the hub's thread, taken at once.
            post[1]((force, post[3]()))
            post[2]()
            if os_thread_ident() == post[0]:
                self._take_remote(run)  # type: ignore[arg-type]  # (post is a run's)
            return
        ctx = capture() if self.propagate_context else None
        if post is None:
            self.supervisor.call_soon_threadsafe(self._trigger, force, False, ctx)
        elif os_thread_ident() == post[0]:
            self._trigger(force, False, ctx)
        else:  # a singleton's: forwarded from the hub
            post[2](self._trigger, force, True, ctx)

    async def trigger(self, force: bool = False) -> None:
        """Trigger a run from a coroutine running on an aloop (made in the
        coroutine's context)."""
        self._trigger(force, False, capture() if self.propagate_context else None)

    def _trigger(self, force: bool = False, in_hub: bool = False, ctx: Optional[contextvars.Context] = None) -> None:
        # May run in a hub callback (``in_hub``: known to): only sets flags and
        # the event, and wakes the loop. ``ctx``: the trigger's context.
        run = self._run
        if run is None or not run.active:
            return
        single = self._singleton
        if single is not None:  # once per cluster: to the process that holds the lease
            single.forward(force)
            return
        self._accept(force, in_hub, ctx)

    def _accept(self, force: bool = False, in_hub: bool = False, ctx: Optional[contextvars.Context] = None) -> None:
        """A trigger accepted by this process (a singleton's, from the cluster:
        made in the listener's context, not the triggering process's)."""
        run = self._run
        if run is None or not run.active:
            return
        if run.busy:
            if force:
                run.again = True
                if run.asked is None:  # (the first forced trigger's: the others coalesce into its run)
                    run.asked = ctx
            return
        run.busy = True
        run.asked = ctx
        if self._event is not None:
            Event.set(self._event)
        if run.wake is not None:  # the loop waits: wake it, from the hub at once
            if in_hub:
                _wake(run)
            else:
                hub = get_hub()
                if getcurrent() is hub:
                    _wake(run)
                else:
                    hub.loop.run_callback(_wake, run)

    def _launch(self, run: EventRun, engine: Engine) -> None:  # type: ignore[override]
        hub = self.supervisor.hub
        if self._singleton is None:
            # (never closed: a thread that read run.post may still send it;
            # stopped, it only wakes the loop, and goes with the run)
            run.watcher = watcher = hub.loop.async_(ref=False)
            remote: "deque[tuple]" = deque()
            run.remote = remote
            run.post = (hub.thread_ident, remote.append, watcher.send,
                        capture if self.propagate_context else _no_context)
        else:
            run.post = (hub.thread_ident, None, inbox_of(hub).post, None)
        super()._launch(run, engine)

    def _take_remote(self, run: EventRun) -> None:
        # In the hub's thread: the triggers trigger_threadsafe queued since
        # the loop last looked, as if each had come then (one accepted, if no
        # run is pending or in progress; the rest ignored, or forced into one more).
        remote: deque = run.remote  # type: ignore[assignment]  # (made at launch)
        while remote:
            force, ctx = remote.popleft()
            self._accept(force, False, ctx)

    def _loop(self, run: EventRun, engine: Engine) -> None:  # type: ignore[override]
        call = engine.call_held
        hub = get_hub()
        me = getcurrent()
        home = me.gr_context  # (the loop's own context: the start's, see Run.spawn_loop)
        lease = self._singleton
        remote, watcher = run.remote, run.watcher
        try:
            while run.active:
                if remote:
                    self._take_remote(run)  # (made before it first waited, or since a run ended)
                if not run.busy:
                    # (Run.park, spelled out, with no Waiter: a trigger's path
                    # to the executor is short) Woken by a switch from the
                    # hub: a trigger of this thread's, or the watcher's
                    # callback — started only while it waits here.
                    run.wake = me
                    run.parked = True
                    if watcher is not None:
                        watcher.start(me.switch)
                    try:
                        hub.switch()
                    finally:
                        if watcher is not None:
                            watcher.stop()
                        run.parked = False
                        run.wake = None
                    if run.busy or not remote:
                        continue  # a trigger of this thread's (see above), or woken for nothing
                    # Woken by the watcher: the first trigger is accepted as it
                    # stands (_accept, spelled out) and its run begins at once,
                    # with no other step between the wake-up and the call —
                    # unless a forced trigger came with it, or the worker stopped.
                    run.busy = True
                    ctx = remote.popleft()[1]
                    if remote:
                        self._take_remote(run)
                    if run.again or not run.active:
                        run.asked = ctx
                        continue
                    # (the call below, made here: measured, this path's own
                    # copy of it makes a trigger's latency 1-3 µs shorter than
                    # one shared with the branch below; docs/benchmarks.md)
                    if ctx is not None:
                        me.gr_context = ctx
                    try:
                        outcome = call()
                    finally:
                        if ctx is not None:
                            me.gr_context = home
                    if outcome is False or not run.active:
                        break
                    if remote:
                        self._take_remote(run)  # made during the run: as if they had come then
                    run.busy = run.again
                    continue
                else:  # a run pending: it begins now
                    run.again = False
                    if self._event is not None:
                        self._event.clear()
                    ctx, run.asked = run.asked, None
                    if lease is not None:
                        # Once per cluster (see gworker.redis.singleton): the
                        # trigger came to the lease's holder; lost since, its run
                        # is the next holder's (the triggers are counted in Redis).
                        if not lease.valid():
                            run.busy = run.again = False
                            continue
                        engine.fence = lease.token  # type: ignore[attr-defined]  # (a FencedEngine)
                        lease.started()
                if ctx is not None:
                    # the trigger's context becomes the greenlet's for the
                    # run: ctx.run(), without its C call and second frame
                    me.gr_context = ctx
                try:
                    outcome = call()
                finally:
                    if ctx is not None:
                        me.gr_context = home
                if lease is not None:
                    lease.ran()
                if outcome is False or not run.active:
                    break
                if remote:
                    self._take_remote(run)  # made during the run: as if they had come then
                run.busy = run.again
        except Halt:
            pass
        finally:
            run.busy = run.again = False
            run.end(self._finished)
